//! Operability: liveness and readiness probes, request ids in and out, and the optional
//! bearer token (`EXECUTOR_AUTH_TOKEN`) that guards every route but the probes.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

/// The body of `GET /metrics` (no token configured).
async fn scrape(exec: &Executor) -> String {
    let resp = exec
        .client()
        .get(exec.url("/metrics"))
        .send()
        .await
        .unwrap();
    resp.text().await.unwrap()
}

/// The value of the first metric line starting with `line_start`.
fn metric_value(text: &str, line_start: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn probes_answer_and_readiness_follows_the_session_cap() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("MAX_SESSIONS", "1")]).await;
    let (status, body) = exec.get("/health").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, body) = exec.get("/ready").await;
    assert_eq!(
        (status, body["ready"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    post_task(&exec, 1, 1, "FAKE:sleep:30000\nbusy").await;
    let (status, body) = exec.get("/ready").await;
    assert_eq!(
        (status, body["ready"].as_bool()),
        (StatusCode::SERVICE_UNAVAILABLE, Some(false)),
        "{body}"
    );
    assert_eq!(body["reason"], "at the session cap");
    exec.delete("/api/tasks/session?task_id=1").await;
    assert_eq!(exec.get("/ready").await.0, StatusCode::OK);
}

#[tokio::test]
async fn request_ids_are_echoed_or_made_up() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let resp = exec
        .client()
        .get(exec.url("/api/tasks/sessions"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-42")
    );
    let resp = exec.client().get(exec.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "made-up id: {id:?}"
    );
}

#[tokio::test]
async fn the_bearer_token_guards_everything_but_the_probes() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("EXECUTOR_AUTH_TOKEN", "tok-SECRETMARKER-9")]).await;
    for probe in ["/", "/health", "/ready"] {
        assert_eq!(
            exec.get(probe).await.0,
            StatusCode::OK,
            "{probe} needs no token"
        );
    }
    let client = exec.client();
    for (auth, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("Bearer wrong"), StatusCode::UNAUTHORIZED),
        (Some("tok-SECRETMARKER-9"), StatusCode::UNAUTHORIZED),
        (Some("Bearer tok-SECRETMARKER-9"), StatusCode::OK),
    ] {
        let mut req = client.get(exec.url("/api/tasks/sessions"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), want, "authorization {auth:?}");
        if want == StatusCode::UNAUTHORIZED {
            assert_eq!(
                resp.headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer")
            );
            let body: Value = resp.json().await.unwrap();
            assert!(body["detail"].is_string(), "{body}");
        }
    }
    let unauthorised = client
        .post(exec.url("/api/tasks/execute"))
        .json(&seed_task(1, 1, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
    assert!(rx.for_task(1).is_empty(), "a refused task sends nothing");
    let ok = client
        .post(exec.url("/api/tasks/execute"))
        .header("authorization", "Bearer tok-SECRETMARKER-9")
        .json(&seed_task(1, 1, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        rx.wait_terminal(1, 1, FAKE_WAIT).await["status"],
        "COMPLETED"
    );
    exec.assert_logs_exclude("SECRETMARKER");
    assert!(!rx.dump().contains("SECRETMARKER"));
}

#[tokio::test]
async fn metrics_count_sessions_subtasks_callbacks_and_requests() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    assert_eq!(
        run_task(&exec, &rx, 1, 1, "ok").await["status"],
        "COMPLETED"
    );
    assert_eq!(
        run_task(&exec, &rx, 2, 1, "FAKE:crash:3\nboom").await["status"],
        "FAILED"
    );
    let delivered = rx.callbacks().len();
    let resp = exec
        .client()
        .get(exec.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    let value = |line_start: &str| -> u64 {
        metric_value(&text, line_start).unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
    };
    assert_eq!(value("executor_subtasks_total{status=\"COMPLETED\"}"), 1);
    assert_eq!(value("executor_subtasks_total{status=\"FAILED\"}"), 1);
    assert_eq!(value("executor_sessions{state=\"idle\"}"), 2);
    assert_eq!(
        value("executor_agent_processes "),
        1,
        "task 1's CLI lives, task 2's crashed"
    );
    // The receiver records a callback before the executor has read its answer: poll briefly.
    let mut counted = value("executor_callback_deliveries_total ") as usize;
    for _ in 0..100 {
        if counted >= delivered {
            break;
        }
        let t = scrape(&exec).await;
        counted = metric_value(&t, "executor_callback_deliveries_total ").unwrap_or(0) as usize;
        wait_until(std::time::Duration::from_millis(20), || false).await; // poll pacing
    }
    assert!(counted >= delivered, "{counted} < {delivered}");
    assert!(value("executor_http_request_duration_seconds_count ") >= 2);
    assert!(text.contains("executor_build_info{version="), "{text}");
}

#[tokio::test]
async fn log_format_json_gives_one_json_object_per_line() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("LOG_FORMAT", "json"), ("LOG_LEVEL", "info")]).await;
    run_task(&exec, &rx, 1, 1, "hi").await;
    let lines: Vec<String> = exec
        .logs()
        .into_iter()
        .filter(|l| l.contains("Received task"))
        .collect();
    assert!(!lines.is_empty(), "{}", exec.logs_tail(10));
    for l in lines {
        let json_part = &l[l.find('{').unwrap_or(0)..];
        let v: Value = serde_json::from_str(json_part).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["level"], "INFO", "{v}");
        assert!(
            v["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("Received task 1.1"),
            "{v}"
        );
    }
}

