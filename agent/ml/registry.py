"""The model registry: model versions and alias moves as Delta tables under ``_silta/``.

``_silta/registry`` holds one row per model version, ``_silta/aliases`` one row per alias
move. Nested fields (signature, params, metrics, training data, libraries) are JSON text
columns and timestamps are UTC, so any Delta engine (Spark, DuckDB, Polars) reads them.

How a version number is allocated, and why it never collides:

1. ``next = max(version of the model) + 1`` on a fresh snapshot of ``_silta/registry``.
2. The artifact is saved for ``next`` by the caller's ``save(version)``. The artifact file
   is created exclusively (``save_model`` links a local file, never renames it, and in an
   object store creates the version's table with a conditional put; an existing one is
   refused), so it is the claim on the number: of two processes that pick the same ``next``
   exactly one saves it; the other sees the file and moves on to ``next + 1``. A number
   whose artifact exists but whose row is missing belongs to a registration in flight
   (or to one that crashed after saving: that number stays a gap, never reused).
3. The row is appended with ``DeltaLake.commit_batch`` carrying
   ``Transaction("silta-registry/<model>", seq)``, ``seq`` being the model's registration
   count + 1 read on the snapshot written with. delta-rs refuses a concurrent commit with
   the same app id, and ``commit_batch`` refuses a ``seq`` the snapshot already holds, so
   every row of a model is committed on a snapshot that holds all earlier rows of it; a
   lost race re-reads and tries the next ``seq`` (bounded, with jittered backoff), keeping
   its version and artifact. A token in the commit's metadata tells this process's
   commit from another's after an ambiguous error.

The app transaction's number is a per-model commit counter, not the model version: with
the artifact as the claim, version 4 may commit before version 3, and deltalake would let
a lower transaction number through unnoticed (it refuses only a concurrent one).

Alias moves use the same scheme with ``Transaction("silta-aliases/<model>", seq)``; the
``seq`` column orders the moves of a model, so ``previous_version`` is computed on the
snapshot the move is committed on, and two concurrent moves cannot both claim the same
predecessor.

Artifacts live in the lake too, as files in a local lake and as a small Delta table per
version in an object store (agent/ml/artifacts.py); either way their creation claims the
number.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from agent.ml.artifacts import ArtifactRef, artifact_exists, artifact_uri, check_model_name
from connectors.errors import CommitConflictError, NotFoundError, StoreError, UsageError
from connectors.lake import INTERNAL_PREFIX, DeltaLake

REGISTRY_TABLE = f"{INTERNAL_PREFIX}/registry"
ALIASES_TABLE = f"{INTERNAL_PREFIX}/aliases"
#: one row per change of a version's state (archived, or active again)
STATES_TABLE = f"{INTERNAL_PREFIX}/model_states"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
#: in the reason of a challenger move: the version waits for an operator's approval
AWAITING_APPROVAL = "waiting for approval"
#: commits tried per registration or alias move when other writers keep winning
COMMIT_ATTEMPTS = 20
#: artifact numbers skipped per registration (claims of registrations in flight, or gaps)
CLAIM_SKIPS = 1000
_TOKEN_KEY = "silta.registry.token"
_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TS = pa.timestamp("us", tz="UTC")

REGISTRY_SCHEMA = pa.schema([
    ("model", pa.string()), ("version", pa.int64()), ("seq", pa.int64()),
    ("artifact_uri", pa.string()), ("artifact_sha256", pa.string()),
    ("artifact_size", pa.int64()), ("artifact_format", pa.string()),
    ("flavor", pa.string()), ("signature", pa.string()), ("params", pa.string()),
    ("metrics", pa.string()), ("training_data", pa.string()),
    ("code_version", pa.string()), ("libraries", pa.string()),
    ("config_hash", pa.string()), ("created_by", pa.string()), ("created_at", _TS),
])
ALIASES_SCHEMA = pa.schema([
    ("model", pa.string()), ("alias", pa.string()), ("version", pa.int64()),
    ("previous_version", pa.int64()), ("seq", pa.int64()), ("set_by", pa.string()),
    ("set_at", _TS), ("reason", pa.string()),
])
STATES_SCHEMA = pa.schema([
    ("model", pa.string()), ("version", pa.int64()), ("state", pa.string()),
    ("seq", pa.int64()), ("set_by", pa.string()), ("set_at", _TS), ("reason", pa.string()),
])
VERSION_STATES = ("active", "archived")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model, as recorded in ``_silta/registry``."""

    model: str
    version: int
    artifact: ArtifactRef
    flavor: str
    signature: dict[str, Any]
    params: dict[str, Any]
    metrics: dict[str, Any]
    training_data: dict[str, Any]
    code_version: str | None
    libraries: dict[str, str]
    config_hash: str
    created_by: str
    created_at: dt.datetime


