//! Log lines in the original's format: `2025-01-10 10:30:00 - task_executor - INFO - message`.
//!
//! Text lines are safe to read and to parse: control characters in anything logged (task
//! strings included) are escaped, so a task cannot forge a line (CR/LF) or a terminal sequence
//! (ESC); colour is used only on a terminal and never when `NO_COLOR` is set.
//!
//! Logging never waits for the reader of standard output: lines are masked where they are
//! logged, then queued for a writer thread of their own (tracing-appender's non-blocking
//! writer), which writes whatever has queued up in one go. A log collector that stops reading
//! fills the pipe and then the queue; beyond [`QUEUED_LINES`] new lines are dropped and counted
//! (`executor_log_lines_dropped_total` in `/metrics`), and requests and tasks go on.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Logger name shown in every line, as the original's.
const LOGGER_NAME: &str = "task_executor";

/// Formats events like Python's `%(asctime)s - %(name)s - %(levelname)s - %(message)s`.
struct SeedFormat;

impl<S, N> FormatEvent<S, N> for SeedFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            tracing::Level::DEBUG | tracing::Level::TRACE => "DEBUG",
        };
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        let (on, off) = match (w.has_ansi_escapes(), *event.metadata().level()) {
            (true, tracing::Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
            (true, tracing::Level::WARN) => ("\x1b[33m", "\x1b[0m"),
            _ => ("", ""),
        };
        write!(w, "{now} - {LOGGER_NAME} - {on}{level}{off} - ")?;
        // Lines logged while handling a request carry its id, as the original's log lines.
        if let Some(rid) = ctx
            .lookup_current()
            .and_then(|span| crate::http::request_id::for_span(span.id().into_u64()))
        {
            write!(w, "[{rid}] ")?;
        }
        // Fields are rendered plain, then escaped: the line break below is the only one.
        let mut fields = String::new();
        ctx.format_fields(Writer::new(&mut fields), event)?;
        write_escaped(&mut w, &fields)?;
        writeln!(w)
    }
}

/// Lines that may wait for the writer thread (about 4 MiB at typical line lengths); beyond, new
/// lines are dropped and counted, so a stalled log pipe costs bounded memory and no waiting.
pub const QUEUED_LINES: usize = 16_384;

/// Bytes the writer thread gathers before a `write` to standard output.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Counts the lines dropped because the queue was full (see [`dropped_lines`]).
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because standard output was not read fast enough (for `/metrics`).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// How long exiting waits for the queued lines to be written.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Flushes the queued lines when dropped: the binary keeps it until its last line is logged.
#[must_use = "dropping it stops the log writer"]
pub struct Flush(Option<WorkerGuard>);

impl Drop for Flush {
    /// Waits at most [`FLUSH_TIMEOUT`]: with stdout stalled and the queue full, the guard's own
    /// drop reports the failure on stdout and would block there, so the process never exited.
    fn drop(&mut self) {
        let Some(guard) = self.0.take() else { return };
        let (done, finished) = std::sync::mpsc::channel();
        let flush = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                drop(guard);
                let _ = done.send(());
            });
        if flush.is_ok() {
            let _ = finished.recv_timeout(FLUSH_TIMEOUT);
        }
    }
}

/// The queue in front of `sink`, written by a thread of its own: lossy beyond `limit` lines.
/// The writer thread is a helper thread (`priority::mark_helper_thread`): it is created while
/// the calling thread runs as one, since a new thread inherits its creator's scheduling policy
/// and tracing-appender has no hook in its own thread.
fn queue<W: Write + Send + 'static>(sink: W, limit: usize) -> (NonBlocking, WorkerGuard) {
    actors::agent::priority::as_helper(|| queue_here(sink, limit))
}

/// [`queue`], created from the calling thread as it is.
fn queue_here<W: Write + Send + 'static>(sink: W, limit: usize) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(limit)
        .thread_name("log-writer")
        .finish(sink)
}

/// What the formatter writes to: every log line — text or JSON — has the secret values the
/// executor knows (its own credentials, each task's keys and tokens) and the secret patterns
/// replaced by `***` (issue: security), then goes to the queue. Masking happens here, on the
/// logging thread, and not on the writer thread: a task's secrets are forgotten when the task
/// ends, maybe before a queued line of it would be written. The formatter hands over one whole
/// line per write, so a secret is never split between two writes.
#[derive(Clone)]
struct Masking(NonBlocking);

