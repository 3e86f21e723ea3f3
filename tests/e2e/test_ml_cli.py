"""The ML commands through the real `silta` command: jobs, models, runs, replay, lineage.

One lake per module: MlEnv lands the demo's answers (3 days) and coded sample with the
real syncs, then `silta` processes train (promoted), train again (skipped), train with
--force (version 2, the champion stays), predict, land a 4th day with `silta jobs run
answers` and predict again. The tests read what those commands printed and what the
read-only commands print now. Commands that change the registry (promote, alias,
archive) run on a copy of the lake, so every other test sees it as it was trained.
"""

from __future__ import annotations

import csv
import datetime as dt
import getpass
import hashlib
import os
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from tests.agent.ml_env import MlEnv
from tests.e2e._cli import Result, silta

WHO = f"{getpass.getuser()}@{socket.gethostname()}"
JOB_IDS = "sync:answers, sync:codes, train:train_coder, predict:code_answers"
REASON = "reviewed the held-out rows by language; v2 approved (ticket ML-42)"
_RUN_ID = r"[0-9a-f]{16}"


def _cli(root: Path, config: Path, *args: str) -> Result:
    """`silta ARGS --config CONFIG`; no command may ever print a traceback."""
    r = silta(root, *args, "--config", config)
    assert "Traceback" not in r.out and "Traceback" not in r.err, r
    return r


@dataclass
class Lake:
    root: Path
    config: Path
    landed: dict[str, str]  # sync -> run id of the in-process landing (MlEnv.sync)
    train: Result  # `jobs run train_coder` (text)
    again: Result  # the same, nothing changed (text)
    forced: Result  # `jobs run train_coder --force --json`
    predict: Result  # `jobs run code_answers --json`
    day4_sync: Result  # `jobs run answers --json` after a 4th day's file arrived
    day4_predict: Result  # `jobs run code_answers --json` again
    inbox_sha256: dict[str, str]  # path under the inbox -> sha256 of the file
    _cache: dict[tuple[str, ...], Result] = field(default_factory=dict)

    def cli(self, *args: str) -> Result:
        return _cli(self.root, self.config, *args)

    def read(self, *args: str) -> Result:
        """A read-only command, run once per module (the lake is not changed after setup)."""
        if args not in self._cache:
            self._cache[args] = self.cli(*args)
        return self._cache[args]

    def prefetch(self, commands: list[tuple[str, ...]]) -> None:
        """Run read-only commands side by side (each `silta` spends seconds on imports)."""
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for args, result in zip(commands, pool.map(lambda a: self.cli(*a), commands),
                                    strict=True):
                self._cache[args] = result

    def run_id(self, which: str) -> str:
        """Run ids as the job commands printed them (logs for text output, else JSON)."""
        if which in ("train", "again"):
            logged = re.findall(rf"train=train_coder run ({_RUN_ID}) (?:ok|skipped): ",
                                getattr(self, which).err)
            assert len(logged) == 1, getattr(self, which)
            return str(logged[0])
        result: Result = getattr(self, which)
        return str(result.json()[0]["run_id"])


