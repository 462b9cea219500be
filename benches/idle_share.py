#!/usr/bin/env python3
"""Where the wall time of a process DAG goes: each tool run alternately on one directory.

For every run: the wall time, the tool's own CPU (its process alone, read while it is a
zombie), its voluntary and involuntary context switches, and each CPU's idle share during
the run (from /proc/stat). With JOBS job slots on as many cores, an idle CPU means a slot
waited between one process's exit and the next one's start; few involuntary switches with
one CPU mostly idle means the kernel kept the tool and its children on one CPU.

    python3 benches/idle_share.py DIR ROUNDS TOOL...   # DIR holds orch.toml and build.ninja
    python3 benches/idle_share.py /tmp/lattice 4 target/release/orch ninja

`benches/delivery_speed.sh` writes such directories (its shapes); run this on a quiet
machine (`benches/quiet.sh`), and print the load beside the figures (each line has it).
"""
import os
import shutil
import sys
import time

d, rounds, tools = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
hz = os.sysconf("SC_CLK_TCK")


def cpus():
    """Per CPU: (idle + iowait jiffies, all jiffies)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                x = line.split()
                out[x[0]] = (int(x[4]) + int(x[5]), sum(int(v) for v in x[1:8]))
    return out


for _ in range(rounds):
    for tool in tools:
        if tool == "ninja":
            argv = ["ninja", "-j2"]
            for name in (".ninja_log", ".ninja_deps"):
                try:
                    os.unlink(os.path.join(d, name))
                except FileNotFoundError:
                    pass
        else:
            shutil.rmtree(os.path.join(d, ".orch"), ignore_errors=True)
            argv = [tool, "run", "-q", "--jobs", "2", "orch.toml"]
        c0, t0 = cpus(), time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                os.chdir(d)
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        t1, c1 = time.monotonic(), cpus()
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / hz
        _, status, ru = os.wait4(pid, 0)
        idle = " ".join(
            f"{k}:{100 * (c1[k][0] - c0[k][0]) / max(1, c1[k][1] - c0[k][1]):.0f}%" for k in sorted(c0)
        )
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print(
            f"{os.path.basename(tool):12} wall {t1 - t0:6.3f} own {own:5.2f} vcsw {ru.ru_nvcsw:6} "
            f"ivcsw {ru.ru_nivcsw:6} idle {idle} exit {os.waitstatus_to_exitcode(status)} load {load}",
            flush=True,
        )
