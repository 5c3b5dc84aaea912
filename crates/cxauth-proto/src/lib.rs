//! Wire types of the RingCX authentication contract (`docs/wire-contract.md`).
//!
//! One definition shared by the cxauth server and the `cxauth-client` SDK, so the two can never
//! drift apart. Field names are load-bearing: existing RingCX clients match on them, so every
//! struct here pins its JSON names with serde attributes rather than trusting Rust naming.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `adminUrl` of every admin-login [`Session`]; clients use it to open the admin UI.
pub const ADMIN_URL: &str = "/voice/admin/";
/// `agentUrl` of every [`Session`].
pub const AGENT_URL: &str = "/voice/agent/";

/// Plain-text body of a 401 for an access token past its `exp`. Clients refresh on the word
/// "expired" in an error body, so this is the *only* error body that may contain it.
pub const JWT_EXPIRED: &str = "Jwt is expired";
/// Plain-text body of a 401 when no credential was sent.
pub const JWT_MISSING: &str = "Jwt is missing";
/// Plain-text body of a 401 for any other credential failure (bad signature, malformed, revoked
/// session, unknown key, unknown API token, disabled user).
pub const JWT_VERIFICATION_FAILS: &str = "Jwt verification fails";

/// The answer to a login or a refresh: a short-lived access token and a rotating refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// JWT to send as `Authorization: Bearer` (or `X-Auth-Token`).
    pub access_token: String,
    /// Single-use token that buys the next [`Session`] from `/api/auth/token/refresh`.
    pub refresh_token: Option<String>,
    /// Always `"Bearer"`.
    pub token_type: String,
    /// Seconds until `access_token` expires (cxauth's addition: saves clients decoding the JWT).
    /// The real RingCX leaves it out, so a missing field reads as 0 and clients fall back to the
    /// JWT's `exp`.
    #[serde(default)]
    pub expires_in: u64,
    /// Platform the user logged in to, e.g. `aws80`.
    pub platform_id: String,
    /// The user's main account id, as a numeric string.
    pub main_account_id: String,
    /// The user id.
    pub admin_id: i64,
    /// Always [`ADMIN_URL`].
    pub admin_url: String,
    /// Always [`AGENT_URL`].
    pub agent_url: String,
    /// The agents linked to the user (through its RingEX user id), one per sub-account, ordered
    /// by account; empty for a user who is not an agent. Clients pick the sub-account to work in
    /// from `agentDetails[0].accountId`.
    pub agent_details: Vec<Agent>,
    /// `false` for direct login, `true` for a RingEX token exchange.
    pub sso_login: bool,
    /// The RingEX user of an exchanged session (`ssoLogin: true`); `null` for a direct login.
    #[serde(default)]
    pub rc_user: Option<RcUser>,
    /// Whether the user must change its password before going on. Always `false` in cxauth,
    /// which has no forced reset at next login (RingCX's answer for a user without one).
    #[serde(default)]
    pub admin_password_reset: bool,
}

/// The RingEX user of an exchanged [`Session`] (`rcUser`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RcUser {
    /// The RingEX user (extension) id.
    #[serde(default)]
    pub rc_user_id: Option<i64>,
    /// E-mail address: the username when it is one, else `null` (cxauth keeps no other).
    #[serde(default)]
    pub email: Option<String>,
    /// Given name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Family name.
    #[serde(default)]
    pub last_name: Option<String>,
}

/// `agentType` of an agent who takes calls.
pub const AGENT_TYPE_AGENT: &str = "AGENT";
/// `agentType` of an agent who supervises others.
pub const AGENT_TYPE_SUPERVISOR: &str = "SUPERVISOR";

