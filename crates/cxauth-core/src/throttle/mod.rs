//! Login throttling: budgets reserved before a password is checked, a separate budget for
//! addresses a user has logged in from before, a fair share of the password pool per source, and
//! a rate limit on successful logins.
//!
//! **Reservation.** An attempt takes its place in its budgets *before* its password is checked:
//! the reservation counts as a failure at once and is handed back if the password was right (or
//! was never checked). So no amount of concurrency buys more checks than the budget: of 80
//! guesses sent at once, the first `free_failures` reserve and every later one finds the budget
//! spent. A reservation lost to a crash or a dropped connection stays counted as a failure,
//! which errs on the safe side.
//!
//! **Budgets.** Three, because they stop different attacks:
//! - per client address (an IPv6 address counts by its /64: one host holds a whole /64): stops
//!   one source guessing many passwords or spraying many usernames; it grows to a long block;
//! - per username, for attempts from addresses the user never logged in from: stops many
//!   sources guessing one user's password; capped short (30 s), because anyone can spend it;
//! - per (username, address) for an address the user logged in from successfully before (in the
//!   last 30 days): the OWASP "device cookie" idea keyed by address. Such an attempt is counted
//!   only against this pair, so no failure from anywhere else — neither the username's budget
//!   nor the address's — can refuse the real user at a place they log in from.
//!
//! **Where the state lives.** Behind [`ThrottleTable`]: in this process's memory for SQLite (one
//! machine), in the database for PostgreSQL, so that any number of instances share one budget
//! and round-robin over them buys nothing.
//!
//! **Fair share and successes** are per instance, in memory: they protect this instance's
//! password pool, which is per instance too.

use crate::clock::{SharedClock, duration_ms};
use crate::store::StoreError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod table;

pub use table::{
    MemoryThrottleTable, StoreThrottleTable, ThrottleEntry, ThrottleTable, ThrottleUpdate,
};

/// How one budget behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures allowed before any delay.
    pub free_failures: u32,
    /// Wait after the last free failure; it doubles with each further failure.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
    /// A key with no failure for this long starts over.
    pub forget_after: Duration,
}

impl Policy {
    /// How long an attempt must wait after `failures` failures, in ms (0: none).
    fn delay_ms(&self, failures: u32) -> i64 {
        if failures < self.free_failures || failures == 0 {
            return 0;
        }
        let doublings = (failures - self.free_failures).min(30);
        duration_ms(self.base)
            .saturating_mul(1_i64 << doublings)
            .min(duration_ms(self.max))
    }
}

/// Every throttling setting.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Per username, from addresses the user never logged in from (short cap: anyone can spend it).
    pub per_username: Policy,
    /// Per client address.
    pub per_address: Policy,
    /// Per (username, address) once the user logged in from that address.
    pub per_known_address: Policy,
    /// How long a successful login makes its address known for the user.
    pub remember_address_for: Duration,
    /// Most known addresses kept per user (the most recent ones).
    pub known_addresses_per_user: u32,
    /// Most password checks one username, or one address, may have running or queued at once on
    /// this instance: its share of the password pool. Beyond it: 429, not a full pool for all.
    pub in_flight_per_source: usize,
    /// Successful logins allowed per user and minute on this instance (0: no limit).
    pub successes_per_minute: u32,
    /// Most keys held in memory per table; beyond it, stale entries are purged first, then new
    /// keys are refused (fail closed), so the table cannot be grown without bound.
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
                free_failures: 10,
                base: Duration::from_secs(1),
                max: Duration::from_secs(15 * 60),
                forget_after: Duration::from_secs(60 * 60),
            },
            per_known_address: Policy {
                // Spendable only from the user's own address (its NAT), so more room for the
                // user's own mistypes and parallel logins, and harder for a NAT-mate to spend.
                free_failures: 20,
                base: Duration::from_secs(1),
                max: Duration::from_secs(30),
                forget_after: Duration::from_secs(15 * 60),
            },
            remember_address_for: Duration::from_secs(30 * 24 * 60 * 60),
            known_addresses_per_user: 20,
            in_flight_per_source: 8,
            successes_per_minute: 30,
            max_entries: 100_000,
        }
    }
}

