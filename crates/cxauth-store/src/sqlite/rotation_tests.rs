//! The claims of the rusqlite rotation writer and the background checkpointer, on a real
//! database file: one winner among racers, a failing member of a group rolled back alone, the
//! user built as sqlx builds it, a WAL that stays bounded with automatic checkpoints off, and
//! background threads that end with the store.

use super::*;
use cxauth_core::store::{
    AccountStore as _, AuditEvent, NewSession, NewUser, SessionStore as _, UserStore as _,
};

async fn store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = DatabaseUrl::Sqlite {
        path: Some(dir.path().join("rotations.db")),
    };
    let store = SqliteStore::open(&url, &StoreOptions::default())
        .await
        .expect("open");
    assert!(
        store.writer.is_some(),
        "a file database rotates through rusqlite"
    );
    (store, dir)
}

fn digest(n: u32) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..4].copy_from_slice(&n.to_be_bytes());
    d
}

/// A user (with a parent, roles and a RingEx id, so every column has a value to get wrong) and
/// `sessions` sessions `s0..`, session `si`'s token `digest(i)`.
async fn user_with_sessions(store: &SqliteStore, sessions: u32) -> i64 {
    let main = store.create_main_account("A", 0).await.expect("main");
    let new_user = |name: &str, parent: Option<&str>, rc| NewUser {
        username: name.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        platform_id: "aws80".into(),
        parent: parent.map(str::to_owned),
        grants: vec![main],
        roles: vec!["MANAGE_USERS".into(), "AUDITOR".into()],
        first_name: "F".into(),
        last_name: "L".into(),
        rc_user_id: rc,
        now: 1_000,
    };
    store
        .create_user(&new_user("parent", None, None))
        .await
        .expect("parent");
    let uid = store
        .create_user(&new_user("u", Some("parent"), Some(4242)))
        .await
        .expect("user");
    for i in 0..sessions {
        store
            .create_session(&NewSession {
                session_id: format!("s{i}"),
                user_id: uid,
                expected_password_hash: None,
                refresh_digest: digest(i),
                now: 0,
                refresh_expires_at: i64::MAX / 2,
                sso_login: i % 2 == 1,
                max_sessions: 0,
            })
            .await
            .expect("session");
    }
    uid
}

async fn count(store: &SqliteStore, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&store.pool)
        .await
        .expect("count")
}

/// 32 tasks present the same token at once with no grace: exactly one rotates it; the next in
/// arrival order is a reuse, which ends the session (one change-log row), and the rest find it
/// ended. The session keeps exactly one live token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racers_on_one_token_outside_grace_have_one_winner() {
    let (store, _dir) = store().await;
    user_with_sessions(&store, 1).await;
    let changes_before = count(&store, "SELECT COUNT(*) FROM credential_changes").await;
    let mut racers = Vec::new();
    for i in 0..32u32 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            store
                .rotate(&Rotation {
                    presented: digest(0),
                    successor: digest(1_000 + i),
                    now: 10,
                    // Even the same millisecond is outside the grace window.
                    grace_ms: -1,
                    successor_expires_at: i64::MAX / 2,
                    session_expires_at: i64::MAX / 2,
                })
                .await
        }));
    }
    let (mut rotated, mut reused, mut invalid) = (0, 0, 0);
    for r in racers {
        match r.await.expect("join").expect("rotation") {
            RotateOutcome::Rotated { session_id, .. } => {
                assert_eq!(session_id, "s0");
                rotated += 1;
            }
            RotateOutcome::Reused { session_id, .. } => {
                assert_eq!(session_id, "s0");
                reused += 1;
            }
            RotateOutcome::Invalid => invalid += 1,
        }
    }
    assert_eq!((rotated, reused, invalid), (1, 1, 30));
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM refresh_tokens WHERE rotated_at IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM credential_changes").await - changes_before,
        1,
        "the reuse records exactly one change"
    );
}