/// A contact-centre agent, in RingCX's AgentV2 shape: in a [`Session`]'s `agentDetails` and in
/// `GET …/admin/accounts/{accountId}/agents`. The fields cxauth has no use for are always
/// present and `null`, as RingCX answers for an agent without them; none is ever a secret
/// (`password` and `phoneLoginPin` are always `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// Numeric agent id.
    pub agent_id: i64,
    /// Given name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Family name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// The agent's login name.
    #[serde(default)]
    pub username: Option<String>,
    /// [`AGENT_TYPE_AGENT`] or [`AGENT_TYPE_SUPERVISOR`].
    #[serde(default)]
    pub agent_type: Option<String>,
    /// The RingEX user id the agent is linked to.
    #[serde(default)]
    pub rc_user_id: Option<i64>,
    /// The sub-account the agent works in, as a numeric string.
    pub account_id: String,
    /// Its name.
    #[serde(default)]
    pub account_name: Option<String>,
    /// The agent group, if any.
    #[serde(default)]
    pub agent_group_id: Option<i64>,
    /// Whether the agent may log itself in and out.
    #[serde(default)]
    pub allow_login_control: Option<bool>,
    /// Whether the agent may change its login settings.
    #[serde(default)]
    pub allow_login_updates: Option<bool>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub agent_rank: Option<i64>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub alt_default_login_dest: Option<String>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub direct_agent_extension: Option<String>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub enable_softphone: Option<bool>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub external_agent_id: Option<String>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub ghost_rna_action: Option<String>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub init_login_base_state: Option<String>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub location: Option<String>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub manual_outbound_default_caller_id: Option<String>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub max_chats: Option<i64>,
    /// Always `null`: cxauth agents have no password of their own, and none is ever shown.
    #[serde(default)]
    pub password: Option<String>,
    /// Always `null`: never shown.
    #[serde(default)]
    pub phone_login_pin: Option<String>,
    /// Always `null` in cxauth.
    #[serde(default)]
    pub team: Option<String>,
}

/// `rcAccountAccess` of an account linked to a RingEX account: its users may log in through
/// RingEX.
pub const RC_ACCOUNT_ACCESS_ENABLED: &str = "ENABLED";
/// `rcAccountAccess` of an account without a RingEX link.
pub const RC_ACCOUNT_ACCESS_DISABLED: &str = "DISABLED";

/// The main account an [`Account`] row belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MainAccountRef {
    /// Numeric string ending in `0000`.
    pub main_account_id: String,
    /// Display name of the main account.
    pub main_account_name: String,
    /// Whether the main account is active.
    pub is_active: bool,
    /// The RingEX account linked to the main account; `null` without one.
    #[serde(default)]
    pub rc_account_id: Option<String>,
    /// The Engage Digital account; always `null` in cxauth, which has none.
    #[serde(default)]
    pub engage_account_id: Option<String>,
}

/// One sub-account the caller may use (`GET …/admin/accounts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// Numeric string: the main account id plus a small counter.
    pub account_id: String,
    /// Display name of the sub-account.
    pub account_name: String,
    /// Id of the main account holding it.
    pub main_account_id: String,
    /// Name of the main account holding it.
    pub main_account_name: String,
    /// The main account again, as RingCX nests it.
    pub main_account: MainAccountRef,
    /// The RingEX account of the main account; `null` without one.
    #[serde(default)]
    pub rc_account_id: Option<String>,
    /// [`RC_ACCOUNT_ACCESS_ENABLED`] when the main account is linked to a RingEX account,
    /// else [`RC_ACCOUNT_ACCESS_DISABLED`].
    #[serde(default)]
    pub rc_account_access: Option<String>,
}

