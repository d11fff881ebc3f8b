//! The dependency checks of the image validator: which command, which version pattern, which
//! minimum (the original's `VALIDATION_CHECKS`), and how one check is run and judged.

use std::time::Duration;

use serde::Serialize;

/// How long one check may take (the original's 30 s).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// One check: a shell command whose output names a version.
#[derive(Debug, Clone, Copy)]
pub struct CheckSpec {
    /// Name in the result (`node`, `claude-code`, `python`, `sqlite`).
    pub name: &'static str,
    /// Run with `sh -c`.
    pub command: &'static str,
    /// Text before the version number in the output (`v` for node, `Python ` for python).
    pub version_prefix: &'static str,
    /// Lowest version that passes; `None` = any version passes.
    pub min_version: Option<(u64, u64, u64)>,
}

/// The checks of a ClaudeCode image.
pub const CLAUDE_CODE: &[CheckSpec] = &[
    CheckSpec {
        name: "node",
        command: "node --version",
        version_prefix: "v",
        min_version: Some((20, 0, 0)),
    },
    CheckSpec {
        name: "claude-code",
        command: "claude --version 2>/dev/null || echo 'not found'",
        version_prefix: "",
        min_version: None,
    },
    CheckSpec {
        name: "python",
        command: "python3 --version",
        version_prefix: "Python ",
        min_version: Some((3, 12, 0)),
    },
];

/// The checks of an Agno image.
pub const AGNO: &[CheckSpec] = &[
    CheckSpec {
        name: "python",
        command: "python3 --version",
        version_prefix: "Python ",
        min_version: Some((3, 12, 0)),
    },
    CheckSpec {
        name: "sqlite",
        command: "sqlite3 --version",
        version_prefix: "",
        min_version: Some((3, 50, 0)),
    },
];

/// One entry of `validation_result.checks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// The version found, when the output named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `pass` or `fail`.
    pub status: &'static str,
    /// Why it failed (or a note when it passed without a version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CheckResult {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.status == "pass"
    }

    fn fail(name: &str, version: Option<String>, message: String) -> Self {
        Self {
            name: name.into(),
            version,
            status: "fail",
            message: Some(message),
        }
    }
}

/// Runs one check through [`crate::child::output`] (killed after `timeout`) and judges its
/// output. The command sees only `PATH`, `HOME` and the locale of the executor: a version
/// probe needs nothing else, and the executor's credentials stay out of it.
pub async fn run_check(check: &CheckSpec, timeout: Duration) -> CheckResult {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(check.command)
        .kill_on_drop(true)
        .env_clear();
    for key in ["PATH", "HOME", "LANG", "LC_ALL"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    match tokio::time::timeout(timeout, crate::child::output(&mut cmd)).await {
        Err(_) => CheckResult::fail(check.name, None, "Check timed out".into()),
        Ok(Err(e)) => CheckResult::fail(check.name, None, e.to_string()),
        Ok(Ok(out)) => judge(
            check,
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim(),
        ),
    }
}

/// The original's verdict on one command's exit and stdout.
pub fn judge(check: &CheckSpec, success: bool, stdout: &str) -> CheckResult {
    if !success || stdout.to_lowercase().contains("not found") {
        return CheckResult::fail(check.name, None, "Command failed or not found".into());
    }
    let Some(version) = find_version(stdout, check.version_prefix) else {
        return CheckResult {
            name: check.name.into(),
            version: None,
            status: "pass",
            message: Some("Detected but version not parsed".into()),
        };
    };
    if let (Some(min), Some(found)) = (check.min_version, parse_version(&version)) {
        if found < min {
            let min = format!("{}.{}.{}", min.0, min.1, min.2);
            return CheckResult::fail(
                check.name,
                Some(version.clone()),
                format!("Version {version} < required {min}"),
            );
        }
    }
    CheckResult {
        name: check.name.into(),
        version: Some(version),
        status: "pass",
        message: None,
    }
}

/// The first `<prefix>X.Y.Z` in `text`, as `X.Y.Z`.
fn find_version(text: &str, prefix: &str) -> Option<String> {
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at + prefix.len()..];
        let cand: String = after
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let parts: Vec<&str> = cand.split('.').collect();
        if parts.len() >= 3 && parts[..3].iter().all(|p| !p.is_empty()) {
            return Some(parts[..3].join("."));
        }
        // Move past this occurrence (at least one char).
        let step = at + prefix.len().max(1);
        rest = rest.get(step..)?;
    }
    None
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_found_after_their_prefix() {
        assert_eq!(find_version("v20.11.1", "v").as_deref(), Some("20.11.1"));
        assert_eq!(
            find_version("Python 3.11.2", "Python ").as_deref(),
            Some("3.11.2")
        );
        assert_eq!(
            find_version("3.45.1 2024-01-30 16:01:20 abc", "").as_deref(),
            Some("3.45.1")
        );
        assert_eq!(
            find_version("2.0.31 (Claude Code)", "").as_deref(),
            Some("2.0.31")
        );
        assert_eq!(find_version("no version", "v"), None);
    }

    #[test]
    fn the_minimum_is_compared_numerically() {
        let python = &AGNO[0];
        assert!(!judge(python, true, "Python 3.11.2").passed());
        assert!(judge(python, true, "Python 3.12.0").passed());
        assert!(judge(python, true, "Python 3.100.0").passed());
        let r = judge(python, true, "Python 3.9.18");
        assert_eq!(
            r.message.as_deref(),
            Some("Version 3.9.18 < required 3.12.0")
        );
        assert_eq!(r.version.as_deref(), Some("3.9.18"));
    }

    #[test]
    fn failures_and_unparsed_output() {
        let claude = &CLAUDE_CODE[1];
        assert!(!judge(claude, true, "not found").passed());
        assert!(!judge(claude, false, "1.0.0").passed());
        let r = judge(claude, true, "something");
        assert!(r.passed());
        assert_eq!(
            r.message.as_deref(),
            Some("Detected but version not parsed")
        );
    }
}
