//! Password hashing with Argon2id on a bounded pool of blocking threads.
//!
//! A verification costs tens of milliseconds of CPU and 19 MiB of memory. Run on the async
//! workers it would stall every other request; run unbounded it would let a login storm take all
//! memory. So verifications run on `workers` dedicated threads, at most `queue` more wait, and
//! anything beyond that is refused at once with [`PoolError::Busy`] (a 503 upstream).
//!
//! Each thread keeps one Argon2 memory area and reuses it for every verification: memory stays
//! at `workers × 19 MiB` (allocating per hash on varying blocking threads left a 19 MiB block in
//! each thread's malloc arena: 500+ MB after a login storm), and no hash pays for mapping and
//! faulting in 19 MiB of fresh pages.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, Mutex, mpsc};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

/// OWASP Password Storage Cheat Sheet: Argon2id, m = 19 MiB, t = 2, p = 1.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

pub use crate::limits::MAX_PASSWORD_LEN;

fn argon2() -> Argon2<'static> {
    // The parameters are constants known to be valid; `default()` is only a type-level fallback.
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).unwrap_or_default();
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

/// Hashes `password` into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`), on this thread.
pub fn hash_password(password: &SecretString) -> Result<String, PoolError> {
    use argon2::PasswordHasher as _;
    argon2()
        .hash_password(password.expose_secret().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PoolError::Hash(e.to_string()))
}

/// Checks `password` against a PHC string, on this thread. A malformed hash never matches.
pub fn verify_password(phc: &str, password: &SecretString) -> bool {
    use argon2::PasswordVerifier as _;
    let Ok(hash) = password_hash::phc::PasswordHash::new(phc) else {
        return false;
    };
    argon2()
        .verify_password(password.expose_secret().as_bytes(), &hash)
        .is_ok()
}

/// Argon2's working memory (19 MiB at cxauth's parameters), kept by one thread and reused by
/// each verification it runs.
#[derive(Default)]
pub struct HashMemory(Vec<Block>);

/// Like [`verify_password`], but with Argon2's blocks in `memory` (grown once, then reused)
/// when the hash is Argon2id v1.3, as every hash cxauth writes is; others take the plain path.
pub fn verify_with_memory(phc: &str, password: &SecretString, memory: &mut HashMemory) -> bool {
    let memory = &mut memory.0;
    let Ok(hash) = password_hash::phc::PasswordHash::new(phc) else {
        return false;
    };
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(0x13) {
        return verify_password(phc, password);
    }
    let (Some(salt), Some(expected)) = (hash.salt.as_ref(), hash.hash.as_ref()) else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let mut out = vec![0u8; expected.as_ref().len()];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(
            password.expose_secret().as_bytes(),
            salt.as_ref(),
            &mut out,
            &mut memory[..blocks],
        )
        .is_ok()
        && bool::from(out.as_slice().ct_eq(expected.as_ref()))
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
        self.run(move |_| hash_password(&password)).await?
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
}
