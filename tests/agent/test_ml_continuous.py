"""Continuous training: the promotion gate, an operator's approval and rollback, retrain_on,
and monitor alerts that start a training (once per alert).

Every model here is really fitted on the demo's answers (MlEnv); figures the gate reports
are scored again here from the registered artifacts and the generator's own rows, with
scikit-learn, on the same held-out rows.
"""

from __future__ import annotations

import csv
import getpass
import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import f1_score

from agent.alerts import AlertBook, CheckResult, Observed
from agent.continuous import allowed, registered, retrain_jobs, retraining
from agent.demo import generate, generate_drift
from agent.ml.artifacts import load_model
from agent.ml.config import ModelConfig
from agent.ml.estimators import FeatureSpec, prepare_frame
from agent.ml.evaluate import split_mask
from agent.ml.train import SPEC_KEY, segment_drops
from tests.agent.ml_env import SEED, MlEnv
from tests.e2e._cli import Result, silta

WHO = f"{getpass.getuser()}@{socket.gethostname()}"
SPLIT_SEED, TEST_FRACTION = 7, 0.2  # MlEnv's model: seed = 7, the default split
MONITOR = """
[[monitors]]
name = "watch_coder"
model = "coder"
input = "raw/answers"
predictions = "predictions/codes"
reference = "raw/answers@0"
"""


# -- the demo's rows, read from the generator (not from the lake) -------------------------
def _read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8")), delimiter=";"))


def _answers(env: MlEnv) -> dict[str, dict[str, str]]:
    """response_id -> the answer row, as the generator wrote the files MlEnv landed."""
    return {r["response_id"]: r for rel, data, _ in generate(SEED, env.days, env.rows)
            if rel.startswith("responses/") for r in _read_csv(data)}


def _codes(env: MlEnv) -> list[dict[str, str]]:
    """The coded sample as the generator wrote it (the true codes)."""
    return [r for rel, data, _ in generate(SEED, env.days, env.rows)
            if rel.startswith("coded/") for r in _read_csv(data)]


def _held_out(ids: list[str]) -> set[str]:
    mask = split_mask(pd.DataFrame({"response_id": ids}), SPLIT_SEED, TEST_FRACTION)
    return {i for i, held in zip(ids, mask, strict=True) if held}


def _eval_rows(env: MlEnv) -> list[dict[str, str]]:
    """The held-out coded answers, with their true codes: (id, title, language, code)."""
    answers = _answers(env)
    codes = _codes(env)
    held = _held_out([c["response_id"] for c in codes])
    return [{**answers[c["response_id"]], "isco08": c["isco08"]} for c in codes
            if c["response_id"] in held]


def _predict(env: MlEnv, version: int, rows: list[dict[str, str]]) -> list[str]:
    """What the registered artifact of ``version`` predicts for ``rows`` (its top class)."""
    v = env.registry.get("coder", version)
    model = load_model(v.artifact, v.artifact.sha256)
    frame = prepare_frame(pa.table({"job_title": [r["job_title"] for r in rows],
                                    "language": [r["language"] for r in rows]}),
                          FeatureSpec.from_dict(v.params[SPEC_KEY]))
    best = np.argmax(model.predict_proba(frame), axis=1)
    return [str(model.classes_[i]) for i in best]


def _macro_f1(truth: list[str], predicted: list[str]) -> float:
    return float(f1_score(truth, predicted, average="macro", zero_division=0))


