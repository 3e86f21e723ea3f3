"""The one error hierarchy of Silta, used by every layer.

Each error carries a short ``title`` for operators and a ``msg`` that says what
happened and what to do. ``retriable`` tells the agent whether trying the same
work again later can succeed (a server that was down) or not (a bad file).
Library exceptions are translated into these at the connector boundary.
"""

from __future__ import annotations


class SiltaError(Exception):
    """Base of every error Silta raises on purpose."""

    title = "Silta error"
    retriable = False

    def __init__(self, msg: str, *, retriable: bool | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        if retriable is not None:
            self.retriable = retriable

    def __str__(self) -> str:
        return self.msg


class ConfigError(SiltaError):
    """The configuration is invalid; ``problems`` lists every finding."""

    title = "Configuration error"

    def __init__(self, msg: str, problems: list[str] | None = None) -> None:
        super().__init__(msg)
        self.problems = problems or [msg]


class UsageError(SiltaError):
    """A command-line argument or operator request cannot be carried out."""

    title = "Usage error"


class NotFoundError(SiltaError, LookupError):
    """A named thing (sync, table, version, tag) does not exist."""

    title = "Not found"

    def __init__(self, kind: str, name: str, hint: str = "") -> None:
        msg = f"{kind} {name!r} not found" + (f"; {hint}" if hint else "")
        super().__init__(msg)
        self.kind = kind
        self.name = name


class UnsafeNameError(SiltaError):
    """A file or table name from outside would escape its root or carries control characters."""

    title = "Unsafe name refused"


class ParseError(SiltaError):
    """A source unit (file) cannot be read in the configured format; it is quarantined.

    ``column`` names the column whose values did not convert, when that is known, so the
    caller can widen an inferred type and try again.
    """

    title = "Unreadable source file"

    def __init__(self, msg: str, *, column: str | None = None,
                 candidates: tuple[str, ...] = ()) -> None:
        super().__init__(msg)
        self.column = column
        #: when the reader does not say which column failed: the columns that may have
        self.candidates = candidates


class SchemaMismatchError(SiltaError):
    """Incoming data does not fit the target's schema under the configured policy."""

    title = "Schema mismatch"


class SourceChangedError(SiltaError):
    """A source unit changed while it was being copied; it is retried once it settles."""

    title = "Source changed during copy"
    retriable = True


class StoreError(SiltaError):
    """A store (folder, lake, server) failed; ``retriable`` says whether to try again."""

    title = "Store error"


class CommitConflictError(StoreError):
    """Another writer committed to the same Delta table first; the batch is tried again."""

    title = "Commit conflict"
    retriable = True


class CommitUnknownError(StoreError):
    """A commit failed and the lake could not be asked whether it landed anyway (its reply
    may have been lost): the unit stays pending, and the next run asks the table."""

    title = "Commit outcome unknown"
    retriable = True


class CorruptTableError(StoreError):
    """A Delta table's log is damaged (a torn commit, a lost or unreadable checkpoint);
    nothing is written to the table until an operator repairs it."""

    title = "Corrupt Delta table"


class AuthError(StoreError):
    """A server refused the credentials or its host key did not match known_hosts."""

    title = "Authentication refused"


class StateStoreError(SiltaError):
    """The agent's state store is unusable (corrupt, newer schema, disk full)."""

    title = "State store error"


class LockHeldError(SiltaError):
    """Another agent holds the single-instance lock on the state folder."""

    title = "Another agent is running"


class ArtifactIntegrityError(SiltaError):
    """A model artifact failed its sha256 check or holds types nobody trusted; never loaded."""

    title = "Model artifact refused"
