//! The text log format of `cxauth serve`, written without the colour machinery when there are
//! no colours.
//!
//! `tracing-subscriber`'s stock text format styles every piece of a line (level, span names,
//! braces, colons, target, each field name and `=`) through `nu_ansi_term`, and does so even when
//! colours are off: each piece is then formatted through an empty style, one `fmt::write` call
//! each. That was ~4.7k of a `/healthz` answer's ~54k instructions (callgrind), for the
//! access-log line and its span. A server's log goes to a file or a pipe, so colours are off
//! where it matters.
//!
//! [`PlainLine`] and [`PlainFields`] write the same bytes as the stock format with the pieces
//! written directly, and hand anything else back to the stock code: a writer with colours on
//! (a terminal), the `message` field (which the stock code escapes against terminal injection),
//! errors (with their source chains), raw identifiers and `log.` fields. A test holds the two
//! formats byte for byte equal on generated events. The timestamp's text up to the seconds is
//! made by the stock code once a second per thread ([`write_timestamp`]).

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Format, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The stock full text format's event line (timestamp, level, span scope, target, fields),
/// written directly when the writer has no colours; see the module documentation.
#[derive(Debug, Default)]
pub struct PlainLine {
    /// The stock format, for writers with colours.
    stock: Format,
}

impl<S, N> FormatEvent<S, N> for PlainLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return self.stock.format_event(ctx, writer, event);
        }
        if write_timestamp(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        let meta = event.metadata();
        writer.write_str(match *meta.level() {
            tracing::Level::TRACE => " TRACE ",
            tracing::Level::DEBUG => " DEBUG ",
            tracing::Level::INFO => "  INFO ",
            tracing::Level::WARN => "  WARN ",
            tracing::Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(&fields.fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// Writes the stock timestamp (`2026-12-02T14:33:01.123456Z`: UTC, microseconds). The text up
/// to the seconds changes once a second, so each thread keeps it, made by the stock code, and
/// writes only the microseconds itself: formatting a whole timestamp through `fmt` was ~2k
/// instructions of every line (callgrind).
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
        return SystemTime.format_time(writer);
    };
    write_timestamp_at(writer, now, |w| SystemTime.format_time(w))
}

/// [`write_timestamp`] for the time `now` (since the epoch, read just before), with `stock`
/// writing the stock text of the time it reads itself (a separate function so that tests can
/// give it a clock that has moved on).
fn write_timestamp_at(
    writer: &mut Writer<'_>,
    now: std::time::Duration,
    stock: impl Fn(&mut Writer<'_>) -> fmt::Result,
) -> fmt::Result {
    use std::cell::RefCell;
    thread_local! {
        /// A second since the epoch, and the stock text of it up to its `.`.
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let secs = now.as_secs();
    let prefix = SECOND.with(|cell| -> Option<fmt::Result> {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            let mut text = String::with_capacity(32);
            stock(&mut Writer::new(&mut text)).ok()?;
            // The stock text ends in `SS.uuuuuuZ`. Its clock was read after ours: in the same
            // second unless a second began between the two reads, and then it is not kept.
            let cut = text.len().checked_sub(7)?;
            let second = text.get(cut.checked_sub(3)?..cut - 1)?;
            if !text[..cut].ends_with('.') || second.parse::<u64>().ok()? != secs % 60 {
                return None;
            }
            text.truncate(cut);
            *cell = (secs, text);
        }
        Some(writer.write_str(&cell.1))
    });
    match prefix {
        Some(written) => written?,
        None => return stock(writer),
    }
    let mut micros = now.subsec_micros();
    let mut digits = *b"000000Z";
    for d in digits[..6].iter_mut().rev() {
        *d += (micros % 10) as u8;
        micros /= 10;
    }
    writer.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
}

/// The stock field format (`message` first, then ` name=value` pairs in `Debug` form), written
/// directly when the writer has no colours; see the module documentation.
#[derive(Debug, Default)]
pub struct PlainFields {
    /// The stock format, for writers with colours.
    stock: DefaultFields,
}

impl<'writer> FormatFields<'writer> for PlainFields {
    /// Formats into a scratch string of the thread and writes that once. A span's fields are
    /// formatted into a new, empty `String` (its `FormattedFields`): written piece by piece it
    /// grew 8, 16, 32, 64 bytes, a reallocation each, on every request's span (~1.3k
    /// instructions of a `/healthz` answer, callgrind); written at once it is allocated once, at
    /// its size.
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        use std::cell::RefCell;
        thread_local! {
            static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
        }
        /// Beyond this the scratch string is dropped after use, so that one huge field does not
        /// stay allocated on every thread.
        const KEEP: usize = 4096;
        if writer.has_ansi_escapes() {
            return self.stock.format_fields(writer, fields);
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                let formatted = plain_fields(Writer::new(&mut *scratch), fields);
                let written = writer.write_str(&scratch);
                if scratch.capacity() > KEEP {
                    *scratch = String::new();
                }
                formatted.and(written)
            }
            // Entered again on this thread: write directly. (`tracing` drops an event
            // dispatched while a dispatch is running on the thread, so this is defensive.)
            Err(_) => plain_fields(writer, fields),
        })
    }
}

