#!/usr/bin/env bash
# What a login storm costs the reads, and what the logins get, when reads want the whole core: a
# release `cxauth serve` on a fresh SQLite database pinned to one core (`taskset -c`), `wrk`
# (Debian package `wrk`) on another, sending bearer reads (`GET /voice/api/v1/admin/accounts`
# with `Authorization: Bearer`) as fast as the server answers them, and LOGINS clients (default
# 2, on wrk's core) logging `admin` in back to back meanwhile. Each round measures the reads
# alone, then the reads with the logins, DURATION seconds each (default 10) after a 2 s warm-up,
# CONNS wrk connections (default 32), one wrk thread; ROUNDS rounds (default 2), interleaved.
# It prints the reads' rate and p99, and the logins' rate, p50 and p99.
#
#   cargo build --release -p cxauth
#   bash crates/cxauth-bench/storm-wrk.sh           # ~1 min
#   BIN=/path/to/other/cxauth bash crates/cxauth-bench/storm-wrk.sh   # another build
#
# The harness's `storm` row asks the other question (reads at a fixed, light rate while logins
# saturate the password pool: their p99). The server runs as the harness starts it (RUST_LOG=info,
# log to a file, metrics on, login limits off).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${ROUNDS:-2}
duration=${DURATION:-10}
conns=${CONNS:-32}
logins=${LOGINS:-2}
bin=${BIN:-target/release/cxauth}
[ -x "$bin" ] || { echo "no $bin: run 'cargo build --release -p cxauth' first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
work_prefix=cxauth-storm
# shellcheck source=crates/cxauth-bench/pinning.sh
source crates/cxauth-bench/pinning.sh

password=bench-admin-password-1
CXAUTH_BOOTSTRAP_ADMIN_PASSWORD=$password RUST_LOG=info start "$work/cxauth.log" \
    "$bin" serve --listen 127.0.0.1:0 --database "sqlite://$work/cxauth.db" --access-token-ttl 1h \
    --logins-per-user-per-minute 0 --logins-in-flight-per-source 1000000
access=$(access_token "$addr" "$password")
url="http://$addr/voice/api/v1/admin/accounts"
curl -sf -o /dev/null -H "Authorization: Bearer $access" "$url"

# logins_for SECONDS: $logins clients logging in back to back, counting from 2 s in (wrk's
# warm-up) for SECONDS; prints "RATE P50 P99 FAILED".
logins_for() {
    taskset -c "$wrk_core" python3 - "$addr" "$password" "$logins" "$1" <<'PY'
import sys, threading, time, urllib.parse, urllib.request
addr, password, clients, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
body = urllib.parse.urlencode(
    {"username": "admin", "password": password, "platformId": "aws80"}).encode()
start = time.monotonic() + 2
stop = start + seconds
done, failed, lock = [], [0], threading.Lock()
def client():
    while time.monotonic() < stop:
        t = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://{addr}/api/auth/login/admin", body, 60) as r:
                ok = r.status == 200 and bool(r.read())
        except OSError:
            ok = False
        end = time.monotonic()
        if t >= start and end <= stop:
            with lock:
                if ok:
                    done.append(end - t)
                else:
                    failed[0] += 1
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
done.sort()
n = len(done)
pct = lambda q: f"{done[min(n - 1, int(n * q))] * 1e3:.0f}ms" if n else "-"
print(f"{n / seconds:.1f} {pct(0.5)} {pct(0.99)} {failed[0]}")
PY
}

# reads: a 2 s wrk run not counted (the warm-up), then DURATION s measured; prints "RATE P99".
reads() {
    local args=(-t1 -c"$conns" --latency -H "Authorization: Bearer $access")
    taskset -c "$wrk_core" wrk "${args[@]}" -d2s "$url" >/dev/null
    local out
    out=$(taskset -c "$wrk_core" wrk "${args[@]}" -d"${duration}s" "$url")
    echo "$(awk '/^Requests\/sec/ { print $2 }' <<<"$out") $(awk '$1 == "99%" { print $2 }' <<<"$out")"
}

echo "cxauth storm check: $(nproc) cores (server on core $server_core, wrk and $logins login clients on core $wrk_core), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds of ${duration}s, $conns connections; $bin"
for r in $(seq 1 "$rounds"); do
    read -r rate p99 < <(reads)
    printf 'round %s  reads alone:        %10s req/s  p99 %-8s\n' "$r" "$rate" "$p99"
    logins_for "$duration" >"$work/logins" &
    lp=$!
    read -r rate p99 < <(reads)
    wait "$lp"
    read -r lrate lp50 lp99 lfailed <"$work/logins"
    printf 'round %s  reads during logins: %10s req/s  p99 %-8s  logins %s/s  p50 %s  p99 %s  failed %s\n' \
        "$r" "$rate" "$p99" "$lrate" "$lp50" "$lp99" "$lfailed"
done
