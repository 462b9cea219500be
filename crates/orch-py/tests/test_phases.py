"""Python phases: sync and async functions, outputs, retries, timeouts, failures."""

from __future__ import annotations

import asyncio
import datetime
import re
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import orch
from conftest import wait_until


def test_sync_phases_pass_outputs(pipeline: orch.Pipeline) -> None:
    seen: Dict[str, object] = {}

    @pipeline.phase()
    def build(ctx: orch.Context) -> Dict[str, object]:
        seen["build"] = (ctx.phase_id, ctx.attempt, ctx.run_id)
        return {"artifact": "app.tgz", "size": 42, "ok": True, "files": ["a", "b"], "ratio": 0.5}

    @pipeline.phase(needs=[build])
    def test(ctx: orch.Context) -> Dict[str, str]:
        seen["outputs"] = ctx.outputs
        return {"tested": ctx.outputs["build"]["artifact"]}

    @pipeline.phase(needs=["test"], id="final-step")
    def final(ctx: orch.Context) -> None:
        seen["final"] = ctx.outputs

    result = pipeline.run()
    assert result.status == "succeeded"
    build_out = result.phases["build"].outputs
    assert build_out == {
        "artifact": "app.tgz",
        "size": "42",
        "ok": "True",
        "files": '["a", "b"]',
        "ratio": "0.5",
    }
    assert seen["build"] == ("build", 1, result.run_id)
    assert seen["outputs"] == {"build": build_out}
    assert seen["final"] == {"test": {"tested": "app.tgz"}}
    assert result.phases["final-step"].outputs == {}
    assert result.phases["build"].kind == "python"
    assert build.__orch_phase__ == "build"  # type: ignore[attr-defined]
    # The decorated function is returned unchanged.
    assert callable(build) and build.__name__ == "build"


def test_context_exposes_vars_and_directories(tmp_path: Path) -> None:
    p = orch.Pipeline("ctx", base_dir=tmp_path, vars={"env": "staging"})
    seen: Dict[str, object] = {}

    @p.phase
    def look(ctx: orch.Context) -> None:
        seen.update(vars=ctx.vars, run_dir=ctx.run_dir, base=ctx.base_dir, cancelled=ctx.cancelled)

    r = p.run()
    assert seen == {"vars": {"env": "staging"}, "run_dir": r.run_dir, "base": str(tmp_path), "cancelled": False}
    assert r.run_dir.startswith(str(tmp_path / ".orch" / "runs"))
    assert p.run(vars={"env": "prod"}) is not None
    assert seen["vars"] == {"env": "prod"}


def test_async_phases_run_on_the_background_loop(pipeline: orch.Pipeline) -> None:
    @pipeline.phase
    async def fetch(ctx: orch.Context) -> Dict[str, str]:
        await asyncio.sleep(0.01)
        ctx.log("fetched")
        return {"loop": str(id(asyncio.get_running_loop()))}

    @pipeline.phase(needs=[fetch])
    async def use(ctx: orch.Context) -> Dict[str, str]:
        return {"same_loop": str(ctx.outputs["fetch"]["loop"] == str(id(asyncio.get_running_loop())))}

    r = pipeline.run()
    assert r.phases["use"].outputs == {"same_loop": "True"}
    assert "fetched" in r.phases["fetch"].log_text()


def test_run_async_runs_coroutines_on_the_callers_loop(pipeline: orch.Pipeline) -> None:
    async def main() -> orch.RunResult:
        ready = asyncio.Event()  # bound to this loop

        @pipeline.phase
        async def waiter(ctx: orch.Context) -> Dict[str, str]:
            await asyncio.wait_for(ready.wait(), timeout=10)
            return {"loop": str(asyncio.get_running_loop() is asyncio_loop)}

        @pipeline.phase
        async def setter(ctx: orch.Context) -> None:
            ready.set()

        @pipeline.phase
        def plain(ctx: orch.Context) -> Dict[str, str]:
            return {"thread": threading.current_thread().name}

        events: List[orch.Event] = []

        async def on_event(e: orch.Event) -> None:
            events.append(e)

        asyncio_loop = asyncio.get_running_loop()
        result = await pipeline.run_async(on_event=on_event)
        assert events[0].kind == "run_started" and events[-1].kind == "run_finished"
        return result

    r = asyncio.run(main())
    assert r.ok
    assert r.phases["waiter"].outputs == {"loop": "True"}
    assert r.phases["plain"].outputs["thread"] != threading.main_thread().name


