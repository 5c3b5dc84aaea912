//! Login throttling: exponential back-off per username and per client address.
//!
//! Two separate budgets, because they stop two different attacks. The per-address budget stops
//! one source guessing many passwords (or spraying many usernames); it grows to a long block.
//! The per-username budget stops many sources guessing one user's password; it is capped short
//! (30 s by default), because anyone can spend it, including someone who wants to lock the real
//! user out. An attacker can therefore at worst make a user wait one short back-off before the
//! next try, never lock them out for long. Only failures count; a throttled attempt is refused
//! before its password is checked, so it costs no hashing and adds no failure.
//!
//! State is kept per process, in memory, with a bounded number of entries.

use crate::clock::{SharedClock, duration_ms};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// How one budget behaves.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed before any delay.
    pub free_failures: u32,
    /// Delay after the first failure past the free ones; it doubles with each further failure.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// A key with no failure for this long starts over.
    pub forget_after: Duration,
}

/// Both budgets.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Per username (short cap: anyone can spend it).
    pub per_username: Policy,
    /// Per client address.
    pub per_address: Policy,
    /// Most keys kept per budget; beyond it, stale entries are purged and new keys not tracked
    /// (the other budget still applies), so the table cannot be grown without bound.
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            per_username: Policy {
                free_failures: 5,
                base: Duration::from_secs(1),
                max: Duration::from_secs(30),
                forget_after: Duration::from_secs(15 * 60),
            },
            per_address: Policy {
                free_failures: 20,
                base: Duration::from_secs(1),
                max: Duration::from_secs(15 * 60),
                forget_after: Duration::from_secs(60 * 60),
            },
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: i64,
    blocked_until: i64,
}

struct Budget<K> {
    policy: Policy,
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K: std::hash::Hash + Eq + Clone> Budget<K> {
    fn new(policy: Policy) -> Self {
        Budget {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        // A panic while holding this lock cannot leave an entry half-updated (plain copies), so
        // a poisoned lock is still safe to use.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blocked_for(&self, key: &K, now: i64) -> Option<i64> {
        let map = self.lock();
        let e = map.get(key)?;
        (e.blocked_until > now).then(|| e.blocked_until - now)
    }

    fn fail(&self, key: &K, now: i64, max_entries: usize) {
        let p = self.policy;
        let mut map = self.lock();
        if !map.contains_key(key) && map.len() >= max_entries {
            let forget = duration_ms(p.forget_after);
            map.retain(|_, e| now - e.last_failure < forget);
            if map.len() >= max_entries {
                return;
            }
        }
        let e = map.entry(key.clone()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: 0,
        });
        if now - e.last_failure >= duration_ms(p.forget_after) {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if e.failures > p.free_failures {
            let doublings = (e.failures - p.free_failures - 1).min(30);
            let delay = duration_ms(p.base)
                .saturating_mul(1_i64 << doublings)
                .min(duration_ms(p.max));
            e.blocked_until = now.saturating_add(delay);
        }
    }

    fn clear(&self, key: &K) {
        self.lock().remove(key);
    }

    fn purge(&self, now: i64) {
        let forget = duration_ms(self.policy.forget_after);
        self.lock()
            .retain(|_, e| now - e.last_failure < forget || e.blocked_until > now);
    }
}

/// The login throttle.
pub struct Throttle {
    clock: SharedClock,
    users: Budget<String>,
    addrs: Budget<IpAddr>,
    max_entries: usize,
}

impl Throttle {
    /// A throttle with `config`, reading time from `clock`.
    pub fn new(clock: SharedClock, config: ThrottleConfig) -> Self {
        Throttle {
            clock,
            users: Budget::new(config.per_username),
            addrs: Budget::new(config.per_address),
            max_entries: config.max_entries,
        }
    }

    fn user_key(username: &str) -> String {
        username.to_lowercase()
    }

    /// `Err(retry_after)` if an attempt for `username` from `addr` must wait.
    pub fn check(&self, username: &str, addr: IpAddr) -> Result<(), Duration> {
        let now = self.clock.now_ms();
        let wait = [
            self.users.blocked_for(&Self::user_key(username), now),
            self.addrs.blocked_for(&addr, now),
        ]
        .into_iter()
        .flatten()
        .max();
        match wait {
            Some(ms) => Err(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))),
            None => Ok(()),
        }
    }

    /// Counts a failed login against both budgets.
    pub fn record_failure(&self, username: &str, addr: IpAddr) {
        let now = self.clock.now_ms();
        self.users
            .fail(&Self::user_key(username), now, self.max_entries);
        self.addrs.fail(&addr, now, self.max_entries);
    }

    /// A successful login clears the username's budget. The address budget is left to decay,
    /// so logging in to one's own account does not buy more guesses at others.
    pub fn record_success(&self, username: &str) {
        self.users.clear(&Self::user_key(username));
    }

    /// Drops entries that no longer matter.
    pub fn purge(&self) {
        let now = self.clock.now_ms();
        self.users.purge(now);
        self.addrs.purge(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn username_backoff_doubles_and_is_capped_short() {
        let clock = ManualClock::starting_now();
        let t = Throttle::new(clock.clone(), ThrottleConfig::default());
        let addrs: Vec<IpAddr> = (1..=40).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        for a in &addrs[..5] {
            assert!(t.check("alice", *a).is_ok());
            t.record_failure("alice", *a);
        }
        assert!(t.check("alice", addrs[5]).is_ok());
        t.record_failure("alice", addrs[5]);
        assert_eq!(t.check("Alice", addrs[6]), Err(Duration::from_secs(1)));
        let mut last = Duration::ZERO;
        for a in &addrs[6..30] {
            clock.advance(Duration::from_secs(31));
            assert!(t.check("alice", *a).is_ok());
            t.record_failure("alice", *a);
            let wait = t.check("alice", *a).expect_err("blocked");
            assert!(wait >= last && wait <= Duration::from_secs(30), "{wait:?}");
            last = wait;
        }
        assert_eq!(last, Duration::from_secs(30));
        // Another user is not affected, and success clears the budget.
        assert!(t.check("bob", addrs[39]).is_ok());
        t.record_success("alice");
        assert!(t.check("alice", addrs[39]).is_ok());
    }

    #[test]
    fn address_backoff_grows_long_and_forgets() {
        let clock = ManualClock::starting_now();
        let t = Throttle::new(clock.clone(), ThrottleConfig::default());
        let a = ip("192.0.2.1");
        for i in 0..40 {
            clock.advance(Duration::from_secs(31));
            let _ = t.check(&format!("user{i}"), a);
            t.record_failure(&format!("user{i}"), a);
        }
        let wait = t.check("someone-else", a).expect_err("blocked");
        assert_eq!(wait, Duration::from_secs(15 * 60));
        assert!(t.check("someone-else", ip("192.0.2.2")).is_ok());
        clock.advance(Duration::from_secs(2 * 60 * 60));
        t.purge();
        assert!(t.check("someone-else", a).is_ok());
        t.record_failure("x", a);
        assert!(t.check("x", a).is_ok(), "old failures forgotten");
    }

    #[test]
    fn table_size_is_bounded() {
        let clock = ManualClock::starting_now();
        let cfg = ThrottleConfig {
            max_entries: 10,
            ..ThrottleConfig::default()
        };
        let t = Throttle::new(clock.clone() as SharedClock, cfg);
        for i in 0..100 {
            t.record_failure(&format!("u{i}"), ip("192.0.2.9"));
        }
        assert!(t.users.lock().len() <= 10);
        let _ = Arc::strong_count(&clock);
    }
}
