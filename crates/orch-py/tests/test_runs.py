"""Runs: events, callbacks under parallel phases, KeyboardInterrupt, results."""

from __future__ import annotations

import _thread
import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest

import orch
from conftest import wait_until


def test_events_arrive_in_order_in_the_calling_thread(pipeline: orch.Pipeline) -> None:
    @pipeline.phase
    def a(ctx: orch.Context) -> Dict[str, str]:
        ctx.log("line one\nline two")
        return {"x": "1"}

    @pipeline.phase(needs=[a])
    def b(ctx: orch.Context) -> None:
        pass

    events: List[orch.Event] = []
    threads = set()

    def on_event(e: orch.Event) -> None:
        threads.add(threading.current_thread())
        events.append(e)

    r = pipeline.run(on_event=on_event)
    assert threads == {threading.current_thread()}
    assert events[0].kind == "run_started" and events[-1].kind == "run_finished"
    # Per phase, in order (phases' events may interleave: a dependent can start before
    # the engine reports its need finished, which waits for the journal).
    of_a = [e.kind for e in events if e.phase == "a"]
    of_b = [e.kind for e in events if e.phase == "b"]
    assert of_a == ["phase_started", "phase_output", "phase_output", "phase_finished"]
    assert of_b == ["phase_started", "phase_finished"]
    assert [e.line for e in events if e.kind == "phase_output"] == ["line one", "line two"]
    out = next(e for e in events if e.kind == "phase_output")
    assert out.stream == "log"
    fin = next(e for e in events if e.kind == "phase_finished" and e.phase == "a")
    assert fin.status == "succeeded" and fin.outputs == {"x": "1"} and fin.attempt == 1
    assert fin.duration is not None and fin.duration >= 0
    assert events[0].run_id == r.run_id and events[0].phases == 2 and events[0].to_run == 2
    assert events[-1].status == "succeeded"
    assert fin.to_dict()["outputs"] == {"x": "1"}
    assert "line" not in fin.to_dict()


def test_events_and_results_carry_why_a_phase_ended_as_data(pipeline: orch.Pipeline) -> None:
    """`cause` is the structured reason of `run.json` and of the server's events."""

    @pipeline.phase
    def broken(ctx: orch.Context) -> None:
        raise ValueError("nope")

    @pipeline.phase(needs=[broken])
    def after(ctx: orch.Context) -> None:
        pass

    @pipeline.phase(when="1 == 2")
    def gated(ctx: orch.Context) -> None:
        pass

    @pipeline.phase
    def fine(ctx: orch.Context) -> None:
        pass

    events: List[orch.Event] = []
    r = pipeline.run(keep_going=True, check=False, on_event=events.append)
    finished = {e.phase: e for e in events if e.kind == "phase_finished"}
    assert finished["broken"].cause == {"type": "error", "message": "ValueError: nope"}
    assert finished["after"].cause == {"type": "blocked", "by": "broken"}
    assert finished["gated"].cause == {"type": "when_false", "condition": "1 == 2"}
    assert finished["fine"].cause is None
    # The words stay the cause's text.
    assert finished["after"].reason == r.phases["after"].reason
    for phase, e in finished.items():
        assert phase is not None
        assert r.phases[phase].cause == e.cause
        assert r.phases[phase].to_dict().get("cause") == e.cause
        if e.cause is None:
            assert "cause" not in e.to_dict()
        else:
            assert e.to_dict()["cause"] == e.cause
    # Not a phase's end: no cause.
    assert all(e.cause is None for e in events if e.kind != "phase_finished")


def test_a_stopped_run_says_why_in_the_cause_of_what_it_cancelled(
    pipeline: orch.Pipeline,
) -> None:
    @pipeline.phase
    def first(ctx: orch.Context) -> None:
        raise RuntimeError("boom")

    @pipeline.phase
    def later(ctx: orch.Context) -> None:
        pass

    events: List[orch.Event] = []
    # One at a time, in declaration order: `later` has not started when `first` fails.
    r = pipeline.run(jobs=1, check=False, on_event=events.append)
    assert not r.ok
    causes = {e.phase: e.cause for e in events if e.kind == "phase_finished"}
    assert causes["first"] == {"type": "error", "message": "RuntimeError: boom"}
    stop = {"type": "fail_fast", "after": "first", "timed_out": False}
    assert causes["later"] == {"type": "not_started", "stop": stop}
    assert r.phases["later"].status == "cancelled"
    assert r.phases["later"].cause == causes["later"]


def test_callbacks_and_parallel_phases_do_not_deadlock(pipeline: orch.Pipeline) -> None:
    """jobs=4 phases that log a lot while on_event (holding the GIL) is slow and also
    touches a lock the phases use."""
    lock = threading.Lock()
    counter = {"n": 0}

    for i in range(40):

        def work(ctx: orch.Context) -> Dict[str, int]:
            for j in range(20):
                with lock:
                    counter["n"] += 1
                ctx.log(f"{ctx.phase_id} {j}")
            return {"n": 20}

        pipeline.phase(id=f"w{i}", needs=[f"w{i - 4}"] if i >= 4 else [])(work)

    seen: List[str] = []

    def on_event(e: orch.Event) -> None:
        with lock:
            seen.append(e.kind)
        if e.kind == "phase_started":
            time.sleep(0.001)

    r = pipeline.run(jobs=4, on_event=on_event)
    assert r.ok
    assert counter["n"] == 800
    assert seen.count("phase_output") == 800
    assert seen.count("phase_finished") == 40