/// Writes `fields` as the stock field format does without colours.
fn plain_fields<R: RecordFields>(writer: Writer<'_>, fields: R) -> fmt::Result {
    let mut visitor = PlainVisitor {
        writer,
        is_empty: true,
        result: Ok(()),
    };
    fields.record(&mut visitor);
    visitor.result
}

/// Writes fields as [`DefaultVisitor`] does without colours, handing it the fields it treats
/// specially.
struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// No field written yet: the next one needs no leading space.
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Lets the stock visitor write one field, where it is special.
    fn stock(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut stock = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut stock);
        self.result = stock.finish();
        // The stock visitor writes every field but `log.` ones (the `tracing-log` metadata).
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    /// Writes ` name=text`, where `text` is what `{value:?}` writes, made without `fmt`'s
    /// machinery; fields the stock visitor treats specially go to [`Visit::record_debug`].
    fn record_plain(&mut self, field: &Field, text: &str, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || special(name) {
            return self.record_debug(field, value);
        }
        self.write_field(name, |w| w.write_str(text));
    }

    /// Writes ` name=` (no space before the first field) and then the value, by `value`.
    fn write_field(&mut self, name: &str, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if !self.is_empty {
            self.result = self.writer.write_char(' ');
        }
        self.is_empty = false;
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='))
            .and_then(|()| value(&mut self.writer));
    }
}

/// A field the stock visitor writes in its own way: the message, raw identifiers (`r#type`),
/// `tracing-log`'s metadata.
fn special(name: &str) -> bool {
    name == "message" || name.starts_with("r#") || name.starts_with("log.")
}

/// What `{x:?}` writes for `x`, where ryu is sure to write the same; `None` elsewhere, and the
/// caller uses `{x:?}`. Every request logs `latency_ms` as an `f64`, and `{:?}` of an `f64` was
/// ~1k instructions of a `/healthz` answer (callgrind).
///
/// Both write the shortest digits that read back as `x`, as plain decimals (`0.25`, `12.0`)
/// from 1e-4 up to 1e15. Where two digit strings of that length are equally close to `x` the
/// two may choose differently (`33320570484019.812` and `…813`, found by the test below); that
/// cannot happen with 15 significant digits or fewer, since no two such decimals read back as
/// the same `f64`. So: finite, in that range, and at most 15 significant digits.
fn plain_f64(x: f64, buf: &mut ryu::Buffer) -> Option<&str> {
    if !(x.is_finite() && (1e-4..1e15).contains(&x.abs())) {
        return None;
    }
    let text = buf.format_finite(x);
    let digits = text
        .trim_start_matches(['-', '0', '.'])
        .trim_end_matches(['0', '.']);
    let significant = digits.bytes().filter(u8::is_ascii_digit).count();
    (significant <= 15).then_some(text)
}

