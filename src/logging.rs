//! Log lines in the original's format: `2025-01-10 10:30:00 - task_executor - INFO - message`.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
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
        write!(w, "{now} - {LOGGER_NAME} - {level} - ")?;
        // Lines logged while handling a request carry its id, as the original's log lines.
        if let Some(rid) = ctx
            .lookup_current()
            .and_then(|span| crate::http::request_id::for_span(span.id().into_u64()))
        {
            write!(w, "[{rid}] ")?;
        }
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Installs the global subscriber; `level` is a level name or a full filter directive; `json`
/// (`LOG_FORMAT=json`) gives one JSON object per line for log pipelines.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_new(level.to_lowercase())
        .or_else(|_| EnvFilter::try_new("info"))
        .unwrap_or_default()
        .add_directive("hyper=warn".parse().unwrap_or_default())
        .add_directive("reqwest=warn".parse().unwrap_or_default());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.event_format(SeedFormat).try_init()
    };
    std::panic::set_hook(Box::new(|info| {
        // One line, no backtrace printing inside an actor's task (research §1.8 pitfall 1).
        tracing::error!("panic: {info}");
    }));
}
