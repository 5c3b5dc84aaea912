//! The login throttle under concurrency and hostility: bursts of parallel guesses from one
//! address and from many (real source addresses in 127.0.0.0/8), an attacker trying to lock the
//! real user out, one account flooding the password pool, two instances sharing one PostgreSQL
//! budget, the session cap and the rate limit on successful logins. Each campaign prints its
//! figures; ASSURANCE.md quotes them.

use cxauth_core::clock::ManualClock;
use cxauth_testkit::*;
use reqwest::StatusCode;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A client whose connections come from `source` (any address of 127.0.0.0/8 reaches the
/// server on 127.0.0.1).
fn client_from(source: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn source(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::from([127, a, b, c])
}

async fn login_status(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> (StatusCode, Option<u64>) {
    let res = client
        .post(format!("{base}/api/auth/login/admin"))
        .form(&[
            ("username", username),
            ("password", password),
            ("platformId", PLATFORM),
        ])
        .send()
        .await
        .expect("send");
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (res.status(), retry)
}

/// Sends every `(client, base, username, password)` attempt at once; returns the count of each
/// status. A 5xx fails the test: an attack must never make the server fail.
async fn burst(attempts: Vec<(reqwest::Client, String, String, String)>) -> BTreeMap<u16, usize> {
    let tasks: Vec<_> = attempts
        .into_iter()
        .map(|(c, base, u, p)| tokio::spawn(async move { login_status(&c, &base, &u, &p).await }))
        .collect();
    let mut counts = BTreeMap::new();
    for t in tasks {
        let (status, retry) = t.await.expect("task");
        assert!(!status.is_server_error(), "{status} during an attack");
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(retry.is_some(), "429 without Retry-After");
        }
        *counts.entry(status.as_u16()).or_insert(0) += 1;
    }
    counts
}

fn checked(counts: &BTreeMap<u16, usize>) -> usize {
    counts.get(&401).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_from_one_address_checks_at_most_the_address_budget() {
    let s = TestApp::spawn().await;
    let from = client_from(source(0, 3, 1));
    // 80 wrong passwords at once, each for its own username: the address budget (10) holds.
    let attempts = (0..80)
        .map(|i| {
            (
                from.clone(),
                s.base.clone(),
                format!("user{i}"),
                "wrong".into(),
            )
        })
        .collect();
    let counts = burst(attempts).await;
    eprintln!("burst of 80 from one address over 80 usernames: {counts:?}");
    assert!(checked(&counts) <= 10, "{counts:?}");
    assert!(checked(&counts) >= 1, "{counts:?}");

    // 80 at once against one user from a fresh address: the username budget (5) holds.
    let from = client_from(source(0, 3, 2));
    let attempts = (0..80)
        .map(|_| (from.clone(), s.base.clone(), "admin".into(), "wrong".into()))
        .collect();
    let counts = burst(attempts).await;
    eprintln!("burst of 80 from one address at one user: {counts:?}");
    assert!(checked(&counts) <= 5, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_from_many_addresses_check_at_most_twenty_passwords_of_one_user() {
    let s = TestApp::spawn().await;
    let mut total = 0;
    for round in 0..3u8 {
        // 60 guesses at once, each from its own address: 180 addresses over three rounds.
        let attempts = (0..60u8)
            .map(|i| {
                (
                    client_from(source(1, round, i + 1)),
                    s.base.clone(),
                    "admin".to_owned(),
                    format!("guess-{round}-{i}"),
                )
            })
            .collect();
        let counts = burst(attempts).await;
        eprintln!("round {round}: 60 addresses at once: {counts:?}");
        total += checked(&counts);
        // The attacker waits out the longest back-off before the next round.
        s.clock.advance(Duration::from_secs(31));
    }
    eprintln!("three bursts of 60 from 180 addresses: {total} passwords checked");
    assert!(total <= 20, "{total} passwords checked");
    assert!(total >= 5, "the first burst is checked up to the budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_real_user_is_never_locked_out_from_an_address_it_used_before() {
    let s = TestApp::spawn().await;
    let home = client_from(source(0, 5, 5));
    let (first, _) = login_status(&home, &s.base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(first, StatusCode::OK);

    // The attacker keeps the username's budget spent (one wrong password every 200 ms of
    // simulated time, from ever new addresses, in parallel bursts), and the real user logs in
    // from home every 3 s meanwhile.
    let mut ok = 0;
    let mut refused = 0;
    let mut attacker_checked = 0;
    for tick in 0..40u8 {
        let attempts = (0..15u8)
            .map(|i| {
                (
                    client_from(source(2, tick, i + 1)),
                    s.base.clone(),
                    "admin".to_owned(),
                    "wrong".to_owned(),
                )
            })
            .collect();
        let (counts, (real, _)) = tokio::join!(
            burst(attempts),
            login_status(&home, &s.base, "admin", ADMIN_PASSWORD)
        );
        attacker_checked += checked(&counts);
        match real {
            StatusCode::OK => ok += 1,
            _ => refused += 1,
        }
        s.clock.advance(Duration::from_secs(3));
    }
    eprintln!(
        "lock-out attempt: the real user got in {ok} of 40 times; the attacker's 600 guesses \
         reached {attacker_checked} password checks"
    );
    assert_eq!(refused, 0, "the real user was refused {refused} times");
    assert!(attacker_checked <= 5 + 40, "{attacker_checked}");

    // From an address never used before, the real user waits at most the short back-off.
    let new_place = client_from(source(0, 5, 6));
    let (status, retry) = login_status(&new_place, &s.base, "admin", ADMIN_PASSWORD).await;
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry.expect("Retry-After");
        assert!(wait <= 30, "waited {wait} s");
        s.clock.advance(Duration::from_secs(wait));
        let (status, _) = login_status(&new_place, &s.base, "admin", ADMIN_PASSWORD).await;
        assert_eq!(status, StatusCode::OK);
    } else {
        assert_eq!(status, StatusCode::OK);
    }
}

/// A login from an address remembered for its username writes nothing about it until that
/// would move the address's expiry by a step (an hour of the 30 days); the logins between keep
/// the address known. Each write sets the expiry 30 days and a step past its login, so the
/// address is never remembered for less than 30 days after its last login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_address_is_written_again_only_a_step_later() {
    use cxauth_core::clock::Clock as _;
    let s = TestApp::spawn().await;
    let home = client_from(source(0, 7, 7));
    let stored = || async {
        (
            s.db.count("SELECT COUNT(*) FROM login_addresses").await,
            s.db.count("SELECT MAX(last_login) FROM login_addresses")
                .await,
            s.db.count("SELECT MAX(expires_at) FROM login_addresses")
                .await,
        )
    };
    let (month, hour) = (30 * 24 * 3_600_000i64, 3_600_000i64);
    let login = || async {
        let (status, _) = login_status(&home, &s.base, "admin", ADMIN_PASSWORD).await;
        assert_eq!(status, StatusCode::OK);
    };
    let t0 = s.clock.now_ms();
    login().await;
    assert_eq!(
        stored().await,
        (1, t0, t0 + month + hour),
        "the first login"
    );
    // Within the step: nothing written, and the address stays known (its own budget: 20
    // failures from it spend neither the username's 5 nor refuse it).
    // 1, 30 and 59 minutes after the first login.
    for minutes in [1, 29, 29] {
        s.clock.advance(Duration::from_secs(60 * minutes));
        login().await;
        assert_eq!(
            stored().await,
            (1, t0, t0 + month + hour),
            "a login within the step wrote the address"
        );
    }
    for _ in 0..6 {
        let (status, _) = login_status(&home, &s.base, "admin", "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a known address's budget");
    }
    // Exactly a step after the first login it would move the expiry by nothing: no write;
    // a millisecond later it would: written, from this login.
    s.clock.advance(Duration::from_secs(60));
    login().await;
    assert_eq!(stored().await, (1, t0, t0 + month + hour), "at the step");
    s.clock.advance(Duration::from_millis(1));
    let t1 = s.clock.now_ms();
    login().await;
    assert_eq!(stored().await, (1, t1, t1 + month + hour), "past the step");
    // Eight logins at once from the address, within the next step: each gets in, and none of
    // them writes the row.
    s.clock.advance(Duration::from_secs(30 * 60));
    let logins: Vec<_> = (0..8)
        .map(|_| {
            let (home, base) = (home.clone(), s.base.clone());
            tokio::spawn(async move { login_status(&home, &base, "admin", ADMIN_PASSWORD).await })
        })
        .collect();
    for l in logins {
        assert_eq!(l.await.expect("join").0, StatusCode::OK);
    }
    assert_eq!(
        stored().await,
        (1, t1, t1 + month + hour),
        "a concurrent login within the step wrote the address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_account_cannot_starve_the_password_pool() {
    let s = TestApp::spawn_with(|c| {
        c.hash_workers = 1;
        c.hash_queue = 31;
        c.max_sessions_per_user = 20;
    })
    .await;
    s.create_user("bystander", Some("admin"), &[], &[]).await;
    let flooder = client_from(source(0, 7, 1));
    let attempts: Vec<_> = (0..200)
        .map(|_| {
            (
                flooder.clone(),
                s.base.clone(),
                "admin".to_owned(),
                ADMIN_PASSWORD.to_owned(),
            )
        })
        .collect();
    let flood = tokio::spawn(burst(attempts));
    // Meanwhile, another user logs in from elsewhere, 15 times.
    let other = client_from(source(0, 7, 2));
    let mut latencies = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        let (status, _) = login_status(&other, &s.base, "bystander", "bystander-pw").await;
        latencies.push(started.elapsed());
        assert_eq!(status, StatusCode::OK, "the other user's login");
    }
    let counts = flood.await.expect("flood");
    latencies.sort();
    eprintln!(
        "200 correct logins at once for one user: {counts:?}; another user's 15 logins meanwhile: \
         median {:?}, max {:?}",
        latencies[7], latencies[14]
    );
    assert_eq!(counts.get(&503), None, "no 503 for anyone");
    // One user's successes are rate-limited (30 a minute) and its sessions capped.
    assert!(counts.get(&200).copied().unwrap_or(0) <= 30, "{counts:?}");
    let live =
        s.db.count("SELECT COUNT(*) FROM sessions WHERE user_id = 1 AND revoked_at IS NULL")
            .await;
    assert!(live <= 20, "{live} live sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bogus_client_secrets_go_through_the_throttle() {
    let s = TestApp::spawn_with(|c| {
        c.ringex_emulator = true;
        c.hash_workers = 1;
        c.hash_queue = 31;
    })
    .await;
    let flooder = client_from(source(0, 8, 1));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let c = flooder.clone();
            let url = s.url("/restapi/oauth/token");
            tokio::spawn(async move {
                c.post(url)
                    .basic_auth(format!("client-{}", i % 3), Some("bogus"))
                    .form(&[
                        ("grant_type", "password"),
                        ("username", "x"),
                        ("password", "y"),
                    ])
                    .send()
                    .await
                    .expect("send")
                    .status()
            })
        })
        .collect();
    let other = client_from(source(0, 8, 2));
    let (status, _) = login_status(&other, &s.base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.expect("task").as_u16()).or_insert(0) += 1;
    }
    eprintln!("100 bogus client secrets at once: {counts:?}");
    assert_eq!(counts.get(&503), None, "{counts:?}");
    assert!(counts.get(&401).copied().unwrap_or(0) <= 10, "{counts:?}");
}

#[tokio::test]
async fn sessions_per_user_are_capped_oldest_ended_first() {
    let s = TestApp::spawn_with(|c| c.max_sessions_per_user = 3).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(s.login_admin().await);
        s.clock.advance(Duration::from_secs(1));
    }
    for (i, session) in sessions.iter().enumerate() {
        let r = s.client.list_api_tokens(&bearer(session)).await;
        assert_eq!(r.is_ok(), i >= 2, "session {i}: {r:?}");
    }
}

#[tokio::test]
async fn successful_logins_are_rate_limited_per_user() {
    let s = TestApp::spawn_with(|c| c.logins_per_user_per_minute = 4).await;
    let c = http();
    for _ in 0..4 {
        let (status, _) = login_status(&c, &s.base, "admin", ADMIN_PASSWORD).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, retry) = login_status(&c, &s.base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let wait = retry.expect("Retry-After");
    assert!((1..=15).contains(&wait), "{wait}");
    s.clock.advance(Duration::from_secs(wait));
    let (status, _) = login_status(&c, &s.base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_username_is_audited_only_as_a_digest() {
    let s = TestApp::spawn().await;
    let c = http();
    let typed = "my-secret-password-in-the-wrong-field";
    let (status, _) = login_status(&c, &s.base, typed, "x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = login_status(&c, &s.base, "admin", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let events = s.audit_trail().await;
    let names: Vec<_> = events
        .iter()
        .filter(|e| e.outcome == "failure")
        .filter_map(|e| e.username.clone())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| !n.contains(typed)), "{names:?}");
    assert!(names[0].starts_with("unknown-user:"), "{names:?}");
    assert_eq!(names[1], "admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgresql_share_one_budget() {
    // PostgreSQL whatever the selected backend: this is about instances sharing one database.
    let Some(db) = TestDb::postgres_or_skip().await else {
        return;
    };
    let clock = ManualClock::starting_now();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let config = config_for(&db).expect("config");
        instances.push(TestApp::start(db.clone(), config, clock.clone()).await);
    }
    let bases: Vec<String> = instances.iter().map(|s| s.base.clone()).collect();

    // 80 guesses at one user at once, from 80 addresses, alternating between the instances.
    let attempts = (0..80u8)
        .map(|i| {
            (
                client_from(source(3, 0, i + 1)),
                bases[usize::from(i % 2)].clone(),
                "admin".to_owned(),
                "wrong".to_owned(),
            )
        })
        .collect();
    let counts = burst(attempts).await;
    eprintln!("two instances, 80 addresses, one user: {counts:?}");
    assert!(checked(&counts) <= 5, "{counts:?}");

    // 80 at once from one address over 80 usernames, alternating: one address budget.
    let from = client_from(source(3, 1, 1));
    let attempts = (0..80u8)
        .map(|i| {
            (
                from.clone(),
                bases[usize::from(i % 2)].clone(),
                format!("user{i}"),
                "wrong".to_owned(),
            )
        })
        .collect();
    let counts = burst(attempts).await;
    eprintln!("two instances, one address, 80 usernames: {counts:?}");
    assert!(checked(&counts) <= 10, "{counts:?}");

    // The real user, at home on instance 0, still gets in on instance 1.
    let home = client_from(source(3, 2, 1));
    clock.advance(Duration::from_secs(31));
    let (status, _) = login_status(&home, &bases[0], "admin", ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let attempts = (0..20u8)
        .map(|i| {
            (
                client_from(source(3, 3, i + 1)),
                bases[usize::from(i % 2)].clone(),
                "admin".to_owned(),
                "wrong".to_owned(),
            )
        })
        .collect();
    let _ = burst(attempts).await;
    let (status, _) = login_status(&home, &bases[1], "admin", ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "known address, other instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_ringex_tokens_spend_the_address_budget() {
    let s = TestApp::spawn_with(|c| c.ringex_emulator = true).await;
    let from = client_from(source(0, 9, 1));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let c = from.clone();
            let url = s.url("/api/auth/login/rc/accesstoken");
            tokio::spawn(async move {
                c.post(url)
                    .form(&[
                        ("rcAccessToken", format!("forged-{i}")),
                        ("rcTokenType", "Bearer".into()),
                    ])
                    .send()
                    .await
                    .expect("send")
                    .status()
            })
        })
        .collect();
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.expect("task").as_u16()).or_insert(0) += 1;
    }
    eprintln!("40 forged RingEX tokens at once from one address: {counts:?}");
    // Each refused token reached the resolver (the RingEX server, when one is configured).
    assert!(counts.get(&401).copied().unwrap_or(0) <= 10, "{counts:?}");
    assert!(counts.get(&429).copied().unwrap_or(0) >= 30, "{counts:?}");
    // Another address is not affected.
    let other = client_from(source(0, 9, 2));
    let res = other
        .post(s.url("/api/auth/login/rc/accesstoken"))
        .form(&[("rcAccessToken", "forged"), ("rcTokenType", "Bearer")])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
