//! Instruction files the agent reads, set up as the original's `pre_execute` (contract §5.3):
//! custom instruction files copied into `.claudecode/`, `CLAUDE.md -> AGENTS.md`, coordinate-mode
//! sub-agents in `.claude/agents/`, and `.git/info/exclude` entries so none of it is committed.
//! Every step is idempotent: it runs again for each subtask.

use std::path::{Path, PathBuf};

use crate::task::SubAgentSpec;

/// Folder the custom instruction files are copied into.
pub const CLAUDECODE_DIR: &str = ".claudecode";
/// Where coordinate-mode sub-agent files go, relative to the working directory.
pub const AGENTS_DIR: &str = ".claude/agents";

/// Copies each allowed custom instruction file present in the repository into `.claudecode/`;
/// returns whether any was copied. Names that are absolute or contain `..` are skipped, as the
/// original does.
pub async fn copy_custom_files(repo: &Path, names: &[String]) -> std::io::Result<bool> {
    let mut copied = false;
    for name in names {
        let rel = Path::new(name);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            tracing::warn!("skipping custom instruction file {name:?}: not a plain relative path");
            continue;
        }
        let src = repo.join(rel);
        // Only regular files inside the repository (a symlink could point anywhere).
        match tokio::fs::symlink_metadata(&src).await {
            Ok(m) if m.is_file() => {}
            _ => continue,
        }
        let Some(base) = rel.file_name() else {
            continue;
        };
        let dir = safe_dir(repo, Path::new(CLAUDECODE_DIR)).await?;
        let body = tokio::fs::read(&src).await?;
        write_no_follow(&dir.join(base), &body).await?;
        copied = true;
    }
    Ok(copied)
}

/// Creates `CLAUDE.md -> AGENTS.md` (or `Agents.md`/`agents.md`) unless `CLAUDE.md` is a regular
/// file; returns whether the link exists afterwards.
pub async fn link_claude_md(repo: &Path) -> std::io::Result<bool> {
    let claude = repo.join("CLAUDE.md");
    if let Ok(m) = tokio::fs::symlink_metadata(&claude).await {
        if m.is_file() {
            return Ok(false);
        }
    }
    for candidate in ["AGENTS.md", "Agents.md", "agents.md"] {
        if tokio::fs::symlink_metadata(repo.join(candidate))
            .await
            .is_ok_and(|m| m.is_file())
        {
            let _ = tokio::fs::remove_file(&claude).await;
            tokio::fs::symlink(candidate, &claude).await?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes one `.claude/agents/<slug>-<id>.md` per sub-agent (the original's format).
pub async fn write_sub_agents(target: &Path, agents: &[SubAgentSpec]) -> std::io::Result<()> {
    let dir = safe_dir(target, Path::new(AGENTS_DIR)).await?;
    for a in agents {
        let slug = slug(&a.name);
        let file = match a.id {
            Some(id) => format!("{slug}-{id}.md"),
            None => format!("{slug}.md"),
        };
        let description = a
            .description
            .clone()
            .unwrap_or_else(|| format!("Handle tasks related to {}", a.name))
            .replace(['\n', '\r'], " ")
            .replace('"', "'");
        let body = format!(
            "---\nname: {slug}\ndescription: \"{description}\"\nmodel: inherit\n---\n\n{}\n",
            a.system_prompt
        );
        write_no_follow(&dir.join(file), body.as_bytes()).await?;
    }
    Ok(())
}

/// `base/rel`, creating missing folders, refusing any component that is a symlink: a cloned
/// repository must not be able to redirect our writes outside itself.
async fn safe_dir(base: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let mut dir = base.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        match tokio::fs::symlink_metadata(&dir).await {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(std::io::Error::other(format!(
                    "refusing to write through the symlink {}",
                    dir.display()
                )))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a directory",
                    dir.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tokio::fs::create_dir(&dir).await?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

/// Writes a file, replacing a symlink at that name instead of following it.
async fn write_no_follow(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        tokio::fs::remove_file(path).await?;
    }
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .await?;
    f.write_all(body).await?;
    f.flush().await
}

/// Lower-case letters, digits and dashes: a safe file and agent name.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "agent".into()
    } else {
        out
    }
}

/// Adds `entries` to the repository's `.git/info/exclude` (each once).
pub async fn exclude(repo: &Path, entries: &[&str]) -> std::io::Result<()> {
    let git = repo.join(".git");
    if !tokio::fs::metadata(&git).await.is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let info = git.join("info");
    tokio::fs::create_dir_all(&info).await?;
    let path = info.join("exclude");
    let mut text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    let mut changed = false;
    for e in entries {
        if !text.lines().any(|l| l.trim() == *e) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(e);
            text.push('\n');
            changed = true;
        }
    }
    if changed {
        tokio::fs::write(&path, text).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_safe() {
        assert_eq!(slug("Code Reviewer!"), "code-reviewer");
        assert_eq!(slug("../../etc"), "etc");
        assert_eq!(slug("   "), "agent");
    }

    #[tokio::test]
    async fn files_links_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        std::fs::create_dir_all(repo.join(".git/info")).unwrap();
        std::fs::write(repo.join("AGENTS.md"), "rules").unwrap();
        std::fs::write(repo.join(".cursorrules"), "cursor").unwrap();
        let names = vec![
            ".cursorrules".into(),
            "../x".into(),
            ".windsurfrules".into(),
        ];
        assert!(copy_custom_files(repo, &names).await.unwrap());
        assert_eq!(
            std::fs::read_to_string(repo.join(".claudecode/.cursorrules")).unwrap(),
            "cursor"
        );
        assert!(link_claude_md(repo).await.unwrap());
        assert_eq!(
            std::fs::read_link(repo.join("CLAUDE.md")).unwrap(),
            Path::new("AGENTS.md")
        );
        assert!(link_claude_md(repo).await.unwrap(), "idempotent");
        exclude(repo, &[".claudecode/", "CLAUDE.md"]).await.unwrap();
        exclude(repo, &[".claudecode/", "CLAUDE.md"]).await.unwrap();
        let ex = std::fs::read_to_string(repo.join(".git/info/exclude")).unwrap();
        assert_eq!(ex, ".claudecode/\nCLAUDE.md\n");
    }

    #[tokio::test]
    async fn symlinks_in_the_repository_never_redirect_writes() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let repo = dir.path();
        std::fs::write(repo.join(".cursorrules"), "cursor").unwrap();
        std::os::unix::fs::symlink(outside.path(), repo.join(CLAUDECODE_DIR)).unwrap();
        let err = copy_custom_files(repo, &[".cursorrules".into()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        std::fs::remove_file(repo.join(CLAUDECODE_DIR)).unwrap();
        std::fs::create_dir(repo.join(CLAUDECODE_DIR)).unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, repo.join(".claudecode/.cursorrules")).unwrap();
        copy_custom_files(repo, &[".cursorrules".into()])
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(repo.join(".claudecode/.cursorrules")).unwrap(),
            "cursor"
        );
        std::os::unix::fs::symlink(outside.path(), repo.join(".claude")).unwrap();
        let agents = vec![SubAgentSpec {
            id: Some(1),
            name: "a".into(),
            description: None,
            system_prompt: "p".into(),
        }];
        assert!(write_sub_agents(repo, &agents).await.is_err());
        assert!(
            std::fs::read_dir(outside.path()).unwrap().count() == 1,
            "nothing written outside"
        );
    }
}
