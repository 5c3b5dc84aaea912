//! Password hashing with Argon2id on a bounded pool of blocking threads.
//!
//! A verification costs 10–25 ms of CPU (by CPU and load) and 19 MiB of memory. Run on the
//! async workers it would stall every other request; run unbounded it would let a login storm
//! take all memory. So verifications run on `workers` dedicated threads, at most `queue` more
//! wait, and anything beyond that is refused at once with [`PoolError::Busy`] (a 503 upstream).
//!
//! Each thread keeps one Argon2 memory area and reuses it for every hash: memory stays
//! at `workers × 19 MiB` (allocating per hash on varying blocking threads left a 19 MiB block in
//! each thread's malloc arena: 500+ MB after a login storm), and no hash pays for mapping and
//! faulting in 19 MiB of fresh pages.
//!
//! On Linux the threads run `NICE_BELOW_REQUESTS` nice values below the rest of the server, so
//! that the requests' threads, which wake for microseconds at a time, get the core at once.

use argon2_rust::{Algorithm, Argon2, Params, Version, params::Memory};
use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::Semaphore;

/// OWASP Password Storage Cheat Sheet: Argon2id, m = 19 MiB, t = 2, p = 1.
const M_COST_KIB: u64 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
/// Salt length of new hashes: 16 bytes, as RustCrypto's `argon2` (which wrote cxauth's earlier
/// hashes) and the C reference use.
const SALT_LEN: usize = 16;

pub use crate::limits::MAX_PASSWORD_LEN;

/// The hasher for new hashes and the size of each thread's reusable memory.
///
/// `argon2-rust` rather than RustCrypto's `argon2` because its compression function is written
/// with SIMD intrinsics per CPU (AVX-512, AVX2, SSE2, NEON, picked at run time); RustCrypto 0.6
/// compiles portable code under `target_feature(avx2)` and leaves vectorising to LLVM, which ran
/// about 1.7× the instructions and 1.5–1.8× the CPU time per hash here
/// (docs/benchmarks-history.md, "Login: why Argon2id cost twice the peer's").
/// Both implement RFC 9106 and write the same PHC strings; a test checks each verifies the other's.
fn argon2() -> Argon2 {
    // The parameters are constants known to be valid; `default()` is only a type-level fallback.
    let params = Params::builder()
        .memory(Memory::kib(M_COST_KIB))
        .passes(T_COST)
        .lanes(P_COST)
        .build()
        .unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Too many verifications are running or queued; try again shortly.
    #[error("password verification pool is busy")]
    Busy,
    /// The hashing itself failed (should never happen with valid parameters).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn new_salt() -> Result<[u8; SALT_LEN], PoolError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| PoolError::Hash(format!("no salt: {e}")))?;
    Ok(salt)
}

/// Hashes `password` into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`), on this thread.
pub fn hash_password(password: &SecretString) -> Result<String, PoolError> {
    argon2()
        .hash_encoded(password.expose_secret().as_bytes(), &new_salt()?)
        .map_err(|e| PoolError::Hash(e.to_string()))
}

/// The Argon2 variant a PHC string names (`$argon2id$…`), if it names one.
fn algorithm_of(phc: &str) -> Option<Algorithm> {
    match phc.strip_prefix('$')?.split('$').next()? {
        "argon2id" => Some(Algorithm::Argon2id),
        "argon2i" => Some(Algorithm::Argon2i),
        "argon2d" => Some(Algorithm::Argon2d),
        _ => None,
    }
}

/// Checks `password` against a PHC string, on this thread. A malformed hash never matches.
pub fn verify_password(phc: &str, password: &SecretString) -> bool {
    let Some(algorithm) = algorithm_of(phc) else {
        return false;
    };
    Argon2::verify_encoded(phc, password.expose_secret().as_bytes(), algorithm).is_ok()
}

/// Argon2's working memory (19 MiB at cxauth's parameters), kept by one thread and reused by
/// each hash it runs.
///
/// Allocated at the first hash, then reused: no later hash maps or faults in fresh pages. The
/// arena is wiped after each hash (`argon2-rust`'s `zeroize-memory`), so no password-derived
/// block outlives its hash. A stored hash with a larger `m` than cxauth's runs on a private
/// arena freed at once, so a stray hash cannot make a thread keep more than 19 MiB.
pub struct HashMemory(argon2_rust::Hasher);

impl Default for HashMemory {
    fn default() -> Self {
        HashMemory(argon2().hasher())
    }
}

