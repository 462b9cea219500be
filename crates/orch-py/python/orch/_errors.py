"""The exceptions orch raises, in one hierarchy.

``OrchError`` is the base of every error of orch's API::

    OrchError
    ├── ValidationError   a pipeline (file or code) is invalid: file, line, column, problems
    ├── PipelineFailed    a run ended without succeeding: .result is its RunResult
    └── RunError          a run could not be carried out (state directory, selection)

Two more are signals, not errors: raise ``SkipPhase`` in a phase function to end the
phase as skipped, and orch raises ``PhaseCancelled`` (a ``BaseException``, like
``asyncio.CancelledError``) inside a phase function that must stop.

The Rust extension creates these from the engine's errors in one place
(``crates/orch-py/src/errors.rs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence

if TYPE_CHECKING:
    from ._orch import RunResult

__all__ = [
    "OrchError",
    "Problem",
    "ValidationError",
    "PipelineFailed",
    "RunError",
    "PhaseCancelled",
    "SkipPhase",
]


class OrchError(Exception):
    """Base class of every error orch raises."""


class Problem:
    """One problem of an invalid pipeline, with where it is when known."""

    __slots__ = ("message", "line", "column", "help")

    def __init__(
        self,
        message: str,
        line: Optional[int] = None,
        column: Optional[int] = None,
        help: Optional[str] = None,
    ) -> None:
        self.message = message
        """What is wrong."""
        self.line = line
        """1-based line in the pipeline file, when located."""
        self.column = column
        """1-based column (in characters), when located."""
        self.help = help
        """A hint, such as "did you mean `unit`?"."""

    def __repr__(self) -> str:
        return (
            f"Problem({self.message!r}, line={self.line!r}, column={self.column!r}, "
            f"help={self.help!r})"
        )

    def __str__(self) -> str:
        where = f"{self.line}:{self.column}: " if self.line is not None else ""
        hint = f" ({self.help})" if self.help else ""
        return f"{where}{self.message}{hint}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Problem):
            return NotImplemented
        return (self.message, self.line, self.column, self.help) == (
            other.message,
            other.line,
            other.column,
            other.help,
        )

    def __hash__(self) -> int:
        return hash((self.message, self.line, self.column, self.help))


class ValidationError(OrchError):
    """A pipeline is invalid. Every problem found is in ``problems``; ``file``, ``line`` and
    ``column`` locate the first one (``None`` for pipelines built in code)."""

    def __init__(
        self,
        message: str = "invalid pipeline",
        *,
        file: Optional[str] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
        problems: Sequence[Problem] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.problems: List[Problem] = list(problems)


class RunError(OrchError):
    """A run could not be carried out (its state directory, an unknown phase in the
    selection, an engine failure): nothing or not everything ran."""

    def __init__(self, message: str = "the run failed") -> None:
        super().__init__(message)
        self.message = message


class PipelineFailed(OrchError):
    """A run ended ``failed`` (or ``cancelled``); ``result`` is its :class:`RunResult`."""

    def __init__(self, result: "RunResult") -> None:
        self.result = result
        phases = result.phases
        parts = []
        for pid in result.failed:
            ph = phases[pid]
            parts.append(f"`{pid}` {ph.status}: {ph.reason or ''}".rstrip(": "))
        detail = "; ".join(parts) if parts else "no phase failed"
        message = f"pipeline `{result.pipeline}` {result.status} ({detail}); run {result.run_id}"
        super().__init__(message)
        self.message = message


class PhaseCancelled(BaseException):
    """Raised inside a phase function that must stop: its attempt timed out, or the run
    was stopped and the function did not return within the grace period. Like
    ``asyncio.CancelledError`` it is a ``BaseException``: ``except Exception`` does not
    swallow it."""


class SkipPhase(Exception):
    """Raise in a phase function to end the phase as ``skipped`` (not a failure); the
    message is the reason."""