/// Why an attempt may not go ahead now.
#[derive(Debug)]
pub enum Refusal {
    /// A budget is spent, or the source already has its share of the pool: try after this.
    Wait(Duration),
    /// The throttle state could not be read or written (the database is down).
    Store(StoreError),
    /// The password pool refused the check (full): nothing was checked or counted.
    Pool(crate::password::PoolError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

/// The throttle keys of one attempt: keyed digests, so the database never holds an attempted
/// username (which may be a mistyped password) or an address in clear.
#[derive(Debug, Clone, Copy)]
pub struct AttemptKeys {
    /// The username (lowercased) or other subject.
    pub subject: [u8; 32],
    /// The client address (an IPv6 address by its /64).
    pub address: [u8; 32],
    /// The pair, for addresses the subject logged in from before.
    pub pair: [u8; 32],
}

/// The part of an address the throttle counts: an IPv4 address whole (also when mapped into
/// IPv6), an IPv6 address by its /64, since one host commonly holds a whole /64.
pub fn address_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let mut k = [0u8; 16];
            k[0] = 4;
            k[12..].copy_from_slice(&v4.octets());
            k
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => address_key(IpAddr::V4(v4)),
            None => {
                let mut k = [0u8; 16];
                k[0] = 6;
                k[8..].copy_from_slice(&v6.octets()[..8]);
                k
            }
        },
    }
}

/// Reserved budgets of an attempt in flight; see [`Throttle::settle`].
#[must_use = "settle the reservation once the password was checked"]
#[derive(Debug)]
pub struct Reservation {
    taken: Vec<([u8; 32], Policy)>,
}

/// A place in the fair share of the password pool; freed on drop.
#[derive(Debug)]
pub struct InFlight {
    table: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    keys: [[u8; 32]; 2],
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some(n) = map.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(k);
                }
            }
        }
    }
}

/// Successful logins of one subject: a token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: i64,
}

impl Bucket {
    /// Tokens held at `now` when `per_minute` come back each minute, up to `per_minute`.
    fn level(&self, now: i64, per_minute: u32) -> f64 {
        let capacity = f64::from(per_minute);
        (self.tokens + (now - self.at).max(0) as f64 * capacity / 60_000.0).min(capacity)
    }

    /// Whether the bucket is full again at `now`: it then means nothing and may be dropped.
    fn is_full(&self, now: i64, per_minute: u32) -> bool {
        self.level(now, per_minute) >= f64::from(per_minute)
    }
}

/// The login throttle: see the module documentation.
pub struct Throttle {
    clock: SharedClock,
    config: ThrottleConfig,
    table: Arc<dyn ThrottleTable>,
    in_flight: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    successes: Mutex<HashMap<[u8; 32], Bucket>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn take(e: Option<ThrottleEntry>, p: &Policy, now: i64) -> Option<ThrottleEntry> {
    let live = e.filter(|e| e.expires_at > now);
    if let Some(e) = live
        && e.blocked_until > now
    {
        return Some(e);
    }
    let previous = live.map_or(0, |e| {
        if now - e.last_failure >= duration_ms(p.forget_after) {
            0
        } else {
            e.failures
        }
    });
    let failures = previous.saturating_add(1);
    let delay = p.delay_ms(failures);
    let blocked_until = if delay > 0 {
        now.saturating_add(delay)
    } else {
        0
    };
    Some(ThrottleEntry {
        failures,
        last_failure: now,
        blocked_until,
        expires_at: now
            .saturating_add(duration_ms(p.forget_after))
            .max(blocked_until),
    })
}

fn give_back(e: Option<ThrottleEntry>, p: &Policy) -> Option<ThrottleEntry> {
    let e = e?;
    let failures = e.failures.saturating_sub(1);
    if failures == 0 {
        return None;
    }
    let delay = p.delay_ms(failures);
    let blocked_until = if delay > 0 {
        e.blocked_until.min(e.last_failure.saturating_add(delay))
    } else {
        0
    };
    Some(ThrottleEntry {
        failures,
        blocked_until,
        ..e
    })
}

impl Throttle {
    /// A throttle with `config`, keeping its budgets in `table`, reading time from `clock`.
    pub fn new(clock: SharedClock, config: ThrottleConfig, table: Arc<dyn ThrottleTable>) -> Self {
        Throttle {
            clock,
            config,
            table,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            successes: Mutex::new(HashMap::new()),
        }
    }

    /// A throttle keeping its budgets in this process's memory.
    pub fn in_memory(clock: SharedClock, config: ThrottleConfig) -> Self {
        let table = Arc::new(MemoryThrottleTable::new(clock.clone(), config.max_entries));
        Throttle::new(clock, config, table)
    }

