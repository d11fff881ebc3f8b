//! Streaming downloads from the backend with a bearer token: straight to disk in chunks, with a
//! size limit and a deadline, never a whole file in memory.

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;

/// Why a download failed; texts never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server answered with an error status.
    #[error("HTTP {0}")]
    Status(u16),
    /// Bigger than allowed (declared or received).
    #[error("larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Connection or protocol failure.
    #[error("{0}")]
    Http(String),
    /// Did not finish in time.
    #[error("timed out after {0} s")]
    TimedOut(u64),
    /// Writing the file failed.
    #[error("could not write the file: {0}")]
    Io(String),
    /// The subtask was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// A client for backend downloads (redirects limited; TLS via rustls).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

fn http_err(e: &reqwest::Error) -> DownloadError {
    // reqwest's text includes the URL (ours never has credentials) but not headers.
    let mut text = e.to_string();
    if let Some(src) = std::error::Error::source(e) {
        text.push_str(&format!(": {src}"));
    }
    DownloadError::Http(text)
}

/// A temporary name next to `dest` that no other download (or downloaded file) uses.
fn part_path(dest: &Path) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}-{n}.part", std::process::id()))
}

/// Sends an authenticated GET; any non-2xx answer is an error.
async fn get(
    http: &reqwest::Client,
    url: &str,
    token: Option<&Secret>,
) -> Result<reqwest::Response, DownloadError> {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t.expose());
    }
    let resp = req.send().await.map_err(|e| http_err(&e))?;
    if !resp.status().is_success() {
        return Err(DownloadError::Status(resp.status().as_u16()));
    }
    Ok(resp)
}

/// GETs `url` into `dest` (written as `dest.part`, renamed when complete, mode 0600); returns
/// the size. A partial file is removed on any failure.
pub async fn to_file(
    http: &reqwest::Client,
    url: &str,
    token: Option<&Secret>,
    dest: &Path,
    limit: u64,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<u64, DownloadError> {
    let part = part_path(dest);
    let work = fetch(http, url, token, &part, limit);
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, work) => r.unwrap_or(Err(DownloadError::TimedOut(timeout.as_secs()))),
        _ = cancel.cancelled() => Err(DownloadError::Cancelled),
    };
    match result {
        Ok(n) => {
            tokio::fs::rename(&part, dest)
                .await
                .map_err(|e| DownloadError::Io(e.to_string()))?;
            Ok(n)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(e)
        }
    }
}

async fn fetch(
    http: &reqwest::Client,
    url: &str,
    token: Option<&Secret>,
    part: &Path,
    limit: u64,
) -> Result<u64, DownloadError> {
    let mut resp = get(http, url, token).await?;
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(DownloadError::TooLarge { limit });
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(part)
        .await
        .map_err(|e| DownloadError::Io(e.to_string()))?;
    let mut total: u64 = 0;
    while let Some(chunk) = resp.chunk().await.map_err(|e| http_err(&e))? {
        total += chunk.len() as u64;
        if total > limit {
            return Err(DownloadError::TooLarge { limit });
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| DownloadError::Io(e.to_string()))?;
    }
    file.flush()
        .await
        .map_err(|e| DownloadError::Io(e.to_string()))?;
    Ok(total)
}

/// GETs a small JSON document (at most `limit` bytes).
pub async fn json(
    http: &reqwest::Client,
    url: &str,
    token: Option<&Secret>,
    limit: usize,
    timeout: Duration,
) -> Result<serde_json::Value, DownloadError> {
    let work = async {
        let mut resp = get(http, url, token).await?;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| http_err(&e))? {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                return Err(DownloadError::TooLarge {
                    limit: limit as u64,
                });
            }
        }
        serde_json::from_slice(&body).map_err(|e| DownloadError::Http(format!("bad JSON: {e}")))
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(DownloadError::TimedOut(timeout.as_secs())))
}
