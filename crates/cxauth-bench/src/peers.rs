//! `cxauth-bench peers`: cxauth measured beside open-source peers on the same machine, in the same
//! run, interleaved, with each server pinned to one core and the load generator to another.
//!
//! Peers, installed by the harness itself through their package registries into a work directory:
//! - node `oidc-provider` 9 (npm) with `@node-rs/argon2` 2: the server file is
//!   `peers/oidc-provider-server.mjs`, written into the work directory and run with `node`.
//! - Debian's `glewlwyd` 2.7 (apt), on SQLite with Ed25519 JWTs: see [`glewlwyd`].
//!
//! Scenarios (each system's nearest equivalent): `cheapest` (cxauth `/healthz`, the peer's
//! discovery document), `bearer-read` (cxauth's accounts list with a Bearer JWT, the peer's
//! userinfo with an opaque access token), `opaque-token` (cxauth's accounts list with an
//! `X-Auth-Token` API token, the peer's token introspection: both look an opaque token up in
//! the store), `refresh` (rotating refresh, one chain per connection; durable for cxauth, in
//! memory for the peer; the peer's chains come from the authorization-code flow, driven over
//! HTTP through its dev interactions), `login` (password check at equal hashing work: Argon2id
//! m=19 MiB, t=2, p=1, and what a login issues). glewlwyd's equivalents: its discovery document,
//! userinfo and introspection (its access tokens are JWTs whose revocation state it looks up in
//! SQLite), and its token endpoint's one-use `refresh_token` and `password` grants, the latter
//! with PBKDF2 iterations set in each run to cost what cxauth's Argon2id check costs.

mod glewlwyd;

use crate::load::{self, Fixed, Pace, Stats, Workload};
use crate::report::{Report, Row};
use crate::scenarios::{loadavg, machine};
use crate::server::{
    ADMIN_PASSWORD, Cores, Server, allowed_cores, cxauth_binary, pin_self, pinned, spawn_and_wait,
};
use crate::workloads::{ACCOUNTS, create_api_token, login, login_body, post_form};
use anyhow::{Context as _, bail};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The peer's server, written into the work directory.
const OIDC_SERVER_JS: &str = include_str!("../peers/oidc-provider-server.mjs");
const OIDC_SERVER_FILE: &str = "oidc-provider-server.mjs";
/// What `npm install` installs (the registry's current 9.x and 2.x).
const OIDC_PACKAGE_JSON: &str = r#"{
  "name": "cxauth-bench-peer-oidc-provider",
  "private": true,
  "description": "written by cxauth-bench peers",
  "dependencies": {
    "oidc-provider": "^9.13.0",
    "@node-rs/argon2": "^2.2.1"
  }
}
"#;
const OIDC_CLIENT: &str = "client_id=bench&client_secret=bench-secret-0123456789";
const OIDC_USER: &str = "bench-user";
const OIDC_REDIRECT: &str = "http%3A%2F%2F127.0.0.1%2Fcb";

/// The scenarios, in the order each round runs them.
const SCENARIOS: [&str; 5] = [
    "cheapest",
    "bearer-read",
    "opaque-token",
    "refresh",
    "login",
];

/// Options of `cxauth-bench peers`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Work directory for the peers' installation and data (kept, and reused: a second run
    /// skips `npm install`; glewlwyd's database and key are made afresh each run). Default: a
    /// temporary directory, removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds each measurement records (after a 1 s warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Interleaved rounds (each round measures every scenario on every system in turn).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Connections for the read scenarios (`refresh` uses 16, `login` 4).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Run only these scenarios (comma-separated: cheapest, bearer-read, opaque-token, refresh,
    /// login).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Measure only these peers beside cxauth (comma-separated: oidc-provider, glewlwyd).
    #[arg(long, value_delimiter = ',', default_values_t = [Peer::OidcProvider, Peer::Glewlwyd])]
    peers: Vec<Peer>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// A peer `cxauth-bench peers` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Peer {
    /// node oidc-provider, installed with npm into the work directory.
    OidcProvider,
    /// Debian's glewlwyd, installed with apt when missing.
    Glewlwyd,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Peer::OidcProvider => "oidc-provider",
            Peer::Glewlwyd => "glewlwyd",
        })
    }
}

