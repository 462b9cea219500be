"""A release pipeline mixing a pipeline file's phases with Python phases.

    python examples/python/release.py

It loads `release.toml` (command phases: build and lint), adds Python phases that
read the build's outputs, publishes the release notes with an `async def` phase, and
prints events as they happen. Run it with `--fail` to see a failure, its
traceback in the phase log, and `PipelineFailed`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Dict

import orch

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    pipeline = orch.Pipeline.load(HERE / "release.toml", vars={"version": "1.4.0"})
    fail = "--fail" in argv

    @pipeline.phase(needs=["build"], retries=1, backoff=0.1, timeout="30s", tags=["check"])
    def checksum(ctx: orch.Context) -> Dict[str, str]:
        """Checks the artifact the build produced."""
        artifact = ctx.outputs["build"]["artifact"]
        ctx.logger.info("checking %s (attempt %d)", artifact, ctx.attempt)
        if fail:
            raise RuntimeError(f"{artifact} is corrupt")
        return {"sha256": f"sha256-of-{artifact}", "size": str(len(artifact))}

    @pipeline.phase(needs=[checksum, "lint"])
    async def notes(ctx: orch.Context) -> Dict[str, object]:
        """Writes the release notes."""
        await asyncio.sleep(0.01)  # an async HTTP call would go here
        path = Path(ctx.run_dir) / "NOTES.md"
        path.write_text(f"# {ctx.vars['version']}\n\n{ctx.outputs['checksum']['sha256']}\n")
        return {"path": str(path), "sections": ["changes", "checksums"]}

    pipeline.command(
        "announce",
        "echo announcing ${{ vars.version }} from ${{ phases.notes.outputs.path }}",
        needs=[notes],
    )

    print(pipeline.plan())

    def on_event(event: orch.Event) -> None:
        if event.kind == "phase_finished":
            print(f"  {event.phase}: {event.status} in {event.duration or 0:.3f}s")
        elif event.kind == "phase_output":
            print(f"  {event.phase} | {event.line}")

    try:
        result = pipeline.run(jobs=4, on_event=on_event)
    except orch.PipelineFailed as e:
        print(f"failed: {e}")
        print(e.result.phases["checksum"].log_text())
        return 1
    print(json.dumps(result.phases["notes"].outputs, indent=2))
    print(f"{result.status}: run {result.run_id} in {result.duration}s, record in {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
