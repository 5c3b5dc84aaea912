//! Debian's `glewlwyd` (2.7.5 in bookworm) as the second peer: a C identity server on SQLite,
//! whose OpenID Connect plugin signs Ed25519 JWT access tokens and keeps every token's state in
//! its database.
//!
//! Everything is scripted, nothing is clicked: the package comes from apt when missing; the
//! configuration (`peers/glewlwyd.conf`) and a fresh database (Debian's
//! `init.sqlite3.sql.gz`, which creates the `database` user back end and the `admin` user) go
//! into the work directory; the server starts on a free port; then, as `admin` through the admin
//! API, the harness creates the OIDC plugin instance (`peers/glewlwyd-oidc.json` with a new
//! Ed25519 key from `openssl`), the user, and sets the user back end's PBKDF2 iterations so that
//! one password check costs the CPU one of cxauth's Argon2id checks costs (measured in this run,
//! see [`calibrate`]).
//!
//! No client is registered: glewlwyd's password and refresh grants accept requests without
//! client authentication (a public client), which matches cxauth's login and refresh (neither
//! authenticates a client); with one, every grant would also pay a PBKDF2 check of the client's
//! password. Introspection is authenticated with the access token itself (the plugin's
//! "required scopes" option), for the same reason.

use super::{Gen, System, chain_gen, fixed_gen, form, json_str, pinned, progress};
use crate::load::{self, Fixed};
use crate::server::{ADMIN_PASSWORD, Server, spawn_and_wait};
use anyhow::{Context as _, bail};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The configuration template (`@PORT@`, `@LOG@`, `@DB@` filled in by [`config`]).
const CONF_TEMPLATE: &str = include_str!("../../peers/glewlwyd.conf");
/// The OIDC plugin instance, posted to `/api/mod/plugin/` with `iss`, `key` and `cert` filled in.
const PLUGIN_TEMPLATE: &str = include_str!("../../peers/glewlwyd-oidc.json");
/// Debian's schema and initial data (admin user, `database` user and client back ends).
const INIT_SQL: &str = "/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz";
/// The administrator the initial data creates (GETTING_STARTED.md).
const ADMIN: &str = r#"{"username":"admin","password":"password"}"#;
/// The user the scenarios log in as.
pub(super) const USER: &str = "bench-user";
/// The plugin's URL prefix: `/api/` + the instance name.
const OIDC: &str = "/api/oidc";
/// The iteration counts of the two calibration probes, and how many grants each measures.
const PROBES: [(u32, u32); 2] = [(1_000, 60), (100_000, 12)];