def _csv_rows(path: Path) -> int:
    with path.open(encoding="utf-8", newline="") as f:
        return sum(1 for _ in csv.reader(f, delimiter=";")) - 1  # less the header


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("ml_cli")
    env = MlEnv(root)
    try:
        landed = {o.sync: o.run_id for o in env.sync()}
        config = env.config_path
        train = _cli(root, config, "jobs", "run", "train_coder")
        assert train.code == 0, train
        again = _cli(root, config, "jobs", "run", "train_coder")
        assert again.code == 0, again
        forced = _cli(root, config, "jobs", "run", "train_coder", "--force", "--json")
        assert forced.code == 0, forced
        predict = _cli(root, config, "jobs", "run", "code_answers", "--json")
        assert predict.code == 0, predict
        assert len(env.add_days(1, coded=False)) == 1
        day4_sync = _cli(root, config, "jobs", "run", "answers", "--json")
        assert day4_sync.code == 0, day4_sync
        day4_predict = _cli(root, config, "jobs", "run", "code_answers", "--json")
        assert day4_predict.code == 0, day4_predict
    finally:
        env.close()
    inbox = root / "inbox"
    hashes = {p.relative_to(inbox).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted(inbox.rglob("*.csv"))}
    assert len(hashes) == 5, hashes  # 4 days of answers and the coded sample
    lake = Lake(root, config, landed, train, again, forced, predict, day4_sync, day4_predict,
                hashes)
    runs = [lake.run_id(w) for w in ("train", "predict", "day4_predict")]
    lake.prefetch([
        ("jobs", "list", "--json"), ("models", "list", "--json"),
        ("models", "show", "coder", "--json"), ("models", "show", "coder"),
        ("models", "show", "coder@1", "--json"), ("models", "show", "coder@champion", "--json"),
        ("models", "show", "coder@2"), ("models", "card", "coder@champion"),
        ("models", "card", "coder@champion", "--json"),
        *(("models", "show", ref) for ref in ("nosuch", "coder@9", "coder@nosuch", "coder@",
                                              "../x")),
        ("runs", "list", "--json"),
        *(("runs", "list", *option, "--json") for option in (
            ("--kind", "train"), ("--kind", "predict"), ("--status", "skipped"),
            ("--status", "failed"))),
        *(("runs", "show", run_id, "--json") for run_id in runs),
        ("runs", "show", runs[2]), ("runs", "show", "nosuch"),
        ("runs", "replay", runs[0]), ("runs", "replay", runs[1], "--json"),
        ("runs", "replay", landed["answers"]),
        ("lineage", "predictions/codes", "--json"), ("lineage", "predictions/codes"),
        ("lineage", "predictions/codes@99"), ("lineage", "nosuch"), ("status", "--json"),
    ])
    return lake


def _answer_rows(lake: Lake, days: int = 3) -> int:
    files = sorted((lake.root / "inbox" / "responses").glob("*.csv"))[:days]
    return sum(_csv_rows(p) for p in files)


def _coded_rows(lake: Lake) -> int:
    return _csv_rows(lake.root / "inbox" / "coded" / "coded_sample_2026Q3.csv")


