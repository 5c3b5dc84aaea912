//! The server's own view of a run's latency, read from its log.
//!
//! The load generator's latency runs from a request's turn to its answer, so it holds
//! everything in between: the server's work, but also the time a request waits in a socket for
//! a server that is busy or off its core, and the time the generator itself was off its core.
//! The server logs each request's `latency_ms`, from the moment hyper hands it the request to
//! the moment its response is ready. Put side by side for the same window, the two say where a
//! tail was made: a client p99 of milliseconds over a server p99 of microseconds was not made
//! in the server's code, but in the queue in front of it or on the machine.

use std::io::BufRead;
use std::time::SystemTime;

/// The `latency_ms` of every request line `cxauth serve`'s text log (the default format)
/// stamped from `from` to `to`, in log order. Other lines (start-up, audit, warnings without a
/// latency) are skipped, as are lines that are not UTF-8 or whose time or latency does not
/// parse. The log is read a line at a time: a window at 50,000 requests a second is tens of
/// megabytes of log, and only the latencies are kept.
pub fn latencies_ms(log: impl BufRead, from: SystemTime, to: SystemTime) -> Vec<f64> {
    log.split(b'\n')
        .map_while(Result::ok)
        .filter_map(|line| {
            let line = std::str::from_utf8(&line).ok()?;
            let (stamp, rest) = line.split_once(' ')?;
            // The access line of `cxauth_server::context`, not an event that happens to carry
            // a field of the same name.
            let (_, fields) = rest.split_once("cxauth_server::context: request ")?;
            let (_, latency) = fields.split_once("latency_ms=")?;
            let latency = latency.split(' ').next()?.parse::<f64>().ok()?;
            let at = humantime::parse_rfc3339(stamp).ok()?;
            (from <= at && at <= to).then_some(latency)
        })
        .collect()
}

/// The `q` quantile (0..=1) of `values`, by the generator's own rule
/// ([`crate::load::quantile_index`]); NaN when there are none.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable_by(f64::total_cmp);
    values[crate::load::quantile_index(values.len(), q)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LOG: &str = "\
2026-12-03T10:28:20.784604Z  INFO cxauth: cxauth listening addr=127.0.0.1:44775 database=sqlite:///tmp/x.db
cxauth: listening on http://127.0.0.1:44775
2026-12-03T10:28:21.812352Z  INFO request{id=a1 method=POST path=/api/auth/login/admin}:login{platform=aws80 user_id=1}: audit: audit event=\"login\" latency_ms=99
2026-12-03T10:28:21.813206Z  INFO request{id=a1 method=POST path=/api/auth/login/admin}: cxauth_server::context: request status=200 latency_ms=26.446363
2026-12-03T10:28:28.866927Z  INFO request{id=b2 method=GET path=/voice/api/v1/admin/accounts user_id=1}: cxauth_server::context: request status=200 latency_ms=0.737592
2026-12-03T10:28:28.867181Z  WARN request{id=c3 method=GET path=/healthz}: cxauth_server::context: request status=503 latency_ms=0.025267
2026-12-03T10:28:28.867322Z  INFO request{id=d4 method=GET path=/healthz}: cxauth_server::context: request status=200 latency_ms=not-a-number
2026-12-03T10:28:29.000001Z  INFO request{id=e5 method=GET path=/healthz}: cxauth_server::context: request status=200 latency_ms=0.01314
";

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).expect("a time")
    }

    #[test]
    fn only_request_lines_inside_the_window_count() {
        let from = at("2026-12-03T10:28:28.866927Z");
        let to = at("2026-12-03T10:28:28.999999Z");
        // The first edge is inside; the line after `to` and the unparsable latency are not;
        // the audit line's `latency_ms` is not an access line.
        assert_eq!(
            latencies_ms(LOG.as_bytes(), from, to),
            vec![0.737592, 0.025267]
        );
        let all = latencies_ms(
            LOG.as_bytes(),
            SystemTime::UNIX_EPOCH,
            to + Duration::from_secs(1),
        );
        assert_eq!(all, vec![26.446363, 0.737592, 0.025267, 0.01314]);
        assert!(latencies_ms(LOG.as_bytes(), to, from).is_empty());
        assert!(latencies_ms(&b""[..], SystemTime::UNIX_EPOCH, to).is_empty());
        // A line that is not UTF-8 is skipped, and the lines after it still count.
        let mut bytes =
            b"2026-12-03T10:28:28.9Z \xff cxauth_server::context: request latency_ms=5\n".to_vec();
        bytes.extend_from_slice(LOG.as_bytes());
        assert_eq!(latencies_ms(&bytes[..], from, to), vec![0.737592, 0.025267]);
    }

    #[test]
    fn quantiles_follow_the_generator_rule() {
        let mut v: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 101.0);
        assert_eq!(quantile(&mut v, 0.99), 198.0);
        assert_eq!(quantile(&mut v, 1.0), 200.0);
        assert!(quantile(&mut [], 0.99).is_nan());
    }
}
