# Sourced by the benchmark scripts: waiting for a quiet machine, and medians.
#
# A figure only means something on a quiet machine: `wait_quiet` returns once the 1-minute
# load average is under MAX_LOAD and no compiler or build tool runs (FORCE=1 skips the
# wait, for a smoke run), and gives up after MAX_WAIT seconds (no figure is better than a
# wrong one). The caller sets FORCE, MAX_LOAD and MAX_WAIT.

load1() { cut -d' ' -f1 /proc/loadavg; }
# A build tool that runs or waits (not one stopped with SIGSTOP: it takes no CPU). `ps`,
# not `pgrep -x`: pgrep matches nothing with a pattern longer than 15 characters.
busy() {
    ps -eo stat=,comm= | awk '$1 !~ /^T/ && $2 ~ /^(cargo|rustc|cc|cc1|cc1plus|ld|ld\.lld|ld\.gold|clang|gcc|make|ninja|maturin|rustdoc)$/ { f = 1 } END { exit !f }'
}
wait_quiet() {
    [ "$FORCE" = 1 ] && return 0
    local waited=0
    while busy || awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l >= m) }'; do
        if [ "$waited" -ge "$MAX_WAIT" ]; then
            echo "error: the machine was not quiet for ${MAX_WAIT}s (load $(load1)); no figures" >&2
            exit 1
        fi
        [ $((waited % 60)) = 0 ] && echo "waiting for a quiet machine (load $(load1)$(busy && echo ', a build is running'))" >&2
        sleep 5
        waited=$((waited + 5))
    done
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