def _table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells (split on blanks) of the lines of a printed table that start with a cell."""
    return [line.split() for line in text.splitlines() if line.split()[:1] == [first_cell]]


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _versions(lake: Lake) -> dict[int, dict[str, Any]]:
    r = lake.read("models", "show", "coder", "--json")
    assert r.code == 0, r
    return {v["version"]: v for v in r.json()["versions"]}


# -- jobs ---------------------------------------------------------------------------------
def test_jobs_list_json_names_every_job_with_its_links(lake: Lake) -> None:
    r = lake.read("jobs", "list", "--json")

    assert r.code == 0, r
    assert [(j["job"], j["kind"], j["name"], j["what"], j["schedule"], j["after"],
             j["enabled"]) for j in r.json()] == [
        ("sync:answers", "sync", "answers", "inbox:responses/*.csv -> lake:raw/answers",
         None, [], True),
        ("sync:codes", "sync", "codes", "inbox:coded/*.csv -> lake:raw/codes", None, [],
         True),
        ("train:train_coder", "train", "train_coder", "model coder", None, [], True),
        ("predict:code_answers", "predict", "code_answers",
         "coder@champion: raw/answers -> predictions/codes", None, [], True),
    ]
    assert all(set(j) == {"job", "kind", "name", "what", "schedule", "after", "enabled"}
               for j in r.json())


def test_first_training_registers_version_1_and_promotes_it(lake: Lake) -> None:
    v1 = _versions(lake)[1]
    assert _table_rows(lake.train.out, "train:train_coder") == [
        ["train:train_coder", "ok", "coder@1", str(_coded_rows(lake)), "-"]]
    assert (f"train:train_coder: coder@1: promoted (first version: macro_f1 "
            f"{v1['value']:.4f} on {v1['metrics']['n']} held-out rows)\n") in lake.train.out
    assert lake.run_id("train") == v1["training_data"]["run_id"]


def test_training_again_on_the_same_data_is_skipped(lake: Lake) -> None:
    assert _table_rows(lake.again.out, "train:train_coder") == [
        ["train:train_coder", "skipped", "coder@1", "0", "-"]]
    assert ("train:train_coder: up to date: coder@1 was trained on the same data and config "
            "(force a run to train again)\n") in lake.again.out
    assert lake.run_id("again") != lake.run_id("train")


def test_forced_training_registers_version_2_and_says_what_was_decided(lake: Lake) -> None:
    (outcome,) = lake.forced.json()
    v1, v2 = _versions(lake)[1], _versions(lake)[2]
    assert re.fullmatch(_RUN_ID, outcome["run_id"])
    assert outcome["run_id"] == v2["training_data"]["run_id"]
    assert {k: outcome[k] for k in ("kind", "name", "status", "rows", "model",
                                    "model_version", "error")} == {
        "kind": "train", "name": "train_coder", "status": "ok", "rows": _coded_rows(lake),
        "model": "coder", "model_version": 2, "error": None}
    # the same data, seed and config: the same score, which does not beat the champion
    assert v2["value"] == v1["value"]
    assert outcome["message"] == (
        f"coder@2: kept champion (v2 macro_f1 {v2['value']:.4f} vs champion v1 "
        f"{v1['value']:.4f} (+0.0000) on the same {v1['metrics']['n']} held-out rows; "
        "does not beat it by 0.0: the champion stays)")


def test_prediction_json_codes_every_answer_with_the_champion(lake: Lake) -> None:
    (outcome,) = lake.predict.json()
    rows = _answer_rows(lake)
    table = DeltaTable(str(lake.root / "lake" / "predictions" / "codes"), version=0)
    written = table.to_pyarrow_dataset().to_table()
    flagged = int(pc.sum(written["needs_review"]).as_py())

    assert rows == 450 and written.num_rows == rows
    # flagged = below the model's min_confidence (0.6), read from the table itself
    below = int(pc.sum(pc.less(written["confidence"], 0.6)).as_py())
    assert flagged == below
    run_id = outcome.pop("run_id")
    assert re.fullmatch(_RUN_ID, run_id)
    assert set(written["run_id"].to_pylist()) == {run_id}
    assert outcome == {
        "kind": "predict", "name": "code_answers", "status": "ok", "committed": True,
        "rows": rows, "model": "coder", "model_version": 1, "table": "predictions/codes",
        "table_version": 0,
        "message": f"{rows} row(s) of raw/answers (start, 0] predicted with coder@1; "
                   f"{flagged} ({round(100 * flagged / rows)}%) flagged for manual coding",
        "error": None, "retriable": None,
        "metrics": {"rows": rows, "needs_review": flagged,
                    "needs_review_share": flagged / rows, "min_confidence": 0.6}}
    assert _versions(lake)[1]["aliases"] == ["champion"]  # the version it predicted with


def test_the_next_prediction_codes_only_the_new_day(lake: Lake) -> None:
    (sync,) = lake.day4_sync.json()
    (outcome,) = lake.day4_predict.json()
    new = _csv_rows(sorted((lake.root / "inbox" / "responses").glob("*.csv"))[-1])

    assert (sync["kind"], sync["sync"], sync["status"], sync["files"], sync["rows"],
            sync["table_version"]) == ("sync", "answers", "ok", 1, new, 1)
    assert (outcome["status"], outcome["rows"], outcome["model_version"],
            outcome["table_version"]) == ("ok", new, 1, 1)
    assert outcome["message"].startswith(
        f"{new} row(s) of raw/answers (0, 1] predicted with coder@1; ")


def test_jobs_run_unknown_job_lists_the_jobs(lake: Lake) -> None:
    r = lake.cli("jobs", "run", "nosuch")

    assert r.code == 2, r
    assert r.out == ""
    assert r.err.splitlines() == [f"silta: job 'nosuch' not found; jobs: {JOB_IDS}"]


# -- models -------------------------------------------------------------------------------
def test_models_list_json(lake: Lake) -> None:
    r = lake.read("models", "list", "--json")
    v2 = _versions(lake)[2]

    assert r.code == 0, r
    assert r.json() == [{"model": "coder", "versions": 2, "latest": 2,
                         "aliases": {"champion": 1, "challenger": 2},
                         "primary_metric": "macro_f1", "latest_value": v2["value"],
                         "last_trained": v2["created_at"]}]


def test_models_show_json_versions_and_alias_moves(lake: Lake) -> None:
    r = lake.read("models", "show", "coder", "--json")
    forced = lake.forced.json()[0]["message"]

    assert r.code == 0, r
    shown = r.json()
    assert shown["model"] == "coder"
    v1, v2 = shown["versions"]
    labelled, answers = _coded_rows(lake), _answer_rows(lake)
    for v, number, aliases, run in ((v1, 1, ["champion"], lake.run_id("train")),
                                    (v2, 2, ["challenger"], lake.run_id("forced"))):
        assert (v["model"], v["version"], v["aliases"], v["state"], v["primary_metric"],
                v["estimator"], v["created_by"]) == (
            "coder", number, aliases, "active", "macro_f1", "text-classifier", WHO)
        assert set(v["metrics"]) == {"accuracy", "macro_f1", "n"}
        assert v["value"] == v["metrics"]["macro_f1"]
        assert 0 < v["metrics"]["accuracy"] <= 1
        data = v["training_data"]
        assert data["run_id"] == run
        assert data["inputs"] == [
            {"role": "features", "rows": answers, "table": "raw/answers", "version": 0},
            {"role": "labels", "rows": labelled, "table": "raw/codes", "version": 0}]
        assert (data["rows"], data["unlabelled_rows"]) == (labelled, answers - labelled)
        assert data["train_rows"] + data["eval_rows"] == labelled
        assert v["metrics"]["n"] == data["eval_rows"]
        assert v["artifact_uri"] == str(
            lake.root / "lake" / "_silta" / "artifacts" / "coder" / str(number) / "model.skops")
    assert v1["config_hash"] == v2["config_hash"]
    assert v1["artifact_sha256"] != v2["artifact_sha256"]  # two files, each its own

    history = shown["alias_history"]
    assert [{k: h[k] for k in ("alias", "version", "previous", "set_by")} for h in history] == [
        {"alias": "champion", "version": 1, "previous": None, "set_by": WHO},
        {"alias": "challenger", "version": 2, "previous": None, "set_by": WHO}]
    assert history[0]["reason"] == (f"first version: macro_f1 {v1['value']:.4f} on "
                                    f"{v1['metrics']['n']} held-out rows")
    assert forced == f"coder@2: kept champion ({history[1]['reason']})"
    assert dt.datetime.fromisoformat(history[0]["set_at"]) < \
        dt.datetime.fromisoformat(history[1]["set_at"])


def test_models_show_one_version_json(lake: Lake) -> None:
    r = lake.read("models", "show", "coder@1", "--json")
    by_alias = lake.read("models", "show", "coder@champion", "--json")

    assert r.code == 0, r
    assert by_alias.code == 0, by_alias
    v = r.json()
    assert by_alias.json() == v
    assert {k: v[k] for k in ("model", "version", "aliases", "state")} == {
        "model": "coder", "version": 1, "aliases": ["champion"], "state": "active"}
    assert v["training_data"] == _versions(lake)[1]["training_data"]
    # the registry's checksum is the file's
    assert v["artifact_sha256"] == _sha256(v["artifact_uri"])
    assert v["libraries"]["scikit-learn"] == version("scikit-learn")
    assert (v["params"]["params"], v["params"]["seed"], v["params"]["label"],
            v["params"]["text_features"], v["params"]["features"]) == (
        {"C": 10.0}, 7, "isco08", ["job_title"], ["language"])
    assert v["metrics_all"]["overall"] == v["metrics"]
    assert v["metrics_all"]["primary_metric"] == "macro_f1"


def test_models_show_text_is_a_table_of_versions_and_alias_moves(lake: Lake) -> None:
    r = lake.read("models", "show", "coder")
    versions = _versions(lake)

    assert r.code == 0, r
    assert r.out.splitlines()[0].rstrip() == "versions of coder (metric: macro_f1)", r
    for number, alias in ((1, "champion"), (2, "challenger")):
        v = versions[number]
        created = dt.datetime.fromisoformat(v["created_at"]).isoformat(sep=" ",
                                                                         timespec="seconds")
        assert _table_rows(r.out, str(number))[0] == [
            str(number), alias, "active", f"{v['value']:.3f}", "raw/answers@0", WHO,
            *created.split(" ")], r
    assert "alias moves" in r.out
    (move,) = [cells for cells in _table_rows(r.out, "champion") if cells[1] == "1"]
    assert move[:4] == ["champion", "1", "-", WHO]
    history = lake.read("models", "show", "coder", "--json").json()["alias_history"]
    assert " ".join(move[6:]) == history[0]["reason"]  # after set_at's date and time


def test_models_show_text_of_one_version(lake: Lake) -> None:
    r = lake.read("models", "show", "coder@2")
    v2 = _versions(lake)[2]

    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == "model:        coder@2 (active; challenger)"
    assert f"sha256:       {v2['artifact_sha256']}" in lines
    assert f"artifact:     {v2['artifact_uri']}" in lines
    assert "card:         silta models card coder@2" in lines


def test_model_card_markdown_and_json(lake: Lake) -> None:
    md = lake.read("models", "card", "coder@champion")
    js = lake.read("models", "card", "coder@champion", "--json")
    v1 = _versions(lake)[1]

    assert md.code == 0, md
    assert md.out.startswith("# Model card: coder v1\n"), md.out[:200]
    assert "\n## Responsible ML checklist\n" in md.out
    assert f"- **Artifact sha256:** {v1['artifact_sha256']}\n" in md.out
    assert js.code == 0, js
    card = js.json()
    details = card["model_details"]
    assert (details["name"], details["version"]["name"], details["artifact_sha256"],
            details["config_hash"]) == ("coder", "1", v1["artifact_sha256"],
                                        v1["config_hash"])


def test_promote_alias_and_archive_move_the_registry(lake: Lake, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(lake.root, root)
    config = root / "silta.toml"

    def cli(*args: str) -> Result:
        return _cli(root, config, *args)

    def shown() -> dict[str, Any]:
        r = cli("models", "show", "coder", "--json")
        assert r.code == 0, r
        result: dict[str, Any] = r.json()
        return result

    before = shown()
    champion = next(v["version"] for v in before["versions"] if "champion" in v["aliases"])
    other = next(v["version"] for v in before["versions"] if v["version"] != champion)

    r = cli("models", "promote", "coder", str(other), "--reason", REASON)
    assert r.code == 0, r
    assert r.out == f"coder@champion is now version {other} (was {champion})\n"
    after = shown()
    assert after["alias_history"][:-1] == before["alias_history"]
    move = after["alias_history"][-1]
    assert dt.datetime.fromisoformat(move.pop("set_at")) > \
        dt.datetime.fromisoformat(before["alias_history"][-1]["set_at"])
    assert move == {"alias": "champion", "version": other, "previous": champion,
                    "set_by": WHO, "reason": REASON}
    assert {v["version"]: v["aliases"] for v in after["versions"]} == {
        champion: [], other: ["challenger", "champion"]}

    r = cli("models", "promote", "coder", str(other))
    assert r.code == 2, r
    assert r.err == f"silta: usage error: coder@champion is version {other} already\n"

    r = cli("models", "alias", "coder", "staging", str(other))
    assert r.code == 0, r
    assert r.out == f"coder@staging is now version {other}\n"

    r = cli("models", "archive", "coder", str(other))
    assert r.code == 2, r
    assert r.err == (f"silta: usage error: coder@{other} is challenger and champion and "
                     "staging; move them to another version first (`silta models alias "
                     "coder challenger VERSION`)\n")

    r = cli("models", "archive", "coder", str(champion), "--reason", "superseded")
    assert r.code == 0, r
    assert r.out == f"coder@{champion} is archived\n"
    assert {v["version"]: v["state"] for v in shown()["versions"]} == {
        champion: "archived", other: "active"}
    r = cli("models", "promote", "coder", str(champion))
    assert r.code == 2, r
    assert r.err == (f"silta: usage error: coder@{champion} is archived; an alias cannot "
                     "point at it\n")

    r = cli("models", "archive", "coder", str(champion))
    assert r.code == 2, r
    assert r.err == f"silta: usage error: coder@{champion} is archived already\n"
    r = cli("models", "archive", "coder", str(champion), "--undo")
    assert r.code == 0, r
    assert r.out == f"coder@{champion} is active\n"
    r = cli("models", "archive", "coder", str(champion), "--undo")
    assert r.code == 2, r
    assert r.err == f"silta: usage error: coder@{champion} is active already\n"
    final = shown()
    assert {v["version"]: v["state"] for v in final["versions"]} == {
        champion: "active", other: "active"}
    assert {v["version"]: v["aliases"] for v in final["versions"]} == {
        champion: [], other: ["challenger", "champion", "staging"]}


@pytest.mark.parametrize(("ref", "error"), [
    ("nosuch", "silta: model 'nosuch' not found; registered models: coder\n"),
    ("coder@9", "silta: model version 'coder@9' not found; versions of 'coder': 1, 2\n"),
    ("coder@nosuch", "silta: alias 'coder@nosuch' not found; aliases of 'coder': challenger, "
                     "champion; set one with `silta models alias coder nosuch VERSION`\n"),
    # `MODEL@` names no version: it is not the whole model
    ("coder@", "silta: usage error: model reference 'coder@' names no version or alias "
               "after '@'\n"),
    ("../x", "silta: unsafe name refused: model name '../x' is not allowed; use 1-64 "
             "letters, digits, '_', '.' or '-'\n"),
])
def test_models_show_refuses_what_it_cannot_name(lake: Lake, ref: str, error: str) -> None:
    r = lake.read("models", "show", ref)

    assert r.code == 2, r
    assert r.out == ""
    assert r.err == error


# -- runs ---------------------------------------------------------------------------------
def test_runs_list_json_has_every_run_newest_first(lake: Lake) -> None:
    r = lake.read("runs", "list", "--json")

    assert r.code == 0, r
    runs = r.json()
    expected = [  # the order they ran in, newest first
        (lake.run_id("day4_predict"), "predict", "code_answers", "ok", "lake"),
        (lake.run_id("day4_sync"), "sync", "answers", "ok", "lake"),
        (lake.run_id("predict"), "predict", "code_answers", "ok", "lake"),
        (lake.run_id("forced"), "train", "train_coder", "ok", "lake"),
        # a skipped training stays in the agent's state store
        (lake.run_id("again"), "train", "train_coder", "skipped", "local"),
        (lake.run_id("train"), "train", "train_coder", "ok", "lake"),
        (lake.landed["codes"], "sync", "codes", "ok", "lake"),
        (lake.landed["answers"], "sync", "answers", "ok", "lake"),
    ]
    assert [(x["run_id"], x["kind"], x["name"], x["status"], x["where"]) for x in runs] == \
        expected
    started = [dt.datetime.fromisoformat(x["started_at"]) for x in runs]
    assert started == sorted(started, reverse=True)
    assert all(s.utcoffset() == dt.timedelta(0) for s in started)
    assert {x["run_id"]: (x["model"], x["model_version"]) for x in runs
            if x["kind"] != "sync"} == {
        lake.run_id("day4_predict"): ("coder", 1), lake.run_id("predict"): ("coder", 1),
        lake.run_id("forced"): ("coder", 2), lake.run_id("again"): ("coder", 1),
        lake.run_id("train"): ("coder", 1)}


@pytest.mark.parametrize(("option", "expected"), [
    (("--kind", "train"), ("forced", "again", "train")),
    (("--kind", "predict"), ("day4_predict", "predict")),
    (("--status", "skipped"), ("again",)),
    (("--status", "failed"), ()),
])
def test_runs_list_filters(lake: Lake, option: tuple[str, str],
                           expected: tuple[str, ...]) -> None:
    r = lake.read("runs", "list", *option, "--json")

    assert r.code == 0, r
    assert [x["run_id"] for x in r.json()] == [lake.run_id(w) for w in expected]


def test_runs_show_json_of_a_prediction_names_its_inputs(lake: Lake) -> None:
    run_id = lake.run_id("day4_predict")
    r = lake.read("runs", "show", run_id, "--json")
    v1 = _versions(lake)[1]

    assert r.code == 0, r
    run = r.json()
    assert (run["run_id"], run["kind"], run["name"], run["status"], run["os_user"],
            run["host"]) == (run_id, "predict", "code_answers", "ok", getpass.getuser(),
                             socket.gethostname())
    assert run["inputs"] == [
        {"from_version": 0, "table": "raw/answers", "to_version": 1},
        {"artifact_sha256": _sha256(v1["artifact_uri"]), "model": "coder",
         "ref": "coder@champion", "version": 1}]
    assert run["outputs"] == [{"rows": lake.day4_predict.json()[0]["rows"],
                               "table": "predictions/codes", "version": 1}]


def test_runs_show_text(lake: Lake) -> None:
    run_id = lake.run_id("day4_predict")
    run = lake.read("runs", "show", run_id, "--json").json()
    r = lake.read("runs", "show", run_id)

    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == f"run {run_id}: predict code_answers ok"
    assert "  model:    coder@1" in lines
    assert '  input:    {"from_version": 0, "table": "raw/answers", "to_version": 1}' in lines
    assert (f'  output:   {{"rows": {run["outputs"][0]["rows"]}, "table": '
            '"predictions/codes", "version": 1}') in lines
    assert f"  result:   {run['detail']['message']}" in lines


def test_runs_show_unknown_run(lake: Lake) -> None:
    r = lake.read("runs", "show", "nosuch")

    assert r.code == 2, r
    assert r.err == "silta: run 'nosuch' not found; list runs with `silta runs list`\n"


def test_replay_of_a_training_is_identical(lake: Lake) -> None:
    run_id = lake.run_id("train")
    recorded = lake.read("runs", "show", run_id, "--json").json()
    r = lake.read("runs", "replay", run_id)

    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == (f"replay of train run {run_id} (train_coder, coder@1; inputs "
                        "raw/answers@0, raw/codes@0)")
    n = _versions(lake)[1]["metrics"]["n"]
    assert lines[1] == (f"identical: {n} row(s), content hash "
                        f"{recorded['detail']['output_hash'][:16]} both times")


def test_replay_of_a_prediction_json_is_identical(lake: Lake) -> None:
    run_id = lake.run_id("predict")
    r = lake.read("runs", "replay", run_id, "--json")

    assert r.code == 0, r
    result = r.json()
    assert (result["identical"], result["run_id"], result["kind"], result["model"],
            result["version"], result["rows"], result["replay_rows"], result["inputs"],
            result["output"], result["differing_columns"]) == (
        True, run_id, "predict", "coder", 1, _answer_rows(lake), _answer_rows(lake),
        ["raw/answers (start, 0]"], "predictions/codes@0", [])
    assert result["output_hash"] == result["replay_hash"]
    assert re.fullmatch(r"[0-9a-f]{64}", result["output_hash"])


def test_replay_of_a_skipped_run_says_there_is_nothing_to_replay(lake: Lake) -> None:
    run_id = lake.run_id("again")  # the second training: up to date, skipped
    r = lake.read("runs", "replay", run_id)

    assert r.code == 2, r
    assert r.err == (f"silta: usage error: run {run_id} (train train_coder) finished skipped "
                     "without output; there is nothing to replay\n")


def test_replay_of_a_sync_is_refused(lake: Lake) -> None:
    run_id = lake.landed["answers"]
    r = lake.read("runs", "replay", run_id)

    assert r.code == 2, r
    assert r.out == ""
    assert r.err.startswith(f"silta: usage error: run {run_id} is a sync run; only train and "
                            "predict runs can be replayed"), r


# -- lineage and status -------------------------------------------------------------------
def _walk(node: Any, kind: str) -> list[dict[str, Any]]:
    """Commit nodes of a kind ("sync", "predict") anywhere in a lineage tree."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "commit" and node.get("kind") == kind:
            found.append(node)
        for v in node.values():
            found += _walk(v, kind)
    elif isinstance(node, list):
        for v in node:
            found += _walk(v, kind)
    return found