/// A user as `GET …/admin/users` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Numeric user id.
    pub user_id: i64,
    /// Login name.
    pub user_name: String,
    /// Given name (may be empty).
    pub first_name: String,
    /// Family name (may be empty).
    pub last_name: String,
    /// `firstName lastName`, trimmed.
    pub full_name: String,
    /// Disabled users cannot log in and all their credentials are refused.
    pub enabled: bool,
    /// True for a user without a parent: the top of a user tree.
    pub root_user: bool,
    /// Ancestor ids from the root down, joined by `.`; empty for a root user.
    pub parent_path: String,
    /// Role names such as `SUPER_USER` or `MANAGE_USERS`.
    pub roles: Vec<String>,
    /// RFC 3339 creation time.
    pub creation_date: String,
    /// Direct children (empty when the list was asked for with `flatten=true`).
    pub children: Vec<User>,
    /// The RingEX user id the user answers to in the token exchange; `null` without one.
    #[serde(default)]
    pub rc_user_id: Option<i64>,
    /// The RingEX account of the user's main account; `null` without one.
    #[serde(default)]
    pub rc_account_id: Option<String>,
    /// Whether RingEX manages the user (synced from it). Always `false`: cxauth manages its
    /// users itself.
    #[serde(default, rename = "userManagedByRC")]
    pub user_managed_by_rc: bool,
}

/// The answer to the legacy portal login (`POST /api/v1/auth/login`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyLogin {
    /// A lowercase UUID to send as `X-Auth-Token`; lives 1 hour past its last use (2 weeks with
    /// `stayLoggedIn`).
    pub auth_token: String,
    /// The host (and port) the client reached, from the request's `Host` header.
    pub platform_host: String,
    /// The user who logged in (without children).
    pub user: User,
    /// The sub-accounts the user may use.
    pub accounts: Vec<Account>,
}

/// The JSON body of every error that is not a bearer-token 401.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `access.denied.exception`.
    pub error_code: String,
    /// Short human-readable summary.
    pub general_message: String,
    /// What exactly was wrong with this request; never internals.
    pub details: String,
    /// `<path> - <METHOD>` of the request.
    pub request_uri: String,
    /// Epoch milliseconds when the error was produced.
    pub timestamp: i64,
    /// Id of the request, as in the `x-request-id` response header and the server log.
    pub request_id: String,
}

/// One public key of `GET /.well-known/jwks.json` (RFC 8037 OKP key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
    /// Key id, matching the `kid` header of the access tokens it signed.
    pub kid: String,
    /// Always `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// The JWKS document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// Every key whose signatures the server accepts.
    pub keys: Vec<Jwk>,
}

/// An API token as cxauth's own endpoints describe it to its owner (`GET /cxauth/v1/api-tokens`,
/// and the answers of rename and create): metadata and a hint, never the token itself. Not part
/// of the RingCX contract, whose `…/admin/token` answers stay bare strings. Times are RFC 3339,
/// like a user's `creationDate`; `null` when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenDetails {
    /// Names the token in rename and delete (`/cxauth/v1/api-tokens/{id}`).
    pub id: i64,
    /// What the owner calls it; `null` for tokens minted through the RingCX endpoints.
    #[serde(default)]
    pub name: Option<String>,
    /// When it was minted.
    pub created_at: String,
    /// When it stops being accepted; `null`: never.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// A recent use (written about once a minute, so up to about two minutes behind); `null`:
    /// never used.
    #[serde(default)]
    pub last_used_at: Option<String>,
    /// `…` and the token's last four characters.
    pub hint: String,
}

/// The answer of `POST /cxauth/v1/api-tokens`: the new token, shown this once, and its details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiToken {
    /// The token (`<platformId>:<uuid>`), usable as `X-Auth-Token`.
    pub token: String,
    /// Its details, as the list will show them.
    #[serde(flatten)]
    pub details: ApiTokenDetails,
}

/// A permanent API token, `<platformId>:<uuid v4, lowercase>`.
///
/// Parsing is strict so that anything else sent as `X-Auth-Token` can be told apart (a JWT, a
/// legacy auth token) and so that a malformed token never reaches the database.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ApiToken {
    platform_id: String,
    id: uuid::Uuid,
}

/// Longest platform id accepted, so a hostile header cannot make us digest megabytes.
pub const MAX_PLATFORM_ID_LEN: usize = 64;

