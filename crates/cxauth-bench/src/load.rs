//! The load generator: N keep-alive HTTP/1.1 connections over loopback, each sending one request
//! at a time, either as fast as answers come (closed loop, for throughput) or on a fixed schedule
//! (open loop, for latency at a given load).
//!
//! Open-loop latency is measured from the time a request was *scheduled*, not sent, whenever the
//! connection was still waiting for its previous answer at that time, so a server that falls
//! behind is charged for the queue it builds (no coordinated omission). When the connection was
//! idle, it is measured from the moment its turn reached it: how late the pacer wakes up is the
//! load generator's business, not the server's.
//!
//! The open-loop schedule is kept by a pacer thread of its own, which sleeps to the next
//! request's instant (a high-resolution `nanosleep`) and hands every turn then due to its
//! connection. Pacing each connection with tokio's timer instead, as this did before, released
//! requests in bunches: the timer ticks once a millisecond, so at 15,000 requests a second some
//! fifteen were sent at once on every tick and queued behind each other in the server, and the
//! p99 of a server answering in 30 µs read as a millisecond or more. Waking for *each* request
//! costs the generator's core a wake-up and two context switches per request, which the
//! connections' own work then lacks: at ~45,000 requests a second the generator (pinned to one
//! core) used 69–74% of it, against 63% when the pacer sleeps at least [`PACER_TICK`] and then
//! hands out every turn due. A few requests then leave together, which costs the last of them
//! the server time of the others (tens of microseconds; the median did not move). The report's
//! `gen CPU %` column says how close the generator came to its limit.

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What one connection sends, and what it learns from each answer (a rotated refresh token).
pub trait Workload: Send + 'static {
    /// The next request.
    fn request(&mut self) -> Request<Full<Bytes>>;
    /// Sees each answer; the default ignores it.
    fn response(&mut self, _status: StatusCode, _body: &Bytes) {}
}

/// A workload that sends the same request again and again.
#[derive(Clone)]
pub struct Fixed {
    /// Method.
    pub method: hyper::Method,
    /// Path and query.
    pub path: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Bytes,
}

impl Fixed {
    /// A `GET path` with `headers`.
    pub fn get(path: &str, headers: Vec<(&'static str, String)>) -> Self {
        Fixed {
            method: hyper::Method::GET,
            path: path.to_owned(),
            headers,
            body: Bytes::new(),
        }
    }
}

impl Workload for Fixed {
    fn request(&mut self) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header("host", "127.0.0.1");
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        b.body(Full::new(self.body.clone()))
            .expect("benchmark requests are well formed")
    }
}

/// What a run measured.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Answers by status, for everything not 2xx.
    pub other_status: BTreeMap<u16, u64>,
    /// Connection or protocol failures.
    pub io_errors: u64,
    /// Latency of every recorded answer (2xx or not), in microseconds.
    pub latencies_us: Vec<u32>,
    /// How long recording lasted.
    pub elapsed: Duration,
}

impl Stats {
    /// 2xx answers per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of latency, in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        f64::from(self.latencies_us[quantile_index(self.latencies_us.len(), q)]) / 1000.0
    }

    /// Non-2xx answers and failures, summed.
    pub fn errors(&self) -> u64 {
        self.io_errors + self.other_status.values().sum::<u64>()
    }

    /// Adds `o`'s answers and latencies to these (not `elapsed`).
    pub fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        self.io_errors += o.io_errors;
        for (k, v) in o.other_status {
            *self.other_status.entry(k).or_default() += v;
        }
        self.latencies_us.extend(o.latencies_us);
    }
}

/// Where the `q` quantile (0..=1) sits among `len` sorted values (`len` > 0): the nearest rank.
/// One rule for the generator's latencies and the server's own (`crate::own_latency`).
pub fn quantile_index(len: usize, q: f64) -> usize {
    ((len - 1) as f64 * q).round() as usize
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Each connection sends its next request as soon as the previous one is answered.
    Closed,
    /// All connections together send `f64` requests per second, evenly spread.
    Open(f64),
}

/// Runs `workloads` (one connection each) against `addr` for `warmup + duration`, recording
/// only answers that complete after the warm-up.
pub async fn run<W: Workload>(
    addr: SocketAddr,
    workloads: Vec<W>,
    pace: Pace,
    warmup: Duration,
    duration: Duration,
) -> Stats {
    let start = Instant::now() + Duration::from_millis(20);
    let record_from = start + warmup;
    let end = record_from + duration;
    let mut tasks = Vec::new();
    let mut turns = Vec::new();
    for w in workloads {
        let turn = match pace {
            Pace::Closed => None,
            Pace::Open(_) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                turns.push(tx);
                Some(rx)
            }
        };
        tasks.push(tokio::spawn(connection(
            addr,
            w,
            turn,
            start,
            record_from,
            end,
        )));
    }
    let pacer = match pace {
        Pace::Closed => None,
        Pace::Open(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            Some(std::thread::spawn(move || {
                pace_turns(&turns, start, interval, end)
            }))
        }
    };
    let mut total = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            total.merge(s);
        } else {
            total.io_errors += 1;
        }
    }
    if let Some(p) = pacer {
        let _ = p.join();
    }
    total.elapsed = duration;
    total
}

/// The shortest sleep of the pacer: at most one wake-up per tick, whatever the rate (see the
/// module documentation).
pub const PACER_TICK: Duration = Duration::from_micros(100);

