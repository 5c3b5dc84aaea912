//! Crash safety: `kill -9` the server at random moments under load, restart it, and check that
//! nothing it acknowledged was lost. Prints its figures (kills, operations checked, lost).

use cxauth_client::{Client, Credential};
use cxauth_testkit::TestDb;
use cxauth_testkit::cli::Served;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PASSWORD: &str = "crash-test-password";
const KILLS: usize = 6;

fn start(db: &TestDb) -> (Served, Client) {
    let served = cxauth_testkit::cli::serve_on(
        db,
        // The load logs in over a hundred sessions for one user: with the default cap (100)
        // the oldest would be ended to make room, as documented, and read here as lost.
        &["--max-sessions-per-user", "0"],
        &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)],
    );
    let client = served.client();
    (served, client)
}

/// What must hold for one token or session after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fact {
    /// Its creation was acknowledged: it must work.
    Alive,
    /// Its deletion or logout was acknowledged: it must be refused.
    Gone,
    /// A deletion or logout was sent but not acknowledged: either outcome is correct.
    InFlight,
}

/// What the server acknowledged, to be checked after each restart.
#[derive(Default)]
struct Ledger {
    /// API token → what must hold for it.
    tokens: HashMap<String, Fact>,
    /// Session → its newest acknowledged refresh token and what must hold for it.
    sessions: HashMap<String, (String, Fact)>,
    acknowledged: usize,
}

async fn load(client: Client, ledger: Arc<Mutex<Ledger>>, worker: usize) {
    let mut i = 0usize;
    loop {
        i += 1;
        let Ok(session) = client.login("admin", PASSWORD, "aws80").await else {
            return;
        };
        let first_rt = session.refresh_token.clone().unwrap_or_default();
        let key = format!("{worker}-{i}");
        {
            let mut l = ledger.lock().expect("ledger");
            l.sessions
                .insert(key.clone(), (first_rt.clone(), Fact::Alive));
            l.acknowledged += 1;
        }
        let bearer = Credential::Bearer(session.access_token.clone());
        let Ok(token) = client.create_api_token(&bearer).await else {
            return;
        };
        {
            let mut l = ledger.lock().expect("ledger");
            l.tokens.insert(token.clone(), Fact::Alive);
            l.acknowledged += 1;
        }
        let mut rt = first_rt;
        for _ in 0..3 {
            let Ok(next) = client.refresh(&rt).await else {
                return;
            };
            rt = next.refresh_token.unwrap_or_default();
            let mut l = ledger.lock().expect("ledger");
            l.sessions.insert(key.clone(), (rt.clone(), Fact::Alive));
            l.acknowledged += 1;
        }
        if i.is_multiple_of(2) {
            ledger
                .lock()
                .expect("ledger")
                .tokens
                .insert(token.clone(), Fact::InFlight);
            if client.delete_api_token(&bearer, &token).await.is_err() {
                return;
            }
            let mut l = ledger.lock().expect("ledger");
            l.tokens.insert(token, Fact::Gone);
            l.acknowledged += 1;
        }
        if i.is_multiple_of(3) {
            ledger
                .lock()
                .expect("ledger")
                .sessions
                .insert(key.clone(), (rt.clone(), Fact::InFlight));
            if client.logout(&rt).await.is_err() {
                return;
            }
            let mut l = ledger.lock().expect("ledger");
            l.sessions.insert(key, (rt, Fact::Gone));
            l.acknowledged += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_acknowledged_is_lost_across_kill_9() {
    let db = TestDb::selected().await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut checked = 0usize;
    let mut lost = Vec::new();
    for round in 0..KILLS {
        let (mut server, client) = start(&db);
        // After a restart, everything acknowledged before must hold.
        checked += verify(&client, &ledger, &mut lost).await;
        let workers: Vec<_> = (0..4)
            .map(|w| tokio::spawn(load(client.clone(), ledger.clone(), round * 10 + w)))
            .collect();
        // A pseudo-random moment: 150–650 ms into the load.
        let jitter = (round as u64 * 7919 + 131) % 500;
        tokio::time::sleep(Duration::from_millis(150 + jitter)).await;
        server.kill9();
        for w in workers {
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
    }
    let (server, client) = start(&db);
    checked += verify(&client, &ledger, &mut lost).await;
    drop(server);

    // SQLite's own check of its file; PostgreSQL has no such file to tear.
    let integrity = match db.sqlite_path() {
        Some(path) => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("open");
            sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(&pool)
                .await
                .expect("check")
        }
        None => "ok".to_owned(),
    };
    let forks = db
        .count(
            "SELECT COUNT(*) FROM (SELECT session_id FROM refresh_tokens WHERE rotated_at IS NULL \
             GROUP BY session_id HAVING COUNT(*) > 1) AS forked",
        )
        .await;
    let acknowledged = ledger.lock().expect("ledger").acknowledged;
    eprintln!(
        "crash safety: {KILLS} kills survived, {acknowledged} operations acknowledged, \
         {checked} checks after restarts, {} lost, {forks} forked sessions, integrity {integrity}",
        lost.len()
    );
    assert!(acknowledged > 50, "the load did something ({acknowledged})");
    assert_eq!(lost, Vec::<String>::new());
    assert_eq!(forks, 0);
    assert_eq!(integrity, "ok");
}

/// Checks every acknowledged fact; returns how many were checked.
async fn verify(client: &Client, ledger: &Mutex<Ledger>, lost: &mut Vec<String>) -> usize {
    let (tokens, sessions) = {
        let l = ledger.lock().expect("ledger");
        (l.tokens.clone(), l.sessions.clone())
    };
    let mut n = 0;
    for (token, fact) in tokens {
        if fact == Fact::InFlight {
            continue;
        }
        let works = client
            .list_api_tokens(&Credential::XAuthToken(token.clone()))
            .await
            .is_ok();
        if works != (fact == Fact::Alive) {
            lost.push(format!(
                "an API token expected {fact:?} but it {}",
                if works { "works" } else { "is refused" }
            ));
        }
        n += 1;
    }
    let mut renewed = Vec::new();
    for (key, (rt, fact)) in sessions {
        if fact == Fact::InFlight {
            continue;
        }
        // The newest acknowledged refresh token works (a rotation the server committed but
        // could not acknowledge before dying is covered by the grace window), unless its
        // logout was acknowledged.
        match (client.refresh(&rt).await, fact) {
            (Ok(next), Fact::Alive) => renewed.push((key, next.refresh_token.unwrap_or_default())),
            (Ok(_), _) => lost.push("a logged-out session refreshed".into()),
            (Err(e), Fact::Alive) => lost.push(format!("an acknowledged session was lost: {e}")),
            (Err(_), _) => {}
        }
        n += 1;
    }
    let mut l = ledger.lock().expect("ledger");
    for (key, rt) in renewed {
        l.sessions.insert(key, (rt, Fact::Alive));
    }
    n
}
