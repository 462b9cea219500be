#!/usr/bin/env bash
# Startup cost of the CLI: `orch validate` on a 100-phase pipeline (every phase a command
# with needs, retries, a timeout, env and tags; a few gates), measured with hyperfine
# against `true` and `git --version` as baselines. The goal: under 20 ms.
#
#   benches/cli_startup.sh                       # builds the release binary first
#   ORCH=path/to/orch benches/cli_startup.sh     # a binary already built
#   PHASES=500 RUNS=200 benches/cli_startup.sh
#
# Installs Debian's hyperfine when it is missing (apt-get update at most once per boot).
set -euo pipefail
cd "$(dirname "$0")/.."

PHASES=${PHASES:-100}
RUNS=${RUNS:-100}

if ! command -v hyperfine >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    marker=/tmp/.orch-apt-updated
    if [ ! -e "$marker" ]; then
        $SUDO apt-get update
        touch "$marker"
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends hyperfine
fi

if [ -z "${ORCH:-}" ]; then
    cargo build -q --release -p orch-cli
    ORCH="$PWD/target/release/orch"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/orch-startup-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 - "$work/orch.toml" "$PHASES" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write('[pipeline]\nname = "startup"\njobs = 4\n\n[vars]\nversion = "1.0.0"\n\n')
    f.write('[defaults]\ntimeout = "5m"\nretries = 1\n\n')
    for i in range(n):
        f.write(f"[phases.p{i}]\n")
        if i % 10 == 9:
            f.write('kind = "gate"\n')
            f.write(f'assert = ["phases.p{i - 1}.outputs.count >= 0"]\n')
        else:
            f.write(f'run = "echo building p{i} ${{{{ vars.version }}}}; echo count={i} >> \\"$ORCH_OUTPUT\\""\n')
            f.write('env = { RUST_LOG = "info" }\n')
            f.write(f'tags = ["group{i % 5}"]\n')
        needs = [f"p{k}" for k in (i - 1, i - 3) if k >= 0]
        if needs:
            f.write("needs = [" + ", ".join(f'"{k}"' for k in needs) + "]\n")
        f.write("\n")
PY

"$ORCH" validate "$work/orch.toml"
echo "binary: $ORCH ($("$ORCH" --version))"
hyperfine --shell=none --warmup 10 --runs "$RUNS" --export-json "$work/result.json" \
    --command-name "orch validate ($PHASES phases)" "$ORCH validate $work/orch.toml" \
    --command-name "true" "true" \
    --command-name "git --version" "git --version"
python3 - "$work/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
orch = next(v for k, v in r.items() if k.startswith("orch"))
ms = lambda v: v["mean"] * 1000
print(f"orch validate: mean {ms(orch):.1f} ms, median {orch['median'] * 1000:.1f} ms "
      f"(min {orch['min'] * 1000:.1f}, max {orch['max'] * 1000:.1f}); "
      f"CPU {(orch['user'] + orch['system']) * 1000:.1f} ms (user + system: steadier on a busy machine)")
for base in ("true", "git --version"):
    print(f"  {ms(orch) / ms(r[base]):.1f}x `{base}` ({ms(r[base]):.1f} ms)")
print("under 20 ms: " + ("yes" if ms(orch) < 20 else "NO"))
PY
