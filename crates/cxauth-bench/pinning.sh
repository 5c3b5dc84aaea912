# Sourced by wrk.sh and storm-wrk.sh (bash): the two cores they pin to, a work directory that
# goes, with the processes they started, when the script exits, and the server they start there.

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

# Starts "$@" pinned to $server_core with stderr to $1-named log; sets $addr and $pid.
start() {
    local log=$1
    shift
    taskset -c "$server_core" "$@" 2>"$log" >/dev/null &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 1 300); do
        addr=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's|listening on http://||') || true
        [ -n "$addr" ] && return 0
        sleep 0.1
    done
    echo "server did not start; its log:" >&2
    cat "$log" >&2
    exit 1
}

# access_token ADDR PASSWORD: logs `admin` in on the server at ADDR; prints the access token.
access_token() {
    curl -sf -X POST "http://$1/api/auth/login/admin" \
        --data-urlencode username=admin --data-urlencode password="$2" \
        --data-urlencode platformId=aws80 |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])'
}
