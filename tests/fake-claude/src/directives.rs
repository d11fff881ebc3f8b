//! Parsing of `FAKE:` directive lines out of a user message.

/// Prefix that marks a directive line.
const PREFIX: &str = "FAKE:";
/// Maximum number of characters of user text echoed in the reply.
const ECHO_CHARS: usize = 60;
/// Exit code of `FAKE:crash` without an explicit code.
const DEFAULT_CRASH_CODE: i32 = 3;

/// One piece of a reply text that replaces the default echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyPart {
    /// `FAKE:env:<NAME>`: report that environment variable.
    Env(String),
    /// `FAKE:argv`: report the command line.
    Argv,
    /// `FAKE:prompt`: report the whole user message as received.
    Prompt,
    /// `FAKE:stamp`: the wall-clock time (µs since the Unix epoch) the reply is written, for
    /// measuring how fast the executor relays a line as a callback.
    Stamp,
}

/// Everything a user message asks of one turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    /// First non-empty, non-directive line, trimmed, at most 60 characters.
    pub echo: String,
    /// `FAKE:sleep:<ms>`.
    pub sleep_ms: Option<u64>,
    /// `FAKE:crash[:<code>]`: the exit code.
    pub crash: Option<i32>,
    /// `FAKE:noresult`.
    pub no_result: bool,
    /// `FAKE:error:<text>`.
    pub error: Option<String>,
    /// `FAKE:error_subtype:<subtype>`.
    pub error_subtype: Option<String>,
    /// `FAKE:tool`.
    pub tool: bool,
    /// `FAKE:open_tool`: a Bash `tool_use` before the sleep and its result after it, so the
    /// silence happens while a tool runs.
    pub open_tool: bool,
    /// `FAKE:lines:<count>`.
    pub lines: usize,
    /// `FAKE:bigline:<bytes>`.
    pub bigline: Option<usize>,
    /// `FAKE:garbage`: non-JSON text, a broken JSON line and an unknown message type.
    pub garbage: bool,
    /// `FAKE:spawn_orphan`.
    pub spawn_orphan: bool,
    /// `FAKE:spawn_daemon`: a double-forked `sleep` in its own session that ignores SIGTERM and
    /// is re-parented away from this process at once.
    pub spawn_daemon: bool,
    /// `FAKE:ignore_sigterm`.
    pub ignore_sigterm: bool,
    /// `FAKE:ignore_eof`: after stdin closes, keep running until killed (for the whole
    /// process), as a CLI whose MCP server or shutdown hangs would.
    pub ignore_eof: bool,
    /// `FAKE:ignore_interrupt`: answer interrupt requests but keep the turn going (from now
    /// on, for the whole process), as a CLI stuck in a tool would.
    pub ignore_interrupt: bool,
    /// `FAKE:exit_after_result:<code>`.
    pub exit_after_result: Option<i32>,
    /// `FAKE:sh:<command>`: run it with `sh -c` in the working directory (as a Bash tool call,
    /// reported as `tool_use`/`tool_result`), in order of appearance.
    pub shell: Vec<String>,
    /// `FAKE:wait_file:<path>`: keep working (an assistant line every 100 ms, interruptible)
    /// until the file exists, at most 60 s — lets a test hold a turn open until it has seen
    /// what it waits for.
    pub wait_file: Option<String>,
    /// `FAKE:env:<NAME>` and `FAKE:argv`, in order of appearance.
    pub reply: Vec<ReplyPart>,
    /// Problems with unknown or malformed directives, for stderr.
    pub warnings: Vec<String>,
}

impl Script {
    /// Splits `text` into directives and the echoed remainder.
    pub fn parse(text: &str) -> Self {
        let mut script = Script::default();
        let mut echo: Option<&str> = None;
        for line in text.lines() {
            let trimmed = line.trim();
            match trimmed.strip_prefix(PREFIX) {
                Some(directive) => {
                    if let Err(msg) = script.apply(directive) {
                        script.warnings.push(format!("{trimmed}: {msg}"));
                    }
                }
                None if echo.is_none() && !trimmed.is_empty() => echo = Some(trimmed),
                None => {}
            }
        }
        script.echo = echo.unwrap_or("").chars().take(ECHO_CHARS).collect();
        script
    }

