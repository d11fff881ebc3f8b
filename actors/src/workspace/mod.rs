//! Workspace preparation: everything a subtask needs on disk before its agent runs (contract
//! §6, §5.3 `pre_execute`): the task directory, the repository clone (credentials through a
//! helper, never written down), instruction files, coordinate-mode sub-agents, skills and
//! attachments. It is slow I/O, so sessions run [`prepare`] in a task of its own and get the
//! [`Prepared`] result back as a message.

pub mod attachments;
pub mod clone_source;
pub mod download;
pub mod git;
pub mod instructions;
pub mod skills;
pub mod workbench;

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::agent::launcher::Lane;
use crate::config::{RuntimeConfig, Secret};
use crate::task::TaskSpec;
use git::GitCredentials;
use workbench::RepoState;

/// What the agent gets from preparation.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `<workspace_root>/<task_id>`: session id file, Claude config, attachments.
    pub task_dir: PathBuf,
    /// Where the agent works: the clone, or the task directory.
    pub workdir: PathBuf,
    /// The prompt with attachment markers rewritten.
    pub prompt: String,
    /// The repository and its state at the start of the subtask (for the workbench).
    pub repo: Option<RepoState>,
    /// Extra environment for the agent process (`GIT_*` and the credential helper's
    /// variables, so the agent can push). Holds secrets: never log it.
    pub agent_env: Vec<(String, Secret)>,
    /// Things that went wrong without failing the subtask (skills, attachments).
    pub notices: Vec<String>,
}

