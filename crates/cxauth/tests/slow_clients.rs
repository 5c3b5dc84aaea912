//! `cxauth serve` under a 1,024 open file limit against 1,100 clients that hold partial headers:
//! `/healthz` and a login still answer, the slow clients are disconnected at the header-read
//! timeout, and the process holds fewer connections than it has descriptors. Also: the
//! database files are 0600 under umask 022, the default header-read timeout is at most 60 s,
//! and credentials in URLs are redacted in `config check` and the start-up log.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const ADMIN_PASSWORD: &str = "slow-clients-admin-pw";
const SLOW_CLIENTS: usize = 1_100;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(4);

/// A `cxauth serve` started through `sh -c`, killed on drop.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `sh -c "{prelude}; exec cxauth serve --listen 127.0.0.1:0 ARGS"`, waited for.
    fn start(prelude: &str, args: &[&str]) -> Server {
        let bin = assert_cmd::cargo::cargo_bin("cxauth");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "{prelude}; exec \"$0\" serve --listen 127.0.0.1:0 --metrics-listen off \"$@\""
            ))
            .arg(&bin)
            .args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("CXAUTH_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .env("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().expect("log").push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("cxauth: listening on ") {
                        let base = a.trim().to_owned();
                        return Server { child, base, log };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("cxauth serve did not start: {seen:#?}");
                }
            }
        }
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    fn log(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        self.log.lock().expect("log").clone()
    }

    /// Descriptors the process has open (from /proc).
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// Counts the watchers that have finished (their connection was closed), keeping them.
fn watchers_finished(set: &mut tokio::task::JoinSet<Option<Duration>>) -> usize {
    let mut n = 0;
    while let Some(r) = set.try_join_next() {
        n += 1;
        finished_early(r.expect("watcher"));
    }
    n
}

/// A connection closed during the flood (shed): it was held no longer than its timeout.
fn finished_early(held: Option<Duration>) {
    let t = held.expect("closed");
    assert!(
        t < HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "held {t:?}"
    );
}

fn is_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

async fn login(base: &str) -> (u16, Duration) {
    let started = Instant::now();
    let res = reqwest::Client::new()
        .post(format!("{base}/api/auth/login/admin"))
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("platformId", "aws80"),
        ])
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the login answers");
    (res.status().as_u16(), started.elapsed())
}