/// Like [`verify_password`], but running in `memory` (grown once, then reused).
pub fn verify_with_memory(phc: &str, password: &SecretString, memory: &mut HashMemory) -> bool {
    let Some(algorithm) = algorithm_of(phc) else {
        return false;
    };
    memory
        .0
        .verify_encoded(phc, password.expose_secret().as_bytes(), algorithm)
        .is_ok()
}

/// Like [`hash_password`], but running in `memory`.
pub fn hash_with_memory(
    password: &SecretString,
    memory: &mut HashMemory,
) -> Result<String, PoolError> {
    memory
        .0
        .hash_encoded(password.expose_secret().as_bytes(), &new_salt()?)
        .map_err(|e| PoolError::Hash(e.to_string()))
}

/// Counts a hash as running for as long as it lives, also if the hash panics.
struct RunningGuard(Arc<std::sync::atomic::AtomicUsize>);

impl RunningGuard {
    fn enter(counter: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RunningGuard(counter)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Work for a hashing thread; it gets the thread's reusable Argon2 memory.
type Job = Box<dyn FnOnce(&mut HashMemory) + Send>;

/// The bounded pool. Cheap to clone; the threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct PasswordPool {
    /// Jobs admitted (running or queued); a job holds its permit until it has run.
    admission: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
    dummy_hash: Arc<str>,
    /// Hashes running right now (for [`PasswordPool::load`]).
    running: Arc<std::sync::atomic::AtomicUsize>,
    /// Hashes admitted at once, running or waiting.
    capacity: usize,
}

impl PasswordPool {
    /// A pool running at most `workers` hashes at once with at most `queue` waiting.
    ///
    /// Computes the dummy hash used for unknown users, so construction takes one hash time.
    pub fn new(workers: usize, queue: usize) -> Result<Self, PoolError> {
        let workers = workers.max(1);
        let dummy = hash_password(&SecretString::from(
            "cxauth dummy password for unknown users",
        ))?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("cxauth-argon2-{i}"))
                .spawn(move || {
                    yield_to_requests();
                    let mut memory = HashMemory::default();
                    loop {
                        // One idle thread waits in recv, the others on the lock.
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { break };
                        // A panicking job must not take the thread (and pool capacity) with it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            job(&mut memory)
                        }));
                    }
                })
                .map_err(|e| PoolError::Hash(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(PasswordPool {
            admission: Arc::new(Semaphore::new(workers + queue)),
            jobs,
            dummy_hash: dummy.into(),
            running: Arc::default(),
            capacity: workers + queue,
        })
    }

    /// Hashes running and hashes waiting right now: the queue depth the metrics report, the
    /// first sign of a login storm or too few workers.
    pub fn load(&self) -> (usize, usize) {
        let running = self.running.load(std::sync::atomic::Ordering::Relaxed);
        let admitted = self.capacity - self.admission.available_permits().min(self.capacity);
        (running, admitted.saturating_sub(running))
    }

    /// Verifies `password` against `phc`, or against a dummy hash when `phc` is `None` (unknown
    /// user), so that both cases cost the same time and the answer does not reveal which it was.
    pub async fn verify(
        &self,
        phc: Option<&str>,
        password: SecretString,
    ) -> Result<bool, PoolError> {
        let known = phc.is_some();
        let hash: String = phc.unwrap_or(&self.dummy_hash).to_owned();
        let ok = self
            .run(move |memory| verify_with_memory(&hash, &password, memory))
            .await?;
        Ok(ok && known)
    }

    /// Hashes a new password on the pool.
    pub async fn hash(&self, password: SecretString) -> Result<String, PoolError> {
        self.run(move |memory| hash_with_memory(&password, memory))
            .await?
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut HashMemory) -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let admitted = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| PoolError::Busy)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let running = self.running.clone();
        self.jobs
            .send(Box::new(move |memory| {
                let counted = RunningGuard::enter(running);
                let out = f(memory);
                drop(counted);
                // Released only once the work is done, even if the caller went away: the
                // bound covers what the threads will still run, not just who is waiting.
                // Before answering, so a caller that got its answer finds its slot free.
                drop(admitted);
                let _ = tx.send(out);
            }))
            .map_err(|_| PoolError::Hash("the hashing threads stopped".into()))?;
        rx.await
            .map_err(|_| PoolError::Hash("password hashing panicked".into()))
    }
}