    /// Applies one directive (the text after `FAKE:`).
    fn apply(&mut self, directive: &str) -> Result<(), String> {
        let (name, arg) = match directive.split_once(':') {
            Some((name, arg)) => (name.trim(), Some(arg.trim())),
            None => (directive.trim(), None),
        };
        match (name, arg) {
            ("sleep", Some(ms)) => self.sleep_ms = Some(number(ms)?),
            ("crash", None) => self.crash = Some(DEFAULT_CRASH_CODE),
            ("crash", Some(code)) => self.crash = Some(number(code)?),
            ("noresult", None) => self.no_result = true,
            ("error", Some(text)) => self.error = Some(text.to_string()),
            ("error_subtype", Some(sub)) if !sub.is_empty() => {
                self.error_subtype = Some(sub.to_string())
            }
            ("tool", None) => self.tool = true,
            ("open_tool", None) => self.open_tool = true,
            ("lines", Some(count)) => self.lines = number(count)?,
            ("bigline", Some(bytes)) => self.bigline = Some(number(bytes)?),
            ("garbage", None) => self.garbage = true,
            ("spawn_orphan", None) => self.spawn_orphan = true,
            ("spawn_daemon", None) => self.spawn_daemon = true,
            ("ignore_sigterm", None) => self.ignore_sigterm = true,
            ("ignore_interrupt", None) => self.ignore_interrupt = true,
            ("ignore_eof", None) => self.ignore_eof = true,
            ("exit_after_result", Some(code)) => self.exit_after_result = Some(number(code)?),
            ("sh", Some(cmd)) if !cmd.is_empty() => self.shell.push(cmd.to_string()),
            ("wait_file", Some(path)) if !path.is_empty() => self.wait_file = Some(path.into()),
            ("env", Some(var)) if !var.is_empty() => self.reply.push(ReplyPart::Env(var.into())),
            ("argv", None) => self.reply.push(ReplyPart::Argv),
            ("prompt", None) => self.reply.push(ReplyPart::Prompt),
            ("stamp", None) => self.reply.push(ReplyPart::Stamp),
            _ => return Err("unknown directive or wrong argument".to_string()),
        }
        Ok(())
    }
}

/// Parses a directive's numeric argument.
fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad number {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_has_no_directives() {
        let s = Script::parse("hello world\nsecond line");
        assert_eq!(
            s,
            Script {
                echo: "hello world".into(),
                ..Script::default()
            }
        );
    }

    #[test]
    fn directives_are_stripped_from_echo() {
        let s = Script::parse("FAKE:sleep:250\n\n  do the thing  \nFAKE:tool\nmore");
        assert_eq!(s.echo, "do the thing");
        assert_eq!(s.sleep_ms, Some(250));
        assert!(s.tool);
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn echo_is_truncated_to_60_chars() {
        let long = "é".repeat(100);
        assert_eq!(Script::parse(&long).echo.chars().count(), 60);
        assert_eq!(Script::parse("FAKE:noresult").echo, "");
    }

    #[test]
    fn crash_code_defaults_to_3() {
        assert_eq!(Script::parse("FAKE:crash").crash, Some(3));
        assert_eq!(Script::parse("FAKE:crash:137").crash, Some(137));
    }

    #[test]
    fn all_directives() {
        let s = Script::parse(
            "FAKE:noresult\nFAKE:error:API Error: 529 {\"a\":1}\nFAKE:error_subtype:error_max_turns\n\
             FAKE:lines:5\nFAKE:bigline:1000\nFAKE:spawn_orphan\nFAKE:ignore_sigterm\n\
             FAKE:exit_after_result:7\nFAKE:env:HOME\nFAKE:argv\nFAKE:env:PATH",
        );
        assert!(s.no_result && s.spawn_orphan && s.ignore_sigterm);
        assert_eq!(s.error.as_deref(), Some("API Error: 529 {\"a\":1}"));
        assert_eq!(s.error_subtype.as_deref(), Some("error_max_turns"));
        assert_eq!((s.lines, s.bigline), (5, Some(1000)));
        assert_eq!(s.exit_after_result, Some(7));
        assert_eq!(
            s.reply,
            vec![
                ReplyPart::Env("HOME".into()),
                ReplyPart::Argv,
                ReplyPart::Env("PATH".into())
            ]
        );
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn bad_directives_warn_and_are_ignored() {
        let s = Script::parse("FAKE:sleep:soon\nFAKE:bogus\nFAKE:tool:extra\nFAKE:env:\nhi");
        assert_eq!(s.sleep_ms, None);
        assert!(!s.tool);
        assert!(s.reply.is_empty());
        assert_eq!(s.warnings.len(), 4);
        assert_eq!(s.echo, "hi");
    }
}
