//! The HTTP surface (contract §2): every route's success and error answers (health, OpenAPI,
//! Swagger UI, 404/405, 400/413/422 on bad input, query validation), and start-up behaviour
//! (`--version`, `--help`, port in use, workspace root, config file vs environment).
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

fn opts(rx: &CallbackReceiver) -> ExecutorOptions {
    ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
}

/// Asserts `body` is an error body: a JSON object whose `detail` is a string; returns it.
fn detail<'a>(body: &'a Value, what: &str, exec: &Executor) -> &'a str {
    assert!(
        body.is_object(),
        "{what}: error body must be a JSON object, got {body}\nexecutor output:\n{}",
        exec.logs_tail(50)
    );
    body["detail"].as_str().unwrap_or_else(|| {
        panic!(
            "{what}: error body must have a string `detail`, got {body}\nexecutor output:\n{}",
            exec.logs_tail(50)
        )
    })
}

/// A client that does not follow redirects.
fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Success answers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_check_answers_healthy() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let (status, body) = exec.get("/").await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", exec.logs_tail(50));
    assert_eq!(
        body,
        json!({"status": "healthy", "service": "task_executor"}),
        "{}",
        exec.logs_tail(50)
    );
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let (status, doc) = exec.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "{doc}\n{}", exec.logs_tail(50));
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "not an OpenAPI 3 document: {doc}"
    );
    let paths = doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("`paths` must be an object: {doc}"));
    // Every route the router serves, read from its source (`warp::path!(…)` and the root),
    // not a hand-picked list: a new route without documentation fails here.
    let mut routes = vec!["/".to_string()];
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    for entry in std::fs::read_dir(dir).expect("src/http") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (at, mark) in text.match_indices("warp::path!(") {
            let rest = &text[at + mark.len()..];
            let inner = &rest[..rest.find(')').expect("closing parenthesis")];
            let route: String = inner
                .split('/')
                .map(|seg| {
                    let seg = seg.trim();
                    match seg.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                        Some(lit) => lit.to_string(),
                        None => "{}".to_string(), // a typed parameter (`i64`…)
                    }
                })
                .fold(String::new(), |acc, seg| acc + "/" + &seg);
            routes.push(route);
        }
    }
    routes.sort();
    routes.dedup();
    // The documentation's own routes are not API routes.
    routes.retain(|r| r != "/openapi.json" && !r.starts_with("/docs"));
    assert!(routes.len() >= 10, "routes read from src/http: {routes:?}");
    // `{task_id}` in the document matches `{}` read from the router.
    let documented: Vec<String> = paths
        .keys()
        .map(|k| {
            k.split('/')
                .map(|seg| if seg.starts_with('{') { "{}" } else { seg })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    let missing: Vec<&String> = routes.iter().filter(|r| !documented.contains(r)).collect();
    assert!(
        missing.is_empty(),
        "OpenAPI paths lack {missing:?}; have {:?}",
        paths.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn docs_answer_200_with_swagger_ui_at_every_spelling() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    // The seed's own check is a plain `curl .../docs`, which does not follow redirects.
    let client = no_redirect_client();
    for page in ["/docs", "/docs/", "/docs/index.html"] {
        let resp = client.get(exec.url(page)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {page}");
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("text/html"), "{page}: content-type {ct:?}");
        let html = resp.text().await.unwrap();
        assert!(
            html.to_ascii_lowercase().contains("swagger"),
            "{page} does not look like Swagger UI:\n{html}"
        );
        // Every script and style the page references must load, resolved as a browser does
        // (against `<base href>` when the page has one, else against the page's own URL).
        let page_url = reqwest::Url::parse(&exec.url(page)).unwrap();
        let base = html
            .split("<base href=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .map(|b| page_url.join(b).unwrap())
            .unwrap_or(page_url);
        let assets: Vec<String> = [
            "<script src=\"",
            "<link rel=\"stylesheet\" type=\"text/css\" href=\"",
        ]
        .iter()
        .flat_map(|tag| html.split(tag).skip(1).filter_map(|s| s.split('"').next()))
        .map(str::to_string)
        .collect();
        assert!(
            assets.iter().any(|s| s.contains("swagger-ui-bundle")),
            "{page} references no swagger-ui-bundle script: {assets:?}\n{html}"
        );
        for asset in &assets {
            let url = base.join(asset).unwrap();
            let resp = client.get(url.clone()).send().await.unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "GET {url} (referenced by {page})"
            );
            assert!(!resp.bytes().await.unwrap().is_empty(), "{url} is empty");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 404 / 405 / 422 on routes and queries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_wrong_methods_and_bad_task_id_queries_are_json_errors() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    // The one table (tests/common/routes.rs): 404, 405 and 422 with a JSON `detail`.
    assert_route_errors(&exec).await;
    assert!(
        rx.callbacks().is_empty(),
        "a rejected request sends no callback: {}",
        rx.dump()
    );
    assert_still_serves(&exec, &rx, 9500).await;
}

// ---------------------------------------------------------------------------------------------
// Bad input on POST /api/tasks/execute
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn execute_body_that_is_not_json_is_400() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    for raw in [
        &b"{not json"[..],
        b"",
        b"task_id=1&content=x",
        b"{\"task_id\": 1,",
    ] {
        let (status, body) = exec
            .post_raw("/api/tasks/execute", raw.to_vec(), Some("application/json"))
            .await;
        let shown = String::from_utf8_lossy(raw);
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "body {shown:?}: {body}\n{}",
            exec.logs_tail(20)
        );
        detail(&body, &format!("body {shown:?}"), &exec);
    }
    assert!(
        rx.callbacks().is_empty(),
        "a rejected request must send no callback: {}",
        rx.dump()
    );
    assert_still_serves(&exec, &rx, 40).await;
}

#[tokio::test]
async fn execute_body_over_the_limit_is_413_even_when_chunked() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("MAX_BODY_BYTES", "1024")]).await;

    // With a Content-Length.
    let big = padded_task(50, 2048);
    let (status, body) = exec
        .post_raw("/api/tasks/execute", big.clone(), Some("application/json"))
        .await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "2 KB body with MAX_BODY_BYTES=1024: {body}\n{}",
        exec.logs_tail(20)
    );
    detail(&body, "413 with content-length", &exec);

    // Chunked, so the size is known only while reading.
    let chunks: Vec<&[u8]> = big.chunks(256).collect();
    let resp = post_chunked(exec.port(), "/api/tasks/execute", &chunks).await;
    assert_eq!(
        resp.status,
        413,
        "2 KB chunked body with MAX_BODY_BYTES=1024:\n{}\n{}",
        resp.text,
        exec.logs_tail(20)
    );
    detail(&resp.body, "413 chunked", &exec);

    assert!(
        rx.for_task(50).is_empty(),
        "an oversized task must not run: {}",
        rx.dump()
    );

    // A small chunked body is a normal request.
    let small = seed_task(51, 1, "chunked hello").to_string().into_bytes();
    let (a, b) = small.split_at(small.len() / 2);
    let resp = post_chunked(exec.port(), "/api/tasks/execute", &[a, b]).await;
    assert_eq!(
        resp.status,
        200,
        "small chunked valid body:\n{}\n{}",
        resp.text,
        exec.logs_tail(20)
    );
    assert_eq!(resp.body["status"], "RUNNING", "{}", resp.text);
    let done = rx.wait_terminal(51, 1, WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    assert_eq!(
        done["result"]["value"],
        "fake reply #1 to: chunked hello",
        "{}",
        rx.dump()
    );

    assert_still_serves(&exec, &rx, 52).await;
}