/// How many nice values the hashing threads run below the server's other threads (at most
/// down to 19, the lowest).
///
/// A hash runs for milliseconds without a pause, on the cores the requests need. At the same
/// nice value, a request's thread that woke (a tokio worker with a bearer check, the SQLite
/// writer with a commit) often waited for the running hash's slice to end. Measured on the
/// twenty-sixth round's host (docs/benchmarks-history.md), server pinned to one core:
/// - `cxauth-bench all --pin --only login,storm`: bearer's p99 while logins saturate the pool
///   went from ~4.5 ms to ~1 ms, the `login` p99 from ~55–60 ms to ~45 ms, at the same login rate
///   and CPU per login (nice 5 did about half as well; nice 19 no better than 10);
/// - bearer checks saturating the core (`wrk`, 32 connections) while two clients log in back to
///   back: at the same nice value the hashes took half the core (~34,000 bearer answers/s, 56
///   logins/s); 10 lower, bearer keeps ~69,000/s and the logins ~12/s (p50 ~190 ms); 19
///   lower, the logins got only ~2/s (p50 ~1 s), too close to locking users out.
///
/// The weights of the kernel's fair scheduler make it so: a thread 10 nice values lower gets
/// about a tenth of a core its peers want, and the whole core when they do not, so a login
/// storm on an otherwise idle server still runs at full speed.
pub(crate) const NICE_BELOW_REQUESTS: i32 = 10;

/// Lowers the calling hashing thread by [`NICE_BELOW_REQUESTS`]. On Linux a nice value belongs
/// to a thread (`setpriority` on the calling process sets the calling thread's), so the
/// server's other threads keep theirs; relative to the thread's own, so that a server started
/// under `nice` keeps its hashes below its requests too. A failure is logged at `debug` and
/// the thread keeps the server's nice value, as before.
#[cfg(target_os = "linux")]
fn yield_to_requests() {
    use rustix::process::{getpriority_process, setpriority_process};
    let lowered = getpriority_process(None)
        .and_then(|own| setpriority_process(None, (own + NICE_BELOW_REQUESTS).min(19)));
    if let Err(e) = lowered {
        tracing::debug!(error = %e, "a hashing thread keeps the server's nice value");
    }
}

