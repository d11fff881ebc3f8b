//! Heartbeats to executor_manager (contract §4.6): every `HEARTBEAT_INTERVAL` seconds,
//! `POST {base}/tasks/{id}/heartbeat` (or `/sandboxes/{id}/heartbeat`) with
//! `{"heartbeat_id", "heartbeat_type", "timestamp"}`. A small actor owns the schedule; each POST
//! runs in its own task, so a slow manager never delays the next beat or anything else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;

/// Per-request limit of a heartbeat POST (the original's 5 s).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how often to send heartbeats.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// The manager's base URL (`EXECUTOR_MANAGER_HEARTBEAT_BASE_URL`, or `CALLBACK_URL` without
    /// its trailing `/callback`).
    pub base_url: String,
    /// `HEARTBEAT_ID` / `SANDBOX_ID`.
    pub id: String,
    /// `HEARTBEAT_TYPE`: `task` or `sandbox`.
    pub kind: String,
    /// `HEARTBEAT_INTERVAL`.
    pub interval: Duration,
}

impl HeartbeatConfig {
    /// The URL beats go to.
    pub fn url(&self) -> String {
        let segment = if self.kind == "task" {
            "tasks"
        } else {
            "sandboxes"
        };
        format!(
            "{}/{segment}/{}/heartbeat",
            self.base_url.trim_end_matches('/'),
            self.id
        )
    }
}

/// The heartbeat actor's only message: time to beat.
pub struct Beat;

/// The actor; see the module docs.
pub struct Heartbeat;

/// State of the [`Heartbeat`] actor.
pub struct HeartbeatState {
    cfg: HeartbeatConfig,
    client: reqwest::Client,
}

impl Actor for Heartbeat {
    type Msg = Beat;
    type State = HeartbeatState;
    type Arguments = HeartbeatConfig;

    async fn pre_start(
        &self,
        me: ActorRef<Beat>,
        cfg: HeartbeatConfig,
    ) -> Result<HeartbeatState, ActorProcessingErr> {
        let client = reqwest::Client::builder()
            .timeout(HEARTBEAT_TIMEOUT)
            .build()?;
        me.send_interval(cfg.interval, || Beat);
        let _ = me.cast(Beat);
        tracing::info!(
            "Heartbeats every {} s to {}",
            cfg.interval.as_secs(),
            cfg.url()
        );
        Ok(HeartbeatState { cfg, client })
    }

    async fn handle(
        &self,
        _me: ActorRef<Beat>,
        _msg: Beat,
        st: &mut HeartbeatState,
    ) -> Result<(), ActorProcessingErr> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let body = json!({"heartbeat_id": st.cfg.id, "heartbeat_type": st.cfg.kind, "timestamp": timestamp});
        let (client, url) = (st.client.clone(), st.cfg.url());
        tokio::spawn(async move {
            match client.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!("heartbeat answered {}", r.status()),
                Err(e) => tracing::warn!("heartbeat failed: {}", e.without_url()),
            }
        });
        Ok(())
    }
}
