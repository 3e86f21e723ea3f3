"""Bad ML config ([models], [[trainings]], [[predictions]]) is reported as file:line: key: what.

Each case edits one line of a valid config and expects exactly the problem it makes, with
the line it is on; one file with many problems shows them all at once, sorted by line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.jobs import JobGraph
from agent.ml.config import ModelConfig
from connectors.errors import ConfigError
from tests.conftest import dedent

BASE = dedent("""
    [lake]
    uri = "lake"

    [connectors.inbox]
    type = "folder"
    path = "inbox"

    [[syncs]]
    name = "answers"
    source = "inbox:responses/*.csv"
    target = "lake:raw/answers"

    [models.coder]
    description = "codes job titles"
    training_table = "raw/answers"
    key = ["response_id"]
    label = "isco08"
    text_features = ["job_title"]
    features = ["language"]

    [models.coder.card]
    overview = "ISCO-08 codes for free-text job titles"

    [[trainings]]
    name = "train_coder"
    model = "coder"

    [[predictions]]
    name = "code_answers"
    model = "coder@champion"
    input = "raw/answers"
    output = "predictions/codes"
""")
JOBS = "predict:code_answers, sync:answers, train:train_coder"
METRICS = "'accuracy', 'macro_f1', 'weighted_f1', 'macro_precision' or 'macro_recall'"


def edit(text: str, old: str, new: str) -> str:
    """``text`` with its one ``old`` replaced (a case that changed nothing would pass)."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    """1-based number of the ``occurrence``-th line that contains ``fragment``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    return hits[occurrence - 1]


