//! Password hashing with Argon2id on a bounded pool of blocking threads.
//!
//! A verification costs tens of milliseconds of CPU and 19 MiB of memory. Run on the async
//! workers it would stall every other request; run unbounded it would let a login storm take all
//! memory. So verifications run on at most `workers` blocking threads, at most `queue` more wait,
//! and anything beyond that is refused at once with [`PoolError::Busy`] (a 503 upstream).

use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// OWASP Password Storage Cheat Sheet: Argon2id, m = 19 MiB, t = 2, p = 1.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Longest password accepted, so nobody makes us hash a megabyte.
pub const MAX_PASSWORD_LEN: usize = 1024;

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

/// The bounded pool. Cheap to clone.
#[derive(Clone)]
pub struct PasswordPool {
    admission: Arc<Semaphore>,
    running: Arc<Semaphore>,
    dummy_hash: Arc<str>,
    /// Hashes that may run at once (for [`PasswordPool::load`]).
    workers: usize,
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
        Ok(PasswordPool {
            admission: Arc::new(Semaphore::new(workers + queue)),
            running: Arc::new(Semaphore::new(workers)),
            dummy_hash: dummy.into(),
            workers,
            capacity: workers + queue,
        })
    }

    /// Hashes running and hashes waiting right now: the queue depth the metrics report, the
    /// first sign of a login storm or too few workers.
    pub fn load(&self) -> (usize, usize) {
        let running = self.workers - self.running.available_permits().min(self.workers);
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
        let ok = self.run(move || verify_password(&hash, &password)).await?;
        Ok(ok && known)
    }

    /// Hashes a new password on the pool.
    pub async fn hash(&self, password: SecretString) -> Result<String, PoolError> {
        self.run(move || hash_password(&password)).await?
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let _admitted = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| PoolError::Busy)?;
        let _running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Busy)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| PoolError::Hash(e.to_string()))
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
