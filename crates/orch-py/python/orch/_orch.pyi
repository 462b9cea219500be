"""Type stubs of the Rust extension ``orch._orch`` (use the ``orch`` package instead)."""

import asyncio
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

__version__: str

def kinds() -> List[Tuple[str, str, str]]:
    """Every phase kind this build knows, as ``(kind, agent type, summary)``."""

def _current_context() -> Optional["Context"]:
    """The context of the plain phase function running in this thread, if any."""

def _after_fork_in_child() -> None:
    """Forgets the parent's worker threads (registered with ``os.register_at_fork``)."""

def parse_duration(text: str) -> float:
    """Parses a duration such as ``"250ms"``, ``"30s"`` or ``"1h 5m"`` into seconds."""

class Context:
    """What a phase function receives: ``def phase(ctx: orch.Context) -> dict | None``."""

    @property
    def run_id(self) -> str:
        """The run's id."""
    @property
    def phase_id(self) -> str:
        """This phase's id."""
    @property
    def attempt(self) -> int:
        """The attempt, from 1."""
    @property
    def vars(self) -> Dict[str, str]:
        """The pipeline's variables (a fresh dict)."""
    @property
    def outputs(self) -> Dict[str, Dict[str, str]]:
        """Outputs of the phases this one needs: ``ctx.outputs["build"]["artifact"]``."""
    @property
    def cancelled(self) -> bool:
        """Whether the run was stopped or this attempt timed out: return soon."""
    @property
    def run_dir(self) -> str:
        """The run's directory (``STATE_DIR/runs/RUN_ID``): write run artifacts there."""
    @property
    def base_dir(self) -> str:
        """The pipeline's directory."""
    @property
    def workdir(self) -> str:
        """The phase's working directory."""
    @property
    def logger(self) -> logging.Logger:
        """A ``logging.Logger`` (``orch.phase.ID``) whose records go to the phase log."""
    def log(self, message: str) -> None:
        """Writes a message to the phase log (each line becomes a log line and an event)."""

class Event:
    """Something that happened in a run, as ``on_event`` receives it.

    ``kind`` is one of ``run_started``, ``policy_decision``, ``phase_started``,
    ``phase_output``, ``phase_retrying``, ``phase_finished``, ``run_finished``; fields
    that do not apply to the kind are ``None``. A ``policy_decision`` has ``status``
    ``allowed`` or ``denied`` and, when denied, the ``reason``.
    """

    @property
    def kind(self) -> str: ...
    @property
    def run_id(self) -> Optional[str]: ...
    @property
    def pipeline(self) -> Optional[str]: ...
    @property
    def phase(self) -> Optional[str]: ...
    @property
    def attempt(self) -> Optional[int]: ...
    @property
    def status(self) -> Optional[str]: ...
    @property
    def stream(self) -> Optional[str]: ...
    @property
    def line(self) -> Optional[str]: ...
    @property
    def error(self) -> Optional[str]: ...
    @property
    def reason(self) -> Optional[str]: ...
    @property
    def duration(self) -> Optional[float]: ...
    @property
    def delay(self) -> Optional[float]: ...
    @property
    def exit_code(self) -> Optional[int]: ...
    @property
    def outputs(self) -> Optional[Dict[str, str]]: ...
    @property
    def phases(self) -> Optional[int]: ...
    @property
    def to_run(self) -> Optional[int]: ...
    @property
    def at(self) -> Optional[float]:
        """Unix time of the event (every event has one)."""
    @property
    def cause(self) -> Optional[Dict[str, Any]]:
        """Why the phase ended so, as data (``phase_finished``): a dict with a ``type``
        (``blocked``, ``when_false``, ``stopped``, ``error``, ...) and its fields, as the
        ``cause`` of ``run.json``."""
    def to_dict(self) -> Dict[str, Any]:
        """The event as a dict (fields that do not apply are left out)."""