/// Holds the write turn until every rotation of `rotations` is queued, in the list's order, so
/// that they commit as one group; returns their outcomes in that order.
async fn queued(
    store: &SqliteStore,
    rotations: Vec<Rotation>,
) -> Vec<Result<RotateOutcome, StoreError>> {
    let turn = store.write_turn.clone().lock_owned().await;
    let mut tasks = Vec::new();
    for (i, r) in rotations.into_iter().enumerate() {
        let s = store.clone();
        tasks.push(tokio::spawn(async move { s.rotate(&r).await }));
        // The next one is sent only once this one is queued: arrival order is the list's.
        let mut waited = 0;
        while store.pending_rotations.lock().expect("pending").len() <= i {
            waited += 1;
            assert!(waited < 1_000, "rotation {i} never queued");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    drop(turn);
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("join"));
    }
    outcomes
}

/// Three rotations in one group; the middle one fails at its second write (its successor's
/// digest is taken), after its first write retired its token. The savepoint rolls back that
/// member alone: the others commit, and its token is still live and rotates afterwards.
/// Without the savepoint's rollback, its token would stay retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_member_of_a_group_rolls_back_alone() {
    let (store, _dir) = store().await;
    user_with_sessions(&store, 3).await;
    let rot = |presented, successor| Rotation {
        presented: digest(presented),
        successor: digest(successor),
        now: 10,
        grace_ms: 0,
        successor_expires_at: 1_000_000,
        session_expires_at: 1_000_000,
    };
    // Session 1's successor would be session 2's live token: a unique violation.
    let outcomes = queued(&store, vec![rot(0, 100), rot(1, 2), rot(2, 102)]).await;
    assert!(
        matches!(outcomes[0], Ok(RotateOutcome::Rotated { .. })),
        "{:?}",
        outcomes[0]
    );
    assert!(
        matches!(outcomes[1], Err(StoreError::Conflict(_))),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(outcomes[2], Ok(RotateOutcome::Rotated { .. })),
        "{:?}",
        outcomes[2]
    );
    // Session 1's token was not retired, and no successor of it exists.
    let live_of_s1: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = 's1' AND rotated_at IS NULL",
    )
    .fetch_one(&store.pool)
    .await
    .expect("count");
    assert_eq!(live_of_s1, 1);
    assert!(matches!(
        store.rotate(&rot(1, 101)).await,
        Ok(RotateOutcome::Rotated { .. })
    ));
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM refresh_tokens WHERE rotated_at IS NULL"
        )
        .await,
        3
    );
}

/// Both rotation paths write a session's expiry alike, rusqlite's (a database file) and sqlx's
/// (in memory, the three writes as one query): ahead, to `session_expires_at`, only when the
/// successor would outlive the session; otherwise not at all.
#[tokio::test]
async fn both_rotation_paths_move_a_session_expiry_only_when_its_token_would_outlive_it() {
    let (file, _dir) = store().await;
    let memory = SqliteStore::open(
        &DatabaseUrl::Sqlite { path: None },
        &StoreOptions::default(),
    )
    .await
    .expect("open in memory");
    assert!(
        memory.writer.is_none(),
        "in memory, rotations go through sqlx"
    );
    for store in [&file, &memory] {
        let uid = user_with_sessions(store, 0).await;
        store
            .create_session(&NewSession {
                session_id: "s".into(),
                user_id: uid,
                expected_password_hash: None,
                refresh_digest: digest(0),
                now: 0,
                refresh_expires_at: 1_000,
                sso_login: false,
                max_sessions: 0,
            })
            .await
            .expect("session");
        let rot = |presented, successor, now| Rotation {
            presented: digest(presented),
            successor: digest(successor),
            now,
            grace_ms: 0,
            successor_expires_at: now + 1_000,
            session_expires_at: now + 1_500,
        };
        for (presented, now, expiry) in [(0, 100, 1_600), (1, 400, 1_600), (2, 700, 2_200)] {
            let outcome = store.rotate(&rot(presented, presented + 1, now)).await;
            assert!(
                matches!(outcome, Ok(RotateOutcome::Rotated { .. })),
                "{outcome:?}"
            );
            let got = count(store, "SELECT expires_at FROM sessions WHERE id = 's'").await;
            assert_eq!(got, expiry, "after the rotation at {now}");
        }
    }
}

