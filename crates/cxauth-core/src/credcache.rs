//! Credential state in memory, kept coherent with the database (issue 14).
//!
//! A bearer or `X-Auth-Token` request needs whether its session still stands (or whom its API
//! token belongs to), the user's record (enabled flag, roles, platform, main account) and, for
//! the accounts endpoint, the sub-accounts the user may use. Reading them from the database on
//! every request made two round trips per request; this cache answers them from memory.
//!
//! It stays correct in three ways:
//! - **At once on this instance**: every write of this process that ends or changes a
//!   credential announces its change-log row to the cache right after its commit, before it
//!   returns ([`crate::store::ChangeLogStore::on_local_credential_change`]); the request paths
//!   also forget what they affect themselves, including after a failed write.
//! - **Within a bound for writes made elsewhere** (another instance, `cxauth admin`): each such
//!   write adds a row to the database's change log in its own transaction
//!   ([`crate::store::ChangeLogStore`]); [`CredentialCache::follow`] reads the rows after the
//!   last one applied at least every half `staleness` (at once when PostgreSQL announces one)
//!   and forgets what they name.
//! - **Never staler than the bound**: entries are served only while the last successful read
//!   of the log began less than `staleness` ago; while the database cannot be read, every
//!   request goes to the database (and fails or succeeds as it does) until a read succeeds.
//!
//! A look-up that missed fills the cache only if nothing was forgotten since it began (an
//! epoch, [`Ticket`]), so an answer read before a revocation committed can never be stored
//! after the revocation was applied here. Only answers the database gave are stored (never an
//! error, never an unknown credential); each map holds at most `capacity` entries and is emptied
//! when full, so memory stays bounded whatever clients send. Legacy auth tokens slide (each use
//! extends them, a write), so they are not cached.

