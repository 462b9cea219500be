"""orch: run software-delivery pipelines as a DAG of phases, from Python.

A pipeline comes from a file (``Pipeline.load("orch.toml")``, every phase kind of the
``orch`` command line) or from code (``Pipeline("release", jobs=4)``), and Python
functions become phases with ``@pipeline.phase``. The engine is Rust: it schedules with
the GIL released, and plain phase functions run in parallel threads.

Example::

    import orch

    p = orch.Pipeline("demo", jobs=4)

    @p.phase()
    def build(ctx: orch.Context) -> dict[str, str]:
        ctx.log("building")
        return {"artifact": "app-1.0.tar.gz"}

    @p.phase(needs=[build], retries=2, timeout="30s")
    async def publish(ctx: orch.Context) -> dict[str, str]:
        return {"url": "https://example.invalid/" + ctx.outputs["build"]["artifact"]}

    result = p.run()
    print(result.status, result.phases["publish"].outputs["url"])

Errors: every error is an ``orch.OrchError`` (``ValidationError``, ``PipelineFailed``,
``RunError``). ``run()`` raises ``PipelineFailed`` when the run does not succeed (pass
``check=False`` to get the ``RunResult`` instead).

Ctrl-C: a ``KeyboardInterrupt`` while ``run()`` waits stops the run (running phases are
asked to stop and get ``grace`` seconds; a second Ctrl-C kills them), waits until nothing
of the run is left running, writes the record, and then re-raises the
``KeyboardInterrupt``, with the run's ``RunResult`` (status ``cancelled``) as its
``result`` attribute.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import json
import os
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    overload,
)

from . import _runtime
from ._errors import (
    OrchError,
    PhaseCancelled,
    PipelineFailed,
    Problem,
    RunError,
    SkipPhase,
    ValidationError,
)
from ._orch import (
    Context,
    Event,
    PhaseResult,
    RunResult,
    _Pipeline,
    _RunHandle,
    __version__,
    kinds,
    parse_duration,
)

__all__ = [
    "Pipeline",
    "Plan",
    "Context",
    "Event",
    "RunResult",
    "PhaseResult",
    "OrchError",
    "ValidationError",
    "PipelineFailed",
    "RunError",
    "Problem",
    "PhaseCancelled",
    "SkipPhase",
    "kinds",
    "parse_duration",
    "__version__",
]

F = TypeVar("F", bound=Callable[..., Any])

#: A duration: seconds, a ``datetime.timedelta``, or text such as ``"30s"`` or ``"1m 30s"``.
Duration = Union[int, float, str, datetime.timedelta]

#: A phase reference: its id, or a function decorated with ``@pipeline.phase``.
PhaseRef = Union[str, Callable[..., Any]]

#: ``on_event`` callbacks receive each :class:`Event`.
EventCallback = Callable[[Event], Any]

_PHASE_ATTR = "__orch_phase__"
_POLL_SECONDS = 0.05


def _seconds(value: Optional[Duration], what: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be seconds, a timedelta or text like '30s', not {value!r}")
    return float(value)


def _is_coroutine_function(func: Callable[..., Any]) -> bool:
    code = getattr(func, "__code__", None)
    if code is not None and not inspect.ismethod(func):
        # A plain function: read the flag (what inspect does, minus the unwrapping).
        return bool(code.co_flags & inspect.CO_COROUTINE)
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def _ref(ref: PhaseRef) -> str:
    if isinstance(ref, str):
        return ref
    pid = getattr(ref, _PHASE_ATTR, None)
    if isinstance(pid, str):
        return pid
    raise TypeError(f"{ref!r} is not a phase: give a phase id or a function decorated with @pipeline.phase")


def _refs(refs: Union[None, PhaseRef, Iterable[PhaseRef]]) -> List[str]:
    if refs is None:
        return []
    if isinstance(refs, str) or callable(refs):
        return [_ref(refs)]
    if type(refs) is list:
        for r in refs:
            if type(r) is not str:
                break
        else:
            return [str(r) for r in refs]
    return [_ref(r) for r in refs]


def _strings(values: Union[None, str, Iterable[str]]) -> List[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    return [str(v) for v in values]


class Plan:
    """What a run would do, with no side effects: waves of phases that could run
    together (each wave needs only earlier waves). ``str(plan)`` renders it."""

    def __init__(self, data: Dict[str, Any], text: str) -> None:
        self.pipeline: str = data["pipeline"]
        """The pipeline's name."""
        self.jobs: int = data["jobs"]
        """The job limit the run would use."""
        self.waves: List[List[Dict[str, Any]]] = data["waves"]
        """Each wave's phases: dicts with ``id``, ``kind``, ``agent``, ``summary``,
        ``details``, ``changes``, ``needs``, ``timeout``, ``retries``, ..."""
        self.not_selected: List[Tuple[str, str]] = [(str(a), str(b)) for a, b in data["not_selected"]]
        """Phases left out, with why."""
        self.text = text
        """The plan rendered for people."""
        self._data = data

    @property
    def phases(self) -> List[str]:
        """Ids of the phases that would run, wave by wave."""
        return [p["id"] for wave in self.waves for p in wave]

    def to_dict(self) -> Dict[str, Any]:
        """The plan as a dict (as ``orch plan --format json`` prints it)."""
        return json.loads(json.dumps(self._data))  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self.phases)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<orch.Plan {self.pipeline}: {len(self)} phases in {len(self.waves)} waves>"


