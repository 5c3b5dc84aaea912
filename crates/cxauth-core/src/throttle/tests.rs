//! The throttle's unit tests.

use super::*;
use crate::clock::{Clock as _, ManualClock};

/// Test keys; each kind in its own namespace (byte 0), as the real digests are.
fn keys(subject: u8, address: u8) -> AttemptKeys {
    let key = |kind: u8, a: u8, b: u8| {
        let mut k = [a; 32];
        k[0] = kind;
        k[1] = b;
        k
    };
    AttemptKeys {
        subject: key(1, subject, 0),
        address: key(2, address, 0),
        pair: key(3, subject, address),
    }
}

fn throttle(clock: &Arc<ManualClock>) -> Throttle {
    Throttle::in_memory(clock.clone(), ThrottleConfig::default())
}

/// Reserves and, if granted, fails: returns whether the password would have been checked.
async fn guess(t: &Throttle, k: &AttemptKeys, known: bool) -> bool {
    match t.reserve(k, known).await {
        Ok(r) => {
            t.settle(r, true).await;
            true
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn username_backoff_doubles_and_is_capped_short() {
    let clock = ManualClock::starting_now();
    let t = throttle(&clock);
    for a in 1..=5 {
        assert!(guess(&t, &keys(1, a), false).await);
    }
    match t.reserve(&keys(1, 6), false).await {
        Err(Refusal::Wait(w)) => assert_eq!(w, Duration::from_secs(1)),
        other => panic!("{other:?}"),
    }
    let mut last = Duration::ZERO;
    for a in 7..40 {
        clock.advance(Duration::from_secs(31));
        assert!(guess(&t, &keys(1, a), false).await);
        let Err(Refusal::Wait(w)) = t.reserve(&keys(1, a), false).await else {
            panic!("blocked")
        };
        assert!(w >= last && w <= Duration::from_secs(30), "{w:?}");
        last = w;
    }
    assert_eq!(last, Duration::from_secs(30));
    // Another subject is not affected.
    assert!(guess(&t, &keys(2, 99), false).await);
}

#[tokio::test]
async fn concurrent_reservations_never_exceed_the_free_budget() {
    let clock = ManualClock::starting_now();
    let t = Arc::new(throttle(&clock));
    // 80 attempts at once from one address, each at its own username: the address budget
    // (10 free) is what limits them, however they interleave.
    let tasks: Vec<_> = (0..80u8)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                let k = AttemptKeys {
                    subject: [i; 32],
                    address: [200; 32],
                    pair: [i ^ 0x55; 32],
                };
                match t.reserve(&k, false).await {
                    Ok(r) => {
                        tokio::task::yield_now().await;
                        t.settle(r, true).await;
                        true
                    }
                    Err(_) => false,
                }
            })
        })
        .collect();
    let mut checked = 0;
    for task in tasks {
        checked += usize::from(task.await.expect("task"));
    }
    assert_eq!(checked, 10);
}

#[tokio::test]
async fn a_known_address_ignores_everyone_elses_failures() {
    let clock = ManualClock::starting_now();
    let t = throttle(&clock);
    // The attacker spends the user's budget and the address's.
    for a in 0..30 {
        let _ = guess(&t, &keys(1, a), false).await;
        let _ = guess(&t, &keys(a + 100, 7), false).await;
    }
    assert!(t.reserve(&keys(1, 7), false).await.is_err());
    // From address 7, which the user logged in from before, the pair budget alone counts.
    let r = t.reserve(&keys(1, 7), true).await.expect("known address");
    t.settle(r, false).await;
    // Its own failures there still back off.
    for _ in 0..20 {
        assert!(guess(&t, &keys(1, 7), true).await);
    }
    assert!(t.reserve(&keys(1, 7), true).await.is_err());
}

#[tokio::test]
async fn successes_give_their_reservation_back() {
    let clock = ManualClock::starting_now();
    let t = throttle(&clock);
    for _ in 0..4 {
        assert!(guess(&t, &keys(1, 1), false).await);
    }
    // A hundred right passwords do not spend the budget.
    for _ in 0..100 {
        let r = t.reserve(&keys(1, 1), false).await.expect("free");
        t.settle(r, false).await;
    }
    assert!(guess(&t, &keys(1, 1), false).await);
    assert!(t.reserve(&keys(1, 1), false).await.is_err());
}

