#!/usr/bin/env python3
"""Drives the official, unmodified RingCX Python SDK (ringcentral-engage-voice 0.3.2) against a
real `cxauth serve`, started here with a fresh SQLite database, the built-in RingEX emulator, a
2-second access-token lifetime and a 3-second lifetime of the emulator's RingEX access tokens.

Flows: (1) RingEX login (JWT, then username/extension/password) against the emulator, exchanged
for a RingCX session whose agentDetails names the sub-account to work in (as integrators read
it), then admin calls; (2) expiry: a call after the access token expired succeeds because the SDK refreshed on its own (counted in the server's request log); (2b) the
RingEX access token expires, the integration logs in again through RingEX's refresh grant
(`rc.platform().refresh()`, rotating the RingEX refresh token) and exchanges the new RingEX token
(the RingCX SDK's `getToken()`); the RingEX SDK also refreshes by itself on a RingEX call;
(2c) the RingEX SDK's logout revokes the login: its tokens are refused afterwards;
(3) the direct login of the README, with the tokens handed to the SDK; (4) the legacy portal
login. Prints one line per step; any deviation stops the run with a non-zero exit status.

Needs CXAUTH_BIN (the cxauth binary). Run by .ci/python-sdk.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import requests
import ringcentral_engage_voice.engage_voice_client as evc
from ringcentral_engage_voice import RingCentralEngageVoice

warnings.simplefilter("ignore")  # the RingEX SDK warns that password login is deprecated

BIN = os.environ["CXAUTH_BIN"]
ADMIN_PASSWORD = "Admin-pw-42"
AGENT = "agent1"
AGENT_PASSWORD = "Agent-pw-42"  # the SDK's legacy login sends the password unencoded
AGENT_RC_ID = 4242
TTL = 2  # seconds, --access-token-ttl
RINGEX_TTL = 3  # seconds, --ringex-emulator-access-ttl
RINGEX_REFRESH_TTL = 7 * 24 * 3600  # the emulator's default, RingEX's
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
API_TOKEN = re.compile(r"^aws80:[0-9a-f-]{36}$")


class Deviation(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Deviation(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cxauth-sdk-")
        self.db = f"sqlite://{self.dir}/cxauth.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.dir, "server.log")
        self.proc = None

    def start(self):
        env = dict(os.environ, CXAUTH_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD, RUST_LOG="info")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--database", self.db,
             "--ringex-emulator", "--access-token-ttl", f"{TTL}s",
             "--ringex-emulator-access-ttl", f"{RINGEX_TTL}s"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            check(self.proc.poll() is None, "the server exited at start")
            time.sleep(0.05)
        raise Deviation("the server did not answer /healthz")

    def admin(self, *args, stdin=None):
        r = subprocess.run([BIN, "admin", "--database", self.db, *args], input=stdin,
                           capture_output=True, text=True)
        check(r.returncode == 0, f"cxauth admin {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def refreshes(self):
        """Successful POST /api/auth/token/refresh requests, from the server's request log."""
        with open(self.log_path) as f:
            return sum(1 for line in f
                       if "path=/api/auth/token/refresh" in line and "status=200" in line)

    def refreshes_settled(self, expected):
        """`refreshes()` once it reaches `expected` or a second has passed: the server writes
        its log lines in batches, a few milliseconds after the answers they describe."""
        deadline = time.monotonic() + 1.0
        while True:
            n = self.refreshes()
            if n >= expected or time.monotonic() > deadline:
                return n
            time.sleep(0.02)

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def admin_calls(ev, expect_user):
    """The calls every flow repeats: accounts, then an API token created, listed and deleted."""
    accounts = ev.get("/api/v1/admin/accounts").json()
    check(isinstance(accounts, list) and accounts, f"no accounts: {accounts}")
    check(all(a["mainAccountId"] == "10000000" for a in accounts), f"accounts: {accounts}")
    token = ev.post("/api/v1/admin/token").text
    check(API_TOKEN.match(token), f"not an API token: {token!r}")
    listed = ev.get("/api/v1/admin/token").json()
    check(token in listed, f"{token} not in the token list {listed}")
    check(ev.delete("/api/v1/admin/token/" + token).text == "true", "delete did not answer true")
    check(token not in ev.get("/api/v1/admin/token").json(), "the deleted token is still listed")
    users = ev.get("/api/v1/admin/users", {"flatten": "true"}).json()
    check(any(u["userName"] == expect_user for u in users), f"{expect_user} not in {users}")


