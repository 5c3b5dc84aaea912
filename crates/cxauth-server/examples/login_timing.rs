//! Measures whether a failed login's latency reveals that the user exists: the latency of
//! logins with an unknown username versus logins with a known username and a wrong password,
//! interleaved, over HTTP on loopback. Prints medians and their difference.
//!
//! `cargo run --release -p cxauth-server --example login_timing -- [ROUNDS]` (default 200).

use cxauth_core::clock::ManualClock;
use cxauth_server::App;
use cxauth_server::config::ServerConfig;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(200), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::new(cxauth_store::DatabaseUrl::parse(
        dir.path().join("timing.db").to_str().unwrap_or("timing.db"),
    )?);
    config.bootstrap_admin_password = Some(secrecy::SecretString::from("the-right-password"));
    // Each attempt comes from its own forwarded address so the address budget never throttles.
    config.trusted_proxies = vec!["127.0.0.1".parse()?];
    // A manual clock, moved past the username's longest back-off (30 s) before each round, so
    // every wrong password is checked rather than throttled.
    let clock = ManualClock::starting_now();
    let app = App::build(&config, clock.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(cxauth_server::serve(listener, app, std::future::pending()));
    let client = reqwest::Client::new();
    let login = |user: String, pw: &'static str, from: String| {
        let req = client
            .post(format!("{base}/api/auth/login/admin"))
            .header("x-forwarded-for", from)
            .form(&[
                ("username", user.as_str()),
                ("password", pw),
                ("platformId", "aws80"),
            ]);
        async move {
            let started = Instant::now();
            let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            (started.elapsed(), status)
        }
    };
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        clock.advance(Duration::from_secs(31));
        let from = |k: usize| format!("10.{}.{}.{}", k / 65_536 % 256, k / 256 % 256, k % 256);
        let (t, st) = login(format!("nobody-{i}"), "whatever", from(2 * i)).await;
        anyhow::ensure!(st == 401, "unknown user: status {st}");
        unknown.push(t);
        let (t, st) = login("admin".into(), "wrong-password", from(2 * i + 1)).await;
        anyhow::ensure!(st == 401, "wrong password: status {st}");
        wrong.push(t);
    }
    unknown.sort();
    wrong.sort();
    let (mu, mw) = (percentile(&unknown, 0.5), percentile(&wrong, 0.5));
    let diff = (mu.as_secs_f64() - mw.as_secs_f64()).abs() / mw.as_secs_f64() * 100.0;
    println!(
        "login timing over {rounds} interleaved rounds (HTTP on loopback, Argon2id m=19 MiB t=2 p=1):"
    );
    println!(
        "  unknown user:   p50 {:>8.2} ms  p90 {:>8.2} ms",
        mu.as_secs_f64() * 1e3,
        percentile(&unknown, 0.9).as_secs_f64() * 1e3
    );
    println!(
        "  wrong password: p50 {:>8.2} ms  p90 {:>8.2} ms",
        mw.as_secs_f64() * 1e3,
        percentile(&wrong, 0.9).as_secs_f64() * 1e3
    );
    println!("  difference of the medians: {diff:.2}% (target < 5%)");
    Ok(())
}
