//! Stand-ins for the servers workspace preparation talks to:
//! - [`GitServer`]: real git smart HTTP (`git http-backend` as CGI) that demands HTTP basic auth
//!   with one user and token, so clones (and the agent's pushes) go through the real protocol;
//! - [`Backend`]: Wegent's attachment and skill download endpoints behind a bearer token.
//!
//! Both record what they saw (so tests can prove where a secret did *not* go) and can hold
//! requests (so tests can look at the process list while a clone is in flight).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;
use warp::Filter;

use super::server::{header_pairs, response, wait_on_events, BackgroundServer, Gate, Handler};

/// One request as a test server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// `authorization` header, if any.
    pub authorization: Option<String>,
    /// Status answered.
    pub status: u16,
}

struct Shared {
    seen: Mutex<Vec<SeenRequest>>,
    events: watch::Sender<u64>,
    gate: Gate,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            seen: Mutex::new(Vec::new()),
            events: watch::Sender::new(0),
            gate: Gate::default(),
        })
    }

    fn record(&self, r: SeenRequest) {
        self.seen.lock().unwrap().push(r);
        self.events.send_modify(|v| *v += 1);
    }
}

/// Runs `git` with arguments in `dir`, panicking with its output on failure (test setup only).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Fixture")
        .env("GIT_AUTHOR_EMAIL", "fixture@example.com")
        .env("GIT_COMMITTER_NAME", "Fixture")
        .env("GIT_COMMITTER_EMAIL", "fixture@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git server over HTTP with basic auth.
pub struct GitServer {
    server: BackgroundServer,
    root: tempfile::TempDir,
    shared: Arc<Shared>,
}

impl GitServer {
    /// Serves the bare repositories under a fresh folder; only `user:token` gets in.
    pub fn start(user: &str, token: &str) -> GitServer {
        let root = tempfile::tempdir().expect("git server root");
        let shared = Shared::new();
        let expected = format!("Basic {}", base64(format!("{user}:{token}").as_bytes()));
        let (root_path, s, user) = (root.path().to_path_buf(), shared.clone(), user.to_string());
        let handler: Handler = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: warp::http::HeaderMap,
                      body: Bytes| {
                    let (root, s, expected, user) =
                        (root_path.clone(), s.clone(), expected.clone(), user.clone());
                    async move {
                        s.gate.pass(&s.events).await;
                        let auth = header_pairs(&headers)
                            .into_iter()
                            .find(|(k, _)| k == "authorization")
                            .map(|(_, v)| v);
                        let target = if query.is_empty() {
                            path.as_str().to_string()
                        } else {
                            format!("{}?{query}", path.as_str())
                        };
                        let mut seen = SeenRequest {
                            method: method.to_string(),
                            target,
                            authorization: auth.clone(),
                            status: 401,
                        };
                        if auth.as_deref() != Some(expected.as_str()) {
                            s.record(seen);
                            return response(
                                401,
                                "text/plain",
                                "authentication required",
                                &[("www-authenticate", "Basic realm=\"git\"".into())],
                            );
                        }
                        let resp = tokio::task::spawn_blocking(move || {
                            cgi(
                                &root,
                                &user,
                                &method,
                                path.as_str(),
                                &query,
                                &headers,
                                &body,
                            )
                        })
                        .await
                        .expect("cgi task");
                        seen.status = resp.status().as_u16();
                        s.record(seen);
                        resp
                    }
                },
            )
            .boxed();
        let server = BackgroundServer::start("git-server", 0, handler).expect("start git server");
        GitServer {
            server,
            root,
            shared,
        }
    }

    /// `http://127.0.0.1:<port>/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.server.addr().port())
    }

    /// The bare repository's folder.
    pub fn bare_path(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.git"))
    }

    /// Creates `<name>.git` with `files` committed on `main`, and each of `branches` with one
    /// extra file `<branch>.txt`.
    pub fn create_repo(&self, name: &str, files: &[(&str, &str)], branches: &[&str]) {
        let work = tempfile::tempdir().expect("work tree");
        let w = work.path();
        git(w, &["init", "-q", "-b", "main"]);
        for (path, body) in files {
            let p = w.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        git(w, &["add", "-A"]);
        git(w, &["commit", "-q", "-m", "initial"]);
        for b in branches {
            git(w, &["checkout", "-q", "-b", b, "main"]);
            std::fs::write(w.join(format!("{b}.txt")), b).unwrap();
            git(w, &["add", "-A"]);
            git(w, &["commit", "-q", "-m", &format!("on {b}")]);
        }
        git(w, &["checkout", "-q", "main"]);
        let bare = self.bare_path(name);
        let bare_s = bare.display().to_string();
        git(
            self.root.path(),
            &["clone", "-q", "--bare", &w.display().to_string(), &bare_s],
        );
        git(&bare, &["config", "http.receivepack", "true"]);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Holds requests until [`GitServer::release`].
    pub fn hold(&self) {
        self.shared.gate.close();
    }

    /// Lets held requests go.
    pub fn release(&self) {
        self.shared.gate.open();
    }

    /// How many requests are held right now.
    pub fn held(&self) -> usize {
        self.shared.gate.parked()
    }

    /// Waits until `n` requests are held.
    pub async fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        wait_on_events(&self.shared.events, timeout, || {
            (self.shared.gate.parked() >= n).then_some(())
        })
        .await
        .is_some()
    }
}

