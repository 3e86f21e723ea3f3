"""Model artifacts: skops only, sha256 checked at every load, only trusted types built."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from agent.ml.artifacts import ArtifactRef, load_model, save_model
from connectors.errors import ArtifactIntegrityError, UnsafeNameError, UsageError

TITLES = ["ohjelmistokehittäjä", "Python-ohjelmoija", "järjestelmäasiantuntija",
          "sairaanhoitaja", "lähihoitaja", "terveydenhoitaja",
          "myyjä", "myymäläpäällikkö", "asiakaspalvelija"]
LABELS = ["it", "it", "it", "hoito", "hoito", "hoito", "myynti", "myynti", "myynti"]
PROBE = ["ohjelmistoarkkitehti", "kotihoitaja", "myyntiedustaja", "Python-kehittäjä"]


class Shouter:
    """A class outside sklearn/numpy/scipy: skops must not build it unless trusted."""

    def __init__(self, word: str = "") -> None:
        self.word = word


class _Touch:
    """Pickling this makes a file when unpickled: proof that nothing unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def pipeline() -> Pipeline:
    pipe = Pipeline([("tfidf", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4))),
                     ("clf", LogisticRegression(max_iter=500))])
    return pipe.fit(TITLES, LABELS)


def _path(ref: ArtifactRef) -> Path:
    return Path(ref.uri.removeprefix("file://"))


def test_round_trip_predicts_the_same(tmp_path: Path, pipeline: Pipeline):
    ref = save_model(str(tmp_path), {}, "job_titles", 1, pipeline)
    assert ref.uri == f"{tmp_path}/_silta/artifacts/job_titles/1/model.skops"
    assert ref.format == "skops"
    loaded = load_model(ref, ref.sha256)
    assert loaded is not pipeline
    assert list(loaded.predict(PROBE)) == list(pipeline.predict(PROBE))
    assert loaded.predict_proba(PROBE).tolist() == pipeline.predict_proba(PROBE).tolist()


def test_recorded_sha_is_the_file_sha(tmp_path: Path, pipeline: Pipeline):
    ref = save_model(f"file://{tmp_path}", {}, "m", 3, pipeline)
    data = _path(ref).read_bytes()
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size == len(data)
    # no temporary file is left next to the artifact
    assert [p.name for p in _path(ref).parent.iterdir()] == ["model.skops"]


def test_tampered_file_is_refused(tmp_path: Path, pipeline: Pipeline):
    ref = save_model(str(tmp_path), {}, "m", 1, pipeline)
    data = bytearray(_path(ref).read_bytes())
    data[len(data) // 2] ^= 0x01
    _path(ref).write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ArtifactIntegrityError) as e:
        load_model(ref, ref.sha256)
    assert ref.sha256 in str(e.value) and actual in str(e.value)
    assert e.value.title == "Model artifact refused" and not e.value.retriable


def test_wrong_expected_sha_is_refused(tmp_path: Path, pipeline: Pipeline):
    ref = save_model(str(tmp_path), {}, "m", 1, pipeline)
    with pytest.raises(ArtifactIntegrityError, match="expected " + "0" * 64):
        load_model(ref.uri, "0" * 64)


def test_overwrite_is_refused(tmp_path: Path, pipeline: Pipeline):
    ref = save_model(str(tmp_path), {}, "m", 1, pipeline)
    before = _path(ref).read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        save_model(str(tmp_path), {}, "m", 1, LogisticRegression())
    assert _path(ref).read_bytes() == before
    assert save_model(str(tmp_path), {}, "m", 2, pipeline).uri.endswith("/m/2/model.skops")


@pytest.mark.parametrize("name", ["../x", "a/b", "", "x\n", "..", ".", "/abs", "a\\b",
                                  "x" * 65, "é"])
def test_hostile_model_names_are_refused(tmp_path: Path, name: str):
    with pytest.raises(UnsafeNameError):
        save_model(str(tmp_path / "lake"), {}, name, 1, LogisticRegression())
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize("version", [0, -1, True])
def test_bad_versions_are_refused(tmp_path: Path, version: int):
    with pytest.raises(UsageError, match="version"):
        save_model(str(tmp_path), {}, "m", version, LogisticRegression())


def test_custom_class_needs_trust(tmp_path: Path):
    ref = save_model(str(tmp_path), {}, "custom", 1, Shouter("hei"))
    name = f"{__name__}.Shouter"
    with pytest.raises(ArtifactIntegrityError, match=name.replace(".", r"\.")):
        load_model(ref, ref.sha256)
    loaded = load_model(ref, ref.sha256, trusted=[name])
    assert isinstance(loaded, Shouter) and loaded.word == "hei"


def test_pickle_under_the_name_is_not_unpickled(tmp_path: Path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "_silta/artifacts/m/1/model.skops"
    path.parent.mkdir(parents=True)
    data = pickle.dumps(_Touch(marker))
    path.write_bytes(data)
    # the right sha: only the format check stands between this file and pickle
    with pytest.raises(ArtifactIntegrityError, match="not a readable skops file"):
        load_model(str(path), hashlib.sha256(data).hexdigest())
    assert not marker.exists()
