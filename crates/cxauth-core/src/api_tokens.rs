//! API tokens: minted by a signed-in caller (up to a cap), listed back to their owner (they are
//! stored sealed, so they can be shown again), deleted by the owner or an ancestor.
//!
//! A token may carry a name and an expiry (cxauth's own endpoints; the RingCX ones mint tokens
//! with neither), and records its last use. An expired token is treated as deleted everywhere:
//! refused, listed nowhere, not counted against the cap, and removed at its owner's next
//! creation.
//!
//! **Last use without a write per request**: authentication notes uses in
//! [`crate::token_uses::UseNotes`]; [`ApiTokens::flush_uses`] writes them in batches.

use crate::audit::{self, AuditContext, Event, Outcome};
use crate::authn::{Principal, Via};
use crate::clock::duration_ms;
use crate::crypto::DigestKind;
use crate::deps::Deps;
use crate::error::AuthError;
use crate::jwt::TokenError;
use crate::limits::{MAX_API_TOKEN_LIFETIME, MAX_API_TOKEN_NAME_CHARS};
use crate::store::{
    ApiTokenInsert, ApiTokenUse, CreationAudit, CredentialProof, NewApiToken, StoredApiToken,
    UserRecord,
};
use crate::token_uses::UseNotes;
use crate::wire::rfc3339;
use cxauth_proto::ApiToken;
use std::sync::Arc;

/// Characters of a token shown as its hint.
const HINT_CHARS: usize = 4;

/// What an API token's owner may see of it, without the token itself: for listings and for
/// the web console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenInfo {
    /// Row id: names the token in rename and delete without showing it.
    pub id: i64,
    /// What the owner calls it (`None` for tokens of the RingCX endpoints).
    pub name: Option<String>,
    /// When it was minted, epoch ms.
    pub created_at: i64,
    /// When it stops being accepted, epoch ms; `None`: never.
    pub expires_at: Option<i64>,
    /// A use at most about [`crate::token_uses::LAST_USE_STEP`] (plus a flush) old, epoch ms;
    /// `None`: never used.
    pub last_used_at: Option<i64>,
    /// `…` and the token's last four characters, so the owner can tell tokens apart; never
    /// the whole token.
    pub hint: String,
}

impl ApiTokenInfo {
    /// The wire form of cxauth's own endpoints (times as RFC 3339, like `creationDate`).
    pub fn to_wire(&self) -> cxauth_proto::ApiTokenDetails {
        cxauth_proto::ApiTokenDetails {
            id: self.id,
            name: self.name.clone(),
            created_at: rfc3339(self.created_at),
            expires_at: self.expires_at.map(rfc3339),
            last_used_at: self.last_used_at.map(rfc3339),
            hint: self.hint.clone(),
        }
    }
}

/// A new token with its metadata: the one time the token itself is shown.
#[derive(Debug, Clone)]
pub struct CreatedApiToken {
    /// The token.
    pub token: String,
    /// Its metadata, as [`crate::service::Auth::api_token_details`] will list it.
    pub info: ApiTokenInfo,
}

impl CreatedApiToken {
    /// The wire form of `POST /cxauth/v1/api-tokens`.
    pub fn to_wire(&self) -> cxauth_proto::CreatedApiToken {
        cxauth_proto::CreatedApiToken {
            token: self.token.clone(),
            details: self.info.to_wire(),
        }
    }
}

/// `…` and the last [`HINT_CHARS`] characters of `token`.
fn hint_of(token: &str) -> String {
    let tail: String = token
        .chars()
        .rev()
        .take(HINT_CHARS)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("\u{2026}{tail}")
}

