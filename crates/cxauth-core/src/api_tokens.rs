//! Permanent API tokens: minted by a signed-in caller (up to a cap), listed back to their owner
//! (they are stored sealed, so they can be shown again), deleted by the owner or an ancestor.

use crate::audit::{self, AuditContext, Event, Outcome};
use crate::authn::{Principal, Via};
use crate::crypto::DigestKind;
use crate::deps::Deps;
use crate::error::AuthError;
use crate::jwt::TokenError;
use crate::store::{ApiTokenInsert, CredentialProof, NewApiToken};
use cxauth_proto::ApiToken;

/// The additional data an API token of `user_id` is sealed with, so a sealed token copied to
/// another user's row does not open.
pub(crate) fn api_token_aad(user_id: i64) -> Vec<u8> {
    format!("api-token:{user_id}").into_bytes()
}

/// Mints, lists and deletes API tokens.
pub(crate) struct ApiTokens {
    deps: Deps,
    /// Most API tokens one user may hold.
    cap: u64,
}

impl ApiTokens {
    pub(crate) fn new(deps: Deps, cap: u64) -> Self {
        ApiTokens { deps, cap }
    }

    /// Mints a new permanent API token for the caller; see
    /// [`crate::service::Auth::create_api_token`].
    #[tracing::instrument(skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn create(
        &self,
        who: &Principal,
        ctx: &AuditContext,
    ) -> Result<String, AuthError> {
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
        let outcome = self
            .deps
            .store
            .insert_api_token_checked(&NewApiToken {
                user_id: who.user.id,
                digest: &digest,
                sealed: &sealed,
                now: self.deps.clock.now_ms(),
                cap,
                proof,
            })
            .await?;
        let entry = |event, outcome, detail| audit::Entry {
            user_id: Some(who.user.id),
            username: Some(&who.user.username),
            detail,
            ..audit::Entry::of(event, outcome)
        };
        match outcome {
            ApiTokenInsert::Created(_) => {}
            ApiTokenInsert::CredentialGone => return Err(TokenError::Invalid.into()),
            ApiTokenInsert::CapReached => {
                let detail = format!("cap {cap}");
                self.deps
                    .audit
                    .record(ctx, entry(Event::ApiTokenCap, Outcome::Failure, &detail))
                    .await;
                return Err(AuthError::TooManyApiTokens { cap });
            }
        }
        self.deps
            .audit
            .record(ctx, entry(Event::ApiTokenCreate, Outcome::Success, ""))
            .await;
        Ok(token)
    }

    /// The caller's API tokens, oldest first.
    #[tracing::instrument(skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn list(&self, who: &Principal) -> Result<Vec<String>, AuthError> {
        let aad = api_token_aad(who.user.id);
        let mut out = Vec::new();
        for t in self.deps.store.api_tokens_of(who.user.id).await? {
            match self.deps.secrets.open(&aad, &t.sealed) {
                Some(plain) => out.push(String::from_utf8_lossy(&plain).into_owned()),
                None => tracing::error!(
                    token_id = t.id,
                    "stored API token does not decrypt; skipped"
                ),
            }
        }
        Ok(out)
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
        if owner.id != who.user.id && !owner.has_ancestor(who.user.id) {
            return Err(AuthError::NotFound);
        }
        let deleted = self.deps.store.delete_api_token(stored.id).await;
        self.deps.creds.forget_user(owner.id);
        if !deleted? {
            return Err(AuthError::NotFound);
        }
        let detail = format!("token of user id {}", owner.id);
        self.deps
            .audit
            .record(
                ctx,
                audit::Entry {
                    user_id: Some(who.user.id),
                    username: Some(&who.user.username),
                    detail: &detail,
                    ..audit::Entry::of(Event::ApiTokenDelete, Outcome::Success)
                },
            )
            .await;
        Ok(())
    }
}