impl Workload for Box<dyn Workload> {
    fn request(&mut self) -> Request<Full<Bytes>> {
        (**self).request()
    }
    fn response(&mut self, status: StatusCode, body: &Bytes) {
        (**self).response(status, body);
    }
}

/// A rotating refresh chain of any of the systems: each answer's refresh token (JSON field
/// `field`) is the next request's.
struct Chain {
    path: &'static str,
    prefix: String,
    field: &'static str,
    token: Arc<Mutex<String>>,
}

impl Workload for Chain {
    fn request(&mut self) -> Request<Full<Bytes>> {
        let t = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        post_form(self.path, format!("{}{t}", self.prefix), &[])
    }
    fn response(&mut self, status: StatusCode, body: &Bytes) {
        if status != StatusCode::OK {
            return;
        }
        if let Some(t) = json_str(body, self.field) {
            *self.token.lock().unwrap_or_else(|p| p.into_inner()) = t;
        }
    }
}

fn json_str(body: &[u8], field: &str) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get(field)?
        .as_str()
        .map(str::to_owned)
}

/// Makes the workloads of one measurement.
type Gen = Box<dyn Fn(usize) -> Vec<Box<dyn Workload>>>;

/// One system under test and its version of each scenario.
struct System {
    name: &'static str,
    server: Server,
    /// scenario → (what it sends, connections, generator).
    scenarios: BTreeMap<&'static str, (String, usize, Gen)>,
}

fn fixed_gen(w: Fixed) -> Gen {
    Box::new(move |n| {
        (0..n)
            .map(|_| Box::new(w.clone()) as Box<dyn Workload>)
            .collect()
    })
}

fn chain_gen(path: &'static str, prefix: String, field: &'static str, tokens: Vec<String>) -> Gen {
    let tokens: Vec<Arc<Mutex<String>>> = tokens
        .into_iter()
        .map(|t| Arc::new(Mutex::new(t)))
        .collect();
    Box::new(move |_| {
        tokens
            .iter()
            .map(|t| {
                Box::new(Chain {
                    path,
                    prefix: prefix.clone(),
                    field,
                    token: Arc::clone(t),
                }) as Box<dyn Workload>
            })
            .collect()
    })
}

fn form(path: &str, body: String) -> Fixed {
    Fixed {
        method: Method::POST,
        path: path.to_owned(),
        headers: vec![("content-type", "application/x-www-form-urlencoded".into())],
        body: Bytes::from(body),
    }
}

// ---------------------------------------------------------------- oidc-provider

/// Writes the peer's files into `dir` and runs `npm install` there unless already done.
pub(crate) fn install_oidc_provider(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("package.json"), OIDC_PACKAGE_JSON)?;
    std::fs::write(dir.join(OIDC_SERVER_FILE), OIDC_SERVER_JS)?;
    let have = |p: &str| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .is_file()
    };
    if have("oidc-provider") && have("@node-rs/argon2") {
        return Ok(());
    }
    progress(&format!("npm install in {}", dir.display()));
    let st = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .context("cannot run npm (node 20 or later and npm are needed)")?;
    if !st.success() {
        bail!("npm install failed in {}: {st}", dir.display());
    }
    Ok(())
}

fn package_version(dir: &Path, package: &str) -> String {
    let p = dir.join("node_modules").join(package).join("package.json");
    std::fs::read(p)
        .ok()
        .and_then(|b| json_str(&b, "version"))
        .unwrap_or_else(|| "?".into())
}