def test_retries_then_success(pipeline: orch.Pipeline) -> None:
    attempts: List[int] = []

    @pipeline.phase(retries=3, backoff=0.01)
    def flaky(ctx: orch.Context) -> Dict[str, str]:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        return {"attempt": str(ctx.attempt)}

    events: List[orch.Event] = []
    r = pipeline.run(on_event=events.append)
    assert attempts == [1, 2, 3]
    assert r.phases["flaky"].attempts == 3
    assert r.phases["flaky"].outputs == {"attempt": "3"}
    retrying = [e for e in events if e.kind == "phase_retrying"]
    assert [e.attempt for e in retrying] == [1, 2]
    assert retrying[0].error == "RuntimeError: attempt 1 failed"
    log = r.phases["flaky"].log_text()
    assert "attempt 1 failed: RuntimeError: attempt 1 failed" in log


def test_retries_exhausted_raise_pipeline_failed(pipeline: orch.Pipeline) -> None:
    @pipeline.phase(retries=1, backoff="10ms")
    def always(ctx: orch.Context) -> None:
        raise ValueError("nope")

    @pipeline.phase(needs=[always])
    def after(ctx: orch.Context) -> None:
        raise AssertionError("must not run")

    with pytest.raises(orch.PipelineFailed) as e:
        pipeline.run()
    result = e.value.result
    assert isinstance(e.value, orch.OrchError)
    assert result.status == "failed"
    assert result.phases["always"].attempts == 2
    assert result.phases["always"].reason == "ValueError: nope"
    assert result.phases["after"].status == "blocked"
    assert result.failed == ["always"]
    assert "`always` failed: ValueError: nope" in str(e.value)


def helper_that_fails(depth: int) -> None:
    if depth == 0:
        raise KeyError("missing-config")
    helper_that_fails(depth - 1)


def test_failure_logs_the_python_traceback(pipeline: orch.Pipeline) -> None:
    @pipeline.phase
    def broken(ctx: orch.Context) -> None:
        ctx.log("about to fail")
        helper_that_fails(2)

    r = pipeline.run(check=False)
    ph = r.phases["broken"]
    assert ph.status == "failed"
    assert ph.reason == "KeyError: 'missing-config'"
    log = ph.log_text()
    assert log.index("about to fail") < log.index("Traceback (most recent call last):")
    assert 'in broken\n' in log and "helper_that_fails(2)" in log
    assert log.count("in helper_that_fails") == 3
    assert "KeyError: 'missing-config'" in log
    # orch's own frames are left out.
    assert "_runtime.py" not in log


def test_async_failure_logs_the_traceback(pipeline: orch.Pipeline) -> None:
    @pipeline.phase
    async def broken(ctx: orch.Context) -> None:
        await asyncio.sleep(0)
        raise OSError("disk gone")

    r = pipeline.run(check=False)
    log = r.phases["broken"].log_text()
    assert r.phases["broken"].reason == "OSError: disk gone"
    assert "in broken" in log and "OSError: disk gone" in log
    assert "concurrent/futures" not in log and "_runtime.py" not in log


def test_bad_return_values_fail_the_phase(pipeline: orch.Pipeline) -> None:
    @pipeline.phase
    def wrong(ctx: orch.Context) -> List[str]:
        return ["not", "a", "dict"]

    @pipeline.phase
    def none_value(ctx: orch.Context) -> Dict[str, Optional[str]]:
        return {"x": None}

    r = pipeline.run(check=False, keep_going=True)
    assert r.phases["wrong"].reason == "TypeError: phase `wrong` returned a list: return a dict of outputs (or None)"
    assert "output `x` is None" in (r.phases["none_value"].reason or "")


