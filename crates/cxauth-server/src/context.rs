//! The outermost middleware: request id, log span, one log line per request, the JSON body
//! of every error response, and the headers of [`crate::security_headers`].
//!
//! Paths are logged with token segments redacted (`/api/auth/logout/{token}`,
//! `…/admin/token/{token}`), and query strings are never logged: on auth endpoints they carry
//! passwords.

use crate::error::ErrorReport;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use cxauth_core::clock::SharedClock;
use cxauth_proto::ErrorBody;
use std::borrow::Cow;
use std::convert::Infallible;
use tracing::Instrument as _;

/// Header carrying the request id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// Request id accepted from a client (or a proxy) only if it is short and plain.
fn incoming_request_id(req: &Request) -> Option<String> {
    let v = req.headers().get(REQUEST_ID)?.to_str().ok()?;
    (!v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    .then(|| v.to_owned())
}

/// A fresh request id: 32 lowercase hex digits in the layout of a random (version 4) UUID, as
/// `Uuid::new_v4` made them, but without its `getrandom` system call on every request. Ids are
/// unique within the process (a bijective mix of a counter) and across processes with high
/// probability (the counter starts from random bits drawn once). They are labels, not secrets:
/// a client may send its own.
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let &(high, start) = SEED.get_or_init(|| {
        let r = uuid::Uuid::new_v4().as_u64_pair();
        (r.0, r.1)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // SplitMix64's finaliser: a bijection, so distinct counters give distinct ids.
    let mut z = start.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // The UUID layout overwrites the version nibble (bits 15..12 of the first half) and the
    // variant bits (63..62 of the second): rotated by 32, each bit of `z` also lands where
    // nothing is overwritten, so the id stays unique.
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(high ^ z.rotate_left(32)).to_be_bytes());
    bytes[8..].copy_from_slice(&z.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .simple()
        .to_string()
}

/// Where `segment` (which starts with `/`) first occurs in `path`: the same answer as
/// `path.find(segment)`, found by trying only the slashes. Every request's path is checked, and
/// `str::find` prepares a two-way searcher for each pattern first (~0.4% of a `/healthz`
/// answer's CPU, perf); paths hold a handful of slashes. A plain loop over the bytes, not
/// `match_indices('/')`: its searcher calls `memchr` once per slash, and the two searches of
/// `/voice/api/v1/admin/accounts` took ~1,700 instructions with it against ~600 with this loop
/// (callgrind, `loggable_path` whole, including the copy it no longer makes). A `/` byte
/// is always a whole character in UTF-8, so every index found is a character boundary.
fn find_segment(path: &str, segment: &str) -> Option<usize> {
    let bytes = path.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b'/' && bytes[i..].starts_with(segment.as_bytes()))
}

/// The path as it may be logged and echoed: token segments replaced, length bounded. Borrowed
/// when nothing needs replacing, as for nearly every request: no copy of the path is made.
pub fn loggable_path(path: &str) -> Cow<'_, str> {
    const REDACTED: &str = "[redacted]";
    let redacted = if let Some(i) = find_segment(path, "/api/auth/logout/") {
        Cow::Owned(format!("{}/api/auth/logout/{REDACTED}", &path[..i]))
    } else if let Some(i) = find_segment(path, "/admin/token/") {
        Cow::Owned(format!("{}/admin/token/{REDACTED}", &path[..i]))
    } else {
        Cow::Borrowed(path)
    };
    if redacted.len() > 200 {
        let mut end = 200;
        while !redacted.is_char_boundary(end) {
            end -= 1;
        }
        Cow::Owned(format!("{}…", &redacted[..end]))
    } else {
        redacted
    }
}

/// The request's id, left in the request's extensions for handlers (the audit trail).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The layer of [`RequestContext`]: see the module documentation.
///
/// A tower layer of its own rather than `axum::middleware::from_fn`: `from_fn` boxes the rest of
/// the stack into a `Next` (an allocation and a clone through a vtable per request) and runs
/// extractors for its arguments; here the inner service is cloned and called directly.
#[derive(Clone)]
pub struct RequestContextLayer {
    clock: SharedClock,
}

impl RequestContextLayer {
    /// Error bodies are stamped with `clock`'s time.
    pub fn new(clock: SharedClock) -> Self {
        RequestContextLayer { clock }
    }
}

impl<S> tower::Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            clock: self.clock.clone(),
        }
    }
}

/// See the module documentation and [`RequestContextLayer`].
#[derive(Clone)]
pub struct RequestContext<S> {
    inner: S,
    clock: SharedClock,
}

