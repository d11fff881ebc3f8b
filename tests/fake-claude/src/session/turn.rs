//! One turn: init, optional fault injection, assistant lines and result.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::json;

use super::{Flow, Session};
use crate::directives::{ReplyPart, Script};
use crate::proto::emit;

impl Session {
    /// Runs the turn for one user message, honouring its directives.
    pub(super) fn run_turn(&mut self, text: &str) -> io::Result<()> {
        let start = Instant::now();
        self.turns += 1;
        let n = self.turns;
        let script = Script::parse(text);
        for warning in &script.warnings {
            eprintln!("fake-claude: ignoring directive {warning}");
        }

        emit(&self.msgs.init())?;
        if script.ignore_sigterm {
            ignore_sigterm();
        }
        if script.ignore_eof {
            self.ignore_eof = true;
        }
        if script.ignore_interrupt {
            eprintln!("fake-claude: ignoring interrupts");
            self.ignore_interrupts = true;
        }
        if script.spawn_orphan {
            spawn_orphan();
        }
        if script.spawn_daemon {
            spawn_daemon();
        }
        if script.open_tool {
            let tool_use = json!([{"type": "tool_use", "id": "toolu_fake_open", "name": "Bash",
                                   "input": {"command": "sleep"}}]);
            emit(&self.msgs.assistant(&format!("msg_fake_{n}_open"), tool_use))?;
        }
        if let Some(ms) = script.sleep_ms {
            if self.serve_for(ms)? == Flow::Interrupted {
                return self.abort(start);
            }
        }
        if script.open_tool {
            let result = json!([{"type": "tool_result", "tool_use_id": "toolu_fake_open",
                                 "content": "done", "is_error": false}]);
            emit(&self.msgs.user(result))?;
        }
        if let Some(code) = script.crash {
            eprintln!("fake-claude: simulated crash");
            std::process::exit(code);
        }

        if script.tool {
            let tool_use = json!([{
                "type": "tool_use",
                "id": "toolu_fake_1",
                "name": "Bash",
                "input": {"command": "echo hi"},
            }]);
            emit(&self.msgs.assistant(&format!("msg_fake_{n}_tool"), tool_use))?;
            let tool_result = json!([{
                "type": "tool_result",
                "tool_use_id": "toolu_fake_1",
                "content": "hi",
                "is_error": false,
            }]);
            emit(&self.msgs.user(tool_result))?;
        }
        for (i, cmd) in script.shell.iter().enumerate() {
            let id = format!("toolu_fake_sh_{i}");
            let tool_use = json!([{"type": "tool_use", "id": id, "name": "Bash",
                                   "input": {"command": cmd}}]);
            emit(
                &self
                    .msgs
                    .assistant(&format!("msg_fake_{n}_sh_{i}"), tool_use),
            )?;
            let out = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(Stdio::null())
                .output();
            let (text, failed) = match out {
                Ok(o) => (
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    ),
                    !o.status.success(),
                ),
                Err(e) => (e.to_string(), true),
            };
            let result = json!([{"type": "tool_result", "tool_use_id": id,
                                 "content": text, "is_error": failed}]);
            emit(&self.msgs.user(result))?;
        }
        if let Some(path) = &script.wait_file {
            let deadline = Instant::now() + std::time::Duration::from_secs(60);
            let mut i = 0;
            while !std::path::Path::new(path).exists() && Instant::now() < deadline {
                i += 1;
                emit(
                    &self
                        .msgs
                        .assistant_text(&format!("msg_fake_{n}_wait_{i}"), "working"),
                )?;
                if self.serve_for(100)? == Flow::Interrupted {
                    return self.abort(start);
                }
            }
        }
        for i in 1..=script.lines {
            let id = format!("msg_fake_{n}_chunk_{i}");
            emit(&self.msgs.assistant_text(&id, &format!("chunk {i}")))?;
            // Stay responsive to interrupts during long streams.
            if self.serve_until(Instant::now())? == Flow::Interrupted {
                return self.abort(start);
            }
        }
        if script.garbage {
            crate::proto::emit_raw("[SandboxDebug] this is not JSON")?;
            crate::proto::emit_raw("{\"type\":\"assistant\",\"message\":")?;
            crate::proto::emit_raw("")?;
            emit(&json!({"type": "mystery_event", "payload": [1, 2, 3]}))?;
        }
        if let Some(bytes) = script.bigline {
            let id = format!("msg_fake_{n}_big");
            emit(&self.msgs.assistant_text(&id, &"x".repeat(bytes)))?;
        }