/// The cookies a response sets, folded into `jar` (an empty value deletes).
fn absorb_cookies(jar: &mut BTreeMap<String, String>, headers: &hyper::HeaderMap) {
    for v in headers.get_all(hyper::header::SET_COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        let pair = v.split(';').next().unwrap_or("");
        if let Some((k, val)) = pair.split_once('=') {
            if val.is_empty() {
                jar.remove(k.trim());
            } else {
                jar.insert(k.trim().to_owned(), val.to_owned());
            }
        }
    }
}

fn cookie_header(jar: &BTreeMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The path and query of an absolute or relative URL.
fn path_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

/// The `code` of a redirect to the client's redirect URI, if `url` is one.
fn code_of(url: &str) -> Option<String> {
    if !url.starts_with("http://127.0.0.1/cb?") {
        return None;
    }
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("code="))
        .map(str::to_owned)
}

/// Which prompt (`login` or `consent`) a dev-interactions page asks for.
fn prompt_of(page: &str) -> Option<&str> {
    let at = page.find("name=\"prompt\" value=\"")? + "name=\"prompt\" value=\"".len();
    let rest = &page[at..];
    Some(&rest[..rest.find('"')?])
}

/// The authorization-code flow through the peer's dev interactions (login, then consent), then
/// the code exchanged at the token endpoint: (access token, refresh token).
async fn oidc_code_flow(addr: SocketAddr) -> anyhow::Result<(String, String)> {
    let mut jar = BTreeMap::new();
    let mut method = Method::GET;
    let mut path = format!(
        "/auth?client_id=bench&response_type=code&scope=openid%20offline_access&prompt=consent\
         &redirect_uri={OIDC_REDIRECT}"
    );
    let mut body = String::new();
    for _ in 0..16 {
        let mut b = Request::builder()
            .method(method.clone())
            .uri(path.as_str())
            .header("host", addr.to_string());
        if !jar.is_empty() {
            b = b.header("cookie", cookie_header(&jar));
        }
        if method == Method::POST {
            b = b.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = b.body(Full::new(Bytes::from(std::mem::take(&mut body))))?;
        let (status, headers, page) = load::once(addr, req).await?;
        absorb_cookies(&mut jar, &headers);
        if let Some(loc) = headers.get(hyper::header::LOCATION) {
            let loc = loc.to_str()?;
            if let Some(code) = code_of(loc) {
                return oidc_exchange(addr, &code).await;
            }
            method = Method::GET;
            path = path_of(loc).to_owned();
            continue;
        }
        let page = String::from_utf8_lossy(&page);
        match (status, prompt_of(&page)) {
            (StatusCode::OK, Some("login")) => {
                body = format!("prompt=login&login={OIDC_USER}&password=any");
            }
            (StatusCode::OK, Some("consent")) => body = "prompt=consent".into(),
            _ => bail!("oidc-provider: unexpected answer {status} at {path}: {page:.300}"),
        }
        method = Method::POST;
    }
    bail!("oidc-provider: the authorization-code flow did not end in 16 steps")
}

async fn oidc_exchange(addr: SocketAddr, code: &str) -> anyhow::Result<(String, String)> {
    let (status, _, body) = load::once(
        addr,
        post_form(
            "/token",
            format!(
                "{OIDC_CLIENT}&grant_type=authorization_code&code={code}&redirect_uri={OIDC_REDIRECT}"
            ),
            &[],
        ),
    )
    .await?;
    if status != StatusCode::OK {
        bail!(
            "oidc-provider: code exchange failed: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let get = |k| json_str(&body, k).with_context(|| format!("no {k} in the token answer"));
    Ok((get("access_token")?, get("refresh_token")?))
}

/// oidc-provider set up in `dir` and started on `core`.
fn oidc_system(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    conns: usize,
    core: usize,
) -> anyhow::Result<System> {
    let mut cmd = Command::new("node");
    cmd.arg(OIDC_SERVER_FILE)
        .current_dir(dir)
        .env("NODE_ENV", "production")
        .env("PEER_PASSWORD", ADMIN_PASSWORD);
    let server = spawn_and_wait(
        pinned(&cmd, core),
        "oidc-provider",
        &dir.join("oidc-provider.log"),
    )?;
    let addr = server.addr;
    let (access, _) = rt.block_on(oidc_code_flow(addr))?;
    let mut chains = Vec::new();
    for _ in 0..16 {
        chains.push(rt.block_on(oidc_code_flow(addr))?.1);
    }
    let bearer = vec![("authorization", format!("Bearer {access}"))];
    let mut s: BTreeMap<&'static str, (String, usize, Gen)> = BTreeMap::new();
    s.insert(
        "cheapest",
        (
            "GET /.well-known/openid-configuration".into(),
            conns,
            fixed_gen(Fixed::get("/.well-known/openid-configuration", vec![])),
        ),
    );
    s.insert(
        "bearer-read",
        (
            "GET /me (userinfo), opaque Bearer".into(),
            conns,
            fixed_gen(Fixed::get("/me", bearer)),
        ),
    );
    s.insert(
        "opaque-token",
        (
            "POST /token/introspection".into(),
            conns,
            fixed_gen(form(
                "/token/introspection",
                format!("{OIDC_CLIENT}&token={access}"),
            )),
        ),
    );
    s.insert(
        "refresh",
        (
            "POST /token refresh_token (rotating, in memory)".into(),
            16,
            chain_gen(
                "/token",
                format!("{OIDC_CLIENT}&grant_type=refresh_token&refresh_token="),
                "refresh_token",
                chains,
            ),
        ),
    );
    s.insert(
        "login",
        (
            "POST /token password grant (@node-rs/argon2)".into(),
            4,
            fixed_gen(form(
                "/token",
                format!(
                    "{OIDC_CLIENT}&grant_type=password&username={OIDC_USER}\
                     &password={ADMIN_PASSWORD}&scope=openid%20offline_access"
                ),
            )),
        ),
    );
    Ok(System {
        name: "oidc-provider",
        server,
        scenarios: s,
    })
}

// ---------------------------------------------------------------- cxauth

/// cxauth (the binary `bin`) on a fresh database in `dir`, started on `core`.
fn cxauth_system(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    dir: &Path,
    conns: usize,
    core: usize,
) -> anyhow::Result<System> {
    let db = dir.join("cxauth.db");
    let server = Server::cxauth(bin, &db, "info", Some(core))?;
    let addr = server.addr;
    let (access, _) = rt.block_on(login(addr))?;
    let api = rt.block_on(create_api_token(addr, &access))?;
    let mut chains = Vec::new();
    for _ in 0..16 {
        chains.push(rt.block_on(login(addr))?.1);
    }
    let mut s: BTreeMap<&'static str, (String, usize, Gen)> = BTreeMap::new();
    s.insert(
        "cheapest",
        (
            "GET /healthz".into(),
            conns,
            fixed_gen(Fixed::get("/healthz", vec![])),
        ),
    );
    s.insert(
        "bearer-read",
        (
            "GET accounts, Bearer JWT".into(),
            conns,
            fixed_gen(Fixed::get(
                ACCOUNTS,
                vec![("authorization", format!("Bearer {access}"))],
            )),
        ),
    );
    s.insert(
        "opaque-token",
        (
            "GET accounts, X-Auth-Token".into(),
            conns,
            fixed_gen(Fixed::get(ACCOUNTS, vec![("x-auth-token", api)])),
        ),
    );
    s.insert(
        "refresh",
        (
            "POST /api/auth/token/refresh (rotating, durable)".into(),
            16,
            chain_gen(
                "/api/auth/token/refresh",
                "refresh_token=".into(),
                "refreshToken",
                chains,
            ),
        ),
    );
    s.insert(
        "login",
        (
            "POST /api/auth/login/admin (Argon2id)".into(),
            4,
            fixed_gen(form("/api/auth/login/admin", login_body())),
        ),
    );
    Ok(System {
        name: "cxauth",
        server,
        scenarios: s,
    })
}

// ---------------------------------------------------------------- measuring

/// What the rounds of one (scenario, system) added up to.
#[derive(Default)]
struct Acc {
    stats: Stats,
    cpu_s: f64,
    /// Answers over warm-up and measurement (the CPU figure's denominator).
    answers: f64,
    peak_rss_mb: f64,
    what: String,
    conns: usize,
}

fn progress(msg: &str) {
    eprintln!("cxauth-bench peers: {msg}");
}

/// `cxauth-bench peers`.
pub fn peers(opts: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let temp;
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("cxauth-bench-peers-")
                .tempdir()?;
            temp.path().to_owned()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let uptime_before = uptime();
    let want_op = opts.peers.contains(&Peer::OidcProvider);
    let want_gl = opts.peers.contains(&Peer::Glewlwyd);
    if want_op {
        install_oidc_provider(&dir.join("oidc-provider"))?;
    }
    if want_gl {
        glewlwyd::install()?;
    }
    // The servers on the first core this process may use, and this process (the load
    // generator) on the second; with one core, both on it.
    let allowed = allowed_cores()?;
    let pair = Cores::pick(&allowed).ok();
    let server_core = match pair {
        Some(pair) => pair.server,
        None => *allowed.first().context("this process may run on no core")?,
    };
    let pinning = if let Some(pair) = pair {
        pin_self(pair.generator)?;
        pair.describe()
    } else {
        "not pinned: fewer than 2 cores".to_owned()
    };
    let mut machine = machine(1);
    // Counted before pinning (which leaves this process one core).
    machine.cores = cores;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let conns = opts.connections.max(1);
    let cx_dir = dir.join("cxauth");
    // A fresh database each run.
    let _ = std::fs::remove_dir_all(&cx_dir);
    std::fs::create_dir_all(&cx_dir)?;
    progress("starting cxauth (pinned), logging in 17 sessions");
    // Found, and a debug build warned about, once: the systems line below asks it its version.
    let (cx_bin, cx_version) = cxauth_binary()?;
    let mut systems = vec![cxauth_system(&rt, &cx_bin, &cx_dir, conns, server_core)?];
    if want_op {
        progress("starting oidc-provider (pinned), 17 authorization-code flows");
        systems.push(oidc_system(
            &rt,
            &dir.join("oidc-provider"),
            conns,
            server_core,
        )?);
    }
    let mut calibration = None;
    if want_gl {
        progress(&match pair {
            Some(pair) => format!(
                "measuring one cxauth Argon2id check (on core {})",
                pair.generator
            ),
            None => "measuring one cxauth Argon2id check".to_owned(),
        });
        let argon2id = glewlwyd::argon2id_check_seconds()?;
        progress("starting glewlwyd (pinned), provisioning it, calibrating PBKDF2, 17 logins");
        let (sys, cal) =
            glewlwyd::system(&rt, &dir.join("glewlwyd"), conns, argon2id, server_core)?;
        systems.push(sys);
        calibration = Some(cal);
    }

    let warmup = Duration::from_secs(1);
    let duration = Duration::from_secs_f64(opts.duration.max(0.1));
    let wanted = |s: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == s);
    let mut acc: BTreeMap<(usize, usize), Acc> = BTreeMap::new();
    for round in 0..opts.rounds.max(1) {
        for (si, sc) in SCENARIOS.iter().enumerate() {
            if !wanted(sc) {
                continue;
            }
            // Alternate which system goes first, so neither always follows the other.
            for k in 0..systems.len() {
                let yi = (k + round) % systems.len();
                let sys = &systems[yi];
                let Some((what, n, make)) = sys.scenarios.get(sc) else {
                    continue;
                };
                progress(&format!("round {} {sc} {}", round + 1, sys.name));
                sys.server.reset_peak();
                let cpu0 = sys.server.cpu_seconds();
                let s = rt.block_on(load::run(
                    sys.server.addr,
                    make(*n),
                    Pace::Closed,
                    warmup,
                    duration,
                ));
                let cpu = sys.server.cpu_seconds() - cpu0;
                let a = acc.entry((si, yi)).or_default();
                a.what.clone_from(what);
                a.conns = *n;
                a.cpu_s += cpu;
                a.answers +=
                    s.ok as f64 * (duration + warmup).as_secs_f64() / duration.as_secs_f64();
                a.peak_rss_mb = a.peak_rss_mb.max(sys.server.peak_rss_mb());
                a.stats.elapsed += s.elapsed;
                a.stats.merge(s);
            }
        }
    }
    machine.loadavg_after = loadavg();
    let uptime_after = uptime();

    let mut rows = Vec::new();
    for (si, sc) in SCENARIOS.iter().enumerate() {
        let cx_cpu = acc
            .get(&(si, 0))
            .map(|a| a.cpu_s * 1e6 / a.answers.max(1.0));
        for (yi, sys) in systems.iter().enumerate() {
            let Some(a) = acc.get_mut(&(si, yi)) else {
                continue;
            };
            let cpu_us = a.cpu_s * 1e6 / a.answers.max(1.0);
            rows.push(Row {
                scenario: format!("{sc} {}", sys.name),
                load: format!("{} c={}", a.what, a.conns),
                throughput: a.stats.throughput(),
                p50_ms: a.stats.quantile_ms(0.5),
                p99_ms: a.stats.quantile_ms(0.99),
                max_ms: a.stats.quantile_ms(1.0),
                errors: a.stats.errors(),
                peak_rss_mb: a.peak_rss_mb,
                server_cpu_us: cpu_us,
                generator_cpu_pct: f64::NAN,
                server_core_pct: f64::NAN,
                server_p99_ms: f64::NAN,
                steal_pct: f64::NAN,
                reference: "CPU/req vs cxauth".into(),
                ratio: cx_cpu.map_or(f64::NAN, |c| cpu_us / c),
                target: "-".into(),
                met: None,
            });
        }
    }
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let op_dir = dir.join("oidc-provider");
    // The binary measured says what it is: a build copied beside the harness for an A/B need
    // not be the harness's own version or profile.
    let mut described = vec![format!("{cx_version}, SQLite, RUST_LOG=info")];
    if want_op {
        described.push(format!(
            "oidc-provider {} with @node-rs/argon2 {} on node {node} (NODE_ENV=production, \
             in-memory Map adapter)",
            package_version(&op_dir, "oidc-provider"),
            package_version(&op_dir, "@node-rs/argon2"),
        ));
    }
    if want_gl {
        described.push(format!(
            "glewlwyd {} (Debian, SQLite, EdDSA JWTs, log level INFO to a file)",
            glewlwyd::version()
        ));
    }
    let mut facts = vec![("systems".into(), described.join("; "))];
    if let Some(c) = &calibration {
        facts.push((
            "glewlwyd PBKDF2".into(),
            format!(
                "{} iterations: cxauth's Argon2id check took {:.1} ms of CPU here, the same \
                 PBKDF2 work {:.1} ms by the two-probe fit; a whole password grant {:.1} ms",
                c.iterations, c.argon2id_ms, c.pbkdf2_ms, c.grant_ms
            ),
        ));
    }
    facts.extend([
        ("pinning".into(), pinning),
        (
            "rounds".into(),
            format!(
                "{} interleaved rounds of 1 s warm-up + {:.0} s per scenario and system; \
                 req/s over all rounds, latencies pooled, CPU from /proc/PID/stat",
                opts.rounds.max(1),
                duration.as_secs_f64()
            ),
        ),
        ("uptime before".into(), uptime_before),
        ("uptime after".into(), uptime_after),
        (
            "total run time".into(),
            format!("{:.0} s", started.elapsed().as_secs_f64()),
        ),
    ]);
    let report = Report {
        mode: "peers".into(),
        machine,
        rows,
        facts,
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    for s in systems {
        s.server.stop()?;
    }
    Ok(())
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| loadavg())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_collected_and_deleted() {
        let mut h = hyper::HeaderMap::new();
        h.append(
            "set-cookie",
            "_interaction=abc; path=/interaction/x; httponly"
                .parse()
                .expect("present"),
        );
        h.append(
            "set-cookie",
            "_session=s1; path=/".parse().expect("a valid header"),
        );
        let mut jar = BTreeMap::new();
        absorb_cookies(&mut jar, &h);
        assert_eq!(cookie_header(&jar), "_interaction=abc; _session=s1");
        let mut h = hyper::HeaderMap::new();
        h.append(
            "set-cookie",
            "_interaction=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT"
                .parse()
                .expect("present"),
        );
        absorb_cookies(&mut jar, &h);
        assert_eq!(cookie_header(&jar), "_session=s1");
    }

    #[test]
    fn redirects_are_followed_by_path_and_the_code_is_taken() {
        assert_eq!(
            path_of("http://127.0.0.1:4567/interaction/abc"),
            "/interaction/abc"
        );
        assert_eq!(path_of("/auth/abc"), "/auth/abc");
        assert_eq!(path_of("http://127.0.0.1:4567"), "/");
        assert_eq!(
            code_of("http://127.0.0.1/cb?code=OK_-x&iss=http%3A%2F%2F127.0.0.1").as_deref(),
            Some("OK_-x")
        );
        assert_eq!(code_of("http://127.0.0.1:4567/interaction/abc"), None);
    }

    #[test]
    fn the_dev_interaction_prompt_is_read() {
        let page = r#"<form action="/interaction/x" method="post">
  <input type="hidden" name="prompt" value="consent"/>"#;
        assert_eq!(prompt_of(page), Some("consent"));
        assert_eq!(prompt_of("<html></html>"), None);
    }

    #[test]
    fn the_peer_files_are_consistent() {
        let pkg: serde_json::Value =
            serde_json::from_str(OIDC_PACKAGE_JSON).expect("package.json is JSON");
        assert!(
            pkg["dependencies"]["oidc-provider"]
                .as_str()
                .expect("present")
                .starts_with("^9.")
        );
        assert!(pkg["dependencies"]["@node-rs/argon2"].is_string());
        // The server's parameters are cxauth's: Argon2id, 19 MiB, t=2, p=1.
        for needle in [
            "Algorithm.Argon2id",
            "memoryCost: 19456",
            "timeCost: 2",
            "parallelism: 1",
            "rotateRefreshToken: true",
            "cxauth: listening on http://",
            "bench-secret-0123456789",
        ] {
            assert!(OIDC_SERVER_JS.contains(needle), "{needle}");
        }
        assert!(OIDC_CLIENT.contains("bench-secret-0123456789"));
    }

    #[test]
    fn pinned_keeps_program_arguments_and_environment() {
        let mut c = Command::new("node");
        c.arg("x.mjs")
            .env("A", "1")
            .env_remove("B")
            .current_dir("/tmp");
        let p = pinned(&c, 0);
        let args: Vec<_> = p
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(p.get_program(), "taskset");
        assert_eq!(args, ["-c", "0", "node", "x.mjs"]);
        assert_eq!(p.get_current_dir(), Some(Path::new("/tmp")));
        let envs: Vec<_> = p.get_envs().collect();
        assert!(envs.contains(&(std::ffi::OsStr::new("A"), Some(std::ffi::OsStr::new("1")))));
        assert!(envs.contains(&(std::ffi::OsStr::new("B"), None)));
    }
}
