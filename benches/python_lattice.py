"""Benchmark: 10,000 no-op Python phases in a layered lattice, orch against a
hand-written executor (graphlib.TopologicalSorter + concurrent.futures.ThreadPoolExecutor)
running the same DAG with the same number of threads.

    python benches/python_lattice.py [--layers 100] [--width 100] [--jobs 4] [--repeat 3]

The lattice: LAYERS layers of WIDTH phases; phase (l, i) needs (l-1, i) and
(l-1, (i+1) % WIDTH). Every phase is a Python function taking one argument and doing
nothing. Printed: the best and the median of REPEAT runs of each (define + run, and run
alone), and the ratios hand-written / orch (above 1: orch is faster), for orch as it
runs by default (run.json, logs and the journal written, the journal synced to disk) and
with `record=False` (in memory, like the hand-written executor). Exits 1 if orch with
`record=False` is not faster (best of REPEAT, total and run alone).
"""

from __future__ import annotations

import argparse
import functools
import os
import queue
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from graphlib import TopologicalSorter
from typing import Any, Callable, Dict, List, Tuple

import orch

Deps = Dict[str, List[str]]


def lattice(layers: int, width: int) -> Deps:
    deps: Deps = {}
    for layer in range(layers):
        for i in range(width):
            name = f"l{layer}_{i}"
            deps[name] = [] if layer == 0 else [f"l{layer - 1}_{i}", f"l{layer - 1}_{(i + 1) % width}"]
    return deps


def noop(ctx: Any) -> None:
    return None


def _report(done: "queue.SimpleQueue[Tuple[str, Future[None]]]", node: str, fut: "Future[None]") -> None:
    done.put((node, fut))


def run_hand_written(deps: Deps, jobs: int) -> Tuple[float, float]:
    """A careful hand-written executor: completions come back through a queue from
    done-callbacks (no O(pending) `wait`), the sorter feeds ready nodes to the pool."""
    t0 = time.perf_counter()
    functions: Dict[str, Callable[[Any], None]] = {name: noop for name in deps}
    sorter: TopologicalSorter[str] = TopologicalSorter(deps)
    sorter.prepare()
    t1 = time.perf_counter()
    done: "queue.SimpleQueue[Tuple[str, Future[None]]]" = queue.SimpleQueue()
    running = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while sorter.is_active():
            for node in sorter.get_ready():
                fut = pool.submit(functions[node], None)
                fut.add_done_callback(functools.partial(_report, done, node))
                running += 1
            node, fut = done.get()
            running -= 1
            fut.result()
            sorter.done(node)
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


def run_orch(deps: Deps, jobs: int, state_dir: str, record: bool = True) -> Tuple[float, float]:
    t0 = time.perf_counter()
    p = orch.Pipeline("lattice", jobs=jobs, base_dir=state_dir)
    for name, needs in deps.items():
        p.phase(id=name, needs=needs)(noop)
    p.validate()  # build the DAG before timing the run alone
    t1 = time.perf_counter()
    result = p.run(record=record)
    t2 = time.perf_counter()
    assert result.ok and len(result.phases) == len(deps), result
    return t2 - t0, t2 - t1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=100)
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    deps = lattice(args.layers, args.width)
    n = len(deps)
    print(
        f"lattice: {args.layers} layers x {args.width} = {n} no-op Python phases, 2 needs each; "
        f"jobs={args.jobs}; best of {args.repeat}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    hand: List[Tuple[float, float]] = []
    recorded: List[Tuple[float, float]] = []
    memory: List[Tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # Interleaved, so drift on a shared machine hits all three alike.
        for _ in range(args.repeat):
            hand.append(run_hand_written(deps, args.jobs))
            memory.append(run_orch(deps, args.jobs, tmp, record=False))
            recorded.append(run_orch(deps, args.jobs, tmp, record=True))

    def best(xs: List[Tuple[float, float]]) -> Tuple[float, float]:
        return min(t for t, _ in xs), min(r for _, r in xs)

    def median(xs: List[Tuple[float, float]]) -> Tuple[float, float]:
        return statistics.median(t for t, _ in xs), statistics.median(r for _, r in xs)

    journal = os.environ.get("ORCH_JOURNAL", "synced")
    rows = [
        ("hand-written (TopologicalSorter + ThreadPoolExecutor)", hand),
        ("orch, record=False (in memory)", memory),
        (f"orch, record=True (run.json, logs, journal {journal})", recorded),
    ]
    for name, xs in rows:
        total, run = best(xs)
        m_total, m_run = median(xs)
        print(
            f"{name:<56} total {total:.3f}s  run {run:.3f}s  ({run / n * 1e6:5.1f} us/phase)"
            f"  median total {m_total:.3f}s  run {m_run:.3f}s"
        )
    h, hm = best(hand), median(hand)
    for name, xs in rows[1:]:
        (total, run), (m_total, m_run) = best(xs), median(xs)
        print(
            f"ratio hand-written / {name}: total {h[0] / total:.2f}x  run {h[1] / run:.2f}x"
            f"  (medians: {hm[0] / m_total:.2f}x, {hm[1] / m_run:.2f}x)"
        )
    m_total, m_run = best(memory)
    return 0 if m_total < h[0] and m_run < h[1] else 1


if __name__ == "__main__":
    sys.exit(main())
