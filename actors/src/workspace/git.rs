//! Cloning a task's repository without ever writing its credentials down (the original puts the
//! token in the clone URL, so it lands in process arguments, logs, errors and `.git/config`).
//!
//! Credentials reach git through a credential helper: a tiny script in the task directory that
//! prints `EXECUTOR_GIT_USERNAME`/`EXECUTOR_GIT_TOKEN` from its *environment*. The clone runs
//! with those variables set; afterwards the repository's own config names the same helper, and
//! the agent process gets the same variables, so `git push` by the agent works for this repo
//! only. The script holds no secret; process listings show only the clean URL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;

/// Environment variable the helper reads the user name from.
pub const USERNAME_ENV: &str = "EXECUTOR_GIT_USERNAME";
/// Environment variable the helper reads the token from.
pub const TOKEN_ENV: &str = "EXECUTOR_GIT_TOKEN";
/// Where the helper lives, relative to the task directory.
pub const HELPER_PATH: &str = ".executor/git-credential-helper";

/// Most bytes of git's stderr kept for an error message.
const STDERR_KEEP: usize = 16 * 1024;
/// Most bytes of git's stdout read (a huge untracked tree must not cost memory every refresh);
/// git is stopped when it has more to say.
const STDOUT_LIMIT: u64 = 4 * 1024 * 1024;

/// Credentials for one repository, kept out of every URL and argument.
#[derive(Clone, Debug)]
pub struct GitCredentials {
    /// User name (`token` when only a token was given, as the original).
    pub username: String,
    /// The token or password.
    pub token: Secret,
}

impl GitCredentials {
    /// The variables the helper reads, for the clone and for the agent's environment.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            (USERNAME_ENV, self.username.clone()),
            (TOKEN_ENV, self.token.expose().to_string()),
        ]
    }

    /// Replaces the secret wherever it appears in `text`, plus any URL user-info.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = strip_userinfo(text);
        let token = self.token.expose();
        if token.len() >= 4 {
            out = out.replace(token, "***");
            let encoded = super::percent_encode(token);
            if encoded != token {
                out = out.replace(&encoded, "***");
            }
        }
        crate::mask::mask_str(&out)
    }
}

/// Why a git command failed; every text is already scrubbed of credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git ran and failed.
    #[error("{0}")]
    Failed(String),
    /// git did not finish in time and was killed.
    #[error("git {what} did not finish within {secs} s and was stopped")]
    TimedOut {
        /// Which command.
        what: &'static str,
        /// The limit.
        secs: u64,
    },
    /// The subtask was cancelled while git ran.
    #[error("cancelled")]
    Cancelled,
    /// git could not be started or its files written.
    #[error("{0}")]
    Io(String),
}

/// Splits user-info out of an `http(s)://user:pass@host/...` URL: returns the clean URL and the
/// credentials it carried (percent-decoded). Other URLs are returned as they are.
pub fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end + 3..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..host_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), None);
    };
    let userinfo = &authority[..at];
    let clean = format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]);
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (clean, Some((percent_decode(user), percent_decode(pass))))
}

/// Removes `user[:pass]@` from every `scheme://...` URL in a text (for error messages).
pub fn strip_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// The directory name the original gives a clone: the URL's last path segment without `.git`
/// and without anything from GitLab's `/-/`. Never empty, `.` or `..`.
pub fn repo_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let path = path.split("/-/").next().unwrap_or(path);
    let last = path
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("");
    let name = last.strip_suffix(".git").unwrap_or(last);
    let name: String = name
        .chars()
        .map(|c| if c.is_control() || c == '\\' { '_' } else { c })
        .collect();
    match name.as_str() {
        "" | "." | ".." => "repo".into(),
        _ => name,
    }
}

/// Writes the credential helper script (mode 0700) and returns its path.
pub async fn write_helper(task_dir: &Path) -> std::io::Result<PathBuf> {
    use tokio::io::AsyncWriteExt;
    let path = task_dir.join(HELPER_PATH);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let script = format!(
        "#!/bin/sh\n# Written by the executor: git credentials come from the environment only.\n\
         test \"$1\" = get || exit 0\n\
         test -n \"${TOKEN_ENV}\" || exit 0\n\
         printf 'username=%s\\npassword=%s\\n' \"${{{USERNAME_ENV}:-token}}\" \"${TOKEN_ENV}\"\n"
    );
    let tmp = path.with_extension("tmp");
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(&tmp)
        .await?;
    f.write_all(script.as_bytes()).await?;
    f.flush().await?;
    drop(f);
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}

/// The `credential.helper` value that runs the script (git passes it to `sh`).
pub fn helper_config_value(helper: &Path) -> String {
    let quoted = helper.display().to_string().replace('\'', "'\\''");
    format!("!'{quoted}'")
}

/// What a clone needs.
pub struct CloneJob<'a> {
    /// Clean URL (no user-info).
    pub url: &'a str,
    /// Branch to check out (`--branch <b> --single-branch`).
    pub branch: Option<&'a str>,
    /// Final location of the working tree.
    pub dest: &'a Path,
    /// The credential helper script, when there are credentials.
    pub helper: Option<&'a Path>,
    /// The credentials.
    pub creds: Option<&'a GitCredentials>,
    /// Kill git after this long.
    pub timeout: Duration,
}

