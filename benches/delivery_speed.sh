#!/usr/bin/env bash
# Process phases side by side: `make`, `ninja`, a hand-written tokio runner
# (crates/orch-core/benches/handwritten_runner.rs) and `orch run` (journal on, the default;
# reports written, as a user gets them) run the same DAG of N processes that run `true`,
# JOBS at once. Shapes: a lattice (layers of WIDTH, each node needing two of the layer
# before), a chain (each node needs the one before) and a fan-out (one root, every other
# node needs it).
#
# For each tool and shape: the median wall time over ROUNDS rounds and its ratio to ninja;
# the tool's own CPU per node (user + system of the tool's process alone, read from
# /proc/PID/stat while it is a zombie, so the processes it started and reaped are not
# counted: they are in its cutime/cstime); its peak RSS (ru_maxrss, from wait4).
#
# Wall ratios only mean something on a quiet machine: before each shape's series the script
# waits until the 1-minute load average is under MAX_LOAD and no compiler or build tool
# runs (FORCE=1 skips the wait, for a smoke run), and it prints the load beside each figure.
#
#   benches/delivery_speed.sh                                  # N=10000 JOBS=2 ROUNDS=5
#   FORCE=1 N=300 ROUNDS=1 benches/delivery_speed.sh           # a smoke run
#   SHAPES=lattice N=100000 ROUNDS=1 benches/delivery_speed.sh # peak RSS at 100k
#   ORCH=path/to/orch RUNNER=path/to/handwritten_runner ...    # binaries already built
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
WIDTH=${WIDTH:-100}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-5}
SHAPES=${SHAPES:-lattice chain fanout}
FORCE=${FORCE:-0}
MAX_LOAD=${MAX_LOAD:-0.3}
# Seconds to wait for a quiet machine before giving up (no figure is better than a wrong one).
MAX_WAIT=${MAX_WAIT:-3600}

for tool in ninja make; do
    if ! command -v "$tool" >/dev/null; then
        [ -e /tmp/.orch-apt-updated ] || { apt-get update -qq && touch /tmp/.orch-apt-updated; }
        pkg=$tool
        [ "$tool" = ninja ] && pkg=ninja-build
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
    fi
done
if [ -z "${ORCH:-}" ]; then
    cargo build -q --release -p orch-cli
    ORCH="$PWD/target/release/orch"
fi
if [ -z "${RUNNER:-}" ]; then
    RUNNER=$(cargo bench -q -p orch-core --bench handwritten_runner --no-run \
        --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == "handwritten_runner":
        print(m["executable"])')
fi
[ -x "$ORCH" ] && [ -x "$RUNNER" ] || { echo "error: no orch ($ORCH) or runner ($RUNNER)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/orch-delivery-speed.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The same DAG in the four tools' languages.
python3 - "$work" "$N" "$WIDTH" "$SHAPES" <<'PY'
import os, sys
work, n, width, shapes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
def needs(shape, i):
    if shape == "chain":
        return [i - 1] if i else []
    if shape == "fanout":
        return [0] if i else []
    if i < width:
        return []
    start = i - i % width - width
    col = i % width
    return sorted({start + col, start + (col + 1) % width})
for shape in shapes:
    d = f"{work}/{shape}"
    os.makedirs(d)
    deps = [needs(shape, i) for i in range(n)]
    with open(f"{d}/orch.toml", "w") as f:
        f.write(f'[pipeline]\nname = "{shape}"\n\n')
        for i in range(n):
            f.write(f'[phases.p{i}]\nrun = ["true"]\n')
            if deps[i]:
                f.write("needs = [" + ", ".join(f'"p{k}"' for k in deps[i]) + "]\n")
    with open(f"{d}/build.ninja", "w") as f:
        f.write("rule run\n  command = true\n\n")
        for i in range(n):
            # Order-only inputs and outputs never made: every edge runs each time.
            extra = " || " + " ".join(f"p{k}" for k in deps[i]) if deps[i] else ""
            f.write(f"build p{i}: run{extra}\n")
    with open(f"{d}/Makefile", "w") as f:
        names = " ".join(f"p{i}" for i in range(n))
        f.write(f".PHONY: all {names}\nall: {names}\n")
        for i in range(n):
            f.write(f"p{i}: " + " ".join(f"p{k}" for k in deps[i]) + "\n\t@true\n")
    with open(f"{d}/dag.txt", "w") as f:
        for i in range(n):
            f.write(" ".join(map(str, deps[i])) + "\n")
PY

# Runs a command in a directory and prints: wall seconds, own CPU seconds (the process
# alone), its children's CPU seconds, peak RSS in KiB, exit code.
cat >"$work/measure.py" <<'PY'
import os, sys, time
cwd, log, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
hz = os.sysconf("SC_CLK_TCK")
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.chdir(cwd)
        null = os.open(os.devnull, os.O_RDWR)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
# Waited for but not reaped: /proc/PID/stat still holds its times, its own (utime, stime)
# apart from those of the children it reaped (cutime, cstime).
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
t1 = time.monotonic()
with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
_, status, ru = os.wait4(pid, 0)
print(f"{t1 - t0:.4f} {(utime + stime) / hz:.3f} {(cutime + cstime) / hz:.3f} "
      f"{ru.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
PY

. benches/quiet.sh
max() { sort -g | tail -1; }

TOOLS="make ninja tokio orch"
run_tool() { # tool shape round -> "wall own children rss exit"
    local tool=$1 d="$work/$2"
    case $tool in
        make) python3 "$work/measure.py" "$d" "$d/make.log" make -s -j "$JOBS" -f Makefile ;;
        ninja)
            rm -f "$d/.ninja_log" "$d/.ninja_deps"
            python3 "$work/measure.py" "$d" "$d/ninja.log" ninja -j "$JOBS" ;;
        tokio) python3 "$work/measure.py" "$d" "$d/tokio.log" "$RUNNER" "$d/dag.txt" "$JOBS" ;;
        orch)
            rm -rf "$d/.orch"
            python3 "$work/measure.py" "$d" "$d/orch.log" "$ORCH" run -q --jobs "$JOBS" orch.toml ;;
    esac
}

