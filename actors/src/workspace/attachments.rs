//! Attachments of a subtask (contract §6.4): downloaded from the backend into the task's
//! attachment folder, and the prompt rewritten to point at them. A failed download is told to
//! the agent in the prompt; it never fails the subtask.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::download;
use crate::config::{Secret, WorkspaceConfig};
use crate::task::AttachmentSpec;

/// One attachment's outcome.
#[derive(Debug)]
pub enum Fetched {
    /// Saved at this path, this many bytes.
    Saved(PathBuf, u64),
    /// Not available, and why (no secrets).
    Failed(String),
}

/// The attachment folder of a subtask: `<task_dir>/<task_id>:executor:attachments/<subtask_id>`.
pub fn folder(task_dir: &Path, task_id: i64, subtask_id: i64) -> PathBuf {
    task_dir
        .join(format!("{task_id}:executor:attachments"))
        .join(subtask_id.to_string())
}

/// The original's file-name sanitising: base name only, no CR/LF, slashes replaced, never
/// empty or a dot name.
pub fn sanitise(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| *c != '\r' && *c != '\n' && *c != '\0')
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    let cleaned = cleaned.trim().to_string();
    match cleaned.as_str() {
        "" | "." | ".." => "document".into(),
        _ => shorten(&cleaned),
    }
}

/// Longest attachment file name kept, in bytes. File systems allow 255; the rest leaves room
/// for the download's temporary name (`.<name>.<pid>-<n>.part`).
pub const MAX_NAME_BYTES: usize = 200;

/// Longest extension kept whole when a name is shortened.
const MAX_EXTENSION_BYTES: usize = 16;

/// `name` cut to [`MAX_NAME_BYTES`] at a character boundary, keeping a short extension, so a
/// long name is shortened instead of failing the download.
pub fn shorten(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_string();
    }
    let ext = name
        .rfind('.')
        .map(|i| &name[i..])
        .filter(|e| e.len() <= MAX_EXTENSION_BYTES && e.len() < name.len())
        .unwrap_or("");
    let stem = &name[..name.len() - ext.len()];
    let mut cut = MAX_NAME_BYTES - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &stem[..cut])
}

/// Downloads every attachment, one after the other.
pub async fn fetch_all(
    cfg: &WorkspaceConfig,
    http: &reqwest::Client,
    token: Option<&Secret>,
    dir: &Path,
    items: &[AttachmentSpec],
    cancel: &CancellationToken,
) -> Vec<(AttachmentSpec, Fetched)> {
    let mut out = Vec::new();
    if let Err(e) = super::create_private_dir(dir).await {
        for a in items {
            out.push((
                a.clone(),
                Fetched::Failed(format!("cannot create {}: {e}", dir.display())),
            ));
        }
        return out;
    }
    let mut used = std::collections::HashSet::new();
    for a in items {
        if token.is_none() {
            out.push((
                a.clone(),
                Fetched::Failed("no auth_token in the task".into()),
            ));
            continue;
        }
        let mut name = sanitise(&a.filename);
        if !used.insert(name.clone()) {
            name = shorten(&format!("{}_{name}", sanitise(&a.id)));
            used.insert(name.clone());
        }
        let dest = dir.join(&name);
        let url = format!(
            "{}/api/attachments/{}/executor-download",
            cfg.api_base,
            super::percent_encode(&a.id)
        );
        let r = download::to_file(
            http,
            &url,
            token,
            &dest,
            cfg.max_attachment_bytes,
            cfg.download_timeout,
            cancel,
        )
        .await;
        let fetched = match r {
            Ok(n) => Fetched::Saved(dest, n),
            Err(e) => {
                tracing::warn!("attachment {} ({name}) unavailable: {e}", a.id);
                Fetched::Failed(e.to_string())
            }
        };
        out.push((a.clone(), fetched));
    }
    out
}