#[tokio::test]
async fn heartbeats_reach_the_manager_on_schedule() {
    let rx = CallbackReceiver::start();
    let base = rx.url().trim_end_matches("/callback").to_string() + "/executor-manager";
    let exec = start_fake(
        &rx,
        &[
            ("HEARTBEAT_ENABLED", "true"),
            ("HEARTBEAT_ID", "77"),
            ("HEARTBEAT_TYPE", "task"),
            ("HEARTBEAT_INTERVAL", "1"),
            ("EXECUTOR_MANAGER_HEARTBEAT_BASE_URL", base.as_str()),
        ],
    )
    .await;
    let beats = || {
        rx.attempts()
            .into_iter()
            .filter(|a| a.path == "/executor-manager/tasks/77/heartbeat")
            .collect::<Vec<_>>()
    };
    let four = wait_until(std::time::Duration::from_secs(20), || beats().len() >= 4).await;
    assert!(four, "beats: {}\n{}", rx.dump(), exec.logs_tail(20));
    // On schedule: HEARTBEAT_INTERVAL=1 means about one beat a second, never a burst. The
    // window is generous (a loaded machine delays ticks) but rules out a wrong unit (ms, min)
    // or beats sent back to back.
    let at: Vec<_> = beats().iter().take(4).map(|a| a.at).collect();
    let gaps: Vec<_> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = (at[3] - at[0]) / 3;
    assert!(
        mean >= std::time::Duration::from_millis(700) && mean <= std::time::Duration::from_secs(3),
        "mean interval {mean:?} for HEARTBEAT_INTERVAL=1 (gaps {gaps:?})"
    );
    assert!(
        gaps.iter()
            .all(|g| *g >= std::time::Duration::from_millis(300)),
        "beats in a burst: {gaps:?}"
    );
    let b = &beats()[0].body;
    assert_eq!(
        (b["heartbeat_id"].as_str(), b["heartbeat_type"].as_str()),
        (Some("77"), Some("task")),
        "{b}"
    );
    assert!(b["timestamp"].as_f64().is_some_and(|t| t > 1.7e9), "{b}");
}

/// Reads SSE `callback` events from `resp` until one satisfies `stop`; returns (id, data) pairs.
async fn read_events(
    resp: &mut reqwest::Response,
    stop: impl Fn(&Value) -> bool,
) -> Vec<(u64, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::to_string))
            };
            if let (Some(id), Some(data)) = (field("id:"), field("data:")) {
                let v: Value = serde_json::from_str(data.trim()).unwrap();
                let done = stop(&v);
                out.push((id.trim().parse().unwrap(), v));
                if done {
                    return out;
                }
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "no matching event; got {out:?}");
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("stream ended: {other:?}; got {out:?}"),
        }
    }
}