        let reply = self.reply_text(n, &script, text);
        emit(&self.msgs.assistant_text(&format!("msg_fake_{n}"), &reply))?;
        if script.no_result {
            std::process::exit(0);
        }

        let elapsed = start.elapsed().as_millis();
        let outcome = if let Some(subtype) = &script.error_subtype {
            json!({
                "subtype": subtype,
                "is_error": true,
                "result": null,
                "errors": ["Reached maximum number of turns (1)"],
            })
        } else if let Some(error) = &script.error {
            json!({"is_error": true, "result": error})
        } else {
            json!({"result": reply})
        };
        emit(&self.msgs.result(elapsed, outcome))?;
        if let Some(code) = script.exit_after_result {
            std::process::exit(code);
        }
        Ok(())
    }

    /// Ends an interrupted turn the way the real CLI does.
    fn abort(&mut self, start: Instant) -> io::Result<()> {
        let note = json!([{"type": "text", "text": "[Request interrupted by user]"}]);
        emit(&self.msgs.user(note))?;
        let outcome = json!({
            "subtype": "error_during_execution",
            "is_error": true,
            "result": null,
            "stop_reason": null,
            "terminal_reason": "aborted_streaming",
            "errors": ["interrupted"],
        });
        emit(&self.msgs.result(start.elapsed().as_millis(), outcome))
    }

    /// The final assistant text: the echo, or what `env`/`argv` ask for.
    fn reply_text(&self, n: u64, script: &Script, text: &str) -> String {
        if script.reply.is_empty() {
            return format!("fake reply #{n} to: {}", script.echo);
        }
        let parts: Vec<String> = script
            .reply
            .iter()
            .map(|part| match part {
                ReplyPart::Env(name) => {
                    let value = std::env::var_os(name)
                        .map(|v| v.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "<unset>".to_string());
                    format!("env {name}={value}")
                }
                ReplyPart::Prompt => format!("prompt {text}"),
                ReplyPart::Argv => {
                    serde_json::to_string(&self.argv).unwrap_or_else(|_| "[]".to_string())
                }
                ReplyPart::Stamp => {
                    let micros = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros())
                        .unwrap_or(0);
                    format!("stamp {micros}")
                }
            })
            .collect();
        parts.join("; ")
    }
}

/// Makes this process ignore SIGTERM from now on.
fn ignore_sigterm() {
    // SAFETY: installing SIG_IGN has no handler code to run and no
    // memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    eprintln!("fake-claude: ignoring SIGTERM");
}

/// Spawns `sleep 600` in its own session, ignoring SIGTERM, in our cwd and
/// with stdio detached (so it does not hold the executor's pipes open).
/// Double fork through `sh`: the `sleep` ends up with no parent of ours, in its own session,
/// ignoring SIGTERM — the hardest kind of leftover for a supervisor to find.
fn spawn_daemon() {
    let script = "(trap '' TERM; exec setsid sleep 600) </dev/null >/dev/null 2>&1 &";
    match Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .status()
    {
        Ok(_) => eprintln!("fake-claude: spawned a daemon"),
        Err(e) => eprintln!("fake-claude: cannot spawn a daemon: {e}"),
    }
}

fn spawn_orphan() {
    let mut cmd = Command::new("sleep");
    cmd.arg("600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs between fork and exec and only calls the
    // async-signal-safe functions setsid(2) and signal(2).
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => eprintln!("fake-claude: spawned orphan pid {}", child.id()),
        Err(e) => eprintln!("fake-claude: cannot spawn orphan: {e}"),
    }
}