/// Rewrites `[attachment:<id>]` markers and appends the failure notice and the context block,
/// as the original does.
pub fn rewrite_prompt(prompt: &str, results: &[(AttachmentSpec, Fetched)]) -> String {
    let mut p = prompt.to_string();
    let mut failed = Vec::new();
    let mut available = Vec::new();
    for (a, f) in results {
        let marker = format!("[attachment:{}]", a.id);
        match f {
            Fetched::Saved(path, n) => {
                p = p.replace(
                    &marker,
                    &format!("[Attachment downloaded to: {}]", path.display()),
                );
                let mime = a.mime_type.as_deref().unwrap_or("application/octet-stream");
                available.push(format!(
                    "- {} ({mime}, {}): {}",
                    display_name(a),
                    human_size(a.size.unwrap_or(*n)),
                    path.display()
                ));
            }
            Fetched::Failed(err) => {
                p = p.replace(
                    &marker,
                    &format!("[Attachment {} unavailable - download failed]", a.id),
                );
                failed.push(format!("- {} (Error: {err})", display_name(a)));
            }
        }
    }
    p = unknown_markers(&p);
    if !failed.is_empty() {
        p.push_str("\n\n⚠️ The following attachments failed to download and are unavailable:\n");
        p.push_str(&failed.join("\n"));
    }
    if !available.is_empty() {
        p.push_str("\n\n<attachment>\n📎 Available attachments:\n");
        p.push_str(&available.join("\n"));
        p.push_str("\n</attachment>");
    }
    p
}

fn display_name(a: &AttachmentSpec) -> String {
    if a.filename.trim().is_empty() {
        format!("attachment {}", a.id)
    } else {
        sanitise(&a.filename)
    }
}

/// `[attachment:<id>]` markers for attachments the task did not list.
fn unknown_markers(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut rest = p;
    while let Some(i) = rest.find("[attachment:") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "[attachment:".len()..];
        match after.find(']') {
            Some(end) if end <= 64 && !after[..end].contains('\n') => {
                out.push_str(&format!("[Attachment {} unavailable]", &after[..end]));
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("[attachment:");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `N bytes`, `x.y KB` or `x.y MB`, as the original.
pub fn human_size(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else if n < 1024 * 1024 {
        format!("{:.1} KB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MB", n as f64 / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, name: &str) -> AttachmentSpec {
        AttachmentSpec {
            id: id.into(),
            filename: name.into(),
            mime_type: Some("text/plain".into()),
            size: Some(2048),
        }
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitise("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(sanitise("a\r\nb.txt"), "ab.txt");
        assert_eq!(sanitise(""), "document");
        assert_eq!(sanitise(".."), "document");
    }

    #[test]
    fn prompt_is_rewritten_like_the_original() {
        let results = vec![
            (
                spec("1", "a.txt"),
                Fetched::Saved(PathBuf::from("/w/a.txt"), 2048),
            ),
            (spec("2", "b.txt"), Fetched::Failed("HTTP 404".into())),
        ];
        let p = rewrite_prompt(
            "see [attachment:1] and [attachment:2] and [attachment:9]",
            &results,
        );
        assert!(p.starts_with("see [Attachment downloaded to: /w/a.txt] and [Attachment 2 unavailable - download failed] and [Attachment 9 unavailable]"), "{p}");
        assert!(p.contains("\n\n⚠️ The following attachments failed to download and are unavailable:\n- b.txt (Error: HTTP 404)"));
        assert!(p.ends_with("\n\n<attachment>\n📎 Available attachments:\n- a.txt (text/plain, 2.0 KB): /w/a.txt\n</attachment>"), "{p}");
        assert_eq!(human_size(10), "10 bytes");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MB");
    }

    #[test]
    fn long_names_are_shortened_keeping_the_extension() {
        let long = format!("{}.pdf", "é".repeat(200));
        let short = sanitise(&long);
        assert!(short.len() <= MAX_NAME_BYTES, "{}", short.len());
        assert!(short.ends_with("é.pdf"), "{short}");
        let no_ext = "x".repeat(300);
        assert_eq!(sanitise(&no_ext).len(), MAX_NAME_BYTES);
        assert_eq!(sanitise("a.txt"), "a.txt");
    }
}
