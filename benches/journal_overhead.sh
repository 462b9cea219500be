#!/usr/bin/env bash
# What the run journal costs: the same `orch run` of a layered lattice of N phases (layers
# of WIDTH, each phase needing two of the layer before, every phase `run = ["true"]`, JOBS
# at once) with the journal off, written without fsync, and durable (the default: group
# commit). Rounds alternate the modes so drift on a shared machine hits them alike.
# Prints the median wall time of each and the ratio durable/off.
#
#   benches/journal_overhead.sh            # N=10000 WIDTH=100 JOBS=2 ROUNDS=5
#   ORCH=path/to/orch benches/journal_overhead.sh   # a binary already built
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
WIDTH=${WIDTH:-100}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-5}

if [ -z "${ORCH:-}" ]; then
    cargo build -q --release -p orch-cli
    ORCH="$PWD/target/release/orch"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/orch-journal-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 - "$work" "$N" "$WIDTH" <<'PY'
import sys
work, n, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def needs(i):
    if i < width:
        return []
    start = i - i % width - width
    col = i % width
    return sorted({start + col, start + (col + 1) % width})
with open(f"{work}/orch.toml", "w") as f:
    f.write('[pipeline]\nname = "lattice"\n\n')
    for i in range(n):
        f.write(f'[phases.p{i}]\nrun = ["true"]\n')
        if needs(i):
            f.write("needs = [" + ", ".join(f'"p{k}"' for k in needs(i)) + "]\n")
PY

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A times
modes=(off nosync on)
for r in $(seq "$ROUNDS"); do
    for mode in "${modes[@]}"; do
        rm -rf "$work/.orch"
        t0=$(now)
        ORCH_JOURNAL=$mode "$ORCH" run -q --jobs "$JOBS" "$work/orch.toml" >/dev/null 2>&1
        t1=$(now)
        times[$mode]+="$(echo "$t1 - $t0" | bc -l) "
        if [ "$mode" = on ]; then
            jbytes=$(stat -c %s "$work"/.orch/runs/latest/journal)
        fi
    done
done
status=$(python3 -c "import json;print(json.load(open('$work/.orch/runs/latest/run.json'))['status'])")
echo "lattice: $N phases, width $WIDTH, jobs $JOBS, $ROUNDS rounds; last run $status"
echo "journal of a durable run: $jbytes bytes"
declare -A med
for mode in "${modes[@]}"; do
    med[$mode]=$(printf '%s\n' ${times[$mode]} | median)
    printf '%-7s median %.3fs  (%s)\n' "$mode" "${med[$mode]}" "${times[$mode]% }"
done
printf 'ratio nosync/off: %.3f\n' "$(echo "${med[nosync]} / ${med[off]}" | bc -l)"
printf 'ratio durable/off: %.3f\n' "$(echo "${med[on]} / ${med[off]}" | bc -l)"
