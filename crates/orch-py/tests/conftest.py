"""Shared fixtures of the orch Python tests."""

from __future__ import annotations

import faulthandler
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import orch

# A deadlock must fail the suite, not hang it: dump every thread's stack and exit.
WATCHDOG_SECONDS = 120


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Writes a file under the test's directory (dedented) and returns its path."""

    def go(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return go


@pytest.fixture
def pipeline(tmp_path: Path) -> orch.Pipeline:
    """An empty code pipeline rooted in the test's directory."""
    return orch.Pipeline("test", jobs=4, base_dir=tmp_path)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Polls `cond` until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()
