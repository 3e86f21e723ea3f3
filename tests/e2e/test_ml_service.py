"""The agent as a service runs the whole chain by itself: new files -> sync -> train ->
predict -> publish, each triggered by the one before (`after`), and an operator's queued
run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.agent.ml_env import MlEnv
from tests.conftest import duck_rows
from tests.e2e._cli import background, ledger, silta, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PUBLISH = """
[[syncs]]
name = "publish"
source = "lake:predictions/codes"
target = "inbox:outgoing/codes_v{version}.csv"
columns = ["response_id", "predicted", "confidence", "needs_review", "model_version"]
after = ["predict:code_answers"]
"""


def _published(root: Path) -> dict[str, int]:
    out = root / "inbox" / "outgoing"
    if not out.is_dir():
        return {}
    return {p.name: len(p.read_text(encoding="utf-8").splitlines()) - 1
            for p in sorted(out.glob("codes_v*.csv"))}


def test_the_service_runs_sync_train_predict_publish_on_its_own(tmp_path: Path,
                                                                duck: Any) -> None:
    env = MlEnv(tmp_path, training_extra='after = ["sync:codes"]',
                prediction_extra='after = ["sync:answers", "train:train_coder"]',
                tail=PUBLISH)
    text = env.config_path.read_text(encoding="utf-8").replace(
        "settle_seconds = 0", "settle_seconds = 0\nwatch = true")
    env.config_path.write_text(text, encoding="utf-8")
    config = env.config_path
    predictions = tmp_path / "lake" / "predictions" / "codes"

    with background(tmp_path, "agent", "run", "--config", config) as agent:
        # start-up scan lands the files; each job follows the one before it
        published = wait_for("the first predictions to be published on-prem",
                             lambda: _published(tmp_path) or None, timeout=120)
        assert published == {"codes_v0.csv": 450}
        assert duck_rows(duck, predictions, "SELECT count(*), count(DISTINCT response_id), "
                         "max(model_version) FROM t") == [(450, 450, 1)]

        # a new day's answers arrive: only they are predicted and published
        env.add_days(1, coded=False)
        wait_for("the new answers' predictions", lambda: _published(tmp_path).get(
            "codes_v1.csv"), timeout=120)
        assert _published(tmp_path) == {"codes_v0.csv": 450, "codes_v1.csv": 150}
        assert duck_rows(duck, predictions, "SELECT count(*), count(DISTINCT response_id) "
                         "FROM t") == [(600, 600)]

        # an operator asks for a training while the agent runs: it is queued for the agent
        r = silta(tmp_path, "jobs", "run", "train_coder", "--config", config)
        assert r.code == 0, r
        assert r.out.startswith("the agent is running: queued a run of train:train_coder")

        def trained() -> list[dict[str, Any]] | None:
            rows = ledger(tmp_path / "state", "SELECT trigger, status, verified FROM runs "
                          "WHERE kind='train' AND trigger LIKE 'operator:%'")
            return [r for r in rows if r["status"] != "running"] or None

        runs = wait_for("the operator's training run", trained, timeout=60)
        # the data did not change since the last version: nothing new is registered
        assert [r["status"] for r in runs] == ["skipped"]
        assert "up to date" in runs[0]["verified"]
        triggers = {r["trigger"] for r in ledger(
            tmp_path / "state", "SELECT trigger FROM runs WHERE kind IN ('train', 'predict')")}
        assert {"after:sync:codes", "after:train:train_coder", "after:sync:answers"} <= \
            triggers
        assert agent.terminate(timeout=60) == 0, agent.stderr()
    assert "Traceback" not in agent.stderr()
    r = silta(tmp_path, "runs", "list", "--kind", "predict", "--json", "--config", config)
    assert r.code == 0, r
    # two runs predicted something (more may have found nothing new, or no model yet: those
    # are local only); none failed
    assert [x["status"] for x in r.json() if x["status"] not in ("ok", "skipped")] == []
    assert sorted(x["metrics"]["rows"] for x in r.json() if x["where"] == "lake") == [150, 450]