/// Runs `git http-backend` for one request and turns its CGI output into a response.
fn cgi(
    root: &Path,
    user: &str,
    method: &warp::http::Method,
    path: &str,
    query: &str,
    headers: &warp::http::HeaderMap,
    body: &[u8],
) -> warp::reply::Response {
    use std::io::Write;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().expect("git http-backend output");
    let _ = writer.join();
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, sep)) = split else {
        return response(500, "text/plain", out.stderr, &[]);
    };
    let head = String::from_utf8_lossy(&raw[..at]).to_string();
    let mut status = 200;
    let mut content_type = "application/octet-stream".to_string();
    let mut extra = Vec::new();
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "status" => {
                status = v
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(500)
            }
            "content-type" => content_type = v,
            "cache-control" => extra.push(("cache-control", v)),
            _ => {}
        }
    }
    response(status, &content_type, raw[at + sep..].to_vec(), &extra)
}

/// Wegent's backend endpoints for attachments and skills, behind `Bearer <token>`.
pub struct Backend {
    server: BackgroundServer,
    shared: Arc<Shared>,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    skills: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl Backend {
    /// Starts the backend accepting `token`.
    pub fn start(token: &str) -> Backend {
        let shared = Shared::new();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let skills: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let expected = format!("Bearer {token}");
        let (s, f, k) = (shared.clone(), files.clone(), skills.clone());
        let handler: Handler = warp::path::full()
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .then(
                move |path: warp::path::FullPath, query: String, headers: warp::http::HeaderMap| {
                    let (s, f, k, expected) = (s.clone(), f.clone(), k.clone(), expected.clone());
                    async move {
                        s.gate.pass(&s.events).await;
                        let auth = header_pairs(&headers)
                            .into_iter()
                            .find(|(k, _)| k == "authorization")
                            .map(|(_, v)| v);
                        let (status, ct, body) = if auth.as_deref() != Some(expected.as_str()) {
                            (
                                401,
                                "application/json",
                                br#"{"detail":"unauthorized"}"#.to_vec(),
                            )
                        } else {
                            route(path.as_str(), &query, &f, &k)
                        };
                        s.record(SeenRequest {
                            method: "GET".into(),
                            target: format!("{}?{query}", path.as_str()),
                            authorization: auth,
                            status,
                        });
                        response(status, ct, body, &[])
                    }
                },
            )
            .boxed();
        let server = BackgroundServer::start("backend", 0, handler).expect("start backend");
        Backend {
            server,
            shared,
            files,
            skills,
        }
    }

    /// `http://127.0.0.1:<port>` (the value of `TASK_API_DOMAIN`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.addr().port())
    }

    /// Serves `body` as attachment `id`.
    pub fn add_attachment(&self, id: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(id.into(), body);
    }

    /// Serves `zip` as the archive of skill `name`.
    pub fn add_skill(&self, name: &str, zip: Vec<u8>) {
        self.skills.lock().unwrap().insert(name.into(), zip);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.shared.seen.lock().unwrap().clone()
    }
}

fn route(
    path: &str,
    query: &str,
    files: &Mutex<HashMap<String, Vec<u8>>>,
    skills: &Mutex<HashMap<String, Vec<u8>>>,
) -> (u16, &'static str, Vec<u8>) {
    let not_found = (
        404,
        "application/json",
        br#"{"detail":"not found"}"#.to_vec(),
    );
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or("")
            .to_string()
    };
    if let Some(rest) = path.strip_prefix("/api/attachments/") {
        let id = rest.trim_end_matches("/executor-download");
        return match files.lock().unwrap().get(id) {
            Some(b) => (200, "application/octet-stream", b.clone()),
            None => not_found,
        };
    }
    if path == "/api/v1/kinds/skills" {
        let name = param("name");
        if !skills.lock().unwrap().contains_key(&name) {
            return (200, "application/json", br#"{"items":[]}"#.to_vec());
        }
        let body = json!({"items": [{"metadata": {"name": name, "namespace": param("namespace"),
                                                  "labels": {"id": format!("id-{name}")}}}]});
        return (200, "application/json", body.to_string().into_bytes());
    }
    if let Some(rest) = path.strip_prefix("/api/v1/kinds/skills/") {
        let id = rest.trim_end_matches("/download");
        let name = id.strip_prefix("id-").unwrap_or("");
        return match skills.lock().unwrap().get(name) {
            Some(b) => (200, "application/zip", b.clone()),
            None => not_found,
        };
    }
    not_found
}

/// A ZIP archive of `(path, body)` entries, plus optional symlink entries `(path, target)`.
pub fn zip_archive(entries: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut cursor);
        let opts = zip::write::SimpleFileOptions::default();
        for (name, body) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(body).unwrap();
        }
        for (name, target) in symlinks {
            w.add_symlink(*name, *target, opts).unwrap();
        }
        w.finish().unwrap();
    }
    cursor.into_inner()
}

/// Standard base64 (for the basic-auth header the git server expects).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