class PhaseResult:
    """How one phase of a run ended."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str:
        """``succeeded``, ``failed``, ``timed_out``, ``cancelled``, ``skipped`` or ``blocked``."""
    @property
    def kind(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def outputs(self) -> Dict[str, str]: ...
    @property
    def duration(self) -> Optional[float]:
        """Seconds from its first start to its end; ``None`` if it never ran."""
    @property
    def exit_code(self) -> Optional[int]: ...
    @property
    def reason(self) -> Optional[str]: ...
    @property
    def cause(self) -> Optional[Dict[str, Any]]:
        """Why it ended so, as data (see :attr:`Event.cause`); ``None`` when it succeeded."""
    @property
    def started_at(self) -> Optional[str]: ...
    @property
    def finished_at(self) -> Optional[str]: ...
    @property
    def log(self) -> Optional[str]:
        """Path of its log file, when it wrote one."""
    def log_text(self) -> str:
        """The text of its log (``""`` when it wrote none)."""
    @property
    def tags(self) -> List[str]: ...
    @property
    def needs(self) -> List[str]: ...
    @property
    def allowed_failure(self) -> bool: ...
    @property
    def ok(self) -> bool: ...
    def to_dict(self) -> Dict[str, Any]: ...

class RunResult:
    """The result of a run: its status, every phase's result, and the record (``run.json``)."""

    @property
    def run_id(self) -> str: ...
    @property
    def pipeline(self) -> str: ...
    @property
    def status(self) -> str:
        """``succeeded``, ``failed`` or ``cancelled``."""
    @property
    def ok(self) -> bool: ...
    @property
    def duration(self) -> Optional[float]: ...
    @property
    def started_at(self) -> str: ...
    @property
    def finished_at(self) -> Optional[str]: ...
    @property
    def run_dir(self) -> str: ...
    @property
    def phases(self) -> Dict[str, PhaseResult]: ...
    @property
    def failed(self) -> List[str]: ...
    @property
    def counts(self) -> Dict[str, int]: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def to_json(self, indent: Optional[int] = 2) -> str: ...

class _RunHandle:
    @property
    def run_id(self) -> str: ...
    @property
    def interrupted(self) -> bool: ...
    def wait(self, timeout: float) -> Tuple[List[Event], bool]: ...
    def stop(self) -> None: ...
    def abort(self) -> None: ...
    def join_phases(self, timeout: float) -> bool: ...
    def result(self) -> RunResult: ...

class PhaseDecorator:
    def __call__(self, func: Any) -> Any: ...

class _Pipeline:
    def __init__(
        self,
        name: str,
        base_dir: str,
        jobs: Optional[int] = None,
        state_dir: Optional[str] = None,
        vars: Optional[Dict[str, str]] = None,
    ) -> None: ...
    @staticmethod
    def load(path: str, vars: Optional[Dict[str, str]] = None) -> "_Pipeline": ...
    @property
    def name(self) -> str: ...
    @property
    def base_dir(self) -> str: ...
    @property
    def jobs(self) -> Optional[int]: ...
    @property
    def state_dir(self) -> str: ...
    @property
    def source(self) -> Optional[str]: ...
    @property
    def vars(self) -> Dict[str, str]: ...
    @property
    def phase_ids(self) -> List[str]: ...
    def has_phase(self, id: str) -> bool: ...
    def phase(
        self,
        func: Any,
        id: Optional[str],
        needs: Any,
        retries: Any,
        timeout: Any,
        backoff: Any,
        tags: Any,
        description: Optional[str],
        allow_failure: Any,
        when: Optional[str],
    ) -> Any: ...
    def add_kind(
        self,
        id: str,
        kind: str,
        run: Any,
        with_json: Optional[str],
        common: Dict[str, Any],
    ) -> None: ...
    def validate(self) -> None: ...
    def plan(
        self,
        jobs: Optional[int],
        only: List[str],
        skip: List[str],
        from_: List[str],
        vars: Dict[str, str],
    ) -> Tuple[str, str]: ...
    def start(
        self,
        jobs: Optional[int],
        only: List[str],
        skip: List[str],
        from_: List[str],
        keep_going: bool,
        vars: Dict[str, str],
        grace: float,
        collect_events: bool,
        event_loop: Optional[asyncio.AbstractEventLoop],
        resume: Any,
        record: bool = True,
    ) -> _RunHandle: ...