echo "delivery speed: $N nodes running \`true\`, jobs $JOBS, $ROUNDS round(s), shapes: $SHAPES"
echo "orch: $ORCH ($("$ORCH" --version 2>/dev/null || echo '?'))"
echo "make: $(make --version | head -1); ninja: $(ninja --version); cores: $(nproc); kernel: $(uname -r)"
[ "$FORCE" = 1 ] && echo "FORCE=1: no wait for a quiet machine; wall ratios are not figures"
table=()
for shape in $SHAPES; do
    wait_quiet
    before=$(load1)
    for tool in $TOOLS; do : >"$work/$shape.$tool"; done
    for _ in $(seq "$ROUNDS"); do
        for tool in $TOOLS; do
            line=$(run_tool "$tool" "$shape")
            read -r _ _ _ _ code <<<"$line"
            if [ "$code" != 0 ]; then
                echo "error: $tool on $shape exited $code:" >&2
                tail -5 "$work/$shape/$tool.log" >&2
                exit 1
            fi
            echo "$line" >>"$work/$shape.$tool"
        done
    done
    after=$(load1)
    status=$(python3 -c "
import json
r = json.load(open('$work/$shape/.orch/runs/latest/run.json'))
ok = sum(p['status'] == 'succeeded' for p in r['phases'].values())
print(r['status'], ok)")
    [ "$status" = "succeeded $N" ] || { echo "error: orch on $shape: $status" >&2; exit 1; }
    declare -A wall own rss
    for tool in $TOOLS; do
        f="$work/$shape.$tool"
        wall[$tool]=$(awk '{print $1}' "$f" | median)
        own[$tool]=$(awk -v n="$N" '{print $2 / n * 1e6}' "$f" | median)
        rss[$tool]=$(awk '{print $4 / 1024}' "$f" | max)
    done
    r() { awk -v a="${wall[$1]}" -v b="${wall[ninja]}" 'BEGIN { printf "%.2f", a / b }'; }
    table+=("$(printf '| %s | %s | 1.00 | %s | %s | %.0f / %.0f / %.0f / %.0f µs | %.0f / %.0f / %.0f / %.0f MB | %s, %s |' \
        "$shape" "$(r make)" "$(r tokio)" "$(r orch)" \
        "${own[make]}" "${own[ninja]}" "${own[tokio]}" "${own[orch]}" \
        "${rss[make]}" "${rss[ninja]}" "${rss[tokio]}" "${rss[orch]}" "$before" "$after")")
    printf '%s: median wall make %.3fs, ninja %.3fs, tokio %.3fs, orch %.3fs (load %s before, %s after)\n' \
        "$shape" "${wall[make]}" "${wall[ninja]}" "${wall[tokio]}" "${wall[orch]}" "$before" "$after"
done
echo
echo "Wall time relative to ninja (medians of $ROUNDS), each tool's own CPU per node, peak RSS:"
echo
echo "| shape | make | ninja | tokio | orch | own CPU per node: make / ninja / tokio / orch | peak RSS: make / ninja / tokio / orch | load 1 min: before, after |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${table[@]}"
