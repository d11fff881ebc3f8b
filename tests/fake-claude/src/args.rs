//! Command-line parsing: the few flags that matter, everything else ignored.

/// The command-line options `fake-claude` cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `--version` was given.
    pub version: bool,
    /// `--model`, or `fake-model`.
    pub model: String,
    /// `--permission-mode`, or `default`.
    pub permission_mode: String,
    /// `--resume <id>` / `--resume=<id>`: the session id to reuse.
    pub resume: Option<String>,
}

/// Flags that never take a value, so a following bare word is not eaten.
const BOOLEAN_FLAGS: &[&str] = &["version", "verbose", "help"];

impl Args {
    /// Parses `argv[1..]`. Accepts `--flag value` and `--flag=value`; a bare
    /// word following a flag is that flag's value. Unknown flags and
    /// positional arguments are ignored.
    pub fn parse(argv: &[String]) -> Self {
        let mut out = Args {
            version: false,
            model: "fake-model".to_string(),
            permission_mode: "default".to_string(),
            resume: None,
        };
        let mut i = 0;
        while i < argv.len() {
            let arg = &argv[i];
            i += 1;
            let Some(flag) = arg.strip_prefix("--") else {
                continue;
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None if BOOLEAN_FLAGS.contains(&flag) => (flag, None),
                None => match argv.get(i).filter(|next| !next.starts_with("--")) {
                    Some(next) => {
                        i += 1;
                        (flag, Some(next.clone()))
                    }
                    None => (flag, None),
                },
            };
            let value = value.filter(|v| !v.is_empty());
            match (name, value) {
                ("version", _) => out.version = true,
                ("model", Some(v)) => out.model = v,
                ("permission-mode", Some(v)) => out.permission_mode = v,
                ("resume", Some(v)) => out.resume = Some(v),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Args::parse(&owned)
    }

    #[test]
    fn defaults() {
        let a = parse(&["--output-format", "stream-json", "--verbose"]);
        assert!(!a.version);
        assert_eq!(a.model, "fake-model");
        assert_eq!(a.permission_mode, "default");
        assert_eq!(a.resume, None);
    }

    #[test]
    fn both_value_styles() {
        let a = parse(&[
            "--model",
            "opus",
            "--permission-mode=bypassPermissions",
            "--resume",
            "abc-123",
            "--system-prompt=hi --model x",
            "--unknown",
        ]);
        assert_eq!(a.model, "opus");
        assert_eq!(a.permission_mode, "bypassPermissions");
        assert_eq!(a.resume.as_deref(), Some("abc-123"));
    }

    #[test]
    fn flag_value_is_not_another_flag() {
        let a = parse(&["--resume", "--model", "m", "--version", "stray"]);
        assert_eq!(a.resume, None);
        assert_eq!(a.model, "m");
        assert!(a.version);
        assert_eq!(parse(&["--resume="]).resume, None);
    }
}