// ---------------------------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------------------------

/// Runs the executor binary with `args` and `env` (nothing inherited but PATH) and waits at
/// most 10 s for it to exit; returns (exit status, stdout + stderr).
async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_executor"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", tmp.path())
        .envs(env.iter().copied())
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn the executor");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("executor {args:?} did not exit within 10 s"))
        .expect("wait for the executor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

#[tokio::test]
async fn version_flag_prints_the_version() {
    let (status, out) = run_binary(&["--version"], &[]).await;
    assert!(status.success(), "--version exited {status}: {out}");
    assert!(
        out.contains(env!("CARGO_PKG_VERSION")),
        "--version should print {}: {out}",
        env!("CARGO_PKG_VERSION")
    );
}

#[tokio::test]
async fn help_flag_documents_the_environment() {
    let (status, out) = run_binary(&["--help"], &[]).await;
    assert!(status.success(), "--help exited {status}: {out}");
    // The README's configuration table (rows "| `NAME` | `default` | …" of "## Configuration").
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Configuration section");
    let rows: Vec<(&str, Option<&str>)> = section
        .lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix("| `")?.split(" | ");
            let name = cells.next()?.split('`').next()?;
            let default = cells
                .next()
                .and_then(|d| d.strip_prefix('`')?.strip_suffix('`'))
                .filter(|d| !d.contains('`'));
            Some((name, default))
        })
        .collect();
    assert!(rows.len() > 20, "README table not found: {rows:?}");
    let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))
        .expect("config/default.toml");
    // "`config/default.toml` lists every setting with its default and its environment variable".
    let not_in_toml: Vec<&str> = rows
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !toml.contains(n))
        .collect();
    assert!(
        not_in_toml.is_empty(),
        "config/default.toml does not mention {not_in_toml:?}"
    );
    // "`executor --help` lists the flags": a flag's documented default is the README's.
    let mut flags = 0;
    for (name, readme_default) in &rows {
        let Some(line) = out.lines().find(|l| l.contains(&format!("[env: {name}="))) else {
            continue;
        };
        flags += 1;
        let (Some(want), Some(help_default)) = (
            readme_default,
            line.split("[default: ")
                .nth(1)
                .and_then(|d| d.split([']', ';']).next()),
        ) else {
            continue;
        };
        assert_eq!(
            help_default.trim(),
            *want,
            "{name}: --help says default {help_default:?}, the README {want:?}:\n{line}"
        );
    }
    assert!(
        flags > 20,
        "--help lists only {flags} of the README's settings:\n{out}"
    );
}