def expiry(server, ev, sso):
    """A call after the access token expired succeeds because the SDK refreshed by itself."""
    before_token = ev.token["accessToken"]
    before_refreshes = server.refreshes()
    time.sleep(TTL + 1.2)
    # The token really is expired now: the server says so in the words the SDK looks for.
    r = requests.get(server.url + "/voice/api/v1/admin/accounts",
                     headers={"Authorization": "Bearer " + before_token})
    check(r.status_code == 401 and r.text == "Jwt is expired", f"expired token: {r.status_code} {r.text!r}")
    accounts = ev.get("/api/v1/admin/accounts").json()
    check(accounts, "no accounts after the refresh")
    check(ev.token["accessToken"] != before_token, "the SDK kept the expired access token")
    check(ev.token.get("refreshToken"), "the refreshed session has no refresh token")
    check(ev.token["ssoLogin"] is sso, f"ssoLogin after the refresh: {ev.token['ssoLogin']}")
    after = server.refreshes_settled(before_refreshes + 1)
    check(after == before_refreshes + 1,
          f"the server saw {after - before_refreshes} successful refreshes, expected 1")


def exchange(server, rc_access_token):
    """The token exchange of a RingEX access token, as the RingCX SDK sends it."""
    return requests.post(server.url + "/api/auth/login/rc/accesstoken",
                         data={"rcAccessToken": rc_access_token, "rcTokenType": "Bearer"})


def ringex_refresh_grant(server, client_id, client_secret, refresh_token):
    """RingEX's refresh grant, sent by hand (to present a token the SDK no longer holds)."""
    return requests.post(server.url + "/restapi/oauth/token", auth=(client_id, client_secret),
                         data={"grant_type": "refresh_token", "refresh_token": refresh_token})


def agent_details_ok(ev, agent_record):
    """What an integrator does with a RingCX session: reads agentDetails[0].accountId to learn
    its sub-account, then works in it (here: lists that account's agents)."""
    details = ev.token["agentDetails"]
    check(len(details) == 1, f"agentDetails: {details}")
    account_id = details[0]["accountId"]
    check(account_id == "10000001" and details[0]["agentId"] == int(agent_record),
          f"agentDetails[0]: {details[0]}")
    check(details[0]["rcUserId"] == AGENT_RC_ID and details[0]["agentType"] == "AGENT",
          f"agentDetails[0]: {details[0]}")
    agents = ev.get(f"/api/v1/admin/accounts/{account_id}/agents").json()
    check([a["agentId"] for a in agents] == [int(agent_record)], f"agents of {account_id}: {agents}")


