"""Model artifacts under ``<lake>/_silta/artifacts/<model>/<version>/model.skops``.

Models are stored with skops, never pickle or joblib: loading a pickle runs whatever code
it names. Every load checks the file's sha256 against the one recorded when it was saved
and allows only the types an allow-list names, so a replaced or tampered file is refused
before any of its content is turned into objects.

Only a local lake is supported for now: deltalake's ``DeltaStorageHandler``
(1.6) fails on ``open_output_stream(...).write`` (its pyarrow wrapper hands the Rust stream
a ``Buffer`` where it wants ``bytes``), and working around it means using its internals.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import skops.io as sio

from connectors.errors import (
    ArtifactIntegrityError,
    NotFoundError,
    StoreError,
    UnsafeNameError,
    UsageError,
)
from connectors.lake import INTERNAL_PREFIX
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


def _local_root(lake_uri: str) -> Path:
    if "://" in lake_uri and not lake_uri.startswith("file://"):
        raise UsageError(
            f"model artifacts are supported only in a local lake for now, not {lake_uri!r}; "
            "object stores (az://, s3://, gs://) come later")
    return Path(lake_uri.removeprefix("file://"))


def artifact_uri(lake_uri: str, model: str, version: int) -> str:
    """The URI of ``model`` at ``version`` below ``lake_uri``, after checking both."""
    check_model_name(model)
    _check_version(version)
    return f"{lake_uri.rstrip('/')}/{ARTIFACTS_PREFIX}/{model}/{version}/{FILE_NAME}"


def save_model(lake_uri: str, storage_options: Mapping[str, str], model: str, version: int,
               estimator: Any) -> ArtifactRef:
    """Store ``estimator`` as a new artifact; an existing one is never overwritten."""
    uri = artifact_uri(lake_uri, model, version)
    _local_root(lake_uri)
    del storage_options  # used by object stores, once they are supported
    try:
        data: bytes = sio.dumps(estimator)
    except Exception as e:
        raise UsageError(f"model {model!r} cannot be saved with skops: "
                         f"{type(e).__name__}: {e}") from e
    path = Path(uri.removeprefix("file://"))
    if path.exists():
        raise UsageError(f"model artifact {uri!r} already exists; save a new version instead")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # link, not rename: rename would replace an artifact written meanwhile
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
    except FileExistsError as e:
        raise UsageError(f"model artifact {uri!r} already exists; save a new version "
                         "instead") from e
    except OSError as e:
        raise StoreError(f"model artifact {uri!r} could not be written: {e}",
                         retriable=True) from e
    return ArtifactRef(uri=uri, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def load_model(ref_or_uri: ArtifactRef | str, expected_sha256: str,
               trusted: Sequence[str] | None = None) -> Any:
    """The estimator of an artifact, after its sha256 and its types are checked.

    ``expected_sha256`` comes from where the artifact was recorded, never from the file.
    Types skops reports as untrusted are allowed when they belong to scikit-learn, numpy
    or scipy or are named in ``trusted``; any other refuses the load.
    """
    uri = ref_or_uri.uri if isinstance(ref_or_uri, ArtifactRef) else ref_or_uri
    path = _local_root(uri)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise NotFoundError("model artifact", uri) from e
    except OSError as e:
        raise StoreError(f"model artifact {uri!r} could not be read: {e}",
                         retriable=True) from e
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
    """The local folder of a model version's files (artifact, model card)."""
    return _local_root(artifact_uri(lake_uri, model, version)).parent


def save_version_file(lake_uri: str, model: str, version: int, name: str, data: bytes) -> str:
    """Write a file next to a version's artifact (its model card): whole, then renamed."""
    if name == FILE_NAME or "/" in name or name.startswith("."):
        raise UsageError(f"{name!r} cannot be written next to a model artifact")
    folder = version_dir(lake_uri, model, version)
    path = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise StoreError(f"{path} could not be written: {e}", retriable=True) from e
    return str(path)


def read_version_file(lake_uri: str, model: str, version: int, name: str) -> bytes:
    path = version_dir(lake_uri, model, version) / name
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise NotFoundError("file", f"{model}@{version}/{name}") from e
    except OSError as e:
        raise StoreError(f"{path} could not be read: {e}", retriable=True) from e