#[tokio::test]
async fn the_event_stream_carries_the_callbacks_and_replays_for_late_subscribers() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let mut live = exec
        .client()
        .get(exec.url("/api/tasks/5/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert!(live.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut second = exec
        .client()
        .get(exec.url("/api/tasks/5/events"))
        .send()
        .await
        .unwrap();
    post_task(&exec, 5, 1, "hello").await;
    let events = read_events(&mut live, |v| v["status"] == "COMPLETED").await;
    let seen_by_second = read_events(&mut second, |v| v["status"] == "COMPLETED").await;
    assert_eq!(seen_by_second, events, "every subscriber gets every event");
    let progress: Vec<i64> = events
        .iter()
        .map(|(_, v)| v["progress"].as_i64().unwrap())
        .collect();
    assert_eq!(&progress[..3], &[50, 55, 60], "{progress:?}");
    assert_eq!(
        events.last().unwrap().1["result"]["value"],
        "fake reply #1 to: hello"
    );
    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    let cb = rx.wait_terminal(5, 1, FAKE_WAIT).await;
    assert_eq!(
        cb,
        events.last().unwrap().1,
        "the stream carries the callback payload"
    );

    let mut late = exec
        .client()
        .get(exec.url("/api/tasks/5/events"))
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();
    let replay = read_events(&mut late, |v| v["status"] == "COMPLETED").await;
    assert_eq!(
        replay.first().map(|e| e.0),
        Some(3),
        "replay starts after Last-Event-ID"
    );
    assert_eq!(replay.len(), events.len() - 2);
}

#[test]
fn check_config_prints_effective_values_with_secrets_masked() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .arg("--check-config")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "12345")
        .env("ANTHROPIC_API_KEY", "sk-ant-CHECKMARKER-1")
        .env("EXECUTOR_AUTH_TOKEN", "tok-CHECKMARKER-2")
        .env(
            "CALLBACK_URL",
            "http://user:CHECKMARKER3@manager:8001/cb?token=CHECKMARKER4",
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("PORT=12345") && text.contains("ANTHROPIC_API_KEY=*** (set)"),
        "{text}"
    );
    assert!(
        text.contains("CALLBACK_URL=http://manager:8001/cb"),
        "{text}"
    );
    assert!(!text.contains("CHECKMARKER"), "a secret leaked: {text}");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .arg("--check-config")
        .env("TASK_INFO", "{broken")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// What the container and Kubernetes files must agree on with the service itself. Their syntax
