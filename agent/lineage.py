"""`silta lineage TABLE[@VERSION]`: how every row of a table version came to be.

The chain is read from what each step left in the lake, not from a separate store:

- a table version holds the commits since its last overwrite; each Silta commit names
  its run and what it read (``silta.*`` commit metadata);
- an ingest commit names its source and files with their sha256 (the first 100; the
  rest are counted, and listed from the agent's ledger when it is at hand);
- a prediction commit names the model version (with the artifact's sha256) and the
  input table's version range, which is followed in turn;
- a model version names the table versions it was trained on, which are followed too;
- ``_silta/runs`` adds each run's status, host, user and times.

Each table version and model version is expanded once; later mentions refer back.
"""

from __future__ import annotations

import sys
from typing import Any

from agent.ml.registry import ModelRegistry
from agent.runs import read_runs
from connectors.errors import NotFoundError, SiltaError, UsageError
from connectors.lake import DeltaLake, history_summary
from connectors.names import safe_display

#: newest contributing commits listed per table version
MAX_COMMITS = 50
MAX_DEPTH = 8
_OVERWRITES = ("CREATE OR REPLACE TABLE", "REPLACE TABLE")


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``TABLE`` or ``TABLE@VERSION``."""
    table, sep, version = ref.rpartition("@") if "@" in ref else (ref, "", "")
    if not sep:
        return ref, None
    if not version.isdigit():
        raise UsageError(f"{ref!r}: write TABLE or TABLE@VERSION (a number)")
    return table, int(version)


class Lineage:
    """Walks the chain back from one table version."""

    def __init__(self, lake: DeltaLake) -> None:
        self.lake = lake
        self.registry = ModelRegistry(lake)
        self._runs: dict[str, dict[str, Any]] | None = None
        self._seen: set[str] = set()

    def runs(self) -> dict[str, dict[str, Any]]:
        if self._runs is None:
            try:
                self._runs = {r["run_id"]: r for r in read_runs(self.lake)}
            except SiltaError:
                self._runs = {}
        return self._runs

    def table(self, name: str, version: int | None = None, *, after: int | None = None,
              depth: int = 0) -> dict[str, Any]:
        """A table version (or the range ``(after, version]``) and its commits' sources."""
        current = self.lake.require(name).version()
        version = current if version is None else version
        if not 0 <= version <= current:
            raise NotFoundError("version", f"{name}@{version}",
                                f"the table's versions are 0..{current}")
        ref = f"{name}@{version}" if after is None else f"{name} ({after}, {version}]"
        node: dict[str, Any] = {"type": "table", "table": name, "version": version,
                                "after": after, "ref": ref}
        if ref in self._seen or depth > MAX_DEPTH:
            return {**node, "repeat": True}
        self._seen.add(ref)
        entries = self._contributing(name, version, after)
        node["commit_count"] = len(entries)
        node["commits"] = [self._commit(name, e, depth) for e in entries[:MAX_COMMITS]]
        node["more_commits"] = max(0, len(entries) - MAX_COMMITS)
        return node

    def _contributing(self, name: str, version: int, after: int | None
                      ) -> list[dict[str, Any]]:
        """Commits whose rows the version holds: newest first, back to the last overwrite."""
        out: list[dict[str, Any]] = []
        for entry in self.lake.history(name):
            v = int(entry["version"])
            if v > version:
                continue
            if after is not None and v <= after:
                break
            out.append(entry)
            params = entry.get("operationParameters") or {}
            if str(params.get("mode", "")).lower() == "overwrite" or \
                    entry.get("operation") in _OVERWRITES:
                break  # older commits were replaced by this one
        return out

    def _commit(self, table: str, entry: dict[str, Any], depth: int) -> dict[str, Any]:
        summary = history_summary(entry)
        run_id = entry.get("silta.run_id")
        node: dict[str, Any] = {
            "type": "commit", "table": table, "version": summary["version"],
            "timestamp": summary["timestamp"], "operation": summary["operation"],
            "rows_added": summary["rows_added"], "run_id": run_id,
            "run": _run_summary(self.runs().get(str(run_id))) if run_id else None,
        }
        job = str(entry.get("silta.job") or "")
        if job.startswith("predict:"):
            node["kind"] = "predict"
            node["job"] = job.partition(":")[2]
            node["model"] = self.model(str(entry.get("silta.model")),
                                       int(entry.get("silta.model_version") or 0),
                                       entry.get("silta.model_sha256"), depth)
            start = entry.get("silta.input_from")
            node["input"] = self.table(str(entry.get("silta.input")),
                                       int(entry["silta.input_to"]),
                                       after=int(start) if start not in (None, "") else None,
                                       depth=depth + 1)
        elif entry.get("silta.sync"):
            node["kind"] = "sync"
            node["sync"] = entry.get("silta.sync")
            node["source"] = entry.get("silta.source")
            files = summary["files"] or []
            node["files"] = files
            node["file_count"] = int(entry.get("silta.file_count") or len(files))
            node["manifest_sha256"] = entry.get("silta.manifest_sha256")
            if entry.get("silta.watermark"):
                node["watermark"] = entry.get("silta.watermark")  # a SQL source's window top
        elif entry.get("silta.app_id"):
            node["kind"] = "silta"  # Silta's own bookkeeping (run records, registry rows)
            node["app_id"] = entry.get("silta.app_id")
        else:
            node["kind"] = "external"  # written by another engine or by hand
            node["engine"] = entry.get("engineInfo") or entry.get("clientVersion")
        return node

    def model(self, model: str, version: int, sha256: Any, depth: int) -> dict[str, Any]:
        ref = f"model {model}@{version}"
        node: dict[str, Any] = {"type": "model", "model": model, "version": version,
                                "artifact_sha256": sha256, "ref": ref}
        if ref in self._seen:
            return {**node, "repeat": True}
        self._seen.add(ref)
        try:
            mv = self.registry.get(model, version)
        except NotFoundError:
            return {**node, "missing": True}
        training = mv.training_data
        run_id = training.get("run_id")
        node.update(
            registered_sha256=mv.artifact.sha256,
            sha256_matches=mv.artifact.sha256 == sha256 if sha256 else None,
            created_at=mv.created_at, created_by=mv.created_by,
            code_version=mv.code_version, config_hash=mv.config_hash,
            content_hash=training.get("content_hash"), labelled_rows=training.get("rows"),
            run_id=run_id,
            run=_run_summary(self.runs().get(str(run_id))) if run_id else None,
            trained_on=[self.table(str(i["table"]), int(i["version"]), depth=depth + 1)
                        | {"role": i.get("role")}
                        for i in training.get("inputs", [])])
        return node


