//! Which `git_url`s a task may clone from. A local source (`file://…`, a plain path) would let
//! a task clone any repository on the executor's machine — other tasks' clones included — so
//! local sources are refused unless they lie under a directory the operator lists in
//! `ALLOW_LOCAL_CLONE_DIRS` (e.g. an air-gapped mirror).

use std::path::{Path, PathBuf};

/// What a refused source is told (no path of the machine is echoed).
pub const LOCAL_REFUSED: &str = "local clone sources (file:// URLs and paths) are refused; \
     the operator can allow directories with ALLOW_LOCAL_CLONE_DIRS";

/// The local path a `git_url` names, or `None` for a remote URL (`https://`, `ssh://`,
/// `git@host:path`). Mirrors git's own rule: a `scheme://` URL is remote unless its scheme is
/// `file`; without `://`, a colon before the first slash is the scp-like remote syntax.
pub fn local_path(url: &str) -> Option<PathBuf> {
    let url = url.trim();
    if let Some(i) = url.find("://") {
        let scheme = &url[..i];
        if !scheme.eq_ignore_ascii_case("file") {
            return None;
        }
        let rest = &url[i + 3..];
        // file://host/path: the host part is ignored by git for localhost and empty hosts.
        let path = rest.find('/').map_or("", |j| &rest[j..]);
        return Some(PathBuf::from(path));
    }
    if url.len() >= 5 && url[..5].eq_ignore_ascii_case("file:") {
        return Some(PathBuf::from(&url[5..]));
    }
    let colon = url.find(':');
    let slash = url.find('/');
    match (colon, slash) {
        (Some(c), Some(s)) if c < s => None,
        (Some(_), None) => None,
        _ => Some(PathBuf::from(url)),
    }
}

/// `Ok` when `url` may be cloned: a remote URL, or a local one under an allowed directory
/// (both sides resolved, so `..` and symlinks cannot climb out). The error is for the user.
pub async fn check(url: &str, allowed: &[PathBuf]) -> Result<(), &'static str> {
    let Some(path) = local_path(url) else {
        return Ok(());
    };
    if allowed.is_empty() {
        return Err(LOCAL_REFUSED);
    }
    let Ok(real) = tokio::fs::canonicalize(&path).await else {
        return Err(LOCAL_REFUSED);
    };
    for dir in allowed {
        if let Ok(dir) = tokio::fs::canonicalize(dir).await {
            if is_under(&real, &dir) {
                return Ok(());
            }
        }
    }
    Err(LOCAL_REFUSED)
}

fn is_under(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_local_from_remote_like_git() {
        for remote in [
            "https://h/o/r.git",
            "ssh://git@h/o/r.git",
            "git@github.com:o/r.git",
            "h:r.git",
        ] {
            assert_eq!(local_path(remote), None, "{remote}");
        }
        for (local, path) in [
            ("file:///srv/r.git", "/srv/r.git"),
            ("FILE://localhost/srv/r", "/srv/r"),
            ("/srv/r.git", "/srv/r.git"),
            ("../other/1/repo", "../other/1/repo"),
            ("./a:b/c", "./a:b/c"),
            ("file:/srv/x", "/srv/x"),
        ] {
            assert_eq!(local_path(local), Some(PathBuf::from(path)), "{local}");
        }
    }

    #[tokio::test]
    async fn only_listed_directories_are_allowed() {
        let root = tempfile::tempdir().unwrap();
        let mirror = root.path().join("mirror");
        std::fs::create_dir_all(mirror.join("r.git")).unwrap();
        let inside = mirror.join("r.git").display().to_string();
        assert_eq!(check(&inside, &[]).await, Err(LOCAL_REFUSED));
        assert_eq!(check(&inside, std::slice::from_ref(&mirror)).await, Ok(()));
        let escape = format!("{}/r.git/../..", mirror.display());
        assert_eq!(
            check(&escape, std::slice::from_ref(&mirror)).await,
            Err(LOCAL_REFUSED)
        );
        assert_eq!(check("https://h/r.git", &[]).await, Ok(()));
    }
}