/// Clones into a temporary sibling of `dest` and returns it: the caller configures it and
/// moves it into place with [`finish_clone`], so a failed, killed or half-configured clone never
/// leaves a tree that a follow-up would take for the repository.
pub async fn clone(job: CloneJob<'_>, cancel: &CancellationToken) -> Result<PathBuf, GitError> {
    let staging = staging_path(job.dest);
    let parent = job.dest.parent().unwrap_or(Path::new("."));
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let mut args: Vec<String> = vec!["-c".into(), "credential.helper=".into()];
    if let Some(h) = job.helper {
        args.push("-c".into());
        args.push(format!("credential.helper={}", helper_config_value(h)));
    }
    args.extend(["clone".into(), "--quiet".into()]);
    if let Some(b) = job.branch {
        args.extend(["--branch".into(), b.to_string(), "--single-branch".into()]);
    }
    args.extend([
        "--".into(),
        job.url.to_string(),
        staging.display().to_string(),
    ]);
    match run(&args, parent, job.creds, job.timeout, cancel, "clone").await {
        Ok(_) => Ok(staging),
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            Err(e)
        }
    }
}

fn staging_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.cloning"))
}

/// Moves a configured clone into place (or removes it when `ok` is an error).
pub async fn finish_clone<E>(staging: &Path, dest: &Path, ok: Result<(), E>) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    let moved = match ok {
        Ok(()) => tokio::fs::rename(staging, dest).await.map_err(E::from),
        Err(e) => Err(e),
    };
    if moved.is_err() {
        let _ = tokio::fs::remove_dir_all(staging).await;
    }
    moved
}

/// Runs one git command in `cwd` (no terminal prompts, no ssh password prompts), killing its
/// whole process group on timeout or cancel. Returns stdout.
pub async fn run(
    args: &[String],
    cwd: &Path,
    creds: Option<&GitCredentials>,
    timeout: Duration,
    cancel: &CancellationToken,
    what: &'static str,
) -> Result<String, GitError> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GIT_TERMINAL_PROMPT", "0")
        // No `ext::`/`fd::` transports: a task's URL must not run commands.
        .env("GIT_ALLOW_PROTOCOL", "http:https:ssh:git:file")
        .env("LC_ALL", "C")
        // Our queries must never take index.lock from under the agent's own git commands.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .env_remove(USERNAME_ENV)
        .env_remove(TOKEN_ENV)
        .kill_on_drop(true)
        .process_group(0);
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    if let Some(c) = creds {
        for (k, v) in c.env() {
            cmd.env(k, v);
        }
    }
    let mut child = crate::child::spawn(&mut cmd, crate::child::ChildKind::Helper)
        .map_err(|e| GitError::Io(format!("could not run git: {e}")))?;
    let pid = child.id();
    let mut stdout = child.take_stdout();
    let mut stderr = child.take_stderr();
    let read_out = async {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(STDOUT_LIMIT).read_to_end(&mut buf).await;
        }
        // Past the limit nobody reads: close the pipe so git ends (SIGPIPE) instead of blocking.
        drop(stdout.take());
        buf
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        if buf.len() > STDERR_KEEP {
            buf.drain(..buf.len() - STDERR_KEEP);
        }
        buf
    };
    let work = async {
        let (out, err, status) = tokio::join!(read_out, read_err, child.wait());
        (out, err, status)
    };
    let kill_group = || {
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: signalling the process group git was started in (its own).
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = tokio::time::sleep(timeout) => {
            kill_group();
            return Err(GitError::TimedOut { what, secs: timeout.as_secs() });
        }
        _ = cancel.cancelled() => {
            kill_group();
            return Err(GitError::Cancelled);
        }
    };
    let (out, err, status) = outcome;
    let status = status.map_err(|e| GitError::Io(format!("git {what}: {e}")))?;
    if status.success() {
        return Ok(String::from_utf8_lossy(&out).into_owned());
    }
    let text = String::from_utf8_lossy(&err).trim().to_string();
    let text = match creds {
        Some(c) => c.scrub(&text),
        None => crate::mask::mask_str(&strip_userinfo(&text)),
    };
    Err(GitError::Failed(if text.is_empty() {
        format!("git {what} failed ({status})")
    } else {
        text
    }))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_urls() {
        let (clean, creds) = split_credentials("https://bob:p%40ss@git.example/org/repo.git");
        assert_eq!(clean, "https://git.example/org/repo.git");
        assert_eq!(creds, Some(("bob".into(), "p@ss".into())));
        assert_eq!(
            split_credentials("git@github.com:org/repo.git"),
            ("git@github.com:org/repo.git".into(), None)
        );
        assert_eq!(
            strip_userinfo("fatal: unable to access 'https://u:tok@h/x.git/': 403"),
            "fatal: unable to access 'https://h/x.git/': 403"
        );
    }

    #[test]
    fn repo_names_follow_the_original() {
        assert_eq!(repo_name("https://g.example/org/src.git"), "src");
        assert_eq!(
            repo_name("https://gitlab.example/g/proj/-/tree/main"),
            "proj"
        );
        assert_eq!(repo_name("git@github.com:org/tool.git"), "tool");
        assert_eq!(repo_name("https://h/org/x/"), "x");
        assert_eq!(repo_name("https://h/.."), "repo");
        assert_eq!(repo_name(""), "repo");
    }

    #[test]
    fn scrub_hides_the_token_in_any_form() {
        let c = GitCredentials {
            username: "token".into(),
            token: Secret::new("s3cr3t/tok"),
        };
        let s = c.scrub("auth failed for s3cr3t/tok and s3cr3t%2Ftok at https://a:b@h/x");
        assert!(!s.contains("s3cr3t"), "{s}");
        assert!(!s.contains("a:b@"), "{s}");
    }
}