impl Write for Masking {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let masked = actors::mask::mask_text(&text);
        self.0.write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Masking {
    type Writer = Masking;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes `text` with every control character escaped (`\n`, `\r`, `\t`, `\u{1b}`, ...).
fn write_escaped(w: &mut Writer<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(w, "{}", c.escape_default())?;
        } else {
            w.write_char(c)?;
        }
    }
    Ok(())
}

/// What the OpenTelemetry layer sees: the executor's own spans and events at info or above
/// (never the HTTP clients', so exporting cannot trace itself), probe requests left out.
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    let ours = meta.target().starts_with("executor") || meta.target().starts_with("actors");
    ours && *meta.level() <= tracing::Level::INFO
        && meta.name() != crate::http::request_id::PROBE_SPAN
}

/// Whether text lines may carry colour: only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>: any non-empty value).
fn colour_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber; `level` is a level name or a full filter directive; `json`
/// (`LOG_FORMAT=json`) gives one JSON object per line for log pipelines; `otel` adds the
/// OpenTelemetry layer (its own filter: the executor's spans at info, whatever `LOG_LEVEL`).
/// Returns the writer's [`Flush`]: keep it until the last line.
pub fn init(
    level: &str,
    json: bool,
    otel: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) -> Flush {
    let filter = EnvFilter::try_new(level.to_lowercase())
        .or_else(|_| EnvFilter::try_new("info"))
        .unwrap_or_default()
        .add_directive("hyper=warn".parse().unwrap_or_default())
        .add_directive("reqwest=warn".parse().unwrap_or_default())
        // warp's own per-request line duplicates the executor's `response: ...` line.
        .add_directive("warp::filters::trace=off".parse().unwrap_or_default());
    let stdout = std::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, std::io::stdout());
    let (writer, guard) = queue(stdout, QUEUED_LINES);
    let _ = DROPPED.set(writer.error_counter());
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(colour_wanted())
        .with_writer(Masking(writer));
    let lines = if json {
        text.json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed()
    } else {
        text.event_format(SeedFormat).with_filter(filter).boxed()
    };
    let otel = otel.map(|p| crate::telemetry::layer(p).with_filter(filter_fn(exported)));
    let _ = tracing_subscriber::registry()
        .with(lines)
        .with(otel)
        .try_init();
    std::panic::set_hook(Box::new(|info| {
        // One line, no backtrace printing inside an actor's task (research §1.8 pitfall 1).
        tracing::error!("panic: {info}");
    }));
    Flush(Some(guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_text_is_kept() {
        let mut out = String::new();
        let mut w = Writer::new(&mut out);
        write_escaped(&mut w, "a\r\nb\u{1b}[2Kc\tü").unwrap();
        assert_eq!(out, "a\\r\\nb\\u{1b}[2Kc\\tü");
    }

    /// A sink that takes nothing until `release` is dropped, as a pipe nobody reads.
    struct Stalled {
        release: std::sync::mpsc::Receiver<()>,
        out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.release.recv();
            self.out.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_never_blocks_the_logger_and_drops_beyond_the_queue() {
        let (release, stalled) = std::sync::mpsc::channel::<()>();
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Stalled {
            release: stalled,
            out: out.clone(),
        };
        let (writer, guard) = queue(sink, 4);
        let counter = writer.error_counter();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut w = Masking(writer);
            for n in 0..100 {
                w.write_all(format!("line {n}\n").as_bytes()).unwrap();
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("100 lines logged without waiting for the sink");
        let dropped = counter.dropped_lines();
        assert!(
            (90..100).contains(&dropped),
            "beyond the queue's 4 lines (and the one being written) lines are dropped: {dropped}"
        );
        drop(release);
        drop(Flush(Some(guard)));
        // The guard's drop may return before the writer is done (it waits a bounded time).
        let written = || String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while written().lines().count() < 100 - dropped && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let out = written();
        assert!(out.starts_with("line 0\nline 1\n"), "{out}");
        assert_eq!(out.lines().count(), 100 - dropped);
    }
}
