"""Every kind of the command line from Python: adapter kinds from files and from code,
mixed with Python phases, and resumed runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict

import pytest

import orch

Write = Callable[[str, str], Path]


def git_repo(path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    path.mkdir()
    run = lambda *a: subprocess.run(["git", *a], cwd=path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q", "-b", "main")
    run("config", "user.email", "t@example.invalid")
    run("config", "user.name", "t")
    (path / "README").write_text("hello\n")
    run("add", "README")
    run("commit", "-q", "-m", "first")
    return path


def head_of(repo: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_every_cli_kind_is_registered() -> None:
    kinds = {k: agent for k, agent, _ in orch.kinds()}
    for kind in [
        "command", "gate", "discover", "parity", "scaffold", "package", "package.verify",
        "docker.build", "docker.push", "docker.run", "git.inventory", "git.snapshot",
        "git.rollback", "git.tag", "git.changelog", "report", "quality", "secrets.scan",
        "system.check", "deploy", "deploy.rollback", "deploy.audit", "http.check",
    ]:
        assert kind in kinds, kind
    assert kinds["docker.build"] == "docker" and kinds["git.tag"] == "git"


def test_docker_and_git_kinds_load_from_files(write: Write) -> None:
    path = write(
        "orch.toml",
        """
        [pipeline]
        name = "kinds"

        [phases.image]
        kind = "docker.build"
        with = { context = ".", tags = ["app:1"] }

        [phases.tag]
        kind = "git.tag"
        with = { tag = "v1" }
        needs = ["image"]
        """,
    )
    p = orch.Pipeline.load(path)
    plan = p.plan()
    agents = {ph["id"]: ph["agent"] for wave in plan.waves for ph in wave}
    assert agents == {"image": "docker", "tag": "git"}
    # Adapter settings are checked at load time, with positions.
    bad = write(
        "bad.toml",
        """
        [pipeline]
        name = "bad"
        [phases.image]
        kind = "docker.build"
        with = { contxt = "." }
        """,
    )
    with pytest.raises(orch.ValidationError) as e:
        orch.Pipeline.load(bad)
    assert e.value.line == 5 and "contxt" in e.value.problems[0].message


def test_git_phase_from_a_file_feeds_a_python_phase(write: Write, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    path = write(
        "orch.toml",
        f"""
        [pipeline]
        name = "git-mixed"
        [phases.inventory]
        kind = "git.inventory"
        with = {{ repo = "{repo}" }}
        """,
    )
    p = orch.Pipeline.load(path)

    @p.phase(needs=["inventory"])
    def report(ctx: orch.Context) -> Dict[str, str]:
        inv = ctx.outputs["inventory"]
        return {"head": inv["head"], "branch": inv["branch"]}

    r = p.run()
    assert r.phases["inventory"].kind == "git.inventory"
    assert r.phases["report"].outputs == {"head": head_of(repo), "branch": "main"}
    assert p.plan().waves[0][0]["agent"] == "git"


def test_adapter_kinds_from_code(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "app.txt").write_text("payload\n")
    p = orch.Pipeline("code-kinds", base_dir=tmp_path)
    p.add_phase("inventory", "git.inventory", with_={"repo": str(repo)})
    p.add_phase("pkg", "package", with_={"paths": ["dist"], "output": "out/app.tar.gz"})

    @p.phase(needs=["inventory", "pkg"])
    def summary(ctx: orch.Context) -> Dict[str, str]:
        return {"head": ctx.outputs["inventory"]["head"], "sha": ctx.outputs["pkg"]["sha256"]}

    r = p.run()
    assert r.phases["summary"].outputs["head"] == head_of(repo)
    assert len(r.phases["summary"].outputs["sha"]) == 64
    assert (tmp_path / "out" / "app.tar.gz").exists()
    with pytest.raises(orch.ValidationError, match="pkg2"):
        p.add_phase("pkg2", "package", with_={"pathz": ["dist"]})


def test_resume_skips_what_succeeded(tmp_path: Path) -> None:
    p = orch.Pipeline("resume", base_dir=tmp_path)
    flag = tmp_path / "fixed"
    calls: Dict[str, int] = {"build": 0, "deploy": 0}

    @p.phase
    def build(ctx: orch.Context) -> Dict[str, str]:
        calls["build"] += 1
        return {"artifact": "app.tgz"}

    @p.phase(needs=[build])
    def deploy(ctx: orch.Context) -> Dict[str, str]:
        calls["deploy"] += 1
        if not flag.exists():
            raise RuntimeError("target down")
        return {"deployed": ctx.outputs["build"]["artifact"]}

    first = p.run(check=False)
    assert first.status == "failed"
    flag.write_text("")
    second = p.run(resume=True)
    assert second.ok
    assert calls == {"build": 1, "deploy": 2}
    assert second.phases["build"].status == "skipped"
    assert first.run_id in (second.phases["build"].reason or "")
    assert second.phases["deploy"].outputs == {"deployed": "app.tgz"}
    with pytest.raises(orch.ValidationError, match="resume"):
        p.run(resume=3)  # type: ignore[arg-type]