def _by_language(rows: list[dict[str, str]], predicted: list[str]
                 ) -> dict[str, tuple[int, float]]:
    """language -> (held-out rows, macro-F1 on them)."""
    out = {}
    for lang in sorted({r["language"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["language"] == lang]
        out[lang] = (len(idx), _macro_f1([rows[i]["isco08"] for i in idx],
                                         [predicted[i] for i in idx]))
    return out


def _write_codes(env: MlEnv, wrong_in: str) -> int:
    """The coded sample again, with the codes of ``wrong_in``'s answers in the training
    part swapped for the next unit group (the held-out rows keep their true codes)."""
    answers, codes = _answers(env), _codes(env)
    held = _held_out([c["response_id"] for c in codes])
    groups = sorted({c["isco08"] for c in codes})
    lines, wrong = ["response_id;isco08;coder"], 0
    for c in codes:
        code = c["isco08"]
        if answers[c["response_id"]]["language"] == wrong_in and c["response_id"] not in held:
            code = groups[(groups.index(code) + 1) % len(groups)]
            wrong += 1
        lines.append(f"{c['response_id']};{code};{c['coder']}")
    env.place("coded/coded_sample_2026Q3.csv", ("\n".join(lines) + "\n").encode())
    return wrong


def _decision(out: Any) -> dict[str, Any]:
    assert out.status == "ok", out
    decision: dict[str, Any] = out.metrics["promotion"]
    return decision


def _silta(env: MlEnv, *args: str) -> Result:
    r = silta(env.root, *args, "--config", env.config_path)
    assert "Traceback" not in r.out + r.err, r
    return r


# -- 1. the promotion gate ------------------------------------------------------------------
def test_more_coded_data_is_promoted_and_a_crippled_model_is_not(tmp_path: Path) -> None:
    env = MlEnv(tmp_path, days=1)  # one day: about 30 coded answers to learn from
    env.sync()
    first = _decision(env.train())
    assert (first["decision"], first["champion_version"]) == ("promoted", None)
    env.add_days(5)  # six days' answers and the grown coded sample
    env.sync()
    better = _decision(env.train())
    assert better["decision"] == "promoted", better
    assert better["champion_version"] == 1
    # the gate's figures, scored here: both artifacts on v2's held-out rows
    rows = _eval_rows(env)
    truth = [r["isco08"] for r in rows]
    assert better["eval_rows"] == len(rows) > 40
    assert better["candidate"] == pytest.approx(_macro_f1(truth, _predict(env, 2, rows)))
    assert better["champion"] == pytest.approx(_macro_f1(truth, _predict(env, 1, rows)))
    assert better["improvement"] == pytest.approx(better["candidate"] - better["champion"])
    assert better["improvement"] > 0.05
    assert better["segment_drops"] == []
    assert env.registry.aliases("coder") == {"champion": 2}

    # a model crippled by regularisation: registered, compared, not promoted
    env.configure(params="{ C = 0.0001 }")
    worse = _decision(env.train())
    assert worse["decision"] == "kept champion", worse
    assert worse["champion_version"] == 2
    assert worse["candidate"] == pytest.approx(_macro_f1(truth, _predict(env, 3, rows)))
    assert worse["champion"] == pytest.approx(_macro_f1(truth, _predict(env, 2, rows)))
    assert worse["improvement"] < -0.3
    assert "does not beat it by 0.0: the champion stays" in worse["reason"]
    assert env.registry.aliases("coder") == {"champion": 2, "challenger": 3}
    assert [(c.version, c.previous_version) for c in
            env.registry.alias_history("coder", "champion")] == [(1, None), (2, 1)]
    env.close()


def test_a_candidate_worse_in_one_language_is_rejected_however_good_overall(
        tmp_path: Path) -> None:
    # six days of 300 answers: ~90 held-out coded rows, ~10 of them Swedish and English
    env = MlEnv(tmp_path, days=6, rows=300, model_extra="segment_min_rows = 5")
    # v1 learnt the Finnish answers' codes wrong: poor overall, good in Swedish
    assert _write_codes(env, wrong_in="fi") > 200
    env.sync()
    assert _decision(env.train())["decision"] == "promoted"
    # v2 learnt the Finnish ones right and the Swedish ones wrong
    assert _write_codes(env, wrong_in="sv") > 20
    assert [o.batches for o in env.sync()] == [0, 1]
    out = env.train()
    decision = _decision(out)
    assert decision["decision"] == "rejected", decision
    assert decision["improvement"] > 0.3  # far better overall ...

    rows = _eval_rows(env)
    truth = [r["isco08"] for r in rows]
    candidate, champion = _predict(env, 2, rows), _predict(env, 1, rows)
    assert decision["candidate"] == pytest.approx(_macro_f1(truth, candidate))
    assert decision["champion"] == pytest.approx(_macro_f1(truth, champion))
    theirs, ours = _by_language(rows, champion), _by_language(rows, candidate)
    expected: list[dict[str, Any]] = sorted(
        ({"segment": f"language={lang}", "rows": n, "candidate": ours[lang][1],
          "champion": theirs[lang][1], "drop": theirs[lang][1] - ours[lang][1]}
         for lang, (n, _) in ours.items()
         if n >= 5 and theirs[lang][1] - ours[lang][1] > 0.05),
        key=lambda d: -d["drop"])
    assert [d["segment"] for d in expected][:1] == ["language=sv"]  # ... but not in Swedish
    assert expected[0]["drop"] > 0.15  # well beyond max_segment_drop (0.05)
    assert [d["segment"] for d in decision["segment_drops"]] == [d["segment"] for d in expected]
    for got, want in zip(decision["segment_drops"], expected, strict=True):
        assert got == {k: pytest.approx(v) if isinstance(v, float) else v
                       for k, v in want.items()}
    worst = expected[0]
    assert (f"segment language=sv falls from {worst['champion']:.4f} to "
            f"{worst['candidate']:.4f}") in decision["reason"]
    assert "the champion stays" in decision["reason"]
    assert out.message.startswith("coder@2: rejected (")
    assert env.registry.aliases("coder") == {"champion": 1, "challenger": 2}
    env.close()


def test_no_segment_may_fall_at_all_with_max_segment_drop_zero(tmp_path: Path) -> None:
    env = MlEnv(tmp_path, days=6, rows=300, params="{ C = 0.5 }",
                model_extra="max_segment_drop = 0.0\nsegment_min_rows = 1")
    env.sync()
    env.train()
    env.configure(params="{ C = 1.0 }")  # a little better overall, a little worse in English
    decision = _decision(env.train())
    rows = _eval_rows(env)
    truth = [r["isco08"] for r in rows]
    candidate, champion = _predict(env, 2, rows), _predict(env, 1, rows)
    assert decision["improvement"] == pytest.approx(
        _macro_f1(truth, candidate) - _macro_f1(truth, champion))
    assert decision["improvement"] > 0
    theirs, ours = _by_language(rows, champion), _by_language(rows, candidate)
    falls = {f"language={lang}": (n, theirs[lang][1] - ours[lang][1])
             for lang, (n, _) in ours.items() if theirs[lang][1] > ours[lang][1]}
    assert list(falls) == ["language=en"]
    assert {d["segment"]: (d["rows"], d["drop"]) for d in decision["segment_drops"]} == {
        k: (n, pytest.approx(drop)) for k, (n, drop) in falls.items()}
    assert 0 < falls["language=en"][1] < 0.05  # a fall the default would let through ...
    assert decision["decision"] == "rejected"  # ... but not 0.0
    assert "segment language=en falls from" in decision["reason"]
    assert env.registry.aliases("coder") == {"champion": 1, "challenger": 2}

    # the same fit under the default max_segment_drop (0.05) is promoted
    env.configure(model_extra="segment_min_rows = 1")
    again = _decision(env.train(force=True))
    assert again["candidate"] == decision["candidate"]
    assert again["champion"] == decision["champion"]
    assert (again["decision"], again["segment_drops"]) == ("promoted", [])
    assert env.registry.aliases("coder") == {"champion": 3, "challenger": 2}
    env.close()


def test_segment_drops_counts_only_falls_beyond_the_limit_in_big_enough_segments() -> None:
    conf = ModelConfig(training_table="raw/answers", key=["response_id"], label="isco08",
                       text_features=["job_title"], segments=["language", "region"],
                       metrics=["accuracy"], primary_metric="accuracy")
    assert (conf.max_segment_drop, conf.segment_min_rows) == (0.05, 20)
    champion = {"language": {"sv": {"n": 20, "accuracy": 18 / 20},
                             "fi": {"n": 19, "accuracy": 19 / 19},
                             "en": {"n": 20, "accuracy": 19 / 20}},
                "region": {"Lappi": {"n": 40, "accuracy": 36 / 40}}}
    candidate = {"language": {"sv": {"n": 20, "accuracy": 17 / 20},  # one row: 0.05
                              "fi": {"n": 19, "accuracy": 0 / 19},  # too few rows
                              "en": {"n": 20, "accuracy": 17 / 20}},  # two rows: 0.10
                 "region": {"Lappi": {"n": 40, "accuracy": 30 / 40}}}  # six rows: 0.15
    assert segment_drops(conf, candidate, champion) == [
        {"segment": "region=Lappi", "rows": 40, "candidate": 0.75, "champion": 0.9,
         "drop": pytest.approx(0.15)},
        {"segment": "language=en", "rows": 20, "candidate": 0.85, "champion": 0.95,
         "drop": pytest.approx(0.10)}]
    # a drop of exactly max_segment_drop is not "more than" it, whatever float rounding says
    assert 18 / 20 - 17 / 20 > 0.05
    strict = conf.model_copy(update={"max_segment_drop": 0.0})
    assert [d["segment"] for d in segment_drops(strict, candidate, champion)] == [
        "region=Lappi", "language=en", "language=sv"]
    assert segment_drops(conf.model_copy(update={"max_segment_drop": None}), candidate,
                         champion) == []


# -- 2. an operator approves, and rolls back ----------------------------------------------
def test_manual_promotion_is_approved_and_rolled_back_with_the_cli(tmp_path: Path) -> None:
    env = MlEnv(tmp_path, promotion="manual", params="{ C = 0.01 }")
    env.sync()
    assert _decision(env.train())["decision"] == "awaiting approval"
    assert env.registry.aliases("coder") == {"challenger": 1}

    r = _silta(env, "models", "rollback", "coder")
    assert r.code == 2, r
    assert "coder has no champion to roll back" in r.err
    r = _silta(env, "models", "approve", "coder", "2")
    assert r.code == 2, r
    assert "coder@2 is not waiting for approval (the version waiting is 1)" in r.err
    r = _silta(env, "models", "approve", "coder", "1")
    assert r.code == 0, r
    assert r.out == "coder@champion is now version 1\n"
    assert env.registry.aliases("coder") == {"challenger": 1, "champion": 1}
    (move,) = env.registry.alias_history("coder", "champion")
    assert (move.version, move.previous_version, move.set_by) == (1, None, WHO)
    assert move.reason.startswith(f"approved by {getpass.getuser()} (training said: no "
                                  "champion yet; macro_f1 ")
    r = _silta(env, "models", "approve", "coder", "1")
    assert r.code == 2 and "coder@1 is the champion already" in r.err, r
    r = _silta(env, "models", "rollback", "coder")
    assert r.code == 2, r
    assert "coder@1 is the first champion; there is no earlier one to go back to" in r.err

    # a better candidate waits; approving another version is refused
    env.configure(params="{ C = 10.0 }")
    waiting = _decision(env.train())
    assert waiting["decision"] == "awaiting approval" and waiting["improvement"] > 0, waiting
    assert env.registry.aliases("coder") == {"challenger": 2, "champion": 1}
    r = _silta(env, "models", "approve", "coder", "3")
    assert r.code == 2 and "(the version waiting is 2)" in r.err, r
    r = _silta(env, "models", "approve", "coder", "2", "--reason", "checked the card")
    assert r.code == 0, r
    assert r.out == "coder@champion is now version 2 (was 1)\n"
    assert env.registry.aliases("coder")["champion"] == 2
    approved = env.registry.alias_history("coder", "champion")[-1]
    assert (approved.version, approved.previous_version) == (2, 1)
    assert approved.reason.startswith(f"approved by {getpass.getuser()}: checked the card "
                                      "(training said: v2 macro_f1 ")
    # once approved, v2 is no longer waiting (the challenger alias still points at it)
    r = _silta(env, "models", "approve", "coder", "3")
    assert r.code == 2 and "(no version is waiting)" in r.err, r

    r = _silta(env, "models", "rollback", "coder", "--reason", "coders report odd codes")
    assert r.code == 0, r
    assert r.out == "coder@champion is now version 1 (was 2)\n"
    assert env.registry.aliases("coder") == {"challenger": 2, "champion": 1}
    back = env.registry.alias_history("coder", "champion")[-1]
    assert (back.version, back.previous_version, back.set_by) == (1, 2, WHO)
    assert back.reason == (f"rollback by {getpass.getuser()} from v2: coders report odd "
                           "codes")
    # the version rolled back from is not waiting for approval either
    r = _silta(env, "models", "approve", "coder", "2")
    assert r.code == 2 and "coder@2 is not waiting for approval (no version is waiting)" \
        in r.err, r
    # predictions follow the champion: v1 again
    assert env.predict().model_version == 1
    env.close()


# -- 3. what may start a training -------------------------------------------------------------
TRIGGERS = ("schedule", "catch-up", "after:sync:codes", "once", "operator:anna",
            "cli:anna", "alert:7")


@pytest.mark.parametrize(("retrain_on", "gated"), [
    # retrain_on -> the triggers a model that has a version is NOT trained on
    ('["drift"]', {"schedule", "catch-up", "after:sync:codes", "once"}),
    ('["drift", "performance"]', {"schedule", "catch-up", "after:sync:codes", "once"}),
    ('["schedule"]', {"after:sync:codes", "once"}),
    ('["new_data"]', {"schedule", "catch-up"}),
    ('["schedule", "new_data"]', set()),
])
def test_retrain_on_gates_triggers_once_a_model_has_a_version(
        tmp_path: Path, retrain_on: str, gated: set[str]) -> None:
    env = MlEnv(tmp_path, days=1, model_extra=f"retrain_on = {retrain_on}")
    config = env.loaded.config
    training = config.training("train_coder")
    with_version = {t: allowed(config, training, t, lambda model: True) for t in TRIGGERS}
    assert with_version == {t: t not in gated for t in TRIGGERS}
    # bootstrap: with nothing to serve yet, any trigger trains
    seen: list[str] = []

    def has_version(model: str) -> bool:
        seen.append(model)
        return False
    assert all(allowed(config, training, t, has_version) for t in TRIGGERS)
    assert seen == ["coder"] * len(gated)  # asked only where retrain_on left the trigger out
    env.close()


def test_the_default_retrain_on_is_schedule_and_new_data(tmp_path: Path) -> None:
    env = MlEnv(tmp_path, days=1)
    assert env.loaded.config.model("coder").retrain_on == ["schedule", "new_data"]
    env.close()


# -- 4. alerts start trainings, once ------------------------------------------------------------
@pytest.fixture
def drift_env(tmp_path: Path) -> Iterator[MlEnv]:
    env = MlEnv(tmp_path, model_extra='retrain_on = ["drift"]', tail=MONITOR)
    env.sync()
    yield env
    env.close()


def _write_drift(env: MlEnv, days: int, *, coded: bool = True) -> list[str]:
    written = []
    for rel, data, _ in generate_drift(SEED, days, env.rows):
        if rel.startswith("coded/") and not coded:
            continue
        if not (env.root / "inbox" / rel).exists() or rel.startswith("coded/"):
            env.place(rel, data)
            written.append(rel)
    return written


def test_a_drift_alert_starts_a_training_once(drift_env: MlEnv) -> None:
    env = drift_env
    has_version = registered(env.lake)
    assert has_version("coder") is False
    assert _decision(env.train())["decision"] == "promoted"
    assert has_version("coder") is True
    assert env.predict().rows == 3 * 150
    runner = env.runner()
    calm = runner.run("monitor", "watch_coder", trigger="test")
    assert calm.status == "ok", calm
    assert calm.detail["alerts"] == {"fired": [], "repeated": [], "resolved": []}
    assert calm.detail["retrain"] == [] and retraining(calm) == []

    # a later month: new kinds of work, more English; landed and coded by v1
    assert _write_drift(env, 2) == ["responses/responses_20261102.csv",
                                    "responses/responses_20261103.csv",
                                    "coded/coded_sample_2026Q4.csv"]
    env.sync()
    assert env.predict().rows == 2 * 150
    drifted = runner.run("monitor", "watch_coder", trigger="test")
    assert drifted.status == "ok", drifted
    fired: list[int] = drifted.detail["alerts"]["fired"]  # type: ignore[index]
    alerts = {i: runner.book.get(i) for i in fired}
    assert sorted((a["check"], a["target"], a["severity"], a["state"])
                  for a in alerts.values()) == [
        ("confidence", "low_confidence_share", "warning", "firing"),
        ("drift", "job_title:length", "warning", "firing"),
        ("drift", "job_title:oov_rate", "warning", "firing"),
        ("drift", "job_title:tokens", "warning", "firing"),
        ("drift", "language", "warning", "firing")]
    # all of them count as drift: the first one asks for the model's training
    first = min(fired)
    assert drifted.detail["retrain"] == [{"job": "train:train_coder", "alert": first}]
    assert retraining(drifted) == [("train:train_coder", first)]
    for a in alerts.values():  # every one of them asked (and will not again)
        assert a["retrain_requested_at"] is not None
        assert [(e["event"], e["detail"]) for e in a["events"]
                if e["event"] == "retraining"] == [("retraining",
                                                     "requested train:train_coder")]
    # an alert trigger passes the gate a once pass does not
    config, training = env.loaded.config, env.loaded.config.training("train_coder")
    assert allowed(config, training, f"alert:{first}", has_version) is True
    assert allowed(config, training, "once", has_version) is False

    # the training it asked for reads the new month; the gate decides
    out = runner.run("train", "train_coder", trigger=f"alert:{first}")
    decision = _decision(out)
    assert out.model_version == 2
    v2 = env.registry.get("coder", 2)
    assert [(i["table"], i["version"]) for i in v2.training_data["inputs"]] == [
        ("raw/answers", 1), ("raw/codes", 1)]
    assert decision["champion_version"] == 1
    assert decision["decision"] == "promoted", decision
    assert env.registry.aliases("coder") == {"champion": 2}
    runs = env.state().runs(kind="train", name="train_coder", limit=1)
    assert (runs[0]["trigger"], runs[0]["model_version"]) == (f"alert:{first}", 2)

    # more of the month: the same alerts fire on, and ask for nothing more
    assert _write_drift(env, 3, coded=False) == ["responses/responses_20261104.csv"]
    env.sync("answers")
    assert env.predict().rows == 150
    again = runner.run("monitor", "watch_coder", trigger="test")
    assert again.status == "ok", again
    by_check = {alerts[i]["check"]: i for i in fired}
    # the input drifted on; v2 knows the new codes: the confidence alert passed again.
    # Against v2's training labels (both months) this day's codes are a new drift: a new
    # alert, which asks for a training once; the alerts that asked before do not again
    new = again.detail["alerts"]["fired"]  # type: ignore[index]
    assert [runner.book.get(i)["check"] for i in new] == ["prediction_drift"]
    assert again.detail["alerts"]["repeated"] == [  # type: ignore[index]
        i for i in fired if alerts[i]["check"] == "drift"]
    assert again.detail["alerts"]["resolved"] == [by_check["confidence"]]  # type: ignore[index]
    assert again.detail["retrain"] == [{"job": "train:train_coder", "alert": new[0]}]
    alert = runner.book.get(first)
    assert alert["count"] == 2
    assert alert["retrain_requested_at"] == alerts[first]["retrain_requested_at"]
    assert [e["event"] for e in alert["events"]].count("retraining") == 1
    # asking for the same alert again gives nothing
    assert retrain_jobs(config, runner.book, "watch_coder", Observed(fired=[first])) == []


def test_every_training_of_the_model_is_asked_for_and_other_alerts_ask_for_none(
        tmp_path: Path) -> None:
    tail = MONITOR + """
[[trainings]]
name = "train_coder_wide"
model = "coder"
[[trainings]]
name = "train_coder_off"
model = "coder"
enabled = false
"""
    env = MlEnv(tmp_path, days=1, model_extra='retrain_on = ["drift"]', tail=tail)
    config = env.loaded.config
    book = AlertBook(env.state(), config.alerts)
    seen = book.observe("watch_coder", "coder", [
        CheckResult("performance", "accuracy", "breach", "critical", "accuracy fell"),
        CheckResult("quality", "job_title", "breach", "warning", "nulls"),
        CheckResult("confidence", "low_confidence_share", "breach", "warning", "unsure"),
        CheckResult("drift", "language", "breach", "warning", "drifted"),
    ], run_id="r1")
    performance, quality, confidence, drift = seen.fired
    # both enabled trainings, asked for by the first alert that counts as drift
    assert retrain_jobs(config, book, "watch_coder", seen) == [
        ("train:train_coder", confidence), ("train:train_coder_wide", confidence)]
    assert book.get(confidence)["events"][-1]["detail"] == (
        "requested train:train_coder, train:train_coder_wide")
    assert book.get(drift)["retrain_requested_at"] is not None
    # performance is not in retrain_on; quality never retrains
    assert book.get(performance)["retrain_requested_at"] is None
    assert book.get(quality)["retrain_requested_at"] is None
    assert retrain_jobs(config, book, "watch_coder", seen) == []  # once per alert
    # an unknown monitor, or one of no model, asks for nothing
    assert retrain_jobs(config, book, "nope", seen) == []
    env.close()


def test_a_schema_alert_halts_the_models_trainings_until_resolved(tmp_path: Path) -> None:
    env = MlEnv(tmp_path, model_extra='retrain_on = ["drift"]', tail=MONITOR)
    env.sync()
    runner = env.runner()
    (schema,) = runner.book.observe("watch_coder", "coder", [
        CheckResult("schema", "job_title", "breach", "critical", "job_title is missing")],
        run_id="r1").fired
    assert retrain_jobs(env.loaded.config, runner.book, "watch_coder",
                        Observed(fired=[schema])) == []
    held = runner.run("train", "train_coder", trigger="operator:anna")
    assert (held.status, held.committed, held.model_version) == ("skipped", False, None)
    assert held.message.startswith(f"halted: schema alert {schema} (job_title is missing) "
                                   "is open")
    assert env.lake.open("_silta/registry") is None
    runner.book.ack(schema, by="anna")  # acknowledged is still open: still halted
    assert runner.run("train", "train_coder", trigger="operator:anna").status == "skipped"
    runner.book.resolve(schema, by="anna")
    out = runner.run("train", "train_coder", trigger="operator:anna")
    assert (out.status, out.model_version) == ("ok", 1), out
    env.close()