/// and schemas are checked by the field's tools in CI (`.ci/run`: hadolint on the Dockerfile,
/// kubernetes-validate on the manifests); this test checks only what those tools cannot know.
#[tokio::test]
async fn container_and_kubernetes_files_match_the_service() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let yaml = |p: &str| -> Value {
        let v: serde_yaml::Value =
            serde_yaml::from_str(&read(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        serde_json::to_value(v).unwrap()
    };
    let dep = yaml("deploy/kubernetes/deployment.yaml");
    let job = yaml("deploy/kubernetes/job.yaml");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    // Probe paths are the executor's probe routes, which answer without the bearer token.
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("EXECUTOR_AUTH_TOKEN", "tok-probe-check")]).await;
    let job_c = &job["spec"]["template"]["spec"]["containers"][0];
    for probe in [
        &c["livenessProbe"],
        &c["readinessProbe"],
        &job_c["readinessProbe"],
    ] {
        let path = probe["httpGet"]["path"].as_str().expect("an httpGet probe");
        assert_eq!(exec.get(path).await.0, StatusCode::OK, "probe path {path}");
    }
    // The port everything points at is the executor's default port.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .arg("--check-config")
        .env_clear()
        .output()
        .unwrap();
    let default_port: u64 = String::from_utf8_lossy(&check.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("PORT=")?.parse().ok())
        .expect("PORT in --check-config");
    assert_eq!(c["ports"][0]["containerPort"], default_port);
    assert_eq!(
        yaml("deploy/kubernetes/service.yaml")["spec"]["ports"][0]["port"],
        default_port
    );
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains(&format!("EXPOSE {default_port}")));
    assert_eq!(
        yaml("docker-compose.yml")["services"]["executor"]["ports"][0],
        format!("{default_port}:{default_port}")
    );
    // The pod's grace period covers the shutdown: preStop, then the callback flush
    // (SHUTDOWN_GRACE_SECS), the sessions' stop (SESSION_EOF_GRACE_MS + SESSION_TERM_GRACE_MS
    // defaults: 4 s) and the last OpenTelemetry export (3 s).
    const STOP_AND_EXPORT_SECS: u64 = 7;
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pre_stop: u64 = c["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("preStop sleep seconds");
    let flush: u64 = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SHUTDOWN_GRACE_SECS")
        .and_then(|e| e["value"].as_str()?.parse().ok())
        .expect("SHUTDOWN_GRACE_SECS in the deployment");
    assert!(
        pre_stop + flush + STOP_AND_EXPORT_SECS <= grace,
        "preStop {pre_stop} s + flush {flush} s + {STOP_AND_EXPORT_SECS} s exceed the {grace} s grace period"
    );
    // The image's user is the one the pods run as, and it carries the pinned CLI.
    let (uid, gid) = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .and_then(|u| {
            let (uid, gid) = u.trim().split_once(':')?;
            Some((uid.parse::<u64>().ok()?, gid.parse::<u64>().ok()?))
        })
        .expect("a numeric USER uid:gid in the Dockerfile");
    assert!(
        dockerfile.contains(&format!("--uid {uid} --gid {gid}")),
        "the image's user is {uid}:{gid}"
    );
    for spec in [pod, &job["spec"]["template"]["spec"]] {
        assert_eq!(spec["securityContext"]["runAsUser"], uid);
        assert_eq!(spec["securityContext"]["runAsGroup"], gid);
    }
    let pinned = format!("CLAUDE_CODE_VERSION={}", common::mock_anthropic::PINNED_CLI);
    assert!(dockerfile.contains(&pinned), "Dockerfile lacks {pinned}");
    // The job runs its task at start-up; the kustomization lists files that exist.
    let job_env = job_c["env"].as_array().unwrap();
    assert!(job_env.iter().any(|e| e["name"] == "TASK_INFO"));
    for r in yaml("deploy/kubernetes/kustomization.yaml")["resources"]
        .as_array()
        .unwrap()
    {
        let file = format!("deploy/kubernetes/{}", r.as_str().unwrap());
        assert!(root.join(&file).is_file(), "kustomization lists {file}");
    }
}

