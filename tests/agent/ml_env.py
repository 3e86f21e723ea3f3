"""A real lake for ML tests: the demo's survey answers and coded sample, landed by syncs.

``MlEnv`` writes the demo generator's files into an inbox, lands them with the real sync
engine (so every table version has sync commits with file checksums behind it), and
runs trainings and predictions through the agent's own job runner, in this process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

from agent.config import LoadedConfig, load_config
from agent.demo import generate, generate_drift
from agent.ml.jobrunner import MlJobRunner
from agent.ml.registry import ModelRegistry
from agent.outcome import JobOutcome, SyncOutcome
from agent.state import StateStore
from agent.stores import open_lake, open_store
from agent.sync import SyncEngine
from connectors.lake import DeltaLake

SEED = 2026
ROWS = 150

CONFIG = """
[agent]
name = "test-agent"
state_dir = "state"
[lake]
uri = "lake"
[connectors.inbox]
type = "folder"
path = "inbox"
[[syncs]]
name = "answers"
source = "inbox:responses/*.csv"
target = "lake:raw/answers"
csv = {{ delimiter = ";", decimal = "," }}
settle_seconds = 0
[[syncs]]
name = "codes"
source = "inbox:coded/*.csv"
target = "lake:raw/codes"
csv = {{ delimiter = ";", column_types = {{ isco08 = "string" }} }}
mode = "merge"
key = ["response_id"]
settle_seconds = 0
[models.coder]
description = "test coder"
training_table = "raw/answers"
labels_table = "raw/codes"
key = ["response_id"]
label = "isco08"
text_features = ["job_title"]
features = ["language"]
segments = ["language"]
seed = 7
promotion = "{promotion}"
min_improvement = {min_improvement}
min_confidence = 0.6
params = {params}
{model_extra}
[[trainings]]
name = "train_coder"
model = "coder"
{training_extra}
[[predictions]]
name = "code_answers"
model = "coder@champion"
input = "raw/answers"
output = "predictions/codes"
passthrough = ["language"]
top_k = 3
batch_rows = {batch_rows}
{prediction_extra}
{tail}
"""


class MlEnv:
    """The demo's data in a lake under ``root``, with one model, a training, a prediction."""

    def __init__(self, root: Path, *, promotion: str = "auto", min_improvement: float = 0.0,
                 params: str = "{ C = 10.0 }", batch_rows: int = 65536, days: int = 3,
                 rows: int = ROWS, model_extra: str = "", training_extra: str = "",
                 prediction_extra: str = "", tail: str = "") -> None:
        self.root = root
        self.days = 0
        self.rows = rows
        self.states: list[StateStore] = []
        self.configure(promotion=promotion, min_improvement=min_improvement, params=params,
                       batch_rows=batch_rows, model_extra=model_extra,
                       training_extra=training_extra, prediction_extra=prediction_extra,
                       tail=tail)
        (root / "inbox").mkdir(parents=True, exist_ok=True)
        self.add_days(days)

    # -- setup ------------------------------------------------------------------------
    def configure(self, **values: Any) -> LoadedConfig:
        """Write the config with these settings (the rest as before) and load it."""
        self.settings = {**getattr(self, "settings", {}), **values}
        self.config_path = self.root / "silta.toml"
        self.config_path.write_text(CONFIG.format(**self.settings), encoding="utf-8")
        self.loaded = load_config(self.config_path)
        return self.loaded

    def add_days(self, n: int, *, coded: bool = True) -> list[Path]:
        """``n`` more daily answer files (new response ids) and the grown coded sample."""
        files = generate(SEED, self.days + n, self.rows)
        written = []
        for rel, data, _exported in files:
            is_answers = rel.startswith("responses/")
            day = int(rel.rsplit("_", 1)[1][6:8]) if is_answers else None
            if is_answers and day is not None and day <= self.days:
                continue  # written before, unchanged
            if not is_answers and not coded:
                continue
            written.append(self.place(rel, data))
        self.days += n
        return written

    def add_drifted_month(self, files: int = 2, rows: int | None = None) -> list[Path]:
        """The demo's later, drifted month (new job titles, shifted categories) and its
        coded sample, with response ids of their own."""
        return [self.place(rel, data)
                for rel, data, _ in generate_drift(SEED, files, rows or self.rows)]

    def place(self, rel: str, data: bytes) -> Path:
        """Write one inbox file atomically, settled (an hour old)."""
        path = self.root / "inbox" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        # an hour old: settled, and a new coded sample is newer than the last one
        ts = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).timestamp()
        os.utime(path, (ts, ts))
        return path

    # -- running ----------------------------------------------------------------------
    def state(self) -> StateStore:
        state = StateStore(self.loaded.state_dir)
        self.states.append(state)
        return state

    @property
    def lake(self) -> DeltaLake:
        return open_lake(self.loaded)

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.lake)

    def sync(self, *names: str) -> list[SyncOutcome]:
        stores = {n: open_store(self.loaded, n) for n in self.loaded.config.connectors}
        engine = SyncEngine(self.loaded, self.state(), self.lake, stores, "test-agent")
        outs = [engine.run(n) for n in (names or ("answers", "codes"))]
        for o in outs:
            assert o.status == "ok", o
        return outs

    def runner(self) -> MlJobRunner:
        return MlJobRunner(self.loaded, self.state(), self.lake, "test-agent", in_process=True)

    def train(self, *, force: bool = False) -> JobOutcome:
        return self.runner().run("train", "train_coder", trigger="test", force=force)

    def predict(self) -> JobOutcome:
        return self.runner().run("predict", "code_answers", trigger="test")

    def close(self) -> None:
        for s in self.states:
            s.close()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