@dataclass(frozen=True)
class AliasChange:
    """One move of an alias: who pointed it at which version, when and why."""

    model: str
    alias: str
    version: int
    previous_version: int | None
    seq: int
    set_by: str
    set_at: dt.datetime
    reason: str


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise UsageError(f"alias {alias!r} is not allowed; use 1-64 letters, digits, "
                         "'_' or '-'")
    if alias.isdigit():  # "model@3" means version 3
        raise UsageError(f"alias {alias!r} is not allowed: a number names a version")
    return alias


def _json(value: Any, what: str) -> str:
    try:
        # allow_nan=False: NaN is not JSON, and other engines' parsers refuse it
        return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{what} cannot be stored as JSON: {e}") from e


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pause(attempt: int) -> None:
    # jittered: two writers that collided should not collide again in step
    time.sleep(min(1.0, 0.02 * 2 ** attempt) * random.uniform(0.5, 1.0))


class ModelRegistry:
    """Model versions and aliases of one lake."""

    def __init__(self, lake: DeltaLake) -> None:
        self.lake = lake

    # -- reading ----------------------------------------------------------------------
    @staticmethod
    def _rows(table: DeltaTable | None, model: str | None = None) -> list[dict[str, Any]]:
        if table is None:
            return []
        # to_pyarrow_dataset, not to_pyarrow_table: the latter aborts the process at exit
        dataset = table.to_pyarrow_dataset()
        data = (dataset.to_table() if model is None
                else dataset.to_table(filter=pc.field("model") == model))
        rows: list[dict[str, Any]] = data.to_pylist()
        return rows

    def _registry_rows(self, model: str | None = None) -> list[dict[str, Any]]:
        return self._rows(self.lake.open(REGISTRY_TABLE), model)

    def overview(self) -> dict[str, tuple[list[tuple[int, dt.datetime]], list[AliasChange]]]:
        """Every model's (version, created_at) pairs and alias moves, both oldest first.

        Each table is read once and only the columns needed, so a screen of all models
        costs the same with 10 versions as with 1,000 (no JSON fields decoded).
        """
        versions: dict[str, list[tuple[int, dt.datetime]]] = {}
        table = self.lake.open(REGISTRY_TABLE)
        if table is not None:
            data = table.to_pyarrow_dataset().to_table(
                columns=["model", "version", "created_at"])
            for model, version, created in zip(*(data.column(c).to_pylist() for c in
                                                 ("model", "version", "created_at")),
                                               strict=True):
                versions.setdefault(model, []).append((int(version), created))
        moves: dict[str, list[AliasChange]] = {}
        for r in self._rows(self.lake.open(ALIASES_TABLE)):
            moves.setdefault(r["model"], []).append(_change_of(r))
        return {m: (sorted(v), sorted(moves.get(m, []), key=lambda c: c.seq))
                for m, v in sorted(versions.items())}

    def models(self) -> list[str]:
        """Names of the models with at least one version, sorted."""
        return sorted({r["model"] for r in self._registry_rows()})

    def versions(self, model: str) -> list[ModelVersion]:
        """Every version of ``model``, oldest first."""
        rows = self._registry_rows(check_model_name(model))
        if not rows:
            raise self._unknown_model(model)
        return sorted((_version_of(r) for r in rows), key=lambda v: v.version)

    def get(self, model: str, version: int) -> ModelVersion:
        found = [v for v in self.versions(model) if v.version == version]
        if not found:
            known = ", ".join(str(v.version) for v in self.versions(model))
            raise NotFoundError("model version", f"{model}@{version}",
                                f"versions of {model!r}: {known}")
        return found[0]

    def latest(self, model: str) -> ModelVersion:
        """The newest version that is not archived."""
        archived = self.archived(model)
        live = [v for v in self.versions(model) if v.version not in archived]
        if not live:
            raise NotFoundError("model version", f"{model} (latest)",
                                "every version is archived; name one as MODEL@VERSION")
        return live[-1]

    def states(self, model: str) -> list[dict[str, Any]]:
        """State changes of ``model``'s versions (archived / active), oldest first."""
        rows = self._rows(self.lake.open(STATES_TABLE), check_model_name(model))
        return sorted(rows, key=lambda r: r["seq"])

    def archived(self, model: str) -> set[int]:
        """Versions of ``model`` whose latest state is ``archived``."""
        current: dict[int, str] = {}
        for r in self.states(model):
            current[int(r["version"])] = r["state"]
        return {v for v, s in current.items() if s == "archived"}

    def _unknown_model(self, model: str) -> NotFoundError:
        known = self.models()
        return NotFoundError("model", model,
                             f"registered models: {', '.join(known)}" if known
                             else "no model is registered yet")

    def alias_history(self, model: str, alias: str | None = None) -> list[AliasChange]:
        """Moves of ``alias`` (or of every alias) of ``model``, oldest first."""
        check_model_name(model)
        if alias is not None:
            check_alias(alias)
        rows = self._rows(self.lake.open(ALIASES_TABLE), model)
        if not rows and model not in self.models():
            raise self._unknown_model(model)
        changes = [_change_of(r) for r in rows if alias is None or r["alias"] == alias]
        return sorted(changes, key=lambda c: c.seq)

    def aliases(self, model: str) -> dict[str, int]:
        """Each alias of ``model`` and the version it points at now."""
        return {c.alias: c.version for c in self.alias_history(model)}

    def resolve(self, reference: str) -> ModelVersion:
        """``model@alias``, ``model@3`` or ``model`` (its latest version) -> the version."""
        if not isinstance(reference, str) or reference.count("@") > 1:
            raise UsageError(f"model reference {reference!r} is not valid; write MODEL, "
                             "MODEL@VERSION or MODEL@ALIAS")
        model, _, target = reference.partition("@")
        check_model_name(model)
        if "@" in reference and not target:
            raise UsageError(f"model reference {reference!r} names no version or alias "
                             "after '@'")
        if not target:
            return self.latest(model)
        if target.isdigit():
            version = int(target)
            if version < 1:
                raise UsageError(f"model reference {reference!r}: versions start at 1")
            return self.get(model, version)
        current = self.aliases(model)
        if check_alias(target) not in current:
            set_ = ", ".join(sorted(current)) or "none"
            raise NotFoundError("alias", reference,
                                f"aliases of {model!r}: {set_}; set one with "
                                f"`silta models alias {model} {target} VERSION`")
        return self.get(model, current[target])

    # -- writing ----------------------------------------------------------------------
    def register(self, model: str, *, save: Callable[[int], ArtifactRef], flavor: str,
                 signature: dict[str, Any], params: dict[str, Any], metrics: dict[str, Any],
                 training_data: dict[str, Any], code_version: str | None,
                 libraries: dict[str, str], config_hash: str, created_by: str,
                 on_saved: Callable[[int, ArtifactRef], None] | None = None
                 ) -> ModelVersion:
        """Save the artifact for a new version with ``save(version)`` and record it.

        ``save`` must create the artifact at ``artifact_uri(lake.uri, model, version)``
        and refuse an existing one (``save_model`` does): that file claims the number.
        ``on_saved(version, artifact)`` runs once the number is claimed and before the
        row is committed (the model card is written there); if it raises, nothing is
        registered and the number stays a gap.
        """
        check_model_name(model)
        encoded = {k: _json(v, k) for k, v in (
            ("signature", signature), ("params", params), ("metrics", metrics),
            ("training_data", training_data), ("libraries", libraries))}
        rows = self._registry_rows(model)
        version, artifact = self._claim(model, max((r["version"] for r in rows), default=0) + 1,
                                        save)
        if on_saved is not None:
            on_saved(version, artifact)
        created_at = _now()

        def build(snapshot: list[dict[str, Any]], seq: int) -> pa.Table:
            if any(r["version"] == version for r in snapshot):
                raise StoreError(f"model {model!r} version {version} is already registered, "
                                 "though its artifact was saved here; something wrote the "
                                 "registry without claiming the version")
            return pa.Table.from_pylist([{
                "model": model, "version": version, "seq": seq,
                "artifact_uri": artifact.uri, "artifact_sha256": artifact.sha256,
                "artifact_size": artifact.size, "artifact_format": artifact.format,
                "flavor": flavor, **encoded, "code_version": code_version,
                "config_hash": config_hash, "created_by": created_by,
                "created_at": created_at}], schema=REGISTRY_SCHEMA)

        self._append(REGISTRY_TABLE, f"silta-registry/{model}", model, build)
        return ModelVersion(
            model=model, version=version, artifact=artifact, flavor=flavor,
            signature=json.loads(encoded["signature"]), params=json.loads(encoded["params"]),
            metrics=json.loads(encoded["metrics"]),
            training_data=json.loads(encoded["training_data"]), code_version=code_version,
            libraries=json.loads(encoded["libraries"]), config_hash=config_hash,
            created_by=created_by, created_at=created_at)

    def _claim(self, model: str, first: int, save: Callable[[int], ArtifactRef]
               ) -> tuple[int, ArtifactRef]:
        """The first number from ``first`` whose artifact ``save`` created (see above)."""
        options = self.lake.storage_options
        for version in range(first, first + CLAIM_SKIPS):
            if artifact_exists(self.lake.uri, options, model, version):
                continue  # claimed by a registration in flight, or a crashed one's gap
            try:
                ref = save(version)
            except UsageError:
                if artifact_exists(self.lake.uri, options, model, version):
                    continue  # another process saved it between check and save
                raise
            expected = artifact_uri(self.lake.uri, model, version)
            if ref.uri.removeprefix("file://") != expected.removeprefix("file://"):
                raise UsageError(f"save({version}) stored the artifact at {ref.uri!r}, not at "
                                 f"{expected!r}; save it with the registry's lake URI and "
                                 "this version")
            return version, ref
        raise StoreError(f"no free version of model {model!r} in {first}..."
                         f"{first + CLAIM_SKIPS - 1}: their artifacts exist without rows",
                         retriable=True)

    def set_alias(self, model: str, alias: str, version: int, *, by: str, reason: str) -> None:
        """Point ``model@alias`` at ``version``, recording who, when, why and the previous."""
        check_model_name(model)
        check_alias(alias)
        self.get(model, version)  # the version must exist; versions are never removed
        if version in self.archived(model):
            raise UsageError(f"{model}@{version} is archived; an alias cannot point at it")
        set_at = _now()

        def build(snapshot: list[dict[str, Any]], seq: int) -> pa.Table:
            moves = [r for r in snapshot if r["alias"] == alias]
            previous = max(moves, key=lambda r: r["seq"])["version"] if moves else None
            return pa.Table.from_pylist([{
                "model": model, "alias": alias, "version": version,
                "previous_version": previous, "seq": seq, "set_by": by, "set_at": set_at,
                "reason": reason}], schema=ALIASES_SCHEMA)

        self._append(ALIASES_TABLE, f"silta-aliases/{model}", model, build)

    def set_state(self, model: str, version: int, state: str, *, by: str, reason: str
                  ) -> None:
        """Archive a version (or make it active again); an aliased version stays active."""
        check_model_name(model)
        if state not in VERSION_STATES:
            raise UsageError(f"state {state!r} is not one of {', '.join(VERSION_STATES)}")
        self.get(model, version)
        current = "archived" if version in self.archived(model) else "active"
        if current == state:
            raise UsageError(f"{model}@{version} is {state} already")
        if state == "archived":
            pointing = sorted(a for a, v in self.aliases(model).items() if v == version)
            if pointing:
                raise UsageError(
                    f"{model}@{version} is {' and '.join(pointing)}; move "
                    f"{'them' if len(pointing) > 1 else 'it'} to another version first "
                    f"(`silta models alias {model} {pointing[0]} VERSION`)")
        set_at = _now()

        def build(snapshot: list[dict[str, Any]], seq: int) -> pa.Table:
            return pa.Table.from_pylist([{
                "model": model, "version": version, "state": state, "seq": seq,
                "set_by": by, "set_at": set_at, "reason": reason}], schema=STATES_SCHEMA)

        self._append(STATES_TABLE, f"silta-states/{model}", model, build)

    def _append(self, name: str, app_id: str, model: str,
                build: Callable[[list[dict[str, Any]], int], pa.Table]) -> None:
        """Commit ``build(rows of model, seq)`` once, ``seq`` next after the snapshot's."""
        token = uuid.uuid4().hex
        for attempt in range(COMMIT_ATTEMPTS):
            table = self.lake.open(name)
            seq = (table.transaction_version(app_id) or 0) + 1 if table is not None else 1
            data = build(self._rows(table, model), seq)
            # commit_batch writes only if its own snapshot still lacks ``seq``: every row of
            # this app id bumps it, so the rows ``build`` saw are still the model's rows.
            try:
                result = self.lake.commit_batch(name, data, app_id=app_id, seq=seq,
                                                mode="append", schema_merge=False,
                                                metadata={_TOKEN_KEY: token})
            except CommitConflictError:
                # commit_batch looked the app id up again before raising: not committed
                _pause(attempt)
                continue
            if not result.already:
                return
            entry = self.lake.find_commit(name, app_id, seq)
            if entry is not None and entry.get(_TOKEN_KEY) == token:
                return  # an attempt of ours that raised had committed after all
            _pause(attempt)  # another writer took ``seq``: read again and take the next
        raise StoreError(f"{name} of model {model!r}: other writers won {COMMIT_ATTEMPTS} "
                         "commits in a row; try again", retriable=True)


def _version_of(row: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        model=row["model"], version=int(row["version"]),
        artifact=ArtifactRef(uri=row["artifact_uri"], sha256=row["artifact_sha256"],
                             size=int(row["artifact_size"]), format=row["artifact_format"]),
        flavor=row["flavor"], signature=json.loads(row["signature"]),
        params=json.loads(row["params"]), metrics=json.loads(row["metrics"]),
        training_data=json.loads(row["training_data"]), code_version=row["code_version"],
        libraries=json.loads(row["libraries"]), config_hash=row["config_hash"],
        created_by=row["created_by"], created_at=row["created_at"])


def _change_of(row: dict[str, Any]) -> AliasChange:
    previous = row["previous_version"]
    return AliasChange(
        model=row["model"], alias=row["alias"], version=int(row["version"]),
        previous_version=None if previous is None else int(previous), seq=int(row["seq"]),
        set_by=row["set_by"], set_at=row["set_at"], reason=row["reason"])