def test_lineage_json_goes_back_to_the_source_files(lake: Lake) -> None:
    r = lake.read("lineage", "predictions/codes", "--json")
    v1 = _versions(lake)[1]

    assert r.code == 0, r
    tree = r.json()
    assert (tree["ref"], tree["commit_count"]) == ("predictions/codes@1", 2)
    assert [(c["version"], c["kind"], c["run_id"]) for c in tree["commits"]] == [
        (1, "predict", lake.run_id("day4_predict")), (0, "predict", lake.run_id("predict"))]
    assert [c["run_id"] for c in _walk(tree, "predict")] == [
        lake.run_id("day4_predict"), lake.run_id("predict")]
    newest, first = tree["commits"]
    assert (newest["model"]["ref"], newest["model"]["artifact_sha256"],
            newest["model"]["sha256_matches"], newest["model"]["run_id"]) == (
        "model coder@1", _sha256(v1["artifact_uri"]), True, lake.run_id("train"))
    assert (newest["input"]["ref"], first["input"]["ref"]) == ("raw/answers (0, 1]",
                                                               "raw/answers@0")
    syncs = _walk(tree, "sync")
    assert sorted((c["table"], c["version"], c["run_id"]) for c in syncs) == sorted([
        ("raw/answers", 0, lake.landed["answers"]), ("raw/codes", 0, lake.landed["codes"]),
        ("raw/answers", 1, lake.run_id("day4_sync"))])
    files = {f["path"]: f["sha256"] for c in syncs for f in c["files"]}
    assert files == lake.inbox_sha256
    assert sum(c["file_count"] for c in syncs) == len(lake.inbox_sha256)


