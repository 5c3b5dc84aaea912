//! When to try a request again: the server said 429 (throttled) or 503 (busy or storage down).

use crate::Error;
use reqwest::StatusCode;
use std::time::Duration;

/// Bounded retries of 429 and 503 answers.
///
/// The server's `Retry-After` (seconds) is honoured when it is no longer than `max_wait`;
/// a longer one (a login throttled for minutes) is handed back at once as an [`Error::Status`]
/// carrying `retry_after`, rather than freezing the program. Without `Retry-After` the client
/// backs off exponentially from `base_delay`, also capped at `max_wait`.
///
/// Every call is retried, writes included: a 429 or 503 means the server did not do the work
/// (a refresh whose answer was lost is covered by the server's grace window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 turns retrying off.
    pub max_retries: u32,
    /// First back-off when the server gave no `Retry-After`; doubles on each retry.
    pub base_delay: Duration,
    /// Longest single wait; a longer `Retry-After` ends the retries.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    /// Three retries, 500 ms first back-off, waits of at most 10 s.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_wait: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Never retry: one request per call.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// How long to wait before retry number `attempt + 1` after `err`, or `None` to give up.
    pub(crate) fn wait_before_retry(&self, err: &Error, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_retries {
            return None;
        }
        let Error::Status {
            status,
            retry_after,
            ..
        } = err
        else {
            return None;
        };
        if *status != StatusCode::TOO_MANY_REQUESTS && *status != StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        match retry_after {
            Some(wait) if *wait > self.max_wait => None,
            Some(wait) => Some(*wait),
            None => Some(
                self.base_delay
                    .saturating_mul(2u32.saturating_pow(attempt))
                    .min(self.max_wait),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after: Option<u64>) -> Error {
        Error::Status {
            status: StatusCode::from_u16(code).expect("status"),
            error_code: None,
            message: String::new(),
            request_id: None,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn waits_follow_retry_after_then_back_off_and_stop() {
        let p = RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_wait: Duration::from_secs(5),
        };
        assert_eq!(
            p.wait_before_retry(&status(503, Some(2)), 0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.wait_before_retry(&status(429, Some(6)), 0), None);
        assert_eq!(
            p.wait_before_retry(&status(503, None), 2),
            Some(Duration::from_millis(400))
        );
        assert_eq!(p.wait_before_retry(&status(503, None), 3), None);
        assert_eq!(p.wait_before_retry(&status(500, None), 0), None);
        assert_eq!(p.wait_before_retry(&status(401, Some(1)), 0), None);
        assert_eq!(
            RetryPolicy::none().wait_before_retry(&status(503, None), 0),
            None
        );
    }
}
