//! A throttling campaign: 10,000 wrong-password attempts against one user, from one address and
//! from many, on the injected clock. The attacker is slowed as designed, and the real user on a
//! clean address still gets in within one short back-off. Prints its figures.

use cxauth_testkit::*;
use reqwest::StatusCode;
use std::time::Duration;

const ATTEMPTS: usize = 10_000;
/// Simulated time between two attacker attempts.
const STEP: Duration = Duration::from_millis(300);

async fn attempt(s: &TestApp, client: &reqwest::Client, from: &str, password: &str) -> StatusCode {
    client
        .post(s.url("/api/auth/login/admin"))
        .header("x-forwarded-for", from)
        .form(&[
            ("username", "admin"),
            ("password", password),
            ("platformId", "aws80"),
        ])
        .send()
        .await
        .expect("send")
        .status()
}

/// Runs the campaign; returns (attempts that reached a password check, simulated seconds).
async fn campaign(s: &TestApp, addr: impl Fn(usize) -> String) -> (usize, u64) {
    let client = http();
    let mut checked = 0;
    for i in 0..ATTEMPTS {
        match attempt(s, &client, &addr(i), "wrong").await {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
        s.clock.advance(STEP);
    }
    (checked, (STEP * ATTEMPTS as u32).as_secs())
}

/// The real user, from a clean address: at most one refusal, then in after its Retry-After.
async fn real_user_gets_in(s: &TestApp) -> u64 {
    let res = s
        .post("/api/auth/login/admin")
        .header("x-forwarded-for", "192.0.2.200")
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("platformId", "aws80"),
        ])
        .send()
        .await
        .expect("send");
    if res.status() == StatusCode::OK {
        return 0;
    }
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("ra")
        .parse()
        .expect("secs");
    assert!(
        wait <= 30,
        "the real user waits at most the username cap, not {wait} s"
    );
    s.clock.advance(Duration::from_secs(wait));
    assert_eq!(
        attempt(s, &http(), "192.0.2.200", ADMIN_PASSWORD).await,
        StatusCode::OK
    );
    wait
}

fn spawn() -> impl std::future::Future<Output = TestApp> {
    TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")])
}

#[tokio::test]
async fn one_address_ten_thousand_guesses() {
    let s = spawn().await;
    let (checked, secs) = campaign(&s, |_| "203.0.113.1".into()).await;
    let waited = real_user_gets_in(&s).await;
    eprintln!(
        "throttling, one address: {ATTEMPTS} attempts over {secs} simulated s, {checked} reached a \
         password check ({} refused with 429); the real user waited {waited} s",
        ATTEMPTS - checked
    );
    // 20 free failures, then doubling to the 15 min cap: over 3000 s that is about 32 checks.
    assert!(checked <= 40, "{checked}");
}

#[tokio::test]
async fn many_addresses_ten_thousand_guesses() {
    let s = spawn().await;
    let (checked, secs) = campaign(&s, |i| {
        format!("10.{}.{}.{}", i / 65_536 % 256, i / 256 % 256, i % 256)
    })
    .await;
    let waited = real_user_gets_in(&s).await;
    eprintln!(
        "throttling, {ATTEMPTS} addresses: {ATTEMPTS} attempts over {secs} simulated s, {checked} \
         reached a password check; the real user waited {waited} s"
    );
    // The username budget: 5 free failures, then doubling to 30 s: over 3000 s about 105.
    let bound = 5 + 5 + secs as usize / 30 + 1;
    assert!(checked <= bound, "{checked} > {bound}");
}