/// Whether `s` is a usable platform id: 1 to [`MAX_PLATFORM_ID_LEN`] characters from
/// `[A-Za-z0-9._~-]` (the token alphabet, minus the `:` that separates it from the uuid).
pub fn is_valid_platform_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PLATFORM_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

impl ApiToken {
    /// A fresh random token on `platform_id`; `None` if the platform id is not valid.
    pub fn generate(platform_id: &str) -> Option<Self> {
        is_valid_platform_id(platform_id).then(|| ApiToken {
            platform_id: platform_id.to_owned(),
            id: uuid::Uuid::new_v4(),
        })
    }

    /// Parses the exact canonical form and nothing else: lowercase hyphenated uuid of version 4.
    pub fn parse(s: &str) -> Option<Self> {
        let (platform_id, rest) = s.split_once(':')?;
        if !is_valid_platform_id(platform_id) || rest.len() != 36 {
            return None;
        }
        let id = uuid::Uuid::try_parse(rest).ok()?;
        let canonical = id.hyphenated().to_string();
        (id.get_version_num() == 4 && canonical == rest).then(|| ApiToken {
            platform_id: platform_id.to_owned(),
            id,
        })
    }

    /// The platform part, before the `:`.
    pub fn platform_id(&self) -> &str {
        &self.platform_id
    }
}

impl fmt::Display for ApiToken {
    /// The wire form. Display is deliberate (the list endpoint returns tokens); `Debug` is not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform_id, self.id.hyphenated())
    }
}

impl fmt::Debug for ApiToken {
    /// Redacted so a token never lands in a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({}:[redacted])", self.platform_id)
    }
}

/// Whether every character of `s` is in the alphabet all cxauth tokens use,
/// `[A-Za-z0-9._~:-]`, which survives unencoded in form bodies, paths and headers.
pub fn is_token_alphabet(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_round_trip_and_use_the_token_alphabet() {
        let t = ApiToken::generate("aws80").expect("valid platform");
        let s = t.to_string();
        assert!(s.starts_with("aws80:"));
        assert!(is_token_alphabet(&s));
        assert_eq!(ApiToken::parse(&s), Some(t));
    }

    #[test]
    fn debug_does_not_show_the_secret_part() {
        let t = ApiToken::generate("aws80").expect("valid platform");
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(&t.to_string()[6..]), "{dbg}");
    }

    #[test]
    fn parse_rejects_near_misses() {
        for bad in [
            "",
            "aws80",
            "aws80:",
            ":c2353445-bc74-4f1a-a850-1d55a371c0a9",
            "aws80:C2353445-BC74-4F1A-A850-1D55A371C0A9",
            "aws80:c2353445bc744f1aa8501d55a371c0a9",
            "aws80:c2353445-bc74-1f1a-a850-1d55a371c0a9",
            "aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9x",
            "aws 80:c2353445-bc74-4f1a-a850-1d55a371c0a9",
            "aws80:{c2353445-bc74-4f1a-a850-1d55a371c0a9}",
        ] {
            assert_eq!(ApiToken::parse(bad), None, "{bad:?}");
        }
        assert!(ApiToken::parse("aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9").is_some());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_canonical_forms(s in ".{0,120}") {
            if let Some(t) = ApiToken::parse(&s) {
                prop_assert_eq!(t.to_string(), s);
            }
        }

        #[test]
        fn every_generated_token_parses(p in "[A-Za-z0-9._~-]{1,64}") {
            let t = ApiToken::generate(&p).expect("valid platform");
            prop_assert!(is_token_alphabet(&t.to_string()));
            prop_assert_eq!(ApiToken::parse(&t.to_string()), Some(t));
        }

        #[test]
        fn invalid_platform_ids_are_refused(p in ".{0,80}") {
            let valid = is_valid_platform_id(&p);
            prop_assert_eq!(ApiToken::generate(&p).is_some(), valid);
        }
    }
}
