//! The write queue's own claims, tested against a real database file: writers of one process
//! are served in arrival order, and a write transaction that is dropped (an error path) leaves
//! nothing behind and the turn free. Also: the statements the writer thread keeps prepared stay
//! prepared (see `crate::sql::no_limit!`). And the change-log polls answered from memory
//! (`sqlite/quiet.rs`) miss no commit.

use super::*;
use std::sync::Mutex as StdMutex;

async fn store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = DatabaseUrl::Sqlite {
        path: Some(dir.path().join("queue.db")),
    };
    let store = SqliteStore::open(&url, &StoreOptions::default())
        .await
        .expect("open");
    (store, dir)
}

async fn meta_count(store: &SqliteStore, prefix: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM meta WHERE key LIKE $1")
        .bind(format!("{prefix}%"))
        .fetch_one(&store.pool)
        .await
        .expect("count")
}

/// Sixteen writers arrive one after another while the turn is held; they must write in that
/// order. Without the queue each would start `BEGIN IMMEDIATE` at once, find the database
/// locked and retry from SQLite's busy handler on its own back-off, in no particular order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_are_served_in_arrival_order() {
    let (store, _dir) = store().await;
    let first = store.begin_write().await.expect("first writer");
    let order = Arc::new(StdMutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..16usize {
        let (store, order) = (store.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin_write().await.expect("begin");
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, 'x')")
                .bind(format!("order-{i:02}"))
                .execute(&mut *tx)
                .await
                .expect("insert");
            order.lock().expect("order").push(i);
            tx.commit().await.expect("commit");
        }));
        // Let this writer reach the queue before the next one arrives.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(first);
    for t in tasks {
        t.await.expect("writer");
    }
    let order = order.lock().expect("order").clone();
    assert_eq!(order, (0..16).collect::<Vec<_>>(), "served out of order");
    assert_eq!(meta_count(&store, "order-").await, 16);
}

/// A write transaction dropped without commit (what `?` does on an error path) is rolled back
/// before anyone sees it: not visible to the next read on any connection, and the next writer
/// gets the turn and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_write_leaves_nothing_and_frees_the_turn() {
    let (store, _dir) = store().await;
    for round in 0..20 {
        let mut tx = store.begin_write().await.expect("begin");
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, 'x')")
            .bind(format!("dropped-{round}"))
            .execute(&mut *tx)
            .await
            .expect("insert");
        drop(tx);
        assert_eq!(
            meta_count(&store, "dropped-").await,
            0,
            "round {round}: a dropped transaction's row is visible"
        );
        let next = tokio::time::timeout(Duration::from_secs(2), async {
            let mut tx = store.begin_write().await.expect("begin after drop");
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, 'x')")
                .bind(format!("kept-{round}"))
                .execute(&mut *tx)
                .await
                .expect("insert after drop");
            tx.commit().await.expect("commit after drop");
        })
        .await;
        assert!(next.is_ok(), "round {round}: the next writer waited");
    }
    assert_eq!(meta_count(&store, "dropped-").await, 0);
    assert_eq!(meta_count(&store, "kept-").await, 20);
}

/// Every statement the writer thread runs for a login or a rotation, bound again and again with
/// new values as the thread binds them, is parsed and planned once: SQLite never re-prepares
/// it. A `LIMIT` bound to a bare parameter was (SQLite plans with its value), on every login; see
/// `crate::sql::no_limit!`.
#[tokio::test]
async fn no_shared_statement_is_prepared_again_on_each_binding() {
    let (_store, dir) = store().await;
    let conn = writer::open_connection(&dir.path().join("queue.db"), Duration::from_secs(5))
        .expect("a writer connection");
    let statements = [
        ("SESSION_USER_NOW", sessions::SESSION_USER_NOW),
        ("INSERT_SESSION", sessions::INSERT_SESSION),
        ("END_SESSIONS_OVER_CAP", sessions::END_SESSIONS_OVER_CAP),
        ("INSERT_FIRST_REFRESH", sessions::INSERT_FIRST_REFRESH),
        ("ROTATE_READ", sessions::ROTATE_READ),
        ("REVOKE_FOR_REUSE", sessions::REVOKE_FOR_REUSE),
        ("ROTATE_RETIRE", ROTATE_RETIRE),
        ("ROTATE_INSERT", ROTATE_INSERT),
        ("ROTATE_EXTEND", ROTATE_EXTEND),
        ("INSERT_LEGACY_TOKEN", legacy::INSERT_LEGACY_TOKEN),
        ("REMEMBER_ADDRESS", throttle::REMEMBER_ADDRESS),
        ("FORGET_OLD_ADDRESSES", throttle::FORGET_OLD_ADDRESSES),
        ("INSERT_AUDIT", audit::INSERT_AUDIT),
        ("INSERT_CHANGE", changes::INSERT_CHANGE),
    ];
    for (name, sql) in statements {
        let mut st = conn.prepare(sql).expect(name);
        for round in 0..4i64 {
            for i in 1..=st.parameter_count() {
                st.raw_bind_parameter(i, round * 100 + i as i64)
                    .expect("bind");
            }
            // Whether the step succeeds does not matter (a foreign key may refuse these
            // values): an expired statement is prepared again before it runs at all.
            let _ = st.raw_execute();
        }
        assert_eq!(
            st.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "{name} is parsed and planned again on each new binding"
        );
    }
}

