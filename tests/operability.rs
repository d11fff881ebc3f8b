//! Operability: liveness and readiness probes, request ids in and out, and the optional
//! bearer token (`EXECUTOR_AUTH_TOKEN`) that guards every route but the probes.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

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