/// The pacer thread: request `k` is due at `start + k * interval` on connection `k mod n`; each
/// connection gets its turns, with their scheduled instants, in order, never before they are
/// due. It wakes at most once per [`PACER_TICK`] and then hands out every turn due by then.
/// Returns at `end`, which closes the channels and so ends the connections.
fn pace_turns(
    turns: &[tokio::sync::mpsc::UnboundedSender<Instant>],
    start: Instant,
    interval: Duration,
    end: Instant,
) {
    pace_turns_with(turns, start, interval, end, std::thread::sleep);
}

/// [`pace_turns`] with its sleep passed in, so that tests can count the wake-ups.
fn pace_turns_with(
    turns: &[tokio::sync::mpsc::UnboundedSender<Instant>],
    start: Instant,
    interval: Duration,
    end: Instant,
    mut sleep: impl FnMut(Duration),
) {
    let mut due = start;
    let mut k = 0usize;
    while due < end {
        let now = Instant::now();
        if due > now {
            sleep((due - now).max(PACER_TICK));
        }
        let now = Instant::now();
        while due <= now && due < end {
            // A connection that ended (it cannot connect) no longer takes turns.
            let _ = turns[k % turns.len()].send(due);
            k += 1;
            due = start + interval.mul_f64(k as f64);
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

async fn connection<W: Workload>(
    addr: SocketAddr,
    mut w: W,
    mut turns: Option<tokio::sync::mpsc::UnboundedReceiver<Instant>>,
    first: Instant,
    record_from: Instant,
    end: Instant,
) -> Stats {
    let mut stats = Stats::default();
    let mut sender = connect(addr).await;
    // When the previous answer came (the connection is idle from the start).
    let mut last_answer = first;
    tokio::time::sleep_until(first.into()).await;
    loop {
        // `scheduled` decides which requests are in the run; latency counts from `from` (see the
        // module's documentation).
        let (scheduled, from) = match turns.as_mut() {
            Some(turns) => {
                let Some(s) = turns.recv().await else {
                    break;
                };
                let from = if last_answer <= s { Instant::now() } else { s };
                (s, from)
            }
            None => {
                let now = Instant::now();
                (now, now)
            }
        };
        if scheduled >= end {
            break;
        }
        let Some(s) = sender.as_mut() else {
            stats.io_errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            sender = connect(addr).await;
            continue;
        };
        let answer = async {
            s.ready().await?;
            let res = s.send_request(w.request()).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        let done = Instant::now();
        last_answer = done;
        match answer {
            Ok((status, body)) => {
                w.response(status, &body);
                if done >= record_from && done <= end + Duration::from_secs(5) {
                    let us = done.duration_since(from).as_micros();
                    stats
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                    if status.is_success() {
                        stats.ok += 1;
                    } else {
                        *stats.other_status.entry(status.as_u16()).or_default() += 1;
                    }
                }
            }
            Err(_) => {
                if done >= record_from {
                    stats.io_errors += 1;
                }
                sender = connect(addr).await;
            }
        }
    }
    stats
}

/// One request on a fresh connection, for setup steps: status and body.
pub async fn once(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
    let mut s = connect(addr)
        .await
        .ok_or_else(|| anyhow::anyhow!("cannot connect to {addr}"))?;
    let res = s.send_request(req).await?;
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_hands_out_turns_in_order_round_robin_and_waits_for_each() {
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| tokio::sync::mpsc::unbounded_channel::<Instant>())
            .unzip();
        let start = Instant::now() + Duration::from_millis(5);
        let interval = Duration::from_micros(500);
        let end = start + Duration::from_millis(50);
        pace_turns(&txs, start, interval, end);
        // It slept to the last turn instead of handing them all out at once.
        assert!(Instant::now() >= start + interval.mul_f64(99.0));
        drop(txs);
        let mut turns = Vec::new();
        for (conn, rx) in rxs.iter_mut().enumerate() {
            while let Ok(due) = rx.try_recv() {
                turns.push((due, conn));
            }
        }
        turns.sort();
        assert_eq!(turns.len(), 100, "50 ms at one turn per 0.5 ms");
        for (k, (due, conn)) in turns.iter().enumerate() {
            assert_eq!(*conn, k % 3, "turn {k} went to the wrong connection");
            assert_eq!(*due, start + interval.mul_f64(k as f64));
        }
    }

    #[test]
    fn at_a_high_rate_the_pacer_wakes_once_a_tick_and_never_hands_a_turn_out_early() {
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..4)
            .map(|_| tokio::sync::mpsc::unbounded_channel::<Instant>())
            .unzip();
        // 200,000 turns a second: 20 per tick.
        let interval = Duration::from_micros(5);
        let start = Instant::now() + Duration::from_millis(5);
        let end = start + Duration::from_millis(50);
        // What was handed out so far, checked right after it was: nothing before it was due.
        let mut n = 0;
        let mut drain = |rxs: &mut Vec<tokio::sync::mpsc::UnboundedReceiver<Instant>>| {
            let now = Instant::now();
            for rx in rxs.iter_mut() {
                while let Ok(due) = rx.try_recv() {
                    assert!(due <= now, "a turn handed out {:?} early", due - now);
                    assert!(due < end);
                    n += 1;
                }
            }
        };
        let mut sleeps = Vec::new();
        pace_turns_with(&txs, start, interval, end, |d| {
            drain(&mut rxs);
            sleeps.push(d);
            std::thread::sleep(d);
        });
        drain(&mut rxs);
        // Never shorter than a tick, so at most one wake-up per tick (and one for the start).
        assert!(sleeps.iter().all(|d| *d >= PACER_TICK), "{sleeps:?}");
        assert!(
            sleeps.len() <= 1 + 50_000 / 100,
            "{} wake-ups",
            sleeps.len()
        );
        assert_eq!(n, 10_000, "50 ms at one turn per 5 µs");
    }
}
