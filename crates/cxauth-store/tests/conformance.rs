//! The store conformance suite: the behaviour every backend must show, run against each one:
//! SQLite (a fresh file per test) and PostgreSQL (a fresh schema per test on the test server; see
//! `cxauth_store::testing`: required in CI, skipped with a printed reason elsewhere).

use cxauth_core::store::DeleteUser;
use cxauth_core::store::ThrottleEntry;
use cxauth_core::store::{
    AuditEvent, AuditFilter, Bootstrap, LegacyToken, NewAgent, NewLegacyLogin, NewSession, NewUser,
    RevokeReason, RotateOutcome, Rotation, SharedStore, StoreError,
};
use cxauth_store::DatabaseUrl;

struct Backend {
    name: &'static str,
    store: SharedStore,
    url: String,
    _dir: tempfile::TempDir,
}

/// A failure names its backend: the assertions run inside `for b in backends().await`, so a
/// panic unwinds through the loop's `b`, which says which backend the failure above was on.
impl Drop for Backend {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "conformance: the failure above is on the {} backend",
                self.name
            );
        }
    }
}

impl Backend {
    /// Another store on the same database, as a second instance of the server has.
    async fn another_instance(&self) -> SharedStore {
        cxauth_store::open(&DatabaseUrl::parse(&self.url).expect("url"))
            .await
            .expect("a second instance")
    }

    /// Runs a `SELECT COUNT(*) …` straight on the database, to check what the trait hides.
    async fn count(&self, sql: &'static str) -> i64 {
        if self.url.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
            sqlx::query_scalar(sql)
                .fetch_one(&pool)
                .await
                .expect("count")
        } else {
            let pool = sqlx::SqlitePool::connect(&self.url).await.expect("connect");
            sqlx::query_scalar(sql)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    }
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = DatabaseUrl::Sqlite {
        path: Some(dir.path().join("conformance.db")),
    };
    let mut all = vec![Backend {
        name: "sqlite",
        store: cxauth_store::open(&url).await.expect("open sqlite"),
        url: url.to_string(),
        _dir: dir,
    }];
    if let Some(pg) = cxauth_store::testing::scratch_url_or_skip("conformance").await {
        all.push(Backend {
            name: "postgres",
            store: cxauth_store::open(&DatabaseUrl::parse(&pg).expect("url"))
                .await
                .expect("open postgres"),
            url: pg,
            _dir: tempfile::tempdir().expect("tempdir"),
        });
    }
    all
}

fn user(username: &str, parent: Option<&str>, grants: Vec<i64>) -> NewUser {
    NewUser {
        username: username.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        platform_id: "aws80".into(),
        parent: parent.map(str::to_owned),
        grants,
        roles: vec!["MANAGE_USERS".into()],
        first_name: "F".into(),
        last_name: "L".into(),
        rc_user_id: None,
        now: 1_000,
    }
}

fn digest(n: u8) -> [u8; 32] {
    [n; 32]
}

/// A main account "A" and a user "u" in it, the set-up most tests start from: the account's id
/// and the user's.
async fn user_u(s: &SharedStore) -> (i64, i64) {
    let m = s.create_main_account("A", 0).await.expect("main");
    let u = s
        .create_user(&user("u", None, vec![m]))
        .await
        .expect("user u");
    (m, u)
}

/// A user `u` (returned) with one session, `s1`, started at 0, its first refresh token
/// `digest(1)` ending at 1,000.
async fn user_with_session_s1(s: &SharedStore) -> i64 {
    let (_, uid) = user_u(s).await;
    s.create_session(&NewSession {
        session_id: "s1".into(),
        user_id: uid,
        expected_password_hash: None,
        refresh_digest: digest(1),
        now: 0,
        refresh_expires_at: 1_000,
        sso_login: false,
        max_sessions: 0,
    })
    .await
    .expect("session");
    uid
}

