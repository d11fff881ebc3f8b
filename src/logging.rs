//! Log lines in the original's format: `2025-01-10 10:30:00 - task_executor - INFO - message`.
//!
//! Text lines are safe to read and to parse: control characters in anything logged (task
//! strings included) are escaped, so a task cannot forge a line (CR/LF) or a terminal sequence
//! (ESC); colour is used only on a terminal and never when `NO_COLOR` is set.

use std::fmt;
use std::io::IsTerminal;

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

/// Standard output through the one masking pass (issue: security): every log line — text or
/// JSON — has the secret values the executor knows (its own credentials, each task's keys and
/// tokens) and the secret patterns replaced by `***` before it is written. The formatter hands
/// over one whole line per write, so a secret is never split between two writes.
struct MaskingStdout;

impl std::io::Write for MaskingStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let masked = actors::mask::mask_text(&text);
        std::io::stdout().lock().write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
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
pub fn init(level: &str, json: bool, otel: Option<&opentelemetry_sdk::trace::SdkTracerProvider>) {
    let filter = EnvFilter::try_new(level.to_lowercase())
        .or_else(|_| EnvFilter::try_new("info"))
        .unwrap_or_default()
        .add_directive("hyper=warn".parse().unwrap_or_default())
        .add_directive("reqwest=warn".parse().unwrap_or_default())
        // warp's own per-request line duplicates the executor's `response: ...` line.
        .add_directive("warp::filters::trace=off".parse().unwrap_or_default());
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(colour_wanted())
        .with_writer(|| MaskingStdout);
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
}