/// Why preparation failed; the texts carry no credentials.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Moving the clone into place failed.
    #[error("could not move the clone into place: {0}")]
    File(#[from] std::io::Error),
    /// The subtask was cancelled while its workspace was being prepared.
    #[error("cancelled")]
    Cancelled,
    /// The task id cannot name a directory under the workspace root.
    #[error("task id {0} cannot be used as a workspace directory")]
    BadTaskId(i64),
    /// Creating or writing a file failed.
    #[error("could not prepare {path}: {message}")]
    Io {
        /// What we tried to create or write.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The branch name cannot be a branch (it would read as an option, or holds control
    /// characters).
    #[error("invalid branch name {0:?}")]
    BadBranch(String),
    /// The clone failed.
    #[error("Failed to clone {url} into {path}: {message}")]
    Clone {
        /// The clean URL.
        url: String,
        /// The destination.
        path: String,
        /// git's message, scrubbed.
        message: String,
    },
}

pub use crate::task_dir::create_private_dir;

/// Percent-encodes everything but RFC 3986's unreserved characters (URL path segments and
/// query values; also how a secret may appear inside a URL).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `<root>/<task_id>`, refusing anything that would not be a plain child of the root.
pub fn task_dir(root: &Path, task_id: i64) -> Result<PathBuf, PrepareError> {
    if task_id < 0 {
        return Err(PrepareError::BadTaskId(task_id));
    }
    let dir = root.join(task_id.to_string());
    if dir.parent() != Some(root) {
        return Err(PrepareError::BadTaskId(task_id));
    }
    Ok(dir)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> PrepareError + '_ {
    move |e| PrepareError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What an agent kind needs from workspace preparation. Each agent says (its
/// `WORKSPACE_NEEDS`, looked up by [`crate::agent::AgentKind::workspace_needs`]), so this layer
/// never tests the agent kind nor knows an agent's file names.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkspaceNeeds {
    /// Clone `git_url` into the task directory and export the `GIT_*` variables.
    pub clone: bool,
    /// In the clone: copy the custom instruction files into `.claudecode/` and link
    /// `CLAUDE.md` to `AGENTS.md` (contract §6.3).
    pub instruction_files: bool,
    /// Write coordinate-mode sub-agents into the clone's `.claude/agents/`.
    pub sub_agents: bool,
    /// Deploy the task's skills into `<task dir>/<this>/skills/` (none when `None`).
    pub skills_under: Option<&'static str>,
    /// Download attachments and point the prompt at them.
    pub attachments: bool,
    /// Names in the task directory the agent keeps its own files under; a clone never lands
    /// on one of them.
    pub reserved: &'static [&'static str],
}

impl WorkspaceNeeds {
    /// Nothing to prepare beyond the task directory (an agent starts from this and sets what
    /// it needs: `WorkspaceNeeds { reserved: &[..], ..WorkspaceNeeds::NOTHING }`).
    pub const NOTHING: Self = Self {
        clone: false,
        instruction_files: false,
        sub_agents: false,
        skills_under: None,
        attachments: false,
        reserved: &[],
    };
}

/// Prepares the workspace of one subtask as `needs` says; `progress` gets human messages for
/// RUNNING callbacks.
pub async fn prepare(
    cfg: &RuntimeConfig,
    spec: &TaskSpec,
    needs: &WorkspaceNeeds,
    progress: &(dyn Fn(String) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<Prepared, PrepareError> {
    let task_dir = task_dir(&cfg.workspace_root, spec.task_id)?;
    // On a launcher thread, at the agents' priority, as the launch that follows: tokio's
    // blocking pool runs at the executor's, and a thread of it woken for one `mkdir` preempts
    // an agent.
    let dir = task_dir.clone();
    let made = crate::agent::launcher::run(cfg.agent_priority, Lane::Launch, move || {
        crate::task_dir::create_private_dir_blocking(&dir)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    made.map_err(io_err(&task_dir))?;
    let ws = &spec.workspace;
    let mut out = Prepared {
        task_dir: task_dir.clone(),
        workdir: task_dir.clone(),
        prompt: spec.prompt.clone(),
        repo: None,
        agent_env: Vec::new(),
        notices: Vec::new(),
    };
    if let Some(url) = spec.git_url.as_deref().filter(|_| needs.clone) {
        let (clean, url_creds) = git::split_credentials(url.trim());
        if let Err(message) = clone_source::check(&clean, &cfg.security.local_clone_dirs).await {
            return Err(PrepareError::Clone {
                url: crate::mask::mask_str(&clean),
                path: task_dir.display().to_string(),
                message: message.into(),
            });
        }
        let creds = match (&ws.git_token, url_creds) {
            (Some(token), _) => Some(GitCredentials {
                username: ws.git_username.clone().unwrap_or_else(|| "token".into()),
                // The backend may send the token AES-encrypted (contract §6.2).
                token: Secret::new(cfg.workspace.cipher.decrypt(token.expose())),
            }),
            (None, Some((user, pass))) if !pass.is_empty() => Some(GitCredentials {
                username: if user.is_empty() {
                    "token".into()
                } else {
                    user
                },
                token: Secret::new(pass),
            }),
            _ => None,
        };
        // No token in the task: the original reads one from `~/.ssh/<domain>`.
        let creds = match creds {
            Some(c) => Some(c),
            None => token_file(&clean).await.map(|token| GitCredentials {
                username: ws.git_username.clone().unwrap_or_else(|| "token".into()),
                token,
            }),
        };
        let branch = spec
            .branch
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty());
        if let Some(b) = branch.filter(|b| b.starts_with('-') || b.chars().any(char::is_control)) {
            return Err(PrepareError::BadBranch(b.to_string()));
        }
        let dest = task_dir.join(repo_dir_name(&clean, needs.reserved));
        let helper = match &creds {
            Some(_) => Some(
                git::write_helper(&task_dir)
                    .await
                    .map_err(io_err(&task_dir))?,
            ),
            None => None,
        };
        if !tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            progress(format!("Cloning {}", crate::mask::mask_text(&clean)));
            tracing::info!(
                "task {}: cloning {} into {}",
                spec.task_id,
                crate::mask::mask_text(&clean),
                dest.display()
            );
            let job = git::CloneJob {
                url: &clean,
                branch: spec
                    .branch
                    .as_deref()
                    .map(str::trim)
                    .filter(|b| !b.is_empty()),
                dest: &dest,
                helper: helper.as_deref(),
                creds: creds.as_ref(),
                timeout: cfg.workspace.git_timeout,
            };
            let staging = git::clone(job, cancel).await.map_err(|e| match e {
                git::GitError::Cancelled => PrepareError::Cancelled,
                other => PrepareError::Clone {
                    url: crate::mask::mask_text(&clean),
                    path: dest.display().to_string(),
                    message: other.to_string(),
                },
            })?;
            let configured = configure_clone(cfg, spec, &staging, cancel).await;
            git::finish_clone(&staging, &dest, configured).await?;
        }
        if let Some(h) = &helper {
            // Every subtask: the repository names the helper (also for a clone made before
            // credentials were given), and a rotated token reaches it through the agent's env.
            configure_helper(cfg, &dest, h, cancel).await?;
        }
        out.agent_env
            .push(("GIT_URL".into(), Secret::new(clean.clone())));
        if let Some(c) = &creds {
            for (k, v) in c.env() {
                out.agent_env.push((k.into(), Secret::new(v)));
            }
        }
        if needs.instruction_files {
            if let Err(e) = setup_instructions(cfg, &dest).await {
                tracing::warn!("task {}: instruction files: {e}", spec.task_id);
                out.notices
                    .push(format!("instruction files were not set up: {e}"));
            }
        }
        out.repo = Some(workbench::repo_state(&dest, spec.branch.as_deref(), cancel).await);
        out.workdir = dest;
    }
    for (name, value) in [
        ("GIT_DOMAIN", &ws.git_domain),
        ("GIT_REPO", &ws.git_repo),
        ("GIT_REPO_ID", &ws.git_repo_id),
        ("BRANCH_NAME", &spec.branch),
    ] {
        if let Some(v) = value {
            out.agent_env.push((name.into(), Secret::new(v.clone())));
        }
    }
    if needs.sub_agents && ws.mode.as_deref() == Some("coordinate") && !ws.sub_agents.is_empty() {
        let written = async {
            instructions::write_sub_agents(&out.workdir, &ws.sub_agents).await?;
            instructions::exclude(&out.workdir, &[".claude/agents/"]).await
        };
        if let Err(e) = written.await {
            tracing::warn!("task {}: sub-agent files: {e}", spec.task_id);
            out.notices
                .push(format!("sub-agent files were not written: {e}"));
        }
    }
    if cancel.is_cancelled() {
        return Err(PrepareError::Cancelled);
    }
    let skills_under = needs.skills_under.filter(|_| !ws.skills.is_empty());
    let attachments = needs.attachments && !ws.attachments.is_empty();
    let http = (skills_under.is_some() || attachments).then(download::client);
    if let (Some(under), Some(http)) = (skills_under, &http) {
        match &ws.auth_token {
            Some(token) => {
                progress("Downloading skills".into());
                let dir = task_dir.join(under).join("skills");
                let problems = skills::deploy(
                    &cfg.workspace,
                    http,
                    token,
                    &ws.team_namespace,
                    &dir,
                    &ws.skills,
                    cancel,
                )
                .await;
                out.notices.extend(problems);
            }
            None => out
                .notices
                .push("skills were not deployed: the task has no auth_token".into()),
        }
    }
    if let (true, Some(http)) = (attachments, &http) {
        progress("Downloading attachments".into());
        let dir = attachments::folder(&task_dir, spec.task_id, spec.subtask_id);
        let results = attachments::fetch_all(
            &cfg.workspace,
            http,
            ws.auth_token.as_ref(),
            &dir,
            &ws.attachments,
            cancel,
        )
        .await;
        out.prompt = attachments::rewrite_prompt(&out.prompt, &results);
    }
    if cancel.is_cancelled() {
        return Err(PrepareError::Cancelled);
    }
    if let Some(user) = cfg.security.agent_user {
        let dir = task_dir.clone();
        tokio::task::spawn_blocking(move || crate::task_dir::hand_over(&dir, user))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(io_err(&task_dir))?;
    }
    Ok(out)
}

/// `$HOME/.ssh/<host>` of an http(s) URL, trimmed, when it exists and is not empty.
async fn token_file(url: &str) -> Option<Secret> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split(['/', ':']).next()?;
    if host.is_empty() || host.starts_with('.') || host.contains(['\\', '\0']) {
        return None;
    }
    let home = std::env::var_os("HOME")?;
    let text = tokio::fs::read_to_string(Path::new(&home).join(".ssh").join(host))
        .await
        .ok()?;
    Secret::non_empty(Some(text.trim().to_string()))
}

/// Names the credential helper in the repository's own config (this repository only).
async fn configure_helper(
    cfg: &RuntimeConfig,
    repo: &Path,
    helper: &Path,
    cancel: &CancellationToken,
) -> Result<(), PrepareError> {
    let value = git::helper_config_value(helper);
    // An empty value first resets helpers inherited from global config.
    let settings = [
        vec!["--unset-all", "credential.helper"],
        vec!["--add", "credential.helper", ""],
        vec!["--add", "credential.helper", value.as_str()],
    ];
    for (i, s) in settings.iter().enumerate() {
        let mut args = vec!["config".to_string(), "--local".to_string()];
        args.extend(s.iter().map(|a| a.to_string()));
        match git::run(
            &args,
            repo,
            None,
            cfg.workspace.git_timeout,
            cancel,
            "config",
        )
        .await
        {
            Ok(_) => {}
            Err(git::GitError::Cancelled) => return Err(PrepareError::Cancelled),
            // `--unset-all` fails when there was nothing to unset.
            Err(_) if i == 0 => {}
            Err(e) => {
                return Err(PrepareError::Io {
                    path: repo.display().to_string(),
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// After a fresh clone (before it is moved into place): hooks path and author identity.
async fn configure_clone(
    cfg: &RuntimeConfig,
    spec: &TaskSpec,
    repo: &Path,
    cancel: &CancellationToken,
) -> Result<(), PrepareError> {
    let ws = &spec.workspace;
    let mut settings: Vec<Vec<String>> = Vec::new();
    if tokio::fs::metadata(repo.join(".githooks"))
        .await
        .is_ok_and(|m| m.is_dir())
    {
        settings.push(vec!["core.hooksPath".into(), ".githooks".into()]);
    }
    if let Some(login) = &ws.git_login {
        let email = ws.git_email.clone().unwrap_or_else(|| match &ws.git_id {
            Some(id) => format!("{id}+{login}@users.noreply.github.com"),
            None => format!("{login}@users.noreply.github.com"),
        });
        settings.push(vec!["user.name".into(), login.clone()]);
        settings.push(vec!["user.email".into(), email]);
    }
    for s in settings {
        let mut args = vec!["config".to_string(), "--local".to_string()];
        args.extend(s);
        git::run(
            &args,
            repo,
            None,
            cfg.workspace.git_timeout,
            cancel,
            "config",
        )
        .await
        .map_err(|e| match e {
            git::GitError::Cancelled => PrepareError::Cancelled,
            e => PrepareError::Io {
                path: repo.display().to_string(),
                message: e.to_string(),
            },
        })?;
    }
    Ok(())
}

/// The clone's folder name: the original's, unless it would land on one of the executor's own
/// files in the task directory (then `repo-<name>`).
fn repo_dir_name(url: &str, reserved: &[&str]) -> String {
    let name = git::repo_name(url);
    if name == ".executor"
        || reserved.contains(&name.as_str())
        || name.contains(":executor:attachments")
        || name.ends_with(".cloning")
    {
        format!("repo-{}", name.trim_start_matches('.'))
    } else {
        name
    }
}

/// `.claudecode/` copies, `CLAUDE.md` link and their exclude entries.
async fn setup_instructions(cfg: &RuntimeConfig, repo: &Path) -> std::io::Result<()> {
    let mut excludes = Vec::new();
    if instructions::copy_custom_files(repo, &cfg.workspace.custom_instruction_files).await? {
        excludes.push(".claudecode/");
    }
    if instructions::link_claude_md(repo).await? {
        excludes.push("CLAUDE.md");
    }
    instructions::exclude(repo, &excludes).await
}