/// Invisible characters that would let a name look like another (zero-width, bidirectional
/// overrides and isolates, the byte-order mark).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks an API token name: trimmed, 1 to [`MAX_API_TOKEN_NAME_CHARS`] characters, no control
/// or invisible characters (it is shown in terminals and web pages). Returns the trimmed name.
pub fn check_api_token_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AuthError::BadRequest(
            "name must not be empty (leave it out, or null, for no name)".into(),
        ));
    }
    if name.chars().count() > MAX_API_TOKEN_NAME_CHARS {
        return Err(AuthError::BadRequest(format!(
            "name must be at most {MAX_API_TOKEN_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(AuthError::BadRequest(
            "name must not hold control or invisible characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Checks an expiry, epoch ms, against `now`: in the future, and at most
/// [`MAX_API_TOKEN_LIFETIME`] away.
fn check_expiry(expires_at: i64, now: i64) -> Result<(), AuthError> {
    if expires_at <= now {
        return Err(AuthError::BadRequest("expiry must be in the future".into()));
    }
    if expires_at.saturating_sub(now) > duration_ms(MAX_API_TOKEN_LIFETIME) {
        return Err(AuthError::BadRequest(format!(
            "expiry must be at most {} days away",
            MAX_API_TOKEN_LIFETIME.as_secs() / 86_400
        )));
    }
    Ok(())
}

/// The additional data an API token of `user_id` is sealed with, so a sealed token copied to
/// another user's row does not open.
pub(crate) fn api_token_aad(user_id: i64) -> Vec<u8> {
    format!("api-token:{user_id}").into_bytes()
}

/// How [`ApiTokens::flush_uses`] spends the CPU it writes with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FlushPace {
    /// Everything at once, as fast as the store goes: a clean stop, which has a bound.
    Full,
    /// In batches of [`PACED_BATCH`] uses, pausing after each so that writing takes at most
    /// this share of the time (0.01 to 1; outside it, the nearest; not a number: 1):
    /// housekeeping's minute. At full speed, 100,000 tokens' uses (over 1M, on SQLite) took
    /// the server's core and its disk for 1.3–1.4 s, and refreshes at half load queued behind
    /// the write: p99 83–111 ms around it, against 2–4 ms before (docs/decisions.md, "The
    /// minute's write of last uses is paced").
    Share(f64),
}

/// Uses one paced batch writes, in one statement and one transaction (a fifth of the store's
/// own 500, which a stop writes with): every request that writes waits for the batch's
/// transaction, so a smaller one keeps that wait short. Batches of 500 at a tenth of the time
/// left the refreshes' p99 around the write at 16–26 ms; of 100, at 8–9 ms (see [`FlushPace`]).
pub const PACED_BATCH: usize = 100;

/// Uses a flush has taken and not yet written. Dropped with any left (a failed write, or a
/// flush dropped half-way: a stop aborts housekeeping), it puts them back, so that the next
/// flush, or the stop's own, writes them.
struct Unwritten<'a> {
    notes: &'a UseNotes,
    uses: Vec<ApiTokenUse>,
    /// The first not yet written.
    from: usize,
}

impl Drop for Unwritten<'_> {
    fn drop(&mut self) {
        if let Some(rest) = self.uses.get(self.from..)
            && !rest.is_empty()
        {
            self.notes.restore(rest);
        }
    }
}

/// Mints, lists, renames and deletes API tokens, and writes their noted uses.
pub(crate) struct ApiTokens {
    deps: Deps,
    /// Most API tokens one user may hold.
    cap: u64,
    /// Uses noted by authentication, written by [`ApiTokens::flush_uses`].
    uses: Arc<UseNotes>,
}

impl ApiTokens {
    pub(crate) fn new(deps: Deps, cap: u64, uses: Arc<UseNotes>) -> Self {
        ApiTokens { deps, cap, uses }
    }

    /// Mints a new permanent API token for the caller; see
    /// [`crate::service::Auth::create_api_token`].
    pub(crate) async fn create(
        &self,
        who: &Principal,
        ctx: &AuditContext,
    ) -> Result<String, AuthError> {
        Ok(self.create_with(who, None, None, ctx).await?.token)
    }

    /// Mints a new API token with an optional name and expiry; see
    /// [`crate::service::Auth::create_api_token_with`].
    #[tracing::instrument(skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn create_with(
        &self,
        who: &Principal,
        name: Option<&str>,
        expires_at: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<CreatedApiToken, AuthError> {
        let now = self.deps.clock.now_ms();
        let name = name.map(check_api_token_name).transpose()?;
        if let Some(at) = expires_at {
            check_expiry(at, now)?;
        }
        let token = ApiToken::generate(&who.user.platform_id)
            .ok_or_else(|| AuthError::Internal("user has an invalid platform id".into()))?
            .to_string();
        let secrets = &self.deps.secrets;
        let digest = secrets.digest(DigestKind::ApiToken, token.as_bytes());
        let sealed = secrets.seal(&api_token_aad(who.user.id), token.as_bytes())?;
        let proof = match (&who.via, &who.session_id) {
            (Via::AccessToken, Some(sid)) => CredentialProof::Session(sid),
            (Via::ApiToken(d), _) => CredentialProof::ApiToken(d),
            (Via::LegacyToken(d), _) => CredentialProof::LegacyToken(d),
            _ => return Err(TokenError::Invalid.into()),
        };
        let cap = self.cap;
        // Written with the token, in its transaction: one commit instead of two.
        let created = |id: i64| {
            let detail = format!("token id {id}");
            let entry = by_caller(who, Event::ApiTokenCreate, Outcome::Success, &detail);
            audit::stored(ctx, now, entry)
        };
        let outcome = self
            .deps
            .store
            .insert_api_token_checked(&NewApiToken {
                user_id: who.user.id,
                digest: &digest,
                sealed: &sealed,
                now,
                cap,
                name: name.as_deref(),
                expires_at,
                proof,
                audit: Some(CreationAudit(&created)),
            })
            .await?;
        let id = match outcome {
            ApiTokenInsert::Created(id) => id,
            ApiTokenInsert::CredentialGone => return Err(TokenError::Invalid.into()),
            ApiTokenInsert::CapReached => {
                let detail = format!("cap {cap}");
                self.deps
                    .audit
                    .record(
                        ctx,
                        by_caller(who, Event::ApiTokenCap, Outcome::Failure, &detail),
                    )
                    .await;
                return Err(AuthError::TooManyApiTokens { cap });
            }
        };
        audit::count(Event::ApiTokenCreate, Outcome::Success);
        audit::log(&created(id));
        let info = ApiTokenInfo {
            id,
            name,
            created_at: now,
            expires_at,
            last_used_at: None,
            hint: hint_of(&token),
        };
        Ok(CreatedApiToken { token, info })
    }

    /// The caller's unexpired API tokens with their plain text, oldest first; a token that
    /// does not decrypt is logged and skipped.
    async fn open_all(&self, who: &Principal) -> Result<Vec<(StoredApiToken, String)>, AuthError> {
        let aad = api_token_aad(who.user.id);
        let now = self.deps.clock.now_ms();
        let mut out = Vec::new();
        for t in self.deps.store.api_tokens_of(who.user.id).await? {
            if t.expired(now) {
                continue;
            }
            match self.deps.secrets.open(&aad, &t.sealed) {
                Some(plain) => {
                    let plain = String::from_utf8_lossy(&plain).into_owned();
                    out.push((t, plain));
                }
                None => tracing::error!(
                    token_id = t.id,
                    "stored API token does not decrypt; skipped"
                ),
            }
        }
        Ok(out)
    }

    /// The caller's API tokens, oldest first (expired ones are not listed).
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn list(&self, who: &Principal) -> Result<Vec<String>, AuthError> {
        Ok(self
            .open_all(who)
            .await?
            .into_iter()
            .map(|(_, plain)| plain)
            .collect())
    }

    /// The caller's API tokens as [`ApiTokenInfo`]; see
    /// [`crate::service::Auth::api_token_details`].
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn details(&self, who: &Principal) -> Result<Vec<ApiTokenInfo>, AuthError> {
        let mut out: Vec<ApiTokenInfo> = self
            .open_all(who)
            .await?
            .into_iter()
            .map(|(t, plain)| info_of(t, &plain))
            .collect();
        // Most recently used first, never used last; then newest first.
        out.sort_by(|a, b| {
            b.last_used_at
                .cmp(&a.last_used_at)
                .then(b.created_at.cmp(&a.created_at))
                .then(b.id.cmp(&a.id))
        });
        Ok(out)
    }

    /// The unexpired token with row id `id` if the caller owns it or is an ancestor of its
    /// owner; anything else is [`AuthError::NotFound`] (existence is not revealed).
    async fn visible_by_id(
        &self,
        who: &Principal,
        id: i64,
    ) -> Result<(StoredApiToken, UserRecord), AuthError> {
        let (stored, owner) = self
            .deps
            .store
            .api_token_by_id(id)
            .await?
            .ok_or(AuthError::NotFound)?;
        if stored.expired(self.deps.clock.now_ms())
            || (owner.id != who.user.id && !owner.has_ancestor(who.user.id))
        {
            return Err(AuthError::NotFound);
        }
        Ok((stored, owner))
    }

    /// Sets or clears a token's name; see [`crate::service::Auth::rename_api_token`].
    #[tracing::instrument(skip_all, fields(user_id = who.user.id, id))]
    pub(crate) async fn rename(
        &self,
        who: &Principal,
        id: i64,
        name: Option<&str>,
        ctx: &AuditContext,
    ) -> Result<ApiTokenInfo, AuthError> {
        let name = name.map(check_api_token_name).transpose()?;
        let (mut stored, owner) = self.visible_by_id(who, id).await?;
        if !self
            .deps
            .store
            .rename_api_token(stored.id, name.as_deref())
            .await?
        {
            return Err(AuthError::NotFound);
        }
        let detail = format!("token id {id} of user id {}", owner.id);
        self.deps
            .audit
            .record(
                ctx,
                by_caller(who, Event::ApiTokenRename, Outcome::Success, &detail),
            )
            .await;
        stored.name = name;
        let plain = self
            .deps
            .secrets
            .open(&api_token_aad(owner.id), &stored.sealed)
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_default();
        Ok(info_of(stored, &plain))
    }

    /// Deletes a token by row id; see [`crate::service::Auth::delete_api_token_by_id`].
    #[tracing::instrument(skip_all, fields(user_id = who.user.id, id))]
    pub(crate) async fn delete_by_id(
        &self,
        who: &Principal,
        id: i64,
        ctx: &AuditContext,
    ) -> Result<(), AuthError> {
        let (stored, owner) = self.visible_by_id(who, id).await?;
        self.remove(who, &stored, &owner, ctx).await
    }

    /// Writes the uses noted since the last flush; see
    /// [`crate::service::Auth::flush_api_token_uses`] and [`FlushPace`].
    pub(crate) async fn flush_uses(&self, pace: FlushPace) -> Result<u64, AuthError> {
        let uses = self.uses.take(self.deps.clock.now_ms());
        if uses.is_empty() {
            return Ok(0);
        }
        let mut unwritten = Unwritten {
            notes: &self.uses,
            uses,
            from: 0,
        };
        let store = &self.deps.store;
        let FlushPace::Share(share) = pace else {
            // All at once: the store writes them in its table's order, which only the whole
            // set has. On a failure, all are kept for the next flush; those already written
            // are written again as no-ops (a time never moves back).
            let written = store.record_api_token_uses(&unwritten.uses).await?;
            unwritten.from = unwritten.uses.len();
            return Ok(written);
        };
        // The table's order (the store's own, see `record_api_token_uses`), so that the
        // batches together write each page about once, as the whole set at once would.
        unwritten.uses.sort_unstable_by_key(|u| (u.id, u.digest));
        let share = if share.is_nan() {
            1.0
        } else {
            share.clamp(0.01, 1.0)
        };
        let mut written = 0;
        while unwritten.from < unwritten.uses.len() {
            let end = (unwritten.from + PACED_BATCH).min(unwritten.uses.len());
            let started = tokio::time::Instant::now();
            written += store
                .record_api_token_uses(&unwritten.uses[unwritten.from..end])
                .await?;
            unwritten.from = end;
            if end < unwritten.uses.len() {
                // The batch's own time (its wait for the write turn included: a busier
                // server makes the pause longer) is `share` of the time until the next.
                tokio::time::sleep(started.elapsed().mul_f64((1.0 - share) / share)).await;
            }
        }
        Ok(written)
    }

    /// Tokens whose uses are held in memory (for tests).
    pub(crate) fn noted(&self) -> usize {
        self.uses.len()
    }

    /// Deletes an API token owned by the caller or by one of its descendants; see
    /// [`crate::service::Auth::delete_api_token`].
    #[tracing::instrument(skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn delete(
        &self,
        who: &Principal,
        token: &str,
        ctx: &AuditContext,
    ) -> Result<(), AuthError> {
        let api = ApiToken::parse(token).ok_or(AuthError::NotFound)?;
        let digest = self
            .deps
            .secrets
            .digest(DigestKind::ApiToken, api.to_string().as_bytes());
        let (stored, owner) = self
            .deps
            .store
            .api_token_by_digest(&digest)
            .await?
            .ok_or(AuthError::NotFound)?;
        if stored.expired(self.deps.clock.now_ms())
            || (owner.id != who.user.id && !owner.has_ancestor(who.user.id))
        {
            return Err(AuthError::NotFound);
        }
        self.remove(who, &stored, &owner, ctx).await
    }

    /// Deletes `stored` (of `owner`) for `who`, forgets its owner's cached credentials, audits.
    async fn remove(
        &self,
        who: &Principal,
        stored: &StoredApiToken,
        owner: &UserRecord,
        ctx: &AuditContext,
    ) -> Result<(), AuthError> {
        let deleted = self.deps.store.delete_api_token(stored.id).await;
        self.deps.creds.forget_user(owner.id);
        if !deleted? {
            return Err(AuthError::NotFound);
        }
        let detail = format!("token id {} of user id {}", stored.id, owner.id);
        self.deps
            .audit
            .record(
                ctx,
                by_caller(who, Event::ApiTokenDelete, Outcome::Success, &detail),
            )
            .await;
        Ok(())
    }
}