/// Elsewhere a nice value may belong to the whole process: the threads keep the server's.
#[cfg(not(target_os = "linux"))]
fn yield_to_requests() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let pw = SecretString::from("correct horse");
        let phc = hash_password(&pw).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(&phc, &pw));
        assert!(!verify_password(&phc, &SecretString::from("wrong")));
        assert!(!verify_password("not a hash", &pw));
        let mut memory = HashMemory::default();
        assert!(verify_with_memory(&phc, &pw, &mut memory));
        assert!(!verify_with_memory(
            &phc,
            &SecretString::from("wrong"),
            &mut memory
        ));
        assert!(
            verify_with_memory(&phc, &pw, &mut memory),
            "memory is reusable"
        );
        assert!(!verify_with_memory("not a hash", &pw, &mut memory));
    }

    /// Written by cxauth before it moved to `argon2-rust` (RustCrypto `argon2` 0.6.0, m=19456,
    /// t=2, p=1): stored hashes like it must keep verifying.
    const RUSTCRYPTO_FIXTURE: &str = "$argon2id$v=19$m=19456,t=2,p=1$6zcYQj1U2EF5cxdfeBtn4w$PtIezD0VCN34RPa0SZjYM4O4iJYpb8SdwcGSdH6HR0A";

    #[test]
    fn hashes_written_by_rustcrypto_argon2_still_verify() {
        let pw = SecretString::from("cxauth compatibility fixture");
        let mut memory = HashMemory::default();
        assert!(verify_password(RUSTCRYPTO_FIXTURE, &pw));
        assert!(verify_with_memory(RUSTCRYPTO_FIXTURE, &pw, &mut memory));
        assert!(!verify_with_memory(
            RUSTCRYPTO_FIXTURE,
            &SecretString::from("cxauth compatibility fixturE"),
            &mut memory
        ));

        // And a fresh one, with a random salt, at other parameters and variants too.
        use argon2::PasswordHasher as _;
        for (alg, m, t) in [
            (argon2::Algorithm::Argon2id, 19 * 1024, 2),
            (argon2::Algorithm::Argon2id, 64, 1),
            (argon2::Algorithm::Argon2i, 256, 3),
            (argon2::Algorithm::Argon2d, 128, 2),
        ] {
            let params = argon2::Params::new(m, t, 1, None).expect("params");
            let phc = argon2::Argon2::new(alg, argon2::Version::V0x13, params)
                .hash_password(b"correct horse")
                .expect("hash")
                .to_string();
            assert!(
                verify_password(&phc, &SecretString::from("correct horse")),
                "{phc}"
            );
            assert!(
                verify_with_memory(&phc, &SecretString::from("correct horse"), &mut memory),
                "{phc}"
            );
            assert!(
                !verify_password(&phc, &SecretString::from("correct horsE")),
                "{phc}"
            );
        }
    }

    #[test]
    fn new_hashes_verify_under_rustcrypto_argon2() {
        use argon2::PasswordVerifier as _;
        let mut memory = HashMemory::default();
        for phc in [
            hash_password(&SecretString::from("correct horse")).expect("hash"),
            hash_with_memory(&SecretString::from("correct horse"), &mut memory).expect("hash"),
        ] {
            let parsed = password_hash::phc::PasswordHash::new(&phc).expect("PHC");
            assert_eq!(parsed.salt.expect("salt").as_ref().len(), SALT_LEN, "{phc}");
            let old = argon2::Argon2::default();
            assert!(
                old.verify_password(b"correct horse", &parsed).is_ok(),
                "{phc}"
            );
            assert!(
                old.verify_password(b"correct horsE", &parsed).is_err(),
                "{phc}"
            );
        }
    }

    #[test]
    fn salts_differ_and_foreign_or_broken_strings_never_match() {
        let pw = SecretString::from("correct horse");
        let a = hash_password(&pw).expect("hash");
        let b = hash_password(&pw).expect("hash");
        assert_ne!(a, b, "each hash has its own salt");
        let mut memory = HashMemory::default();
        for bad in [
            "",
            "$",
            "$argon2$v=19$m=64,t=1,p=1$c29tZXNhbHQ$cpx6VEQbwTVZvcpxNIxOVUWZ5xnAipUmAe1cg2GMG70",
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
            &a[..a.len() - 2],
        ] {
            assert!(!verify_password(bad, &pw), "{bad}");
            assert!(!verify_with_memory(bad, &pw, &mut memory), "{bad}");
        }
    }

    #[tokio::test]
    async fn unknown_users_never_verify_and_a_full_pool_refuses() {
        let pool = PasswordPool::new(1, 0).expect("pool");
        assert!(
            !pool
                .verify(
                    None,
                    SecretString::from("cxauth dummy password for unknown users")
                )
                .await
                .expect("ran")
        );
        // Hold the only admission slot, then the next caller must be refused at once.
        let held = pool.admission.clone().try_acquire_owned().expect("slot");
        assert!(matches!(
            pool.verify(None, SecretString::from("x")).await,
            Err(PoolError::Busy)
        ));
        drop(held);
        assert!(pool.verify(None, SecretString::from("x")).await.is_ok());
    }

    /// The nice value of a hashing thread of a pool made on a thread with nice value `nice`,
    /// and that thread's own after the pool was made.
    #[cfg(target_os = "linux")]
    fn nice_of_a_hashing_thread_made_at(nice: i32) -> (i32, i32) {
        use rustix::process::{getpriority_process, setpriority_process};
        // A thread may always lower its own nice value but not raise it again without
        // privileges: each case runs on a thread of its own.
        std::thread::spawn(move || {
            setpriority_process(None, nice).expect("set the nice value");
            let pool = PasswordPool::new(2, 0).expect("pool");
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let hashing = rt
                .block_on(pool.run(|_| getpriority_process(None)))
                .expect("ran")
                .expect("the hashing thread's nice value");
            (hashing, getpriority_process(None).expect("own nice value"))
        })
        .join()
        .expect("the thread")
    }

    /// Hashing threads run `NICE_BELOW_REQUESTS` below the thread that made the pool, never
    /// past 19, and the maker keeps its own nice value.
    #[cfg(target_os = "linux")]
    #[test]
    fn hashing_threads_run_below_the_requests() {
        let own = rustix::process::getpriority_process(None).expect("own nice value");
        // A test run already under `nice` can only check from its own value down.
        for nice in [0, 5, 12, 19].into_iter().filter(|n| *n >= own) {
            assert_eq!(
                nice_of_a_hashing_thread_made_at(nice),
                ((nice + NICE_BELOW_REQUESTS).min(19), nice),
                "made at nice {nice}"
            );
        }
    }
}