#[tokio::test]
async fn port_already_in_use_fails_fast_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let started = Instant::now();
    let result = Executor::try_start(
        ExecutorOptions::new()
            .env("PORT", port.to_string())
            .env("BIND_ADDRESS", "127.0.0.1")
            .startup_timeout(Duration::from_secs(60)),
    )
    .await;
    let failure = match result {
        Ok(exec) => panic!(
            "the executor started on port {port} although it is taken (listening on {}):\n{}",
            exec.port(),
            exec.logs_tail(50)
        ),
        Err(f) => f,
    };
    let status = failure
        .status
        .unwrap_or_else(|| panic!("the executor did not exit by itself: {failure:?}"));
    assert!(!status.success(), "exit status {status}: {failure:?}");
    // Exiting by itself (above) is the check; this generous bound only rules out retrying
    // the bind until some deadline (the harness would have waited 60 s).
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?} to give up: {failure:?}",
        started.elapsed()
    );
    let port_s = port.to_string();
    assert!(
        failure
            .logs
            .iter()
            .any(|l| l.contains(&port_s) && l.contains("already in use")),
        "no line mentions port {port} and \"already in use\": {failure:?}"
    );
    drop(taken);
}

#[tokio::test]
async fn workspace_root_under_a_regular_file_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let ws = file.join("ws");
    let result = Executor::try_start(
        ExecutorOptions::new()
            .env("WORKSPACE_ROOT", ws.display().to_string())
            .startup_timeout(Duration::from_secs(10)),
    )
    .await;
    let failure = match result {
        Ok(exec) => panic!(
            "the executor started with WORKSPACE_ROOT={} under a file:\n{}",
            ws.display(),
            exec.logs_tail(50)
        ),
        Err(f) => f,
    };
    let status = failure
        .status
        .unwrap_or_else(|| panic!("the executor did not exit by itself: {failure:?}"));
    assert!(!status.success(), "exit status {status}: {failure:?}");
    assert!(
        failure
            .logs
            .iter()
            .any(|l| l.contains("Workspace directory does not exist")),
        "no \"Workspace directory does not exist\" line: {failure:?}"
    );
}