/// The audit entry of `event` ending in `outcome`, about the caller `who`.
fn by_caller<'a>(
    who: &'a Principal,
    event: Event,
    outcome: Outcome,
    detail: &'a str,
) -> audit::Entry<'a> {
    audit::Entry {
        user_id: Some(who.user.id),
        username: Some(&who.user.username),
        detail,
        ..audit::Entry::of(event, outcome)
    }
}

/// The owner's view of `t`, whose plain text is `plain`.
fn info_of(t: StoredApiToken, plain: &str) -> ApiTokenInfo {
    ApiTokenInfo {
        id: t.id,
        hint: hint_of(plain),
        name: t.name,
        created_at: t.created_at,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_shows_only_the_tail() {
        assert_eq!(
            hint_of("aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9"),
            "\u{2026}c0a9"
        );
        assert_eq!(hint_of("ab"), "\u{2026}ab");
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            check_api_token_name("  ci deploy ").ok().as_deref(),
            Some("ci deploy")
        );
        assert!(check_api_token_name("   ").is_err());
        assert!(check_api_token_name(&"x".repeat(MAX_API_TOKEN_NAME_CHARS)).is_ok());
        assert!(check_api_token_name(&"é".repeat(MAX_API_TOKEN_NAME_CHARS + 1)).is_err());
        assert!(check_api_token_name("a\nb").is_err());
        assert!(check_api_token_name("evil\u{202E}txt").is_err());
        assert!(check_api_token_name("zero\u{200B}width").is_err());
        assert!(check_api_token_name("Grüße 日本").is_ok());
    }

    #[test]
    fn expiry_is_in_the_future_and_bounded() {
        let max = duration_ms(MAX_API_TOKEN_LIFETIME);
        assert!(check_expiry(1_000, 1_000).is_err());
        assert!(check_expiry(1_001, 1_000).is_ok());
        assert!(check_expiry(1_000 + max, 1_000).is_ok());
        assert!(check_expiry(1_001 + max, 1_000).is_err());
        assert!(check_expiry(i64::MIN, 1_000).is_err());
        assert!(check_expiry(i64::MAX, 1_000).is_err());
    }
}
