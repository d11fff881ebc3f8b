//! Unit tests of the Responses encoder: cumulative payloads in, each step's events once out.

use serde_json::{json, Value};

use super::*;
use crate::payload::{CallbackPayload, SubtaskContext, TaskStatus};
use crate::protocol::{Protocol, ResponsesIdentity};

fn identity(shell: &str) -> ResponsesIdentity {
    ResponsesIdentity {
        shell_type: shell.into(),
        model: "m1".into(),
        ..Default::default()
    }
}

fn ctx(shell: &str) -> SubtaskContext {
    SubtaskContext {
        task_id: 7,
        subtask_id: 9,
        task_title: String::new(),
        subtask_title: String::new(),
        task_type: None,
        executor_name: None,
        executor_namespace: None,
        trace: Default::default(),
        protocol: Protocol::Responses(Box::new(identity(shell))),
    }
}

fn step(title: &str, details: Value) -> Value {
    json!({"title": title, "next_action": "continue", "details": details})
}

fn assistant(content: Value) -> Value {
    step(
        "thinking.assistant_message_received",
        json!({"type": "assistant", "message": {"content": content}, "parent_tool_use_id": null}),
    )
}

fn payload(status: TaskStatus, steps: &[Value], value: Option<&str>, msg: &str) -> CallbackPayload {
    let mut r = json!({"thinking": steps});
    if let Some(v) = value {
        r["value"] = json!(v);
    }
    ctx("claudecode").payload(
        if status.is_terminal() { 100 } else { 75 },
        status,
        msg,
        Some(r),
    )
}

fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.0).collect()
}

#[test]
fn claude_steps_become_deltas_blocks_and_one_completed() {
    let id = identity("claudecode");
    let mut enc = ResponsesEncoder::new();
    let s1 = assistant(
        json!([{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Looking."}]),
    );
    let s2 = assistant(
        json!([{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]),
    );
    let s3 = step(
        "thinking.user_message_received",
        json!({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "toolu_1",
              "content": [{"type": "text", "text": "README.md"}], "is_error": false}]}}),
    );
    let s4 = assistant(json!([{"type": "text", "text": "Found it."}]));
    let first = enc.encode(
        &payload(TaskStatus::Running, std::slice::from_ref(&s1), None, ""),
        &id,
    );
    assert_eq!(
        types(&first),
        [
            "response.created",
            "response.reasoning_summary_text.delta",
            "response.output_text.delta"
        ]
    );
    assert_eq!(first[0].1["shell_type"], "claudecode");
    assert_eq!(first[0].1["response"]["status"], "in_progress");
    assert_eq!(first[2].1["offset"], 0);
    assert_eq!(first[2].1["item_id"], "msg_9");
    let again = enc.encode(
        &payload(TaskStatus::Running, std::slice::from_ref(&s1), None, ""),
        &id,
    );
    assert!(
        again.is_empty(),
        "a repeated payload adds nothing: {again:?}"
    );
    let steps = [s1, s2, s3, s4];
    let mid = enc.encode(&payload(TaskStatus::Running, &steps, None, ""), &id);
    assert_eq!(
        types(&mid),
        [
            "response.block.created",
            "response.block.updated",
            "response.output_text.delta"
        ]
    );
    assert_eq!(mid[0].1["block"]["tool_input"]["command"], "ls");
    assert_eq!(mid[1].1["updates"]["tool_output"], "README.md");
    assert_eq!(mid[1].1["updates"]["status"], "done");
    assert_eq!(mid[2].1["offset"], "Looking.".len());
    let end = enc.encode(
        &payload(
            TaskStatus::Completed,
            &steps,
            Some("Found it."),
            "Found it.",
        ),
        &id,
    );
    assert_eq!(types(&end), ["response.completed"]);
    assert_eq!(
        end[0].1["response"]["output"][0]["content"][0]["text"],
        "Found it."
    );
    assert_eq!(end[0].1["response"]["status"], "completed");
}

#[test]
fn failure_and_cancel_terminals() {
    let id = identity("claudecode");
    let mut enc = ResponsesEncoder::new();
    let ev = enc.encode(
        &payload(TaskStatus::Failed, &[], None, "API Error: 401"),
        &id,
    );
    assert_eq!(types(&ev), ["response.created", "error"]);
    assert_eq!(
        ev[1].1,
        json!({"type": "error", "code": "runtime_error", "message": "API Error: 401"})
    );
    let mut enc = ResponsesEncoder::resumed();
    let ev = enc.encode(&payload(TaskStatus::Cancelled, &[], None, "x"), &id);
    assert_eq!(types(&ev), ["response.incomplete"]);
    assert_eq!(ev[0].1["response"]["status"], "cancelled");
    assert_eq!(ev[0].1["response"]["error"]["code"], "cancelled");
}

#[test]
fn agno_growing_text_streams_only_the_new_part_and_long_text_is_chunked() {
    let id = identity("agno");
    let mut enc = ResponsesEncoder::resumed();
    let p = |v: &str| {
        ctx("agno").payload(
            85,
            TaskStatus::Running,
            "",
            Some(json!({"thinking": [], "value": v, "blocks": []})),
        )
    };
    let a = enc.encode(&p("Hel"), &id);
    let b = enc.encode(&p("Hello"), &id);
    assert_eq!(
        (a[0].1["delta"].clone(), b[0].1["delta"].clone()),
        (json!("Hel"), json!("lo"))
    );
    assert_eq!(b[0].1["offset"], 3);
    let long = "é".repeat(TEXT_CHUNK_CHARS + 10);
    let c = enc.encode(&p(&format!("Hello{long}")), &id);
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].1["offset"], 5 + TEXT_CHUNK_CHARS);
}