/// No SQL of this crate binds its `LIMIT` to a bare parameter (which SQLite plans with: see
/// `crate::sql::no_limit!`). The statements above are checked by running them; the rest
/// (purges, the change log, the audit listing, the API-token cap) by reading the source.
#[test]
fn no_query_binds_a_bare_limit() {
    fn sources(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    let mut files = Vec::new();
    sources(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10, "the crate's sources: {files:?}");
    // Built here, so that this line does not match itself.
    let bare: Vec<String> = ["LIMIT", "limit"]
        .iter()
        .flat_map(|l| ['$', '?'].map(|p| format!("{l} {p}")))
        .collect();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for (n, line) in text.lines().enumerate() {
            assert!(
                !bare.iter().any(|b| line.contains(b)),
                "{}:{}: a bare LIMIT parameter: {line}",
                file.display(),
                n + 1
            );
        }
    }
}

/// The session cap's query (every login, with the cap on by default) finds the user's live
/// sessions through the partial index of migration 11, newest first, without a sort: not
/// through `sessions_by_user`, which also walks every ended session not yet purged.
#[tokio::test]
async fn the_session_cap_walks_only_live_sessions() {
    let (_store, dir) = store().await;
    let conn = writer::open_connection(&dir.path().join("queue.db"), Duration::from_secs(5))
        .expect("a writer connection");
    // Unbound parameters are NULL: the plan does not depend on them (see `no_limit!`).
    let steps = plan_of(&conn, sessions::END_SESSIONS_OVER_CAP);
    assert!(
        steps
            .iter()
            .any(|s| s.contains("USING INDEX sessions_live_by_user")),
        "{steps:?}"
    );
    assert!(
        !steps
            .iter()
            .any(|s| s.contains("sessions_by_user") || s.contains("TEMP B-TREE")),
        "{steps:?}"
    );
}

/// The steps of `EXPLAIN QUERY PLAN` for `sql` on `conn` (unbound parameters are NULL: the
/// plan does not depend on them).
fn plan_of(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut plan = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    let mut rows = plan.raw_query();
    let mut steps = Vec::new();
    while let Some(row) = rows.next().expect("plan") {
        steps.push(row.get::<_, String>(3).expect("detail"));
    }
    steps
}

/// The write of last uses finds each token by its row id, in both tables, never through the
/// digest's index. A check on both columns alone (`WHERE EXISTS (…)`, before the thirty-eighth
/// round) was turned into a join by SQLite's EXISTS-to-JOIN rewrite (3.51 here; Python's 3.40
/// has no such rewrite), which then searched the 1M-entry digest index, a random page per use:
/// the stop's write of 100,000 first uses took 513–560 ms that way against 253–343 by row id
/// (docs/decisions.md). A SQLite upgrade that plans it otherwise fails here.
#[tokio::test]
async fn the_last_use_write_finds_tokens_by_row_id_not_by_digest() {
    let (_store, dir) = store().await;
    let conn = other_process(&dir);
    let steps = plan_of(&conn, &api_tokens::uses_upsert(2));
    for table in ["t", "p"] {
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with(&format!("SEARCH {table} USING INTEGER PRIMARY KEY"))),
            "{table} by row id: {steps:?}"
        );
    }
    assert!(
        !steps.iter().any(|s| s.contains("INDEX")),
        "no index but the row ids: {steps:?}"
    );
}

/// A connection of its own on the test database, as `cxauth admin` (another process) has.
fn other_process(dir: &tempfile::TempDir) -> rusqlite::Connection {
    writer::open_connection(&dir.path().join("queue.db"), Duration::from_secs(5))
        .expect("another connection")
}

/// Adds a change-log row on `conn`, as a revocation does in its own transaction.
fn add_change(conn: &rusqlite::Connection, key: &str) {
    conn.execute(
        "INSERT INTO credential_changes (kind, key, at) VALUES ('session', ?1, 0)",
        [key],
    )
    .expect("a change-log row");
}