#[tokio::test]
async fn address_backoff_grows_long_and_forgets() {
    let clock = ManualClock::starting_now();
    let t = throttle(&clock);
    for i in 0..40 {
        clock.advance(Duration::from_secs(31));
        let _ = guess(&t, &keys(i, 9), false).await;
    }
    let Err(Refusal::Wait(w)) = t.reserve(&keys(200, 9), false).await else {
        panic!("blocked")
    };
    assert!(
        w > Duration::from_secs(5 * 60) && w <= Duration::from_secs(15 * 60),
        "{w:?}"
    );
    assert!(guess(&t, &keys(200, 10), false).await);
    clock.advance(Duration::from_secs(2 * 60 * 60));
    t.purge();
    assert!(
        guess(&t, &keys(201, 9), false).await,
        "old failures forgotten"
    );
}

#[test]
fn fair_share_is_per_subject_and_per_address_and_freed_on_drop() {
    let clock = ManualClock::starting_now();
    let t = throttle(&clock);
    let held: Vec<_> = (0..8)
        .map(|a| t.enter(&keys(1, a), false).expect("share"))
        .collect();
    assert!(
        t.enter(&keys(1, 100), false).is_err(),
        "subject share spent"
    );
    assert!(
        t.enter(&keys(1, 100), true).is_ok(),
        "a known address has its own"
    );
    assert!(
        t.enter(&keys(2, 100), false).is_ok(),
        "another subject goes ahead"
    );
    drop(held);
    let from_one: Vec<_> = (0..8)
        .map(|s| t.enter(&keys(s + 10, 50), false).expect("share"))
        .collect();
    assert!(
        t.enter(&keys(99, 50), false).is_err(),
        "address share spent"
    );
    drop(from_one);
    assert!(t.in_flight.lock().expect("lock").is_empty());
}

#[test]
fn successful_logins_are_rate_limited_per_subject() {
    let clock = ManualClock::starting_now();
    let t = throttle(&clock);
    for _ in 0..30 {
        t.take_success(&[1; 32]).expect("within the limit");
    }
    let wait = t.take_success(&[1; 32]).expect_err("limited");
    assert!(wait <= Duration::from_secs(2), "{wait:?}");
    t.take_success(&[2; 32]).expect("another user");
    clock.advance(Duration::from_secs(2));
    t.take_success(&[1; 32]).expect("refilled");
}

#[tokio::test]
async fn the_memory_table_is_bounded() {
    let clock = ManualClock::starting_now();
    let cfg = ThrottleConfig {
        max_entries: 10,
        ..ThrottleConfig::default()
    };
    let t = Throttle::in_memory(clock.clone(), cfg);
    let table = MemoryThrottleTable::new(clock.clone(), 10);
    // Entries that block nobody make room for new keys.
    for i in 0..100u8 {
        let r = t.reserve(&keys(i, i), false).await.expect("room is made");
        t.settle(r, true).await;
    }
    // A table full of live blocks refuses new keys rather than forget them.
    let p = ThrottleConfig::default().per_username;
    let now = clock.now_ms();
    let block = |e| {
        let mut e = take(e, &p, now);
        if let Some(e) = e.as_mut() {
            e.blocked_until = now + 60_000;
        }
        e
    };
    for i in 0..10u8 {
        table.update(&[i; 32], &block).await.expect("room");
    }
    assert!(table.update(&[99; 32], &block).await.is_err());
    assert_eq!(table.len(), 10);
    clock.advance(Duration::from_secs(2 * 60 * 60));
    assert!(
        table.update(&[99; 32], &block).await.is_ok(),
        "expired entries make room"
    );
}

#[test]
fn ipv6_counts_by_its_slash_64_and_mapped_ipv4_as_ipv4() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
    let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
    assert_eq!(address_key(a), address_key(b));
    assert_ne!(address_key(a), address_key(c));
    let v4: IpAddr = "192.0.2.1".parse().expect("ip");
    let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
    assert_eq!(address_key(v4), address_key(mapped));
}