use crate::clock::SharedClock;
use crate::store::{
    AccountRow, ChangeKind, LocalChangeListener, SharedStore, Store, StoreError, UserRecord,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Change-log rows read at once; more are read in further batches of the same poll.
const CHANGES_BATCH: i64 = 1_000;
/// How long change-log rows are kept: far longer than any instance's poll interval, so only an
/// instance that could not read the log for this long finds a gap (and forgets everything).
pub const CHANGES_KEPT: Duration = Duration::from_secs(10 * 60);
/// How often the follower prunes the change log.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Default of the most entries in each of the cache's maps: a few MB at most.
pub const DEFAULT_ENTRIES: usize = 10_000;
/// Default staleness bound.
pub const DEFAULT_STALENESS: Duration = Duration::from_millis(250);

/// The sub-accounts a user may use, as the cache holds them, with the accounts endpoint's
/// answer made from them once. The answer is the same bytes for every request until the entry
/// is forgotten (which replaces it), so it is serialised once per entry rather than per request.
#[derive(Debug)]
pub struct UsableAccounts {
    /// The accounts, in the store's order.
    pub rows: Vec<AccountRow>,
    /// The JSON array of their wire form, once asked for.
    json: OnceLock<Arc<[u8]>>,
}

impl UsableAccounts {
    /// Holds `rows`; the answer is made on first use.
    pub fn new(rows: Vec<AccountRow>) -> Self {
        UsableAccounts {
            rows,
            json: OnceLock::new(),
        }
    }

    /// The accounts in their wire form, as the accounts endpoint lists them.
    pub fn wire(&self) -> Vec<cxauth_proto::Account> {
        self.rows
            .iter()
            .cloned()
            .map(crate::wire::account_to_wire)
            .collect()
    }

    /// The accounts endpoint's answer: [`Self::wire`] as a JSON array. Requests racing on a
    /// new entry may each serialise it, but all answer with the one kept.
    pub fn json(&self) -> Result<Arc<[u8]>, serde_json::Error> {
        if let Some(json) = self.json.get() {
            return Ok(json.clone());
        }
        let json: Arc<[u8]> = serde_json::to_vec(&self.wire())?.into();
        Ok(self.json.get_or_init(|| json).clone())
    }
}

/// The epoch a look-up began in; see [`CredentialCache::ticket`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// What the cache holds. One lock for all maps: reads are short and writes rare.
#[derive(Default)]
struct Maps {
    /// Bumped by every forget, so fills that began before it are refused.
    epoch: u64,
    /// Session id → (ended?, owner id).
    sessions: HashMap<String, (bool, i64)>,
    /// Keyed digest of an API token → (owner id, the token's row id, expiry in epoch ms if
    /// any). The expiry is checked by the caller on every hit, so an entry never outlives its
    /// token.
    api_tokens: HashMap<[u8; 32], (i64, i64, Option<i64>)>,
    /// User id → its record.
    users: HashMap<i64, Arc<UserRecord>>,
    /// User id → the sub-accounts it may use.
    accounts: HashMap<i64, Arc<UsableAccounts>>,
}

/// See the module documentation.
pub struct CredentialCache {
    /// Longest a change made elsewhere may go unnoticed; zero turns the cache off.
    staleness: Duration,
    /// Most entries of each map (zero turns the cache off).
    capacity: usize,
    maps: RwLock<Maps>,
    /// Start of the monotonic clock `fresh_until` counts from.
    origin: Instant,
    /// Entries may be served until this many ms after `origin` (0: not yet).
    fresh_until: AtomicU64,
    /// The last change-log row applied.
    last_seq: AtomicI64,
    /// Woken by a database announcement, so the follower reads the log at once.
    wake: Notify,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache")
            .field("staleness", &self.staleness)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

fn bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, capacity: usize) {
    if map.len() >= capacity {
        map.clear();
    }
}

impl CredentialCache {
    /// A cache serving entries at most `staleness` behind the database, each map holding at
    /// most `capacity` entries; either zero turns it off (every request reads the database).
    pub fn new(staleness: Duration, capacity: usize) -> Self {
        CredentialCache {
            staleness,
            capacity,
            maps: RwLock::new(Maps::default()),
            origin: Instant::now(),
            fresh_until: AtomicU64::new(0),
            last_seq: AtomicI64::new(0),
            wake: Notify::new(),
        }
    }

    /// Whether the cache is on at all.
    pub fn enabled(&self) -> bool {
        !self.staleness.is_zero() && self.capacity > 0
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether entries may be served now: the last successful read of the change log began
    /// less than `staleness` ago.
    pub fn fresh(&self) -> bool {
        self.enabled() && self.elapsed_ms() < self.fresh_until.load(Ordering::Acquire)
    }

    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether session `sid` has ended, and its owner, if known and fresh.
    pub fn session(&self, sid: &str) -> Option<(bool, Arc<UserRecord>)> {
        if !self.fresh() {
            return None;
        }
        let maps = self.read();
        let (revoked, user_id) = *maps.sessions.get(sid)?;
        Some((revoked, maps.users.get(&user_id)?.clone()))
    }

    /// The owner of the API token with keyed digest `digest`, the token's row id and its
    /// expiry (epoch ms, `None`: never), if known and fresh. The caller must refuse an expired
    /// token.
    pub fn api_token(&self, digest: &[u8; 32]) -> Option<(Arc<UserRecord>, i64, Option<i64>)> {
        if !self.fresh() {
            return None;
        }
        let maps = self.read();
        let (user_id, token_id, expires_at) = maps.api_tokens.get(digest)?;
        Some((maps.users.get(user_id)?.clone(), *token_id, *expires_at))
    }

    /// The sub-accounts user `user_id` may use, if known and fresh.
    pub fn accounts(&self, user_id: i64) -> Option<Arc<UsableAccounts>> {
        if !self.fresh() {
            return None;
        }
        self.read().accounts.get(&user_id).cloned()
    }

    /// Take before reading the database for a fill: the fill is stored only if nothing was
    /// forgotten meanwhile.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.read().epoch)
    }

    /// Locks the maps for a fill begun with `ticket`, unless something was forgotten since.
    fn fill(&self, ticket: Ticket) -> Option<RwLockWriteGuard<'_, Maps>> {
        if !self.enabled() {
            return None;
        }
        let maps = self.write();
        (maps.epoch == ticket.0).then_some(maps)
    }

    fn put_user(maps: &mut Maps, user: &UserRecord, capacity: usize) {
        if maps.users.get(&user.id).is_none_or(|u| **u != *user) {
            bounded(&mut maps.users, capacity);
            maps.users.insert(user.id, Arc::new(user.clone()));
        }
    }

    /// Stores what the database said of session `sid`.
    pub fn put_session(&self, ticket: Ticket, sid: &str, revoked: bool, user: &UserRecord) {
        let Some(mut maps) = self.fill(ticket) else {
            return;
        };
        Self::put_user(&mut maps, user, self.capacity);
        bounded(&mut maps.sessions, self.capacity);
        maps.sessions.insert(sid.to_owned(), (revoked, user.id));
    }

    /// Stores the owner, the row id and the expiry (epoch ms, `None`: never) of the API token
    /// with keyed digest `digest`.
    pub fn put_api_token(
        &self,
        ticket: Ticket,
        digest: &[u8; 32],
        user: &UserRecord,
        token_id: i64,
        expires_at: Option<i64>,
    ) {
        let Some(mut maps) = self.fill(ticket) else {
            return;
        };
        Self::put_user(&mut maps, user, self.capacity);
        bounded(&mut maps.api_tokens, self.capacity);
        maps.api_tokens
            .insert(*digest, (user.id, token_id, expires_at));
    }

    /// Stores the sub-accounts user `user_id` may use.
    pub fn put_accounts(&self, ticket: Ticket, user_id: i64, accounts: Arc<UsableAccounts>) {
        let Some(mut maps) = self.fill(ticket) else {
            return;
        };
        bounded(&mut maps.accounts, self.capacity);
        maps.accounts.insert(user_id, accounts);
    }

    /// Forgets session `sid`.
    pub fn forget_session(&self, sid: &str) {
        let mut maps = self.write();
        maps.epoch += 1;
        maps.sessions.remove(sid);
    }

    /// Forgets user `user_id`: its record, its accounts, and every session and API token of
    /// it (a scan of the maps: such changes are rare next to reads).
    pub fn forget_user(&self, user_id: i64) {
        let mut maps = self.write();
        maps.epoch += 1;
        maps.users.remove(&user_id);
        maps.accounts.remove(&user_id);
        maps.sessions.retain(|_, (_, u)| *u != user_id);
        maps.api_tokens.retain(|_, (u, _, _)| *u != user_id);
    }

    /// Forgets every user's accounts.
    pub fn forget_accounts(&self) {
        let mut maps = self.write();
        maps.epoch += 1;
        maps.accounts.clear();
    }

    /// Forgets everything: after a write whose outcome is unknown, or a gap in the change log.
    pub fn forget_all(&self) {
        let mut maps = self.write();
        let epoch = maps.epoch + 1;
        *maps = Maps {
            epoch,
            ..Maps::default()
        };
    }

    /// Entries held, over all maps (for tests and metrics).
    pub fn len(&self) -> usize {
        let maps = self.read();
        maps.sessions.len() + maps.api_tokens.len() + maps.users.len() + maps.accounts.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most entries of each map.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The newest change-log row whose forgetting is done: every change up to it has been
    /// applied (each row is applied before this moves past it). A test that calls
    /// [`read_log_now`](Self::read_log_now) and waits until this reaches the store's newest row
    /// knows the follower will forget nothing more until the next change; without that wait, a
    /// fill can race the follower applying a change the process itself made a moment earlier
    /// (announced by PostgreSQL, or found by a periodic read).
    pub fn applied_through(&self) -> i64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Has the follower read the change log now instead of at its next period, as a database
    /// announcement does.
    pub fn read_log_now(&self) {
        self.wake.notify_one();
    }

    /// The staleness bound.
    pub fn staleness(&self) -> Duration {
        self.staleness
    }

    /// Forgets what one change names.
    fn apply(&self, kind: Option<&ChangeKind>, key: &str) {
        match (kind, key.parse::<i64>()) {
            (Some(ChangeKind::Session), _) => self.forget_session(key),
            (Some(ChangeKind::User), Ok(id)) => self.forget_user(id),
            (Some(ChangeKind::Accounts), _) => self.forget_accounts(),
            // A kind this version does not know, or a malformed key: be safe.
            _ => self.forget_all(),
        }
    }

    /// Reads the change log from the last row applied, forgets what the new rows name, and
    /// (on success) lets entries be served for `staleness` from when the read began.
    pub async fn sync(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let began = self.elapsed_ms();
        let mut applied = 0;
        loop {
            let last = self.last_seq.load(Ordering::Acquire);
            let batch = store.credential_changes_after(last, CHANGES_BATCH).await?;
            if batch
                .oldest
                .is_some_and(|oldest| oldest > last.saturating_add(1))
            {
                // Rows after ours were pruned before we read them.
                tracing::info!(
                    last,
                    "the credential change log moved past this instance; forgetting every cached credential"
                );
                self.forget_all();
            }
            let full = i64::try_from(batch.changes.len()).unwrap_or(i64::MAX) >= CHANGES_BATCH;
            for change in &batch.changes {
                self.apply(change.kind.as_ref(), &change.key);
                self.last_seq.fetch_max(change.seq, Ordering::AcqRel);
                applied += 1;
            }
            if !full {
                break;
            }
        }
        let until = began.saturating_add(u64::try_from(self.staleness.as_millis()).unwrap_or(0));
        self.fresh_until.fetch_max(until, Ordering::AcqRel);
        Ok(applied)
    }

    /// Follows the change log until the task is aborted: starts from its newest row (the cache
    /// starts empty), then reads it every half `staleness` and whenever the database announces
    /// a row, and prunes rows older than [`CHANGES_KEPT`] every minute. Failed reads are logged
    /// once per outage; entries stop being served `staleness` after the last good read.
    pub async fn follow(self: Arc<Self>, store: SharedStore, clock: SharedClock) {
        if !self.enabled() {
            return;
        }
        let period = (self.staleness / 2).max(Duration::from_millis(1));
        // Changes committed by this process are applied before their write returns; the
        // listener lives as long as this task.
        let weak = Arc::downgrade(&self);
        let local: Arc<LocalChangeListener> = Arc::new(move |kind: &ChangeKind, key: &str| {
            if let Some(cache) = weak.upgrade() {
                cache.apply(Some(kind), key);
            }
        });
        store.on_local_credential_change(Arc::downgrade(&local));
        let waker = Arc::downgrade(&self);
        store.watch_credential_changes(Arc::new(move |_seq| {
            if let Some(cache) = waker.upgrade() {
                cache.wake.notify_one();
            }
        }));
        let mut down = false;
        let mut started = false;
        let mut last_prune: Option<Instant> = None;
        loop {
            let result = if started {
                self.sync(store.as_ref()).await.map(|_| ())
            } else {
                let began = self.elapsed_ms();
                match store.latest_credential_change().await {
                    Ok(seq) => {
                        // Requests may have filled the cache before this read, with answers
                        // older than rows up to `seq`, which will never be read: start empty.
                        // Emptied before `seq` is published: see `applied_through`.
                        self.forget_all();
                        self.last_seq.store(seq, Ordering::Release);
                        started = true;
                        let until = began
                            .saturating_add(u64::try_from(self.staleness.as_millis()).unwrap_or(0));
                        self.fresh_until.fetch_max(until, Ordering::AcqRel);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(()) if down => {
                    tracing::info!("the credential change log is readable again; cache in use");
                    down = false;
                }
                Ok(()) => {}
                Err(e) if !down => {
                    tracing::warn!(error = %e, "cannot read the credential change log: \
                        credentials are checked in the database until it can be read");
                    down = true;
                }
                Err(_) => {}
            }
            if started && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let before = clock
                    .now_ms()
                    .saturating_sub(crate::clock::duration_ms(CHANGES_KEPT));
                if let Err(e) = store.prune_credential_changes(before).await {
                    tracing::debug!(error = %e, "pruning the credential change log failed");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> UserRecord {
        UserRecord {
            id,
            username: format!("u{id}"),
            platform_id: "aws80".into(),
            password_hash: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            enabled: true,
            parent_id: None,
            parent_path: String::new(),
            main_account_id: 10_000_000,
            roles: vec![],
            created_at: 0,
            rc_user_id: None,
        }
    }

    fn fresh_cache(capacity: usize) -> CredentialCache {
        let c = CredentialCache::new(Duration::from_secs(60), capacity);
        c.fresh_until.store(u64::MAX, Ordering::Release);
        c
    }

    fn account(id: i64, name: &str, rc: Option<&str>) -> AccountRow {
        AccountRow {
            id,
            name: name.into(),
            main_id: 10_000_000,
            main_name: "Main \"quoted\" é".into(),
            main_active: true,
            main_rc_account_id: rc.map(str::to_owned),
        }
    }

    /// The cached answer is exactly what serialising the wire form makes; it is made once per
    /// entry, even when eight threads ask a new entry at once; a replaced entry answers anew.
    #[test]
    fn the_accounts_answer_is_made_once_per_entry_and_matches_the_wire_form() {
        let rows = vec![
            account(10_000_001, "Sales", Some("37439510")),
            account(10_000_002, "Support\n", None),
        ];
        let wire: Vec<cxauth_proto::Account> = rows
            .iter()
            .cloned()
            .map(crate::wire::account_to_wire)
            .collect();
        let expected = serde_json::to_vec(&wire).expect("json");
        let c = fresh_cache(10);
        c.put_accounts(c.ticket(), 1, Arc::new(UsableAccounts::new(rows)));
        let entry = c.accounts(1).expect("cached");
        let answers: Vec<Arc<[u8]>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| entry.json().expect("json")))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        for a in &answers {
            assert_eq!(**a, *expected);
        }
        let kept = c.accounts(1).expect("cached").json().expect("json");
        // Racing makers may each serialise, but all of them answer with the one kept.
        assert!(answers.iter().all(|a| Arc::ptr_eq(a, &kept)));

        c.forget_accounts();
        assert!(c.accounts(1).is_none());
        c.put_accounts(
            c.ticket(),
            1,
            Arc::new(UsableAccounts::new(vec![account(10_000_003, "New", None)])),
        );
        let renamed = c.accounts(1).expect("cached").json().expect("json");
        assert!(String::from_utf8_lossy(&renamed).contains("\"New\""));
        assert!(!String::from_utf8_lossy(&renamed).contains("Sales"));
    }

    #[test]
    fn a_fill_begun_before_a_forget_is_dropped() {
        let c = fresh_cache(10);
        let t = c.ticket();
        c.forget_user(1);
        c.put_session(t, "s", false, &user(1));
        assert!(c.session("s").is_none());
        let t = c.ticket();
        c.put_session(t, "s", false, &user(1));
        assert_eq!(c.session("s").expect("hit").1.id, 1);
        c.forget_user(1);
        assert!(c.session("s").is_none());
    }

    #[test]
    fn maps_stay_within_capacity() {
        let c = fresh_cache(4);
        for i in 0..100u8 {
            let t = c.ticket();
            c.put_api_token(t, &[i; 32], &user(i64::from(i)), i64::from(i), None);
            let maps = c.read();
            assert!(maps.api_tokens.len() <= 4 && maps.users.len() <= 4);
        }
    }

    #[test]
    fn nothing_is_served_unless_fresh_or_when_off() {
        let c = CredentialCache::new(Duration::from_secs(60), 10);
        let t = c.ticket();
        c.put_session(t, "s", false, &user(1));
        assert!(c.session("s").is_none(), "never synced: not fresh");
        let off = CredentialCache::new(Duration::ZERO, 10);
        off.fresh_until.store(u64::MAX, Ordering::Release);
        let t = off.ticket();
        off.put_session(t, "s", false, &user(1));
        assert!(off.session("s").is_none() && off.is_empty());
    }
}
