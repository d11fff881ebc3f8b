//! The session loop: serves stdin, queues user messages and runs turns one
//! at a time (see `turn.rs` for what a turn writes).

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::args::Args;
use crate::input::{user_text, Event};
use crate::proto::{control_success, emit, Messages, Rng};

mod turn;

/// Whether a running turn may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Keep going.
    Continue,
    /// An interrupt request arrived: abort the turn.
    Interrupted,
}

/// State of one `fake-claude` process.
pub struct Session {
    /// Message builder (session id, model, ...).
    msgs: Messages,
    /// `argv[1..]`, for `FAKE:argv`.
    argv: Vec<String>,
    /// Lines from the stdin reader thread.
    events: Receiver<Event>,
    /// User texts waiting for their turn.
    queue: VecDeque<String>,
    /// Stdin is closed.
    eof: bool,
    /// Turns started so far by this process.
    turns: u64,
    /// `FAKE:ignore_interrupt` was seen: interrupt requests are answered but change nothing.
    ignore_interrupts: bool,
    /// `FAKE:ignore_eof` was seen: stdin EOF does not end the process.
    ignore_eof: bool,
}

impl Session {
    /// Creates the session; the id is `--resume`'s value or a fresh uuid.
    pub fn new(args: Args, argv: Vec<String>, events: Receiver<Event>) -> Self {
        let mut rng = Rng::new();
        let session_id = args.resume.unwrap_or_else(|| rng.uuid());
        Session {
            msgs: Messages {
                session_id,
                model: args.model,
                permission_mode: args.permission_mode,
                rng,
            },
            argv,
            events,
            queue: VecDeque::new(),
            eof: false,
            turns: 0,
            ignore_interrupts: false,
            ignore_eof: false,
        }
    }

    /// Serves stdin until EOF and all queued turns are done.
    pub fn run(mut self) -> io::Result<()> {
        loop {
            if let Some(text) = self.queue.pop_front() {
                self.run_turn(&text)?;
                continue;
            }
            if self.eof {
                if self.ignore_eof {
                    eprintln!("fake-claude: stdin closed; ignoring it until killed");
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
                return Ok(());
            }
            let event = self.events.recv().unwrap_or(Event::Eof);
            self.handle(event, false)?;
        }
    }

    /// Serves stdin until `deadline` (returns at once if it has passed,
    /// after draining what is already available). Reports an interrupt.
    fn serve_until(&mut self, deadline: Instant) -> io::Result<Flow> {
        loop {
            let now = Instant::now();
            if self.eof {
                std::thread::sleep(deadline.saturating_duration_since(now));
                return Ok(Flow::Continue);
            }
            let event = match self
                .events
                .recv_timeout(deadline.saturating_duration_since(now))
            {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => return Ok(Flow::Continue),
                Err(RecvTimeoutError::Disconnected) => Event::Eof,
            };
            if self.handle(event, true)? == Flow::Interrupted {
                return Ok(Flow::Interrupted);
            }
        }
    }

    /// Serves stdin for `ms` milliseconds.
    fn serve_for(&mut self, ms: u64) -> io::Result<Flow> {
        let deadline = Instant::now()
            .checked_add(Duration::from_millis(ms))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        self.serve_until(deadline)
    }

    /// Handles one stdin event; `in_turn` says whether an interrupt would
    /// abort something.
    fn handle(&mut self, event: Event, in_turn: bool) -> io::Result<Flow> {
        let line = match event {
            Event::Line(line) => line,
            Event::Eof => {
                self.eof = true;
                return Ok(Flow::Continue);
            }
        };
        let value: Value = match serde_json::from_str(&line) {
            Ok(value) => value,
            Err(e) => {
                eprintln!("fake-claude: ignoring invalid JSON line ({e}): {line}");
                return Ok(Flow::Continue);
            }
        };
        match value.get("type").and_then(Value::as_str) {
            Some("control_request") => return self.control(&value, in_turn),
            Some("user") => match user_text(&value) {
                Some(text) => self.queue.push_back(text),
                None => eprintln!("fake-claude: ignoring user line without content: {line}"),
            },
            _ => {}
        }
        Ok(Flow::Continue)
    }

    /// Answers a control request.
    fn control(&mut self, request: &Value, in_turn: bool) -> io::Result<Flow> {
        let id = request.get("request_id").cloned().unwrap_or(Value::Null);
        let subtype = request
            .pointer("/request/subtype")
            .and_then(Value::as_str)
            .unwrap_or("");
        match subtype {
            "initialize" => emit(&control_success(
                &id,
                json!({"commands": [], "models": [], "pid": std::process::id()}),
            ))?,
            "interrupt" => {
                emit(&control_success(&id, json!({"still_queued": []})))?;
                if in_turn && !self.ignore_interrupts {
                    return Ok(Flow::Interrupted);
                }
            }
            _ => emit(&control_success(&id, json!({})))?,
        }
        Ok(Flow::Continue)
    }
}
