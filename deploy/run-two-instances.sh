#!/usr/bin/env bash
# Two cxauth instances on one PostgreSQL database behind nginx, all on loopback, then a smoke
# test through nginx. Everything it starts is stopped and its schema dropped when it exits.
#
#   deploy/run-two-instances.sh              # uses target/release/cxauth (or CXAUTH_BIN)
#   CXAUTH_DEPLOY_POSTGRES=postgres://user@host/db deploy/run-two-instances.sh
#
# Needs: nginx (Debian: apt-get install nginx), psql, curl, python3, a PostgreSQL server
# (default postgres://root@127.0.0.1:5432/test). Add --keep to leave it running until Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bin=${CXAUTH_BIN:-$repo/target/release/cxauth}
pg=${CXAUTH_DEPLOY_POSTGRES:-postgres://root@127.0.0.1:5432/test}
keep=${1:-}

[ -x "$bin" ] || { echo "no cxauth binary at $bin: run 'cargo build --release -p cxauth' or set CXAUTH_BIN" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is not installed (Debian: apt-get install nginx)" >&2; exit 1; }

work=$(mktemp -d)
schema="cxauth_deploy_$(date +%s)_$$"
pids=()
cleanup() {
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    psql "$pg" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

psql "$pg" -qc "CREATE SCHEMA $schema" >/dev/null
sep='?'; case "$pg" in *\?*) sep='&';; esac
db="$pg${sep}options=-c%20search_path%3D$schema"

# One master key for every instance, made before the first start.
"$bin" generate-master-key "$work/master.key" 2>/dev/null

password='deploy-demo-password'
port_a=$(free_port); port_b=$(free_port); port_lb=$(free_port)
for port in "$port_a" "$port_b"; do
    CXAUTH_DATABASE="$db" CXAUTH_MASTER_KEY_FILE="$work/master.key" \
    CXAUTH_BOOTSTRAP_ADMIN_PASSWORD="$password" CXAUTH_TRUSTED_PROXIES=127.0.0.1 \
        "$bin" serve --listen "127.0.0.1:$port" >"$work/cxauth-$port.log" 2>&1 &
    pids+=($!)
done
for port in "$port_a" "$port_b"; do
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { echo "instance on $port did not start:"; cat "$work/cxauth-$port.log"; exit 1; }
done

sed -e "s#@WORK@#$work#g" -e "s#@PORT_A@#$port_a#" -e "s#@PORT_B@#$port_b#" -e "s#@PORT_LB@#$port_lb#" \
    "$here/nginx.conf.template" >"$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work" 2>/dev/null
lb="http://127.0.0.1:$port_lb"
for _ in $(seq 1 50); do curl -sf "$lb/healthz" >/dev/null && break; sleep 0.1; done
echo "instances on :$port_a and :$port_b behind nginx on $lb (schema $schema)"

# The smoke test, through nginx only.
fail() { echo "smoke test FAILED: $*" >&2; tail -5 "$work"/cxauth-*.log >&2; exit 1; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
session=$(curl -sf -X POST "$lb/api/auth/login/admin" -d "username=admin&password=$password&platformId=aws80") || fail "login"
access=$(json accessToken <<<"$session"); refresh=$(json refreshToken <<<"$session")
token=$(curl -sf -X POST "$lb/voice/api/v1/admin/token" -H "Authorization: Bearer $access") || fail "token create"
upstreams=""
for _ in 1 2 3 4 5 6; do
    out=$(curl -sf -D - "$lb/voice/api/v1/admin/token" -H "X-Auth-Token: $token") || fail "token list"
    grep -q "$token" <<<"$out" || fail "token missing from the list"
    upstreams+=$(grep -i '^x-upstream:' <<<"$out" | tr -d '\r' | cut -d' ' -f2)$'\n'
done
[ "$(sort -u <<<"$upstreams" | grep -c .)" -eq 2 ] || fail "requests did not reach both instances: $upstreams"
jwks_a=$(curl -sf "http://127.0.0.1:$port_a/.well-known/jwks.json"); jwks_b=$(curl -sf "http://127.0.0.1:$port_b/.well-known/jwks.json")
[ "$jwks_a" = "$jwks_b" ] || fail "instances publish different keys"
curl -sf -X DELETE "$lb/api/auth/logout/$refresh" >/dev/null || fail "logout"
for _ in 1 2; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$lb/voice/api/v1/admin/accounts" -H "Authorization: Bearer $access")
    [ "$code" = 401 ] || fail "the ended session still works ($code)"
done
curl -sf -X DELETE "$lb/voice/api/v1/admin/token/$token" -H "X-Auth-Token: $token" >/dev/null || fail "token delete"
echo "smoke test through nginx: ok (login, token create, list on both instances, same JWKS, logout refused everywhere, delete)"

if [ "$keep" = "--keep" ]; then
    echo "running; Ctrl-C to stop"
    wait
fi