impl<S> tower::Service<Request> for RequestContext<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, Infallible>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let policy = crate::security_headers::Policy::of(req.uri().path());
        let request_id = incoming_request_id(&req).unwrap_or_else(new_request_id);
        req.extensions_mut().insert(RequestId(request_id.clone()));
        let method = req.method().clone();
        // The URI itself is kept for the error body (a reference count: hyper's URI shares the
        // request head's buffer); the span formats the loggable path now.
        let uri = req.uri().clone();
        let path = loggable_path(uri.path());
        // The route pattern, not the path: bounded label values, and no token segments.
        let route = crate::metrics::enabled().then(|| {
            req.extensions()
                .get::<axum::extract::MatchedPath>()
                .cloned()
        });
        // `user_id` is filled in by the `Caller` extractor once the credential is checked.
        let span = tracing::info_span!(
            "request",
            id = %request_id,
            method = %method,
            path = %path,
            user_id = tracing::field::Empty
        );
        let started = std::time::Instant::now();
        // The clone that was made ready is the one called (tower's contract), directly: a
        // `oneshot` would ask it for readiness a second time. A fresh clone is left for the
        // next request.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let cx = Epilogue {
            clock: self.clock.clone(),
            policy,
            request_id,
            method,
            uri,
            route,
            started,
        };
        // One instrumented future for the whole request: the inner service is called, and the
        // log line written, inside it. The span is entered once per poll and never cloned;
        // entering it apart for the call and for the line, and a clone for the inner future,
        // cost ~1,200 instructions of a `/healthz` answer's ~30,300 (callgrind).
        Box::pin(
            async move {
                let res = match ready.call(req).await {
                    Ok(res) => res,
                    Err(never) => match never {},
                };
                Ok(cx.finish(res))
            }
            .instrument(span),
        )
    }
}

/// What [`RequestContext`] learnt of a request before passing it on, to finish its response
/// and log it.
struct Epilogue {
    clock: SharedClock,
    policy: crate::security_headers::Policy,
    request_id: String,
    method: axum::http::Method,
    uri: axum::http::Uri,
    route: Option<Option<axum::extract::MatchedPath>>,
    started: std::time::Instant,
}

impl Epilogue {
    /// The error body, the request id and security headers, the metrics and the log line
    /// (logged in the request's span: `finish` runs inside the future it instruments).
    fn finish(self, mut res: Response) -> Response {
        let Epilogue {
            clock,
            policy,
            request_id,
            method,
            uri,
            route,
            started,
        } = self;
        let status = res.status();
        let own_body = res.extensions().get::<crate::error::OwnBody>().is_some();
        if !own_body
            && (status.as_u16() >= 400 && status != StatusCode::UNAUTHORIZED
                || res.extensions().get::<ErrorReport>().is_some())
        {
            let report = res
                .extensions_mut()
                .remove::<ErrorReport>()
                .unwrap_or_else(|| ErrorReport::for_status(status));
            let body = ErrorBody {
                error_code: report.code.to_owned(),
                general_message: report.general.to_owned(),
                details: report.details,
                request_uri: format!("{} - {method}", loggable_path(uri.path())),
                timestamp: clock.now_ms(),
                request_id: request_id.clone(),
            };
            let json = serde_json::to_vec(&body).unwrap_or_default();
            let headers = res.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.remove(header::CONTENT_LENGTH);
            if status == StatusCode::SERVICE_UNAVAILABLE
                && !headers.contains_key(header::RETRY_AFTER)
            {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            *res.body_mut() = Body::from(json);
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            res.headers_mut().insert(REQUEST_ID, v);
        }
        // Last, as the outermost middleware set them: they win over anything set inside.
        policy.apply(res.headers_mut());
        let took = started.elapsed();
        let elapsed = took.as_secs_f64();
        if let Some(route) = &route {
            let pattern = route
                .as_ref()
                .map_or("unmatched", axum::extract::MatchedPath::as_str);
            crate::metrics::record_request(pattern, &method, status, elapsed);
        }
        // Nanoseconds over 10^6, rounded once: the f64 nearest the exact milliseconds, whose
        // shortest digits are those milliseconds (`0.084539`), where `elapsed * 1000.0` rounds
        // twice and can log `0.08453899999999999`. The text log writes such short values
        // without `fmt`'s float formatting (`cxauth::log_format`). (Exact below 2^53 ns.)
        let latency_ms = took.as_nanos() as f64 / 1e6;
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), latency_ms, "request");
        } else {
            tracing::info!(status = status.as_u16(), latency_ms, "request");
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_segments_never_reach_the_log() {
        let t = "aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9";
        for p in [
            format!("/voice/api/v1/admin/token/{t}"),
            format!("/api/v1/admin/token/{t}"),
            "/api/auth/logout/abcDEF123".to_owned(),
        ] {
            let l = loggable_path(&p);
            assert!(l.ends_with("[redacted]"), "{l}");
            assert!(!l.contains("c2353445") && !l.contains("abcDEF"), "{l}");
        }
        assert_eq!(loggable_path("/healthz"), "/healthz");
        // Nothing to replace: the path itself, not a copy.
        assert!(matches!(
            loggable_path("/voice/api/v1/admin/accounts"),
            Cow::Borrowed(_)
        ));
        assert!(loggable_path(&"é".repeat(300)).len() <= 204);
    }

    proptest::proptest! {
        /// `find_segment` is `str::find` for patterns that start with a slash, on any path,
        /// including ones built from the pieces that matter (slashes, partial segments).
        #[test]
        fn find_segment_agrees_with_str_find(
            path in proptest::string::string_regex("(/|api|auth|logout|admin|token|é|x){0,12}").expect("regex"),
            any in ".{0,40}",
        ) {
            for segment in ["/api/auth/logout/", "/admin/token/", "/"] {
                proptest::prop_assert_eq!(find_segment(&path, segment), path.find(segment));
                proptest::prop_assert_eq!(find_segment(&any, segment), any.find(segment));
            }
        }
    }

    #[test]
    fn request_ids_keep_their_shape_and_never_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = new_request_id();
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
            assert_eq!(uuid.get_version_num(), 4, "{id}");
            assert!(seen.insert(id), "a repeated request id");
        }
    }
}