#[tokio::test]
async fn request_ids_and_traceparent_travel_with_the_callbacks() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = exec
        .client()
        .post(exec.url("/api/tasks/execute"))
        .header("x-request-id", "trace-me-1")
        .header("traceparent", tp)
        .json(&seed_task(1, 1, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-1");
    rx.wait_terminal(1, 1, FAKE_WAIT).await;
    let got = rx.received();
    assert!(!got.is_empty());
    for cb in &got {
        assert_eq!(
            (cb.header("x-request-id"), cb.header("traceparent")),
            (Some("trace-me-1"), Some(tp)),
            "{:?}",
            cb.body
        );
    }
    assert!(exec
        .logs()
        .iter()
        .any(|l| l.contains("[trace-me-1] Received task 1.1")));

    // Without one, the id the response names is the one the callbacks carry.
    let resp = exec
        .client()
        .post(exec.url("/api/tasks/execute"))
        .json(&seed_task(2, 1, "hi"))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    rx.wait_terminal(2, 1, FAKE_WAIT).await;
    let lines: Vec<String> = exec
        .logs()
        .into_iter()
        .filter(|l| l.contains(&format!("[{id}]")))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("Received task 2.1"))
            && lines
                .iter()
                .any(|l| l.contains("response: POST /api/tasks/execute")),
        "every line of the request carries its generated id {id}: {lines:?}"
    );
    let ids: Vec<_> = rx
        .received()
        .into_iter()
        .filter(|c| c.body["task_id"] == 2)
        .map(|c| c.header("x-request-id").map(str::to_string))
        .collect();
    assert!(
        ids.iter().all(|i| i.as_deref() == Some(id.as_str())),
        "{id} vs {ids:?}"
    );

    let text = scrape(&exec).await;
    let relayed = metric_value(&text, "executor_event_relay_seconds_count ").unwrap_or(0);
    assert!(relayed > 0, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_markers_appear_nowhere_but_the_child_environment_and_its_config_files() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-MARKA-executor-key"),
            ("EXECUTOR_AUTH_TOKEN", "tok-MARKB-auth"),
            ("EXECUTOR_ENV", r#"{"EXTRA_SECRET_TOKEN": "MARKC-extra"}"#),
            ("LOG_LEVEL", "debug"),
        ],
    )
    .await;
    let body = serde_json::json!({
        "task_id": 9, "subtask_id": 1, "prompt": "FAKE:sleep:300\nhi", "auth_token": "eyJMARKD.header.sig",
        "git_password": "MARKE-pass", "git_username": "u",
        "user": {"git_token": "ghp_MARKF0000000000000000", "name": "u"},
        "bot": [{"shell_type": "ClaudeCode",
                 "agent_config": {"env": {"model": "claude", "model_id": "m", "api_key": "sk-MARKG-task-key"}},
                 "mcp_servers": {"gh": {"command": "gh-mcp", "env": {"TOKEN": "${{user.git_token}}"}}}}]});
    let client = exec.client();
    let auth = ("authorization", "Bearer tok-MARKB-auth");
    let resp = client
        .post(exec.url("/api/tasks/execute"))
        .header(auth.0, auth.1)
        .json(&body)
        .send()
        .await
        .unwrap();
    let execute_answer = resp.text().await.unwrap();
    rx.wait_for(FAKE_WAIT, |cbs| cbs.iter().any(|c| c["progress"] == 60))
        .await;
    let cmdlines: Vec<String> = processes_in(exec.workspace())
        .into_iter()
        .filter_map(common::procs::cmdline)
        .collect();
    assert!(!cmdlines.is_empty());
    let listing = client
        .get(exec.url("/api/tasks/sessions"))
        .header(auth.0, auth.1)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let bad = client
        .post(exec.url("/api/tasks/execute"))
        .header(auth.0, auth.1)
        .body(r#"{"task_id": "MARKH", "api_key": "sk-MARKG-task-key"}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let unauthorised = client
        .get(exec.url("/api/tasks/sessions"))
        .header("authorization", "Bearer MARKB-wrong")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        rx.wait_terminal(9, 1, FAKE_WAIT).await["status"],
        "COMPLETED"
    );
    let metrics = client
        .get(exec.url("/metrics"))
        .header(auth.0, auth.1)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let places = [
        ("logs", exec.logs().join("\n")),
        ("callbacks", rx.dump()),
        ("execute answer", execute_answer),
        ("listing", listing),
        ("child command lines", cmdlines.join("\n")),
        ("error body", bad),
        ("401 body", unauthorised),
        ("metrics", metrics),
    ];
    for marker in [
        "MARKA", "MARKB", "MARKC", "MARKD", "MARKE", "MARKF", "MARKG",
    ] {
        for (name, text) in &places {
            assert!(
                !text.contains(marker),
                "{marker} leaked into {name}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn version_flag_prints_the_version_alone_as_metrics_and_the_start_up_line_say() {
    let mut printed = Vec::new();
    for flag in ["--version", "-v"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
            .arg(flag)
            // A broken setting must not stop `--version` (the original prints before anything).
            .env("PORT", "not-a-port")
            .output()
            .unwrap();
        assert!(out.status.success(), "{flag}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let version = text.trim_end_matches('\n');
        assert!(
            !version.is_empty()
                && !version.contains(char::is_whitespace)
                && version.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{flag} must print the version alone, got {text:?}"
        );
        printed.push(version.to_string());
    }
    assert_eq!(printed[0], printed[1], "--version and -v differ");
    let version = &printed[0];
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let metrics = scrape(&exec).await;
    assert!(
        metrics.contains(&format!("executor_build_info{{version=\"{version}\"")),
        "/metrics build info disagrees with --version {version}:\n{metrics}"
    );
    let start_up = exec.wait_for_log("listening on", FAKE_WAIT).await;
    assert!(
        start_up.contains(&format!("Task executor {version} listening")),
        "start-up line disagrees with --version {version}: {start_up}"
    );
}

/// The executor's lines that are not the harness's own.
fn log_lines_with(exec: &Executor, needle: &str) -> Vec<String> {
    exec.logs()
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}

#[tokio::test]
async fn text_logs_to_a_pipe_carry_no_escape_codes_and_one_line_per_request() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("LOG_LEVEL", "info")]).await;
    run_task(&exec, &rx, 1, 1, "hi").await;
    for n in 0..3 {
        let resp = exec
            .client()
            .get(exec.url("/api/tasks/sessions"))
            .header("x-request-id", format!("one-line-{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    exec.wait_for_log("one-line-2", FAKE_WAIT).await;
    let escaped: Vec<String> = exec
        .logs()
        .into_iter()
        .filter(|l| l.contains('\u{1b}'))
        .collect();
    assert!(
        escaped.is_empty(),
        "escape codes in piped logs: {escaped:?}"
    );
    for n in 0..3 {
        let id = format!("one-line-{n}");
        let lines = log_lines_with(&exec, &id);
        assert_eq!(lines.len(), 1, "one line per request, got {lines:#?}");
        // The original's access line: `response: {METHOD} {path} {request_id} {status} {ms}ms`.
        let (_, message) = lines[0].split_once(" - INFO - ").unwrap_or(("", ""));
        let message = message.trim_start_matches(&format!("[{id}] "));
        let words: Vec<&str> = message.split(' ').collect();
        assert_eq!(
            words[..5.min(words.len())],
            [
                "response:",
                "GET",
                "/api/tasks/sessions",
                id.as_str(),
                "200"
            ],
            "{}",
            lines[0]
        );
        assert!(
            words.get(5).is_some_and(|ms| ms.ends_with("ms")),
            "{}",
            lines[0]
        );
    }
}

#[tokio::test]
async fn control_characters_in_task_strings_cannot_forge_log_lines() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("LOG_LEVEL", "info")]).await;
    let forged =
        "Nope\r\n2025-01-01 00:00:00 - task_executor - INFO - FORGEDMARK admin logged in\u{1b}[2K";
    let task = serde_json::json!({"task_id": 7, "subtask_id": 1, "prompt": "x",
        "bot": [{"shell_type": forged}]});
    let (status, body) = exec.post_json("/api/tasks/execute", &task).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    rx.wait_terminal(7, 1, FAKE_WAIT).await;
    let lines = exec.wait_for_log("FORGEDMARK", FAKE_WAIT).await;
    let hits = log_lines_with(&exec, "FORGEDMARK");
    assert!(!hits.is_empty(), "{lines}");
    for line in &hits {
        assert!(
            !line.starts_with("2025-01-01 00:00:00"),
            "a task forged a log line: {line:?}"
        );
        assert!(
            !line.contains('\r') && !line.contains('\u{1b}'),
            "control characters reached the log: {line:?}"
        );
        assert!(line.contains("\\r\\n"), "escaped form expected: {line:?}");
    }
}