/// A poll of the change log that finds nothing new is answered from memory while nothing is
/// committed (`sqlite/quiet.rs`), and never once anything is: a row another process commits
/// is in the very next read, and so is one this store's own connections commit.
#[tokio::test]
async fn a_quiet_change_log_is_answered_from_memory_until_anything_commits() {
    use cxauth_core::store::ChangeLogStore as _;
    let (store, dir) = store().await;
    let quiet = store
        .quiet
        .clone()
        .expect("a database file has the version check");
    let answered = || quiet.answered.load(std::sync::atomic::Ordering::Relaxed);
    let read = |after| {
        let store = store.clone();
        async move {
            store
                .credential_changes_after(after, 100)
                .await
                .expect("read")
        }
    };

    assert!(read(0).await.changes.is_empty());
    assert_eq!(answered(), 0, "the first read asks the database");
    assert!(read(0).await.changes.is_empty());
    assert!(read(0).await.changes.is_empty());
    assert_eq!(
        answered(),
        2,
        "nothing committed since: answered from memory"
    );

    let admin = other_process(&dir);
    add_change(&admin, "from-admin");
    let seen = read(0).await.changes;
    assert_eq!(seen.len(), 1, "another process's row is in the next read");
    assert_eq!(seen[0].key, "from-admin");
    assert_eq!(answered(), 2);

    // Past the row: the first read asks, the next ones are answered.
    let last = seen[0].seq;
    assert!(read(last).await.changes.is_empty());
    assert_eq!(
        answered(),
        2,
        "a read of other rows is not answered by the last one"
    );
    assert!(read(last).await.changes.is_empty());
    assert_eq!(answered(), 3);

    // A commit of this store's own pool, even one that adds no change-log row, moves it too.
    sqlx::query("INSERT INTO meta (key, value) VALUES ('quiet', 'x')")
        .execute(&store.pool)
        .await
        .expect("insert");
    assert!(read(last).await.changes.is_empty());
    assert_eq!(
        answered(),
        3,
        "a commit since the last read: the database is asked"
    );
    sqlx::query("INSERT INTO credential_changes (kind, key, at) VALUES ('user', '7', 0)")
        .execute(&store.pool)
        .await
        .expect("insert");
    let seen = read(last).await.changes;
    assert_eq!(seen.len(), 1, "this store's own row is in the next read");
    assert_eq!(seen[0].key, "7");
    assert_eq!(answered(), 3);

    // Pruning moves `oldest`, and is a commit: the next read says so.
    add_change(&admin, "newest");
    let before_prune = read(0).await;
    assert_eq!(before_prune.oldest, Some(last));
    admin
        .execute("DELETE FROM credential_changes WHERE key <> 'newest'", [])
        .expect("prune");
    let after_prune = read(0).await;
    assert_eq!(after_prune.changes.len(), 1);
    assert!(after_prune.oldest > Some(last), "{:?}", after_prune.oldest);
}

/// Polls racing another process's commits never miss a row committed before they began, and
/// once the commits stop, the polls are answered from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_polls_never_miss_a_row_committed_before_they_began() {
    use cxauth_core::store::ChangeLogStore as _;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const ROWS: usize = 300;
    let (store, dir) = store().await;
    let committed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let admin = other_process(&dir);
    let writer = std::thread::spawn({
        let (committed, done) = (committed.clone(), done.clone());
        move || {
            for i in 0..ROWS {
                add_change(&admin, &format!("row-{i}"));
                committed.store(i + 1, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        }
    });
    let mut readers = Vec::new();
    for r in 0..8 {
        let (store, committed, done) = (store.clone(), committed.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            // Each reader follows the log as the cache does, from the last row it applied.
            let (mut last, mut seen, mut reads_after_done) = (0, 0usize, 0);
            while reads_after_done < 20 {
                if done.load(Ordering::SeqCst) {
                    reads_after_done += 1;
                }
                let before = committed.load(Ordering::SeqCst);
                let batch = store
                    .credential_changes_after(last, 1_000)
                    .await
                    .expect("read");
                if let Some(change) = batch.changes.last() {
                    last = change.seq;
                }
                seen += batch.changes.len();
                assert!(
                    seen >= before,
                    "reader {r}: {seen} rows after a read begun when {before} had committed"
                );
                tokio::task::yield_now().await;
            }
            seen
        }));
    }
    for reader in readers {
        assert_eq!(reader.await.expect("reader"), ROWS);
    }
    writer.join().expect("writer");
    let answered = store
        .quiet
        .as_ref()
        .expect("the version check")
        .answered
        .load(Ordering::Relaxed);
    assert!(answered > 0, "no poll was answered from memory");
}