def ringex_second_login(server, client_id, client_secret, jwt, agent_id, agent_record):
    """The RingEX access token expires; the integration logs in again through RingEX's refresh
    grant and exchanges the new RingEX token for a RingCX session. Returns the SDK."""
    ev = RingCentralEngageVoice(client_id, client_secret, server=server.url, rcServer=server.url)
    ev.authorize(jwt=jwt)
    plat = ev.rc.platform()
    first = plat.auth().data()
    check(first["expires_in"] == RINGEX_TTL, f"RingEX expires_in: {first['expires_in']}")
    check(first["refresh_token_expires_in"] == RINGEX_REFRESH_TTL,
          f"RingEX refresh_token_expires_in: {first['refresh_token_expires_in']}")
    time.sleep(RINGEX_TTL + 0.5)
    # Expired: the SDK knows it, the emulator and the exchange refuse the token.
    check(not plat.auth().access_token_valid(), "the RingEX SDK still thinks its token valid")
    r = requests.get(server.url + "/restapi/v1.0/account/~/extension/~",
                     headers={"Authorization": "Bearer " + first["access_token"]})
    check(r.status_code == 401, f"expired RingEX token at the extension: {r.status_code} {r.text}")
    r = exchange(server, first["access_token"])
    check(r.status_code == 401, f"expired RingEX token exchanged: {r.status_code} {r.text}")

    # The second login: RingEX's refresh grant, then the exchange again.
    plat.refresh()
    second = plat.auth().data()
    check(second["access_token"] != first["access_token"], "the refresh kept the access token")
    check(second["refresh_token"] != first["refresh_token"], "the refresh token did not rotate")
    check(second["refresh_token_expires_in"] == RINGEX_REFRESH_TTL,
          f"refresh_token_expires_in after the refresh: {second['refresh_token_expires_in']}")
    ev.getToken()
    check(ev.token["ssoLogin"] is True and ev.token["adminId"] == int(agent_id), f"{ev.token}")
    check(ev.token["refreshToken"], "the second exchange gave no refresh token")
    agent_details_ok(ev, agent_record)
    admin_calls(ev, AGENT)
    # The rotated RingEX refresh token is refused from now on.
    r = ringex_refresh_grant(server, client_id, client_secret, first["refresh_token"])
    check(r.status_code == 400 and r.json()["error"] == "invalid_grant",
          f"the rotated RingEX refresh token: {r.status_code} {r.text}")
    check("expired" not in r.text.lower(), f"an emulator error says expired: {r.text}")

    # The RingEX SDK also refreshes by itself when a RingEX call finds its token expired.
    time.sleep(RINGEX_TTL + 0.5)
    ext = plat.get("/restapi/v1.0/account/~/extension/~").json_dict()
    check(ext["id"] == AGENT_RC_ID, f"extension: {ext}")
    check(plat.auth().data()["access_token"] != second["access_token"],
          "the RingEX SDK did not refresh by itself")
    return ev


def ringex_logout(server, client_id, client_secret, ev):
    """The RingEX SDK's logout (RingEX's revoke) ends the login: its access token no longer
    exchanges and its refresh token is refused."""
    plat = ev.rc.platform()
    data = plat.auth().data()
    check(exchange(server, data["access_token"]).status_code == 200, "exchange before the logout")
    plat.logout()
    r = exchange(server, data["access_token"])
    check(r.status_code == 401, f"a revoked RingEX token exchanged: {r.status_code} {r.text}")
    r = ringex_refresh_grant(server, client_id, client_secret, data["refresh_token"])
    check(r.status_code == 400 and r.json()["error"] == "invalid_grant",
          f"the refresh token of a revoked login: {r.status_code} {r.text}")