#[tokio::test]
async fn without_the_agno_venv_the_pool_stays_quiet_and_agno_tasks_fail_clearly() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[
            ("AGNO_POOL_SIZE", "1"),
            ("AGNO_PYTHON", "/nonexistent/agno-venv/bin/python"),
        ],
    )
    .await;
    let note = exec.wait_for_log("Agno is not installed", FAKE_WAIT).await;
    assert!(note.contains(" - INFO - "), "said at info level: {note}");
    let task = serde_json::json!({"task_id": 3, "subtask_id": 1, "prompt": "hi",
        "bot": [{"shell_type": "Agno", "name": "a"}]});
    let (status, body) = exec.post_json("/api/tasks/execute", &task).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let end = rx.wait_terminal(3, 1, FAKE_WAIT).await;
    assert_eq!(end["status"], "FAILED", "{end}");
    assert!(
        end["error_message"].as_str().is_some_and(|m| !m.is_empty()),
        "{end}"
    );
    assert!(note.contains("agno/install.sh"), "{note}");
    assert_eq!(
        log_lines_with(&exec, "Agno is not installed").len(),
        1,
        "said once"
    );
    let pool = log_lines_with(&exec, "agno pool");
    assert!(pool.is_empty(), "the pool ran without agno: {pool:#?}");
}