def test_skip_phase(pipeline: orch.Pipeline) -> None:
    @pipeline.phase
    def maybe(ctx: orch.Context) -> None:
        raise orch.SkipPhase("nothing to publish")

    @pipeline.phase(needs=[maybe])
    def after(ctx: orch.Context) -> Dict[str, str]:
        return {"ran": "yes"}

    r = pipeline.run()
    assert r.phases["maybe"].status == "skipped"
    assert r.phases["maybe"].reason == "nothing to publish"
    assert r.phases["after"].outputs == {"ran": "yes"}


def test_timeout_of_a_sync_phase_stops_the_function(pipeline: orch.Pipeline) -> None:
    state: Dict[str, object] = {}

    @pipeline.phase(timeout=0.2, retries=1, backoff=0.01)
    def slow(ctx: orch.Context) -> None:
        state[f"start{ctx.attempt}"] = True
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.01)
            state["finished"] = True
        except orch.PhaseCancelled:
            state[f"cancelled{ctx.attempt}"] = ctx.cancelled
            raise

    started = time.monotonic()
    r = pipeline.run(check=False)
    assert time.monotonic() - started < 15
    ph = r.phases["slow"]
    assert ph.status == "timed_out"
    assert ph.attempts == 2
    assert ph.reason == "timed out after 200ms"
    # PhaseCancelled was raised inside both attempts, and ctx.cancelled was set.
    assert wait_until(lambda: "cancelled2" in state)
    assert state.get("cancelled1") is True and state.get("cancelled2") is True
    assert "finished" not in state


def test_timeout_of_an_async_phase_cancels_the_coroutine(pipeline: orch.Pipeline) -> None:
    state: Dict[str, bool] = {}

    @pipeline.phase(timeout="100ms")
    async def slow(ctx: orch.Context) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    r = pipeline.run(check=False)
    assert r.phases["slow"].status == "timed_out"
    assert wait_until(lambda: state.get("cancelled", False))


def test_phases_run_in_parallel_threads(pipeline: orch.Pipeline) -> None:
    barrier = threading.Barrier(4, timeout=20)
    names: List[str] = []

    for i in range(4):

        def work(ctx: orch.Context) -> Dict[str, str]:
            names.append(threading.current_thread().name)
            barrier.wait()  # only passes if all four run at once
            return {"ok": "1"}

        pipeline.phase(id=f"p{i}")(work)

    r = pipeline.run(jobs=4)
    assert r.ok
    assert len(set(names)) == 4


def test_gil_is_released_while_the_engine_runs(pipeline: orch.Pipeline) -> None:
    pipeline.command("wait", "sleep 0.5")
    ticks = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.005)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        pipeline.run()
    finally:
        stop.set()
        t.join()
    assert len(ticks) > 20


def test_mixing_file_command_and_python_phases(write: object, tmp_path: Path) -> None:
    path = tmp_path / "orch.toml"
    path.write_text(
        """
[pipeline]
name = "mixed"

[vars]
version = "2.0"

[phases.build]
run = "echo artifact=app-${{ vars.version }}.tgz >> $ORCH_OUTPUT"

[phases.lint]
run = "true"
"""
    )
    p = orch.Pipeline.load(path)

    @p.phase(needs=["build"])
    def check(ctx: orch.Context) -> Dict[str, str]:
        ctx.logger.info("checking %s", ctx.outputs["build"]["artifact"])
        return {"checked": ctx.outputs["build"]["artifact"], "version": ctx.vars["version"]}

    p.command(
        "publish",
        "echo url=https://example.invalid/${{ phases.check.outputs.checked }} >> $ORCH_OUTPUT",
        needs=[check, "lint"],
    )
    assert p.phase_ids == ["build", "lint", "check", "publish"]
    assert p.plan().phases == ["build", "lint", "check", "publish"]
    r = p.run()
    assert r.ok
    assert r.phases["check"].outputs == {"checked": "app-2.0.tgz", "version": "2.0"}
    assert r.phases["publish"].outputs == {"url": "https://example.invalid/app-2.0.tgz"}
    assert "INFO checking app-2.0.tgz" in r.phases["check"].log_text()
    assert r.phases["build"].kind == "command" and r.phases["check"].kind == "python"


