# Sourced by wrk.sh and storm-wrk.sh (bash): the two cores they pin to, and a work directory that
# goes, with the processes they started, when the script exits.

# The first two cores of this shell's Cpus_allowed_list (e.g. "0-1", or "2-3,8" in a cpuset):
# sets $server_core and $wrk_core, or exits saying why.
read -r server_core wrk_core _ < <(awk '/^Cpus_allowed_list:/ {
    n = split($2, parts, ",")
    for (i = 1; i <= n; i++) {
        m = split(parts[i], r, "-")
        for (c = r[1]; c <= (m == 2 ? r[2] : r[1]); c++) printf "%d ", c
    }
}' /proc/self/status) || true
[ -n "${wrk_core:-}" ] || { echo "needs 2 cores: the server on one, wrk on the other" >&2; exit 1; }

# $work: a fresh directory under /tmp named after $work_prefix; $pids: add each process started,
# to be killed at exit.
work=$(mktemp -d "/tmp/${work_prefix:-cxauth}-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