    /// The settings in force.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// Takes a place in this instance's password pool for the attempt's subject and address,
    /// or refuses if either already holds its share.
    ///
    /// From a `known` address the pair takes the subject's place, so an attacker keeping a
    /// username's share busy from elsewhere does not hold up the real user at home.
    pub fn enter(&self, keys: &AttemptKeys, known: bool) -> Result<InFlight, Refusal> {
        let share = self.config.in_flight_per_source.max(1);
        let subject = if known { keys.pair } else { keys.subject };
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let held = |k: &[u8; 32]| map.get(k).copied().unwrap_or(0);
        if held(&subject) >= share || held(&keys.address) >= share {
            return Err(Refusal::Wait(Duration::from_secs(1)));
        }
        for k in [subject, keys.address] {
            *map.entry(k).or_insert(0) += 1;
        }
        Ok(InFlight {
            table: self.in_flight.clone(),
            keys: [subject, keys.address],
        })
    }

    /// Reserves the attempt's budgets: the pair's alone when the address is `known` for the
    /// subject, else the subject's and the address's. Refused while any of them is blocked.
    pub async fn reserve(&self, keys: &AttemptKeys, known: bool) -> Result<Reservation, Refusal> {
        let c = &self.config;
        if known {
            self.reserve_all(&[(keys.pair, c.per_known_address)]).await
        } else {
            self.reserve_all(&[
                (keys.subject, c.per_username),
                (keys.address, c.per_address),
            ])
            .await
        }
    }

    /// Reserves the address budget alone, for a check that has no username (a RingEX token
    /// presented for exchange): forged ones spend the address's budget like wrong passwords.
    pub async fn reserve_address(&self, address: &[u8; 32]) -> Result<Reservation, Refusal> {
        self.reserve_all(&[(*address, self.config.per_address)])
            .await
    }

    async fn reserve_all(&self, wanted: &[([u8; 32], Policy)]) -> Result<Reservation, Refusal> {
        let mut reservation = Reservation { taken: Vec::new() };
        for (key, policy) in wanted {
            let now = self.clock.now_ms();
            let old = match self.table.update(key, &|e| take(e, policy, now)).await {
                Ok(old) => old,
                Err(e) => {
                    self.release(reservation).await;
                    return Err(e.into());
                }
            };
            if let Some(e) = old.filter(|e| e.expires_at > now && e.blocked_until > now) {
                self.release(reservation).await;
                let ms = u64::try_from(e.blocked_until - now).unwrap_or(u64::MAX);
                return Err(Refusal::Wait(Duration::from_millis(ms)));
            }
            reservation.taken.push((*key, *policy));
        }
        Ok(reservation)
    }

    /// Ends an attempt: a `failed` one stays counted, any other gives its reservation back.
    pub async fn settle(&self, reservation: Reservation, failed: bool) {
        if !failed {
            self.release(reservation).await;
        }
    }

    async fn release(&self, reservation: Reservation) {
        for (key, policy) in &reservation.taken {
            if let Err(e) = self.table.update(key, &|e| give_back(e, policy)).await {
                // The reservation stays counted as a failure: safe, and it decays.
                tracing::warn!(error = %e, "cannot hand back a login throttle reservation");
            }
        }
    }

    /// Counts a successful login of `subject`: `Err(retry_after)` once it logged in
    /// `successes_per_minute` times in the last minute on this instance.
    pub fn take_success(&self, subject: &[u8; 32]) -> Result<(), Duration> {
        let per_minute = self.config.successes_per_minute;
        if per_minute == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let mut map = self.successes.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(subject) && map.len() >= self.config.max_entries {
            map.retain(|_, b| !b.is_full(now, per_minute));
        }
        let b = map.entry(*subject).or_insert(Bucket {
            tokens: f64::from(per_minute),
            at: now,
        });
        b.tokens = b.level(now, per_minute);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let per_ms = f64::from(per_minute) / 60_000.0;
            let ms = ((1.0 - b.tokens) / per_ms).ceil() as u64;
            Err(Duration::from_millis(ms.max(1)))
        }
    }

    /// Drops entries that no longer matter (the in-memory ones; the database's are purged with
    /// the other expired rows).
    pub fn purge(&self) {
        let now = self.clock.now_ms();
        self.table.purge(now);
        let per_minute = self.config.successes_per_minute;
        self.successes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, b| !b.is_full(now, per_minute));
    }
}

#[cfg(test)]
mod tests;