class Pipeline:
    """A DAG of phases: loaded from a file, built in code, or both.

    ``Pipeline(name, jobs=None, base_dir=".", state_dir=None, vars=None)`` starts an empty
    pipeline; ``base_dir`` is where relative paths (``cwd``, the state directory) resolve,
    ``state_dir`` (default ``.orch``) where runs, logs and ``run.json`` go.
    """

    _core: _Pipeline

    def __init__(
        self,
        name: str,
        jobs: Optional[int] = None,
        base_dir: Union[str, "os.PathLike[str]"] = ".",
        state_dir: Union[None, str, "os.PathLike[str]"] = None,
        vars: Optional[Mapping[str, str]] = None,
    ) -> None:
        if jobs is not None and jobs < 1:
            raise ValueError("jobs must be at least 1")
        self._core = _Pipeline(
            name,
            os.path.abspath(os.fspath(base_dir)),
            jobs,
            None if state_dir is None else os.fspath(state_dir),
            {str(k): str(v) for k, v in (vars or {}).items()},
        )

    @classmethod
    def load(
        cls,
        path: Union[str, "os.PathLike[str]"],
        vars: Optional[Mapping[str, str]] = None,
    ) -> "Pipeline":
        """Loads and validates a pipeline file (``orch.toml``). ``vars`` override declared
        variables, like ``orch run --var``. Raises :class:`ValidationError` listing every
        problem with its line and column."""
        self = cls.__new__(cls)
        self._core = _Pipeline.load(
            os.fspath(path), {str(k): str(v) for k, v in (vars or {}).items()}
        )
        return self

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self._core.name

    @property
    def jobs(self) -> Optional[int]:
        """The job limit (``None``: the number of CPUs)."""
        return self._core.jobs

    @property
    def base_dir(self) -> str:
        """The directory relative paths resolve against."""
        return self._core.base_dir

    @property
    def state_dir(self) -> str:
        """Where runs go (``STATE_DIR/runs/RUN_ID``)."""
        return self._core.state_dir

    @property
    def source(self) -> Optional[str]:
        """The file the pipeline was loaded from, if any."""
        return self._core.source

    @property
    def vars(self) -> Dict[str, str]:
        """Declared variables and their values (a copy)."""
        return self._core.vars

    @property
    def phase_ids(self) -> List[str]:
        """Phase ids, in declaration order."""
        return self._core.phase_ids

    def __contains__(self, phase: object) -> bool:
        return isinstance(phase, str) and self._core.has_phase(phase)

    def __len__(self) -> int:
        return len(self._core.phase_ids)

    def __repr__(self) -> str:
        return f"<orch.Pipeline {self.name!r}: {len(self)} phases>"

    @overload
    def phase(self, fn: F, /) -> F: ...

    @overload
    def phase(
        self,
        fn: None = None,
        /,
        *,
        id: Optional[str] = None,
        needs: Iterable[PhaseRef] = (),
        retries: Optional[int] = None,
        timeout: Optional[Duration] = None,
        backoff: Optional[Duration] = None,
        tags: Iterable[str] = (),
        description: Optional[str] = None,
        allow_failure: bool = False,
        when: Optional[str] = None,
    ) -> Callable[[F], F]: ...

    def phase(
        self,
        fn: Optional[F] = None,
        /,
        *,
        id: Optional[str] = None,
        needs: Iterable[PhaseRef] = (),
        retries: Optional[int] = None,
        timeout: Optional[Duration] = None,
        backoff: Optional[Duration] = None,
        tags: Iterable[str] = (),
        description: Optional[str] = None,
        allow_failure: bool = False,
        when: Optional[str] = None,
    ) -> Union[F, Callable[[F], F]]:
        """Makes a function a phase: ``@p.phase`` or ``@p.phase(needs=[...], ...)``.

        The function takes a :class:`Context` and returns a dict of outputs (or ``None``);
        values that are not ``str`` are converted with ``str()`` (lists and dicts as JSON).
        It may be ``async def``. An exception fails the attempt (its traceback goes to the
        phase log); :class:`SkipPhase` ends it as skipped.

        - ``id``: the phase id (default: the function's name);
        - ``needs``: phase ids or decorated functions that must succeed first;
        - ``retries``: extra attempts after a failure, ``backoff`` seconds apart (doubling);
        - ``timeout``: limit of one attempt (seconds, ``timedelta`` or ``"30s"``); when it
          passes, :class:`PhaseCancelled` is raised in the function;
        - ``tags``, ``description`` (default: the docstring's first line),
          ``allow_failure``, ``when`` (a CEL condition), as in pipeline files.

        In a pipeline loaded from a file, ``retries``, ``timeout`` and ``backoff`` left out
        take the file's ``[defaults]`` (else: no retries, no timeout).

        The function is returned unchanged (so it can still be called directly).
        """

        # Checked and converted once for every use of the decorator (in Rust).
        return self._core.phase(  # type: ignore[no-any-return]
            fn, id, needs, retries, timeout, backoff, tags, description, allow_failure, when
        )

    def command(
        self,
        id: str,
        run: Union[str, Sequence[str]],
        *,
        needs: Iterable[PhaseRef] = (),
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        retries: Optional[int] = None,
        timeout: Optional[Duration] = None,
        backoff: Optional[Duration] = None,
        tags: Iterable[str] = (),
        description: Optional[str] = None,
        allow_failure: bool = False,
        when: Optional[str] = None,
        secrets: Iterable[str] = (),
        agent: Optional[str] = None,
    ) -> None:
        """Adds a ``command`` phase: ``run`` is a script for ``sh -c`` (a string) or an argv
        (a list). It may write ``key=value`` lines to ``$ORCH_OUTPUT`` as outputs and use
        ``${{ vars.X }}`` / ``${{ phases.ID.outputs.K }}``. In a pipeline loaded from a
        file, what it leaves out of ``retries``, ``timeout``, ``backoff`` and ``env`` comes
        from the file's ``[defaults]``."""
        self._core.add_kind(
            id,
            "command",
            run if isinstance(run, str) else list(run),
            None,
            self._common(
                needs=needs,
                retries=retries,
                timeout=timeout,
                backoff=backoff,
                tags=tags,
                description=description,
                allow_failure=allow_failure,
                when=when,
                env=env,
                cwd=cwd,
                secrets=secrets,
                agent=agent,
            ),
        )

    def add_phase(
        self,
        id: str,
        kind: str,
        *,
        with_: Optional[Mapping[str, Any]] = None,
        assert_: Iterable[str] = (),
        needs: Iterable[PhaseRef] = (),
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        retries: Optional[int] = None,
        timeout: Optional[Duration] = None,
        backoff: Optional[Duration] = None,
        tags: Iterable[str] = (),
        description: Optional[str] = None,
        allow_failure: bool = False,
        when: Optional[str] = None,
        secrets: Iterable[str] = (),
        agent: Optional[str] = None,
    ) -> None:
        """Adds a phase of any registered kind (see :func:`kinds`), with its ``with`` table
        as ``with_``: ``p.add_phase("pkg", "package", with_={"paths": ["dist"]})``; a
        ``gate`` takes its CEL assertions as ``assert_``. The file's ``[defaults]`` apply as
        for :meth:`command`."""
        self._core.add_kind(
            id,
            kind,
            None,
            None if with_ is None else json.dumps(dict(with_)),
            self._common(
                needs=needs,
                retries=retries,
                timeout=timeout,
                backoff=backoff,
                tags=tags,
                description=description,
                allow_failure=allow_failure,
                when=when,
                env=env,
                cwd=cwd,
                secrets=secrets,
                agent=agent,
                assert_=assert_,
            ),
        )

    @staticmethod
    def _common(
        *,
        needs: Iterable[PhaseRef],
        retries: Optional[int],
        timeout: Optional[Duration],
        backoff: Optional[Duration],
        tags: Iterable[str],
        description: Optional[str],
        allow_failure: bool,
        when: Optional[str],
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        secrets: Iterable[str] = (),
        agent: Optional[str] = None,
        assert_: Iterable[str] = (),
    ) -> Dict[str, Any]:
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise ValueError(f"retries must be a non-negative int, not {retries!r}")
        return {
            "needs": _refs(needs),
            "retries": retries,
            "timeout": _seconds(timeout, "timeout"),
            "backoff": _seconds(backoff, "backoff"),
            "tags": _strings(tags),
            "description": description,
            "allow_failure": bool(allow_failure),
            "when": when,
            "env": {str(k): str(v) for k, v in (env or {}).items()},
            "cwd": cwd,
            "secrets": _strings(secrets),
            "agent": agent,
            "assert": _strings(assert_),
        }

    def validate(self) -> None:
        """Checks the whole pipeline (needs, kinds, cycles, templates); raises
        :class:`ValidationError` with every problem."""
        self._core.validate()

    def plan(
        self,
        *,
        jobs: Optional[int] = None,
        only: Union[None, PhaseRef, Iterable[PhaseRef]] = None,
        skip: Union[None, PhaseRef, Iterable[PhaseRef]] = None,
        from_: Union[None, PhaseRef, Iterable[PhaseRef]] = None,
        vars: Optional[Mapping[str, str]] = None,
    ) -> Plan:
        """The plan of a run with this selection (``only``/``skip`` take ids and
        ``"tag:T"``; ``from_`` takes ids): nothing runs."""
        data, text = self._core.plan(
            jobs, _refs(only), _refs(skip), _refs(from_), _vars(vars)
        )
        return Plan(json.loads(data), text)

    def _start(
        self,
        *,
        jobs: Optional[int],
        only: Union[None, PhaseRef, Iterable[PhaseRef]],
        skip: Union[None, PhaseRef, Iterable[PhaseRef]],
        from_: Union[None, PhaseRef, Iterable[PhaseRef]],
        keep_going: bool,
        vars: Optional[Mapping[str, str]],
        grace: Duration,
        collect: bool,
        loop: Optional[asyncio.AbstractEventLoop],
        resume: Union[None, bool, str],
        record: bool,
    ) -> _RunHandle:
        if jobs is not None and jobs < 1:
            raise ValueError("jobs must be at least 1")
        return self._core.start(
            jobs,
            _refs(only),
            _refs(skip),
            _refs(from_),
            bool(keep_going),
            _vars(vars),
            _seconds(grace, "grace") or 0.0,
            collect,
            loop,
            resume,
            bool(record),
        )

    @overload
    def run(
        self,
        *,
        jobs: Optional[int] = ...,
        only: Union[None, PhaseRef, Iterable[PhaseRef]] = ...,
        skip: Union[None, PhaseRef, Iterable[PhaseRef]] = ...,
        from_: Union[None, PhaseRef, Iterable[PhaseRef]] = ...,
        keep_going: bool = ...,
        dry_run: Literal[False] = ...,
        resume: Union[None, bool, str] = ...,
        vars: Optional[Mapping[str, str]] = ...,
        on_event: Optional[EventCallback] = ...,
        grace: Duration = ...,
        check: bool = ...,
        record: bool = ...,
    ) -> RunResult: ...

    @overload
    def run(
        self,
        *,
        jobs: Optional[int] = ...,
        only: Union[None, PhaseRef, Iterable[PhaseRef]] = ...,
        skip: Union[None, PhaseRef, Iterable[PhaseRef]] = ...,
        from_: Union[None, PhaseRef, Iterable[PhaseRef]] = ...,
        keep_going: bool = ...,
        dry_run: Literal[True],
        resume: Union[None, bool, str] = ...,
        vars: Optional[Mapping[str, str]] = ...,
        on_event: Optional[EventCallback] = ...,
        grace: Duration = ...,
        check: bool = ...,
        record: bool = ...,
    ) -> Plan: ...

    def run(
        self,
        *,
        jobs: Optional[int] = None,
        only: Union[None, PhaseRef, Iterable[PhaseRef]] = None,
        skip: Union[None, PhaseRef, Iterable[PhaseRef]] = None,
        from_: Union[None, PhaseRef, Iterable[PhaseRef]] = None,
        keep_going: bool = False,
        dry_run: bool = False,
        resume: Union[None, bool, str] = None,
        vars: Optional[Mapping[str, str]] = None,
        on_event: Optional[EventCallback] = None,
        grace: Duration = 10.0,
        check: bool = True,
        record: bool = True,
    ) -> Union[RunResult, Plan]:
        """Runs the pipeline and returns its :class:`RunResult`.

        - ``jobs``: phases at once (default: the pipeline's, else the number of CPUs);
        - ``only``/``skip``: phase ids or ``"tag:T"`` (``only`` adds what they need);
          ``from_``: those phases and everything after them;
        - ``keep_going``: run everything that does not depend on a failure;
        - ``dry_run=True``: return the :class:`Plan` instead, running nothing;
        - ``resume``: continue an earlier run (``True`` for the latest, or a run id);
        - ``vars``: override declared variables for this run;
        - ``on_event``: called with each :class:`Event`, in this thread, while the run
          goes on (an exception in it stops the run and is re-raised);
        - ``grace``: seconds stopped phases get before they are killed;
        - ``check``: raise :class:`PipelineFailed` if the run does not succeed;
        - ``record=False``: keep the run in memory: no ``run.json``, logs or journal in
          the state directory (so nothing to resume; log lines still reach ``on_event``),
          for tests and in-process use.

        The GIL is released while the engine runs. ``KeyboardInterrupt`` stops the run
        cleanly and is re-raised (see the module's documentation).
        """
        if dry_run:
            return self.plan(jobs=jobs, only=only, skip=skip, from_=from_, vars=vars)
        handle = self._start(
            jobs=jobs,
            only=only,
            skip=skip,
            from_=from_,
            keep_going=keep_going,
            vars=vars,
            grace=grace,
            collect=on_event is not None,
            loop=None,
            resume=resume,
            record=record,
        )
        interrupt: Optional[KeyboardInterrupt] = None
        callback_error: Optional[BaseException] = None
        while True:
            try:
                events, done = handle.wait(_POLL_SECONDS)
                if on_event is not None and callback_error is None:
                    for event in events:
                        try:
                            on_event(event)
                        except Exception as e:  # stop, finish cleanly, then re-raise
                            callback_error = e
                            handle.stop()
                            break
                if done:
                    break
            except KeyboardInterrupt as e:
                if interrupt is None:
                    interrupt = e
                    handle.stop()
                else:
                    handle.abort()
        return _finish(handle, interrupt, callback_error, grace, check)

    async def run_async(
        self,
        *,
        jobs: Optional[int] = None,
        only: Union[None, PhaseRef, Iterable[PhaseRef]] = None,
        skip: Union[None, PhaseRef, Iterable[PhaseRef]] = None,
        from_: Union[None, PhaseRef, Iterable[PhaseRef]] = None,
        keep_going: bool = False,
        resume: Union[None, bool, str] = None,
        vars: Optional[Mapping[str, str]] = None,
        on_event: Optional[Callable[[Event], Union[None, Awaitable[None]]]] = None,
        grace: Duration = 10.0,
        check: bool = True,
        record: bool = True,
    ) -> RunResult:
        """``await``-able :meth:`run`: the event loop keeps running while the pipeline
        does. ``async def`` phases run on this event loop; ``on_event`` is called on it
        (and awaited if it returns an awaitable). Cancelling the awaiting task stops the
        run, waits for it to end, and re-raises ``CancelledError``."""
        loop = asyncio.get_running_loop()
        handle = self._start(
            jobs=jobs,
            only=only,
            skip=skip,
            from_=from_,
            keep_going=keep_going,
            vars=vars,
            grace=grace,
            collect=on_event is not None,
            loop=loop,
            resume=resume,
            record=record,
        )
        callback_error: Optional[BaseException] = None
        try:
            while True:
                events, done = await loop.run_in_executor(None, handle.wait, 0.25)
                if on_event is not None and callback_error is None:
                    for event in events:
                        try:
                            r = on_event(event)
                            if r is not None and inspect.isawaitable(r):
                                await r
                        except Exception as e:
                            callback_error = e
                            handle.stop()
                            break
                if done:
                    break
        except asyncio.CancelledError:
            handle.stop()
            while not (await asyncio.shield(loop.run_in_executor(None, handle.wait, 0.25)))[1]:
                pass
            await loop.run_in_executor(None, handle.join_phases, _seconds(grace, "grace") or 0.0)
            raise
        await loop.run_in_executor(None, handle.join_phases, _seconds(grace, "grace") or 0.0)
        result = handle.result()
        if callback_error is not None:
            raise callback_error
        if check and not result.ok:
            raise PipelineFailed(result)
        return result


def _vars(vars: Optional[Mapping[str, str]]) -> Dict[str, str]:
    return {str(k): str(v) for k, v in (vars or {}).items()}


def _finish(
    handle: _RunHandle,
    interrupt: Optional[KeyboardInterrupt],
    callback_error: Optional[BaseException],
    grace: Duration,
    check: bool,
) -> RunResult:
    """After the engine ended: wait for phase functions still unwinding, then report."""
    limit = (_seconds(grace, "grace") or 0.0) + 1.0
    while True:
        try:
            handle.join_phases(limit)
            break
        except KeyboardInterrupt as e:  # a second Ctrl-C while phases unwind: stop waiting
            interrupt = interrupt or e
            break
    result = handle.result()
    if interrupt is None and handle.interrupted:
        interrupt = KeyboardInterrupt()
    if interrupt is not None:
        setattr(interrupt, "result", result)
        raise interrupt
    if callback_error is not None:
        raise callback_error
    if check and not result.ok:
        raise PipelineFailed(result)
    return result
