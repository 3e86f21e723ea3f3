"""The one read-only facade the TUI uses, plus the way it queues operator commands.

Every method is blocking and headless: the TUI calls them from worker threads. Nothing
here writes the lake; the only write is :meth:`View.submit`, a row in the state store's
command queue that the agent claims and carries out (see ``agent/commands.py``).
Reading works while the agent is down: the state store is opened read-only when it
exists, and an absent one reads as "never started".
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from agent.alerts import OPEN, STATES, AlertBook
from agent.commands import COMMAND_KINDS, validate
from agent.config import LoadedConfig
from agent.state import FILE_NAME, StateStore
from agent.stores import open_lake
from agent.table_view import table_diff, table_summary
from connectors.errors import NotFoundError, SiltaError, StateStoreError, UsageError
from connectors.lake import DeltaLake, history_summary

#: sync and publish runs that moved nothing: most of a busy agent's runs, hidden by default
_IDLE = "(kind IN ('sync', 'publish') AND status='ok' AND rows=0 AND files=0)"
SUMMARY_THREADS = 8
#: every state an alert can be in (the TUI's "all")
ALERT_STATES = STATES


@dataclass(frozen=True)
class Page:
    """One page of a list that may be long: its rows and how many there are in all."""

    rows: list[dict[str, Any]]
    total: int
    offset: int = 0
    limit: int = 100


@dataclass
class View:
    """Reads for ``loaded``'s agent. Thread-safe: each call opens what it reads."""

    loaded: LoadedConfig
    clock: Callable[[], dt.datetime] | None = None
    """"now" for next runs; None: the system clock (tests pin it)."""
    _lake: DeltaLake | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- plumbing ---------------------------------------------------------------------
    @property
    def lake(self) -> DeltaLake:
        with self._lock:
            if self._lake is None:
                self._lake = open_lake(self.loaded)
            return self._lake

    @property
    def agent_name(self) -> str:
        return self.loaded.config.agent.name

    @contextmanager
    def _state(self) -> Iterator[StateStore | None]:
        """The state store read-only, or None before the agent's first run."""
        if not (self.loaded.state_dir / FILE_NAME).exists():
            yield None
            return
        try:
            state = StateStore(self.loaded.state_dir, readonly=True)
        except StateStoreError:
            yield None
            return
        try:
            yield state
        finally:
            state.close()

    def heartbeat(self) -> dict[str, Any]:
        """Is the agent alive, since when; how many operator commands wait for it."""
        from agent.status import agent_state

        with self._state() as state:
            agent = agent_state(self.loaded, state)
            agent["commands_waiting"] = (int(state.query(
                "SELECT COUNT(*) FROM commands WHERE status IN ('queued', 'running')")[0][0])
                if state is not None else 0)
        return agent

    # -- dashboard --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """`silta status`'s figures, the live progress of what runs now, recent runs."""
        from agent.status import collect_status

        status = collect_status(self.loaded, self.clock() if self.clock else None)
        with self._state() as state:
            progress = state.progress() if state is not None else {}
            running = ({r["kind"] + ":" + r["name"]: r for r in state.query(
                "SELECT * FROM runs WHERE status='running'")} if state is not None else {})
        now = []
        for job, run in running.items():
            live = progress.get(f"sync:{run['name']}" if run["kind"] in ("sync", "publish")
                                else job)
            if live is not None and live["updated_at"] < run["started_at"]:
                live = None  # figures of an earlier run of the same job
            now.append({"job": job, "run_id": run["id"], "started_at": run["started_at"],
                        "trigger": run["trigger"], "progress": live})
        status["running"] = sorted(now, key=lambda r: r["started_at"])
        status["recent"] = self.runs(limit=8).rows
        return status

    # -- tables -----------------------------------------------------------------------
    def table_names(self, text: str = "") -> list[str]:
        """Every Delta table in the lake (Silta's own under ``_silta/`` too), sorted."""
        names = self.lake.list_tables(include_internal=True)
        return [n for n in names if text.lower() in n.lower()] if text else names

    def table_summaries(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """Version, rows, columns and last commit of each of ``names`` (one page of them),
        read side by side: each is a few small reads of its own log."""
        if len(names) <= 1:
            return [table_summary(self.lake, n) for n in names]
        with ThreadPoolExecutor(min(SUMMARY_THREADS, len(names)),
                                thread_name_prefix="summary") as pool:
            return list(pool.map(partial(table_summary, self.lake), names))

    def table_history(self, name: str, limit: int = 200) -> list[dict[str, Any]]:
        return [history_summary(e) for e in self.lake.history(name, limit=limit)]

    def table_schema(self, name: str, version: int | None = None) -> list[dict[str, Any]]:
        schema = self.lake.schema(name, version)
        if schema is None:
            raise NotFoundError("table", name, "it may have been removed; refresh the list")
        return [{"column": f.name, "type": str(f.type), "nullable": f.nullable}
                for f in schema]

    def table_preview(self, name: str, version: int | None = None, limit: int = 100
                      ) -> tuple[list[str], list[dict[str, Any]]]:
        data = self.lake.read(name, version, limit=limit)
        return data.column_names, data.to_pylist()

    def table_diff(self, name: str, older: int, newer: int) -> dict[str, Any]:
        return table_diff(self.lake, name, older, newer)

    def table_tags(self, name: str) -> list[dict[str, Any]]:
        return self.lake.list_tags(name)

    # -- models -----------------------------------------------------------------------
    def models(self, text: str = "") -> list[dict[str, Any]]:
        """Each model: how many versions, its champion, challenger and what waits."""
        from agent.ml.governance import waiting_in
        from agent.ml.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS, ModelRegistry

        out = []
        for model, (versions, moves) in ModelRegistry(self.lake).overview().items():
            if text and text.lower() not in model.lower():
                continue
            aliases = {c.alias: c.version for c in moves}
            latest, created = versions[-1]
            out.append({"model": model, "versions": len(versions), "latest": latest,
                        "champion": aliases.get(CHAMPION_ALIAS),
                        "challenger": aliases.get(CHALLENGER_ALIAS),
                        "waiting": waiting_in(moves),
                        "updated_at": created.isoformat(timespec="seconds")})
        return out

    def model_versions(self, model: str) -> list[dict[str, Any]]:
        """Every version of ``model``, newest first, as `silta models show` has them."""
        from agent.ml.registry import ModelRegistry
        from agent.models_cli import version_row

        reg = ModelRegistry(self.lake)
        aliases, archived = reg.aliases(model), reg.archived(model)
        rows = [{**version_row(v, aliases, archived),
                 "segments": v.metrics.get("segments") or {}}  # {dimension: {value: metrics}}
                for v in reg.versions(model)]
        for r in rows:
            r["created_at"] = r["created_at"].isoformat(timespec="seconds")
        return rows[::-1]

    def alias_history(self, model: str) -> list[dict[str, Any]]:
        from agent.ml.registry import ModelRegistry

        return [{"alias": c.alias, "version": c.version, "previous": c.previous_version,
                 "by": c.set_by, "at": c.set_at.isoformat(timespec="seconds"),
                 "reason": c.reason}
                for c in reversed(ModelRegistry(self.lake).alias_history(model))]

    def model_card(self, model: str, version: int) -> str:
        """The version's model card as Markdown."""
        from agent.ml.artifacts import read_version_file

        try:
            data = read_version_file(self.lake.uri, self.lake.storage_options, model,
                                     version, "card.md")
        except NotFoundError:
            raise NotFoundError("model card", f"{model}@{version}", "it is written when "
                                "the version is registered by a training run") from None
        return data.decode("utf-8", errors="replace")

    # -- runs -------------------------------------------------------------------------
    def runs(self, *, kind: str | Sequence[str] | None = None, status: str | None = None,
             text: str = "",
             idle: bool = False, name: str | None = None, offset: int = 0, limit: int = 100
             ) -> Page:
        """This agent's runs, newest first, one page; idle sync runs only with ``idle``;
        ``kind`` one kind or several (a sync job's runs are ``sync`` or ``publish``)."""
        where, params = ["1=1"], list[Any]()
        if name:
            where.append("name=?")
            params.append(name)
        if kind:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            params += kinds
        if status:
            where.append("status=?")
            params.append(status)
        if text:
            where.append("(name LIKE ? OR id LIKE ? OR error LIKE ? OR trigger LIKE ?)")
            params += [f"%{text}%"] * 4
        if not idle:
            where.append(f"NOT {_IDLE}")
        sql = " AND ".join(where)
        with self._state() as state:
            if state is None:
                return Page([], 0, offset, limit)
            total = int(state.query(f"SELECT COUNT(*) FROM runs WHERE {sql}", params)[0][0])
            rows = [dict(r) for r in state.query(
                f"SELECT * FROM runs WHERE {sql} ORDER BY started_at DESC LIMIT ? OFFSET ?",
                [*params, limit, offset])]
        return Page(rows, total, offset, limit)

    def run_detail(self, run_id: str) -> dict[str, Any]:
        """The run as the state store has it, with the lake's record (inputs, outputs,
        metrics, lineage) when it is there yet."""
        from agent.runs import get_run

        with self._state() as state:
            local = state.run(run_id) if state is not None else None
        try:
            record: dict[str, Any] | None = get_run(self.lake, run_id)
        except NotFoundError:
            record = None
        if local is None and record is None:
            raise NotFoundError("run", run_id, "it may belong to another agent's state store")
        out: dict[str, Any] = {"run_id": run_id, "local": local, "record": record}
        out["lineage"] = self._lineage(record) if record else None
        return out

    def _lineage(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Where the run's first output came from, as `silta lineage` walks it."""
        from agent.lineage import lineage

        for item in record.get("outputs") or []:
            if isinstance(item, dict) and item.get("table") and item.get("version") is not None:
                try:
                    return lineage(self.lake, f"{item['table']}@{item['version']}")
                except SiltaError:
                    return None
        return None

    # -- alerts -----------------------------------------------------------------------
    def alerts(self, *, states: Sequence[str] = OPEN, text: str = "",
               offset: int = 0, limit: int = 100) -> Page:
        """Alerts in ``states``, most severe and newest first, one page."""
        with self._state() as state:
            if state is None:
                return Page([], 0, offset, limit)
            rows, total = AlertBook(state, self.loaded.config.alerts).search(
                states=states, text=text, offset=offset, limit=limit)
        return Page(rows, total, offset, limit)

    def alert_detail(self, alert_id: int, points: int = 30) -> dict[str, Any]:
        """The alert, its events and deliveries, and its figure over the monitor's runs."""
        from agent.ml.metrics_history import metric_history

        with self._state() as state:
            if state is None:
                raise NotFoundError("alert", str(alert_id), "the agent has not run yet")
            alert = AlertBook(state, self.loaded.config.alerts).get(alert_id)
        alert["history"] = metric_history(self.lake, alert, limit=points)
        return alert

    # -- log --------------------------------------------------------------------------
    @property
    def log_path(self) -> Path | None:
        return self.loaded.log_path

    # -- commands ---------------------------------------------------------------------
    def commands(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest operator commands, newest first, with who queued them and the result."""
        with self._state() as state:
            rows = state.commands(limit) if state is not None else []
        for r in rows:
            r["args"] = json.loads(r["args"]) if isinstance(r["args"], str) else r["args"]
        return rows

    def command(self, command_id: int) -> dict[str, Any] | None:
        with self._state() as state:
            rows = state.query("SELECT * FROM commands WHERE id=?", (command_id,)) \
                if state is not None else []
        return {**dict(rows[0]), "args": json.loads(rows[0]["args"])} if rows else None

    def submit(self, kind: str, args: dict[str, Any]) -> int:
        """Queue ``kind`` for the agent, recorded with this OS user and the time."""
        if kind not in COMMAND_KINDS:
            raise UsageError(f"unknown command {kind!r}")
        clean = validate(kind, args)
        state = StateStore(self.loaded.state_dir)  # creates the store if the agent never ran
        try:
            return state.enqueue_command(kind, clean)
        finally:
            state.close()


def ago(ts: str | None, now: dt.datetime | None = None) -> str:
    """``ts`` (ISO) as "12 s ago", "5 min ago", "3 h ago", "2 d ago"; "-" for none."""
    if not ts:
        return "-"
    try:
        when = dt.datetime.fromisoformat(ts)
    except ValueError:
        return ts
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = ((now or dt.datetime.now(dt.UTC)) - when).total_seconds()
    return f"in {span(-seconds)}" if seconds < 0 else f"{span(seconds)} ago"


def span(seconds: float) -> str:
    """A duration as "12 s", "5 min", "3 h" or "2 d" (the largest whole unit)."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"
