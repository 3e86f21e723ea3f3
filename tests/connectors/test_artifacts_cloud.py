"""Model artifacts and the registry in an object-store lake (Azurite, moto S3)."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import queue
from typing import Any

import pytest
from sklearn.linear_model import LogisticRegression

from agent.ml.artifacts import (
    artifact_exists,
    load_model,
    read_version_file,
    save_model,
    save_version_file,
)
from agent.ml.registry import ModelRegistry
from connectors.errors import ArtifactIntegrityError, NotFoundError, UsageError
from connectors.lake import DeltaLake

pytestmark = pytest.mark.timeout(300)
X = [[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]]
Y = ["a", "b", "a", "b"]
_CTX = mp.get_context("spawn")


@pytest.fixture(params=["az", "s3"])
def lake(request: pytest.FixtureRequest) -> DeltaLake:
    if request.param == "az":
        server = request.getfixturevalue("azurite_server")
        return DeltaLake(f"az://{server.new_container()}/lake", server.storage_options())
    server = request.getfixturevalue("s3_server")
    return DeltaLake(f"s3://{server.new_bucket()}/lake", server.storage_options())


def _fit(c: float = 1.0) -> LogisticRegression:
    return LogisticRegression(C=c).fit(X, Y)


def test_an_artifact_round_trips_and_is_checked(lake: DeltaLake) -> None:
    opts = lake.storage_options
    assert not artifact_exists(lake.uri, opts, "m", 1)
    ref = save_model(lake.uri, opts, "m", 1, _fit())
    assert ref.uri == f"{lake.uri}/_silta/artifacts/m/1/model.skops"
    assert artifact_exists(lake.uri, opts, "m", 1)
    model = load_model(ref, ref.sha256, storage_options=opts)
    assert list(model.predict(X)) == Y
    # the stored bytes are the ones the sha256 names (read with a second reader)
    table = DeltaLake(f"{lake.uri}/_silta/artifacts/m", opts).require("1")
    rows = table.to_pyarrow_dataset().to_table().to_pylist()
    assert [(r["name"], r["sha256"], r["size"]) for r in rows] == [
        ("model.skops", ref.sha256, ref.size)]
    assert hashlib.sha256(rows[0]["data"]).hexdigest() == ref.sha256
    # once only
    with pytest.raises(UsageError, match="already exists"):
        save_model(lake.uri, opts, "m", 1, _fit(0.5))
    assert load_model(ref, ref.sha256, storage_options=opts).C == 1.0
    # the card beside it, written once however often it is asked to be
    save_version_file(lake.uri, opts, "m", 1, "card.md", b"# card\n")
    save_version_file(lake.uri, opts, "m", 1, "card.md", b"# card\n")
    assert read_version_file(lake.uri, opts, "m", 1, "card.md") == b"# card\n"
    with pytest.raises(NotFoundError):
        read_version_file(lake.uri, opts, "m", 1, "card.json")
    with pytest.raises(ArtifactIntegrityError, match="expected " + "0" * 64):
        load_model(ref, "0" * 64, storage_options=opts)


def test_a_tampered_remote_artifact_is_refused(lake: DeltaLake) -> None:
    opts = lake.storage_options
    ref = save_model(lake.uri, opts, "m", 1, _fit())
    other = save_model(lake.uri, opts, "m", 2, _fit(0.01))
    versions = DeltaLake(f"{lake.uri}/_silta/artifacts/m", opts)
    swapped = versions.read("2")
    # replaced by another model's bytes (an overwrite of the version's table) ...
    from deltalake import write_deltalake

    write_deltalake(versions.table_uri("1"), swapped, mode="overwrite", storage_options=opts)
    with pytest.raises(ArtifactIntegrityError, match=f"has sha256 {other.sha256}"):
        load_model(ref, ref.sha256, storage_options=opts)
    # ... or a second copy slipped in beside the first
    write_deltalake(versions.table_uri("2"), swapped, mode="append", storage_options=opts)
    with pytest.raises(ArtifactIntegrityError, match=r"2 copies of model\.skops"):
        load_model(other, other.sha256, storage_options=opts)


def registrar(uri: str, options: dict[str, str], writer: str, start: Any, out: Any) -> None:
    reg = ModelRegistry(DeltaLake(uri, options))
    start.wait(120)
    got = []
    for k in range(3):
        estimator = _fit(1.0 + k)
        v = reg.register("shared", save=lambda version, e=estimator: save_model(
            uri, options, "shared", version, e), flavor="sklearn", signature={}, params={},
            metrics={}, training_data={}, code_version=None, libraries={}, config_hash="",
            created_by=writer)
        got.append((v.version, v.artifact.sha256))
    out.put(got)
    out.close()
    out.join_thread()
    os._exit(0)  # deltalake's native thread pools can abort at interpreter exit


def test_two_processes_register_distinct_versions_in_a_remote_lake(lake: DeltaLake) -> None:
    start, out = _CTX.Barrier(2), _CTX.Queue()
    procs = [_CTX.Process(target=registrar, args=(lake.uri, lake.storage_options, w, start,
                                                  out)) for w in ("p1", "p2")]
    for p in procs:
        p.start()
    got: list[tuple[int, str]] = []
    try:
        for _ in procs:
            got += out.get(timeout=240)
    except queue.Empty:
        pytest.fail("a registrar gave no result in 240 s (see its stderr above)")
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    assert sorted(v for v, _ in got) == list(range(1, 7))
    versions = ModelRegistry(lake).versions("shared")
    assert {v.version: v.artifact.sha256 for v in versions} == dict(got)
    for v in versions:  # every registered sha256 is the one of the artifact stored
        assert load_model(v.artifact, v.artifact.sha256,
                          storage_options=lake.storage_options) is not None
