#!/usr/bin/env bash
# The time a run's reports take: `orch run -q --jobs JOBS` of an N-phase lattice of `true`
# (layers of WIDTH, each phase needing two of the layer before, as in delivery_speed.sh),
# and for each round the run's wall time, the time from the end of its last phase to the
# exit of orch (the record, `report.md`, `junit.xml`, `report.html`, the summary) and their
# ratio, with orch's peak RSS and the load beside them. Then, for the last run, the time
# `orch report` takes for each format (it reads `run.json` first) and the size of each file
# the run wrote.
#
# Times only mean something on a quiet machine: before the series the script waits until
# the 1-minute load average is under MAX_LOAD and no compiler or build tool runs (FORCE=1
# skips the wait, for a smoke run).
#
#   benches/reports.sh                          # N=10000 JOBS=2 ROUNDS=5
#   FORCE=1 N=500 ROUNDS=1 benches/reports.sh   # a smoke run
#   ORCH=path/to/orch benches/reports.sh        # a binary already built
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
WIDTH=${WIDTH:-100}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-5}
FORCE=${FORCE:-0}
MAX_LOAD=${MAX_LOAD:-0.3}
MAX_WAIT=${MAX_WAIT:-3600}

if [ -z "${ORCH:-}" ]; then
    cargo build -q --release -p orch-cli
    ORCH="$PWD/target/release/orch"
fi
[ -x "$ORCH" ] || { echo "error: no orch at $ORCH" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/orch-reports.XXXXXX")
trap 'rm -rf "$work"' EXIT

python3 - "$work" "$N" "$WIDTH" <<'PY'
import sys
work, n, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(f"{work}/orch.toml", "w") as f:
    f.write('[pipeline]\nname = "lattice"\n\n')
    for i in range(n):
        f.write(f'[phases.p{i}]\nrun = ["true"]\n')
        if i >= width:
            start, col = i - i % width - width, i % width
            deps = sorted({start + col, start + (col + 1) % width})
            f.write("needs = [" + ", ".join(f'"p{k}"' for k in deps) + "]\n")
PY

# One run: wall seconds, seconds from the last phase's end to orch's exit, peak RSS (KiB).
cat >"$work/measure.py" <<'PY'
import datetime, json, os, sys, time
cwd, argv = sys.argv[1], sys.argv[2:]
t0 = time.time()
pid = os.fork()
if pid == 0:
    try:
        os.chdir(cwd)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
t1 = time.time()
code = os.waitstatus_to_exitcode(status)
if code != 0:
    sys.exit(f"error: orch exited {code}")
record = json.load(open(f"{cwd}/.orch/runs/latest/run.json"))
def at(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
last = max(at(p["finished_at"]) for p in record["phases"].values() if p.get("finished_at"))
print(f"{t1 - t0:.4f} {t1 - last:.4f} {ru.ru_maxrss}")
PY

. benches/quiet.sh

echo "reports: $N-phase lattice of \`true\`, jobs $JOBS, $ROUNDS round(s)"
echo "orch: $ORCH ($("$ORCH" --version 2>/dev/null || echo '?')); cores: $(nproc)"
[ "$FORCE" = 1 ] && echo "FORCE=1: no wait for a quiet machine; times are not figures"
wait_quiet
: >"$work/rounds"
for round in $(seq "$ROUNDS"); do
    rm -rf "$work/.orch"
    read -r wall after rss <<<"$(python3 "$work/measure.py" "$work" "$ORCH" run -q --jobs "$JOBS" orch.toml)"
    echo "$wall $after $rss" >>"$work/rounds"
    awk -v w="$wall" -v a="$after" -v r="$rss" -v n="$round" -v l="$(load1)" 'BEGIN {
        printf "round %d: wall %.3fs, last phase to exit %.3fs (%.1f%% of the wall), peak RSS %.1f MB, load %s\n",
            n, w, a, 100 * a / w, r / 1024, l }'
done
wall=$(awk '{print $1}' "$work/rounds" | median)
after=$(awk '{print $2}' "$work/rounds" | median)
awk -v w="$wall" -v a="$after" -v l="$(load1)" 'BEGIN {
    printf "median: wall %.3fs, last phase to exit %.3fs: %.1f%% of the wall (target <= 10%%), load %s\n",
        w, a, 100 * a / w, l }'

echo
echo "files the run wrote (run directory):"
(cd "$work/.orch/runs/latest" && for f in *; do
    [ -f "$f" ] && awk -v f="$f" -v s="$(stat -c %s "$f")" 'BEGIN { printf "  %-24s %8.1f KiB\n", f, s / 1024 }'
done)
echo "\`orch report\` of that run, per format (reading run.json included; median of 3):"
for format in md junit html json; do
    for _ in 1 2 3; do
        python3 -c '
import subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"{time.monotonic() - t:.4f}")' "$ORCH" report -f "$work/orch.toml" --format "$format" -o "$work/out.$format"
    done | median | awk -v f="$format" '{ printf "  %-6s %.3fs\n", f, $1 }'
done