/// Starts the executor with `--install-claude` (or without), no CLI anywhere, `PATH` = `path`.
async fn start_without_cli(rx: &CallbackReceiver, path: &str, install: bool) -> Executor {
    let mut opts = ExecutorOptions::new()
        .callback_url(rx.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("PATH", path)
        .claude_bin("claude");
    if install {
        opts = opts.arg("--install-claude");
    }
    Executor::start(opts).await
}

#[tokio::test(flavor = "multi_thread")]
async fn install_claude_runs_npm_for_the_pinned_version_and_explains_failures() {
    let pin = actors::config::PINNED_CLAUDE_CODE_VERSION;
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("npm-calls.txt");
    let npm = bin.path().join("npm");
    // A stand-in npm: records its arguments and "installs" the fake CLI where the real package
    // puts its binary; exits with $FAKE_NPM_EXIT when that is set.
    write_executable(
        &npm,
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{calls}'\n\
             if [ -n \"$FAKE_NPM_EXIT\" ]; then echo 'npm ERR! fake failure' >&2; exit \"$FAKE_NPM_EXIT\"; fi\n\
             prefix=''\nwhile [ $# -gt 0 ]; do [ \"$1\" = --prefix ] && prefix=\"$2\"; shift; done\n\
             mkdir -p \"$prefix/node_modules/.bin\" && ln -s '{fake}' \"$prefix/node_modules/.bin/claude\"\n",
            calls = calls.display(),
            fake = fake_claude_path().display()
        ),
    );
    let path = format!("{}:/usr/bin:/bin", bin.path().display());

    // Installed: npm ran once for the pinned package into ./.tools/claude-code, and a task runs
    // on the CLI it installed.
    let rx = CallbackReceiver::start();
    let exec = start_without_cli(&rx, &path, true).await;
    let expected_args = format!(
        "install --no-audit --no-fund --prefix .tools/claude-code @anthropic-ai/claude-code@{pin}\n"
    );
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), expected_args);
    let installed = exec
        .tmp_root()
        .join(".tools/claude-code/node_modules/.bin/claude");
    let line = exec
        .wait_for_log(&format!("Installed Claude Code CLI {pin}"), FAKE_WAIT)
        .await;
    assert!(line.contains(&installed.display().to_string()), "{line}");
    let done = run_task(&exec, &rx, 1, 1, "hello").await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(30)
    );
    assert!(value_of(&done).contains("fake reply #1"), "{done}");
    drop(exec);

    // Without the flag nothing is installed; the warning says how.
    std::fs::remove_file(&calls).unwrap();
    let rx = CallbackReceiver::start();
    let exec = start_without_cli(&rx, &path, false).await;
    let line = exec
        .wait_for_log("Claude Code CLI not found", FAKE_WAIT)
        .await;
    assert!(
        line.contains(&format!(
            "npm install --prefix .tools/claude-code @anthropic-ai/claude-code@{pin}"
        )) && line.contains("--install-claude"),
        "{line}"
    );
    assert!(!calls.exists(), "npm ran without --install-claude");
    drop(exec);

    // npm fails: the error says so, the service still serves, Claude tasks fail clearly.
    let rx = CallbackReceiver::start();
    let exec = Executor::start(
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("PATH", &path)
            .env("FAKE_NPM_EXIT", "3")
            .claude_bin("claude")
            .arg("--install-claude"),
    )
    .await;
    let line = exec
        .wait_for_log("Installing the Claude Code CLI failed", FAKE_WAIT)
        .await;
    assert!(
        line.contains("npm exited with") && line.contains('3'),
        "{line}"
    );
    exec.wait_for_log("Claude Code CLI not found", FAKE_WAIT)
        .await;
    let done = run_task(&exec, &rx, 2, 1, "hello").await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        done["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("Failed to start Claude Code CLI"),
        "{done}"
    );
    drop(exec);

    // No npm at all: told to install Node.js and npm.
    let empty = tempfile::tempdir().unwrap();
    let rx = CallbackReceiver::start();
    let exec = start_without_cli(&rx, &empty.path().display().to_string(), true).await;
    let line = exec
        .wait_for_log("Installing the Claude Code CLI failed", FAKE_WAIT)
        .await;
    assert!(
        line.contains("cannot run npm") && line.contains("install Node.js and npm first"),
        "{line}"
    );
    assert_eq!(exec.get("/").await.0, StatusCode::OK);
}

