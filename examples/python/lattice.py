"""A pipeline built entirely in code: a small lattice of Python phases run in parallel.

    python examples/python/lattice.py [LAYERS] [WIDTH]
"""

from __future__ import annotations

import sys
import tempfile
import time
from typing import Dict

import orch


def build(layers: int, width: int, base_dir: str) -> orch.Pipeline:
    p = orch.Pipeline("lattice", jobs=4, base_dir=base_dir)

    def work(ctx: orch.Context) -> Dict[str, int]:
        # Each phase sums what its needs produced.
        total = sum(int(out["total"]) for out in ctx.outputs.values()) if ctx.outputs else 1
        return {"total": total}

    for layer in range(layers):
        for i in range(width):
            needs = [] if layer == 0 else [f"l{layer - 1}_{i}", f"l{layer - 1}_{(i + 1) % width}"]
            p.phase(id=f"l{layer}_{i}", needs=needs)(work)
    return p


def main() -> int:
    layers = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    with tempfile.TemporaryDirectory() as tmp:
        p = build(layers, width, tmp)
        started = time.perf_counter()
        result = p.run()
        elapsed = time.perf_counter() - started
    last = result.phases[f"l{layers - 1}_0"].outputs["total"]
    print(f"{len(result.phases)} phases {result.status} in {elapsed:.3f}s; last total {last}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