#[tokio::test]
async fn missing_workspace_root_is_created() {
    let rx = CallbackReceiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("not").join("yet");
    assert!(!ws.exists());
    let exec = Executor::start(opts(&rx).env("WORKSPACE_ROOT", ws.display().to_string())).await;
    assert!(
        ws.is_dir(),
        "WORKSPACE_ROOT {} was not created\n{}",
        ws.display(),
        exec.logs_tail(50)
    );
    let (status, body) = exec
        .post_json("/api/tasks/execute", &seed_task(60, 1, "hi"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = rx.wait_terminal(60, 1, WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    assert!(
        ws.join("60").is_dir(),
        "the task should work in <WORKSPACE_ROOT>/60"
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration precedence
// ---------------------------------------------------------------------------------------------

fn write_config(dir: &Path) -> String {
    let path = dir.join("executor.toml");
    std::fs::write(&path, "port = 1\nexecutor_name = \"from-file\"\n").unwrap();
    path.display().to_string()
}

/// Runs one subtask and returns the distinct `executor_name`s its callbacks carried.
async fn executor_names(exec: &Executor, rx: &CallbackReceiver, task_id: i64) -> Vec<Value> {
    let (status, body) = exec
        .post_json("/api/tasks/execute", &seed_task(task_id, 1, "who are you"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = rx.wait_terminal(task_id, 1, WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{}", rx.dump());
    let mut names: Vec<Value> = rx
        .for_subtask(task_id, 1)
        .iter()
        .map(|c| c["executor_name"].clone())
        .collect();
    names.dedup();
    names
}

#[tokio::test]
async fn config_file_is_read_and_environment_beats_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());

    let rx = CallbackReceiver::start();
    // The harness sets PORT=0, which must win over the file's `port = 1`.
    let exec = Executor::start(opts(&rx).arg("--config").arg(config.clone())).await;
    assert_ne!(
        exec.port(),
        1,
        "env PORT=0 must beat the file's port = 1:\n{}",
        exec.logs_tail(50)
    );
    assert_eq!(
        executor_names(&exec, &rx, 70).await,
        vec![json!("from-file")],
        "callbacks must carry the file's executor_name: {}",
        rx.dump()
    );
    drop(exec);

    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        opts(&rx)
            .arg("--config")
            .arg(config)
            .env("EXECUTOR_NAME", "from-env"),
    )
    .await;
    assert_eq!(
        executor_names(&exec, &rx, 71).await,
        vec![json!("from-env")],
        "EXECUTOR_NAME must beat the file: {}",
        rx.dump()
    );
}

#[tokio::test]
async fn shipped_default_config_loads() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
    let result = Executor::try_start(
        ExecutorOptions::new()
            .arg("--config")
            .arg(config)
            .env("PORT", "0")
            .startup_timeout(Duration::from_secs(10)),
    )
    .await;
    let exec = match result {
        Ok(e) => e,
        Err(f) => panic!("the executor does not start with --config {config}: {f:?}"),
    };
    let (status, body) = exec.get("/").await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", exec.logs_tail(50));
    assert_eq!(body["status"], "healthy");
}

// ---------------------------------------------------------------------------------------------
// Small protocol points: probes for load balancers, SSE resume ids, the bearer scheme
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn probes_answer_head_and_options() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let client = exec.client();
    for path in ["/", "/health", "/ready"] {
        let resp = client.head(exec.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "HEAD {path}");
        assert!(
            resp.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );
        let resp = client
            .request(reqwest::Method::OPTIONS, exec.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "OPTIONS {path}");
        let allow = resp
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            allow, "GET, HEAD, OPTIONS",
            "OPTIONS {path} lists the methods"
        );
    }
}

#[tokio::test]
async fn a_non_numeric_last_event_id_is_ignored() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    for id in ["abc", "-1", "", "99999999999999999999999"] {
        let resp = exec
            .client()
            .get(exec.url("/api/tasks/7/events"))
            .header("last-event-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "Last-Event-ID {id:?} starts the stream from the beginning\n{}",
            exec.logs_tail(20)
        );
        let kind = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(kind, "text/event-stream", "Last-Event-ID {id:?}");
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("EXECUTOR_AUTH_TOKEN", "tok-CASE-1")]).await;
    for (auth, want) in [
        ("bearer tok-CASE-1", StatusCode::OK),
        ("BEARER tok-CASE-1", StatusCode::OK),
        ("Bearer   tok-CASE-1", StatusCode::OK),
        ("bearer tok-case-1", StatusCode::UNAUTHORIZED),
        ("Basic tok-CASE-1", StatusCode::UNAUTHORIZED),
        ("bearertok-CASE-1", StatusCode::UNAUTHORIZED),
    ] {
        let resp = exec
            .client()
            .get(exec.url("/api/tasks/sessions"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "authorization {auth:?}");
    }
}

#[tokio::test]
async fn an_unknown_agent_scheduling_policy_stops_start_up_with_its_name() {
    let result = Executor::try_start(
        ExecutorOptions::new()
            .env("AGENT_SCHED_POLICY", "fifo")
            .startup_timeout(Duration::from_secs(10)),
    )
    .await;
    let failure = match result {
        Ok(exec) => panic!(
            "started with AGENT_SCHED_POLICY=fifo:\n{}",
            exec.logs_tail(20)
        ),
        Err(f) => f,
    };
    assert!(failure.status.is_some_and(|s| !s.success()), "{failure:?}");
    assert!(
        failure
            .logs
            .iter()
            .any(|l| l.contains("AGENT_SCHED_POLICY must be idle, batch or normal")),
        "{failure:?}"
    );
}
