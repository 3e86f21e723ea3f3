"""Model artifacts under ``<lake>/_silta/artifacts/<model>/<version>/``: model and card.

Models are stored with skops, never pickle or joblib: loading a pickle runs whatever code
it names. Every load checks the file's sha256 against the one recorded when it was saved
and allows only the types an allow-list names, so a replaced or tampered file is refused
before any of its content is turned into objects.

Where the files live:

- a local lake: plain files, ``model.skops``, ``card.json``, ``card.md``; the model file is
  created exclusively (written under a temporary name, then *linked*, never renamed over
  an existing one), which is what claims a version number (``agent/ml/registry.py``);
- an object store (Azure Blob / ADLS, S3, GCS): the version's folder is a small Delta
  table with one row per file (name, bytes, sha256, size). Creating that table is the
  claim: delta-rs creates version 0 with a conditional put, so of two writers exactly one
  succeeds. (deltalake's file handler cannot write plain objects in 1.6: its pyarrow
  wrapper hands the Rust stream a ``Buffer`` where it wants ``bytes``.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.errors import (
    ArtifactIntegrityError,
    NotFoundError,
    StoreError,
    UnsafeNameError,
    UsageError,
)
from connectors.lake import INTERNAL_PREFIX, UNCONDITIONAL, DeltaLake
from connectors.names import check_relative_path, safe_display

ARTIFACTS_PREFIX = f"{INTERNAL_PREFIX}/artifacts"
FILE_NAME = "model.skops"
FORMAT = "skops"
#: modules whose types skops may build without being named by the caller
DEFAULT_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class ArtifactRef:
    """Where a saved model is and the sha256 of its bytes, to be checked at every load."""

    uri: str
    sha256: str
    size: int
    format: str = FORMAT


def check_model_name(model: str) -> str:
    """Return ``model`` if it is a safe model name, else raise UnsafeNameError."""
    # fullmatch: re's "$" would accept a trailing newline
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise UnsafeNameError(
            f"model name {safe_display(str(model))!r} is not allowed; use 1-64 letters, "
            "digits, '_', '.' or '-'")
    if model.startswith("."):  # hidden names are skipped as temporary by listings
        raise UnsafeNameError(f"model name {model!r} must not start with '.'")
    return check_relative_path(model, what="model name")


def _check_version(version: int) -> int:
    # bool is an int: True would silently become version 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UsageError(f"model version {version!r} is not allowed; give an integer >= 1")
    return version


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def artifact_uri(lake_uri: str, model: str, version: int) -> str:
    """The URI of ``model`` at ``version`` below ``lake_uri``, after checking both."""
    return version_file_uri(lake_uri, model, version, FILE_NAME)


def version_file_uri(lake_uri: str, model: str, version: int, name: str) -> str:
    check_model_name(model)
    _check_version(version)
    return f"{lake_uri.rstrip('/')}/{ARTIFACTS_PREFIX}/{model}/{version}/{name}"


class _VersionFiles:
    """The files of one model version: a local folder, or a Delta table in an object store."""

    def __init__(self, lake_uri: str, storage_options: Mapping[str, str], model: str,
                 version: int) -> None:
        self.folder_uri = version_file_uri(lake_uri, model, version, "x").rpartition("/")[0]
        self.local = _is_local(lake_uri)
        model_dir, _, self.table = self.folder_uri.rpartition("/")
        self.lake = None if self.local else DeltaLake(model_dir, storage_options)

    @classmethod
    def of_uri(cls, uri: str, storage_options: Mapping[str, str]) -> tuple[_VersionFiles, str]:
        """The files an artifact URI points into, and the file's name."""
        folder, _, name = uri.rpartition("/")
        model_dir, _, version = folder.rpartition("/")
        lake_uri, _, model = model_dir.rpartition("/")
        if not lake_uri.endswith(ARTIFACTS_PREFIX) or not version.isdigit():
            raise UsageError(f"{uri!r} is not a model artifact URI "
                             f"(.../{ARTIFACTS_PREFIX}/MODEL/VERSION/FILE)")
        lake = lake_uri.removesuffix(ARTIFACTS_PREFIX).rstrip("/")
        return cls(lake, storage_options, model, int(version)), name

    def exists(self) -> bool:
        if self.lake is None:
            return (_local_path(self.folder_uri) / FILE_NAME).exists()
        return self.lake.open(self.table) is not None

    def create(self, name: str, data: bytes) -> None:
        """Write ``name`` once; UsageError("already exists") when it (the claim) was taken."""
        if self.lake is None:
            self._create_local(name, data)
            return
        # the table's creation is the claim; a second creator's commit is refused
        if self._commit(name, data, claim=True):
            raise UsageError(f"model artifact {self.folder_uri}/{name} already exists; save a "
                             "new version instead")

    def _create_local(self, name: str, data: bytes) -> None:
        path = _local_path(self.folder_uri) / name
        if path.exists():
            raise UsageError(f"model artifact {path} already exists; save a new version "
                             "instead")
        try:
            # link, not rename: rename would replace an artifact written meanwhile
            _write_durably(path, data, os.link)
        except FileExistsError as e:
            raise UsageError(f"model artifact {path} already exists; save a new version "
                             "instead") from e
        except OSError as e:
            raise StoreError(f"model artifact {path} could not be written: {e}",
                             retriable=True) from e

    def put(self, name: str, data: bytes) -> None:
        """Write ``name`` beside the model (the card): whole or not at all, once."""
        if self.lake is not None:
            self._commit(name, data, claim=False)
            return
        path = _local_path(self.folder_uri) / name
        try:
            _write_durably(path, data, os.replace)
        except OSError as e:
            raise StoreError(f"{path} could not be written: {e}", retriable=True) from e

    def _commit(self, name: str, data: bytes, *, claim: bool) -> bool:
        """Commit ``name`` once (its own app transaction); True when it was there already."""
        assert self.lake is not None
        result = self.lake.commit_batch(
            self.table, _file_row(name, data), app_id=f"silta-artifact/{name}", seq=1,
            mode="append", schema_merge=False, metadata={},
            follows=None if claim else UNCONDITIONAL)
        return result.already

    def get(self, name: str) -> bytes:
        if self.lake is None:
            path = _local_path(self.folder_uri) / name
            try:
                return path.read_bytes()
            except FileNotFoundError as e:
                raise NotFoundError("model artifact file", f"{self.folder_uri}/{name}") from e
            except OSError as e:
                raise StoreError(f"{path} could not be read: {e}", retriable=True) from e
        table = self.lake.open(self.table)
        rows = [] if table is None else table.to_pyarrow_dataset().to_table(
            filter=pc.field("name") == name).to_pylist()
        if not rows:
            raise NotFoundError("model artifact file", f"{self.folder_uri}/{name}")
        if len(rows) > 1:  # each file is written once (its app transaction): tampered with
            raise ArtifactIntegrityError(
                f"{self.folder_uri} holds {len(rows)} copies of {name}; it was written to "
                "outside Silta, so none of them is loaded")
        data: bytes = rows[0]["data"]
        return data