#[test]
fn a_bounded_step_list_is_followed_past_its_bound() {
    let id = identity("claudecode");
    let mut enc = ResponsesEncoder::resumed();
    let text = |i: usize| assistant(json!([{"type": "text", "text": format!("t{i} ")}]));
    let full: Vec<Value> = (0..MAX_THINKING_STEPS).map(text).collect();
    assert_eq!(
        enc.encode(&payload(TaskStatus::Running, &full, None, ""), &id)
            .len(),
        MAX_THINKING_STEPS
    );
    let shifted: Vec<Value> = (2..MAX_THINKING_STEPS + 2).map(text).collect();
    let ev = enc.encode(&payload(TaskStatus::Running, &shifted, None, ""), &id);
    let deltas: Vec<&Value> = ev.iter().map(|e| &e.1["delta"]).collect();
    assert_eq!(
        deltas,
        [
            &json!(format!("t{} ", MAX_THINKING_STEPS)),
            &json!(format!("t{} ", MAX_THINKING_STEPS + 1))
        ]
    );
}

#[test]
fn envelope_has_numeric_ids_and_omits_absent_keys() {
    let mut id = identity("claudecode");
    let ev = ("error", error_data(Some("x")));
    let ids = EnvelopeIds {
        identity: &id,
        executor_name: Some("e"),
        executor_namespace: None,
    };
    let v = envelope(7, 9, &ev, &ids);
    assert_eq!(v["task_id"], 7);
    assert_eq!(v["event_type"], "error");
    assert!(v.get("message_id").is_none() && v.get("executor_namespace").is_none());
    id.message_id = Some(3);
    id.validation_id = Some("v-1".into());
    let ids = EnvelopeIds {
        identity: &id,
        executor_name: None,
        executor_namespace: Some("ns"),
    };
    let v = envelope(7, 9, &ev, &ids);
    assert_eq!(
        (v["message_id"].clone(), v["validation_id"].clone()),
        (json!(3), json!("v-1"))
    );
    assert!(is_terminal_body(&v));
}
