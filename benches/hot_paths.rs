//! Micro benchmarks (criterion) of the per-event hot paths: reading a stream-json line from the
//! CLI into a progress event, building and serialising a callback payload, and masking secrets.
//! Run with `cargo bench --bench hot_paths` (or everything with `cargo bench --workspace`).
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

use actors::agent::claude_code::turn::Turn;
use actors::mask::mask_str;
use actors::payload::{SubtaskContext, TaskStatus};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use std::hint::black_box;

const ASSISTANT: &str = r#"{"type":"assistant","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-opus-5-5","content":[{"type":"text","text":"I will read the file and then run the tests to see what fails."}],"stop_reason":null,"usage":{"input_tokens":2559,"output_tokens":1}},"parent_tool_use_id":null,"session_id":"745fff35-643d-4942-bbe0-e4a7c4eaf12e","uuid":"234a7b4a-0000-4000-8000-000000000000"}"#;
const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"All tests pass now.","session_id":"745fff35-643d-4942-bbe0-e4a7c4eaf12e","duration_ms":264,"duration_api_ms":129,"total_cost_usd":0.010856,"usage":{"input_tokens":2559,"output_tokens":31},"stop_reason":"end_turn"}"#;

fn ctx() -> SubtaskContext {
    SubtaskContext {
        task_id: 21,
        subtask_id: 31,
        task_title: "Fix the flaky test".into(),
        subtask_title: "Run the suite".into(),
        task_type: Some("online".into()),
        executor_name: Some("wegent-task-u-21".into()),
        executor_namespace: None,
        trace: Default::default(),
        protocol: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    c.bench_function("stream-json assistant line → progress event", |b| {
        b.iter_batched(
            || Turn::new(ctx(), "prompt".into()),
            |mut turn| {
                let msg: Value = serde_json::from_str(black_box(ASSISTANT)).unwrap_or(Value::Null);
                black_box(turn.on_message(&msg));
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("stream-json result line → terminal event", |b| {
        b.iter_batched(
            || Turn::new(ctx(), "prompt".into()),
            |mut turn| {
                let msg: Value = serde_json::from_str(black_box(RESULT)).unwrap_or(Value::Null);
                black_box(turn.on_message(&msg));
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let result = json!({"value": "All tests pass now.", "thinking": [{"title": "thinking.assistant_message_received", "next_action": "continue", "details": {"text": "x"}}]});
    c.bench_function("build + serialise a callback payload", |b| {
        let cx = ctx();
        b.iter(|| {
            let p = cx.payload(
                100,
                TaskStatus::Completed,
                "All tests pass now.",
                Some(result.clone()),
            );
            black_box(serde_json::to_vec(&p).unwrap_or_default())
        })
    });
    let text = "Cloning with https://token:ghp_abcdefghijklmnop1234@github.com/o/r.git failed; key sk-ant-api03-abcdefghijkl; then ran the tests and 3 of 120 failed in src/lib.rs";
    c.bench_function("mask secrets in a 150-byte message", |b| {
        b.iter(|| black_box(mask_str(black_box(text))))
    });
    let clean =
        "Ran the tests: 120 passed, 0 failed. The flaky test was caused by a race in the fixture.";
    c.bench_function("mask a message without secrets", |b| {
        b.iter(|| black_box(mask_str(black_box(clean))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
