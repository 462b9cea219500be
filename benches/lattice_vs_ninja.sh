#!/usr/bin/env bash
# `orch run` against `ninja` on the same DAG: a layered lattice of N phases (layers of WIDTH,
# each phase needing two of the layer before), every phase running `true`, JOBS at once.
# Prints the median wall time of each over ROUNDS runs and the ratio orch/ninja.
#
#   benches/lattice_vs_ninja.sh            # N=10000 WIDTH=100 JOBS=2 ROUNDS=5
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
WIDTH=${WIDTH:-100}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-5}

if ! command -v ninja >/dev/null; then
    [ -e /tmp/.orch-apt-updated ] || { apt-get update -qq && touch /tmp/.orch-apt-updated; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ninja-build >/dev/null
fi
cargo build -q --release -p orch-cli
ORCH="$PWD/target/release/orch"

work=$(mktemp -d)
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
with open(f"{work}/build.ninja", "w") as f:
    f.write("rule run\n  command = true\n\n")
    for i in range(n):
        deps = " ".join(f"p{k}" for k in needs(i))
        f.write(f"build p{i}: run" + (f" || {deps}" if deps else "") + "\n")
PY

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

orch_times=()
ninja_times=()
for r in $(seq "$ROUNDS"); do
    rm -rf "$work/.orch"
    t0=$(now); "$ORCH" run -q --jobs "$JOBS" "$work/orch.toml" >/dev/null 2>&1; t1=$(now)
    orch_times+=("$(echo "$t1 - $t0" | bc -l)")
    # Outputs are never created, so ninja runs every edge each time.
    t0=$(now); ninja -C "$work" -j "$JOBS" >/dev/null; t1=$(now)
    ninja_times+=("$(echo "$t1 - $t0" | bc -l)")
done
status=$(python3 -c "import json;print(json.load(open('$work/.orch/runs/latest/run.json'))['status'])")
count=$(python3 -c "import json;r=json.load(open('$work/.orch/runs/latest/run.json'));print(sum(p['status']=='succeeded' for p in r['phases'].values()))")
o=$(printf '%s\n' "${orch_times[@]}" | median)
n=$(printf '%s\n' "${ninja_times[@]}" | median)
echo "lattice: $N phases, width $WIDTH, jobs $JOBS, $ROUNDS rounds"
echo "orch run: $status, $count phases succeeded"
printf 'orch  median %.3fs\nninja median %.3fs\nratio orch/ninja: %.2f\n' "$o" "$n" "$(echo "$o / $n" | bc -l)"