def _write_durably(path: Path, data: bytes, publish: Callable[[str, Path], None]) -> None:
    """``data`` fsynced under a temporary name, then ``publish(tmp, path)`` (link/replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # after a link the name is left over; after a replace it is gone


def _file_row(name: str, data: bytes) -> pa.Table:
    return pa.table({"name": [name], "data": pa.array([data], pa.large_binary()),
                     "sha256": [hashlib.sha256(data).hexdigest()],
                     "size": pa.array([len(data)], pa.int64())})


def artifact_exists(lake_uri: str, storage_options: Mapping[str, str], model: str,
                    version: int) -> bool:
    """Whether ``model@version`` has an artifact (claimed, registered or not)."""
    return _VersionFiles(lake_uri, storage_options, model, version).exists()


def save_model(lake_uri: str, storage_options: Mapping[str, str], model: str, version: int,
               estimator: Any) -> ArtifactRef:
    """Store ``estimator`` as a new artifact; an existing one is never overwritten."""
    import skops.io as sio  # here: it imports scikit-learn, which every CLI call would pay

    uri = artifact_uri(lake_uri, model, version)
    try:
        data: bytes = sio.dumps(estimator)
    except Exception as e:
        raise UsageError(f"model {model!r} cannot be saved with skops: "
                         f"{type(e).__name__}: {e}") from e
    _VersionFiles(lake_uri, storage_options, model, version).create(FILE_NAME, data)
    return ArtifactRef(uri=uri, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def load_model(ref_or_uri: ArtifactRef | str, expected_sha256: str,
               trusted: Sequence[str] | None = None,
               storage_options: Mapping[str, str] | None = None) -> Any:
    """The estimator of an artifact, after its sha256 and its types are checked.

    ``expected_sha256`` comes from where the artifact was recorded, never from the file.
    Types skops reports as untrusted are allowed when they belong to scikit-learn, numpy
    or scipy or are named in ``trusted``; any other refuses the load.
    """
    import skops.io as sio

    uri = ref_or_uri.uri if isinstance(ref_or_uri, ArtifactRef) else ref_or_uri
    files, name = _VersionFiles.of_uri(uri, storage_options or {})
    try:
        data = files.get(name)
    except NotFoundError as e:
        raise NotFoundError("model artifact", uri) from e
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.strip().lower():
        raise ArtifactIntegrityError(
            f"model artifact {uri!r} has sha256 {actual}, expected {expected_sha256}; the "
            "file was changed after it was saved, so it is not loaded")
    try:
        untrusted: list[str] = sio.get_untrusted_types(data=data)
    except Exception as e:  # not a skops file (a pickle under this name, say)
        raise ArtifactIntegrityError(
            f"model artifact {uri!r} is not a readable skops file "
            f"({type(e).__name__}: {e}); it is not loaded") from e
    explicit = set(trusted or ())
    refused = sorted(t for t in untrusted
                     if t not in explicit and not t.startswith(DEFAULT_TRUSTED_PREFIXES))
    if refused:
        raise ArtifactIntegrityError(
            f"model artifact {uri!r} holds types that are not trusted: {', '.join(refused)}; "
            "pass them in `trusted` only if their code is yours")
    try:
        return sio.loads(data, trusted=untrusted)
    except Exception as e:
        raise ArtifactIntegrityError(
            f"model artifact {uri!r} could not be loaded with skops "
            f"({type(e).__name__}: {e})") from e


def version_dir(lake_uri: str, model: str, version: int) -> Path:
    """The local folder of a model version's files (a local lake only)."""
    return _local_path(artifact_uri(lake_uri, model, version)).parent


def save_version_file(lake_uri: str, storage_options: Mapping[str, str], model: str,
                      version: int, name: str, data: bytes) -> str:
    """Write a file next to a version's artifact (its model card): whole, once."""
    if name == FILE_NAME or "/" in name or name.startswith("."):
        raise UsageError(f"{name!r} cannot be written next to a model artifact")
    _VersionFiles(lake_uri, storage_options, model, version).put(name, data)
    return version_file_uri(lake_uri, model, version, name)


def read_version_file(lake_uri: str, storage_options: Mapping[str, str], model: str,
                      version: int, name: str) -> bytes:
    return _VersionFiles(lake_uri, storage_options, model, version).get(name)
