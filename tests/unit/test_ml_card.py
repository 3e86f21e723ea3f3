"""Model cards: MCT sections, the responsible-ML checklist from facts, safe Markdown."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from agent.ml.card import (
    SCHEMA_VERSION,
    CardFacts,
    CardText,
    build_card,
    card_text_from_config,
    render_markdown,
)
from connectors.errors import UsageError

TEXT = CardText(
    overview="Codes free-text job titles (fi/sv/en) of the Labour Force Survey into ISCO-08.",
    owners=("Methods unit", "Classification services"),
    license="Internal use only",
    references=("https://www.ilo.org/isco08",),
    citation="Statistics Office (2025): occupation coder v3.",
    users=("manual coders", "survey statisticians"),
    use_cases=("automated coding of occupation answers above the confidence threshold",),
    out_of_scope=("coding answers of other surveys without re-evaluation",),
    limitations=("rare occupations are coded less reliably",),
    tradeoffs=("a higher threshold sends more answers to manual coding",),
    ethical_considerations=(("weaker coding of English answers", "monitor en by segment"),),
)


def _facts(**changes: Any) -> CardFacts:
    facts = CardFacts(
        model="occupation",
        version=3,
        description="ISCO-08 coder for job titles",
        created_at=dt.datetime(2025, 3, 4, 10, 30, tzinfo=dt.UTC),
        created_by="train:occupation",
        flavor="sklearn",
        estimator="text-classifier",
        params={"C": 4.0, "char_ngrams": [2, 5], "class_weight": "balanced"},
        features={"text": ["title"], "numeric": ["age"], "categorical": ["language"]},
        label="isco",
        classes=["2512", "2221", "5223", "9112"],
        signature={"inputs": [{"name": "title", "type": "string"},
                              {"name": "age", "type": "int64"},
                              {"name": "language", "type": "string"}],
                   "outputs": {"classes": ["2512", "2221", "5223", "9112"]}},
        training_data={"table": "raw/x", "version": 3, "rows": 4200,
                       "content_hash": "ab" * 32,
                       "labels": {"table": "coded/x", "version": 2},
                       "train_rows": 3200, "eval_rows": 800, "unlabelled_rows": 200,
                       "class_counts": {"2512": 900, "2221": 1200, "5223": 1097, "9112": 3}},
        split={"method": "hash", "test_fraction": 0.2, "seed": 7},
        metrics={
            "overall": {"accuracy": 0.905, "macro_f1": 0.842},
            "segments": {"language": {
                "fi": {"n": 600, "accuracy": 0.93, "macro_f1": 0.87},
                "sv": {"n": 14, "accuracy": 0.9, "macro_f1": 0.84},
                "en": {"n": 186, "accuracy": 0.81, "macro_f1": 0.72},
            }},
            "coverage": [
                {"threshold": 0.9, "coverage": 0.55, "accuracy": 0.99, "rows": 440},
                {"threshold": 0.7, "coverage": 0.8, "accuracy": 0.95, "rows": 640},
                {"threshold": 0.5, "coverage": 0.93, "accuracy": 0.92, "rows": 744},
            ],
            "primary_metric": "macro_f1",
        },
        segment_gaps=[{"segment": "language", "metric": "macro_f1", "best": "fi",
                       "best_value": 0.87, "worst": "en", "worst_value": 0.72,
                       "gap": 0.87 - 0.72, "min_rows": 20}],
        influential_features=[
            {"feature": "language", "importance": 0.021, "std": 0.004},
            {"feature": "title", "importance": 0.412, "std": 0.012},
            {"feature": "age", "importance": -0.002, "std": 0.001},
        ],
        top_terms={"2512": ["ohjelmistokehittäjä", "developer", "utvecklare"],
                   "2221": ["sairaanhoitaja", "nurse", "sjuksköterska"]},
        code_version="silta 0.1.0 (git 1a2b3c4)",
        libraries={"skops": "0.10.0", "scikit-learn": "1.5.2"},
        config_hash="c" * 64,
        artifact_uri="file:///lake/_silta/artifacts/occupation/3/model.skops",
        artifact_sha256="d" * 64,
        promotion="manual",
        min_confidence=0.7,
        text=TEXT,
    )
    return dataclasses.replace(facts, **changes)


def _check(card: dict[str, Any], item: str) -> dict[str, Any]:
    matches = [i for i in card["responsible_ml"] if i["item"] == item]
    assert len(matches) == 1, [i["item"] for i in card["responsible_ml"]]
    found: dict[str, Any] = matches[0]
    return found


def _metric(card: dict[str, Any], type_: str, slice_: str) -> Any:
    found = [m["value"] for m in card["quantitative_analysis"]["performance_metrics"]
             if m["type"] == type_ and m["slice"] == slice_]
    assert len(found) == 1, (type_, slice_, found)
    return found[0]


def _cells(line: str) -> list[str]:
    """Split a Markdown table row on unescaped pipes, as GitHub does."""
    assert line.startswith("|") and line.endswith("|"), line
    cells, current, i = [], "", 1
    while i < len(line) - 1:
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) - 1:
            current += line[i:i + 2]
            i += 2
            continue
        if ch == "|":
            cells.append(current.strip())
            current = ""
        else:
            current += ch
        i += 1
    cells.append(current.strip())
    return cells


def _table(md: str, heading: str) -> list[list[str]]:
    """The rows (header first, separator dropped) of the first table under ``heading``."""
    lines = md.splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append(_cells(line))
        elif rows:
            break
    assert rows, f"no table under {heading!r}"
    header, separator, *body = rows
    assert all(set(c) <= set("-:") for c in separator), separator
    assert all(len(r) == len(header) for r in body), (header, body)
    return [header, *body]


# --- JSON and MCT structure ----------------------------------------------------------

def test_card_is_plain_json_and_nan_becomes_none() -> None:
    facts = _facts()
    facts.metrics["overall"]["weighted_f1"] = float("nan")
    facts.metrics["segments"]["language"]["sv"]["macro_recall"] = float("inf")
    card = build_card(facts)
    text = json.dumps(card, allow_nan=False)  # raises on any NaN or infinity left
    assert json.loads(text) == card
    assert _metric(card, "weighted_f1", "overall") is None
    assert _metric(card, "macro_recall", "language=sv") is None
    assert _metric(card, "accuracy", "overall") == 0.905


def test_mct_sections_and_fields() -> None:
    card = build_card(_facts())
    assert card["schema_version"] == SCHEMA_VERSION == "silta-model-card/1"
    assert {"model_details", "model_parameters", "quantitative_analysis", "considerations",
            "responsible_ml", "explainability"} <= card.keys()
    details = card["model_details"]
    assert details["name"] == "occupation"
    assert details["overview"] == TEXT.overview
    assert details["version"] == {"name": "3", "date": "2025-03-04T10:30:00+00:00"}
    assert details["owners"] == [{"name": "Methods unit"}, {"name": "Classification services"}]
    assert details["licenses"] == [{"custom_text": "Internal use only"}]
    assert details["references"] == [{"reference": "https://www.ilo.org/isco08"}]
    assert details["citations"] == [{"citation": TEXT.citation}]
    assert details["path"] == "file:///lake/_silta/artifacts/occupation/3/model.skops"
    assert details["artifact_sha256"] == "d" * 64
    assert details["code_version"] == "silta 0.1.0 (git 1a2b3c4)"
    assert list(details["libraries"]) == ["scikit-learn", "skops"]  # sorted
    params = card["model_parameters"]
    assert params["model_architecture"] == (
        "text-classifier: TF-IDF character and word n-grams + logistic regression")
    training, evaluation = params["data"]
    assert training["name"] == "training" and training["link"] == "raw/x@3"
    assert training["rows"] == 4200 and training["content_hash"] == "ab" * 32
    assert training["labels"] == "coded/x@2"
    assert training["sensitive"] == {"sensitive_data": ["title"]}
    assert evaluation == {"name": "evaluation", "link": "raw/x@3", "rows": 800,
                          "split": {"method": "hash", "test_fraction": 0.2, "seed": 7}}
    assert params["input_format"] == ("title (string, text); age (int64, numeric); "
                                      "language (string, categorical)")
    assert params["output_format"] == ("isco: one of 4 classes; predicted code, confidence "
                                       "and top-k")
    considerations = card["considerations"]
    assert considerations["users"] == [{"description": "manual coders"},
                                       {"description": "survey statisticians"}]
    assert considerations["ethical_considerations"] == [
        {"name": "weaker coding of English answers",
         "mitigation_strategy": "monitor en by segment"}]


def test_overview_falls_back_to_description_and_import_path_architecture() -> None:
    card = build_card(_facts(text=CardText(), estimator="sklearn.ensemble:RandomForestClassifier",
                             params={"n_estimators": 200}))
    assert card["model_details"]["overview"] == "ISCO-08 coder for job titles"
    assert card["model_details"]["owners"] == [] and card["model_details"]["licenses"] == []
    assert card["model_parameters"]["model_architecture"] == (
        "sklearn.ensemble:RandomForestClassifier (sklearn)")
    assert card["model_parameters"]["params"] == {"n_estimators": 200}


def test_performance_metrics_overall_segments_and_coverage() -> None:
    card = build_card(_facts())
    assert _metric(card, "macro_f1", "overall") == 0.842
    assert _metric(card, "macro_f1", "language=en") == 0.72
    assert _metric(card, "n", "language=sv") == 14
    assert _metric(card, "coverage@0.7", "overall") == 0.8
    assert _metric(card, "accuracy@0.7", "overall") == 0.95
    assert _metric(card, "rows@0.9", "overall") == 440
    thresholds = [m["threshold"] for m in card["quantitative_analysis"]["performance_metrics"]
                  if m["type"].startswith("coverage@")]
    assert thresholds == [0.5, 0.7, 0.9]
    assert card["quantitative_analysis"]["primary_metric"] == "macro_f1"


# --- the checklist -------------------------------------------------------------------

def test_fairness_attention_names_segment_and_gap() -> None:
    item = _check(build_card(_facts()), "Fairness across segments")
    assert item["principle"] == "Respect for people"
    assert item["status"] == "attention"
    assert item["evidence"] == ("macro_f1 by language: en 0.720 vs fi 0.870, gap 0.150 > 0.100 "
                                "(values with 20+ evaluation rows compared)")


def test_fairness_met_when_gaps_within_threshold() -> None:
    item = _check(build_card(_facts(fairness_gap_threshold=0.2)), "Fairness across segments")
    assert item["status"] == "met"
    assert "within 0.200" in item["evidence"] and "0.150" in item["evidence"]


def test_fairness_gap_equal_to_threshold_is_within() -> None:
    gap = {"segment": "language", "metric": "macro_f1", "best": "fi", "best_value": 0.87,
           "worst": "sv", "worst_value": 0.77, "gap": 0.87 - 0.77, "min_rows": 10}
    item = _check(build_card(_facts(segment_gaps=[gap])), "Fairness across segments")
    assert item["status"] == "met"  # 0.10000000000000009 is 0.1, not above it


def test_fairness_not_assessed_without_segments() -> None:
    facts = _facts(segment_gaps=[])
    facts.metrics.pop("segments")
    card = build_card(facts)
    assert _check(card, "Fairness across segments")["status"] == "not assessed"
    assert _check(card, "Representative evaluation data")["status"] == "not assessed"


def test_representativeness_names_smallest_segment() -> None:
    item = _check(build_card(_facts()), "Representative evaluation data")
    assert item["status"] == "attention"
    assert item["evidence"] == ("smallest evaluated segment: language=sv with 14 of 800 "
                                "evaluation rows; 1 segment(s) under 20 rows")
    facts = _facts()
    facts.metrics["segments"]["language"]["sv"]["n"] = 40
    assert _check(build_card(facts), "Representative evaluation data")["status"] == "met"


def test_privacy_attention_with_text_features_met_with_statement() -> None:
    item = _check(build_card(_facts()), "Privacy and confidentiality")
    assert item["status"] == "attention"
    assert "title" in item["evidence"] and "personal data" in item["evidence"]
    assert "confidential" in item["evidence"]
    stated = "Artifacts stay in the confidential zone; titles are not published."
    item = _check(build_card(_facts(text=dataclasses.replace(TEXT, privacy=stated))),
                  "Privacy and confidentiality")
    assert item["status"] == "met"
    assert item["evidence"].startswith(stated)


def test_privacy_without_text_features() -> None:
    features = {"numeric": ["age"], "categorical": ["language"]}
    item = _check(build_card(_facts(features=features)), "Privacy and confidentiality")
    assert item["status"] == "not assessed"
    item = _check(build_card(_facts(features=features,
                                    text=CardText(privacy="No personal data is used."))),
                  "Privacy and confidentiality")
    assert (item["status"], item["evidence"]) == ("met", "No personal data is used.")


def test_reproducibility_met_lists_inputs_and_replay() -> None:
    item = _check(build_card(_facts()), "Reproducibility")
    assert item["status"] == "met"
    for part in ("raw/x@3", "abababababab", "coded/x@2", "silta 0.1.0 (git 1a2b3c4)",
                 "seed 7", "scikit-learn 1.5.2", "`silta runs replay RUN_ID` re-runs it"):
        assert part in item["evidence"], part
    facts = _facts()
    facts.training_data["run_id"] = "9f8e7d6c5b4a3f2e"
    item = _check(build_card(facts), "Reproducibility")
    assert "`silta runs replay 9f8e7d6c5b4a3f2e` re-runs it" in item["evidence"]


def test_reproducibility_attention_with_uncommitted_code() -> None:
    facts = _facts(code_version="silta 0.1.0 (git 1a2b3c4 + uncommitted changes)")
    item = _check(build_card(facts), "Reproducibility")
    assert item["status"] == "attention"
    assert "unknown: the code's uncommitted changes" in item["evidence"]


def test_reproducibility_attention_when_code_version_unknown() -> None:
    item = _check(build_card(_facts(code_version=None)), "Reproducibility")
    assert item["status"] == "attention"
    assert "code version (git commit unknown)" in item["evidence"]
    # the data and seed are pinned: a replay can still say whether the result is the same
    assert "re-runs it and says whether the result is the same" in item["evidence"]
    facts = _facts()
    facts.training_data["content_hash"] = ""
    item = _check(build_card(facts), "Reproducibility")
    assert item["status"] == "attention" and "unknown: content hash" in item["evidence"]
    assert "replay" not in item["evidence"]


def test_reproducibility_version_zero_and_seed_zero_count_as_known() -> None:
    facts = _facts(split={"method": "hash", "test_fraction": 0.2, "seed": 0})
    facts.training_data["version"] = 0
    assert _check(build_card(facts), "Reproducibility")["status"] == "met"


def test_human_oversight_uses_coverage_at_min_confidence() -> None:
    item = _check(build_card(_facts()), "Human oversight")
    assert item["status"] == "met"
    assert ("at confidence >= 0.7: 80.0% of evaluation answers coded automatically at "
            "95.0% accuracy; the rest to manual coding") in item["evidence"]
    assert "manual: a person approves each champion" in item["evidence"]
    item = _check(build_card(_facts(min_confidence=0.9, promotion="auto")), "Human oversight")
    assert "55.0%" in item["evidence"] and "99.0%" in item["evidence"]
    assert "auto:" in item["evidence"]


def test_human_oversight_attention_without_threshold() -> None:
    item = _check(build_card(_facts(min_confidence=None)), "Human oversight")
    assert item["status"] == "attention"
    assert "every answer is coded automatically" in item["evidence"]
    item = _check(build_card(_facts(min_confidence=0.6)), "Human oversight")
    assert item["status"] == "attention"  # no coverage row at 0.6
    review = "Coders review a 5% sample of automatically coded answers each month."
    item = _check(build_card(_facts(min_confidence=None,
                                    text=dataclasses.replace(TEXT, human_oversight=review))),
                  "Human oversight")
    assert item["status"] == "met" and review in item["evidence"]


def test_held_out_evaluation_and_explainability() -> None:
    card = build_card(_facts())
    held = _check(card, "Evaluation on held-out rows")
    assert held["status"] == "met"
    assert held["evidence"] == ("800 held-out rows (hash split, test fraction 0.2, seed 7); "
                                "macro_f1 0.842 overall; reported per segment of language")
    explain = _check(card, "Explainability")
    assert explain["status"] == "met"
    assert explain["evidence"].startswith("most influential features (permutation importance): "
                                          "title 0.412, language 0.021, age -0.002")
    assert "top terms per class for 2 classes" in explain["evidence"]
    assert [f["feature"] for f in card["explainability"]["influential_features"]] == [
        "title", "language", "age"]
    none = _check(build_card(_facts(influential_features=[])), "Explainability")
    assert none["status"] == "not assessed"


def test_held_out_attention_when_primary_metric_not_per_segment() -> None:
    facts = _facts()
    for stats in facts.metrics["segments"]["language"].values():
        stats.pop("macro_f1")
    item = _check(build_card(facts), "Evaluation on held-out rows")
    assert item["status"] == "attention"
    assert "macro_f1 not reported per segment for language" in item["evidence"]


def test_generated_limitations() -> None:
    card = build_card(_facts())
    limits = [x["description"] for x in card["considerations"]["limitations"]]
    assert limits[0] == "rare occupations are coded less reliably"
    assert "not intended for: coding answers of other surveys without re-evaluation" in limits
    assert "metrics for language=sv rest on 14 evaluation rows" in limits
    assert "macro_f1 for language=en is 0.150 below language=fi (0.720 vs 0.870)" in limits
    assert ("1 class was seen fewer than 5 times in training (9112): predictions of them "
            "are unreliable") in limits
    assert not any("language=fi rest" in x or "language=en rest" in x for x in limits)


def test_intended_use_attention_without_use_cases() -> None:
    assert _check(build_card(_facts()), "Intended use documented")["status"] == "met"
    item = _check(build_card(_facts(text=CardText())), "Intended use documented")
    assert item["status"] == "attention"
    assert "[models.occupation.card]" in item["evidence"]


# --- Markdown ------------------------------------------------------------------------

def test_markdown_headings_and_tables() -> None:
    md = render_markdown(build_card(_facts()))
    lines = md.splitlines()
    assert lines[0] == "# Model card: occupation v3"
    for heading in ("## Model details", "## Model parameters", "## Quantitative analysis",
                    "## Considerations", "## Responsible ML checklist", "## Explainability"):
        assert heading in lines, heading
    assert _table(md, "### Overall") == [["Metric", "Value"], ["accuracy", "0.905"],
                                         ["macro_f1 (primary)", "0.842"]]
    assert _table(md, "### By language") == [
        ["language", "n", "accuracy", "macro_f1"],
        ["en", "186", "0.810", "0.720"],
        ["fi", "600", "0.930", "0.870"],
        ["sv", "14", "0.900", "0.840"],
    ]
    assert _table(md, "### Coverage at confidence thresholds") == [
        ["Confidence >=", "Coded automatically", "Accuracy", "Rows"],
        ["0.5", "93.0%", "92.0%", "744"],
        ["0.7", "80.0%", "95.0%", "640"],
        ["0.9", "55.0%", "99.0%", "440"],
    ]
    checklist = _table(md, "## Responsible ML checklist")
    assert checklist[0] == ["Principle", "Item", "Status", "Evidence"]
    assert len(checklist) == 1 + 8
    fairness = next(r for r in checklist if r[1] == "Fairness across segments")
    assert fairness[2] == "attention" and "gap 0.150" in fairness[3]
    assert _table(md, "### Influential features")[1] == ["title", "0.412", "0.012"]
    assert _table(md, "### Top terms per class")[1:] == [
        ["2221", "sairaanhoitaja, nurse, sjuksköterska"],
        ["2512", "ohjelmistokehittäjä, developer, utvecklare"],
    ]
    assert "- **Code version:** silta 0.1.0 (git 1a2b3c4)" in lines
    assert "| training | raw/x@3 | 4200 |" in md


def test_markdown_escapes_pipes_and_newlines() -> None:
    nasty_class = "51|2\nx"
    facts = _facts(
        top_terms={nasty_class: ["a|b", "c\nd"], "2512": ["developer"]},
        text=dataclasses.replace(
            TEXT, ethical_considerations=(("risk | one\nline two", "# not a heading"),),
            limitations=("- not a nested item\n## nor a heading",)),
    )
    facts.metrics["segments"]["language"]["sv|fi\nmixed"] = {"n": 30, "accuracy": 0.5,
                                                             "macro_f1": 0.4}
    md = render_markdown(build_card(facts))
    terms = _table(md, "### Top terms per class")
    assert len(terms) == 1 + 2
    assert terms[2] == [r"51\|2 x", r"a\|b, c d"]
    by_language = _table(md, "### By language")
    assert len(by_language) == 1 + 4
    assert [r"sv\|fi mixed", "30", "0.500", "0.400"] in by_language
    ethical = _table(md, "### Ethical considerations")
    assert ethical[1:] == [[r"risk \| one line two", "# not a heading"]]
    # the newline is folded into a space and the leading "-" escaped: one plain list item
    assert r"- \- not a nested item ## nor a heading" in md.splitlines()
    assert not any(line.startswith("## nor") or line == "x" for line in md.splitlines())


def test_markdown_of_json_round_trip_is_identical() -> None:
    card = build_card(_facts())
    stored = json.loads(json.dumps(card, allow_nan=False))
    assert render_markdown(stored) == render_markdown(card)
    assert render_markdown(card) == render_markdown(build_card(_facts()))  # deterministic


def test_markdown_shows_at_most_twenty_classes_of_top_terms() -> None:
    terms = {f"{code:04d}": [f"term{code}"] for code in range(1000, 1025)}
    md = render_markdown(build_card(_facts(top_terms=terms)))
    table = _table(md, "### Top terms per class")
    assert len(table) == 1 + 20
    assert table[1][0] == "1000" and table[-1][0] == "1019"
    assert "and 5 more classes (all are in card.json)" in md


def test_markdown_of_minimal_card_renders() -> None:
    md = render_markdown({"model_details": {"name": "m", "version": {"name": "1"}}})
    assert md.startswith("# Model card: m v1\n")
    assert "No metrics recorded." in md and "Not computed." in md


# --- config text ---------------------------------------------------------------------

def test_card_text_from_config_accepts_both_ethical_forms() -> None:
    text = card_text_from_config({
        "overview": "Codes job titles.",
        "owners": ["Methods unit"],
        "ethical_considerations": [
            {"risk": "weaker coding of English answers", "mitigation": "monitor en"},
            "answers may name employers",
            {"risk": "drift after a classification update"},
        ],
    })
    assert text.overview == "Codes job titles."
    assert text.owners == ("Methods unit",)
    assert text.ethical_considerations == (
        ("weaker coding of English answers", "monitor en"),
        ("answers may name employers", ""),
        ("drift after a classification update", ""),
    )
    assert text.privacy == "" and text.users == ()
    assert card_text_from_config(None) == CardText()


def test_card_text_from_config_rejects_unknown_key() -> None:
    with pytest.raises(UsageError) as e:
        card_text_from_config({"overview": "x", "ownerz": ["a"]})
    assert "'ownerz'" in str(e.value)
    assert "owners" in str(e.value) and "human_oversight" in str(e.value)


@pytest.mark.parametrize("section", [
    {"owners": "Methods unit"},
    {"overview": ["a"]},
    {"ethical_considerations": [{"mitigation": "no risk named"}]},
    {"ethical_considerations": [{"risk": "r", "severity": "high"}]},
    {"ethical_considerations": "one text"},
])
def test_card_text_from_config_rejects_wrong_types(section: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        card_text_from_config(section)
