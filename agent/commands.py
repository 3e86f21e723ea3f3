"""Operator commands from the state store's queue (the TUI's and the CLI's way to act).

Each queued command has a kind, JSON args and the OS user that queued it; the agent
claims it, does it, and records the outcome (done, refused, failed) with a sentence.

:func:`validate` checks a command's args against :data:`COMMAND_KINDS` (the TUI calls it
before queueing, the agent again before acting: the queue is a file anyone on the host
may write). :func:`execute` carries one claimed command out and never raises: a broken
command is an outcome to record, not a reason for the agent's loop to stop.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectors.errors import NotFoundError, SiltaError, UsageError
from connectors.names import safe_display

if TYPE_CHECKING:  # the TUI imports this module: keep the lake and sklearn out of it
    from agent.alerts import AlertBook
    from agent.ml.governance import AliasMoved
    from connectors.lake import DeltaLake

log = logging.getLogger("silta.commands")

#: kind -> the args it takes (name: type); anything else is refused
COMMAND_KINDS: dict[str, dict[str, type]] = {
    "sync.run": {"sync": str},
    "job.run": {"job": str},
    "alert.ack": {"alert": int, "comment": str},
    "alert.resolve": {"alert": int, "comment": str},
    "alert.silence": {"alert": int, "seconds": float, "comment": str},
    "model.promote": {"model": str, "version": int, "reason": str},
    "model.approve": {"model": str, "version": int, "reason": str},
    "model.rollback": {"model": str, "reason": str},
    "run.replay": {"run": str},
}
#: kinds that ask the dispatcher for a run (the rest act where they are claimed)
RUN_KINDS = frozenset({"sync.run", "job.run"})
#: kinds that can take minutes: the service runs them off its command loop
SLOW_KINDS = frozenset({"run.replay"})
#: free text an operator may leave out
OPTIONAL_TEXT = {"comment": "", "reason": ""}
#: args that count from 1 (an alert id, a model version)
POSITIVE = ("alert", "version")
#: longer than this is a typo, and would run past the end of the calendar
MAX_SILENCE_SECONDS = 10 * 366 * 86400.0
MAX_TEXT = 2000
MAX_RESULT = 500

Outcome = tuple[str, str]


@dataclass(frozen=True)
class CommandContext:
    """What the agent lends the commands it carries out."""

    book: AlertBook
    lake: DeltaLake
    #: ids of the configured jobs (``sync:NAME``, ``train:NAME``, ...)
    jobs: Collection[str] = ()
    #: asks for a run of (job id, trigger); None where runs are not taken (--once)
    request: Callable[[str, str], None] | None = None
    #: recorded with alias moves: the queue is local, so the queuer was on this host
    host: str = field(default_factory=socket.gethostname)


# -- checking ---------------------------------------------------------------------------
def validate(kind: str, args: object) -> dict[str, Any]:
    """``args`` checked and normalised for ``kind`` (floats as float, optional text
    filled in); UsageError naming the key otherwise."""
    spec = COMMAND_KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise UsageError(f"unknown command kind {_short(kind)}; known: "
                         f"{', '.join(COMMAND_KINDS)}")
    if not isinstance(args, Mapping):
        raise UsageError(f"{kind}: args must be an object with {_takes(spec)}")
    extra = sorted(str(k) for k in args if k not in spec)
    if extra:
        raise UsageError(f"{kind}: unknown arg {_short(extra[0])}; it takes {_takes(spec)}")
    clean: dict[str, Any] = {}
    for key, want in spec.items():
        if key in args:
            clean[key] = _typed(kind, key, want, args[key])
        elif key in OPTIONAL_TEXT:
            clean[key] = OPTIONAL_TEXT[key]
        else:
            raise UsageError(f"{kind}: arg {key!r} is missing ({want.__name__}); it takes "
                             f"{_takes(spec)}")
    _check_values(kind, clean)
    return clean


def _typed(kind: str, key: str, want: type, value: object) -> Any:
    # bool is an int to Python, never to an operator; an int is a fine float
    ok = (not isinstance(value, bool)) and (
        isinstance(value, int | float) if want is float else isinstance(value, want))
    if not ok:
        raise UsageError(f"{kind}: arg {key!r} must be {_a(want)}, not "
                         f"{_a(type(value))} ({_short(value)})")
    if want is float:
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise UsageError(f"{kind}: arg {key!r} must be a finite number, not {number}")
        return number
    return value


def _check_values(kind: str, args: dict[str, Any]) -> None:
    for key, value in args.items():
        if key in POSITIVE and value < 1:
            raise UsageError(f"{kind}: arg {key!r} must be 1 or more, not {value}")
        if isinstance(value, str) and key not in OPTIONAL_TEXT and not value.strip():
            raise UsageError(f"{kind}: arg {key!r} must not be empty")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise UsageError(f"{kind}: arg {key!r} is longer than {MAX_TEXT} characters")
    seconds = args.get("seconds")
    if seconds is not None and not 0 < seconds <= MAX_SILENCE_SECONDS:
        raise UsageError(f"{kind}: arg 'seconds' must be more than 0 and at most "
                         f"{MAX_SILENCE_SECONDS:.0f} (ten years), not {seconds:g}")


def requested_job(kind: str, args: Mapping[str, Any], jobs: Collection[str]) -> str:
    """The job id a validated ``sync.run``/``job.run`` asks for; NotFoundError if unknown."""
    job_id = f"sync:{args['sync']}" if kind == "sync.run" else str(args["job"])
    if job_id not in jobs:
        known = sorted(jobs)
        raise NotFoundError("job", job_id, "jobs: " + (", ".join(known[:20]) or "none")
                            + (", ..." if len(known) > 20 else ""))
    return job_id


# -- carrying out -----------------------------------------------------------------------
def execute(command: Mapping[str, Any], ctx: CommandContext) -> Outcome:
    """(status, one sentence) of carrying out one claimed command; never raises.

    ``refused``: the request cannot be carried out as asked (the sentence says why);
    ``failed``: it could, but something broke (the lake was away, ...).
    """
    kind = command.get("kind")
    user = str(command.get("os_user") or "unknown")
    try:
        args = validate(str(kind), command.get("args"))
        status, result = "done", _HANDLERS[str(kind)](str(kind), args, user, ctx)
    except (UsageError, NotFoundError) as e:
        status, result = "refused", str(e)
    except SiltaError as e:
        status, result = "failed", f"{e.title}: {e}"
    except Exception as e:  # a bug must not stop the loop: record it, keep going
        log.exception("command %s (%s) broke", command.get("id"), _short(kind))
        status, result = "failed", f"internal error ({type(e).__name__}); see the agent's log"
    return status, _sentence(result)


def _run(kind: str, args: dict[str, Any], user: str, ctx: CommandContext) -> str:
    job_id = requested_job(kind, args, ctx.jobs)
    if ctx.request is None:  # a caller that takes runs itself never gets here
        raise UsageError(f"{kind} is not taken here; the agent service runs it")
    ctx.request(job_id, f"operator:{user}")
    return f"queued a run of {job_id}"


def _ack(kind: str, args: dict[str, Any], user: str, ctx: CommandContext) -> str:
    alert = ctx.book.ack(args["alert"], by=user, comment=args["comment"])
    return f"alert {alert['id']} acknowledged by {alert['acked_by']}"


def _resolve(kind: str, args: dict[str, Any], user: str, ctx: CommandContext) -> str:
    alert = ctx.book.resolve(args["alert"], by=user, comment=args["comment"])
    return f"alert {alert['id']} resolved by {alert['resolved_by']}"


def _silence(kind: str, args: dict[str, Any], user: str, ctx: CommandContext) -> str:
    alert = ctx.book.silence(args["alert"], args["seconds"], by=user,
                             comment=args["comment"])
    return f"alert {alert['id']} silenced by {user} until {alert['silenced_until']}"


def _model(kind: str, args: dict[str, Any], user: str, ctx: CommandContext) -> str:
    from agent.ml import governance
    from agent.ml.registry import ModelRegistry

    reg = ModelRegistry(ctx.lake)
    # set_by says it came through the queue; the reason names the person
    by, reason = f"{user}@{ctx.host} (queued)", args["reason"]
    moved: AliasMoved
    if kind == "model.promote":
        moved = governance.promote(reg, args["model"], args["version"], by=by,
                                   reason=f"promoted by {user}: {reason}" if reason else "",
                                   operator=user)
    elif kind == "model.approve":
        moved = governance.approve(reg, args["model"], args["version"], by=by,
                                   reason=reason, operator=user)
    else:
        moved = governance.rollback(reg, args["model"], by=by, reason=reason, operator=user)
    return moved.message


def _replay(kind: str, args: dict[str, Any], user: str, ctx: CommandContext) -> str:
    from agent.ml.replay import replay

    return replay_sentence(replay(ctx.lake, args["run"]))


def replay_sentence(result: Mapping[str, Any]) -> str:
    """A replay's comparison in one sentence: identical, or which columns differ."""
    head = (f"replay of {result['kind']} run {result['run_id']} ({result['name']}, "
            f"{result.get('model')}@{result.get('version')})")
    if result["identical"]:
        return (f"{head}: identical, {result['rows']} row(s), content hash "
                f"{str(result['output_hash'])[:16]} both times")
    differ = ", ".join(result["differing_columns"]) or "row count"
    return (f"{head}: DIFFERENT: {differ} differ ({result['rows']} row(s) then, "
            f"{result['replay_rows']} now; code then {result.get('code_then')}, now "
            f"{result.get('code_now')})")


_Handler = Callable[[str, dict[str, Any], str, CommandContext], str]
_HANDLERS: dict[str, _Handler] = {
    "sync.run": _run, "job.run": _run,
    "alert.ack": _ack, "alert.resolve": _resolve, "alert.silence": _silence,
    "model.promote": _model, "model.approve": _model, "model.rollback": _model,
    "run.replay": _replay,
}


# -- wording ----------------------------------------------------------------------------
def _takes(spec: dict[str, type]) -> str:
    return ", ".join(f"{k} ({t.__name__}{', optional' if k in OPTIONAL_TEXT else ''})"
                     for k, t in spec.items())


def _a(t: type) -> str:
    name = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true/false",
            "NoneType": "null", "list": "a list", "dict": "an object"}.get(t.__name__)
    return name or t.__name__


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _sentence(text: str) -> str:
    """One printable line for the queue's result column, of bounded length."""
    line = safe_display(" ".join(text.split()))
    return line if len(line) <= MAX_RESULT else line[:MAX_RESULT - 3] + "..."
