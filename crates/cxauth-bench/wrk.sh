#!/usr/bin/env bash
# An independent check of the harness's read figures with `wrk` (Debian package `wrk`), not our
# own load generator: the bare hyper server (`cxauth-bench hello`), then a release `cxauth serve`
# on a fresh SQLite database, each pinned to one core (`taskset -c`) with wrk on another (the
# first two cores this script may run on: 0 and 1 unless a cpuset says otherwise), and for
# each of hello, healthz, bearer (`GET /voice/api/v1/admin/accounts` with `Authorization:
# Bearer`) and api-token (the same with `X-Auth-Token`): requests per second, the server's CPU
# time per request (utime + stime from /proc/PID/stat around the run) and wrk's latency
# percentiles. ROUNDS rounds (default 3), interleaved, each scenario DURATION seconds (default
# 10) after a 2 s warm-up, CONNS connections (default 32), one wrk thread.
#
#   cargo build --release -p cxauth -p cxauth-bench
#   bash crates/cxauth-bench/wrk.sh                 # ~3 min
#   ROUNDS=1 DURATION=5 bash crates/cxauth-bench/wrk.sh
#
# The server runs as the harness starts it (RUST_LOG=info, log to a file, metrics on, login
# limits off). Closed loop only: Debian's wrk has no constant-rate mode (that is wrk2), so latency
# at half load comes from the harness's open-loop rows (`cxauth-bench all --pin`).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${ROUNDS:-3}
duration=${DURATION:-10}
conns=${CONNS:-32}
bin=target/release/cxauth
bench=target/release/cxauth-bench
for b in "$bin" "$bench"; do
    [ -x "$b" ] || { echo "no $b: run 'cargo build --release -p cxauth -p cxauth-bench' first" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
work_prefix=cxauth-wrk
# shellcheck source=crates/cxauth-bench/pinning.sh
source crates/cxauth-bench/pinning.sh

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# run NAME PID URL [HEADER]: warm-up, then one measured run; appends a line to $work/results.
run() {
    local name=$1 p=$2 url=$3 hdr=${4:-}
    local args=(-t1 -c"$conns" --latency)
    [ -n "$hdr" ] && args+=(-H "$hdr")
    taskset -c "$wrk_core" wrk "${args[@]}" -d2s "$url" >/dev/null
    local t0 t1 out
    t0=$(cpu_ticks "$p")
    out=$(taskset -c "$wrk_core" wrk "${args[@]}" -d"${duration}s" "$url")
    t1=$(cpu_ticks "$p")
    local reqs rps p50 p99 non2xx
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
    local cpu_us
    # Ticks are 1/100 s; CPU over the measured run only.
    cpu_us=$(awk -v t="$((t1 - t0))" -v n="$reqs" 'BEGIN { printf "%.1f", t * 10000 / n }')
    echo "$name $rps $cpu_us $p50 $p99 ${non2xx:-0}" >>"$work/results"
    printf '%-10s %10s req/s  %6s us CPU/req  p50 %-8s p99 %-8s non-2xx %s\n' \
        "$name" "$rps" "$cpu_us" "$p50" "$p99" "${non2xx:-0}"
}

echo "cxauth wrk check: $(nproc) cores (server on core $server_core, wrk on core $wrk_core), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds of ${duration}s, $conns connections"

start "$work/hello.log" "$bench" hello
hello_pid=$pid hello_addr=$addr
CXAUTH_BOOTSTRAP_ADMIN_PASSWORD=bench-admin-password-1 RUST_LOG=info start "$work/cxauth.log" \
    "$bin" serve --listen 127.0.0.1:0 --database "sqlite://$work/cxauth.db" --access-token-ttl 1h \
    --logins-per-user-per-minute 0 --logins-in-flight-per-source 1000000
cx_pid=$pid cx_addr=$addr
access=$(access_token "$cx_addr" bench-admin-password-1)
api=$(curl -sf -X POST -H "Authorization: Bearer $access" "http://$cx_addr/voice/api/v1/admin/token")
accounts=/voice/api/v1/admin/accounts
# The answers must be 200 before they are timed.
curl -sf -o /dev/null -H "Authorization: Bearer $access" "http://$cx_addr$accounts"
curl -sf -o /dev/null -H "X-Auth-Token: $api" "http://$cx_addr$accounts"

for r in $(seq 1 "$rounds"); do
    echo "-- round $r"
    run hello "$hello_pid" "http://$hello_addr/"
    run healthz "$cx_pid" "http://$cx_addr/healthz"
    run bearer "$cx_pid" "http://$cx_addr$accounts" "Authorization: Bearer $access"
    run api-token "$cx_pid" "http://$cx_addr$accounts" "X-Auth-Token: $api"
done

echo "-- mean over rounds (ratio: by rate, and by CPU per request: reference CPU / this CPU)"
awk '
    { n[$1]++; rps[$1] += $2; cpu[$1] += $3 }
    END {
        split("hello healthz bearer api-token", order, " ")
        ref["healthz"] = "hello"; ref["bearer"] = "healthz"; ref["api-token"] = "healthz"
        for (i = 1; i <= 4; i++) {
            s = order[i]; r = rps[s] / n[s]; c = cpu[s] / n[s]
            line = sprintf("%-10s %10.0f req/s  %6.1f us CPU/req", s, r, c)
            if (s in ref) {
                q = ref[s]
                line = line sprintf("   vs %-7s rate %.2f  CPU %.2f", q, r / (rps[q] / n[q]), (cpu[q] / n[q]) / c)
            }
            print line
        }
    }' "$work/results"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
