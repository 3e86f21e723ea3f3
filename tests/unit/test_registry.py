"""The model registry: versions and alias moves in Delta tables any engine can read."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing as mp
import os
import queue
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LogisticRegression

from agent.ml.artifacts import ArtifactRef, artifact_uri, load_model, save_model
from agent.ml.registry import ALIASES_TABLE, REGISTRY_TABLE, ModelRegistry, ModelVersion
from connectors.errors import NotFoundError, UnsafeNameError, UsageError
from connectors.lake import DeltaLake
from tests.conftest import duck_rows

_CTX = mp.get_context("spawn")
PER_PROCESS = 5
X = [[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]]
Y = ["a", "b", "a", "b"]


def _fit(c: float) -> LogisticRegression:
    return LogisticRegression(C=c).fit(X, Y)


def _register(reg: ModelRegistry, model: str, c: float, who: str = "tester",
              code_version: str | None = "silta 0.1 (abc123)") -> ModelVersion:
    estimator = _fit(c)
    return reg.register(
        model,
        save=lambda version: save_model(reg.lake.uri, {}, model, version, estimator),
        flavor="sklearn",
        signature={"inputs": [{"name": "x0", "type": "double"}, {"name": "x1", "type": "double"}],
                   "outputs": ["a", "b"]},
        params={"C": c, "solver": "lbfgs"},
        metrics={"overall": {"accuracy": 1.0}, "segments": {"fi": {"accuracy": 0.5}}},
        training_data={"table": "raw/titles", "version": 3, "rows": 4,
                       "content_hash": "f" * 64},
        code_version=code_version, libraries={"scikit-learn": "1.9.1", "skops": "x"},
        config_hash="c" * 64, created_by=who)


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(DeltaLake(str(tmp_path / "lake")))


def test_register_and_read_back_every_field(reg: ModelRegistry, duck: Any) -> None:
    v1 = _register(reg, "titles", 1.0)
    v2 = _register(reg, "titles", 0.5, who="other", code_version=None)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.artifact.uri == artifact_uri(reg.lake.uri, "titles", 1)
    assert v1.created_at.tzinfo is not None and v1.created_at.utcoffset() == dt.timedelta(0)
    assert reg.versions("titles") == [v1, v2]
    assert reg.get("titles", 2) == v2
    assert reg.models() == ["titles"]
    assert v2.params == {"C": 0.5, "solver": "lbfgs"}
    assert v2.code_version is None
    # the sha256 recorded is the one of the file, and it loads
    data = Path(v2.artifact.uri).read_bytes()
    assert hashlib.sha256(data).hexdigest() == v2.artifact.sha256
    assert list(load_model(v2.artifact, v2.artifact.sha256).predict(X)) == Y

    # an independent reader sees the same rows, nested fields as JSON text
    rows = duck_rows(duck, Path(reg.lake.table_uri(REGISTRY_TABLE)),
                     "SELECT version, artifact_sha256, params, metrics, training_data, "
                     "libraries, code_version, created_by, created_at FROM t ORDER BY version")
    assert [r[0] for r in rows] == [1, 2]
    for row, v in zip(rows, [v1, v2], strict=True):
        assert row[1] == v.artifact.sha256
        assert json.loads(row[2]) == v.params
        assert json.loads(row[3]) == v.metrics
        assert json.loads(row[4]) == v.training_data
        assert json.loads(row[5]) == v.libraries
        assert (row[6], row[7]) == (v.code_version, v.created_by)
        assert row[8] == v.created_at


def test_aliases_move_with_history_and_resolve(reg: ModelRegistry, duck: Any) -> None:
    v1 = _register(reg, "titles", 1.0)
    v2 = _register(reg, "titles", 0.5)
    reg.set_alias("titles", "champion", 1, by="anna", reason="first model")
    assert reg.resolve("titles@champion") == v1
    reg.set_alias("titles", "challenger", 2, by="ben", reason="new data")
    reg.set_alias("titles", "champion", 2, by="anna", reason="beat v1 by 3 points")
    assert reg.resolve("titles@champion") == v2  # resolved at call time, not cached

    history = reg.alias_history("titles", "champion")
    assert [(h.version, h.previous_version, h.set_by, h.reason) for h in history] == [
        (1, None, "anna", "first model"), (2, 1, "anna", "beat v1 by 3 points")]
    assert all(h.set_at.utcoffset() == dt.timedelta(0) for h in history)
    assert history[0].set_at <= history[1].set_at
    assert [h.alias for h in reg.alias_history("titles")] == [
        "champion", "challenger", "champion"]
    assert reg.aliases("titles") == {"champion": 2, "challenger": 2}

    assert reg.resolve("titles") == v2
    assert reg.resolve("titles@1") == v1
    assert duck_rows(duck, Path(reg.lake.table_uri(ALIASES_TABLE)),
                     "SELECT alias, version, previous_version, set_by FROM t "
                     "ORDER BY seq") == [("champion", 1, None, "anna"),
                                         ("challenger", 2, None, "ben"),
                                         ("champion", 2, 1, "anna")]


def test_errors_say_what_is_wrong(reg: ModelRegistry) -> None:
    with pytest.raises(NotFoundError, match="no model is registered yet"):
        reg.resolve("titles")
    _register(reg, "titles", 1.0)
    with pytest.raises(NotFoundError, match=r"'titles@7' not found; versions of 'titles': 1"):
        reg.get("titles", 7)
    with pytest.raises(NotFoundError, match="registered models: titles"):
        reg.versions("other")
    with pytest.raises(NotFoundError, match="aliases of 'titles': none"):
        reg.resolve("titles@champion")
    with pytest.raises(NotFoundError, match="titles@3"):
        reg.set_alias("titles", "champion", 3, by="x", reason="y")
    for bad in ("titles@", "a@b@c"):
        with pytest.raises(UsageError, match=r"names no version|not valid"):
            reg.resolve(bad)
    with pytest.raises(UsageError, match="versions start at 1"):
        reg.resolve("titles@0")
    for alias in ("with space", "12", "x" * 65, "a.b"):
        with pytest.raises(UsageError, match="alias"):
            reg.set_alias("titles", alias, 1, by="x", reason="y")
    with pytest.raises(UnsafeNameError):
        reg.resolve("../etc@1")
    with pytest.raises(UsageError, match="JSON"):
        reg.register("titles", save=lambda v: ArtifactRef("x", "y", 0), flavor="sklearn",
                     signature={}, params={"nan": float("nan")}, metrics={},
                     training_data={}, code_version=None, libraries={}, config_hash="",
                     created_by="x")


def test_a_number_whose_artifact_exists_is_skipped(reg: ModelRegistry) -> None:
    # an artifact without a row: a registration in flight (or one that crashed)
    save_model(reg.lake.uri, {}, "titles", 1, _fit(1.0))
    v = _register(reg, "titles", 0.5)
    assert v.version == 2
    assert [x.version for x in reg.versions("titles")] == [2]


def registrar(uri: str, writer: str, start: Any, out: Any) -> None:
    """One process: registers PER_PROCESS versions of the shared model."""
    reg = ModelRegistry(DeltaLake(uri))
    start.wait(120)
    got = [(v.version, v.artifact.sha256)
           for v in (_register(reg, "shared", 1.0 + k, who=writer) for k in range(PER_PROCESS))]
    out.put(got)
    out.close()
    out.join_thread()
    # deltalake's native thread pools can abort at interpreter exit (tests/conftest.py)
    os._exit(0)


def test_two_processes_get_distinct_versions_and_lose_nothing(tmp_path: Path) -> None:
    uri = str(tmp_path / "lake")
    start = _CTX.Barrier(2)
    out = _CTX.Queue()
    procs = [_CTX.Process(target=registrar, args=(uri, w, start, out)) for w in ("p1", "p2")]
    for p in procs:
        p.start()
    got: list[tuple[int, str]] = []
    try:
        for _ in procs:
            got += out.get(timeout=300)
    except queue.Empty:
        pytest.fail("a registrar process gave no result in 300 s (see its stderr above)")
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(v for v, _ in got) == list(range(1, 2 * PER_PROCESS + 1))
    versions = ModelRegistry(DeltaLake(uri)).versions("shared")
    assert [v.version for v in versions] == list(range(1, 2 * PER_PROCESS + 1))
    assert {v.version: v.artifact.sha256 for v in versions} == dict(got)
    for v in versions:
        data = Path(v.artifact.uri).read_bytes()
        assert hashlib.sha256(data).hexdigest() == v.artifact.sha256
    assert sorted(v.created_by for v in versions) == ["p1"] * 5 + ["p2"] * 5
