"""Alerts about the agent's own runs: a failed run, files set aside, a run cut short.

A failure written only to the runs table is one nobody reads at night. Each job's run
health is an alert of the monitor ``agent`` in the same book as the monitors' alerts
(fingerprint ``agent|<check>|<kind>:<name>``), so it is notified, acknowledged and
resolved the same way:

- ``run_failed``: the run failed. Warning; critical from the third failure in a row.
  Resolved by the next run of the job that does not fail.
- ``quarantined``: the run set files aside as unreadable. It stays open until a person
  resolves it: the files wait in quarantine for someone to look at them, and a later run
  that sets more aside counts on the same alert.
- ``refused_names``: files the run would not read because their names are unsafe
  (control characters, backslashes, bytes that are not UTF-8); they stay where they are.
  Resolved by a run that finds none (renamed or removed).
- ``interrupted``: an agent stopped in the middle of the run (kill -9, power, OOM); its
  work was recovered at the next start. Resolved by the job's next good run.
"""

from __future__ import annotations

import logging

from agent.alerts import AlertBook, CheckResult
from agent.notify_config import AlertsSection
from agent.state import StateStore

log = logging.getLogger("silta.alerts")

MONITOR = "agent"
CRITICAL_AFTER = 3  # failures in a row
_SUMMARY_CHARS = 300


def _failures_in_a_row(state: StateStore, kind: str, name: str) -> int:
    rows = state.query("SELECT status FROM runs WHERE kind=? AND name=? AND status NOT IN "
                       "('running', 'skipped', 'interrupted') ORDER BY started_at DESC "
                       "LIMIT ?", (kind, name, CRITICAL_AFTER))
    count = 0
    for r in rows:
        if r["status"] != "failed":
            break
        count += 1
    return count


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SUMMARY_CHARS else text[:_SUMMARY_CHARS - 1] + "…"


def record_run(state: StateStore, section: AlertsSection | None, agent: str, *, kind: str,
               name: str, run_id: str, status: str, error: str | None = None,
               quarantined: int = 0, refused: list[str] | None = None,
               model: str | None = None) -> None:
    """Fire or resolve this job's run alerts after one of its runs ended.

    Never raises: the run is already recorded, and an alert that cannot be written is
    logged (the next run tries again)."""
    if status in ("busy", "skipped", "running"):
        return
    target = f"{kind}:{name}"
    results: list[CheckResult] = []
    if status == "failed":
        streak = _failures_in_a_row(state, kind, name)
        results.append(CheckResult(
            "run_failed", target, "breach",
            severity="critical" if streak >= CRITICAL_AFTER else "warning",
            summary=_short(f"{kind} {name} failed"
                           + (f" ({streak} runs in a row)" if streak > 1 else "")
                           + f": {error or 'no error text'}"),
            value=float(streak), threshold=1.0, detail={"run_id": run_id}))
    else:
        results.append(CheckResult("run_failed", target, "ok", summary=f"run {run_id} {status}"))
        results.append(CheckResult("interrupted", target, "ok",
                                   summary=f"run {run_id} {status}"))
    if quarantined:
        results.append(CheckResult(
            "quarantined", target, "breach",
            summary=_short(f"{kind} {name} set {quarantined} file(s) aside as unreadable: "
                           f"{error or ''}"),
            value=float(quarantined), threshold=0.0, detail={"run_id": run_id}))
    if refused:
        results.append(CheckResult(
            "refused_names", target, "breach",
            summary=_short(f"{kind} {name} does not read {len(refused)} file(s) whose names "
                           f"are unsafe (control characters, backslashes, not UTF-8); "
                           f"rename them: {', '.join(refused)}"),
            value=float(len(refused)), threshold=0.0, detail={"names": refused[:100]}))
    elif status != "failed":
        results.append(CheckResult("refused_names", target, "ok",
                                   summary=f"run {run_id} refused no name"))
    try:
        AlertBook(state, section, agent).observe(MONITOR, model, results, run_id)
    except Exception as e:
        log.error("%s=%s: could not record the run's alert: %s", kind, name, e)


def record_interrupted(state: StateStore, section: AlertsSection | None, agent: str,
                       runs: list[dict[str, str]]) -> None:
    """One ``interrupted`` alert per job whose run an agent left unfinished."""
    seen: set[tuple[str, str]] = set()
    for run in runs:
        key = (run["kind"], run["name"])
        if key in seen:
            continue
        seen.add(key)
        result = CheckResult(
            "interrupted", f"{run['kind']}:{run['name']}", "breach",
            summary=_short(f"{run['kind']} {run['name']}: run {run['id']} started "
                           f"{run['started_at']} was cut short (the agent stopped); its "
                           "work is recovered from the ledger"),
            detail={"run_id": run["id"]})
        try:
            AlertBook(state, section, agent).observe(MONITOR, None, [result], run["id"])
        except Exception as e:
            log.error("could not record the interrupted run %s as an alert: %s", run["id"], e)


def interrupt_stale(state: StateStore, section: AlertsSection | None, agent: str, *,
                    left_by: str) -> None:
    """Mark runs left 'running' by a dead ``left_by`` interrupted, and alert them; called
    under the agent lock (nothing else can be running then)."""
    stale = state.interrupt_stale_runs()
    if stale:
        logging.getLogger("silta.agent").warning(
            "%d run(s) were left running by %s that stopped; marked interrupted "
            "(their batches are recovered from the ledger)", len(stale), left_by)
        record_interrupted(state, section, agent, stale)
