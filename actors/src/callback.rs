//! The callback relay: the single actor that posts every status event to `CALLBACK_URL`.
//!
//! Events of one task are delivered strictly in order (one POST in flight per task); tasks never
//! wait for each other. Each POST-with-retries runs in its own tokio task that reports back with
//! a message, so the actor never waits on the network and an HTTP route never waits on a slow
//! receiver. The relay also enforces the contract's terminal rule at one place: after a
//! subtask's terminal event (`COMPLETED`/`FAILED`/`CANCELLED`) nothing more is sent for it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::Rng;

use crate::config::CallbackConfig;
use crate::payload::CallbackPayload;

/// A serialised event ready to send (serialised once, re-sent as is on retries).
type Payload = Arc<Vec<u8>>;

/// How many finished subtasks the relay remembers to drop late events for them.
const TERMINAL_MEMORY: usize = 10_000;

/// Messages of the [`CallbackRelay`].
pub enum CallbackMsg {
    /// Queue one event for delivery.
    Send(Box<CallbackPayload>),
    /// A delivery task finished with the head of `task_id`'s queue (delivered or given up).
    Done {
        /// Whose queue advances.
        task_id: i64,
    },
    /// Answer once every queued event has been delivered or given up (used at shutdown).
    Flush(RpcReplyPort<()>),
    /// How many events wait or are in flight (for listings and tests).
    Pending(RpcReplyPort<usize>),
}

/// The relay actor; see the module docs.
pub struct CallbackRelay;

/// State of the [`CallbackRelay`].
pub struct RelayState {
    cfg: Arc<CallbackConfig>,
    client: reqwest::Client,
    queues: HashMap<i64, VecDeque<Payload>>,
    finished: HashSet<(i64, i64)>,
    finished_order: VecDeque<(i64, i64)>,
    flush_waiters: Vec<RpcReplyPort<()>>,
}

impl Actor for CallbackRelay {
    type Msg = CallbackMsg;
    type State = RelayState;
    type Arguments = CallbackConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<CallbackMsg>,
        cfg: CallbackConfig,
    ) -> Result<RelayState, ActorProcessingErr> {
        let client = reqwest::Client::builder().timeout(cfg.timeout).build()?;
        Ok(RelayState {
            cfg: Arc::new(cfg),
            client,
            queues: HashMap::new(),
            finished: HashSet::new(),
            finished_order: VecDeque::new(),
            flush_waiters: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CallbackMsg>,
        msg: CallbackMsg,
        st: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CallbackMsg::Send(payload) => st.enqueue(&myself, &payload),
            CallbackMsg::Done { task_id } => st.advance(&myself, task_id),
            CallbackMsg::Flush(reply) => {
                if st.queues.is_empty() {
                    let _ = reply.send(());
                } else {
                    st.flush_waiters.push(reply);
                }
            }
            CallbackMsg::Pending(reply) => {
                let _ = reply.send(st.queues.values().map(VecDeque::len).sum());
            }
        }
        Ok(())
    }
}

impl RelayState {
    fn enqueue(&mut self, myself: &ActorRef<CallbackMsg>, p: &CallbackPayload) {
        let key = (p.task_id, p.subtask_id);
        if self.finished.contains(&key) {
            tracing::debug!(
                "dropping {} callback for finished subtask {}.{}",
                p.status.as_str(),
                p.task_id,
                p.subtask_id
            );
            return;
        }
        if p.status.is_terminal() {
            self.remember_finished(key);
        }
        if self.cfg.url.is_none() {
            return;
        }
        let body = match serde_json::to_vec(p) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                tracing::error!("cannot serialise callback for task {}: {e}", p.task_id);
                return;
            }
        };
        let queue = self.queues.entry(p.task_id).or_default();
        queue.push_back(body);
        if queue.len() == 1 {
            self.start_delivery(myself, p.task_id);
        }
    }

    fn remember_finished(&mut self, key: (i64, i64)) {
        if self.finished.insert(key) {
            self.finished_order.push_back(key);
            if self.finished_order.len() > TERMINAL_MEMORY {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }

    fn advance(&mut self, myself: &ActorRef<CallbackMsg>, task_id: i64) {
        if let Some(queue) = self.queues.get_mut(&task_id) {
            queue.pop_front();
            if queue.is_empty() {
                self.queues.remove(&task_id);
            } else {
                self.start_delivery(myself, task_id);
            }
        }
        if self.queues.is_empty() {
            for w in self.flush_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    fn start_delivery(&self, myself: &ActorRef<CallbackMsg>, task_id: i64) {
        let (Some(body), Some(url)) = (
            self.queues.get(&task_id).and_then(|q| q.front()).cloned(),
            self.cfg.url.clone(),
        ) else {
            return;
        };
        let client = self.client.clone();
        let cfg = self.cfg.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            deliver(&client, &url, body, &cfg, task_id).await;
            let _ = me.cast(CallbackMsg::Done { task_id });
        });
    }
}

/// What one POST attempt came to.
enum Attempt {
    Delivered,
    Rejected(reqwest::StatusCode),
    Retry(String),
}

async fn attempt(client: &reqwest::Client, url: &str, body: &Payload) -> Attempt {
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.as_ref().clone())
        .send()
        .await;
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

/// Delivers one event with retries and exponential backoff with jitter; 4xx is final.
async fn deliver(
    client: &reqwest::Client,
    url: &str,
    body: Payload,
    cfg: &CallbackConfig,
    task_id: i64,
) {
    let attempts = cfg.max_retries + 1;
    for n in 1..=attempts {
        match attempt(client, url, &body).await {
            Attempt::Delivered => return,
            Attempt::Rejected(status) => {
                tracing::error!("[CALLBACK_FAIL] task_id={task_id}: receiver rejected the callback with {status}; not retrying");
                return;
            }
            Attempt::Retry(why) if n < attempts => {
                let delay = backoff(cfg, n);
                tracing::warn!(
                    "Callback for task {task_id} failed (attempt {n}/{attempts}): {why}. Retrying in {:.1} seconds...",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
            }
            Attempt::Retry(why) => {
                tracing::error!(
                    "[CALLBACK_FAIL] task_id={task_id}: giving up after {attempts} attempts: {why}"
                );
            }
        }
    }
}

/// `initial * 2^(n-1)`, capped, then scaled by a random factor in [0.5, 1.0] (jitter).
fn backoff(cfg: &CallbackConfig, n: u32) -> Duration {
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
        };
        assert!(backoff(&cfg, 1) <= Duration::from_millis(100));
        assert!(backoff(&cfg, 3) >= Duration::from_millis(200));
        assert!(backoff(&cfg, 30) <= Duration::from_secs(1));
    }
}
