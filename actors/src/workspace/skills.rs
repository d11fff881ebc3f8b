//! Skills (contract §6.5): looked up by name in the backend, downloaded as ZIP archives and
//! unpacked into the task's Claude config directory (`<task>/.claude/skills/<name>/`). An
//! archive with an absolute path, a `..` component or a symlink entry is refused as a whole;
//! unpacking is bounded in size. A failed skill never fails the subtask.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::download;
use crate::config::{Secret, WorkspaceConfig};

/// Unpacked size allowed per archive, as a multiple of the archive size limit.
const UNPACK_FACTOR: u64 = 10;
/// Most entries accepted in one archive.
const MAX_ENTRIES: usize = 10_000;
/// Largest lookup answer read.
const LOOKUP_LIMIT: usize = 1024 * 1024;

/// Deploys every skill; returns one message per skill that could not be deployed.
pub async fn deploy(
    cfg: &WorkspaceConfig,
    http: &reqwest::Client,
    token: &Secret,
    namespace: &str,
    skills_dir: &Path,
    names: &[String],
    cancel: &CancellationToken,
) -> Vec<String> {
    let mut problems = Vec::new();
    if cfg.skill_clear_cache {
        let _ = tokio::fs::remove_dir_all(skills_dir).await;
    }
    if let Err(e) = super::create_private_dir(skills_dir).await {
        return vec![format!("cannot create {}: {e}", skills_dir.display())];
    }
    for name in names {
        if cancel.is_cancelled() {
            break;
        }
        if let Err(e) = deploy_one(cfg, http, token, namespace, skills_dir, name, cancel).await {
            tracing::warn!("skill {name:?} not deployed: {e}");
            problems.push(format!("skill {name}: {e}"));
        }
    }
    problems
}

async fn deploy_one(
    cfg: &WorkspaceConfig,
    http: &reqwest::Client,
    token: &Secret,
    namespace: &str,
    skills_dir: &Path,
    name: &str,
    cancel: &CancellationToken,
) -> Result<(), String> {
    if !is_plain_name(name) {
        return Err("not a valid skill name".into());
    }
    let lookup = format!(
        "{}/api/v1/kinds/skills?name={}&namespace={}",
        cfg.api_base,
        super::percent_encode(name),
        super::percent_encode(namespace)
    );
    let found = download::json(
        http,
        &lookup,
        Some(token),
        LOOKUP_LIMIT,
        cfg.download_timeout,
    )
    .await
    .map_err(|e| format!("lookup failed: {e}"))?;
    let item = found
        .pointer("/items/0")
        .ok_or_else(|| "not found in the backend".to_string())?;
    let id = match item.pointer("/metadata/labels/id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("the backend's answer has no metadata.labels.id".into()),
    };
    let ns = item
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(namespace);
    let url = format!(
        "{}/api/v1/kinds/skills/{}/download?namespace={}",
        cfg.api_base,
        super::percent_encode(&id),
        super::percent_encode(ns)
    );
    let archive = skills_dir.join(format!(".{name}.zip"));
    download::to_file(
        http,
        &url,
        Some(token),
        &archive,
        cfg.max_skill_bytes,
        cfg.download_timeout,
        cancel,
    )
    .await
    .map_err(|e| format!("download failed: {e}"))?;
    let staging = skills_dir.join(format!(".{name}.unpacking"));
    let (a, s, limit) = (
        archive.clone(),
        staging.clone(),
        cfg.max_skill_bytes.saturating_mul(UNPACK_FACTOR),
    );
    let unpacked = tokio::task::spawn_blocking(move || unpack(&a, &s, limit))
        .await
        .map_err(|e| format!("unpack task failed: {e}"))
        .and_then(|r| r);
    let _ = tokio::fs::remove_file(&archive).await;
    let result = async {
        unpacked?;
        let src = staging.join(name);
        if !tokio::fs::metadata(&src).await.is_ok_and(|m| m.is_dir()) {
            return Err(format!("the archive has no top-level folder {name}/"));
        }
        let dest = skills_dir.join(name);
        let _ = tokio::fs::remove_dir_all(&dest).await;
        tokio::fs::rename(&src, &dest)
            .await
            .map_err(|e| format!("could not install: {e}"))
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    result
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with('.')
}

/// Checks every entry first, then extracts: nothing is written from a refused archive.
pub fn unpack(archive: &Path, dest: &Path, max_unpacked: u64) -> Result<(), String> {
    let file = std::fs::File::open(archive).map_err(|e| format!("cannot open archive: {e}"))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| format!("not a valid ZIP archive: {e}"))?;
    if zip.len() > MAX_ENTRIES {
        return Err(format!("more than {MAX_ENTRIES} entries"));
    }
    let mut plan: Vec<(usize, PathBuf, bool)> = Vec::with_capacity(zip.len());
    let mut declared: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| format!("unreadable entry: {e}"))?;
        let raw = entry.name().to_string();
        let rel = safe_relative(&raw).ok_or_else(|| format!("refused: unsafe path {raw:?}"))?;
        if entry.is_symlink() {
            return Err(format!("refused: symlink entry {raw:?}"));
        }
        declared = declared.saturating_add(entry.size());
        if declared > max_unpacked {
            return Err(format!(
                "refused: unpacks to more than {max_unpacked} bytes"
            ));
        }
        plan.push((i, rel, entry.is_dir()));
    }
    std::fs::create_dir_all(dest).map_err(|e| format!("cannot create folder: {e}"))?;
    let mut written: u64 = 0;
    for (i, rel, is_dir) in plan {
        let target = dest.join(&rel);
        if is_dir {
            std::fs::create_dir_all(&target).map_err(|e| format!("cannot create folder: {e}"))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create folder: {e}"))?;
        }
        let entry = zip
            .by_index(i)
            .map_err(|e| format!("unreadable entry: {e}"))?;
        let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        let mut out =
            std::fs::File::create(&target).map_err(|e| format!("cannot write file: {e}"))?;
        // Bound the real output too: a declared size can lie.
        let budget = max_unpacked.saturating_sub(written);
        let n = std::io::copy(&mut entry.take(budget + 1), &mut out)
            .map_err(|e| format!("cannot unpack {}: {e}", rel.display()))?;
        written += n;
        if written > max_unpacked {
            return Err(format!(
                "refused: unpacks to more than {max_unpacked} bytes"
            ));
        }
        if executable {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755));
        }
    }
    Ok(())
}