/// One GET with a deadline: the status, or the reason it failed (a hang shows as a timeout).
async fn get_within(exec: &Executor, path: &str, request_id: &str) -> Result<u16, String> {
    let send = exec
        .client()
        .get(exec.url(path))
        .header("x-request-id", request_id)
        .send();
    match tokio::time::timeout(std::time::Duration::from_secs(5), send).await {
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
        Ok(Err(e)) => Err(format!("GET {path}: {e}")),
        Err(_) => Err(format!("GET {path} got no answer within 5 s")),
    }
}

/// A log collector that stops reading (Kubernetes' log pipe behind a stalled node agent, a
/// paused terminal) must hold up neither requests nor tasks: with the stdout pipe full, the
/// probes and the API answer and a task runs to its end; the lines wait in a bounded queue and
/// flow again once the pipe is read.
#[tokio::test]
async fn a_stalled_log_pipe_holds_up_neither_requests_nor_tasks() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("LOG_LEVEL", "debug")]).await;
    exec.pause_output();
    let size = exec.output_pipe_size();
    assert!(size > 0, "the executor's stdout is a pipe");
    // Every request logs an access line of about 200 bytes: fill the pipe with them. It is full
    // once it holds at least half its size and 100 more lines added nothing (a write that does
    // not fit the rest of a page of the pipe starts a new one, so full is short of the size).
    let filler = format!("fill-{}", "x".repeat(100));
    let (mut sent, mut full, mut unchanged) = (0, 0, 0);
    while unchanged < 100 {
        assert!(
            sent < 5_000,
            "{sent} requests did not fill the pipe: {} of {size} bytes unread, {} lines read",
            exec.unread_output_bytes(),
            exec.logs().len()
        );
        if let Err(e) = get_within(&exec, "/api/tasks/sessions", &filler).await {
            panic!(
                "with {} bytes of logs unread: {e}",
                exec.unread_output_bytes()
            );
        }
        sent += 1;
        let now = exec.unread_output_bytes();
        if now == full && now >= size / 2 {
            unchanged += 1;
        } else {
            (full, unchanged) = (now, 0);
        }
    }
    for n in 0..20 {
        for path in ["/", "/health", "/api/tasks/sessions", "/metrics"] {
            let status = get_within(&exec, path, &format!("stalled-{n}")).await;
            assert_eq!(status, Ok(200), "with the log pipe full");
        }
    }
    let done = tokio::time::timeout(FAKE_WAIT, run_task(&exec, &rx, 1, 1, "hi")).await;
    let done = done.unwrap_or_else(|_| panic!("a task with the log pipe full: {}", rx.dump()));
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(
        exec.unread_output_bytes() >= full,
        "the pipe stayed full throughout (else this tested nothing)"
    );
    let metrics = scrape(&exec).await;
    assert!(
        metric_value(&metrics, "executor_log_lines_dropped_total ").is_some(),
        "dropped log lines are counted: {metrics}"
    );
    exec.resume_output();
    // The queued lines, then new ones, reach the pipe again.
    assert_eq!(
        get_within(&exec, "/health", "after-the-stall").await,
        Ok(200)
    );
    exec.wait_for_log("after-the-stall", FAKE_WAIT).await;
    assert!(
        !log_lines_with(&exec, "stalled-19").is_empty(),
        "lines logged during the stall are kept (the queue holds them)"
    );
}