def _run_summary(run: dict[str, Any] | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {k: run.get(k) for k in ("run_id", "kind", "name", "status", "trigger", "host",
                                    "os_user", "started_at", "finished_at", "code_version")}


def lineage(lake: DeltaLake, ref: str) -> dict[str, Any]:
    name, version = parse_ref(ref)
    return Lineage(lake).table(name, version)


# -- text ---------------------------------------------------------------------------------
def render(node: dict[str, Any]) -> str:
    lines: list[str] = []
    _render(node, "", "", lines)
    return "\n".join(safe_display(line) for line in lines) + "\n"


def _run_text(run: dict[str, Any] | None, run_id: Any) -> str:
    if run is None:
        return f"run {run_id}" if run_id else "no run recorded"
    return (f"run {run['run_id']} {run['status']} by {run['os_user']}@{run['host']} "
            f"at {str(run['started_at'])[:19]}")


def _render(node: dict[str, Any], first: str, rest: str, out: list[str]) -> None:
    kind = node.get("type")
    children: list[dict[str, Any]] = []
    if kind == "table":
        text = f"table {node['ref']}"
        if node.get("repeat"):
            out.append(first + text + " (shown above)")
            return
        more = f" (+{node['more_commits']} older commits)" if node.get("more_commits") else ""
        out.append(f"{first}{text}: {node['commit_count']} commit(s){more}")
        children = node["commits"]
    elif kind == "commit":
        head = f"v{node['version']} {node['operation']} {node['timestamp'] or ''}".rstrip()
        if node.get("kind") == "predict":
            out.append(f"{first}{head}: prediction {node['job']}, "
                       f"{node['rows_added']} row(s); {_run_text(node['run'], node['run_id'])}")
            children = [node["model"], node["input"] | {"label": "input"}]
        elif node.get("kind") == "sync":
            out.append(f"{first}{head}: sync {node['sync']} from {node['source']}, "
                       f"{node['rows_added']} row(s), {node['file_count']} file(s); "
                       f"{_run_text(node['run'], node['run_id'])}")
            for i, f in enumerate(node["files"]):
                last = i == len(node["files"]) - 1 and node["file_count"] <= len(node["files"])
                out.append(f"{rest}{'└─ ' if last else '├─ '}file {f.get('path')} "
                           f"sha256 {f.get('sha256')} ({f.get('size')} bytes)")
            hidden = node["file_count"] - len(node["files"])
            if hidden > 0:
                out.append(f"{rest}└─ … and {hidden} more file(s) (manifest sha256 "
                           f"{node['manifest_sha256']})")
            return
        elif node.get("kind") == "silta":
            out.append(f"{first}{head}: Silta's own record ({node.get('app_id')}); "
                       f"{_run_text(node['run'], node['run_id'])}")
            return
        else:
            out.append(f"{first}{head}: written outside Silta ({node.get('engine')})")
            return
    elif kind == "model":
        text = f"model {node['model']}@{node['version']} sha256 {node['artifact_sha256']}"
        if node.get("repeat"):
            out.append(first + text + " (shown above)")
            return
        if node.get("missing"):
            out.append(first + text + " (not in the registry)")
            return
        check = "" if node.get("sha256_matches") in (True, None) else \
            " MISMATCH with the registry"
        out.append(f"{first}{text}{check}; trained {str(node['created_at'])[:19]} by "
                   f"{node['created_by']}, {node['labelled_rows']} labelled rows (content "
                   f"{str(node['content_hash'])[:16]}), {node['code_version']}; "
                   f"{_run_text(node['run'], node['run_id'])}")
        children = node["trained_on"]
    for i, child in enumerate(children):
        last = i == len(children) - 1
        _render(child, rest + ("└─ " if last else "├─ "), rest + ("   " if last else "│  "),
                out)


def print_lineage(node: dict[str, Any], as_json: bool) -> None:
    if as_json:
        from agent.output import print_json

        print_json(node)  # ISO times, like every other --json
    else:
        sys.stdout.write(render(node))