/// A relative path of normal components only (no root, no `..`, no drive prefixes).
fn safe_relative(raw: &str) -> Option<PathBuf> {
    if raw.starts_with('/') || raw.starts_with('\\') || raw.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for part in raw.split(['/', '\\']) {
        match part {
            "" | "." => continue,
            ".." => return None,
            p if p.contains(':') => return None,
            p => out.push(p),
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn archive(
        entries: &[(&str, &[u8])],
        symlink: Option<(&str, &str)>,
    ) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(f.reopen().unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        for (name, body) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(body).unwrap();
        }
        if let Some((name, target)) = symlink {
            w.add_symlink(name, target, opts).unwrap();
        }
        w.finish().unwrap();
        f
    }

    #[test]
    fn good_archive_unpacks() {
        let a = archive(
            &[("pdf/SKILL.md", b"# pdf"), ("pdf/bin/run.sh", b"echo")],
            None,
        );
        let d = tempfile::tempdir().unwrap();
        unpack(a.path(), d.path(), 1 << 20).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("pdf/SKILL.md")).unwrap(),
            b"# pdf"
        );
    }

    #[test]
    fn hostile_archives_are_refused_before_writing() {
        for bad in ["../evil.txt", "/abs/evil.txt", "pdf/../../evil.txt", "C:/x"] {
            let a = archive(&[("pdf/ok.md", b"ok"), (bad, b"evil")], None);
            let d = tempfile::tempdir().unwrap();
            let err = unpack(a.path(), &d.path().join("out"), 1 << 20).unwrap_err();
            assert!(err.contains("unsafe path"), "{bad}: {err}");
            assert!(!d.path().join("out").exists(), "{bad}: nothing written");
        }
        let a = archive(&[("pdf/ok.md", b"ok")], Some(("pdf/link", "/etc/passwd")));
        let d = tempfile::tempdir().unwrap();
        let err = unpack(a.path(), d.path(), 1 << 20).unwrap_err();
        assert!(err.contains("symlink"), "{err}");
    }

    #[test]
    fn unpacked_size_is_bounded() {
        let big = vec![0u8; 64 * 1024];
        let a = archive(&[("pdf/big.bin", &big)], None);
        let d = tempfile::tempdir().unwrap();
        let err = unpack(a.path(), d.path(), 1024).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