/// Runs a store call until it answers something other than `Unavailable`, and returns its value.
/// The concurrent tests below hammer one row from many tasks at once, so a backend may answer
/// `Unavailable` (SQLite's BUSY, a PostgreSQL serialisation failure), and the server's callers
/// retry it too. What these tests check is what is committed, not how often a call had to wait.
/// Any other error fails the test, naming `what`.
async fn until_available<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    loop {
        match call().await {
            Ok(value) => return value,
            Err(StoreError::Unavailable(_)) => tokio::task::yield_now().await,
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[tokio::test]
async fn bootstrap_happens_once_and_whole() {
    for b in backends().await {
        let s = &b.store;
        let boot = Bootstrap {
            main_account_name: "Main".into(),
            sub_account_name: "Default".into(),
            user: user("admin", None, vec![]),
        };
        assert!(s.bootstrap(&boot).await.expect("bootstrap"), "{}", b.name);
        assert!(!s.bootstrap(&boot).await.expect("second"), "{}", b.name);
        let admin = s
            .user_by_username("admin")
            .await
            .expect("get")
            .expect("admin");
        assert_eq!(admin.main_account_id, 10_000_000);
        let accounts = s.accounts_for_user(admin.id).await.expect("accounts");
        assert_eq!(accounts.len(), 1);
        assert_eq!(
            (accounts[0].id, accounts[0].main_id),
            (10_000_001, 10_000_000)
        );
        assert_eq!(s.list_users().await.expect("list").len(), 1);
    }
}

#[tokio::test]
async fn accounts_and_users_follow_the_rules() {
    for b in backends().await {
        let s = &b.store;
        let m1 = s.create_main_account("A", 0).await.expect("main");
        let m2 = s.create_main_account("B", 0).await.expect("main");
        assert_eq!((m1, m2), (10_000_000, 10_010_000), "{}", b.name);
        let a1 = s.create_sub_account(m1, "a1", 0).await.expect("sub");
        assert_eq!(a1, m1 + 1);
        assert!(matches!(
            s.create_sub_account(a1, "x", 0).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            s.create_sub_account(123, "x", 0).await,
            Err(StoreError::NotFound(_))
        ));

        let root = s
            .create_user(&user("root", None, vec![m1]))
            .await
            .expect("root");
        let child = s
            .create_user(&user("child", Some("root"), vec![]))
            .await
            .expect("child");
        let grandchild = s
            .create_user(&user("gc", Some("child"), vec![a1]))
            .await
            .expect("gc");
        let c = s.user_by_id(child).await.expect("get").expect("child");
        assert_eq!(
            (c.parent_id, c.parent_path.as_str(), c.main_account_id),
            (Some(root), root.to_string().as_str(), m1)
        );
        let g = s.user_by_id(grandchild).await.expect("get").expect("gc");
        assert_eq!(g.parent_path, format!("{root}.{child}"));
        assert!(g.has_ancestor(root) && g.has_ancestor(child) && !c.has_ancestor(grandchild));
        assert_eq!(g.roles, ["MANAGE_USERS"]);

        let before = s.list_users().await.expect("list").len();
        for bad in [
            user("root", None, vec![m1]),      // duplicate
            user("x", Some("ghost"), vec![]),  // unknown parent
            user("x", None, vec![999]),        // unknown account
            user("x", None, vec![]),           // neither
            user("x", Some("root"), vec![m2]), // grant outside the main account
        ] {
            assert!(
                s.create_user(&bad).await.is_err(),
                "{}: {:?}",
                b.name,
                bad.username
            );
        }
        assert!(matches!(
            s.create_user(&user("root", None, vec![m1])).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.list_users().await.expect("list").len(),
            before,
            "nothing half-written"
        );

        let subtree: Vec<i64> = s
            .user_subtree(&c)
            .await
            .expect("subtree")
            .iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(subtree, [child, grandchild]);
        // The grant of a main account covers its sub-accounts; a sub-account grant only itself.
        let root_accounts = s.accounts_for_user(root).await.expect("accounts");
        assert_eq!(root_accounts.iter().map(|a| a.id).collect::<Vec<_>>(), [a1]);
        let a2 = s.create_sub_account(m1, "a2", 0).await.expect("sub");
        assert_eq!(s.accounts_for_user(root).await.expect("accounts").len(), 2);
        assert_eq!(
            s.accounts_for_user(grandchild)
                .await
                .expect("accounts")
                .iter()
                .map(|a| a.id)
                .collect::<Vec<_>>(),
            [a1]
        );
        let _ = a2;
    }
}

#[tokio::test]
async fn refresh_rotation_grace_reuse_and_purge() {
    for b in backends().await {
        let s = &b.store;
        let uid = user_with_session_s1(s).await;
        let rot = |presented, successor, now| Rotation {
            presented: digest(presented),
            successor: digest(successor),
            now,
            grace_ms: 30,
            successor_expires_at: now + 1_000,
            session_expires_at: now + 1_000,
        };
        assert!(
            matches!(
                s.rotate_refresh_token(&rot(1, 2, 10))
                    .await
                    .expect("rotate"),
                RotateOutcome::Rotated { .. }
            ),
            "{}",
            b.name
        );
        // Grace retry of 1 retires 2.
        assert!(matches!(
            s.rotate_refresh_token(&rot(1, 3, 20)).await.expect("grace"),
            RotateOutcome::Rotated { .. }
        ));
        assert!(matches!(
            s.rotate_refresh_token(&rot(3, 4, 30))
                .await
                .expect("rotate"),
            RotateOutcome::Rotated { .. }
        ));
        assert!(matches!(
            s.rotate_refresh_token(&rot(9, 5, 30))
                .await
                .expect("unknown"),
            RotateOutcome::Invalid
        ));
        let state = s.session_state("s1").await.expect("state").expect("exists");
        assert!(!state.revoked);
        // 2 was retired at 20; at 51 it is reuse.
        assert!(matches!(
            s.rotate_refresh_token(&rot(2, 6, 51)).await.expect("reuse"),
            RotateOutcome::Reused { .. }
        ));
        assert!(
            s.session_state("s1")
                .await
                .expect("state")
                .expect("exists")
                .revoked
        );
        assert!(matches!(
            s.rotate_refresh_token(&rot(4, 7, 52))
                .await
                .expect("revoked"),
            RotateOutcome::Invalid
        ));

        // Expiry and purge.
        s.create_session(&NewSession {
            session_id: "s2".into(),
            user_id: uid,
            expected_password_hash: None,
            refresh_digest: digest(20),
            now: 0,
            refresh_expires_at: 100,
            sso_login: false,
            max_sessions: 0,
        })
        .await
        .expect("session");
        assert!(matches!(
            s.rotate_refresh_token(&rot(20, 21, 100))
                .await
                .expect("expired"),
            RotateOutcome::Invalid
        ));
        assert!(
            s.revoke_session_by_refresh(&digest(4), RevokeReason::Logout, 60)
                .await
                .expect("logout of ended session")
                .is_some()
        );
        assert!(
            s.revoke_session_by_refresh(&digest(99), RevokeReason::Logout, 60)
                .await
                .expect("unknown")
                .is_none()
        );
        let purged = s.purge_expired(10_000, 100).await.expect("purge").total();
        assert!(purged >= 2, "{}: {purged}", b.name);
        assert!(s.session_state("s1").await.expect("state").is_none());
        assert!(s.session_state("s2").await.expect("state").is_none());
    }
}

/// A session's expiry moves only ahead, and only when its newest refresh token would outlive it
/// (then to `session_expires_at`, a step later): the rotations in between leave its row alone,
/// and a session kept alive by rotations is never purged while its live token lasts.
#[tokio::test]
async fn a_session_expiry_moves_ahead_in_steps_and_a_rotated_session_outlives_its_first_token() {
    for b in backends().await {
        let s = &b.store;
        user_with_session_s1(s).await;
        let rotate = |presented, successor, now: i64| async move {
            s.rotate_refresh_token(&Rotation {
                presented: digest(presented),
                successor: digest(successor),
                now,
                grace_ms: 0,
                successor_expires_at: now + 1_000,
                session_expires_at: now + 1_500,
            })
            .await
        };
        let expiry = || b.count("SELECT expires_at FROM sessions WHERE id = 's1'");
        let rotated = |o: RotateOutcome| matches!(o, RotateOutcome::Rotated { .. });
        // The successor (ends at 1,100) outlives the session (1,000): a step past it.
        assert!(
            rotated(rotate(1, 2, 100).await.expect("rotate")),
            "{}",
            b.name
        );
        assert_eq!(expiry().await, 1_600, "{}", b.name);
        // It ends at 1,400, before the session: nothing written.
        assert!(
            rotated(rotate(2, 3, 400).await.expect("rotate")),
            "{}",
            b.name
        );
        assert_eq!(expiry().await, 1_600, "{}", b.name);
        // It ends at 1,700, after: a step past it again.
        assert!(
            rotated(rotate(3, 4, 700).await.expect("rotate")),
            "{}",
            b.name
        );
        assert_eq!(expiry().await, 2_200, "{}", b.name);
        // Past the first three tokens' expiry, the session and its live token survive a purge.
        s.purge_expired(1_650, 100).await.expect("purge");
        let state = s.session_state("s1").await.expect("state");
        assert!(state.is_some_and(|st| !st.revoked), "{}", b.name);
        assert!(
            rotated(rotate(4, 5, 1_650).await.expect("rotate")),
            "{}",
            b.name
        );
        assert_eq!(expiry().await, 3_150, "{}", b.name);
        // Left alone, it goes with the first purge past its last token's expiry and the step.
        s.purge_expired(3_149, 100).await.expect("purge");
        assert!(
            s.session_state("s1").await.expect("state").is_some(),
            "{}",
            b.name
        );
        s.purge_expired(3_150, 100).await.expect("purge");
        assert!(
            s.session_state("s1").await.expect("state").is_none(),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn disabling_and_password_changes_revoke_sessions() {
    for b in backends().await {
        let s = &b.store;
        let (_, uid) = user_u(s).await;
        for (i, sid) in ["a", "b"].iter().enumerate() {
            s.create_session(&NewSession {
                session_id: (*sid).into(),
                user_id: uid,
                expected_password_hash: None,
                refresh_digest: digest(i as u8),
                now: 0,
                refresh_expires_at: 1_000,
                sso_login: false,
                max_sessions: 0,
            })
            .await
            .expect("session");
        }
        assert!(s.set_password_hash("u", "new", 5).await.expect("set"));
        assert!(
            s.session_state("a").await.expect("a").expect("a").revoked,
            "{}",
            b.name
        );
        assert_eq!(
            s.user_by_id(uid)
                .await
                .expect("get")
                .expect("u")
                .password_hash,
            "new"
        );
        s.create_session(&NewSession {
            session_id: "c".into(),
            user_id: uid,
            expected_password_hash: None,
            refresh_digest: digest(9),
            now: 0,
            refresh_expires_at: 1_000,
            sso_login: false,
            max_sessions: 0,
        })
        .await
        .expect("session");
        assert!(s.set_user_enabled("u", false, 6).await.expect("disable"));
        let c = s.session_state("c").await.expect("c").expect("c");
        assert!(c.revoked && !c.user.enabled);
        assert!(
            !s.set_user_enabled("ghost", false, 6)
                .await
                .expect("unknown")
        );
        assert!(!s.set_password_hash("ghost", "x", 6).await.expect("unknown"));
    }
}

#[tokio::test]
async fn api_tokens_and_meta() {
    for b in backends().await {
        let s = &b.store;
        let (_, uid) = user_u(s).await;
        let t1 = s
            .insert_api_token(uid, &digest(1), b"sealed1", 0)
            .await
            .expect("t1");
        let t2 = s
            .insert_api_token(uid, &digest(2), b"sealed2", 0)
            .await
            .expect("t2");
        assert!(
            matches!(
                s.insert_api_token(uid, &digest(1), b"dup", 0).await,
                Err(StoreError::Conflict(_))
            ),
            "{}",
            b.name
        );
        let listed: Vec<i64> = s
            .api_tokens_of(uid)
            .await
            .expect("list")
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(listed, [t1, t2], "oldest first");
        let (tok, owner) = s
            .api_token_by_digest(&digest(2))
            .await
            .expect("get")
            .expect("found");
        assert_eq!(
            (tok.id, tok.sealed.as_slice(), owner.id),
            (t2, b"sealed2".as_slice(), uid)
        );
        assert!(s.delete_api_token(t2).await.expect("delete"));
        assert!(!s.delete_api_token(t2).await.expect("again"));
        assert!(
            s.api_token_by_digest(&digest(2))
                .await
                .expect("get")
                .is_none()
        );

        assert_eq!(s.init_meta("k", "v1").await.expect("init"), "v1");
        assert_eq!(
            s.init_meta("k", "v2").await.expect("init"),
            "v1",
            "never overwritten"
        );
        assert_eq!(s.get_meta("k").await.expect("get").as_deref(), Some("v1"));
        assert_eq!(s.get_meta("none").await.expect("get"), None);
    }
}

#[tokio::test]
async fn a_session_is_not_made_for_a_user_that_changed_meanwhile() {
    for b in backends().await {
        let s = &b.store;
        let (_, uid) = user_u(s).await;
        let seen = s
            .user_by_id(uid)
            .await
            .expect("get")
            .expect("u")
            .password_hash;
        let session = |id: &str, n: u8, hash: &str| NewSession {
            session_id: id.into(),
            user_id: uid,
            expected_password_hash: Some(hash.to_owned()),
            refresh_digest: digest(n),
            now: 0,
            refresh_expires_at: 1_000,
            sso_login: false,
            max_sessions: 0,
        };
        s.create_session(&session("ok", 1, &seen))
            .await
            .expect("unchanged user");
        assert!(s.set_password_hash("u", "changed", 1).await.expect("set"));
        assert!(
            matches!(
                s.create_session(&session("late", 2, &seen)).await,
                Err(StoreError::Conflict(_))
            ),
            "{}",
            b.name
        );
        assert!(s.session_state("late").await.expect("state").is_none());
        assert!(s.set_user_enabled("u", false, 2).await.expect("disable"));
        assert!(matches!(
            s.create_session(&session("off", 3, "changed")).await,
            Err(StoreError::Conflict(_))
        ));
    }
}

#[tokio::test]
async fn the_first_signing_key_is_created_once() {
    for b in backends().await {
        let s = b.store.clone();
        let key = |kid: &str| cxauth_core::store::StoredSigningKey {
            kid: kid.into(),
            public_key: vec![1; 32],
            sealed_private_key: vec![2; 40],
            created_at: 0,
        };
        let mut racers = Vec::new();
        for i in 0..8 {
            let s = s.clone();
            let k = key(&format!("k{i}"));
            racers.push(tokio::spawn(async move { s.init_signing_key(&k).await }));
        }
        let mut won = 0;
        for r in racers {
            won += usize::from(r.await.expect("join").expect("init"));
        }
        assert_eq!(won, 1, "{}", b.name);
        assert_eq!(s.signing_keys().await.expect("keys").len(), 1);
        s.insert_signing_key(&key("rotated"))
            .await
            .expect("rotation adds");
        assert_eq!(s.signing_keys().await.expect("keys").len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_of_one_token_leave_one_live_successor() {
    for b in backends().await {
        let s = b.store.clone();
        let (_, uid) = user_u(&s).await;
        s.create_session(&NewSession {
            session_id: "s".into(),
            user_id: uid,
            expected_password_hash: None,
            refresh_digest: digest(0),
            now: 0,
            refresh_expires_at: 100_000,
            sso_login: false,
            max_sessions: 0,
        })
        .await
        .expect("session");
        // Each racer its own time, so their successors end at different times and the session's
        // expiry (100,000 until a successor outlives it) is moved by some and left by others.
        let mut racers = Vec::new();
        for i in 1..=50u8 {
            let s = s.clone();
            let now = 10 + i64::from(i);
            racers.push(tokio::spawn(async move {
                s.rotate_refresh_token(&Rotation {
                    presented: digest(0),
                    successor: digest(i),
                    now,
                    grace_ms: 30_000,
                    successor_expires_at: 100_000 + now,
                    session_expires_at: 100_500 + now,
                })
                .await
            }));
        }
        let mut rotated = Vec::new();
        for r in racers {
            match r.await.expect("join") {
                Ok(RotateOutcome::Rotated { session_id, .. }) => rotated.push(session_id),
                Ok(other) => panic!("{}: unexpected {other:?}", b.name),
                // SQLite may report a busy database under this much contention; never a fork.
                Err(StoreError::Unavailable(_)) => {}
                Err(e) => panic!("{}: {e}", b.name),
            }
        }
        assert!(!rotated.is_empty(), "{}", b.name);
        assert!(rotated.iter().all(|sid| sid == "s"));
        // The session has exactly one live refresh token: it never forked.
        assert_eq!(
            b.count("SELECT COUNT(*) FROM refresh_tokens WHERE rotated_at IS NULL")
                .await,
            1,
            "{}",
            b.name
        );
        assert!(
            !s.session_state("s")
                .await
                .expect("state")
                .expect("s")
                .revoked
        );
        // Whatever order they committed in, the session's expiry is not before its live token's.
        assert_eq!(
            b.count(
                "SELECT COUNT(*) FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
                 WHERE t.rotated_at IS NULL AND s.expires_at >= t.expires_at"
            )
            .await,
            1,
            "{}: the session ends before its live token",
            b.name
        );
    }
}

/// Many sessions refreshed at once (what SQLite commits in groups): every rotation of a live
/// token succeeds, each exactly once, with its own outcome even when a reused, an unknown and a
/// disabled user's token ride in the same group; and every successor is live afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_of_many_sessions_each_get_their_own_outcome() {
    for b in backends().await {
        let s = b.store.clone();
        let (m, uid) = user_u(&s).await;
        let off = s
            .create_user(&user("off", None, vec![m]))
            .await
            .expect("user");
        for i in 0..40u8 {
            s.create_session(&NewSession {
                session_id: format!("s{i}"),
                user_id: if i == 39 { off } else { uid },
                expected_password_hash: None,
                refresh_digest: digest(i),
                now: 0,
                refresh_expires_at: 1_000_000,
                sso_login: false,
                max_sessions: 0,
            })
            .await
            .expect("session");
        }
        // Session 38's token was rotated long ago: presenting it again is reuse.
        s.rotate_refresh_token(&Rotation {
            presented: digest(38),
            successor: digest(238),
            now: 1,
            grace_ms: 30_000,
            successor_expires_at: 1_000_000,
            session_expires_at: 1_000_000,
        })
        .await
        .expect("first rotation of s38");
        s.set_user_enabled("off", false, 2).await.expect("disable");
        let mut racers = Vec::new();
        for i in 0..41u8 {
            let s = s.clone();
            racers.push(tokio::spawn(async move {
                let presented = if i == 40 { digest(250) } else { digest(i) };
                (
                    i,
                    s.rotate_refresh_token(&Rotation {
                        presented,
                        successor: digest(100 + i),
                        now: 100_000,
                        grace_ms: 30_000,
                        successor_expires_at: 1_000_000,
                        session_expires_at: 1_000_000,
                    })
                    .await,
                )
            }));
        }
        for r in racers {
            let (i, outcome) = r.await.expect("join");
            match (i, outcome) {
                (0..=37, Ok(RotateOutcome::Rotated { session_id, .. })) => {
                    assert_eq!(session_id, format!("s{i}"), "{}", b.name);
                }
                (38, Ok(RotateOutcome::Reused { session_id, .. })) => {
                    assert_eq!(session_id, "s38", "{}", b.name);
                }
                (39 | 40, Ok(RotateOutcome::Invalid)) => {}
                (i, other) => panic!("{}: rotation {i}: unexpected {other:?}", b.name),
            }
        }
        // 38 successors plus s38's first one (its session now revoked) are live.
        assert_eq!(
            b.count("SELECT COUNT(*) FROM refresh_tokens WHERE rotated_at IS NULL")
                .await,
            40,
            "{}",
            b.name
        );
        assert!(
            s.session_state("s38")
                .await
                .expect("state")
                .expect("s38")
                .revoked
        );
        assert!(
            !s.session_state("s7")
                .await
                .expect("state")
                .expect("s7")
                .revoked
        );
    }
}

#[tokio::test]
async fn rc_user_ids_are_unique_where_set() {
    for b in backends().await {
        let s = &b.store;
        let main = s.create_main_account("M", 0).await.expect("main");
        let a = s
            .create_user(&NewUser {
                rc_user_id: Some(101),
                ..user("a", None, vec![main])
            })
            .await
            .expect("a");
        // Several users without one.
        s.create_user(&user("b", None, vec![main]))
            .await
            .expect("b");
        s.create_user(&user("c", None, vec![main]))
            .await
            .expect("c");
        let dup = s
            .create_user(&NewUser {
                rc_user_id: Some(101),
                ..user("d", None, vec![main])
            })
            .await;
        match dup {
            Err(StoreError::Conflict(m)) => assert!(m.contains("101"), "{}: {m}", b.name),
            other => panic!("{}: {other:?}", b.name),
        }
        let found = s.user_by_rc_user_id(101).await.expect("get").expect("a");
        assert_eq!((found.id, found.rc_user_id), (a, Some(101)), "{}", b.name);
        assert!(s.user_by_rc_user_id(102).await.expect("get").is_none());
        let plain = s.user_by_username("b").await.expect("get").expect("b");
        assert_eq!(plain.rc_user_id, None);
    }
}

#[tokio::test]
async fn legacy_tokens_slide_and_are_purged() {
    for b in backends().await {
        let s = &b.store;
        let main = s.create_main_account("M", 0).await.expect("main");
        let uid = s
            .create_user(&user("u", None, vec![main]))
            .await
            .expect("u");
        let t = LegacyToken {
            expires_at: 10_000,
            lifetime_ms: 5_000,
        };
        s.insert_legacy_token(uid, &digest(1), &t, 5_000, None)
            .await
            .expect("insert");
        assert!(
            s.insert_legacy_token(uid, &digest(1), &t, 5_000, None)
                .await
                .is_err(),
            "{}: duplicate digest",
            b.name
        );
        // A login whose password changed meanwhile stores nothing.
        assert!(
            matches!(
                s.insert_legacy_token(uid, &digest(9), &t, 5_000, Some("not-the-hash"))
                    .await,
                Err(StoreError::Conflict(_))
            ),
            "{}: stale login",
            b.name
        );
        let (got, owner) = s
            .legacy_token_by_digest(&digest(1), 9_999)
            .await
            .expect("get")
            .expect("live");
        assert_eq!((got, owner.id), (t.clone(), uid), "{}", b.name);
        assert!(
            s.legacy_token_by_digest(&digest(2), 0)
                .await
                .expect("get")
                .is_none()
        );
        // Expiry is exclusive.
        assert!(
            s.legacy_token_by_digest(&digest(1), 10_000)
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            s.extend_legacy_token(&digest(1), 20_000)
                .await
                .expect("extend")
        );
        // Never shortened.
        assert!(
            !s.extend_legacy_token(&digest(1), 15_000)
                .await
                .expect("extend")
        );
        assert!(
            !s.extend_legacy_token(&digest(2), 15_000)
                .await
                .expect("extend")
        );
        let (got, _) = s
            .legacy_token_by_digest(&digest(1), 19_999)
            .await
            .expect("get")
            .expect("live");
        assert_eq!(got.expires_at, 20_000);
        s.insert_legacy_token(
            uid,
            &digest(3),
            &LegacyToken {
                expires_at: 50_000,
                lifetime_ms: 5_000,
            },
            0,
            None,
        )
        .await
        .expect("insert");
        assert!(
            s.purge_expired(20_000, 100)
                .await
                .expect("purge")
                .legacy_tokens
                >= 1
        );
        assert_eq!(
            b.count("SELECT COUNT(*) FROM legacy_tokens").await,
            1,
            "{}",
            b.name
        );
        assert!(
            s.legacy_token_by_digest(&digest(3), 20_000)
                .await
                .expect("get")
                .is_some()
        );
    }
}

#[tokio::test]
async fn ringex_emulator_apps_jwts_and_tokens() {
    for b in backends().await {
        let s = &b.store;
        let main = s.create_main_account("M", 0).await.expect("main");
        let uid = s
            .create_user(&NewUser {
                rc_user_id: Some(7),
                ..user("u", None, vec![main])
            })
            .await
            .expect("u");
        s.insert_ringex_app("client1", "$argon2id$hash", 0)
            .await
            .expect("app");
        assert!(matches!(
            s.insert_ringex_app("client1", "other", 0).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.ringex_app_secret_hash("client1")
                .await
                .expect("get")
                .as_deref(),
            Some("$argon2id$hash"),
            "{}",
            b.name
        );
        assert!(
            s.ringex_app_secret_hash("nope")
                .await
                .expect("get")
                .is_none()
        );

        s.insert_ringex_jwt(&digest(4), uid, 0).await.expect("jwt");
        assert_eq!(
            s.ringex_jwt_user(&digest(4))
                .await
                .expect("get")
                .map(|u| u.id),
            Some(uid)
        );
        assert!(s.ringex_jwt_user(&digest(5)).await.expect("get").is_none());

        s.insert_ringex_token(&digest(6), uid, 0, 1_000)
            .await
            .expect("token");
        let owner = s
            .ringex_token_user(&digest(6), 999)
            .await
            .expect("get")
            .expect("owner");
        assert_eq!((owner.id, owner.rc_user_id), (uid, Some(7)), "{}", b.name);
        assert!(
            s.ringex_token_user(&digest(6), 1_000)
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            s.ringex_token_user(&digest(7), 0)
                .await
                .expect("get")
                .is_none()
        );
        s.insert_ringex_token(&digest(8), uid, 0, 5_000)
            .await
            .expect("token");
        s.purge_expired(1_000, 100).await.expect("purge");
        assert_eq!(
            b.count("SELECT COUNT(*) FROM ringex_tokens").await,
            1,
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_session_remembers_it_came_from_the_ringex_exchange() {
    for b in backends().await {
        let s = &b.store;
        let main = s.create_main_account("M", 0).await.expect("main");
        let uid = s
            .create_user(&user("u", None, vec![main]))
            .await
            .expect("u");
        for (n, sso) in [(10u8, true), (20, false)] {
            s.create_session(&NewSession {
                session_id: format!("s{n}"),
                user_id: uid,
                refresh_digest: digest(n),
                expected_password_hash: None,
                now: 0,
                refresh_expires_at: 1_000,
                sso_login: sso,
                max_sessions: 0,
            })
            .await
            .expect("session");
            let outcome = s
                .rotate_refresh_token(&Rotation {
                    presented: digest(n),
                    successor: digest(n + 1),
                    now: 1,
                    grace_ms: 0,
                    successor_expires_at: 2_000,
                    session_expires_at: 2_000,
                })
                .await
                .expect("rotate");
            match outcome {
                RotateOutcome::Rotated { sso_login, .. } => {
                    assert_eq!(sso_login, sso, "{}", b.name)
                }
                other => panic!("{}: {other:?}", b.name),
            }
        }
    }
}

#[tokio::test]
async fn purge_goes_in_batches_and_removes_ended_sessions() {
    for b in backends().await {
        let s = &b.store;
        let main = s.create_main_account("M", 0).await.expect("main");
        let uid = s
            .create_user(&user("u", None, vec![main]))
            .await
            .expect("u");
        for (id, d) in [("ended", 1), ("live", 2)] {
            s.create_session(&NewSession {
                session_id: id.into(),
                user_id: uid,
                expected_password_hash: None,
                refresh_digest: digest(d),
                now: 0,
                refresh_expires_at: 1_000_000,
                sso_login: false,
                max_sessions: 0,
            })
            .await
            .expect("session");
        }
        assert!(
            s.revoke_session_by_refresh(&digest(1), RevokeReason::Logout, 500)
                .await
                .expect("revoke")
                == Some(uid)
        );
        for n in 10..15 {
            s.insert_legacy_token(
                uid,
                &digest(n),
                &LegacyToken {
                    expires_at: 900,
                    lifetime_ms: 100,
                },
                0,
                None,
            )
            .await
            .expect("legacy");
        }
        let first = s.purge_expired(1_000, 2).await.expect("purge");
        assert_eq!((first.legacy_tokens, first.sessions), (2, 1), "{}", b.name);
        assert!(first.is_full(2));
        let rest = cxauth_core::admin::purge(s.as_ref(), 1_000, 0, 2)
            .await
            .expect("purge");
        assert_eq!((rest.legacy_tokens, rest.sessions), (3, 0), "{}", b.name);
        assert_eq!(b.count("SELECT COUNT(*) FROM legacy_tokens").await, 0);
        assert!(s.session_state("ended").await.expect("state").is_none());
        assert!(s.session_state("live").await.expect("state").is_some());
        // The refresh token of the ended session went with it.
        assert_eq!(
            b.count("SELECT COUNT(*) FROM refresh_tokens").await,
            1,
            "{}",
            b.name
        );
    }
}

fn audit_event(at: i64, event: &str, username: Option<&str>) -> AuditEvent {
    AuditEvent {
        id: 0,
        at,
        event: event.into(),
        outcome: "success".into(),
        user_id: username.map(|_| 7),
        username: username.map(str::to_owned),
        addr: Some("192.0.2.1".into()),
        request_id: Some("req-1".into()),
        detail: "d".into(),
    }
}

#[tokio::test]
async fn audit_events_are_appended_filtered_and_purged() {
    for b in backends().await {
        let s = &b.store;
        for (at, event, user) in [
            (100, "login", Some("alice")),
            (200, "login", Some("bob")),
            (300, "key.create", None),
            (400, "session.end", Some("alice")),
        ] {
            s.append_audit(&audit_event(at, event, user))
                .await
                .expect("append");
        }
        let all = s.audit_events(&AuditFilter::default()).await.expect("read");
        assert_eq!(all.len(), 4, "{}", b.name);
        assert!(
            all.windows(2).all(|w| w[0].id < w[1].id),
            "{}: ordered",
            b.name
        );
        let mut expected = audit_event(100, "login", Some("alice"));
        expected.id = all[0].id;
        assert_eq!(all[0], expected, "{}", b.name);
        let alice = s
            .audit_events(&AuditFilter {
                username: Some("alice".into()),
                ..AuditFilter::default()
            })
            .await
            .expect("read");
        assert_eq!(
            alice.iter().map(|e| e.at).collect::<Vec<_>>(),
            [100, 400],
            "{}",
            b.name
        );
        let recent = s
            .audit_events(&AuditFilter {
                since: 300,
                ..AuditFilter::default()
            })
            .await
            .expect("read");
        assert_eq!(recent.len(), 2, "{}", b.name);
        let after = s
            .audit_events(&AuditFilter {
                after_id: all[1].id,
                limit: 1,
                ..AuditFilter::default()
            })
            .await
            .expect("read");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].id, all[2].id, "{}", b.name);
        // Retention: older than 250 goes, in batches.
        assert_eq!(s.purge_audit(250, 1).await.expect("purge"), 1, "{}", b.name);
        let rest = cxauth_core::admin::purge(s.as_ref(), 0, 250, 1)
            .await
            .expect("purge");
        assert_eq!(rest.audit_events, 1, "{}", b.name);
        assert_eq!(b.count("SELECT COUNT(*) FROM audit_events").await, 2);
    }
}

#[tokio::test]
async fn superseded_signing_keys_retire_and_the_newest_never_does() {
    for b in backends().await {
        let s = &b.store;
        for (kid, at) in [("k1", 1_000), ("k2", 2_000), ("k3", 3_000)] {
            s.insert_signing_key(&cxauth_core::store::StoredSigningKey {
                kid: kid.into(),
                public_key: vec![1; 32],
                sealed_private_key: vec![2; 40],
                created_at: at,
            })
            .await
            .expect("insert");
        }
        // Nothing was superseded before 1 500.
        assert!(
            s.retire_signing_keys(1_500)
                .await
                .expect("retire")
                .is_empty()
        );
        // k2 superseded k1 at 2 000.
        assert_eq!(s.retire_signing_keys(2_500).await.expect("retire"), ["k1"]);
        // Far in the future, only the newest stays.
        assert_eq!(s.retire_signing_keys(9_000).await.expect("retire"), ["k2"]);
        let left: Vec<String> = s
            .signing_keys()
            .await
            .expect("keys")
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(left, ["k3"], "{}", b.name);
        assert!(
            s.retire_signing_keys(9_000)
                .await
                .expect("retire")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn pool_use_and_stored_rows_are_reported() {
    for b in backends().await {
        let s = &b.store;
        let main = s.create_main_account("M", 0).await.expect("main");
        let uid = s
            .create_user(&user("u", None, vec![main]))
            .await
            .expect("u");
        for (id, d) in [("a", 1), ("b", 2)] {
            s.create_session(&NewSession {
                session_id: id.into(),
                user_id: uid,
                expected_password_hash: None,
                refresh_digest: digest(d),
                now: 0,
                refresh_expires_at: 1_000_000,
                sso_login: false,
                max_sessions: 0,
            })
            .await
            .expect("session");
        }
        s.revoke_session_by_refresh(&digest(1), RevokeReason::Logout, 10)
            .await
            .expect("revoke");
        s.insert_api_token(uid, &digest(9), b"sealed", 0)
            .await
            .expect("api token");
        let c = s.stored_counts().await.expect("counts");
        assert_eq!(
            (
                c.live_sessions,
                c.sessions,
                c.refresh_tokens,
                c.api_tokens,
                c.legacy_tokens
            ),
            (1, 2, 2, 1, 0),
            "{}",
            b.name
        );
        let p = s.pool_stats();
        assert!(
            p.open >= 1 && p.idle <= p.open && p.max >= p.open,
            "{}: {p:?}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_closed_store_refuses_work() {
    for b in backends().await {
        b.store.close().await;
        assert!(b.store.get_meta("x").await.is_err(), "{}", b.name);
    }
}

// ---- Revocation that evicts, the API-token cap, retired signing keys (issue 11).

use cxauth_core::store::{
    ApiTokenInsert, ApiTokenUse, CreationAudit, CredentialProof, EndCredentials, NewApiToken,
    RevokedCounts,
};

/// A user with two of every credential: sessions `{name}-s1`/`-s2`, API tokens, legacy tokens,
/// RingEX emulator JWT credentials and access tokens, digests from `base` up.
async fn give_credentials(s: &SharedStore, uid: i64, name: &str, base: u8) {
    for i in 0..2u8 {
        s.create_session(&NewSession {
            session_id: format!("{name}-s{i}"),
            user_id: uid,
            expected_password_hash: None,
            refresh_digest: digest(base + i),
            now: 0,
            refresh_expires_at: 1_000_000,
            sso_login: false,
            max_sessions: 0,
        })
        .await
        .expect("session");
        s.insert_api_token(uid, &digest(base + 10 + i), b"sealed", 0)
            .await
            .expect("api token");
        s.insert_legacy_token(
            uid,
            &digest(base + 20 + i),
            &LegacyToken {
                expires_at: 1_000_000,
                lifetime_ms: 1_000_000,
            },
            0,
            None,
        )
        .await
        .expect("legacy");
        s.insert_ringex_jwt(&digest(base + 30 + i), uid, 0)
            .await
            .expect("jwt");
        s.insert_ringex_token(&digest(base + 40 + i), uid, 0, 1_000_000)
            .await
            .expect("emulator token");
    }
}

/// Which of the user's credentials still work: (live sessions, API tokens, legacy tokens,
/// emulator JWT credentials, emulator access tokens).
async fn standing(s: &SharedStore, name: &str, base: u8) -> (u8, u8, u8, u8, u8) {
    let mut n = (0, 0, 0, 0, 0);
    for i in 0..2u8 {
        let st = s
            .session_state(&format!("{name}-s{i}"))
            .await
            .expect("state");
        n.0 += u8::from(st.is_some_and(|st| !st.revoked));
        n.1 += u8::from(
            s.api_token_by_digest(&digest(base + 10 + i))
                .await
                .expect("api")
                .is_some(),
        );
        n.2 += u8::from(
            s.legacy_token_by_digest(&digest(base + 20 + i), 10)
                .await
                .expect("legacy")
                .is_some(),
        );
        n.3 += u8::from(
            s.ringex_jwt_user(&digest(base + 30 + i))
                .await
                .expect("jwt")
                .is_some(),
        );
        n.4 += u8::from(
            s.ringex_token_user(&digest(base + 40 + i), 10)
                .await
                .expect("emulator token")
                .is_some(),
        );
    }
    n
}

#[tokio::test]
async fn password_change_disable_and_revoke_tokens_end_what_they_promise() {
    for b in backends().await {
        let s = &b.store;
        let (m, u) = user_u(s).await;
        let v = s.create_user(&user("v", None, vec![m])).await.expect("v");
        give_credentials(s, u, "u", 0).await;
        give_credentials(s, v, "v", 100).await;
        assert_eq!(standing(s, "u", 0).await, (2, 2, 2, 2, 2), "{}", b.name);

        // A password change ends everything but the API tokens.
        assert!(s.set_password_hash("u", "h2", 5).await.expect("set"));
        assert_eq!(standing(s, "u", 0).await, (0, 2, 0, 0, 0), "{}", b.name);

        // Disable ends legacy tokens for good: enable brings back the API tokens only.
        give_credentials(s, u, "u2", 50).await;
        assert!(s.set_user_enabled("u", false, 6).await.expect("disable"));
        assert!(s.set_user_enabled("u", true, 7).await.expect("enable"));
        assert_eq!(standing(s, "u2", 50).await, (0, 2, 0, 0, 0), "{}", b.name);
        assert_eq!(standing(s, "u", 0).await, (0, 2, 0, 0, 0), "{}", b.name);

        // revoke-tokens with a password change: everything, counted, in one go.
        give_credentials(s, u, "u3", 200).await;
        let end = EndCredentials {
            new_password_hash: Some("h3"),
            api_tokens: true,
            reason: RevokeReason::Revoked,
        };
        let ended = s
            .end_user_credentials("u", &end, 8)
            .await
            .expect("revoke")
            .expect("u exists");
        assert_eq!(
            ended,
            RevokedCounts {
                api_tokens: 6,
                legacy_tokens: 2,
                sessions: 2,
                ringex_jwts: 2,
                ringex_tokens: 2,
            },
            "{}",
            b.name
        );
        assert_eq!(standing(s, "u", 0).await, (0, 0, 0, 0, 0));
        assert_eq!(standing(s, "u3", 200).await, (0, 0, 0, 0, 0));
        let after = s.user_by_id(u).await.expect("get").expect("u");
        assert_eq!(after.password_hash, "h3");
        assert!(after.enabled);
        // Nothing of another user moved.
        assert_eq!(standing(s, "v", 100).await, (2, 2, 2, 2, 2), "{}", b.name);
        // Again: nothing left to end. Unknown user: None.
        let again = EndCredentials {
            new_password_hash: None,
            ..end
        };
        assert_eq!(
            s.end_user_credentials("u", &again, 9).await.expect("again"),
            Some(RevokedCounts::default())
        );
        assert_eq!(
            s.end_user_credentials("ghost", &again, 9)
                .await
                .expect("ghost"),
            None
        );
        let unchanged = s.user_by_id(u).await.expect("get").expect("u");
        assert_eq!(unchanged.password_hash, "h3");
    }
}

#[tokio::test]
async fn ringex_jwt_credentials_are_listed_without_secrets_and_revoked_by_id() {
    for b in backends().await {
        let s = &b.store;
        let (m, u) = user_u(s).await;
        let v = s.create_user(&user("v", None, vec![m])).await.expect("v");
        s.insert_ringex_jwt(&digest(1), u, 10).await.expect("jwt");
        s.insert_ringex_jwt(&digest(2), v, 20).await.expect("jwt");
        s.insert_ringex_jwt(&digest(3), u, 30).await.expect("jwt");
        s.insert_ringex_token(&digest(4), u, 0, 1_000)
            .await
            .expect("token");
        s.insert_ringex_token(&digest(5), v, 0, 1_000)
            .await
            .expect("token");
        let all = s.ringex_jwts(None).await.expect("list");
        assert_eq!(
            all.iter()
                .map(|j| (j.username.as_str(), j.created_at))
                .collect::<Vec<_>>(),
            [("u", 10), ("v", 20), ("u", 30)],
            "{}",
            b.name
        );
        let of_u = s.ringex_jwts(Some("u")).await.expect("list");
        assert_eq!(of_u.len(), 2);
        assert!(of_u.iter().all(|j| j.user_id == u));
        assert!(s.ringex_jwts(Some("ghost")).await.expect("list").is_empty());

        let gone = s
            .revoke_ringex_jwt(all[0].id)
            .await
            .expect("revoke")
            .expect("exists");
        assert_eq!(gone, all[0]);
        assert!(s.ringex_jwt_user(&digest(1)).await.expect("get").is_none());
        assert!(s.ringex_jwt_user(&digest(3)).await.expect("get").is_some());
        // The user's emulator access tokens end with it; another user's stay.
        assert!(
            s.ringex_token_user(&digest(4), 0)
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            s.ringex_token_user(&digest(5), 0)
                .await
                .expect("get")
                .is_some()
        );
        assert_eq!(s.revoke_ringex_jwt(all[0].id).await.expect("again"), None);
        assert_eq!(s.revoke_ringex_jwt(-1).await.expect("unknown"), None);
        assert_eq!(s.ringex_jwts(None).await.expect("list").len(), 2);
    }
}

fn new_token<'a>(
    uid: i64,
    d: &'a [u8; 32],
    cap: u64,
    proof: CredentialProof<'a>,
) -> NewApiToken<'a> {
    NewApiToken {
        user_id: uid,
        digest: d,
        sealed: b"sealed",
        now: 10,
        cap,
        name: None,
        expires_at: None,
        proof,
        audit: None,
    }
}

/// User `u` of a new main account, with two of every credential (its sessions `u-s0`, `u-s1`).
async fn token_owner(s: &SharedStore) -> i64 {
    let (_, u) = user_u(s).await;
    give_credentials(s, u, "u", 0).await;
    u
}

/// The audit event of user `u` (named `u`) creating the API token with row id `id`.
fn creation_event(u: i64, id: i64) -> AuditEvent {
    AuditEvent {
        id: 0,
        at: 10,
        event: "api_token.create".into(),
        outcome: "success".into(),
        user_id: Some(u),
        username: Some("u".into()),
        addr: Some("192.0.2.7".into()),
        request_id: Some("r-1".into()),
        detail: format!("token id {id}"),
    }
}

/// A creation writes its audit event in its transaction, naming the new token by id; one the
/// cap refuses writes none; and an audit table that refuses the row refuses neither the token
/// nor the rest of the transaction (the audit trail is best effort).
#[tokio::test]
async fn an_api_token_creation_writes_its_audit_event_with_it_or_the_token_alone() {
    for b in backends().await {
        let s = &b.store;
        let u = token_owner(s).await;
        let session = CredentialProof::Session("u-s0");
        let event = |id: i64| creation_event(u, id);
        let audited = |d, cap| NewApiToken {
            audit: Some(CreationAudit(&event)),
            ..new_token(u, d, cap, session)
        };
        let trail = || async {
            s.audit_events(&AuditFilter::default())
                .await
                .expect("audit")
                .into_iter()
                .map(|e| AuditEvent { id: 0, ..e })
                .collect::<Vec<_>>()
        };
        let before = trail().await;

        let d1 = digest(80);
        let ApiTokenInsert::Created(t1) = s
            .insert_api_token_checked(&audited(&d1, 3))
            .await
            .expect("insert")
        else {
            panic!("{}: not created", b.name)
        };
        let after = trail().await;
        assert_eq!(after.len(), before.len() + 1, "{}", b.name);
        assert!(after.contains(&event(t1)), "{}: {after:?}", b.name);

        // A cap of three (two tokens from `give_credentials`, and this one) refuses the next,
        // which writes no event.
        let d2 = digest(81);
        assert_eq!(
            s.insert_api_token_checked(&audited(&d2, 3))
                .await
                .expect("insert"),
            ApiTokenInsert::CapReached,
            "{}",
            b.name
        );
        assert_eq!(trail().await, after, "{}", b.name);

        refuse_inserts(&b, "audit_events").await;
        let ApiTokenInsert::Created(t2) = s
            .insert_api_token_checked(&audited(&d2, 100))
            .await
            .expect("a creation without its audit row")
        else {
            panic!("{}: not created", b.name)
        };
        assert!(
            s.api_token_by_id(t2).await.expect("get").is_some(),
            "{}",
            b.name
        );
        assert_eq!(trail().await, after, "{}", b.name);
    }
}

#[tokio::test]
async fn api_token_metadata_renames_last_uses_and_expiry() {
    for b in backends().await {
        let s = &b.store;
        let u = token_owner(s).await;
        let session = CredentialProof::Session("u-s0");
        let (d1, d2) = (digest(70), digest(71));
        let ApiTokenInsert::Created(t1) = s
            .insert_api_token_checked(&NewApiToken {
                name: Some("ci"),
                expires_at: Some(1_000),
                ..new_token(u, &d1, 100, session)
            })
            .await
            .expect("insert")
        else {
            panic!("{}: not created", b.name)
        };
        let (tok, owner) = s.api_token_by_id(t1).await.expect("get").expect("found");
        assert_eq!(owner.id, u);
        assert_eq!(
            (
                tok.name.as_deref(),
                tok.created_at,
                tok.expires_at,
                tok.last_used_at
            ),
            (Some("ci"), 10, Some(1_000), None),
            "{}",
            b.name
        );
        assert!(!tok.expired(999) && tok.expired(1_000));
        assert!(s.api_token_by_id(-1).await.expect("get").is_none());
        // Tokens made before version 9 (and by the RingCX POST) have none of it.
        let t0 = s
            .insert_api_token(u, &d2, b"sealed", 5)
            .await
            .expect("plain");
        let (plain, _) = s
            .api_token_by_digest(&d2)
            .await
            .expect("get")
            .expect("found");
        assert_eq!(
            (plain.id, plain.name, plain.expires_at, plain.last_used_at),
            (t0, None, None, None)
        );

        // Rename and clear; an unknown id changes nothing.
        assert!(
            s.rename_api_token(t1, Some("deploy"))
                .await
                .expect("rename")
        );
        assert!(!s.rename_api_token(-1, Some("x")).await.expect("rename"));
        let names: Vec<Option<String>> = s
            .api_tokens_of(u)
            .await
            .expect("list")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert!(names.contains(&Some("deploy".into())), "{names:?}");
        assert!(s.rename_api_token(t1, None).await.expect("clear"));
        assert_eq!(
            s.api_token_by_id(t1).await.expect("get").expect("t").0.name,
            None
        );

        // Last uses: a batch, never moving back; unknown rows, and the first use of a row that
        // holds another digest than the use's, skipped.
        let used = |id: i64, digest: [u8; 32], at: i64| ApiTokenUse { id, digest, at };
        assert_eq!(s.record_api_token_uses(&[]).await.expect("none"), 0);
        let n = s
            .record_api_token_uses(&[
                used(t1, d1, 500),
                used(t0, d2, 600),
                used(-5, digest(99), 700),
                used(t1, digest(99), 750),
            ])
            .await
            .expect("uses");
        assert_eq!(n, 2, "{}", b.name);
        assert_eq!(
            s.record_api_token_uses(&[used(t1, d1, 400)])
                .await
                .expect("older"),
            0
        );
        assert_eq!(
            s.record_api_token_uses(&[used(t1, d1, 800)])
                .await
                .expect("newer"),
            1
        );
        let (t, _) = s.api_token_by_digest(&d1).await.expect("get").expect("t");
        assert_eq!(t.last_used_at, Some(800));
        // Two uses of one token in a batch: the newer counts, whichever comes first.
        assert_eq!(
            s.record_api_token_uses(&[used(t0, d2, 900), used(t0, d2, 650)])
                .await
                .expect("twice"),
            1
        );
        let (t, _) = s.api_token_by_digest(&d2).await.expect("get").expect("t");
        assert_eq!(t.last_used_at, Some(900), "{}", b.name);
        // A batch of several statements, out of order: the known tokens, in its first and
        // last statements, are written; the 1,200 unknown rows are skipped.
        let mut many = vec![used(t1, d1, 1_100)];
        many.extend((0..1_200i64).map(|i| used(1_000_000 + i, digest(98), 5_000)));
        many.push(used(t0, d2, 1_000));
        assert_eq!(
            s.record_api_token_uses(&many).await.expect("many"),
            2,
            "{}",
            b.name
        );
        let (t, _) = s.api_token_by_digest(&d1).await.expect("get").expect("t");
        assert_eq!(t.last_used_at, Some(1_100));
        let (t, _) = s.api_token_by_digest(&d2).await.expect("get").expect("t");
        assert_eq!(t.last_used_at, Some(1_000));

        // An expired token is no proof, and the owner's next creation deletes it, with a
        // change-log row, even when the cap refuses the new one.
        let last = s.latest_credential_change().await.expect("seq");
        let d3 = digest(72);
        let late = NewApiToken {
            now: 1_000,
            ..new_token(u, &d3, 100, CredentialProof::ApiToken(&d1))
        };
        assert_eq!(
            s.insert_api_token_checked(&late).await.expect("insert"),
            ApiTokenInsert::CredentialGone,
            "{}",
            b.name
        );
        let capped = NewApiToken {
            now: 1_000,
            ..new_token(u, &d3, 1, session)
        };
        assert_eq!(
            s.insert_api_token_checked(&capped).await.expect("insert"),
            ApiTokenInsert::CapReached,
            "{}: the plain token still counts",
            b.name
        );
        assert!(
            s.api_token_by_id(t1).await.expect("get").is_none(),
            "{}",
            b.name
        );
        assert!(s.latest_credential_change().await.expect("seq") > last);
        assert_eq!(
            s.api_tokens_of(u)
                .await
                .expect("list")
                .iter()
                .filter(|t| t.id == t0 || t.id == t1)
                .count(),
            1
        );
    }
}

/// A deleted API token's row id is never given to a later token, not even when it was the
/// newest. The last-use write relies on it: on SQLite a use of a token that already has a row
/// in `api_token_uses` is written without reading the token's row again (its digest is not
/// compared), which is right only if that id can never have passed to another token since the
/// use was noted. (SQLite's `INTEGER PRIMARY KEY` without `AUTOINCREMENT` reuses the largest
/// id once its row is gone.) A use noted before the delete writes nothing, on the old token's
/// id or on the new one.
#[tokio::test]
async fn a_deleted_api_tokens_id_is_never_reused_and_its_late_uses_land_nowhere() {
    for b in backends().await {
        let s = &b.store;
        let u = token_owner(s).await;
        let session = CredentialProof::Session("u-s0");
        let used = |id: i64, digest: [u8; 32], at: i64| ApiTokenUse { id, digest, at };
        let mut newest = None;
        for n in 0..3u8 {
            let d = digest(110 + n);
            let ApiTokenInsert::Created(id) = s
                .insert_api_token_checked(&new_token(u, &d, 100, session))
                .await
                .expect("insert")
            else {
                panic!("{}: not created", b.name)
            };
            assert_eq!(
                s.record_api_token_uses(&[used(id, d, 3_000)])
                    .await
                    .expect("use"),
                1,
                "{}",
                b.name
            );
            if let Some((old, old_digest)) = newest {
                assert!(id > old, "{}: id {id} after the deleted {old}", b.name);
                // A use of the deleted token, noted before its delete and written after the
                // new token's first use: written nowhere.
                assert_eq!(
                    s.record_api_token_uses(&[used(old, old_digest, 4_000)])
                        .await
                        .expect("late use"),
                    0,
                    "{}",
                    b.name
                );
            }
            let (t, _) = s.api_token_by_id(id).await.expect("get").expect("t");
            assert_eq!(t.last_used_at, Some(3_000), "{}", b.name);
            assert!(s.delete_api_token(id).await.expect("delete"), "{}", b.name);
            newest = Some((id, d));
        }
        assert_eq!(
            b.count("SELECT COUNT(*) FROM api_token_uses").await,
            0,
            "{}: uses go with their tokens",
            b.name
        );
    }
}

/// `rows` API tokens of user `username`, inserted straight into the database (far faster than
/// one by one through the store), with random digests: their ids and digests, in id order.
async fn seed_tokens(b: &Backend, username: &str, rows: i64) -> Vec<(i64, Vec<u8>)> {
    const OF_USER: &str = "SELECT id, digest FROM api_tokens \
        WHERE user_id = (SELECT id FROM users WHERE username = $1) ORDER BY id";
    if b.url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&b.url).await.expect("connect");
        sqlx::query(
            "INSERT INTO api_tokens (user_id, digest, sealed, created_at) \
             SELECT (SELECT id FROM users WHERE username = $2), \
                    sha256(int8send(i)), sha256(int8send(-i)) || sha256(int8send(i)), 0 \
             FROM generate_series(1, $1::bigint) AS i",
        )
        .bind(rows)
        .bind(username)
        .execute(&pool)
        .await
        .expect("seed");
        sqlx::query("ANALYZE api_tokens")
            .execute(&pool)
            .await
            .expect("analyze");
        sqlx::query_as(OF_USER)
            .bind(username)
            .fetch_all(&pool)
            .await
            .expect("tokens")
    } else {
        let pool = sqlx::SqlitePool::connect(&b.url).await.expect("connect");
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             INSERT INTO api_tokens (user_id, digest, sealed, created_at) \
             SELECT (SELECT id FROM users WHERE username = $2), randomblob(32), \
                    randomblob(64), 0 \
             FROM n",
        )
        .bind(rows)
        .bind(username)
        .execute(&pool)
        .await
        .expect("seed");
        sqlx::query_as(OF_USER)
            .bind(username)
            .fetch_all(&pool)
            .await
            .expect("tokens")
    }
}

/// Two instances on one database write the last uses of the same tokens at the same time, as
/// two servers' minute writes do when a client spreads its calls over both. Their batches
/// come in opposite orders and span several statements. On a table this size PostgreSQL
/// updates the rows in the order of the statement's `VALUES` (an index look-up for each; on a
/// small table it scans the table instead, in its own order), so a store that wrote them in
/// the order it was handed would lock them in opposite orders, and PostgreSQL would end one of
/// the two transactions as a deadlock (it did, with the sort taken out). Neither may fail, and
/// no row may end older than the newest use written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_writing_the_same_last_uses_at_once_neither_fail_nor_move_back() {
    const ROWS: i64 = 150_000;
    const USED_EVERY: usize = 125;
    const ROUNDS: i64 = 6;
    for b in backends().await {
        let first = b.store.clone();
        let second = b.another_instance().await;
        user_u(&first).await;
        let tokens = seed_tokens(&b, "u", ROWS).await;
        assert_eq!(tokens.len() as i64, ROWS, "{}", b.name);
        let used: Vec<(i64, [u8; 32])> = tokens
            .iter()
            .step_by(USED_EVERY)
            .map(|(id, d)| (*id, d.as_slice().try_into().expect("32 bytes")))
            .collect();
        let count = used.len() as u64;
        let uses = |at: i64, reversed: bool| {
            let mut uses: Vec<ApiTokenUse> = used
                .iter()
                .map(|&(id, digest)| ApiTokenUse { id, digest, at })
                .collect();
            if reversed {
                uses.reverse();
            }
            uses
        };
        for round in 0..ROUNDS {
            // The second instance's uses are the newer ones, so each of its writes changes
            // every row whatever the first one did; the first's changes those it reaches first.
            let (older, newer) = (10_000 + 2 * round, 10_001 + 2 * round);
            let (a, z) = (uses(older, false), uses(newer, true));
            let (written_a, written_z) = tokio::join!(
                first.record_api_token_uses(&a),
                second.record_api_token_uses(&z)
            );
            let written_a = written_a.unwrap_or_else(|e| panic!("{}: first: {e}", b.name));
            let written_z = written_z.unwrap_or_else(|e| panic!("{}: second: {e}", b.name));
            assert_eq!(written_z, count, "{}: round {round}", b.name);
            assert!(written_a <= count, "{}: round {round}", b.name);
        }
        let newest = 10_001 + 2 * (ROUNDS - 1);
        for (id, _) in &used {
            let (t, _) = first.api_token_by_id(*id).await.expect("get").expect("row");
            assert_eq!(t.last_used_at, Some(newest), "{}: row {id}", b.name);
        }
        second.close().await;
    }
}

/// One instance writes the last uses of tokens while another deletes those tokens, as when a
/// user deletes tokens on one server while another server's minute write holds their uses.
/// Since migration 12 a use is a row of its own that goes with its token (a foreign key): on
/// PostgreSQL a token deleted after the write's statement began, and before it wrote that
/// token's use, failed the whole statement on the key; the write must skip it instead. Neither
/// side may fail, and no use may outlive its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_deleted_while_another_instance_writes_their_uses_neither_fail_nor_leave_uses() {
    const ROWS: i64 = 3_000;
    for b in backends().await {
        let writer = b.store.clone();
        let deleter = b.another_instance().await;
        user_u(&writer).await;
        let tokens: Vec<(i64, [u8; 32])> = seed_tokens(&b, "u", ROWS)
            .await
            .into_iter()
            .map(|(id, d)| (id, d.as_slice().try_into().expect("32 bytes")))
            .collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        // Newest ids first, so that the deletes meet the writes' statements at every point.
        let deletes = async {
            for (id, _) in tokens.iter().rev() {
                deleter
                    .delete_api_token(*id)
                    .await
                    .unwrap_or_else(|e| panic!("{}: delete {id}: {e}", b.name));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let writes = async {
            let mut rounds = 0i64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                rounds += 1;
                let uses: Vec<ApiTokenUse> = tokens
                    .iter()
                    .map(|&(id, digest)| ApiTokenUse {
                        id,
                        digest,
                        at: rounds,
                    })
                    .collect();
                writer
                    .record_api_token_uses(&uses)
                    .await
                    .unwrap_or_else(|e| panic!("{}: write {rounds}: {e}", b.name));
            }
            rounds
        };
        let ((), rounds) = tokio::join!(deletes, writes);
        assert!(rounds > 1, "{}: the writes overlapped the deletes", b.name);
        assert_eq!(
            b.count("SELECT COUNT(*) FROM api_token_uses").await,
            0,
            "{}: no use outlives its token",
            b.name
        );
        deleter.close().await;
    }
}

#[tokio::test]
async fn api_tokens_are_capped_and_need_a_standing_credential() {
    for b in backends().await {
        let s = &b.store;
        let u = token_owner(s).await;
        let session = CredentialProof::Session("u-s0");
        let api = digest(10);
        let legacy = digest(20);
        // u holds 2 API tokens: a cap of 4 lets 2 more in, whatever the proof.
        for (n, proof) in [(60, session), (61, CredentialProof::ApiToken(&api))] {
            assert!(
                matches!(
                    s.insert_api_token_checked(&new_token(u, &digest(n), 4, proof))
                        .await
                        .expect("insert"),
                    ApiTokenInsert::Created(_)
                ),
                "{}",
                b.name
            );
        }
        assert_eq!(
            s.insert_api_token_checked(&new_token(
                u,
                &digest(62),
                4,
                CredentialProof::LegacyToken(&legacy)
            ))
            .await
            .expect("insert"),
            ApiTokenInsert::CapReached,
            "{}",
            b.name
        );
        assert_eq!(s.api_tokens_of(u).await.expect("list").len(), 4);
        // A credential that no longer stands mints nothing, even under the cap.
        s.revoke_session_by_refresh(&digest(0), RevokeReason::Logout, 5)
            .await
            .expect("logout");
        let ds: Vec<[u8; 32]> = (63..=67).map(digest).collect();
        let unknown = digest(99);
        let other = CredentialProof::ApiToken(&unknown);
        let expired_legacy = NewApiToken {
            now: 2_000_000,
            ..new_token(u, &ds[2], 100, CredentialProof::LegacyToken(&legacy))
        };
        for t in [
            new_token(u, &ds[0], 100, session),
            new_token(u, &ds[1], 100, other),
            expired_legacy,
            // Another user's credential.
            new_token(u + 1, &ds[3], 100, CredentialProof::ApiToken(&api)),
        ] {
            assert_eq!(
                s.insert_api_token_checked(&t).await.expect("insert"),
                ApiTokenInsert::CredentialGone,
                "{}",
                b.name
            );
        }
        // A disabled user mints nothing either.
        assert!(s.set_user_enabled("u", false, 6).await.expect("disable"));
        assert_eq!(
            s.insert_api_token_checked(&new_token(
                u,
                &digest(67),
                100,
                CredentialProof::ApiToken(&api)
            ))
            .await
            .expect("insert"),
            ApiTokenInsert::CredentialGone
        );
        assert_eq!(
            s.api_tokens_of(u).await.expect("list").len(),
            4,
            "{}",
            b.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_stop_exactly_at_the_cap() {
    const CAP: u64 = 20;
    for b in backends().await {
        let s = b.store.clone();
        let (_, u) = user_u(&s).await;
        s.insert_api_token(u, &digest(0), b"sealed", 0)
            .await
            .expect("proof token");
        // Up to cap - 10.
        for i in 1..(CAP - 10) {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&i.to_be_bytes());
            d[31] = 1;
            s.insert_api_token(u, &d, b"sealed", 0).await.expect("seed");
        }
        assert_eq!(
            s.api_tokens_of(u).await.expect("list").len() as u64,
            CAP - 10
        );
        let mut racers = Vec::new();
        for i in 0..50u64 {
            let s = s.clone();
            racers.push(tokio::spawn(async move {
                let mut d = [0u8; 32];
                d[..8].copy_from_slice(&i.to_be_bytes());
                d[31] = 2;
                let proof = digest(0);
                // Each creation audited in its transaction: exactly one event per token made.
                let event = |id: i64| creation_event(u, id);
                s.insert_api_token_checked(&NewApiToken {
                    audit: Some(CreationAudit(&event)),
                    ..new_token(u, &d, CAP, CredentialProof::ApiToken(&proof))
                })
                .await
            }));
        }
        let (mut created, mut refused) = (0, 0);
        let mut made = Vec::new();
        for r in racers {
            match r.await.expect("join") {
                Ok(ApiTokenInsert::Created(id)) => {
                    created += 1;
                    made.push(format!("token id {id}"));
                }
                Ok(ApiTokenInsert::CapReached) => refused += 1,
                Ok(other) => panic!("{}: unexpected {other:?}", b.name),
                Err(e) => panic!("{}: {e}", b.name),
            }
        }
        assert_eq!((created, refused), (10, 40), "{}", b.name);
        let mut audited: Vec<String> = s
            .audit_events(&AuditFilter::default())
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.event == "api_token.create")
            .map(|e| e.detail)
            .collect();
        audited.sort();
        made.sort();
        assert_eq!(audited, made, "{}: one event per token made", b.name);
        assert_eq!(
            s.api_tokens_of(u).await.expect("list").len() as u64,
            CAP,
            "{}",
            b.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_racing_creations_leaves_no_token_behind() {
    for b in backends().await {
        let s = b.store.clone();
        let (_, u) = user_u(&s).await;
        give_credentials(&s, u, "u", 0).await;
        let mut racers = Vec::new();
        for i in 0..40u64 {
            let racer = s.clone();
            racers.push(tokio::spawn(async move {
                let mut d = [0u8; 32];
                d[..8].copy_from_slice(&i.to_be_bytes());
                d[31] = 3;
                // Half prove with an API token, half with a legacy token.
                let (api, legacy) = (digest(10), digest(20));
                let proof = if i % 2 == 0 {
                    CredentialProof::ApiToken(&api)
                } else {
                    CredentialProof::LegacyToken(&legacy)
                };
                racer
                    .insert_api_token_checked(&new_token(u, &d, 1_000, proof))
                    .await
            }));
            if i == 20 {
                let end = EndCredentials {
                    new_password_hash: None,
                    api_tokens: true,
                    reason: RevokeReason::Revoked,
                };
                s.end_user_credentials("u", &end, 10)
                    .await
                    .expect("revoke")
                    .expect("u");
            }
        }
        let mut outcomes = (0, 0);
        for r in racers {
            match r.await.expect("join").expect("insert") {
                ApiTokenInsert::Created(_) => outcomes.0 += 1,
                ApiTokenInsert::CredentialGone => outcomes.1 += 1,
                ApiTokenInsert::CapReached => panic!("{}: no cap here", b.name),
            }
        }
        // Some creations lost the race, and nothing minted before the revocation or on the
        // authority of a revoked credential is left.
        assert!(outcomes.1 > 0, "{}: {outcomes:?}", b.name);
        assert!(
            s.api_tokens_of(u).await.expect("list").is_empty(),
            "{}: {outcomes:?}",
            b.name
        );
    }
}

#[tokio::test]
async fn retired_signing_keys_keep_their_public_half_until_forgotten() {
    for b in backends().await {
        let s = &b.store;
        for (kid, at) in [("k1", 1_000), ("k2", 2_000)] {
            s.insert_signing_key(&cxauth_core::store::StoredSigningKey {
                kid: kid.into(),
                public_key: vec![at as u8; 32],
                sealed_private_key: vec![2; 40],
                created_at: at,
            })
            .await
            .expect("insert");
        }
        assert_eq!(s.retire_signing_keys(2_500).await.expect("retire"), ["k1"]);
        let retired = s.retired_signing_keys().await.expect("retired");
        assert_eq!(retired.len(), 1, "{}", b.name);
        assert_eq!(
            (
                retired[0].kid.as_str(),
                retired[0].public_key.as_slice(),
                retired[0].retired_at
            ),
            ("k1", [1_000u16 as u8; 32].as_slice(), 2_500)
        );
        // The private half is gone with the live key.
        assert_eq!(
            b.count("SELECT COUNT(*) FROM signing_keys WHERE kid = 'k1'")
                .await,
            0
        );
        assert!(
            s.forget_retired_signing_keys(2_500)
                .await
                .expect("forget")
                .is_empty()
        );
        assert_eq!(
            s.forget_retired_signing_keys(2_501).await.expect("forget"),
            ["k1"],
            "{}",
            b.name
        );
        assert!(s.retired_signing_keys().await.expect("retired").is_empty());
    }
}

/// Adds one failure to a throttle entry (what a reservation does), read-modify-write.
fn one_more(e: Option<ThrottleEntry>) -> Option<ThrottleEntry> {
    let mut e = e.unwrap_or(ThrottleEntry {
        failures: 0,
        last_failure: 1_000,
        blocked_until: 0,
        expires_at: 10_000,
    });
    e.failures += 1;
    Some(e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttle_updates_are_atomic_under_concurrency_and_purged() {
    for b in backends().await {
        let s = &b.store;
        // 40 read-modify-writes of one key at once: none is lost.
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    let key = digest(7);
                    until_available("throttle update", || s.throttle_update(&key, &one_more)).await
                })
            })
            .collect();
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.expect("task").map_or(0, |e| e.failures));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<_>>(), "{}", b.name);
        let now = s
            .throttle_update(&digest(7), &|e| e)
            .await
            .expect("read")
            .expect("entry");
        assert_eq!(now.failures, 40, "{}", b.name);
        // `None` deletes; expired entries are purged.
        assert!(s.throttle_update(&digest(7), &|_| None).await.is_ok());
        assert_eq!(
            s.throttle_update(&digest(7), &|e| e).await.expect("read"),
            None,
            "{}",
            b.name
        );
        s.throttle_update(&digest(8), &one_more).await.expect("set");
        let purged = s.purge_expired(20_000, 100).await.expect("purge");
        assert_eq!(purged.login_throttle, 1, "{}", b.name);
        assert_eq!(
            b.count("SELECT COUNT(*) FROM login_throttle").await,
            0,
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn login_addresses_are_remembered_bounded_and_forgotten() {
    for b in backends().await {
        let s = &b.store;
        let main = s.create_main_account("M", 0).await.expect("main");
        let uid = s
            .create_user(&user("u", None, vec![main]))
            .await
            .expect("u");
        assert_eq!(
            s.login_address_known(&digest(1), 0).await.expect("known"),
            None
        );
        for n in 1..=5u8 {
            s.remember_login_address(&digest(n), uid, i64::from(n), 10_000, 3)
                .await
                .expect("remember");
        }
        // The three most recent are kept, each with its expiry.
        for (n, kept) in [
            (1, None),
            (2, None),
            (3, Some(10_000)),
            (4, Some(10_000)),
            (5, Some(10_000)),
        ] {
            assert_eq!(
                s.login_address_known(&digest(n), 100).await.expect("known"),
                kept,
                "{} address {n}",
                b.name
            );
        }
        // A new login from an old address renews it.
        s.remember_login_address(&digest(3), uid, 50, 20_000, 3)
            .await
            .expect("renew");
        assert_eq!(
            s.login_address_known(&digest(4), 10_000)
                .await
                .expect("known"),
            None
        );
        assert_eq!(
            s.login_address_known(&digest(3), 10_000)
                .await
                .expect("known"),
            Some(20_000)
        );
        let purged = s.purge_expired(10_000, 100).await.expect("purge");
        assert_eq!(purged.login_throttle, 2, "{}", b.name);
    }
}

/// Logins of one user from many addresses at once (on PostgreSQL, from every instance) keep
/// the bound exactly: no two trims miss each other's addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_addresses_stay_bounded_under_concurrent_logins() {
    for b in backends().await {
        let s = &b.store;
        let main = s.create_main_account("M", 0).await.expect("main");
        let uid = s
            .create_user(&user("u", None, vec![main]))
            .await
            .expect("u");
        for round in 0..3u8 {
            let tasks: Vec<_> = (1..=30u8)
                .map(|n| {
                    let s = s.clone();
                    tokio::spawn(async move {
                        let (at, address) = (
                            i64::from(round) * 100 + i64::from(n),
                            digest(n + round * 30),
                        );
                        until_available("remember an address", || {
                            s.remember_login_address(&address, uid, at, 10_000, 3)
                        })
                        .await;
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            assert_eq!(
                b.count("SELECT COUNT(*) FROM login_addresses").await,
                3,
                "{}: round {round}",
                b.name
            );
        }
    }
}

#[tokio::test]
async fn live_sessions_per_user_are_capped_oldest_first() {
    for b in backends().await {
        let s = &b.store;
        let main = s.create_main_account("M", 0).await.expect("main");
        let uid = s
            .create_user(&user("u", None, vec![main]))
            .await
            .expect("u");
        for n in 1..=5u8 {
            s.create_session(&NewSession {
                session_id: format!("s{n}"),
                user_id: uid,
                refresh_digest: digest(n),
                expected_password_hash: None,
                // Every session in the same millisecond: the newest still survives.
                now: 1_000,
                refresh_expires_at: 100_000,
                sso_login: false,
                max_sessions: 3,
            })
            .await
            .expect("session");
            let newest = s
                .session_state(&format!("s{n}"))
                .await
                .expect("state")
                .expect("exists");
            assert!(!newest.revoked, "{}: the new session {n} survives", b.name);
        }
        let live = b
            .count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await;
        assert_eq!(live, 3, "{}", b.name);
    }
}

#[tokio::test]
async fn accounts_are_listed_with_their_main_account() {
    for b in backends().await {
        let s = &b.store;
        assert_eq!(s.list_accounts().await.expect("empty"), vec![]);
        let m = s.create_main_account("Main", 0).await.expect("main");
        let sub = s.create_sub_account(m, "Sub", 0).await.expect("sub");
        let other = s.create_main_account("Other", 0).await.expect("other");
        let list = s.list_accounts().await.expect("list");
        let got: Vec<(i64, &str, i64, bool)> = list
            .iter()
            .map(|a| (a.id, a.name.as_str(), a.main_account_id, a.active))
            .collect();
        assert_eq!(
            got,
            vec![
                (m, "Main", m, true),
                (sub, "Sub", m, true),
                (other, "Other", other, true)
            ],
            "{}",
            b.name
        );
    }
}

fn new_agent(account_id: i64, username: &str, rc_user_id: Option<i64>) -> NewAgent {
    NewAgent {
        account_id,
        username: username.into(),
        first_name: "F".into(),
        last_name: "L".into(),
        email: None,
        agent_type: "AGENT".into(),
        rc_user_id,
        agent_group_id: None,
        allow_login_control: true,
        allow_login_updates: true,
        now: 5,
    }
}

#[tokio::test]
async fn agents_live_in_sub_accounts_and_link_by_rc_user_id() {
    for b in backends().await {
        let s = &b.store;
        let m = s.create_main_account("M", 0).await.expect("main");
        let sub1 = s.create_sub_account(m, "One", 0).await.expect("sub");
        let sub2 = s.create_sub_account(m, "Two", 0).await.expect("sub");
        let other = s.create_main_account("O", 0).await.expect("main");
        let other_sub = s.create_sub_account(other, "Else", 0).await.expect("sub");
        // Out of account order on purpose.
        let in2 = s
            .create_agent(&new_agent(sub2, "a2", Some(7)))
            .await
            .expect("a2");
        let in1 = s
            .create_agent(&new_agent(sub1, "a1", Some(7)))
            .await
            .expect("a1");
        s.create_agent(&new_agent(sub1, "n", None))
            .await
            .expect("n");
        s.create_agent(&new_agent(other_sub, "x", Some(7)))
            .await
            .expect("x");
        assert!(matches!(
            s.create_agent(&new_agent(m, "main", None)).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            s.create_agent(&new_agent(m + 9_999, "nowhere", None)).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.create_agent(&new_agent(sub2, "a1", None)).await,
            Err(StoreError::Conflict(_))
        ));
        let mine = s.agents_of_rc_user(7, m).await.expect("mine");
        let got: Vec<(i64, i64, &str)> = mine
            .iter()
            .map(|a| (a.account_id, a.id, a.account_name.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(sub1, in1, "One"), (sub2, in2, "Two")],
            "{}",
            b.name
        );
        assert_eq!(mine[0].main_account_id, m);
        assert_eq!(s.agents_of_rc_user(8, m).await.expect("none"), vec![]);
        assert_eq!(s.list_agents(Some(sub1)).await.expect("sub1").len(), 2);
        assert_eq!(s.list_agents(None).await.expect("all").len(), 4);
        assert!(s.delete_agent(in1).await.expect("delete"));
        assert!(!s.delete_agent(in1).await.expect("again"));
        assert_eq!(s.agents_of_rc_user(7, m).await.expect("left").len(), 1);
    }
}

#[tokio::test]
async fn concurrent_agent_creations_of_one_username_make_exactly_one() {
    for b in backends().await {
        let s = &b.store;
        let m = s.create_main_account("M", 0).await.expect("main");
        let sub = s.create_sub_account(m, "S", 0).await.expect("sub");
        let tries: Vec<_> = (0..12)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.create_agent(&new_agent(sub, "same", None)).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tries {
            results.push(t.await);
        }
        let made = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Ok(Err(StoreError::Conflict(_)))))
            .count();
        assert_eq!((made, refused), (1, 11), "{}: {results:?}", b.name);
        assert_eq!(b.count("SELECT COUNT(*) FROM agents").await, 1);
    }
}

#[tokio::test]
async fn main_accounts_link_to_one_ringex_account_each() {
    for b in backends().await {
        let s = &b.store;
        let m = s.create_main_account("M", 0).await.expect("main");
        let sub = s.create_sub_account(m, "S", 0).await.expect("sub");
        let other = s.create_main_account("O", 0).await.expect("main");
        s.link_rc_account(m, Some("123")).await.expect("link");
        let info = s.account_info(sub).await.expect("info").expect("some");
        assert_eq!(info.rc_account_id.as_deref(), Some("123"), "{}", b.name);
        assert_eq!(info.main_account_id, m);
        let rows = s.accounts_for_user(0).await.expect("nobody's");
        assert!(rows.is_empty());
        assert!(matches!(
            s.link_rc_account(other, Some("123")).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.link_rc_account(sub, Some("9")).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            s.link_rc_account(m + 9_999, Some("9")).await,
            Err(StoreError::NotFound(_))
        ));
        s.link_rc_account(m, None).await.expect("unlink");
        s.link_rc_account(other, Some("123"))
            .await
            .expect("free again");
        assert_eq!(
            s.account_info(m)
                .await
                .expect("info")
                .expect("some")
                .rc_account_id,
            None
        );
        assert_eq!(s.account_info(m + 9_999).await.expect("none"), None);
    }
}

#[tokio::test]
async fn deleting_a_user_takes_its_credentials_and_spares_its_parent_and_others() {
    for b in backends().await {
        let s = &b.store;
        let m = s.create_main_account("A", 0).await.expect("main");
        let boss = s
            .create_user(&user("boss", None, vec![m]))
            .await
            .expect("b");
        let u = s
            .create_user(&user("u", Some("boss"), vec![m]))
            .await
            .expect("u");
        let v = s.create_user(&user("v", None, vec![m])).await.expect("v");
        give_credentials(s, u, "u", 0).await;
        give_credentials(s, v, "v", 100).await;
        s.remember_login_address(&digest(250), u, 1, 10_000, 3)
            .await
            .expect("remember");

        // A user with children stays, and so does everything of it.
        assert_eq!(
            s.delete_user("boss").await.expect("refused"),
            DeleteUser::HasChildren(vec!["u".into()]),
            "{}",
            b.name
        );
        assert!(s.user_by_id(boss).await.expect("get").is_some());
        assert_eq!(
            s.delete_user("ghost").await.expect("ghost"),
            DeleteUser::NoSuchUser
        );

        let refresh_before = b.count("SELECT COUNT(*) FROM refresh_tokens").await;
        let grants_before = b.count("SELECT COUNT(*) FROM user_grants").await;
        assert_eq!(
            s.delete_user("u").await.expect("delete"),
            DeleteUser::Deleted {
                id: u,
                ended: RevokedCounts {
                    api_tokens: 2,
                    legacy_tokens: 2,
                    sessions: 2,
                    ringex_jwts: 2,
                    ringex_tokens: 2,
                },
            },
            "{}",
            b.name
        );
        assert!(s.user_by_id(u).await.expect("get").is_none());
        assert!(s.user_by_username("u").await.expect("get").is_none());
        assert_eq!(standing(s, "u", 0).await, (0, 0, 0, 0, 0), "{}", b.name);
        assert_eq!(
            b.count("SELECT COUNT(*) FROM refresh_tokens").await,
            refresh_before - 2
        );
        assert_eq!(
            b.count("SELECT COUNT(*) FROM user_grants").await,
            grants_before - 1
        );
        assert_eq!(b.count("SELECT COUNT(*) FROM login_addresses").await, 0);
        // Nothing of another user moved; the parent, now childless, can go too.
        assert_eq!(standing(s, "v", 100).await, (2, 2, 2, 2, 2), "{}", b.name);
        assert!(matches!(
            s.delete_user("boss").await.expect("boss"),
            DeleteUser::Deleted { id, .. } if id == boss
        ));
        // The name is free again.
        s.create_user(&user("u", None, vec![m]))
            .await
            .expect("reuse");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_session_cap_holds_under_concurrent_logins() {
    for b in backends().await {
        let s = &b.store;
        let main = s.create_main_account("M", 0).await.expect("main");
        let uid = s
            .create_user(&user("u", None, vec![main]))
            .await
            .expect("u");
        // 20 logins of one user at once with a cap of 5: each counts the others.
        let tasks: Vec<_> = (0..20u8)
            .map(|n| {
                let s = s.clone();
                tokio::spawn(async move {
                    let session = NewSession {
                        session_id: format!("c{n}"),
                        user_id: uid,
                        refresh_digest: digest(100 + n),
                        expected_password_hash: None,
                        now: 1_000 + i64::from(n),
                        refresh_expires_at: 100_000,
                        sso_login: false,
                        max_sessions: 5,
                    };
                    until_available("create a session", || s.create_session(&session)).await;
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let live = b
            .count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await;
        assert_eq!(live, 5, "{}", b.name);
    }
}

// ---- The RingEX emulator's logins: refresh tokens rotated once, revoked with their login.

use cxauth_core::store::{NewRingexLogin, RingexRotation};

/// Runs one statement straight on the database (to put a row in a state the trait never
/// leaves it in).
async fn execute(b: &Backend, sql: &'static str) {
    if b.url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&b.url).await.expect("connect");
        sqlx::query(sql).execute(&pool).await.expect("execute");
    } else {
        let pool = sqlx::SqlitePool::connect(&b.url).await.expect("connect");
        sqlx::query(sql).execute(&pool).await.expect("execute");
    }
}

/// A user with RingEX id 7 logged in at the emulator by `client`: login `login` with access
/// token digest `base` and refresh token digest `base + 1`, issued at 0, the access token
/// ending at 1 000 and the refresh token at 10 000.
async fn ringex_login(s: &SharedStore, uid: i64, login: &str, client: &str, base: u8) {
    s.insert_ringex_login(&NewRingexLogin {
        login_id: login,
        user_id: uid,
        client_id: client,
        access_digest: &digest(base),
        refresh_digest: &digest(base + 1),
        now: 0,
        access_expires_at: 1_000,
        refresh_expires_at: 10_000,
    })
    .await
    .expect("login");
}

/// A rotation by `client` at `now` of the refresh token digest `presented`, to access token
/// `base` and refresh token `base + 1`, each living as long as at the login.
fn ringex_rotation<'a>(
    presented: &'a [u8; 32],
    client: &'a str,
    next: &'a ([u8; 32], [u8; 32]),
    now: i64,
) -> RingexRotation<'a> {
    RingexRotation {
        presented,
        client_id: client,
        access_digest: &next.0,
        refresh_digest: &next.1,
        now,
        access_expires_at: now + 1_000,
        refresh_expires_at: now + 10_000,
    }
}

async fn ringex_user(s: &SharedStore, name: &str, rc: i64) -> i64 {
    let main = s.create_main_account("M", 0).await.expect("main");
    s.create_user(&NewUser {
        rc_user_id: Some(rc),
        ..user(name, None, vec![main])
    })
    .await
    .expect("user")
}

#[tokio::test]
async fn ringex_refresh_tokens_rotate_once_restart_their_lifetime_and_expire() {
    for b in backends().await {
        let s = &b.store;
        let uid = ringex_user(s, "u", 7).await;
        ringex_login(s, uid, "L1", "c1", 10).await;
        let next = (digest(12), digest(13));

        // Another client's refresh: refused, and the token is left as it was.
        let other = s
            .rotate_ringex_refresh(&ringex_rotation(&digest(11), "c2", &next, 100))
            .await
            .expect("rotate");
        assert!(other.is_none(), "{}", b.name);

        let won = s
            .rotate_ringex_refresh(&ringex_rotation(&digest(11), "c1", &next, 100))
            .await
            .expect("rotate")
            .expect("the owner's refresh wins");
        assert_eq!(
            (won.user.id, won.login_id.as_str(), won.user.rc_user_id),
            (uid, "L1", Some(7)),
            "{}",
            b.name
        );
        // The new access token works; the old one too, until its own end.
        for (d, now) in [(12, 1_099), (10, 999)] {
            assert!(
                s.ringex_token_user(&digest(d), now)
                    .await
                    .expect("get")
                    .is_some(),
                "{}: access token {d}",
                b.name
            );
        }
        // The rotated token is refused from now on.
        let again = (digest(14), digest(15));
        assert!(
            s.rotate_ringex_refresh(&ringex_rotation(&digest(11), "c1", &again, 200))
                .await
                .expect("rotate")
                .is_none(),
            "{}",
            b.name
        );
        // The lifetime restarted at the rotation: 100 + 10 000. Past the first end, still live;
        // at its new end, refused.
        assert!(
            s.rotate_ringex_refresh(&ringex_rotation(&digest(13), "c1", &again, 10_100))
                .await
                .expect("rotate")
                .is_none(),
            "{}: at its end",
            b.name
        );
        let live = s
            .rotate_ringex_refresh(&ringex_rotation(&digest(13), "c1", &again, 10_099))
            .await
            .expect("rotate");
        assert!(live.is_some(), "{}: just before its end", b.name);

        // Housekeeping purges refresh tokens past their end (counted with the access tokens).
        assert_eq!(
            b.count("SELECT COUNT(*) FROM ringex_refresh_tokens").await,
            1,
            "{}",
            b.name
        );
        let purged = s.purge_expired(20_099, 100).await.expect("purge");
        assert_eq!(purged.ringex_tokens, 3 + 1, "{}", b.name);
        assert_eq!(
            b.count("SELECT COUNT(*) FROM ringex_refresh_tokens").await,
            0,
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn ringex_refresh_is_refused_for_disabled_users_and_ends_with_their_credentials() {
    for b in backends().await {
        let s = &b.store;
        let uid = ringex_user(s, "u", 7).await;
        ringex_login(s, uid, "L1", "c1", 10).await;
        let next = (digest(12), digest(13));
        // Disabled (as the trait never leaves it: with the refresh token still stored).
        execute(&b, "UPDATE users SET enabled = FALSE").await;
        assert!(
            s.rotate_ringex_refresh(&ringex_rotation(&digest(11), "c1", &next, 100))
                .await
                .expect("rotate")
                .is_none(),
            "{}",
            b.name
        );
        execute(&b, "UPDATE users SET enabled = TRUE").await;
        // The refusal changed nothing: the token still works.
        assert!(
            s.rotate_ringex_refresh(&ringex_rotation(&digest(11), "c1", &next, 100))
                .await
                .expect("rotate")
                .is_some(),
            "{}",
            b.name
        );
        // Disabling ends the login's refresh token for good.
        assert!(s.set_user_enabled("u", false, 6).await.expect("disable"));
        assert!(s.set_user_enabled("u", true, 7).await.expect("enable"));
        let after = (digest(14), digest(15));
        assert!(
            s.rotate_ringex_refresh(&ringex_rotation(&digest(13), "c1", &after, 200))
                .await
                .expect("rotate")
                .is_none(),
            "{}",
            b.name
        );
        // Deleting a user takes its emulator logins with it.
        ringex_login(s, uid, "L2", "c1", 20).await;
        assert!(matches!(
            s.delete_user("u").await.expect("delete"),
            DeleteUser::Deleted { .. }
        ));
        assert_eq!(
            b.count("SELECT COUNT(*) FROM ringex_refresh_tokens").await,
            0,
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn concurrent_ringex_refreshes_of_one_token_have_exactly_one_winner() {
    for b in backends().await {
        let s = b.store.clone();
        let uid = ringex_user(&s, "u", 7).await;
        ringex_login(&s, uid, "L1", "c1", 0).await;
        let mut racers = Vec::new();
        for i in 1..=40u8 {
            let s = s.clone();
            racers.push(tokio::spawn(async move {
                let next = (digest(100 + i), digest(200 - i));
                s.rotate_ringex_refresh(&ringex_rotation(&digest(1), "c1", &next, 10))
                    .await
            }));
        }
        let mut winners = 0;
        for r in racers {
            match r.await.expect("join") {
                Ok(Some(_)) => winners += 1,
                Ok(None) => {}
                // SQLite may report a busy database under this much contention; never a fork.
                Err(StoreError::Unavailable(_)) => {}
                Err(e) => panic!("{}: {e}", b.name),
            }
        }
        assert_eq!(winners, 1, "{}", b.name);
        assert_eq!(
            b.count("SELECT COUNT(*) FROM ringex_refresh_tokens").await,
            1,
            "{}",
            b.name
        );
        assert_eq!(
            b.count("SELECT COUNT(*) FROM ringex_tokens").await,
            2,
            "{}: the login's first access token and the winner's",
            b.name
        );
    }
}

#[tokio::test]
async fn revoking_a_ringex_token_ends_its_whole_login_for_its_own_client_only() {
    for b in backends().await {
        let s = &b.store;
        let uid = ringex_user(s, "u", 7).await;
        ringex_login(s, uid, "L1", "c1", 10).await;
        let next = (digest(12), digest(13));
        s.rotate_ringex_refresh(&ringex_rotation(&digest(11), "c1", &next, 100))
            .await
            .expect("rotate")
            .expect("won");
        ringex_login(s, uid, "L2", "c1", 20).await;

        // Another client cannot end it, by access or by refresh token; nor does an unknown one.
        for (client, access, refresh) in [("c2", 10, 99), ("c2", 99, 13), ("c1", 98, 99)] {
            assert_eq!(
                s.revoke_ringex_login(client, &digest(access), &digest(refresh))
                    .await
                    .expect("revoke"),
                None,
                "{}: {client} {access} {refresh}",
                b.name
            );
        }
        assert_eq!(
            b.count("SELECT COUNT(*) FROM ringex_tokens").await,
            3,
            "{}",
            b.name
        );

        // The first access token of L1 ends L1: both its access tokens and its refresh token.
        assert_eq!(
            s.revoke_ringex_login("c1", &digest(10), &digest(99))
                .await
                .expect("revoke"),
            Some(uid),
            "{}",
            b.name
        );
        assert!(
            s.ringex_token_user(&digest(12), 200)
                .await
                .expect("get")
                .is_none()
        );
        let after = (digest(14), digest(15));
        assert!(
            s.rotate_ringex_refresh(&ringex_rotation(&digest(13), "c1", &after, 200))
                .await
                .expect("rotate")
                .is_none(),
            "{}",
            b.name
        );
        // L2's refresh token ends L2 and its access token; L2 alone was left.
        assert_eq!(
            s.revoke_ringex_login("c1", &digest(98), &digest(21))
                .await
                .expect("revoke"),
            Some(uid),
            "{}",
            b.name
        );
        for table in [
            "SELECT COUNT(*) FROM ringex_tokens",
            "SELECT COUNT(*) FROM ringex_refresh_tokens",
        ] {
            assert_eq!(b.count(table).await, 0, "{}: {table}", b.name);
        }
        // A token stored before logins were (no client): any client's revoke ends it alone.
        s.insert_ringex_token(&digest(30), uid, 0, 1_000)
            .await
            .expect("token");
        assert_eq!(
            s.revoke_ringex_login("c2", &digest(30), &digest(99))
                .await
                .expect("revoke"),
            Some(uid),
            "{}",
            b.name
        );
        assert_eq!(
            b.count("SELECT COUNT(*) FROM ringex_tokens").await,
            0,
            "{}",
            b.name
        );
    }
}

/// The change-log rows after `after`, as (kind, key).
async fn changes_after(s: &SharedStore, after: i64) -> Vec<(String, String)> {
    s.credential_changes_after(after, 1_000)
        .await
        .expect("changes")
        .changes
        .into_iter()
        .map(|c| (c.kind.map_or("?", |k| k.as_str()).to_owned(), c.key))
        .collect()
}

/// Makes every insert into the change log fail, so a write that adds its row inside its own
/// transaction must fail whole.
async fn refuse_change_rows(b: &Backend) {
    if b.url.starts_with("postgres") {
        execute(
            b,
            "CREATE FUNCTION refuse_change() RETURNS trigger AS \
             $$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql",
        )
        .await;
        execute(
            b,
            "CREATE TRIGGER refuse_change BEFORE INSERT ON credential_changes \
             FOR EACH ROW EXECUTE FUNCTION refuse_change()",
        )
        .await;
    } else {
        execute(
            b,
            "CREATE TRIGGER refuse_change BEFORE INSERT ON credential_changes \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .await;
    }
}

#[tokio::test]
async fn every_credential_change_writes_its_change_row_in_its_own_transaction() {
    use cxauth_core::store::EndCredentials;
    for b in backends().await {
        let s = &b.store;
        let (m, u) = user_u(s).await;
        let gone = s
            .create_user(&user("gone", None, vec![m]))
            .await
            .expect("gone");
        give_credentials(s, u, "u", 0).await;
        let start = s.latest_credential_change().await.expect("latest");
        let mut expected: Vec<(String, String)> = Vec::new();
        let user_row = |id: i64| ("user".to_owned(), id.to_string());

        // Logout, and reuse of a rotated refresh token: the session.
        assert_eq!(
            s.revoke_session_by_refresh(&digest(0), RevokeReason::Logout, 10)
                .await
                .expect("logout"),
            Some(u)
        );
        expected.push(("session".into(), "u-s0".into()));
        let rotation = |presented: u8, successor: u8, now: i64| Rotation {
            presented: digest(presented),
            successor: digest(successor),
            now,
            grace_ms: 10,
            successor_expires_at: 1_000_000,
            session_expires_at: 1_000_000,
        };
        assert!(matches!(
            s.rotate_refresh_token(&rotation(1, 50, 10))
                .await
                .expect("rotate"),
            RotateOutcome::Rotated { .. }
        ));
        assert!(matches!(
            s.rotate_refresh_token(&rotation(1, 51, 1_000))
                .await
                .expect("reuse"),
            RotateOutcome::Reused { .. }
        ));
        expected.push(("session".into(), "u-s1".into()));
        // A login over the session cap ends older sessions of the user.
        for (i, sid) in ["c1", "c2"].into_iter().enumerate() {
            s.create_session(&NewSession {
                session_id: sid.into(),
                user_id: u,
                expected_password_hash: None,
                refresh_digest: digest(60 + u8::try_from(i).expect("small")),
                now: 2_000,
                refresh_expires_at: 1_000_000,
                sso_login: false,
                max_sessions: 1,
            })
            .await
            .expect("capped session");
        }
        expected.push(user_row(u));
        // Disable, enable, password, revoke-tokens, an API token deleted, a user deleted.
        assert!(
            s.set_user_enabled("u", false, 3_000)
                .await
                .expect("disable")
        );
        assert!(s.set_user_enabled("u", true, 3_000).await.expect("enable"));
        assert!(
            s.set_password_hash("u", "h2", 3_000)
                .await
                .expect("password")
        );
        let end = EndCredentials {
            new_password_hash: None,
            api_tokens: false,
            reason: RevokeReason::Revoked,
        };
        assert!(
            s.end_user_credentials("u", &end, 3_000)
                .await
                .expect("end")
                .is_some()
        );
        expected.extend([user_row(u), user_row(u), user_row(u), user_row(u)]);
        let token = s.api_tokens_of(u).await.expect("tokens")[0].id;
        assert!(s.delete_api_token(token).await.expect("delete token"));
        expected.push(user_row(u));
        assert!(matches!(
            s.delete_user("gone").await.expect("delete user"),
            DeleteUser::Deleted { .. }
        ));
        expected.push(user_row(gone));
        // The account tree: a new sub-account, a RingEX link.
        s.create_sub_account(m, "S2", 3_000).await.expect("sub");
        s.link_rc_account(m, Some("rc-1")).await.expect("link");
        expected.extend([
            ("accounts".into(), String::new()),
            ("accounts".into(), String::new()),
        ]);
        assert_eq!(changes_after(s, start).await, expected, "{}", b.name);

        // A live session for the failing writes below (no cap: no row).
        s.create_session(&NewSession {
            session_id: "c3".into(),
            user_id: u,
            expected_password_hash: None,
            refresh_digest: digest(70),
            now: 3_000,
            refresh_expires_at: 1_000_000,
            sso_login: false,
            max_sessions: 0,
        })
        .await
        .expect("session");
        // Writes that change nothing write nothing.
        let before = s.latest_credential_change().await.expect("latest");
        assert!(!s.set_user_enabled("nobody", false, 0).await.expect("none"));
        assert!(!s.delete_api_token(token).await.expect("gone already"));
        assert_eq!(
            s.revoke_session_by_refresh(&digest(0), RevokeReason::Logout, 20)
                .await
                .expect("ended already"),
            Some(u),
            "{}",
            b.name
        );
        assert!(changes_after(s, before).await.is_empty(), "{}", b.name);

        // The row is written in the change's transaction: when it cannot be written, the
        // change is not made either.
        refuse_change_rows(&b).await;
        // (State is read on fresh connections, apart from the store's pool.)
        const U_ENABLED: &str = "SELECT COUNT(*) FROM users WHERE username = 'u' AND enabled";
        const C3_LIVE: &str =
            "SELECT COUNT(*) FROM sessions WHERE id = 'c3' AND revoked_at IS NULL";
        const TOKENS: &str = "SELECT COUNT(*) FROM api_tokens";
        const ACCOUNTS: &str = "SELECT COUNT(*) FROM accounts";
        let tokens = b.count(TOKENS).await;
        let accounts = b.count(ACCOUNTS).await;
        assert!(
            s.set_user_enabled("u", false, 4_000).await.is_err(),
            "{}",
            b.name
        );
        assert_eq!(
            b.count(U_ENABLED).await,
            1,
            "{}: the disable rolled back",
            b.name
        );
        assert!(
            s.revoke_session_by_refresh(&digest(70), RevokeReason::Logout, 4_000)
                .await
                .is_err()
        );
        assert_eq!(
            b.count(C3_LIVE).await,
            1,
            "{}: the logout rolled back",
            b.name
        );
        let token = s.api_tokens_of(u).await.expect("tokens")[0].id;
        assert!(s.delete_api_token(token).await.is_err());
        assert_eq!(
            b.count(TOKENS).await,
            tokens,
            "{}: the deletion rolled back",
            b.name
        );
        assert!(s.end_user_credentials("u", &end, 4_000).await.is_err());
        assert_eq!(
            b.count(C3_LIVE).await,
            1,
            "{}: revoke-tokens rolled back",
            b.name
        );
        assert!(s.set_password_hash("u", "h3", 4_000).await.is_err());
        assert_eq!(
            b.count(C3_LIVE).await,
            1,
            "{}: the password rolled back",
            b.name
        );
        assert!(s.create_sub_account(m, "S3", 4_000).await.is_err());
        assert_eq!(
            b.count(ACCOUNTS).await,
            accounts,
            "{}: the sub-account rolled back",
            b.name
        );
        assert!(changes_after(s, before).await.is_empty(), "{}", b.name);
    }
}

#[tokio::test]
async fn the_change_log_is_pruned_by_age_keeping_its_newest_row() {
    for b in backends().await {
        let s = &b.store;
        let m = s.create_main_account("A", 0).await.expect("main");
        assert_eq!(s.latest_credential_change().await.expect("latest"), 0);
        for at in [100, 200, 300] {
            s.create_sub_account(m, &format!("S{at}"), at)
                .await
                .expect("sub");
        }
        let all = s.credential_changes_after(0, 10).await.expect("all");
        assert_eq!(all.changes.len(), 3, "{}", b.name);
        let newest = all.changes[2].seq;
        assert_eq!(s.latest_credential_change().await.expect("latest"), newest);
        assert_eq!(s.prune_credential_changes(250).await.expect("prune"), 2);
        // Everything is old now, but the newest row stays: a reader can tell a gap from an
        // empty log.
        assert_eq!(s.prune_credential_changes(10_000).await.expect("prune"), 0);
        let kept = s.credential_changes_after(0, 10).await.expect("kept");
        assert_eq!(kept.oldest, Some(newest), "{}", b.name);
        assert_eq!(kept.changes.len(), 1);
        assert!(
            s.credential_changes_after(newest, 10)
                .await
                .expect("none")
                .changes
                .is_empty()
        );
    }
}

// ---- A direct login's writes: the session, the address to remember and the audit event.

use cxauth_core::store::RememberAddress;

/// Direct login `n` of user `uid` (session `l{n}`, refresh digest `n`, address digest
/// `100 + n`, keeping the user's 3 most recent addresses) checked against `hash`, at `1_000 + n`,
/// under a cap of `cap` live sessions.
fn login_writes(
    uid: i64,
    n: u8,
    hash: &str,
    cap: u32,
) -> (NewSession, RememberAddress, AuditEvent) {
    let now = 1_000 + i64::from(n);
    let session = NewSession {
        session_id: format!("l{n}"),
        user_id: uid,
        refresh_digest: digest(n),
        expected_password_hash: Some(hash.to_owned()),
        now,
        refresh_expires_at: 1_000_000,
        sso_login: false,
        max_sessions: cap,
    };
    let address = RememberAddress {
        pair: digest(100 + n),
        user_id: uid,
        now,
        expires_at: 1_000_000,
        keep: 3,
    };
    let audit = AuditEvent {
        user_id: Some(uid),
        detail: format!("login {n}"),
        ..audit_event(now, "login", Some("u"))
    };
    (session, address, audit)
}

async fn login_user(s: &SharedStore) -> (i64, String) {
    let (_, uid) = user_u(s).await;
    let hash = s
        .user_by_id(uid)
        .await
        .expect("get")
        .expect("u")
        .password_hash;
    (uid, hash)
}

/// Asserts that the audit trail holds exactly `event`, as given (its row id aside).
async fn assert_only_audit_event(b: &Backend, event: &AuditEvent) {
    let events = b
        .store
        .audit_events(&AuditFilter::default())
        .await
        .expect("audit");
    assert_eq!(events.len(), 1, "{}: {events:?}", b.name);
    assert_eq!(
        &AuditEvent {
            id: 0,
            ..events[0].clone()
        },
        event,
        "{}: the audit row is the event as given",
        b.name
    );
}

#[tokio::test]
async fn a_login_writes_its_session_address_and_audit_event() {
    for b in backends().await {
        let s = &b.store;
        let (uid, hash) = login_user(s).await;
        let (session, address, audit) = login_writes(uid, 1, &hash, 0);
        s.create_login_session(&session, Some(&address), &audit)
            .await
            .expect("login");
        let state = s.session_state("l1").await.expect("state").expect("l1");
        assert!(!state.revoked, "{}", b.name);
        assert_eq!(state.user.id, uid);
        assert!(
            s.login_address_known(&digest(101), 2_000)
                .await
                .expect("known")
                .is_some(),
            "{}: the address is remembered",
            b.name
        );
        assert_only_audit_event(&b, &audit).await;
        // The first refresh token works, once.
        let rotated = s
            .rotate_refresh_token(&Rotation {
                presented: digest(1),
                successor: digest(201),
                now: 5_000,
                grace_ms: 0,
                successor_expires_at: 1_000_000,
                session_expires_at: 1_000_000,
            })
            .await
            .expect("rotate");
        assert!(
            matches!(rotated, RotateOutcome::Rotated { ref session_id, .. } if session_id == "l1"),
            "{}: {rotated:?}",
            b.name
        );
    }
}

/// A RingEX exchange starts its session with `create_login_session` too, without an address:
/// the session and its audit event, nothing remembered; and against a user disabled since it
/// was read, nothing at all.
#[tokio::test]
async fn an_exchange_writes_its_session_and_audit_event_and_no_address() {
    for b in backends().await {
        let s = &b.store;
        let (uid, hash) = login_user(s).await;
        let (mut session, _, mut audit) = login_writes(uid, 1, &hash, 0);
        session.expected_password_hash = None;
        session.sso_login = true;
        audit.event = "ringex.exchange".into();
        s.create_login_session(&session, None, &audit)
            .await
            .expect("exchange");
        let state = s.session_state("l1").await.expect("state").expect("l1");
        assert!(!state.revoked, "{}", b.name);
        assert_eq!(state.user.id, uid);
        assert_eq!(
            b.count("SELECT COUNT(*) FROM login_addresses").await,
            0,
            "{}: an exchange remembers no address",
            b.name
        );
        assert_only_audit_event(&b, &audit).await;

        assert!(s.set_user_enabled("u", false, 2).await.expect("disable"));
        let (mut session, _, audit) = login_writes(uid, 2, &hash, 0);
        session.expected_password_hash = None;
        let outcome = s.create_login_session(&session, None, &audit).await;
        assert!(
            matches!(outcome, Err(StoreError::Conflict(_))),
            "{}: {outcome:?}",
            b.name
        );
        assert!(
            s.session_state("l2").await.expect("state").is_none(),
            "{}",
            b.name
        );
        assert_eq!(
            s.audit_events(&AuditFilter::default())
                .await
                .expect("audit")
                .len(),
            1,
            "{}: no audit event for a session that did not start",
            b.name
        );
    }
}

/// The legacy login's token (`n`: digest `n`), with the address and audit event of
/// [`login_writes`] `n`, checked against `hash`.
fn legacy_login_writes(
    uid: i64,
    n: u8,
    hash: &str,
) -> (NewLegacyLogin, RememberAddress, AuditEvent) {
    let (session, address, mut audit) = login_writes(uid, n, hash, 0);
    audit.event = "legacy_login".into();
    let login = NewLegacyLogin {
        user_id: uid,
        digest: digest(n),
        token: LegacyToken {
            expires_at: session.now + 3_600_000,
            lifetime_ms: 3_600_000,
        },
        now: session.now,
        expected_password_hash: hash.to_owned(),
    };
    (login, address, audit)
}

/// The legacy login writes its token, address and audit event in one store call; a login that
/// lost a race with a password change writes none of them; a failing audit row or address
/// does not keep the token from being stored.
#[tokio::test]
async fn a_legacy_login_writes_its_token_address_and_audit_event_or_nothing() {
    for b in backends().await {
        let s = &b.store;
        let (uid, hash) = login_user(s).await;
        let (login, address, audit) = legacy_login_writes(uid, 1, &hash);
        s.create_legacy_login(&login, Some(&address), &audit)
            .await
            .expect("legacy login");
        let (token, owner) = s
            .legacy_token_by_digest(&digest(1), 2_000)
            .await
            .expect("read")
            .expect("the token is stored");
        assert_eq!((token, owner.id), (login.token.clone(), uid), "{}", b.name);
        assert!(
            s.login_address_known(&digest(101), 2_000)
                .await
                .expect("known")
                .is_some(),
            "{}",
            b.name
        );
        assert_only_audit_event(&b, &audit).await;

        let (login, address, audit) = legacy_login_writes(uid, 2, "not-the-hash");
        let outcome = s.create_legacy_login(&login, Some(&address), &audit).await;
        assert!(
            matches!(outcome, Err(StoreError::Conflict(_))),
            "{}: {outcome:?}",
            b.name
        );
        assert!(
            s.legacy_token_by_digest(&digest(2), 2_000)
                .await
                .expect("read")
                .is_none(),
            "{}",
            b.name
        );
        assert!(
            s.login_address_known(&digest(102), 2_000)
                .await
                .expect("known")
                .is_none(),
            "{}",
            b.name
        );
        assert_eq!(
            b.count("SELECT COUNT(*) FROM audit_events").await,
            1,
            "{}",
            b.name
        );

        refuse_inserts(&b, "audit_events").await;
        refuse_inserts(&b, "login_addresses").await;
        let (login, address, audit) = legacy_login_writes(uid, 3, &hash);
        s.create_legacy_login(&login, Some(&address), &audit)
            .await
            .expect("a legacy login without its address or audit row");
        assert!(
            s.legacy_token_by_digest(&digest(3), 2_000)
                .await
                .expect("read")
                .is_some(),
            "{}",
            b.name
        );
        assert_eq!(
            b.count("SELECT COUNT(*) FROM audit_events").await,
            1,
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_login_that_lost_a_race_with_a_password_change_writes_nothing() {
    for b in backends().await {
        let s = &b.store;
        let (uid, hash) = login_user(s).await;
        assert!(s.set_password_hash("u", "changed", 1).await.expect("set"));
        let (session, address, audit) = login_writes(uid, 1, &hash, 0);
        let outcome = s
            .create_login_session(&session, Some(&address), &audit)
            .await;
        assert!(
            matches!(outcome, Err(StoreError::Conflict(_))),
            "{}: {outcome:?}",
            b.name
        );
        assert!(s.session_state("l1").await.expect("state").is_none());
        assert!(
            s.login_address_known(&digest(101), 2_000)
                .await
                .expect("known")
                .is_none(),
            "{}: an address remembered for a login that failed",
            b.name
        );
        assert_eq!(b.count("SELECT COUNT(*) FROM audit_events").await, 0);
        assert_eq!(b.count("SELECT COUNT(*) FROM refresh_tokens").await, 0);
        // Disabled: refused the same way.
        assert!(s.set_user_enabled("u", false, 2).await.expect("disable"));
        let (session, address, audit) = login_writes(uid, 2, "changed", 0);
        assert!(matches!(
            s.create_login_session(&session, Some(&address), &audit)
                .await,
            Err(StoreError::Conflict(_))
        ));
    }
}

/// Makes every insert into `table` fail, on either backend.
async fn refuse_inserts(b: &Backend, table: &str) {
    let statements: Vec<String> = if b.url.starts_with("postgres") {
        vec![
            "CREATE OR REPLACE FUNCTION refuse_insert() RETURNS trigger AS \
             $$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql"
                .into(),
            format!(
                "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION refuse_insert()"
            ),
        ]
    } else {
        vec![format!(
            "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} \
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )]
    };
    // The table names are this file's own.
    for sql in statements.into_iter().map(sqlx::AssertSqlSafe) {
        if b.url.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(&b.url).await.expect("connect");
            sqlx::query(sql).execute(&pool).await.expect("execute");
        } else {
            let pool = sqlx::SqlitePool::connect(&b.url).await.expect("connect");
            sqlx::query(sql).execute(&pool).await.expect("execute");
        }
    }
}

/// The address and the audit event are best effort, as the audit trail's contract says: an
/// outage of either table must not lock everybody out, and must not leave half of itself.
#[tokio::test]
async fn a_login_starts_its_session_when_its_address_or_audit_event_cannot_be_written() {
    for b in backends().await {
        let s = &b.store;
        let (uid, hash) = login_user(s).await;
        refuse_inserts(&b, "audit_events").await;
        let (session, address, audit) = login_writes(uid, 1, &hash, 0);
        s.create_login_session(&session, Some(&address), &audit)
            .await
            .expect("a login without its audit row");
        assert!(s.session_state("l1").await.expect("state").is_some());
        assert!(
            s.login_address_known(&digest(101), 2_000)
                .await
                .expect("known")
                .is_some(),
            "{}: the address is kept when only the audit row fails",
            b.name
        );
        refuse_inserts(&b, "login_addresses").await;
        let (session, address, audit) = login_writes(uid, 2, &hash, 0);
        s.create_login_session(&session, Some(&address), &audit)
            .await
            .expect("a login without its address or audit row");
        assert!(s.session_state("l2").await.expect("state").is_some());
        assert!(
            s.login_address_known(&digest(102), 2_000)
                .await
                .expect("known")
                .is_none()
        );
        assert_eq!(b.count("SELECT COUNT(*) FROM audit_events").await, 0);
        // Both refresh tokens stand.
        assert_eq!(b.count("SELECT COUNT(*) FROM refresh_tokens").await, 2);
    }
}

/// Logins of one user at once, direct and legacy, with rotations of another user's sessions
/// racing them through the same writer: the cap and the address bound hold exactly, every
/// login gets its session or token and its audit row, and every rotation its own outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_and_rotations_keep_every_bound_exactly() {
    for b in backends().await {
        let s = &b.store;
        let (uid, hash) = login_user(s).await;
        let m = s.create_main_account("B", 0).await.expect("main");
        let other = s
            .create_user(&user("other", None, vec![m]))
            .await
            .expect("other");
        for i in 0..20u8 {
            s.create_session(&NewSession {
                session_id: format!("r{i}"),
                user_id: other,
                refresh_digest: digest(150 + i),
                expected_password_hash: None,
                now: 0,
                refresh_expires_at: 1_000_000,
                sso_login: false,
                max_sessions: 0,
            })
            .await
            .expect("session");
        }
        let mut tasks = Vec::new();
        for n in 1..=20u8 {
            let (store, (session, address, audit)) = (s.clone(), login_writes(uid, n, &hash, 5));
            tasks.push(tokio::spawn(async move {
                until_available("a login's writes", || {
                    store.create_login_session(&session, Some(&address), &audit)
                })
                .await;
            }));
            let (store, (login, address, audit)) =
                (s.clone(), legacy_login_writes(uid, 20 + n, &hash));
            tasks.push(tokio::spawn(async move {
                until_available("a legacy login's writes", || {
                    store.create_legacy_login(&login, Some(&address), &audit)
                })
                .await;
            }));
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let i = n - 1;
                let outcome = s
                    .rotate_refresh_token(&Rotation {
                        presented: digest(150 + i),
                        successor: digest(200 + i),
                        now: 10,
                        grace_ms: 0,
                        successor_expires_at: 1_000_000,
                        session_expires_at: 1_000_000,
                    })
                    .await;
                assert!(
                    matches!(outcome, Ok(RotateOutcome::Rotated { ref session_id, .. })
                        if *session_id == format!("r{i}")),
                    "rotation {i}: {outcome:?}"
                );
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let live = |sql| b.count(sql);
        assert_eq!(
            live(
                "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE u.username = 'u' AND s.revoked_at IS NULL"
            )
            .await,
            5,
            "{}: the cap",
            b.name
        );
        // Exact on both: SQLite writes one login at a time, PostgreSQL's logins take turns on
        // the user's row to remember and trim.
        assert_eq!(
            live(
                "SELECT COUNT(*) FROM login_addresses a JOIN users u ON u.id = a.user_id \
                 WHERE u.username = 'u'"
            )
            .await,
            3,
            "{}: the address bound",
            b.name
        );
        assert_eq!(
            live("SELECT COUNT(*) FROM legacy_tokens").await,
            20,
            "{}: the legacy tokens",
            b.name
        );
        assert_eq!(
            live("SELECT COUNT(*) FROM audit_events").await,
            40,
            "{}",
            b.name
        );
        assert_eq!(
            live(
                "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE u.username = 'other' AND s.revoked_at IS NULL"
            )
            .await,
            20,
            "{}: the rotated sessions",
            b.name
        );
    }
}
