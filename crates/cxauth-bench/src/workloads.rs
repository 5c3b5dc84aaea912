//! The requests the scenarios send (login, token creation, refresh chains, API-token cycles)
//! and the raw Argon2id reference the login scenario is compared with.

use crate::load::{self, Fixed, Workload};
use crate::server::ADMIN_PASSWORD;
use anyhow::{Context as _, bail};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The admin API endpoint every authenticated scenario calls.
pub(crate) const ACCOUNTS: &str = "/voice/api/v1/admin/accounts";

pub(crate) fn post_form(
    path: &str,
    body: String,
    headers: &[(&'static str, String)],
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(Bytes::from(body)))
        .expect("benchmark requests are well formed")
}

pub(crate) fn login_body() -> String {
    login_body_as("admin")
}

/// The login form of `username`, whose password is the admin's (seeded users share its hash).
fn login_body_as(username: &str) -> String {
    format!("username={username}&password={ADMIN_PASSWORD}&platformId=aws80")
}

/// Logs in as admin: (access token, refresh token).
pub(crate) async fn login(addr: SocketAddr) -> anyhow::Result<(String, String)> {
    login_as(addr, "admin").await
}

/// Logs in as `username` (the admin's password): (access token, refresh token).
pub(crate) async fn login_as(addr: SocketAddr, username: &str) -> anyhow::Result<(String, String)> {
    let (status, _, body) = load::once(
        addr,
        post_form("/api/auth/login/admin", login_body_as(username), &[]),
    )
    .await?;
    if status != StatusCode::OK {
        bail!("login failed: {status} {}", String::from_utf8_lossy(&body));
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let get = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_owned)
            .with_context(|| format!("no {k} in the login answer"))
    };
    Ok((get("accessToken")?, get("refreshToken")?))
}

pub(crate) async fn create_api_token(addr: SocketAddr, access: &str) -> anyhow::Result<String> {
    let (status, _, body) = load::once(
        addr,
        post_form(
            "/voice/api/v1/admin/token",
            String::new(),
            &[("authorization", format!("Bearer {access}"))],
        ),
    )
    .await?;
    if status != StatusCode::OK {
        bail!("token creation failed: {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Creates API tokens (`POST …/admin/token`, the RingCX call), as each of many users in turn:
/// spread so, no user reaches the cap on API tokens, and each creation counts a user's tokens
/// as a real one does, not every token the run has made.
pub(crate) struct CreateTokens {
    /// `Authorization` header values, one per user.
    pub(crate) bearers: Arc<Vec<String>>,
    pub(crate) next: usize,
}

impl Workload for CreateTokens {
    fn request(&mut self) -> Request<Full<Bytes>> {
        let bearer = &self.bearers[self.next % self.bearers.len()];
        self.next += 1;
        post_form(
            "/voice/api/v1/admin/token",
            String::new(),
            &[("authorization", bearer.clone())],
        )
    }
}

/// A refresh chain: each answer's refresh token is the next request's.
pub(crate) struct Refresh {
    pub(crate) token: Arc<Mutex<String>>,
}

impl Workload for Refresh {
    fn request(&mut self) -> Request<Full<Bytes>> {
        let t = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        post_form("/api/auth/token/refresh", format!("refresh_token={t}"), &[])
    }
    fn response(&mut self, status: StatusCode, body: &Bytes) {
        if status != StatusCode::OK {
            return;
        }
        if let Some(t) = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("refreshToken")?.as_str().map(str::to_owned))
        {
            *self.token.lock().unwrap_or_else(|p| p.into_inner()) = t;
        }
    }
}

/// Cycles through a list of API tokens, so look-ups hit the whole index.
pub(crate) struct ApiTokens {
    pub(crate) tokens: Arc<Vec<String>>,
    pub(crate) next: usize,
}

impl Workload for ApiTokens {
    fn request(&mut self) -> Request<Full<Bytes>> {
        let t = &self.tokens[self.next % self.tokens.len()];
        self.next += 1;
        x_auth_read(t)
    }
}

/// `GET` [`ACCOUNTS`] with `token` as `X-Auth-Token`.
fn x_auth_read(token: &str) -> Request<Full<Bytes>> {
    Fixed::get(ACCOUNTS, vec![("x-auth-token", token.to_owned())]).request()
}

/// `X-Auth-Token` reads of `tokens` in order, shared by every connection: each token is
/// presented once before any is presented again.
pub(crate) struct EachOnce {
    pub(crate) tokens: Arc<Vec<String>>,
    pub(crate) cursor: Arc<std::sync::atomic::AtomicUsize>,
}

impl Workload for EachOnce {
    fn request(&mut self) -> Request<Full<Bytes>> {
        let i = self
            .cursor
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        x_auth_read(&self.tokens[i % self.tokens.len()])
    }
}

pub(crate) fn fixed_n(w: &Fixed, n: usize) -> Vec<Fixed> {
    (0..n).map(|_| w.clone()).collect()
}

/// CPU time (user + system) this process has used, seconds.
pub(crate) fn own_cpu_seconds() -> f64 {
    crate::server::cpu_seconds_of("/proc/self/stat")
}

/// Raw Argon2id verifications per second on `threads` threads, same parameters as the server,
/// and the CPU time each took (comparable even when other work takes cores away). With `on`,
/// every thread hashes on that core (the pinned server's), not where the harness runs.
pub(crate) fn raw_argon2_rate(
    threads: usize,
    duration: Duration,
    on: Option<usize>,
) -> anyhow::Result<(f64, f64)> {
    let cpu0 = own_cpu_seconds();
    let pw = secrecy::SecretString::from(ADMIN_PASSWORD);
    let phc = cxauth_core::password::hash_password(&pw).context("hashing failed")?;
    let end = Instant::now() + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let phc = phc.clone();
            let pw = pw.clone();
            std::thread::spawn(move || {
                if let Some(cpu) = on {
                    crate::server::pin_this_thread(cpu)?;
                }
                let mut n = 0u64;
                // The server's own fastest path: one reused memory area per thread.
                let mut memory = cxauth_core::password::HashMemory::default();
                while Instant::now() < end {
                    if cxauth_core::password::verify_with_memory(&phc, &pw, &mut memory) {
                        n += 1;
                    }
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0u64;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("a raw Argon2id thread panicked"))??;
    }
    let cpu = own_cpu_seconds() - cpu0;
    Ok((
        total as f64 / duration.as_secs_f64(),
        cpu * 1e6 / (total.max(1) as f64),
    ))
}
