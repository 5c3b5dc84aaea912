//! The `cxauth` binary as a child process, for the CLI suites: `cxauth serve` started with a
//! clean environment on port 0, its address read from its stderr, every stderr line kept, killed
//! and reaped on drop; and `cxauth ARGS` commands on a [`TestDb`](crate::TestDb).

use crate::TestDb;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A starting server: spawn several, then wait for each, so they start together.
pub struct Starting {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

/// A running server.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The stderr lines up to and including `cxauth: listening on …`.
    pub first_lines: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
}

/// The path of the `cxauth` binary cargo built for this test run.
pub fn cxauth_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cxauth")
}

/// The `cxauth` binary as a [`std::process::Command`] with every `CXAUTH_*` variable of the
/// test's environment removed, so the developer's own settings never leak into a test. For a
/// test that needs what [`spawn`] does not give (stderr on a file, say).
pub fn clean_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(cxauth_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("CXAUTH_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// [`clean_command`] as an [`assert_cmd::Command`].
pub fn cxauth() -> assert_cmd::Command {
    assert_cmd::Command::from_std(clean_command())
}

/// [`cxauth`] with `admin --database URL` for `db` (and its master key on PostgreSQL) set.
pub fn admin(db: &TestDb) -> assert_cmd::Command {
    let mut cmd = cxauth();
    cmd.envs(db.env()).arg("admin");
    cmd
}

/// `cxauth ARGS…` with every `CXAUTH_*` variable of the test's environment removed and `envs`
/// set. Add `--listen 127.0.0.1:0` to a `serve` yourself.
pub fn spawn<S: AsRef<OsStr>>(args: &[S], envs: &[(&str, &str)]) -> Starting {
    let mut child = clean_command()
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cxauth");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            kept.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line.clone());
            let _ = tx.send(line);
        }
    });
    Starting {
        child: Some(child),
        lines: rx,
        log,
    }
}

/// `cxauth serve --listen 127.0.0.1:0 ARGS…` on `db` (its URL and key in the environment),
/// waited for.
pub fn serve_on<S: AsRef<OsStr>>(db: &TestDb, args: &[S], envs: &[(&str, &str)]) -> Served {
    let db_env = db.env();
    let mut all: Vec<(&str, &str)> = db_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.extend(envs.iter().copied());
    serve(args, &all)
}

/// `cxauth serve --listen 127.0.0.1:0 ARGS…`, waited for.
pub fn serve<S: AsRef<OsStr>>(args: &[S], envs: &[(&str, &str)]) -> Served {
    let mut all: Vec<&OsStr> = vec![
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ];
    all.extend(args.iter().map(AsRef::as_ref));
    spawn(&all, envs).ready()
}

impl Starting {
    /// Waits for `cxauth: listening on …`; panics with what the server said if it never comes.
    pub fn ready(mut self) -> Served {
        let mut first_lines = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let addr = line
                        .strip_prefix("cxauth: listening on ")
                        .map(|a| a.trim().to_owned());
                    first_lines.push(line);
                    if let Some(base) = addr {
                        return Served {
                            child: self.child.take().expect("child"),
                            base,
                            first_lines,
                            log: self.log.clone(),
                        };
                    }
                }
                Err(_) => panic!("cxauth serve did not start: {first_lines:#?}"),
            }
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Served {
    /// A client for it.
    pub fn client(&self) -> cxauth_client::Client {
        cxauth_client::Client::new(&self.base).expect("client")
    }

    /// Every stderr line so far (lines arrive through a pipe: give the last ones a moment).
    pub fn log(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many requests to `path` the server has logged so far (the access-log line's span
    /// reads `request{id=… method=… path=PATH}`, or `… path=PATH user_id=N}` once a caller is
    /// known).
    pub fn requests_to(&self, path: &str) -> usize {
        let (last, more) = (format!("path={path}}}"), format!("path={path} "));
        self.log()
            .iter()
            .filter(|l| l.contains(&last) || l.contains(&more))
            .count()
    }

    /// The stderr lines so far that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }

    /// SIGTERM, then waits (at most 30 s) for the process to exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cxauth serve did not stop within 30s of SIGTERM");
    }

    /// The server's process id (to read its threads from `/proc`, say).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, and reap.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