def test_lineage_text_lists_the_files_with_their_sha256(lake: Lake) -> None:
    r = lake.read("lineage", "predictions/codes")

    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == "table predictions/codes@1: 2 commit(s)"
    listed = {m.group(1): m.group(2) for line in lines
              if (m := re.search(r"─ file (\S+) sha256 ([0-9a-f]{64}) \(\d+ bytes\)$", line))}
    assert listed == lake.inbox_sha256
    for path, sha in lake.inbox_sha256.items():
        size = (lake.root / "inbox" / path).stat().st_size
        assert any(line.endswith(f"file {path} sha256 {sha} ({size} bytes)") for line in lines)


@pytest.mark.parametrize(("ref", "error"), [
    ("predictions/codes@99", "silta: version 'predictions/codes@99' not found; the table's "
                             "versions are 0..1\n"),
    ("nosuch", "silta: table 'nosuch' not found; list tables with `silta tables list`\n"),
])
def test_lineage_of_what_does_not_exist(lake: Lake, ref: str, error: str) -> None:
    r = lake.read("lineage", ref)

    assert r.code == 2, r
    assert r.out == ""
    assert r.err == error


def test_status_json_shows_trainings_and_predictions(lake: Lake) -> None:
    r = lake.read("status", "--json")
    forced = lake.forced.json()[0]
    predicted = lake.day4_predict.json()[0]

    assert r.code == 0, r
    jobs = r.json()["jobs"]
    for j in jobs:
        assert dt.datetime.fromisoformat(j.pop("last_run")).utcoffset() == dt.timedelta(0)
    assert jobs == [
        {"job": "train:train_coder", "kind": "train", "name": "train_coder", "enabled": True,
         "schedule": None, "model": "coder",
         # for a training: the champion its model has now (v2 did not beat v1)
         "resolves_to": "coder@1",
         "outcome": "ok", "rows": forced["rows"], "run_model": "coder@2",
         "result": forced["message"], "error": None, "next_run": None},
        {"job": "predict:code_answers", "kind": "predict", "name": "code_answers",
         "enabled": True, "schedule": None, "model": "coder@champion",
         "resolves_to": "coder@1", "outcome": "ok", "rows": predicted["rows"],
         "run_model": "coder@1", "result": predicted["message"], "error": None,
         "next_run": None},
    ]
    assert _versions(lake)[1]["aliases"] == ["champion"]