impl Visit for PlainVisitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_plain(field, itoa::Buffer::new().format(value), &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_plain(field, itoa::Buffer::new().format(value), &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match plain_f64(value, &mut ryu::Buffer::new()) {
            Some(text) => self.record_plain(field, text, &value),
            None => self.record_debug(field, &value),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if self.result.is_ok() {
                self.stock(field, |v| v.record_str(field, value));
            }
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() {
            self.stock(field, |v| v.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if special(name) {
            self.stock(field, |v| v.record_debug(field, value));
            return;
        }
        self.write_field(name, |w| write!(w, "{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// A shared in-memory log.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        /// The lines, each without its timestamp (the two subscribers read the clock apart).
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().expect("buffer").clone())
                .expect("utf-8")
                .lines()
                .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_owned())
                .collect()
        }
    }

    /// What `init_logging` builds, with and without [`PlainLine`] and [`PlainFields`].
    fn both(ansi: bool, log: impl Fn()) -> (Vec<String>, Vec<String>) {
        let (stock, plain) = (Buffer::default(), Buffer::default());
        let stock_sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(ansi)
            .with_writer(stock.clone())
            .finish();
        tracing::subscriber::with_default(stock_sub, &log);
        let plain_sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(ansi)
            .fmt_fields(PlainFields::default())
            .event_format(PlainLine::default())
            .with_writer(plain.clone())
            .finish();
        tracing::subscriber::with_default(plain_sub, &log);
        (stock.lines(), plain.lines())
    }

    /// An error with a source, whose messages carry text to escape.
    #[derive(Debug)]
    struct Outer(String, Inner);

    #[derive(Debug)]
    struct Inner;

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "outer {}", self.0)
        }
    }

    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner \x1b[31m")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    impl std::error::Error for Inner {}

    /// A value whose `Debug` logs an event of its own while it is being formatted.
    struct Chatty;

    impl fmt::Debug for Chatty {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            tracing::info!(inner = 7, "logged while formatting");
            f.write_str("chatty")
        }
    }

    /// A field whose `Debug` logs while it is formatted changes nothing: `tracing` drops an
    /// event dispatched from inside a dispatch on the same thread (so the scratch string's
    /// fallback for re-entry is defensive), and the lines are the stock ones.
    #[test]
    fn a_field_that_logs_while_it_is_formatted_is_written_as_the_stock_one() {
        let (stock, plain) = both(false, || {
            let span = tracing::info_span!("outer", v = ?Chatty, after = 1);
            span.in_scope(|| tracing::info!(w = ?Chatty, after = 2, "event"));
        });
        assert_eq!(stock, plain);
        assert_eq!(
            plain,
            [" INFO outer{v=chatty after=1}: cxauth::log_format::tests: event w=chatty after=2"]
        );
    }

    /// The lines the server writes: the access log in its request span, with `user_id` recorded
    /// later, a nested span, and the special fields.
    fn server_like(text: &str, n: i64, x: f64, flag: bool) {
        let request = tracing::info_span!(
            "request",
            id = %"5f0c",
            method = %"GET",
            path = %text,
            user_id = tracing::field::Empty
        );
        let _r = request.enter();
        tracing::info!(status = 200u16, latency_ms = x, "request");
        request.record("user_id", n);
        tracing::warn!(status = 503u16, latency_ms = x, "request");
        {
            let inner = tracing::debug_span!("authenticate", via = "api_token", r#type = text);
            let _i = inner.enter();
            tracing::debug!(flag, text, "checked {text} {n}");
            tracing::error!(error = &Outer(text.to_owned(), Inner) as &dyn std::error::Error);
            let empty = tracing::trace_span!("empty");
            let _e = empty.enter();
            tracing::trace!(message = text, n);
            tracing::info!(r#type = ?text, "log.target" = "x", %x, ?flag);
        }
        tracing::info!("no fields at all");
        tracing::info!(a = 1, b = text);
    }

    #[test]
    fn outside_any_span_and_with_colours_the_lines_are_the_same() {
        let (stock, plain) = both(false, || tracing::info!(k = "v", "top level"));
        assert_eq!(stock, plain);
        assert_eq!(
            plain,
            [" INFO cxauth::log_format::tests: top level k=\"v\""]
        );
        for ansi in [false, true] {
            let (stock, plain) = both(ansi, || server_like("/healthz", 7, 0.25, true));
            assert_eq!(stock.len(), 8, "{stock:#?}");
            assert_eq!(stock, plain);
        }
    }

    /// Each timestamp lies between two stock ones read just before and after it, in the same
    /// layout, across at least one change of second (the kept text is replaced).
    #[test]
    fn timestamps_are_the_stock_ones() {
        let stock = || {
            let mut t = String::new();
            SystemTime
                .format_time(&mut Writer::new(&mut t))
                .expect("stock");
            t
        };
        let start = std::time::Instant::now();
        let mut seconds = std::collections::HashSet::new();
        while seconds.len() < 2 && start.elapsed() < std::time::Duration::from_secs(3) {
            let before = stock();
            let mut ours = String::new();
            write_timestamp(&mut Writer::new(&mut ours)).expect("ours");
            let after = stock();
            assert_eq!(ours.len(), before.len(), "{ours} {before}");
            assert!(before <= ours && ours <= after, "{before} {ours} {after}");
            assert!(
                ours.ends_with('Z') && ours.as_bytes()[ours.len() - 8] == b'.',
                "{ours}"
            );
            seconds.insert(ours[..ours.len() - 8].to_owned());
        }
        assert!(seconds.len() >= 2, "{seconds:?}");
    }

    /// When a second begins between our clock read and the stock one, the stock text (of the
    /// next second) is neither used as our prefix nor kept: the line gets the stock timestamp
    /// whole, and the next line of our second takes its prefix afresh.
    #[test]
    fn a_second_that_begins_between_the_two_reads_is_not_kept() {
        use std::cell::Cell;
        use std::time::Duration;
        let at = |now: Duration, stock_text: &'static str, calls: &Cell<u32>| {
            let mut out = String::new();
            write_timestamp_at(&mut Writer::new(&mut out), now, |w| {
                calls.set(calls.get() + 1);
                w.write_str(stock_text)
            })
            .expect("timestamp");
            out
        };
        // 2026-12-02T14:33:59Z and the second after it.
        let s59 = Duration::from_secs(1_796_222_039);
        let calls = Cell::new(0);
        // Our clock at :59.999999, the stock one already at :00 of the next minute.
        let line = at(
            s59 + Duration::from_micros(999_999),
            "2026-12-02T14:34:00.000002Z",
            &calls,
        );
        assert_eq!(line, "2026-12-02T14:34:00.000002Z", "the stock text, whole");
        // Not kept: the next line of :59 asks the stock code again and keeps its prefix.
        let line = at(
            s59 + Duration::from_micros(999_999),
            "2026-12-02T14:33:59.999999Z",
            &calls,
        );
        assert_eq!(line, "2026-12-02T14:33:59.999999Z");
        assert_eq!(
            calls.get(),
            3,
            "twice for the first line (the refused prefix, then the fallback), once for the second"
        );
        let line = at(s59 + Duration::from_micros(5), "unused", &calls);
        assert_eq!(
            line, "2026-12-02T14:33:59.000005Z",
            "the kept prefix, our micros"
        );
        assert_eq!(calls.get(), 3, "the kept prefix served the third line");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Byte for byte the stock format, whatever the values: control characters, quotes,
        /// unicode, terminal escapes, braces.
        #[test]
        fn plain_lines_are_the_stock_lines(
            text in "(.|\x1b|\x07|\u{9b}|\"|\\{|\\}|=| ){0,24}",
            n in any::<i64>(),
            x in any::<f64>(),
            flag in any::<bool>(),
        ) {
            let (stock, plain) = both(false, || server_like(&text, n, x, flag));
            prop_assert_eq!(stock, plain);
        }

        /// The same with latencies as requests have them, which `any::<f64>()` rarely draws.
        #[test]
        fn plain_lines_are_the_stock_lines_for_latencies(
            x in 0.0f64..100_000.0,
            n in any::<u32>(),
        ) {
            let (stock, plain) = both(false, || server_like("/healthz", i64::from(n), x, true));
            prop_assert_eq!(stock, plain);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        /// `plain_f64` writes what `{:?}` writes, across and just outside its range.
        #[test]
        fn plain_f64_is_debug(
            mantissa in 1.0f64..10.0,
            exp in -7i32..18,
            negative in any::<bool>(),
            bits in any::<u64>(),
        ) {
            let scaled = mantissa * 10f64.powi(exp);
            let x = if negative { -scaled } else { scaled };
            for x in [x, f64::from_bits(bits), x.round(), (x * 1e3).round() / 1e3] {
                let mut buf = ryu::Buffer::new();
                if let Some(text) = plain_f64(x, &mut buf) {
                    prop_assert_eq!(text, format!("{x:?}"));
                }
            }
        }
    }

    #[test]
    fn plain_f64_covers_the_decimal_range_and_leaves_the_rest_to_debug() {
        let mut buf = ryu::Buffer::new();
        for (x, want) in [
            (0.0001, Some("0.0001")),
            (0.25, Some("0.25")),
            (12.0, Some("12.0")),
            (-3.5, Some("-3.5")),
            (999_999_999_999_999.0, Some("999999999999999.0")),
            (0.084539, Some("0.084539")),
            (123_456.789_012_345, Some("123456.789012345")),
            // 16 and 17 significant digits: left to `{:?}`.
            (0.1 + 0.2, None),
            (33_320_570_484_019.812, None),
            (0.000_099, None),
            (1e15, None),
            (0.0, None),
            (-0.0, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
        ] {
            assert_eq!(plain_f64(x, &mut buf), want, "{x:?}");
        }
    }
}