def test_code_pipelines_are_validated(pipeline: orch.Pipeline) -> None:
    @pipeline.phase(needs=["bulid"])
    def test(ctx: orch.Context) -> None:
        pass

    @pipeline.phase
    def build(ctx: orch.Context) -> None:
        pass

    with pytest.raises(orch.ValidationError) as e:
        pipeline.validate()
    assert e.value.file is None
    assert len(e.value.problems) == 1
    assert "needs `bulid`" in e.value.problems[0].message
    assert e.value.problems[0].help == "did you mean `build`?"
    with pytest.raises(orch.ValidationError):
        pipeline.run()

    with pytest.raises(orch.ValidationError, match="declared twice"):
        pipeline.phase(id="build")(lambda ctx: None)
    with pytest.raises(orch.ValidationError, match="invalid phase id"):
        pipeline.phase(id="no spaces")(lambda ctx: None)
    with pytest.raises(orch.ValidationError, match="unknown kind `comand`"):
        pipeline.add_phase("x", "comand")
    with pytest.raises(orch.ValidationError, match="invalid duration"):
        pipeline.phase(id="t", timeout="soon")(lambda ctx: None)


def test_decorator_settings_in_every_form(pipeline: orch.Pipeline) -> None:
    @pipeline.phase(timeout="2s", tags="fast")
    def first(ctx: orch.Context) -> None:
        pass

    # One decorator for two functions; needs as functions, in a tuple; a timedelta.
    shared = pipeline.phase(needs=(first,), tags=("a", "b"), retries=2, timeout=datetime.timedelta(seconds=3))

    def second(ctx: orch.Context) -> None:
        pass

    def other(ctx: orch.Context) -> None:
        pass

    assert shared(second) is second and shared(other) is other
    with pytest.raises(orch.ValidationError, match="declared twice"):
        shared(second)

    @pipeline.phase(needs=iter(["first"]), tags=[], backoff=1)
    def third(ctx: orch.Context) -> None:
        pass

    waves = {p["id"]: p for wave in pipeline.plan().waves for p in wave}
    assert waves["first"]["timeout"] == "2s"
    for id in ["second", "other"]:
        assert waves[id]["needs"] == ["first"] and waves[id]["retries"] == 2
        assert waves[id]["timeout"] == "3s"
    assert waves["third"]["needs"] == ["first"] and waves["third"]["retries"] == 0
    assert pipeline.plan(only="tag:fast").phases == ["first"]
    assert pipeline.plan(only="tag:b").phases == ["first", "second", "other"]
    assert pipeline.run().ok

    def bad(ctx: orch.Context) -> None:
        pass

    cases: List[Tuple[Dict[str, Any], str]] = [
        (dict(retries=-1), "retries must be a non-negative int, not -1"),
        (dict(retries=True), "retries must be a non-negative int, not True"),
        (dict(retries=1.5), "retries must be a non-negative int, not 1.5"),
        (dict(timeout=[1]), "timeout must be seconds"),
        (dict(backoff=-2), "backoff must be a non-negative number of seconds"),
        (dict(needs=[1]), "1 is not a phase"),
    ]
    for settings, error in cases:
        with pytest.raises((ValueError, TypeError, orch.ValidationError), match=re.escape(error)):
            pipeline.phase(**settings)(bad)
    assert "bad" not in pipeline


def test_cycles_are_reported(pipeline: orch.Pipeline) -> None:
    pipeline.phase(id="a", needs=["b"])(lambda ctx: None)
    pipeline.phase(id="b", needs=["a"])(lambda ctx: None)
    with pytest.raises(orch.ValidationError, match="cycle"):
        pipeline.plan()


def test_gate_kind_from_code(pipeline: orch.Pipeline) -> None:
    @pipeline.phase
    def measure(ctx: orch.Context) -> Dict[str, int]:
        return {"coverage": 91}

    pipeline.add_phase("enough", "gate", needs=[measure], assert_=["phases.measure.outputs.coverage >= 80"])
    pipeline.add_phase("strict", "gate", needs=[measure], assert_=["phases.measure.outputs.coverage >= 95"])
    r = pipeline.run(check=False, keep_going=True)
    assert r.phases["enough"].status == "succeeded"
    assert r.phases["strict"].status == "failed"
    assert "coverage >= 95" in (r.phases["strict"].reason or "")
