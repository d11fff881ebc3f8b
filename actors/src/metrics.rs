//! Counters, gauges and histograms the runtime keeps for `GET /metrics` (Prometheus text
//! format). Plain atomics: recording never blocks and never allocates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use crate::payload::TaskStatus;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// The executor's metrics: one per process (an executor is one process), recorded from delivery
/// tasks and the HTTP layer without threading a handle through every call.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// A latency histogram with [`BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative).
    pub buckets: [AtomicU64; BUCKETS.len()],
    /// Observations above the last bucket.
    pub over: AtomicU64,
    /// Sum of observations in microseconds.
    pub sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one latency in seconds.
    pub fn observe(&self, secs: f64) {
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        match BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// All metrics of one executor.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Terminal callbacks produced, by status: completed, failed, cancelled.
    pub subtasks_completed: AtomicU64,
    /// See `subtasks_completed`.
    pub subtasks_failed: AtomicU64,
    /// See `subtasks_completed`.
    pub subtasks_cancelled: AtomicU64,
    /// Callbacks accepted by the receiver.
    pub callback_deliveries: AtomicU64,
    /// Callback attempts that will be retried.
    pub callback_retries: AtomicU64,
    /// Callbacks given up (4xx, or retries exhausted).
    pub callback_failures: AtomicU64,
    /// Tasks with callbacks waiting in the spool.
    pub callback_queued_tasks: AtomicU64,
    /// Events the spool could not take (delivered from memory instead).
    pub callback_spool_failures: AtomicU64,
    /// 1 while the spool cannot be written (degraded: events wait in memory), else 0.
    pub callback_spool_degraded: AtomicU64,
    /// Progress events dropped because the spool failed and the memory cap was reached.
    pub callback_dropped: AtomicU64,
    /// HTTP request latency.
    pub http: Histogram,
    /// Event relay latency: a callback produced (from a CLI line) → accepted by the receiver.
    pub relay: Histogram,
}

impl Metrics {
    /// Counts one terminal callback.
    pub fn subtask_ended(&self, status: TaskStatus) {
        let c = match status {
            TaskStatus::Completed => &self.subtasks_completed,
            TaskStatus::Failed => &self.subtasks_failed,
            TaskStatus::Cancelled => &self.subtasks_cancelled,
            TaskStatus::Running => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether callbacks are delivered from memory because the spool fails (not ready).
    pub fn spool_degraded(&self) -> bool {
        self.callback_spool_degraded.load(Ordering::Relaxed) != 0
    }

    /// The spool's metrics as `(name, kind, help, value)`, for the `/metrics` page.
    pub fn spool_lines(&self) -> [(&'static str, &'static str, &'static str, u64); 3] {
        [
            ("executor_callback_spool_failures_total", "counter",
             "Callbacks the spool could not write (delivered from memory instead).",
             Self::get(&self.callback_spool_failures)),
            ("executor_callback_spool_degraded", "gauge",
             "1 while the callback spool cannot be written.",
             Self::get(&self.callback_spool_degraded)),
            ("executor_callback_dropped_total", "counter",
             "Progress callbacks dropped (spool failing and memory cap reached); never terminals.",
             Self::get(&self.callback_dropped)),
        ]
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