/// The user a rotation returns is the one sqlx reads (`user_by_id`), column for column, and
/// `sso_login` is the session's.
#[tokio::test]
async fn a_rotation_returns_the_user_as_sqlx_reads_it() {
    let (store, _dir) = store().await;
    let uid = user_with_sessions(&store, 2).await;
    let expected = store.user_by_id(uid).await.expect("read").expect("user");
    assert!(expected.parent_id.is_some() && expected.rc_user_id.is_some());
    assert_eq!(expected.roles.len(), 2);
    for (i, sso) in [(0u32, false), (1, true)] {
        match store
            .rotate(&Rotation {
                presented: digest(i),
                successor: digest(100 + i),
                now: 10,
                grace_ms: 0,
                successor_expires_at: 1_000_000,
                session_expires_at: 1_000_000,
            })
            .await
            .expect("rotate")
        {
            RotateOutcome::Rotated {
                user, sso_login, ..
            } => {
                assert!(*user == expected, "the writer built another user");
                assert_eq!(sso_login, sso);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// With automatic checkpoints off on every committing connection, only the checkpointer keeps
/// the WAL from growing: after thousands of rotations (tens of MB of WAL without it) and a
/// tick, the file is small and every frame is back in the database file. This is also the
/// concurrent test of the copier asking the checkpoint thread for the restart under the write
/// turn while eight writers commit: with the copier's request taken out, the WAL grew to 112 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_bounded_without_automatic_checkpoints() {
    let (store, dir) = store().await;
    user_with_sessions(&store, 8).await;
    let auto: i64 = count(&store, "PRAGMA wal_autocheckpoint").await;
    assert_eq!(auto, 0, "the pool's connections still checkpoint on commit");
    let mut chains = Vec::new();
    for chain in 0..8u32 {
        let store = store.clone();
        chains.push(tokio::spawn(async move {
            for step in 0..500u32 {
                let outcome = store
                    .rotate(&Rotation {
                        presented: digest(if step == 0 {
                            chain
                        } else {
                            chain * 1_000 + step + 100_000 - 1
                        }),
                        successor: digest(chain * 1_000 + step + 100_000),
                        now: 10 + i64::from(step),
                        grace_ms: 0,
                        successor_expires_at: i64::MAX / 2,
                        session_expires_at: i64::MAX / 2,
                    })
                    .await
                    .expect("rotate");
                assert!(
                    matches!(outcome, RotateOutcome::Rotated { .. }),
                    "{outcome:?}"
                );
            }
        }));
    }
    let mut peak = 0;
    let wal = dir.path().join("rotations.db-wal");
    for c in chains {
        c.await.expect("chain");
        peak = peak.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // Long enough for a tick even if the last ones were skipped and spaced out.
    tokio::time::sleep(checkpoint::IDLE_INTERVAL + checkpoint::INTERVAL * 2).await;
    // Everything is copied back by the thread. Read from the WAL index (the `-shm` file, in
    // SQLite's documented layout: the log's last frame `mxFrame` at offset 16 of its header, the
    // frames copied back `nBackfill` at offset 96, native byte order), not asked with a
    // checkpoint of the test's own, which would copy them itself.
    let shm = std::fs::read(dir.path().join("rotations.db-shm")).expect("the WAL index");
    let word = |at: usize| u32::from_ne_bytes(shm[at..at + 4].try_into().expect("4 bytes"));
    let (frames, copied) = (word(16), word(96));
    assert_eq!(frames, copied, "frames left in the WAL");
    let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    peak = peak.max(len);
    // Bounded by the restart threshold (a frame is a 4 KiB page and its 24-byte header) and
    // what a tick's interval writes, well under what these 4,000 rotations write without the
    // checkpointer (3,000 wrote a 66 MB WAL: see `checkpoint`'s module docs).
    let bound = checkpoint::RESTART_FRAMES as u64 * (4_096 + 24) + (16 << 20);
    assert!(len < bound, "the WAL grew to {len} bytes (bound {bound})");
    eprintln!("WAL peak {peak} bytes, after the tick {len} bytes, {frames} frames copied");
}

/// The writer's and checkpointer's threads end when the store's last clone is dropped: a test
/// process opens hundreds of stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_threads_end_with_the_store() {
    let mut alive = Vec::new();
    for _ in 0..10 {
        let (store, dir) = store().await;
        let clone = store.clone();
        let writer = store.writer.as_ref().expect("writer").alive();
        let checkpointer = store.checkpointer.as_ref().expect("checkpointer").alive();
        drop(store);
        // Held by each running thread: the writer's one, the checkpointer's two.
        assert_eq!(
            (writer.strong_count(), checkpointer.strong_count()),
            (1, 2),
            "ended early"
        );
        alive.extend([writer, checkpointer]);
        drop(clone);
        drop(dir);
    }
    for _ in 0..200 {
        if alive.iter().all(|a| a.strong_count() == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("background threads outlived their stores");
}

/// A job that panics on the writer thread (a bug: the test injects one) costs only itself: its
/// caller is told the database is unavailable, the session it had written is rolled back, and
/// the write turn, SQLite's write lock and the thread are free for the next login, rotation
/// and sqlx write. Without the thread's recovery the thread ended with the panic, and every
/// later login and rotation failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_costs_only_itself() {
    let (store, _dir) = store().await;
    let uid = user_with_sessions(&store, 1).await;
    let session = |id: &str, n| NewSession {
        session_id: id.into(),
        user_id: uid,
        expected_password_hash: None,
        refresh_digest: digest(n),
        now: 10,
        refresh_expires_at: i64::MAX / 2,
        sso_login: false,
        max_sessions: 0,
    };
    let audit = |detail: &str| AuditEvent {
        id: 0,
        at: 10,
        event: "login".into(),
        outcome: "success".into(),
        user_id: Some(uid),
        username: Some("u".into()),
        addr: None,
        request_id: None,
        detail: detail.into(),
    };
    let soon = Duration::from_secs(5);
    for round in 0..2u32 {
        let panicked = store
            .create_login_session(
                &session("p", 100 + round),
                None,
                &audit(writer::PANIC_FOR_TEST),
            )
            .await;
        assert!(
            matches!(panicked, Err(StoreError::Unavailable(_))),
            "round {round}: {panicked:?}"
        );
        assert_eq!(
            count(&store, "SELECT count(*) FROM sessions WHERE id = 'p'").await,
            0,
            "round {round}: the panicked job's session was kept"
        );
    }
    tokio::time::timeout(
        soon,
        store.create_login_session(&session("q", 200), None, &audit("")),
    )
    .await
    .expect("the next login waited")
    .expect("the next login");
    let rotated = tokio::time::timeout(
        soon,
        store.rotate(&Rotation {
            presented: digest(0),
            successor: digest(300),
            now: 20,
            grace_ms: 0,
            successor_expires_at: i64::MAX / 2,
            session_expires_at: i64::MAX / 2,
        }),
    )
    .await
    .expect("the rotation waited")
    .expect("the rotation");
    assert!(
        matches!(rotated, RotateOutcome::Rotated { .. }),
        "{rotated:?}"
    );
    // Through sqlx, on another connection: SQLite's write lock was let go.
    tokio::time::timeout(soon, store.create_session(&session("r", 400)))
        .await
        .expect("the sqlx write waited")
        .expect("the sqlx write");
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM sessions WHERE id IN ('q', 'r')"
        )
        .await,
        2
    );
}