def main():
    server = Server()
    step = "start"
    try:
        server.start()
        agent_id = server.admin("user", "create", "--username", AGENT, "--password-stdin",
                                "--parent", "admin", "--grant", "10000001", "--role", "MANAGE_USERS",
                                "--rc-user-id", str(AGENT_RC_ID), stdin=AGENT_PASSWORD + "\n").strip()
        check(agent_id.isdigit(), f"user create printed {agent_id!r}")
        app = server.admin("ringex", "app", "create").splitlines()
        check(len(app) == 2 and all(app), f"ringex app create printed {app!r}")
        client_id, client_secret = app
        jwt = server.admin("ringex", "jwt", "create", "--username", AGENT).splitlines()
        check(len(jwt) == 1 and jwt[0], f"ringex jwt create printed {jwt!r}")
        jwt = jwt[0]
        agent_record = server.admin("agent", "create", "--account", "10000001", "--username",
                                    "agent1.voice", "--first-name", "Agent", "--user", AGENT).strip()
        check(agent_record.isdigit(), f"agent create printed {agent_record!r}")
        print("step 0 setup (server, user, agent, RingEX app, JWT credential): ok", flush=True)

        step = "step 1a ringex jwt"
        ev = RingCentralEngageVoice(client_id, client_secret, server=server.url, rcServer=server.url)
        ev.authorize(jwt=jwt)
        check(ev.token["ssoLogin"] is True, f"ssoLogin: {ev.token}")
        check(ev.token["refreshToken"], "includeRefresh=true gave no refresh token")
        check(ev.token["adminId"] == int(agent_id), f"adminId {ev.token['adminId']} != {agent_id}")
        agent_details_ok(ev, agent_record)
        admin_calls(ev, AGENT)
        print(f"{step}: ok", flush=True)

        step = "step 1b ringex password"
        ev = RingCentralEngageVoice(client_id, client_secret, server=server.url, rcServer=server.url)
        ev.authorize(username=AGENT, extension=str(AGENT_RC_ID), password=AGENT_PASSWORD)
        check(ev.token["ssoLogin"] is True and ev.token["adminId"] == int(agent_id), f"{ev.token}")
        admin_calls(ev, AGENT)
        print(f"{step}: ok", flush=True)

        step = "step 1c ringex refusals"
        bad = RingCentralEngageVoice(client_id, "wrong-secret", server=server.url, rcServer=server.url)
        try:
            bad.authorize(jwt=jwt)
            raise Deviation("a wrong client secret was accepted")
        except Deviation:
            raise
        except Exception as e:  # the RingEX SDK raises its ApiException
            check("invalid_client" in str(e) or "401" in str(e), f"unexpected error: {e}")
        print(f"{step}: ok", flush=True)

        step = "step 2 ringex expiry"
        expiry(server, ev, True)
        print(f"{step}: ok (the SDK refreshed once, seen by the server)", flush=True)

        step = "step 2b ringex second login through the refresh grant"
        ev = ringex_second_login(server, client_id, client_secret, jwt, agent_id, agent_record)
        print(f"{step}: ok (RingEX refresh rotated the tokens, the new one exchanged)", flush=True)

        step = "step 2c ringex logout"
        ringex_logout(server, client_id, client_secret, ev)
        print(f"{step}: ok (the revoked RingEX login is refused)", flush=True)

        step = "step 3 direct login"
        r = requests.post(server.url + "/api/auth/login/admin",
                          data={"username": "admin", "password": ADMIN_PASSWORD, "platformId": "aws80"})
        check(r.status_code == 200, f"login: {r.status_code} {r.text}")
        ev = RingCentralEngageVoice(server=server.url)
        ev.token = r.json()
        check(ev.token["ssoLogin"] is False, f"{ev.token}")
        admin_calls(ev, "admin")
        print(f"{step}: ok", flush=True)

        step = "step 3 direct login expiry"
        expiry(server, ev, False)
        print(f"{step}: ok (the SDK refreshed once, seen by the server)", flush=True)

        step = "step 4 legacy login"
        evc.LEGACY_SERVERS.append(server.url)
        ev = RingCentralEngageVoice(server=server.url)
        check(ev.isLegacy, "the SDK did not pick legacy mode")
        ev.authorize(username=AGENT, password=AGENT_PASSWORD)
        check(UUID.match(ev.token["authToken"]), f"authToken: {ev.token.get('authToken')!r}")
        check(ev.token["user"]["userName"] == AGENT, f"user: {ev.token['user']}")
        check(ev.token["accounts"], "no accounts in the legacy login")
        check(ev.get("/api/v1/admin/token").json() == [], "the agent already has API tokens")
        token = ev.post("/api/v1/admin/token").text
        check(ev.get("/api/v1/admin/token").json() == [token], "the new token is not listed")
        check(ev.delete("/api/v1/admin/token/" + token).text == "true", "delete failed")
        check(ev.get("/api/v1/admin/accounts").json(), "no accounts with the auth token")
        print(f"{step}: ok", flush=True)

        step = "step 5 nothing secret in the server log"
        time.sleep(0.1)  # the server writes its log in batches, milliseconds after the answers
        log = server.log_text()
        for name, secret in [("client secret", client_secret), ("JWT credential", jwt),
                             ("admin password", ADMIN_PASSWORD), ("agent password", AGENT_PASSWORD),
                             ("auth token", ev.token["authToken"])]:
            check(secret not in log, f"the {name} is in the server log")
        print(f"{step}: ok", flush=True)
    except Exception as e:
        print(f"{step}: FAILED: {e}", flush=True)
        if not isinstance(e, Deviation):
            traceback.print_exc()
        try:
            print("---- server log (last 40 lines) ----")
            print("\n".join(server.log_text().splitlines()[-40:]))
        except OSError:
            pass
        return 1
    finally:
        server.stop()
    print("python SDK: all steps ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
