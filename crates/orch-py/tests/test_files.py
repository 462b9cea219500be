"""Pipelines from files: loading, running, vars, plans and validation errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, List

import pytest

import orch

Write = Callable[[str, str], Path]


def test_load_and_run_command_phases(write: Write) -> None:
    path = write(
        "orch.toml",
        """
        [pipeline]
        name = "files"
        jobs = 2

        [vars]
        version = "1.2.3"

        [phases.build]
        run = "echo building ${{ vars.version }}; echo artifact=app-${{ vars.version }}.tgz >> $ORCH_OUTPUT"

        [phases.test]
        run = ["sh", "-c", "echo testing $0", "${{ phases.build.outputs.artifact }}"]
        needs = ["build"]
        """,
    )
    p = orch.Pipeline.load(path)
    assert p.name == "files"
    assert p.phase_ids == ["build", "test"]
    assert p.source == str(path)
    assert p.vars == {"version": "1.2.3"}
    assert "build" in p and "nope" not in p

    result = p.run()
    assert result.status == "succeeded" and result.ok
    assert result.phases["build"].outputs == {"artifact": "app-1.2.3.tgz"}
    assert result.phases["build"].exit_code == 0
    assert "testing app-1.2.3.tgz" in result.phases["test"].log_text()
    run_json = Path(result.run_dir) / "run.json"
    on_disk = json.loads(run_json.read_text())
    assert on_disk["run_id"] == result.run_id
    assert on_disk["phases"]["build"]["outputs"] == {"artifact": "app-1.2.3.tgz"}
    assert result.to_dict()["phases"]["test"]["status"] == "succeeded"
    assert json.loads(result.to_json())["status"] == "succeeded"


def test_vars_override_at_load_and_at_run(write: Write) -> None:
    path = write(
        "orch.toml",
        """
        [pipeline]
        name = "vars"
        [vars]
        who = "world"
        [phases.hello]
        run = "echo greeting=hello-${{ vars.who }} >> $ORCH_OUTPUT"
        """,
    )
    p = orch.Pipeline.load(path, vars={"who": "load"})
    assert p.run().phases["hello"].outputs["greeting"] == "hello-load"
    assert p.run(vars={"who": "run"}).phases["hello"].outputs["greeting"] == "hello-run"
    # The override is for that run only.
    assert p.run().phases["hello"].outputs["greeting"] == "hello-load"
    with pytest.raises(orch.ValidationError) as e:
        p.run(vars={"whom": "x"})
    assert "whom" in str(e.value) and "did you mean `who`" in str(e.value)


def test_validation_errors_carry_every_problem_with_positions(write: Write) -> None:
    path = write(
        "orch.toml",
        """
        [pipeline]
        name = "broken"

        [phases.build]
        kind = "comand"

        [phases.test]
        run = "true"
        needs = ["biuld"]
        """,
    )
    with pytest.raises(orch.ValidationError) as e:
        orch.Pipeline.load(path)
    err = e.value
    assert isinstance(err, orch.OrchError)
    assert err.file == str(path)
    assert len(err.problems) == 2
    kind, need = err.problems
    assert (kind.line, kind.column) == (5, 8)
    assert "unknown kind `comand`" in kind.message
    assert kind.help == "did you mean `command`?"
    assert (need.line, need.column) == (9, 10)
    assert "needs `biuld`" in need.message
    assert need.help == "did you mean `build`?"
    # The first problem locates the error as a whole; the text renders like the CLI.
    assert (err.line, err.column) == (5, 8)
    assert "--> " in str(err) and "^" in str(err)


def test_syntax_error_is_located(write: Write) -> None:
    path = write("orch.toml", '[pipeline]\nname = "x"\n[phases.a]\nrun = \n')
    with pytest.raises(orch.ValidationError) as e:
        orch.Pipeline.load(path)
    assert e.value.line == 4
    assert e.value.problems


def test_missing_file_is_a_validation_error(tmp_path: Path) -> None:
    with pytest.raises(orch.ValidationError) as e:
        orch.Pipeline.load(tmp_path / "nope.toml")
    assert "cannot read pipeline file" in str(e.value)
    assert e.value.file == str(tmp_path / "nope.toml")


def test_plan_and_dry_run_run_nothing(write: Write, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write(
        "orch.toml",
        f"""
        [pipeline]
        name = "plan"
        [phases.a]
        run = "touch {marker}"
        tags = ["t"]
        [phases.b]
        run = "true"
        needs = ["a"]
        [phases.c]
        run = "true"
        """,
    )
    p = orch.Pipeline.load(path)
    plan = p.plan()
    assert plan.phases == ["a", "c", "b"]
    assert [[ph["id"] for ph in w] for w in plan.waves] == [["a", "c"], ["b"]]
    assert "plan for `plan`" in str(plan)
    assert plan.to_dict()["pipeline"] == "plan"
    dry = p.run(dry_run=True, only=["b"])
    assert isinstance(dry, orch.Plan)
    assert dry.phases == ["a", "b"]
    assert dry.not_selected == [("c", "not selected by --only")]
    assert not marker.exists()


def test_selection(write: Write) -> None:
    path = write(
        "orch.toml",
        """
        [pipeline]
        name = "sel"
        [phases.a]
        run = "true"
        [phases.b]
        run = "true"
        needs = ["a"]
        tags = ["slow"]
        [phases.c]
        run = "true"
        needs = ["b"]
        """,
    )
    p = orch.Pipeline.load(path)
    r = p.run(only="b")
    assert [r.phases[x].status for x in "abc"] == ["succeeded", "succeeded", "skipped"]
    r = p.run(skip="tag:slow", keep_going=True, check=False)
    assert r.phases["b"].status == "skipped"
    r = p.run(from_="b")
    assert [r.phases[x].status for x in "abc"] == ["skipped", "succeeded", "succeeded"]
    with pytest.raises(orch.RunError) as e:
        p.run(only="bb")
    assert "no phase `bb`" in str(e.value)


def test_kinds_lists_the_registry() -> None:
    names = {k for k, _, _ in orch.kinds()}
    assert {"command", "gate"} <= names


def test_phases_added_in_code_take_the_files_defaults(write: Write) -> None:
    path = write(
        "orch.toml",
        """
        [pipeline]
        name = "defaults"

        [defaults]
        timeout = "7s"
        retries = 2
        backoff = { initial = "10ms", factor = 1.0, max = "10ms" }
        env = { STAGE = "ci" }

        [phases.build]
        run = "true"
        """,
    )
    p = orch.Pipeline.load(path)
    calls: List[int] = []

    @p.phase(needs=["build"])
    def flaky(ctx: orch.Context) -> None:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")

    @p.phase(retries=0, timeout=3)
    def strict(ctx: orch.Context) -> None:
        pass

    p.command("show", 'echo "stage=$STAGE other=$OTHER"', env={"OTHER": "x"})
    p.command("own", 'echo "stage=$STAGE"', env={"STAGE": "mine"}, retries=1)

    waves = {ph["id"]: ph for wave in p.plan().waves for ph in wave}
    assert (waves["flaky"]["timeout"], waves["flaky"]["retries"]) == ("7s", 2)
    assert (waves["strict"]["timeout"], waves["strict"]["retries"]) == ("3s", 0)
    assert (waves["show"]["timeout"], waves["show"]["retries"]) == ("7s", 2)
    assert waves["own"]["retries"] == 1

    r = p.run()
    assert r.phases["flaky"].status == "succeeded" and r.phases["flaky"].attempts == 3
    assert calls == [1, 2, 3]
    assert "stage=ci other=x" in r.phases["show"].log_text()
    assert "stage=mine" in r.phases["own"].log_text()


def test_phases_added_in_code_take_the_files_agent_as_its_phases_do(write: Write) -> None:
    path = write(
        "orch.toml",
        """
        [pipeline]
        name = "agents"

        [agents.serial]
        type = "local"
        capacity = 1

        [defaults]
        agent = "serial"

        [phases.build]
        run = "true"
        """,
    )
    p = orch.Pipeline.load(path)

    @p.phase(needs=["build"])
    def check(ctx: orch.Context) -> None:
        pass

    p.command("show", "true")
    waves = {ph["id"]: ph["agent"] for wave in p.plan().waves for ph in wave}
    # Kinds follow `[defaults] agent` wherever they were declared; a Python function runs
    # in this process, on the local agent.
    assert waves == {"build": "serial", "show": "serial", "check": "local"}
