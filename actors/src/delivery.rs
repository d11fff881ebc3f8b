//! One callback POST with retries: exponential backoff with jitter and a cap, retried on
//! connection errors and non-2xx/non-4xx answers; a 4xx is final; any 2xx counts as delivered.

use std::time::Duration;

use rand::Rng;

use std::sync::atomic::Ordering;

use crate::config::CallbackConfig;
use crate::metrics::METRICS;
use crate::payload::TraceContext;

/// Header carrying an event's position within its subtask, so a receiver can drop a duplicate
/// (after a crash between a delivery and its acknowledgement).
pub const SEQUENCE_HEADER: &str = "x-callback-sequence";

/// What one POST attempt came to.
enum Attempt {
    Delivered,
    Rejected(reqwest::StatusCode),
    Retry(String),
}

async fn attempt(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    seq: u64,
    trace: &TraceContext,
) -> Attempt {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header(SEQUENCE_HEADER, seq);
    if let Some(id) = &trace.request_id {
        req = req.header("x-request-id", id);
    }
    if let Some(tp) = &trace.traceparent {
        req = req.header("traceparent", tp);
    }
    let res = req.body(body.to_vec()).send().await;
    match res {
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) if r.status().is_client_error() => Attempt::Rejected(r.status()),
        Ok(r) => Attempt::Retry(format!("HTTP {}", r.status())),
        Err(e) => Attempt::Retry(without_url(&e)),
    }
}

/// reqwest errors print the URL; the callback URL may carry a token in its query.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<callback url>");
    }
    s
}

/// Delivers one event; returns when it was delivered (true), rejected, or retries ran out.
pub async fn deliver(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    seq: u64,
    trace: &TraceContext,
    cfg: &CallbackConfig,
    task_id: i64,
) -> bool {
    use tracing::Instrument as _;
    let span = crate::trace::callback_span(&trace.span, task_id, seq);
    deliver_attempts(client, url, body, seq, trace, cfg, task_id)
        .instrument(span)
        .await
}

/// The attempts of [`deliver`] (inside its span: each retry is an event of it).
async fn deliver_attempts(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    seq: u64,
    trace: &TraceContext,
    cfg: &CallbackConfig,
    task_id: i64,
) -> bool {
    let attempts = cfg.max_retries + 1;
    for n in 1..=attempts {
        match attempt(client, url, body, seq, trace).await {
            Attempt::Delivered => {
                METRICS.callback_deliveries.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Attempt::Rejected(status) => {
                METRICS.callback_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("[CALLBACK_FAIL] task_id={task_id}: receiver rejected the callback with {status}; not retrying");
                return false;
            }
            Attempt::Retry(why) if n < attempts => {
                METRICS.callback_retries.fetch_add(1, Ordering::Relaxed);
                let delay = backoff(cfg, n);
                tracing::warn!(
                    "Callback for task {task_id} failed (attempt {n}/{attempts}): {why}. Retrying in {:.1} seconds...",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
            }
            Attempt::Retry(why) => {
                METRICS.callback_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "[CALLBACK_FAIL] task_id={task_id}: giving up after {attempts} attempts: {why}"
                );
            }
        }
    }
    false
}

/// `initial * 2^(n-1)`, capped, then scaled by a random factor in [0.5, 1.0] (jitter).
pub fn backoff(cfg: &CallbackConfig, n: u32) -> Duration {
    let exp = cfg.initial_backoff.saturating_mul(
        1u32.checked_shl(n.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX),
    );
    let capped = exp.min(cfg.max_backoff);
    capped.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = CallbackConfig {
            url: None,
            timeout: Duration::from_secs(1),
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            spool_dir: std::path::PathBuf::from("/tmp"),
            terminal_repeat_delay: Duration::ZERO,
        };
        assert!(backoff(&cfg, 1) <= Duration::from_millis(100));
        assert!(backoff(&cfg, 3) >= Duration::from_millis(200));
        assert!(backoff(&cfg, 30) <= Duration::from_secs(1));
    }
}