def problems(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    path = tmp_path / "silta.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.msg == f"{path}: {len(info.value.problems)} problem(s)"
    return path, info.value.problems


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "silta.toml"
    path.write_text(BASE, encoding="utf-8")

    c = load_config(path).config

    assert [t.model for t in c.trainings] == ["coder"]
    assert [p.model_ref for p in c.predictions] == ["coder@champion"]
    assert c.model("coder").card.overview == "ISCO-08 codes for free-text job titles"


# (what is changed, into what, the line's fragment, key, message): one problem each
CASES: list[tuple[str, str, str, str, str, str]] = [
    ("training names an undefined model",
     'model = "coder"\n', 'model = "nosuch"\n', 'model = "nosuch"', "trainings[0].model",
     "model 'nosuch' is not defined under [models] (defined: coder)"),
    ("prediction names an undefined model with an alias",
     'model = "coder@champion"', 'model = "nosuch@champion"', "nosuch@champion",
     "predictions[0].model", "model 'nosuch' is not defined under [models] (defined: coder)"),
    ("after names a training that does not exist",
     'model = "coder"\n', 'model = "coder"\nafter = ["train:nosuch"]\n', "train:nosuch",
     "trainings[0].after", "no job 'train:nosuch'; write `sync:NAME`, `train:NAME`, "
     f"`predict:NAME` or `monitor:NAME` (jobs: {JOBS})"),
    ("a bare name in after is a sync",
     'model = "coder"\n', 'model = "coder"\nafter = ["nope"]\n', '"nope"',
     "trainings[0].after", "no job 'sync:nope'; write `sync:NAME`, `train:NAME`, "
     f"`predict:NAME` or `monitor:NAME` (jobs: {JOBS})"),
    ("a sync and a prediction share a name",
     'name = "code_answers"', 'name = "answers"', 'name = "answers"#2',
     "predictions[0].name", "name 'answers' is already used by syncs[0]; names must be "
     "unique across syncs, trainings, predictions and monitors"),
    ("an unknown metric",
     'features = ["language"]', 'features = ["language"]\nmetrics = ["accuracy", "auc"]',
     "metrics =", "models.coder.metrics[1]", f"Input should be {METRICS} (got 'auc')"),
    ("a test fraction above 1",
     'features = ["language"]', 'features = ["language"]\nsplit.test_fraction = 1.5',
     "test_fraction", "models.coder.split.test_fraction", "Input should be less than 1 (got 1.5)"),
    ("a test fraction of 0 (inline table)",
     'features = ["language"]', 'features = ["language"]\nsplit = { test_fraction = 0 }',
     "test_fraction", "models.coder.split.test_fraction", "Input should be greater than 0 (got 0)"),
    ("an estimator that is no import path",
     'features = ["language"]', 'features = ["language"]\nestimator = "random forest"',
     "random forest", "models.coder.estimator", "'random forest' is neither "
     "`text-classifier` nor an import path like `sklearn.ensemble:RandomForestClassifier`"),
    ("predictions written into Silta's own tables",
     'output = "predictions/codes"', 'output = "_silta/codes"', "_silta/codes",
     "predictions[0].output", "tables under `_silta/` belong to Silta itself; choose another"),
    ("an unknown key in [models.x], close to a known one",
     'label = "isco08"', 'label = "isco08"\nlabell = "isco"', "labell",
     "models.coder.labell", "unknown key; did you mean 'label'?"),
    ("an unknown key in [models.x.card], close to a known one",
     'overview = "ISCO', 'overveiw = "ISCO', "overveiw", "models.coder.card.overveiw",
     "unknown key; did you mean 'overview'?"),
    ("an unknown key in [models.x.card], close to nothing",
     'overview = "ISCO', 'zzz = 1\noverview = "ISCO', "zzz", "models.coder.card.zzz",
     "unknown key; remove it or check the spelling"),
    ("top_k = 0",
     'output = "predictions/codes"', 'output = "predictions/codes"\ntop_k = 0', "top_k",
     "predictions[0].top_k", "Input should be greater than or equal to 1 (got 0)"),
    ("a prediction's min_confidence above 1",
     'output = "predictions/codes"', 'output = "predictions/codes"\nmin_confidence = 2',
     "min_confidence", "predictions[0].min_confidence",
     "Input should be less than or equal to 1 (got 2)"),
    ("a model's min_confidence above 1",
     'features = ["language"]', 'features = ["language"]\nmin_confidence = 2',
     "min_confidence", "models.coder.min_confidence",
     "Input should be less than or equal to 1 (got 2)"),
]


@pytest.mark.parametrize(("old", "new", "fragment", "key", "what"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_problem_with_its_line_key_and_what_to_do(tmp_path: Path, old: str, new: str,
                                                      fragment: str, key: str,
                                                      what: str) -> None:
    text = edit(BASE, old, new)
    needle, _, nth = fragment.partition("#")  # "FRAGMENT#2": its second line
    line = line_of(text, needle, int(nth or 1))

    path, found = problems(tmp_path, text)

    assert found == [f"{path}:{line}: {key}: {what}"]


# Checks across a model's keys are reported at the line of its [models.NAME] table.
@pytest.mark.parametrize(("old", "new", "what"), [
    ('features = ["language"]', 'features = ["language", "isco08"]',
     "the label 'isco08' cannot also be a key or a feature"),
    ('features = ["language"]', 'features = ["job_title"]',
     "column(s) ['job_title'] are listed more than once among key, text_features and "
     "features"),
    ('text_features = ["job_title"]\nfeatures = ["language"]\n', "",
     "give at least one feature: `text_features = [...]` and/or `features = [...]`"),
    ('features = ["language"]', 'features = ["language"]\nmetrics = ["accuracy"]\n'
     'primary_metric = "macro_f1"',
     "primary_metric 'macro_f1' must be one of `metrics` (accuracy)"),
], ids=["label-is-a-feature", "column-twice", "no-features", "primary-not-in-metrics"])
def test_model_checks_across_keys(tmp_path: Path, old: str, new: str, what: str) -> None:
    text = edit(BASE, old, new)

    path, found = problems(tmp_path, text)

    assert found == [f"{path}:{line_of(text, '[models.coder]')}: models.coder: {what}"]


def test_after_cycle_across_kinds(tmp_path: Path) -> None:
    text = edit(BASE, 'model = "coder"\n', 'model = "coder"\nafter = ["predict:code_answers"]\n')
    text = edit(text, 'name = "code_answers"\n',
                'name = "code_answers"\nafter = ["train:train_coder"]\n')

    path, found = problems(tmp_path, text)

    assert found == [f"{path}:{line_of(text, 'predict:code_answers')}: trainings[0].after: "
                     "`after` makes a cycle through 'train:train_coder'; remove one of the "
                     "links"]


def test_an_ethical_item_with_an_unknown_key(tmp_path: Path) -> None:
    text = edit(BASE, 'overview = "ISCO', 'ethical_considerations = [{ risk = "misfiled '
                'answers", mitigaton = "manual review" }]\noverview = "ISCO')
    line = line_of(text, "mitigaton")

    path, found = problems(tmp_path, text)

    assert found == [f"{path}:{line}: models.coder.card.ethical_considerations[0].mitigaton: "
                     "unknown key; did you mean 'mitigation'?"]


def test_every_problem_of_a_file_at_once_sorted_by_line(tmp_path: Path) -> None:
    text = edit(BASE, 'label = "isco08"', 'label = "isco08"\nlabell = "x"')  # line 18
    text = edit(text, 'features = ["language"]',
                'features = ["language"]\nestimator = "random forest"')  # line 21
    text = edit(text, 'model = "coder"\n', 'model = "nosuch"\nafter = ["nope"]\n')  # 28, 29
    text = edit(text, 'output = "predictions/codes"',
                'output = "_silta/codes"\ntop_k = 0\nmin_confidence = 2')  # 35, 36, 37
    # the order of the checks is not the order of the file: model checks, then `after`
    # and model names across sections, then each section's fields

    path, found = problems(tmp_path, text)

    assert [p.split(": ")[0] for p in found] == [
        f"{path}:{n}" for n in (18, 21, 28, 29, 35, 36, 37)]
    assert [p.split(": ")[1] for p in found] == [
        "models.coder.labell", "models.coder.estimator", "trainings[0].model",
        "trainings[0].after", "predictions[0].output", "predictions[0].top_k",
        "predictions[0].min_confidence"]
    assert (line_of(text, "labell"), line_of(text, "random forest"),
            line_of(text, '"nosuch"'), line_of(text, '"nope"'), line_of(text, "_silta/"),
            line_of(text, "top_k"), line_of(text, "min_confidence")) == (
        18, 21, 28, 29, 35, 36, 37)
    assert found[2].endswith("model 'nosuch' is not defined under [models] (defined: coder)")
    assert found[3].endswith(f"(jobs: {JOBS})")


# -- what a valid config becomes ----------------------------------------------------------
def test_after_as_a_plain_string_becomes_a_list(tmp_path: Path) -> None:
    text = edit(BASE, 'model = "coder"\n', 'model = "coder"\nafter = "sync:answers"\n')
    text = edit(text, 'name = "code_answers"\n', 'name = "code_answers"\nafter = "train_coder"\n')
    path = tmp_path / "silta.toml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError) as info:  # a bare name is a sync: there is none so named
        load_config(path)
    line = line_of(text, 'after = "train_coder"')
    assert info.value.problems == [
        f"{path}:{line}: predictions[0].after: no job "
        f"'sync:train_coder'; write `sync:NAME`, `train:NAME`, `predict:NAME` or "
        f"`monitor:NAME` (jobs: {JOBS})"]

    path.write_text(text.replace('after = "train_coder"', 'after = "train:train_coder"'),
                    encoding="utf-8")
    c = load_config(path).config
    assert c.trainings[0].after == ["sync:answers"]
    assert c.predictions[0].after == ["train:train_coder"]
    graph = JobGraph(c)
    assert [(j.id, j.after) for j in graph.all] == [
        ("sync:answers", []), ("train:train_coder", ["sync:answers"]),
        ("predict:code_answers", ["train:train_coder"])]
    assert graph.waves([j.id for j in graph.all]) == [
        ["sync:answers"], ["train:train_coder"], ["predict:code_answers"]]


@pytest.mark.parametrize(("model", "ref", "name"), [
    ("coder", "coder@champion", "coder"),
    ("coder@3", "coder@3", "coder"),
    ("coder@staging", "coder@staging", "coder"),
])
def test_prediction_model_ref(tmp_path: Path, model: str, ref: str, name: str) -> None:
    path = tmp_path / "silta.toml"
    path.write_text(edit(BASE, 'model = "coder@champion"', f'model = "{model}"'),
                    encoding="utf-8")

    p = load_config(path).config.predictions[0]

    assert (p.model, p.model_ref, p.model_name) == (model, ref, name)


MODEL: dict[str, Any] = {
    "training_table": "raw/answers", "key": ["response_id"], "label": "isco08",
    "text_features": ["job_title"], "features": ["language"], "params": {"C": 10.0},
}


@pytest.mark.parametrize("estimator", [
    "text-classifier", "sklearn.ensemble:RandomForestClassifier",
    "sklearn.linear_model.LogisticRegression"])
def test_estimators_by_name_or_import_path_are_accepted(estimator: str) -> None:
    assert ModelConfig.model_validate({**MODEL, "estimator": estimator}).estimator == estimator


@pytest.mark.parametrize("estimator", ["sklearn.ensemble:", "RandomForest", "a b:C",
                                       "sklearn..x:Y"])
def test_estimators_that_are_no_import_path_are_refused(estimator: str) -> None:
    with pytest.raises(ValueError, match="is neither `text-classifier` nor an import path"):
        ModelConfig.model_validate({**MODEL, "estimator": estimator})


def test_config_hash_follows_what_shapes_the_model() -> None:
    base = ModelConfig.model_validate(MODEL).config_hash()

    assert len(base) == 64 and int(base, 16) >= 0
    assert ModelConfig.model_validate(dict(MODEL)).config_hash() == base  # stable
    shaping: list[dict[str, Any]] = [
        {"params": {"C": 1.0}}, {"params": {"C": 10.0, "max_iter": 50}}, {"seed": 1},
        {"features": []}, {"split": {"test_fraction": 0.3}},
        {"metrics": ["accuracy", "macro_f1", "weighted_f1"]}]
    hashes = [ModelConfig.model_validate({**MODEL, **change}).config_hash()
              for change in shaping]
    assert base not in hashes
    assert len(set(hashes)) == len(shaping)
    not_shaping: list[dict[str, Any]] = [
        {"description": "other words"},
        {"card": {"overview": "new text", "owners": ["methods unit"],
                  "ethical_considerations": [{"risk": "r", "mitigation": "m"}]}},
        {"promotion": "auto"}, {"min_improvement": 0.05}, {"min_confidence": 0.7}]
    assert [ModelConfig.model_validate({**MODEL, **change}).config_hash()
            for change in not_shaping] == [base] * len(not_shaping)
