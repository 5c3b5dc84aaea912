//! The write queue's own claims, tested against a real database file: writers of one process
//! are served in arrival order, and a write transaction that is dropped (an error path) leaves
//! nothing behind and the turn free.

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