/// Installs `glewlwyd` (and the `sqlite3` and `openssl` programs the setup runs) with apt when
/// any is missing.
pub(super) fn install() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["glewlwyd", "sqlite3", "openssl"]
        .into_iter()
        .filter(|p| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {p}"))
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() && Path::new(INIT_SQL).is_file() {
        return Ok(());
    }
    let mut pkgs = missing.clone();
    if !pkgs.contains(&"glewlwyd") {
        pkgs.push("glewlwyd");
    }
    progress(&format!("apt-get install -y {}", pkgs.join(" ")));
    let st = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get (glewlwyd comes from Debian's archive; run as root)")?;
    if !st.success() {
        bail!("apt-get install {} failed: {st}", pkgs.join(" "));
    }
    Ok(())
}

/// The installed package's version, e.g. `2.7.5-3+deb12u1`.
pub(super) fn version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "glewlwyd"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

/// The configuration file for a server on `port` with its log and database at the given paths.
fn config(port: u16, log: &Path, db: &Path) -> String {
    CONF_TEMPLATE
        .replace("@PORT@", &port.to_string())
        .replace("@LOG@", &log.display().to_string())
        .replace("@DB@", &db.display().to_string())
}

/// The plugin instance to post: the template with the issuer and the Ed25519 key pair (PEM).
fn plugin(iss: &str, key_pem: &str, pub_pem: &str) -> anyhow::Result<serde_json::Value> {
    let mut p: serde_json::Value = serde_json::from_str(PLUGIN_TEMPLATE)?;
    let params = p
        .get_mut("parameters")
        .and_then(|v| v.as_object_mut())
        .context("the plugin template has no parameters")?;
    params.insert("iss".into(), iss.into());
    params.insert("key".into(), key_pem.into());
    params.insert("cert".into(), pub_pem.into());
    Ok(p)
}

/// A free loopback port (bound, read, released: glewlwyd takes its port from the configuration).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A fresh database from Debian's initial script (`gzip -dc INIT | sqlite3 DB`).
fn init_db(db: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(db);
    let mut gz = Command::new("gzip")
        .args(["-dc", INIT_SQL])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let sql = gz.stdout.take().context("gzip has no output")?;
    let out = Command::new("sqlite3")
        .arg(db)
        .stdin(sql)
        .output()
        .context("cannot run sqlite3")?;
    let gz_ok = gz.wait()?.success();
    if !out.status.success() || !gz_ok {
        bail!(
            "creating {} from {INIT_SQL} failed: {}",
            db.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A new Ed25519 key pair as PKCS#8 and SPKI PEM, from `openssl`.
fn ed25519_pem(dir: &Path) -> anyhow::Result<(String, String)> {
    let key = dir.join("oidc-ed25519.key");
    let public = dir.join("oidc-ed25519.pub");
    run(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key),
        "openssl genpkey",
    )?;
    run(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public),
        "openssl pkey",
    )?;
    Ok((
        std::fs::read_to_string(&key)?,
        std::fs::read_to_string(&public)?,
    ))
}

/// One admin-API call with the session cookie and an optional JSON body.
async fn admin(
    addr: SocketAddr,
    cookie: &str,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Bytes> {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(path)
        .header("host", addr.to_string())
        .header("cookie", cookie);
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(v)?)
        }
        None => Bytes::new(),
    };
    let (status, _, answer) = load::once(addr, b.body(Full::new(body))?).await?;
    if status != StatusCode::OK {
        bail!(
            "glewlwyd: {method} {path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(answer)
}

/// Logs in as `admin`, retrying while the server is still starting; the session cookie.
async fn admin_login(addr: SocketAddr) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/auth/")
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(ADMIN.as_bytes())))?;
        match load::once(addr, req).await {
            Ok((StatusCode::OK, headers, _)) => {
                let cookie = headers
                    .get_all(hyper::header::SET_COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find(|v| v.starts_with("GLEWLWYD2_SESSION_ID="))
                    .and_then(|v| v.split(';').next())
                    .context("glewlwyd: the admin login set no session cookie")?;
                return Ok(cookie.to_owned());
            }
            Ok((status, _, body)) => bail!(
                "glewlwyd: admin login: {status} {}",
                String::from_utf8_lossy(&body)
            ),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context("glewlwyd did not answer within 30 s"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Sets the `database` user back end's PBKDF2 iterations, reloads the back end (an update alone
/// leaves the running instance on the old count) and re-sets the user's password, whose stored
/// hash carries the count it was made with.
async fn set_iterations(addr: SocketAddr, cookie: &str, iterations: u32) -> anyhow::Result<()> {
    let path = "/api/mod/user/database";
    let mut m: serde_json::Value =
        serde_json::from_slice(&admin(addr, cookie, Method::GET, path, None).await?)?;
    m.get_mut("parameters")
        .and_then(|p| p.as_object_mut())
        .context("glewlwyd: the user back end has no parameters")?
        .insert("pbkdf2-iterations".into(), iterations.into());
    admin(addr, cookie, Method::PUT, path, Some(&m)).await?;
    admin(addr, cookie, Method::PUT, &format!("{path}/reset"), None).await?;
    let pw = serde_json::json!({ "password": ADMIN_PASSWORD });
    admin(
        addr,
        cookie,
        Method::PUT,
        &format!("/api/user/{USER}"),
        Some(&pw),
    )
    .await?;
    Ok(())
}

fn password_grant_body() -> String {
    format!("grant_type=password&username={USER}&password={ADMIN_PASSWORD}&scope=openid")
}

/// One password grant: (access token, refresh token).
async fn password_grant(addr: SocketAddr) -> anyhow::Result<(String, String)> {
    let (status, _, body) = load::once(
        addr,
        super::post_form(&format!("{OIDC}/token"), password_grant_body(), &[]),
    )
    .await?;
    if status != StatusCode::OK {
        bail!(
            "glewlwyd: password grant: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let get = |k| json_str(&body, k).with_context(|| format!("no {k} in the token answer"));
    Ok((get("access_token")?, get("refresh_token")?))
}

/// Server CPU seconds per password grant, over `n` grants in a row.
fn grant_cpu(rt: &tokio::runtime::Runtime, server: &Server, n: u32) -> anyhow::Result<f64> {
    let cpu0 = server.cpu_seconds();
    for _ in 0..n {
        rt.block_on(password_grant(server.addr))?;
    }
    Ok((server.cpu_seconds() - cpu0) / f64::from(n.max(1)))
}

/// CPU seconds this thread has run (`/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

/// CPU seconds of one of cxauth's password checks: `verify_with_memory` at cxauth's Argon2id
/// parameters, the call its login runs on the hashing pool, here on this thread (median of 9).
pub(super) fn argon2id_check_seconds() -> anyhow::Result<f64> {
    let pw = SecretString::from(ADMIN_PASSWORD.to_owned());
    let phc = cxauth_core::password::hash_password(&pw)?;
    let mut mem = cxauth_core::password::HashMemory::default();
    // The first check grows the memory, as the pool's first check does once per thread.
    if !cxauth_core::password::verify_with_memory(&phc, &pw, &mut mem) {
        bail!("cxauth's own hash did not verify");
    }
    let mut v: Vec<f64> = (0..9)
        .map(|_| {
            let t0 = thread_cpu_seconds();
            let ok = cxauth_core::password::verify_with_memory(&phc, &pw, &mut mem);
            let t = thread_cpu_seconds() - t0;
            if ok { t } else { f64::NAN }
        })
        .collect();
    v.sort_by(f64::total_cmp);
    let m = v[v.len() / 2];
    if !m.is_finite() || m <= 0.0 {
        bail!("cannot measure an Argon2id check's CPU time (/proc/thread-self/schedstat)");
    }
    Ok(m)
}

/// The iteration count whose PBKDF2 costs `target` CPU seconds, from two probes
/// `(iterations, CPU seconds per grant)`: the cost is taken as linear in the iterations, the
/// intercept being the grant's work besides hashing. At least 1,000 (glewlwyd's own minimum
/// advice is 100,000; a count this low would mean cxauth's check is nearly free).
fn iterations_for(target: f64, lo: (u32, f64), hi: (u32, f64)) -> Option<u32> {
    let per_iteration = (hi.1 - lo.1) / f64::from(hi.0.checked_sub(lo.0)?);
    if !per_iteration.is_finite() || per_iteration <= 0.0 || !target.is_finite() {
        return None;
    }
    let n = (target / per_iteration).round();
    Some(if n > f64::from(u32::MAX) {
        u32::MAX
    } else {
        (n as u32).max(1_000)
    })
}

/// What the calibration found, for the report.
pub(super) struct Calibration {
    pub(super) iterations: u32,
    pub(super) argon2id_ms: f64,
    pub(super) pbkdf2_ms: f64,
    pub(super) grant_ms: f64,
}

/// Measures the PBKDF2 cost per iteration with two probes, sets the count at which one
/// check costs what one of cxauth's Argon2id checks costs (`argon2id_s`), and measures a grant
/// at that count.
fn calibrate(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    cookie: &str,
    argon2id_s: f64,
) -> anyhow::Result<Calibration> {
    let mut probes = Vec::new();
    for (n, grants) in PROBES {
        rt.block_on(set_iterations(server.addr, cookie, n))?;
        // One unmeasured grant: the first after a reload opens the back end's statements.
        rt.block_on(password_grant(server.addr))?;
        probes.push((n, grant_cpu(rt, server, grants)?));
    }
    let iterations = iterations_for(argon2id_s, probes[0], probes[1]).with_context(|| {
        format!("glewlwyd: PBKDF2 cost not measurable from the probes {probes:?}")
    })?;
    rt.block_on(set_iterations(server.addr, cookie, iterations))?;
    rt.block_on(password_grant(server.addr))?;
    let grant = grant_cpu(rt, server, 8)?;
    let per_iteration = (probes[1].1 - probes[0].1) / f64::from(probes[1].0 - probes[0].0);
    Ok(Calibration {
        iterations,
        argon2id_ms: argon2id_s * 1e3,
        pbkdf2_ms: per_iteration * f64::from(iterations) * 1e3,
        grant_ms: grant * 1e3,
    })
}

/// Sets glewlwyd up in `dir` (fresh database, configuration, key), starts it pinned to `core`,
/// provisions it and calibrates its PBKDF2 against `argon2id_s`; the system and the calibration.
pub(super) fn system(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    conns: usize,
    argon2id_s: f64,
    core: usize,
) -> anyhow::Result<(System, Calibration)> {
    std::fs::create_dir_all(dir)?;
    let db = dir.join("glewlwyd.db");
    init_db(&db)?;
    let (key, public) = ed25519_pem(dir)?;
    let port = free_port()?;
    let conf = dir.join("glewlwyd.conf");
    std::fs::write(&conf, config(port, &dir.join("glewlwyd.log"), &db))?;
    // glewlwyd prints no address: the shell announces the configured one the way the harness
    // waits for, then becomes glewlwyd (`exec`), so the pid measured is glewlwyd's.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "echo 'cxauth: listening on http://127.0.0.1:{port}' >&2; exec glewlwyd --config-file=\"$0\""
        ))
        .arg(&conf)
        .current_dir(dir);
    let server = spawn_and_wait(pinned(&cmd, core), "glewlwyd", &dir.join("glewlwyd.out"))?;
    let addr = server.addr;
    let cookie = rt.block_on(admin_login(addr))?;
    let plugin = plugin(&format!("http://127.0.0.1:{port}"), &key, &public)?;
    rt.block_on(admin(
        addr,
        &cookie,
        Method::POST,
        "/api/mod/plugin/",
        Some(&plugin),
    ))?;
    let user = serde_json::json!({
        "username": USER,
        "name": "cxauth-bench",
        "password": ADMIN_PASSWORD,
        "scope": ["openid"],
        "enabled": true,
    });
    rt.block_on(admin(
        addr,
        &cookie,
        Method::POST,
        "/api/user/",
        Some(&user),
    ))?;
    let cal = calibrate(rt, &server, &cookie, argon2id_s)?;
    let (access, _) = rt.block_on(password_grant(addr))?;
    let mut chains = Vec::new();
    for _ in 0..16 {
        chains.push(rt.block_on(password_grant(addr))?.1);
    }
    let bearer = || vec![("authorization", format!("Bearer {access}"))];
    let mut s: BTreeMap<&'static str, (String, usize, Gen)> = BTreeMap::new();
    let discovery = "/api/oidc/.well-known/openid-configuration";
    s.insert(
        "cheapest",
        (
            format!("GET {discovery}"),
            conns,
            fixed_gen(Fixed::get(discovery, vec![])),
        ),
    );
    s.insert(
        "bearer-read",
        (
            "GET userinfo, EdDSA JWT (+ revocation lookup)".into(),
            conns,
            fixed_gen(Fixed::get(&format!("{OIDC}/userinfo"), bearer())),
        ),
    );
    let mut introspect = form(&format!("{OIDC}/introspect"), format!("token={access}"));
    introspect.headers.extend(bearer());
    s.insert(
        "opaque-token",
        (
            "POST introspect (JWT looked up in SQLite)".into(),
            conns,
            fixed_gen(introspect),
        ),
    );
    s.insert(
        "refresh",
        (
            "POST token refresh_token (one-use, SQLite)".into(),
            16,
            chain_gen(
                "/api/oidc/token",
                "grant_type=refresh_token&refresh_token=".into(),
                "refresh_token",
                chains,
            ),
        ),
    );
    s.insert(
        "login",
        (
            format!("POST token password grant (PBKDF2 {})", cal.iterations),
            4,
            fixed_gen(form(&format!("{OIDC}/token"), password_grant_body())),
        ),
    );
    Ok((
        System {
            name: "glewlwyd",
            server,
            scenarios: s,
        },
        cal,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_has_every_placeholder_filled() {
        let c = config(
            4321,
            Path::new("/w/glewlwyd.log"),
            Path::new("/w/glewlwyd.db"),
        );
        assert!(!c.contains('@'), "{c}");
        assert!(c.contains("port=4321\n"));
        assert!(c.contains("external_url=\"http://127.0.0.1:4321\""));
        assert!(c.contains("path = \"/w/glewlwyd.db\""));
        assert!(c.contains("log_file=\"/w/glewlwyd.log\""));
        // Without these three glewlwyd 2.7.5 refuses to start.
        assert!(c.contains("secure_connection_key_file="));
        assert!(c.contains("secure_connection_pem_file="));
        assert!(c.contains("secure_connection_ca_file="));
    }

    #[test]
    fn the_plugin_is_ed25519_with_rotating_refresh_and_the_password_grant() {
        let p = plugin("http://127.0.0.1:1", "KEY", "PUB").expect("the template is JSON");
        assert_eq!(p["module"], "oidc");
        // The instance name is the URL prefix the scenarios use.
        assert_eq!(
            format!("/api/{}", p["name"].as_str().expect("a name")),
            OIDC
        );
        let q = &p["parameters"];
        assert_eq!(q["iss"], "http://127.0.0.1:1");
        assert_eq!(q["key"], "KEY");
        assert_eq!(q["cert"], "PUB");
        assert_eq!(q["jwt-type"], "eddsa");
        assert_eq!(q["refresh-token-one-use"], "always");
        assert_eq!(q["auth-type-password-enabled"], true);
        assert_eq!(q["auth-type-refresh-enabled"], true);
        assert_eq!(q["introspection-revocation-allowed"], true);
        assert_eq!(q["introspection-revocation-auth-scope"][0], "openid");
    }

    #[test]
    fn iterations_follow_the_slope_between_the_probes() {
        // 2 ms of other work, 0.1 us per iteration: 20 ms of hashing is 200,000 iterations.
        let lo = (1_000, 0.002 + 1_000.0 * 1e-7);
        let hi = (100_000, 0.002 + 100_000.0 * 1e-7);
        assert_eq!(iterations_for(0.020, lo, hi), Some(200_000));
        // Never below 1,000.
        assert_eq!(iterations_for(1e-6, lo, hi), Some(1_000));
        // Noise that makes the slope flat or negative is refused, not turned into a count.
        assert_eq!(iterations_for(0.020, lo, (100_000, 0.001)), None);
        assert_eq!(iterations_for(0.020, lo, (1_000, 0.5)), None);
        assert_eq!(iterations_for(f64::NAN, lo, hi), None);
    }

    #[test]
    fn an_argon2id_check_costs_measurable_cpu() {
        let s = argon2id_check_seconds().expect("measurable");
        assert!(s > 0.0 && s < 60.0, "{s}");
    }
}
