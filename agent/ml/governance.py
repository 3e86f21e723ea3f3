"""Moving a model's aliases on an operator's word: promote, approve, rollback.

Headless: `silta models ...` and the agent's command queue (the TUI) call the same
functions, so a promotion reads, refuses and records the same whichever way it came.
Each function checks, moves one alias, and returns what moved; a request that cannot
be carried out raises :class:`UsageError` (or :class:`NotFoundError`) saying why.

``by`` is recorded as the alias move's ``set_by`` (``user@host``); ``operator`` is the
person the recorded reason names ("approved by anna"), by default the user part of
``by``.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.ml.artifacts import check_model_name
from agent.ml.registry import (
    AWAITING_APPROVAL,
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    AliasChange,
    ModelRegistry,
)
from connectors.errors import UsageError


@dataclass(frozen=True)
class AliasMoved:
    """One alias move an operator asked for, done."""

    model: str
    alias: str
    version: int
    previous: int | None
    #: e.g. "coder@champion is now version 2 (was 1)"
    message: str


def move_alias(reg: ModelRegistry, model: str, alias: str, version: int, *, by: str,
               reason: str) -> AliasMoved:
    """Point ``model@alias`` at ``version``; refused when it points there already."""
    before = reg.aliases(check_model_name(model)).get(alias)
    if before == version:
        raise UsageError(f"{model}@{alias} is version {version} already")
    reg.set_alias(model, alias, version, by=by, reason=reason)
    was = f" (was {before})" if before is not None else ""
    return AliasMoved(model, alias, version, before,
                      f"{model}@{alias} is now version {version}{was}")


def promote(reg: ModelRegistry, model: str, version: int, *, by: str, reason: str = "",
            operator: str | None = None) -> AliasMoved:
    """Make ``version`` the champion, whatever the promotion gate said (an override)."""
    who = operator or _user(by)
    return move_alias(reg, model, CHAMPION_ALIAS, version, by=by,
                      reason=reason or f"promoted by {who}")


def waiting_version(reg: ModelRegistry, model: str) -> int | None:
    """The challenger a training left for an operator, if the champion has not moved since.

    The challenger alias is never removed: after an approval it points at the champion,
    and after a rollback at the version rolled back from; neither is waiting any more.
    """
    return waiting_in(reg.alias_history(model))


def waiting_in(history: list[AliasChange]) -> int | None:
    """:func:`waiting_version` from a model's alias moves, oldest first."""
    last = {c.alias: c for c in history}  # oldest first: the last wins
    challenger, champion = last.get(CHALLENGER_ALIAS), last.get(CHAMPION_ALIAS)
    if challenger is None or (champion is not None and champion.seq > challenger.seq):
        return None
    return challenger.version


def approve(reg: ModelRegistry, model: str, version: int, *, by: str, reason: str = "",
            operator: str | None = None) -> AliasMoved:
    """An operator's approval of the version a manual promotion left waiting."""
    model = check_model_name(model)
    if reg.aliases(model).get(CHAMPION_ALIAS) == version:
        raise UsageError(f"{model}@{version} is the {CHAMPION_ALIAS} already")
    waiting = waiting_version(reg, model)
    if waiting != version:
        what = (f"the version waiting is {waiting}" if waiting is not None
                else "no version is waiting")
        raise UsageError(f"{model}@{version} is not waiting for approval ({what}); "
                         f"`silta models promote {model} {version}` promotes any version")
    why = next((c.reason for c in reversed(reg.alias_history(model, CHALLENGER_ALIAS))
                if c.version == version), "")
    if AWAITING_APPROVAL not in why:
        # the gate said no (worse, or a segment fell): approving would skip governance
        raise UsageError(f"{model}@{version} was not left waiting for approval; its "
                         f"training decided: {why or 'nothing recorded'}. `silta models "
                         f"promote {model} {version} --reason ...` overrides the gate")
    said = f"approved by {operator or _user(by)}" + (f": {reason}" if reason else "")
    return move_alias(reg, model, CHAMPION_ALIAS, version, by=by,
                      reason=f"{said} (training said: {why})" if why else said)


def rollback(reg: ModelRegistry, model: str, *, by: str, reason: str = "",
             operator: str | None = None) -> AliasMoved:
    """Point the champion back at the version it pointed at before its last move."""
    model = check_model_name(model)
    moves = reg.alias_history(model, CHAMPION_ALIAS)
    if not moves:
        raise UsageError(f"{model} has no {CHAMPION_ALIAS} to roll back")
    current = moves[-1]
    previous = current.previous_version
    if previous is None:
        raise UsageError(f"{model}@{current.version} is the first {CHAMPION_ALIAS}; there is "
                         "no earlier one to go back to")
    if previous in reg.archived(model):
        raise UsageError(f"{model}@{previous} (the previous {CHAMPION_ALIAS}) is archived; "
                         f"`silta models archive {model} {previous} --undo` first")
    said = (f"rollback by {operator or _user(by)} from v{current.version}"
            + (f": {reason}" if reason else ""))
    return move_alias(reg, model, CHAMPION_ALIAS, previous, by=by, reason=said)


def _user(by: str) -> str:
    """``anna`` of ``anna@host`` (the name a reason gives)."""
    return by.partition("@")[0] or by
