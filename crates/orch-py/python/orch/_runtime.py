"""How the extension calls phase functions (internal; the Rust side drives it).

Plain functions are called by the extension itself in its worker threads; this module
converts unusual return values, schedules coroutines, describes exceptions and routes
``orch.phase.*`` log records to the running phase.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import json
import logging
import os
import threading
import traceback
from types import TracebackType
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Tuple

from ._errors import PhaseCancelled, SkipPhase
from ._orch import _after_fork_in_child, _current_context

# A forked child has none of the parent's worker threads.
os.register_at_fork(after_in_child=_after_fork_in_child)

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("orch_phase_context", default=None)


def current_context() -> Any:
    """The context of the phase running in this thread or task, if any."""
    return _current_context() or _current.get()


def normalize(out: object, phase_id: str) -> Optional[Dict[str, str]]:
    """A phase's return value as outputs: ``None``, or a dict of ``str`` values (other
    scalars converted with ``str()``, lists and dicts as JSON text)."""
    if out is None:
        return None
    if not isinstance(out, Mapping):
        raise TypeError(
            f"phase `{phase_id}` returned a {type(out).__name__}: "
            "return a dict of outputs (or None)"
        )
    result: Dict[str, str] = {}
    for k, v in out.items():
        if not isinstance(k, str):
            raise TypeError(f"phase `{phase_id}`: output keys must be str, not {type(k).__name__}")
        if isinstance(v, str):
            result[k] = v
        elif v is None:
            raise TypeError(f"phase `{phase_id}`: output `{k}` is None: outputs are strings")
        elif isinstance(v, (list, tuple, dict)):
            result[k] = json.dumps(v)
        else:
            result[k] = str(v)
    return result


def run_awaitable(aw: Awaitable[Any]) -> Any:
    """Runs an awaitable a plain phase function returned, on the background loop."""
    return asyncio.run_coroutine_threadsafe(_awaited(aw), background_loop()).result()


async def _awaited(aw: Awaitable[Any]) -> Any:
    return await aw


async def _run_coroutine(fn: Callable[[Any], Awaitable[Any]], ctx: Any) -> Optional[Dict[str, str]]:
    out = await fn(ctx)
    return normalize(out, ctx.phase_id)


def submit_async(
    fn: Callable[[Any], Awaitable[Any]],
    ctx: Any,
    done: Callable[["concurrent.futures.Future[Any]"], None],
    loop: Optional[asyncio.AbstractEventLoop],
) -> "concurrent.futures.Future[Any]":
    """Schedules a coroutine function on ``loop`` (or the background loop); ``done`` gets
    the finished future."""
    token = _current.set(ctx)
    try:
        fut = asyncio.run_coroutine_threadsafe(_run_coroutine(fn, ctx), loop or background_loop())
    finally:
        _current.reset(token)
    fut.add_done_callback(done)
    return fut


_loop: Optional[asyncio.AbstractEventLoop] = None
_loop_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's event loop for coroutine phases of synchronous runs (a daemon thread)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, name="orch-asyncio", daemon=True)
            t.start()
            _loop = loop
        return _loop


# Frames of these files come before the user's code in a phase's traceback.
_INTERNAL = (
    __file__,
    os.path.dirname(concurrent.futures.__file__) + os.sep,
    os.path.dirname(asyncio.__file__) + os.sep,
)


def _user_traceback(exc: BaseException, tb: Optional[TracebackType]) -> str:
    tb = tb or exc.__traceback__
    # Leave out orch's and the executors' frames: the user's code starts below them.
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_INTERNAL):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def describe_error(
    exc: BaseException, tb: Optional[TracebackType] = None
) -> Tuple[str, str, str]:
    """``(kind, message, traceback)`` of an exception a phase function raised (``tb``:
    its traceback when the extension holds it apart); kind is ``skip``, ``cancelled``,
    ``interrupt`` or ``failed``."""
    if isinstance(exc, SkipPhase):
        return ("skip", str(exc) or "skipped by the phase", "")
    if isinstance(exc, (PhaseCancelled, asyncio.CancelledError, concurrent.futures.CancelledError)):
        return ("cancelled", "cancelled", "")
    if isinstance(exc, KeyboardInterrupt):
        return ("interrupt", "KeyboardInterrupt", _user_traceback(exc, tb))
    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    message = message.splitlines()[-1] if message else type(exc).__name__
    return ("failed", message, _user_traceback(exc, tb))


class _PhaseLogHandler(logging.Handler):
    """Sends records of ``orch.phase.*`` loggers to the log of the phase running in the
    current thread (plain functions) or task (coroutines)."""

    def emit(self, record: logging.LogRecord) -> None:
        ctx = _current_context() or _current.get()
        if ctx is None:
            return
        try:
            ctx.log(self.format(record))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


_phase_root = logging.getLogger("orch.phase")
if not any(isinstance(h, _PhaseLogHandler) for h in _phase_root.handlers):
    _handler = _PhaseLogHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    _phase_root.addHandler(_handler)
if _phase_root.level == logging.NOTSET:
    _phase_root.setLevel(logging.INFO)


def logger_for(phase_id: str) -> logging.Logger:
    """The logger of a phase: ``orch.phase.<id>`` (INFO and up reach the phase log)."""
    return logging.getLogger(f"orch.phase.{phase_id}")
