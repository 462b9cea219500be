#!/usr/bin/env bash
# What `[policy]` and the audit log cost: the same `orch run` of a layered lattice of N
# phases (layers of WIDTH, each phase needing two of the layer before, every phase
# `run = ["true"]`, JOBS at once), in three modes, rounds alternating so drift hits them
# alike:
#   base    no policy, ORCH_AUDIT=off
#   policy  a ten-rule Rego policy decides every phase, ORCH_AUDIT=off
#   audit   no policy, the audit log on (the default)
# The journal is on (durable) in every mode. Prints each mode's median wall time with the
# load average at each measurement, and the ratios policy/base and audit/base.
#
# Figures from a busy machine mean nothing: unless FORCE=1, the script waits up to WAIT
# seconds for the 1-minute load average to fall below MAX_LOAD and gives no figure if it
# never does.
#
#   benches/policy_audit.sh                 # N=10000 WIDTH=100 JOBS=2 ROUNDS=5 MAX_LOAD=0.3
#   ORCH=path/to/orch benches/policy_audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
WIDTH=${WIDTH:-100}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-5}
MAX_LOAD=${MAX_LOAD:-0.3}
WAIT=${WAIT:-300}

load() { cut -d' ' -f1 /proc/loadavg; }
quiet() { [ "$(echo "$(load) < $MAX_LOAD" | bc -l)" = 1 ]; }

if [ -z "${ORCH:-}" ]; then
    cargo build -q --release -p orch-cli
    ORCH="$PWD/target/release/orch"
fi

if [ "${FORCE:-0}" != 1 ]; then
    waited=0
    until quiet; do
        if [ "$waited" -ge "$WAIT" ]; then
            echo "the machine never got quiet: load average $(load) >= $MAX_LOAD after ${WAIT}s; no figures (FORCE=1 measures anyway)" >&2
            exit 3
        fi
        sleep 5
        waited=$((waited + 5))
    done
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/orch-policy-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/base" "$work/policy/policy"
python3 - "$work" "$N" "$WIDTH" <<'PY'
import sys
work, n, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def needs(i):
    if i < width:
        return []
    start = i - i % width - width
    col = i % width
    return sorted({start + col, start + (col + 1) % width})
def lattice(path, policy):
    with open(path, "w") as f:
        f.write('[pipeline]\nname = "lattice"\n\n[vars]\nskip_tests = ""\nversion = "1.0.0"\n\n')
        if policy:
            f.write('[policy]\nfiles = ["policy/*.rego"]\n\n')
        for i in range(n):
            f.write(f'[phases.p{i}]\nrun = ["true"]\ntags = ["t{i % 7}"]\n')
            if needs(i):
                f.write("needs = [" + ", ".join(f'"p{k}"' for k in needs(i)) + "]\n")
lattice(f"{work}/base/orch.toml", False)
lattice(f"{work}/policy/orch.toml", True)
PY
# Ten rules: what a real policy checks (kinds, agents, tags, vars, the branch, needs).
cat > "$work/policy/policy/bench.rego" <<'REGO'
package orch

default allow := false

known_kinds := {"command", "gate", "docker.build", "docker.push", "git.tag"}
allowed_agents := {"local", "docker", "git"}

kind_ok if input.phase.kind in known_kinds
agent_ok if input.phase.agent in allowed_agents
not_release if not "release" in input.phase.tags
release_ok if input.git.branch == "main"
release_ok if startswith(input.git.branch, "release/")
tests_kept if input.run.vars.skip_tests == ""

allow if {
	kind_ok
	agent_ok
	not_release
}

allow if {
	kind_ok
	agent_ok
	release_ok
	tests_kept
}

deny contains msg if {
	count(input.phase.needs) > 16
	msg := sprintf("%s needs too many phases", [input.phase.id])
}

deny contains msg if {
	input.phase.kind == "docker.push"
	not startswith(input.run.vars.version, "1.")
	msg := "only 1.x is released"
}
REGO

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A times loads
modes=(base policy audit)
for r in $(seq "$ROUNDS"); do
    for mode in "${modes[@]}"; do
        case $mode in
            base) dir=base audit=off ;;
            policy) dir=policy audit=off ;;
            audit) dir=base audit=on ;;
        esac
        rm -rf "$work/$dir/.orch"
        l=$(load)
        t0=$(now)
        ORCH_AUDIT=$audit "$ORCH" run -q --jobs "$JOBS" "$work/$dir/orch.toml" >/dev/null 2>&1
        t1=$(now)
        times[$mode]+="$(echo "$t1 - $t0" | bc -l) "
        loads[$mode]+="$l "
        status=$(python3 -c "import json;print(json.load(open('$work/$dir/.orch/runs/latest/run.json'))['status'])")
        [ "$status" = succeeded ] || { echo "$mode run $status" >&2; exit 1; }
        if [ "$mode" = audit ]; then
            abytes=$(stat -c %s "$work/base/.orch/audit.log")
        fi
    done
done
echo "lattice: $N phases, width $WIDTH, jobs $JOBS, $ROUNDS rounds; audit log of a run: $abytes bytes"
declare -A med
for mode in "${modes[@]}"; do
    med[$mode]=$(printf '%s\n' ${times[$mode]} | median)
    printf '%-7s median %.3fs  (%s)  load at start of each: %s\n' "$mode" "${med[$mode]}" "${times[$mode]% }" "${loads[$mode]% }"
done
printf 'ratio policy/base: %.3f\n' "$(echo "${med[policy]} / ${med[base]}" | bc -l)"
printf 'ratio audit/base:  %.3f\n' "$(echo "${med[audit]} / ${med[base]}" | bc -l)"
printf 'load average now: %s\n' "$(cat /proc/loadavg)"