async fn healthz(base: &str) -> (u16, Duration) {
    let started = Instant::now();
    let res = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("/healthz answers");
    (res.status().as_u16(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_under_a_1024_file_limit_do_not_stop_the_service() {
    // This process opens the 1,100 client sockets: give it room (the server gets 1,024).
    let own = rlimit::increase_nofile_limit(4_096).expect("raise the test's own limit");
    assert!(own >= 2_048, "the test needs 2,048 descriptors, has {own}");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("slow.db").display());
    let timeout = format!("{}s", HEADER_READ_TIMEOUT.as_secs());
    let server = Server::start(
        "ulimit -n 1024",
        &["--database", &db, "--header-read-timeout", &timeout],
    );
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).expect("limits");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files")
        .to_owned();
    assert!(
        nofile.split_whitespace().filter(|w| *w == "1024").count() == 2,
        "{nofile}"
    );
    let (status, _) = healthz(&server.base).await;
    assert_eq!(status, 200);

    // 1,100 clients that send part of their headers and then nothing.
    let flood_started = Instant::now();
    let mut slow: Vec<(TcpStream, Instant)> = Vec::with_capacity(SLOW_CLIENTS);
    for i in 0..SLOW_CLIENTS {
        let mut c = TcpStream::connect(server.addr())
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let _ = c
            .write_all(b"POST /api/auth/login/admin HTTP/1.1\r\nHost: cxauth\r\nX-Slow: ")
            .await;
        slow.push((c, Instant::now()));
    }
    let flood_took = flood_started.elapsed();
    // From now on each slow client notes when the server closes it.
    let mut watchers = tokio::task::JoinSet::new();
    let mut held_probe = Vec::with_capacity(SLOW_CLIENTS);
    for (c, opened) in slow {
        let (read_half, write_half) = c.into_split();
        held_probe.push(write_half);
        watchers.spawn(async move {
            let mut r = read_half;
            let mut buf = [0u8; 512];
            let limit = HEADER_READ_TIMEOUT + Duration::from_secs(10);
            loop {
                match tokio::time::timeout_at((opened + limit).into(), r.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => return Some(opened.elapsed()),
                    Ok(Ok(_)) => {}
                    Err(_) => return None,
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = watchers.len() - watchers_finished(&mut watchers);
    let fds = server.open_fds();

    // Real clients still get answers while the slow ones hold on.
    let (h_status, h_time) = healthz(&server.base).await;
    let (l_status, l_time) = login(&server.base).await;
    assert_eq!(h_status, 200);
    assert_eq!(l_status, 200);
    assert!(h_time < Duration::from_secs(5), "/healthz took {h_time:?}");

    // Every slow client is gone within the header-read timeout of its own start.
    let mut longest = Duration::ZERO;
    while let Some(r) = watchers.join_next().await {
        let t = r
            .expect("watcher")
            .expect("a slow client was never disconnected");
        longest = longest.max(t);
    }
    drop(held_probe);
    assert!(
        longest < HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "a slow client was held {longest:?}"
    );
    let log = server.log();
    let cap_line = log
        .iter()
        .find(|l| l.contains("connection limits"))
        .cloned()
        .unwrap_or_default();
    assert!(cap_line.contains("max_connections=896"), "{cap_line}");
    assert!(
        held <= 896,
        "{held} slow connections held at once, above the cap"
    );
    assert!(
        !log.iter().any(|l| l.contains("accept failed")),
        "accept failed under the cap: {log:#?}"
    );
    eprintln!(
        "slow clients: {SLOW_CLIENTS} opened in {flood_took:?}; held at once {held} (cap 896, \
         server descriptors {fds} of 1024); /healthz {h_time:?}, login {l_time:?} during the \
         flood; longest-held slow client {longest:?} (header read timeout {HEADER_READ_TIMEOUT:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_sheds_idle_connections_and_never_spins() {
    rlimit::increase_nofile_limit(4_096).expect("raise the test's own limit");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("emfile.db").display());
    // A cap above the limit: accept itself fails with EMFILE.
    let server = Server::start(
        "ulimit -n 256",
        &[
            "--database",
            &db,
            "--header-read-timeout",
            "30s",
            "--max-connections",
            "1000",
        ],
    );
    let mut slow = Vec::new();
    for _ in 0..400 {
        let mut c = TcpStream::connect(server.addr()).await.expect("connect");
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").await;
        slow.push(c);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("comm")
            .1
            .split_whitespace()
            .collect();
        // utime and stime, fields 14 and 15 (1-based) of the whole line.
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    };
    let before = cpu(server.child.id());
    let (status, took) = healthz(&server.base).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks = cpu(server.child.id()) - before;
    // Clock ticks are 1/100 s: a spinning accept loop would burn ~200 in these 2 s.
    assert!(
        ticks < 60,
        "the server used {ticks} ticks of CPU while idle at the limit"
    );
    let (l_status, _) = login(&server.base).await;
    assert_eq!(l_status, 200);
    let log = server.log();
    let errors = log.iter().filter(|l| l.contains("accept failed")).count();
    assert!(errors >= 1, "the limit was never reached: {log:#?}");
    assert!(
        errors < 10,
        "{errors} accept error lines: the log is not rate-limited"
    );
    let closed = slow.iter().filter(|c| is_closed(c)).count();
    eprintln!(
        "descriptor exhaustion (limit 256, cap 1000, 400 slow clients): /healthz {took:?}, \
         {closed} idle connections shed, {ticks} CPU ticks in 2 s, {errors} accept-error lines"
    );
    assert!(closed >= 1);
}

#[test]
fn database_files_are_private_under_umask_022() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("private.db");
    let server = Server::start(
        "umask 022",
        &["--database", &format!("sqlite://{}", path.display())],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // A write, so that the -wal has content.
    let (status, _) = rt.block_on(login(&server.base));
    assert_eq!(status, 200);
    use std::os::unix::fs::PermissionsExt as _;
    for suffix in ["", "-wal", "-shm", ".key"] {
        let f = format!("{}{suffix}", path.display());
        let mode = std::fs::metadata(&f)
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f} is {mode:o}");
    }
    // A file some older version left readable is narrowed at the next start.
    drop(server);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let server = Server::start(
        "umask 022",
        &["--database", &format!("sqlite://{}", path.display())],
    );
    let mode = std::fs::metadata(&path).expect("db").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(server.log().iter().any(|l| l.contains("narrowed to 0600")));
}

#[test]
fn urls_with_credentials_are_redacted_in_config_check_and_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ringex = "http://svc-user:hunter2-ringex@127.0.0.1:1/?key=hunter2-query";
    let out = Command::new(assert_cmd::cargo::cargo_bin("cxauth"))
        .args(["config", "check", "--ringex-server", ringex])
        .args([
            "--database",
            "postgres://cx:hunter2-db@db.example:5432/cxauth?password=hunter2-q",
        ])
        .env_remove("CXAUTH_CONFIG")
        .output()
        .expect("config check");
    assert!(out.status.success(), "{out:?}");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("hunter2"), "a secret was printed:\n{text}");
    assert!(
        text.contains("ringex_server = \"http://svc-user:[redacted]@127.0.0.1:1/\""),
        "{text}"
    );
    // The defaults: a slow client is gone within 60 s.
    assert!(text.contains("header_read_timeout = \"10s\""), "{text}");
    assert!(text.contains("keep_alive_timeout = \"75s\""), "{text}");
    assert!(text.contains("max_connections = \"auto\""), "{text}");

    let server = Server::start(
        "true",
        &[
            "--database",
            &format!("sqlite://{}", dir.path().join("r.db").display()),
            "--ringex-server",
            ringex,
        ],
    );
    let log = server.log().join("\n");
    assert!(log.contains("svc-user:[redacted]@127.0.0.1:1"), "{log}");
    assert!(!log.contains("hunter2"), "a secret was logged:\n{log}");
}
