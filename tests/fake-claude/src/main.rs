//! `fake-claude`: a scriptable stand-in for the Claude Code CLI (`claude`),
//! used by end-to-end tests and benchmarks of the executor service.
//!
//! # Protocol
//!
//! It speaks the same stream-json protocol as
//! `claude --output-format stream-json --verbose --input-format stream-json`:
//! one JSON object per line on stdin and on stdout (stdout is flushed after
//! every line), free text on stderr. Unknown command-line flags are accepted
//! and ignored; `--model`, `--permission-mode` and `--resume` are honoured and
//! `--version` prints `2.1.331 (Fake Claude Code)`.
//!
//! * `control_request` / `initialize` is answered with a success response
//!   carrying `commands`, `models` and `pid`.
//! * `control_request` / `interrupt` is answered with a success response and,
//!   if a turn is running, aborts it (an `[Request interrupted by user]` user
//!   line followed by an `error_during_execution` result). Other control
//!   requests get an empty success response.
//! * A `user` line starts a turn; turns run one at a time, in arrival order,
//!   and user lines that arrive during a turn are queued. A normal turn writes
//!   a `system`/`init` line, an `assistant` line with the text
//!   `fake reply #<n> to: <first 60 chars of the first non-directive line>`
//!   and a `success` result (`n` counts the turns of this process from 1).
//! * EOF on stdin: the current and any queued turns are finished, then the
//!   process exits with status 0.
//!
//! # Directives
//!
//! Any line of the user text that starts with `FAKE:` (leading whitespace
//! allowed) is a directive and is not echoed. Directives injected into a turn:
//!
//! | Directive                     | Effect                                                        |
//! |-------------------------------|---------------------------------------------------------------|
//! | `FAKE:sleep:<ms>`             | wait before replying, still serving stdin (interruptible)     |
//! | `FAKE:crash[:<code>]`         | after init (and sleep), exit with `<code>` (default 3), no result |
//! | `FAKE:noresult`               | write init and assistant lines, then exit 0 without a result |
//! | `FAKE:error:<text>`           | result `is_error: true`, `result: <text>` (subtype `success`) |
//! | `FAKE:error_subtype:<sub>`    | result with subtype `<sub>`, `is_error: true`, `result: null` |
//! | `FAKE:tool`                   | add a `Bash` `tool_use` assistant line and its `tool_result`  |
//! | `FAKE:lines:<count>`          | add `<count>` assistant lines `chunk <i>` before the reply    |
//! | `FAKE:stamp`                  | reply `stamp <µs since the epoch>`, taken as the line is written |
//! | `FAKE:spawn_daemon`           | double-fork a SIGTERM-ignoring `sleep 600` in its own session (re-parented at once) |
//! | `FAKE:open_tool`              | a Bash `tool_use` before the sleep, its `tool_result` after it |
//! | `FAKE:garbage`                | add a non-JSON line, a broken JSON line, an empty line and an unknown message type |
//! | `FAKE:bigline:<bytes>`        | add one assistant line whose text is `<bytes>` `x` characters |
//! | `FAKE:spawn_orphan`           | spawn a setsid'd, SIGTERM-ignoring `sleep 600`; pid on stderr |
//! | `FAKE:ignore_sigterm`         | ignore SIGTERM from now on (for the whole process)            |
//! | `FAKE:ignore_interrupt`       | answer interrupts but do not stop (for the whole process)     |
//! | `FAKE:ignore_eof`             | keep running after stdin closes, until killed (whole process)  |
//! | `FAKE:exit_after_result:<c>`  | exit with `<c>` right after writing the result                |
//! | `FAKE:env:<NAME>`             | reply text `env <NAME>=<value or <unset>>`                    |
//! | `FAKE:argv`                   | reply text is the JSON array of `argv[1..]`                   |
//!
//! Several `env`/`argv` directives are joined with `; ` in the order given.
//! For the other directives with an argument, the last occurrence wins.
//! Unknown or malformed directives are reported on stderr and ignored.
//!
//! # Environment
//!
//! * `FAKE_CLAUDE_STARTUP_MS`: sleep this long before reading stdin.
//! * `FAKE_CLAUDE_STARTUP_CPU_MS`, `FAKE_CLAUDE_LINE_CPU_US`: burn that much CPU time at start
//!   and before every line written (CPU-heavy mode for benchmarks: production's CLI is node).
//! * `FAKE_CLAUDE_LOG=<path>`: append every received stdin line to `<path>`.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod args;
mod cpu;
mod directives;
mod input;
mod proto;
mod session;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use args::Args;
use session::Session;

/// Version reported by `--version` and in `system`/`init` lines.
pub const VERSION: &str = "2.1.331";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = Args::parse(&argv);

    if args.version {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{VERSION} (Fake Claude Code)").and_then(|()| out.flush());
        return ExitCode::SUCCESS;
    }
    if let Some(id) = &args.resume {
        eprintln!("resumed {id}");
    }
    cpu::at_start();
    if let Some(ms) = std::env::var("FAKE_CLAUDE_STARTUP_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }

    let log_path = std::env::var_os("FAKE_CLAUDE_LOG");
    let events = input::spawn_reader(log_path.map(Into::into));
    match Session::new(args, argv, events).run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-claude: {e}");
            ExitCode::FAILURE
        }
    }
}