def test_an_exception_in_on_event_stops_the_run(pipeline: orch.Pipeline) -> None:
    raised = threading.Event()
    seen: Dict[str, bool] = {}

    @pipeline.phase
    def s0(ctx: orch.Context) -> None:
        pass

    @pipeline.phase(needs=[s0])
    def s1(ctx: orch.Context) -> None:
        raised.wait(10)
        seen["cancelled"] = wait_until(lambda: ctx.cancelled)

    @pipeline.phase(needs=[s1])
    def s2(ctx: orch.Context) -> None:
        seen["s2"] = True

    def on_event(e: orch.Event) -> None:
        if e.kind == "phase_started" and e.phase == "s1":
            raised.set()
            raise RuntimeError("callback broke")

    with pytest.raises(RuntimeError, match="callback broke"):
        pipeline.run(on_event=on_event)
    # s1 was stopped: either before its function began, or it saw ctx.cancelled.
    assert seen in ({}, {"cancelled": True})


def test_keyboard_interrupt_cancels_the_run_cleanly(tmp_path: Path) -> None:
    p = orch.Pipeline("interrupt", jobs=4, base_dir=tmp_path)
    state: Dict[str, object] = {"stopped": []}

    @p.phase
    def trigger(ctx: orch.Context) -> None:
        # What Ctrl-C does: a SIGINT for the main thread, which waits in run().
        _thread.interrupt_main()
        deadline = time.monotonic() + 20
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        state["trigger_saw_cancel"] = ctx.cancelled

    @p.phase
    def busy(ctx: orch.Context) -> None:
        try:
            deadline = time.monotonic() + 20
            while not ctx.cancelled and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            state["stopped"].append("busy")  # type: ignore[union-attr]

    @p.phase(needs=[trigger, busy])
    def never(ctx: orch.Context) -> None:
        state["never"] = True

    p.command("sleeper", ["sleep", "31.25"])

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as e:
        p.run()
    assert time.monotonic() - started < 15
    result = e.value.result  # type: ignore[attr-defined]
    assert isinstance(result, orch.RunResult)
    assert result.status == "cancelled"
    assert state["trigger_saw_cancel"] is True
    assert state["stopped"] == ["busy"]
    assert "never" not in state
    assert result.phases["never"].status == "cancelled"
    assert result.phases["sleeper"].status == "cancelled"
    assert result.phases["sleeper"].started_at is not None  # it was running
    assert (Path(result.run_dir) / "run.json").exists()
    # Nothing of the run is left: the Python phases returned (above), the process is gone.
    assert wait_until(lambda: not processes_with_args("sleep", "31.25"))


def processes_with_args(*argv: str) -> List[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if [a.decode(errors="replace") for a in args[: len(argv)]] == list(argv):
                found.append(int(entry.name))
    return found


def test_a_phase_ignoring_cancellation_is_stopped_after_the_grace(tmp_path: Path) -> None:
    p = orch.Pipeline("stubborn", base_dir=tmp_path)
    state: Dict[str, bool] = {}

    @p.phase
    def stubborn(ctx: orch.Context) -> None:
        _thread.interrupt_main()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # ignores ctx.cancelled
                time.sleep(0.01)
        except orch.PhaseCancelled:
            state["cancelled"] = True
            raise

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        p.run(grace=0.3)
    assert time.monotonic() - started < 10
    assert state == {"cancelled": True}


def test_keyboard_interrupt_raised_in_a_phase_interrupts_the_run(pipeline: orch.Pipeline) -> None:
    @pipeline.phase
    def bail(ctx: orch.Context) -> None:
        raise KeyboardInterrupt

    @pipeline.phase(needs=[bail])
    def after(ctx: orch.Context) -> None:
        pass

    with pytest.raises(KeyboardInterrupt) as e:
        pipeline.run()
    result = e.value.result  # type: ignore[attr-defined]
    assert result.status == "cancelled"
    assert result.phases["bail"].status == "cancelled"
    assert "KeyboardInterrupt" in result.phases["bail"].log_text()


def test_results(pipeline: orch.Pipeline) -> None:
    @pipeline.phase(tags=["unit"], description="the first phase")
    def one(ctx: orch.Context) -> Dict[str, str]:
        time.sleep(0.02)
        return {"k": "v"}

    @pipeline.phase(needs=[one], allow_failure=True)
    def two(ctx: orch.Context) -> None:
        raise RuntimeError("tolerated")

    r = pipeline.run()
    assert r.ok and r.status == "succeeded"
    assert r.pipeline == "test"
    assert r.duration is not None and r.duration >= 0.02
    assert r.started_at and r.finished_at
    one_r = r.phases["one"]
    assert one_r.id == "one" and one_r.ok
    assert one_r.duration is not None and one_r.duration >= 0.02
    assert one_r.tags == ["unit"]
    assert r.phases["two"].allowed_failure and r.phases["two"].status == "failed"
    assert r.phases["two"].needs == ["one"]
    assert r.failed == []
    assert r.counts == {"succeeded": 1, "failed": 1}
    d = r.to_dict()
    assert d["phases"]["one"]["description"] == "the first phase"
    assert d["run_id"] == r.run_id
    assert '"status": "succeeded"' in r.to_json()
    assert "\n" not in r.to_json(indent=None)
    assert repr(r).startswith("<orch.RunResult test succeeded")


def test_threads_of_a_run_are_released(pipeline: orch.Pipeline) -> None:
    for i in range(20):
        pipeline.phase(id=f"p{i}")(lambda ctx: None)
    before = threading.active_count()
    for _ in range(3):
        assert pipeline.run(jobs=4).ok
    # Blocking-pool threads are not Python threads; nothing accumulates per run.
    assert wait_until(lambda: threading.active_count() <= before + 1)
