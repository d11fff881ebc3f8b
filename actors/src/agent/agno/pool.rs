//! A few agno clients started ahead of time. Python needs ~3 s to import agno; a new Agno
//! session claims a client that already did, so its first event comes in well under a second.
//! Claimed clients are replaced at once; a client that dies in the pool is dropped. When clients
//! cannot start (no interpreter, agno missing), refilling backs off instead of spinning.
//! Close-all drains the pool (no spare python process outlives it); the next Agno task's claim
//! misses once and refills it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::client::{start_ready, Client};
use crate::config::RuntimeConfig;
use crate::error::AgentError;

/// Longest wait between refill attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Messages of the [`AgnoPool`].
pub enum PoolMsg {
    /// Hand over a ready client, if one is there.
    Claim(RpcReplyPort<Option<Client>>),
    /// A client finished starting (or failed to).
    Warmed(Result<Client, AgentError>),
    /// Time to try refilling again after a failure.
    Retry,
    /// End every spare client, and every client still starting, and stay empty until the
    /// next claim (close-all: no process is left running); replies once they are all gone.
    Drain(RpcReplyPort<()>),
    /// Spare clients being ended by a drain are gone.
    Ended,
}

/// The actor; see the module docs.
pub struct AgnoPool;

/// State of the [`AgnoPool`].
pub struct PoolState {
    cfg: Arc<RuntimeConfig>,
    ready: VecDeque<Client>,
    warming: usize,
    failures: u32,
    backing_off: bool,
    /// Drained: no refill until an Agno task claims a client again.
    dormant: bool,
    /// Terminations under way for a drain.
    ending: usize,
    /// Drain requests waiting for every client to be gone.
    drain_waiters: Vec<RpcReplyPort<()>>,
}

impl Actor for AgnoPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = Arc<RuntimeConfig>;

    async fn pre_start(
        &self,
        me: ActorRef<PoolMsg>,
        cfg: Arc<RuntimeConfig>,
    ) -> Result<PoolState, ActorProcessingErr> {
        let mut st = PoolState {
            cfg,
            ready: VecDeque::new(),
            warming: 0,
            failures: 0,
            backing_off: false,
            dormant: false,
            ending: 0,
            drain_waiters: Vec::new(),
        };
        st.fill(&me);
        Ok(st)
    }

    async fn handle(
        &self,
        me: ActorRef<PoolMsg>,
        msg: PoolMsg,
        st: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Claim(reply) => {
                st.dormant = false;
                let mut found = None;
                while let Some(c) = st.ready.pop_front() {
                    if !c.process.has_exited() {
                        found = Some(c);
                        break;
                    }
                }
                tracing::debug!(
                    "agno pool: claim {}",
                    if found.is_some() { "served" } else { "missed" }
                );
                let _ = reply.send(found);
                st.fill(&me);
            }
            PoolMsg::Warmed(result) => {
                st.warming = st.warming.saturating_sub(1);
                match result {
                    Ok(c) if st.dormant => st.end(&me, vec![c]), // drained meanwhile
                    Err(_) if st.dormant => {}
                    Ok(c) => {
                        st.failures = 0;
                        tracing::debug!("agno pool: client {} ready", c.process.pid());
                        st.ready.push_back(c);
                    }
                    Err(e) => {
                        st.failures += 1;
                        if st.failures == 1 {
                            tracing::warn!("agno pool: a client did not start: {e}");
                        }
                        let delay =
                            Duration::from_secs(1u64 << st.failures.min(6)).min(MAX_BACKOFF);
                        st.backing_off = true;
                        me.send_after(delay, || PoolMsg::Retry);
                    }
                }
                st.fill(&me);
            }
            PoolMsg::Retry => {
                st.backing_off = false;
                st.fill(&me);
            }
            PoolMsg::Drain(reply) => {
                st.dormant = true;
                st.drain_waiters.push(reply);
                let spares: Vec<Client> = st.ready.drain(..).collect();
                st.end(&me, spares);
            }
            PoolMsg::Ended => st.ending = st.ending.saturating_sub(1),
        }
        if st.dormant && st.warming == 0 && st.ending == 0 {
            for w in st.drain_waiters.drain(..) {
                let _ = w.send(());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<PoolMsg>,
        st: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        let stop = st.cfg.stop;
        futures::future::join_all(st.ready.iter_mut().map(|c| c.process.terminate(stop))).await;
        st.ready.clear();
        Ok(())
    }
}

impl PoolState {
    /// Terminates `clients` off the handler (it takes the stop grace periods); each reports
    /// [`PoolMsg::Ended`] when gone.
    fn end(&mut self, me: &ActorRef<PoolMsg>, clients: Vec<Client>) {
        for mut c in clients {
            self.ending += 1;
            let (stop, me) = (self.cfg.stop, me.clone());
            tokio::spawn(async move {
                c.process.terminate(stop).await;
                let _ = me.cast(PoolMsg::Ended);
            });
        }
    }

    fn fill(&mut self, me: &ActorRef<PoolMsg>) {
        if self.backing_off || self.dormant {
            return;
        }
        while self.ready.len() + self.warming < self.cfg.agno.pool_size {
            self.warming += 1;
            let (cfg, me) = (self.cfg.clone(), me.clone());
            tokio::spawn(async move {
                let result = start_ready(&cfg, cfg.agno.ready_timeout).await;
                if let Err(ractor::MessagingErr::SendErr(PoolMsg::Warmed(Ok(c)))) =
                    me.cast(PoolMsg::Warmed(result))
                {
                    drop(c); // the pool is gone: Drop kills the process group
                }
            });
        }
    }
}

/// Message for machines without the agno venv: said once at start-up, at info level.
pub const NOT_INSTALLED_NOTE: &str =
    "Agno is not installed (no agno package for AGNO_PYTHON); Agno tasks will fail until you run `bash agno/install.sh`";

/// Whether the pool may start: the agno interpreter exists and the agno package is installed
/// for it. Without them a warm client can never start, and the pool would only retry and warn.
/// Looks at the files only (no Python started); an Agno task on a machine without agno still
/// gets its clear `FAILED` from the client it tries to start.
pub async fn agno_installed(python: &std::path::Path) -> bool {
    let python = python.to_path_buf();
    tokio::task::spawn_blocking(move || find_agno(&python))
        .await
        .unwrap_or(false)
}

/// The package directories Python looks in for an interpreter at `<prefix>/bin/python`
/// (venv or system layout, plus the user site), searched for `agno/__init__.py`.
fn find_agno(python: &std::path::Path) -> bool {
    use std::path::PathBuf;
    let exe = if python.components().count() > 1 {
        Some(python.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(python))
                .find(|p| p.is_file())
        })
    };
    let Some(prefix) = exe
        .filter(|e| e.is_file())
        .and_then(|e| e.parent()?.parent().map(PathBuf::from))
    else {
        return false;
    };
    let mut libs = vec![prefix.join("lib"), prefix.join("lib64")];
    libs.push(PathBuf::from("/usr/local/lib"));
    if let Some(home) = std::env::var_os("HOME") {
        libs.push(PathBuf::from(home).join(".local/lib"));
    }
    libs.iter()
        .filter_map(|lib| std::fs::read_dir(lib).ok())
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
        .any(|e| {
            ["site-packages", "dist-packages"]
                .iter()
                .any(|d| e.path().join(d).join("agno/__init__.py").is_file())
        })
}
