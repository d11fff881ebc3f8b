//! Property tests of the pure parts that read untrusted input: the task dict reader
//! (`TaskSpec::from_value`), the stream-json turn parser (`Turn::on_message`) and secret masking
//! (`mask_str`). Each property runs proptest's default 256 cases on trees of bounded depth.

use actors::agent::claude_code::turn::{LineOutcome, Turn};
use actors::mask::mask_str;
use actors::payload::{CallbackPayload, SubtaskContext, TaskStatus};
use actors::task::TaskSpec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

// ------------------------------------------------------------------------------------------
// Generators
// ------------------------------------------------------------------------------------------

/// Keys the readers look at, mixed with random ones so that every branch is reached.
#[rustfmt::skip]
const KEYS: &[&str] = &[
    "task_id", "subtask_id", "prompt", "content", "bot", "type", "agent_type", "shell_type",
    "task_title", "subtask_title", "new_session", "system_prompt", "agent_config", "model",
    "mcp_servers", "mcpServers", "allowed_tools", "disallowed_tools", "max_turns", "id",
    "user_selected_skills", "git_url", "repo_url", "branch", "branch_name", "message",
    "subtype", "is_error", "result", "errors", "tool_use", "tool_use_id", "session_id", "env",
    "api_key",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => ".{0,8}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,16}",
        1 => prop::sample::select(&[
            "${{task_id}}", "${{bot.0.mcp_servers}}", "${{ prompt }}", "${{}}", "claude_code",
            "ClaudeCode", "result", "assistant", "user", "system", "success", "error_max_turns",
            "sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA", "\u{0}", "",
        ][..]).prop_map(str::to_string),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
    ]
}

/// Any JSON value, at most `depth` levels of arrays/objects deep.
fn json_tree(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An object with a random subset of `fields`, each holding a value of its own type five
/// times in six and of any type otherwise.
fn object_of(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let (keys, values): (Vec<_>, Vec<_>) = fields
        .into_iter()
        .map(|(k, v)| (k, prop::option::of(prop_oneof![5 => v, 1 => json_tree(2)])))
        .unzip();
    values
        .prop_map(move |vals| {
            let m: Map<String, Value> = keys
                .iter()
                .zip(vals)
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                .collect();
            Value::Object(m)
        })
        .boxed()
}

/// Task dicts whose known fields hold values of random types (a bot list among them).
fn task_like() -> impl Strategy<Value = Value> {
    let int = || {
        prop_oneof![3 => 0i64..100, 1 => any::<i64>()]
            .prop_map(Value::from)
            .boxed()
    };
    let s = || text().prop_map(Value::from).boxed();
    let names = || {
        let list = prop::collection::vec(text().prop_map(Value::from), 0..3).prop_map(Value::Array);
        prop_oneof![list, text().prop_map(Value::from)].boxed()
    };
    let obj = || {
        json_tree(3)
            .prop_filter("an object", Value::is_object)
            .boxed()
    };
    let bot = object_of(vec![
        ("id", int()),
        ("shell_type", s()),
        ("system_prompt", s()),
        ("model", s()),
        ("agent_config", obj()),
        ("mcp_servers", obj()),
        ("mcpServers", obj()),
        ("allowed_tools", names()),
        ("disallowed_tools", names()),
        ("max_turns", int()),
        ("max_thinking_tokens", int()),
    ]);
    let task = object_of(vec![
        ("subtask_id", int()),
        ("content", s()),
        ("type", s()),
        ("agent_type", s()),
        ("task_title", s()),
        ("subtask_title", s()),
        ("new_session", any::<bool>().prop_map(Value::Bool).boxed()),
        ("user_selected_skills", names()),
        ("git_url", s()),
        ("repo_url", s()),
        ("branch_name", s()),
        ("branch", s()),
    ]);
    // `task_id` and `prompt` are always there, of their own type three times in four.
    let task_id = prop_oneof![3 => int(), 1 => json_tree(1)];
    let prompt = prop_oneof![3 => s(), 1 => json_tree(1)];
    let bots = prop_oneof![
        3 => prop::collection::vec(bot.clone(), 0..3).prop_map(Value::Array),
        1 => bot,
        1 => json_tree(3),
    ];
    (task, task_id, prompt, prop::option::of(bots)).prop_map(|(mut t, id, p, b)| {
        let o = t.as_object_mut().expect("object_of makes objects");
        o.insert("task_id".into(), id);
        o.insert("prompt".into(), p);
        if let Some(b) = b {
            o.insert("bot".into(), b);
        }
        t
    })
}

/// Messages shaped like the CLI's stream-json output, with fields of random types.
fn stream_message() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        prop::sample::select(
            &[
                "system",
                "assistant",
                "user",
                "result",
                "stream_event",
                "control_response"
            ][..]
        )
        .prop_map(Value::from),
        json_tree(1),
    ];
    let block = (
        prop::sample::select(&["tool_use", "tool_result", "text", "thinking"][..]),
        prop::sample::select(&["t1", "t2", "t3"][..]),
        json_tree(1),
    )
        .prop_map(|(t, id, x)| json!({"type": t, "id": id, "tool_use_id": id, "text": x}));
    let content = prop_oneof![
        prop::collection::vec(block, 0..4).prop_map(Value::Array),
        json_tree(2)
    ];
    let subtype = prop_oneof![
        prop::sample::select(
            &[
                "success",
                "error_max_turns",
                "error_during_execution",
                "init"
            ][..]
        )
        .prop_map(Value::from),
        json_tree(1),
    ];
    (kind, content, subtype, json_tree(1), json_tree(1), json_tree(2)).prop_map(
        |(kind, content, subtype, is_error, result, errors)| {
            json!({"type": kind, "subtype": subtype, "is_error": is_error, "result": result,
                   "errors": errors, "session_id": "s", "message": {"role": "assistant", "content": content}})
        },
    )
}

/// A stdout line: a serialised message, possibly damaged, or arbitrary text.
fn stream_line() -> impl Strategy<Value = String> {
    prop_oneof![
        stream_message().prop_map(|m| m.to_string()),
        (stream_message(), any::<prop::sample::Index>(), ".{0,3}").prop_map(|(m, at, junk)| {
            let s = m.to_string();
            let cut = (0..=at.index(s.len() + 1).min(s.len()))
                .rev()
                .find(|i| s.is_char_boundary(*i));
            format!("{}{junk}", &s[..cut.unwrap_or(0)])
        }),
        r#"[{}\[\]":,0-9a-z \\]{0,40}"#,
        ".{0,40}",
    ]
}

/// proptest's defaults (256 cases), without writing regression files next to the sources.
fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

fn ctx() -> SubtaskContext {
    SubtaskContext {
        task_id: 7,
        subtask_id: 3,
        task_title: "T ✓".into(),
        subtask_title: "S".into(),
        task_type: None,
        executor_name: None,
        executor_namespace: None,
        trace: Default::default(),
        protocol: Default::default(),
    }
}

// ------------------------------------------------------------------------------------------
// (a) TaskSpec::from_value
// ------------------------------------------------------------------------------------------

/// What a successfully read task must say about its input.
fn check_task(input: &Value) -> Result<(), TestCaseError> {
    let Ok(spec) = TaskSpec::from_value(input) else {
        return Ok(());
    };
    prop_assert!(
        spec.task_id >= 0,
        "negative task_id {} from {input}",
        spec.task_id
    );
    prop_assert_eq!(
        Some(spec.task_id),
        input["task_id"].as_i64(),
        "task_id of {}",
        input
    );
    let want = input["prompt"]
        .as_str()
        .or_else(|| input["content"].as_str());
    prop_assert_eq!(Some(spec.prompt.as_str()), want, "prompt of {}", input);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn task_reader_never_panics_on_any_json(v in json_tree(4)) {
        check_task(&v)?;
    }

    #[test]
    fn task_reader_never_panics_on_task_like_objects(v in task_like()) {
        check_task(&v)?;
    }

    /// `check_task` passes whenever parsing fails; here every field has its documented type,
    /// so parsing must succeed and keep what it read.
    #[test]
    fn task_reader_accepts_every_well_typed_task(v in well_typed_task()) {
        let spec = TaskSpec::from_value(&v);
        prop_assert!(spec.is_ok(), "a well-typed task was refused: {:?}\n{}", spec.err(), v);
        check_task(&v)?;
        let spec = spec.expect("checked above");
        prop_assert_eq!(Some(spec.subtask_id), v["subtask_id"].as_i64());
        prop_assert_eq!(Some(spec.task_title.as_str()), v["task_title"].as_str());
        prop_assert_eq!(Some(spec.new_session), v["new_session"].as_bool());
    }
}

/// Tasks whose fields all have the type the contract documents (ids non-negative integers,
/// texts strings, `new_session` a boolean).
fn well_typed_task() -> impl Strategy<Value = Value> {
    (
        0i64..=i64::MAX,
        0i64..=i64::MAX,
        text(),
        text(),
        any::<bool>(),
    )
        .prop_map(|(task_id, subtask_id, prompt, title, new_session)| {
            serde_json::json!({
                "task_id": task_id,
                "subtask_id": subtask_id,
                "prompt": prompt,
                "task_title": title,
                "new_session": new_session,
            })
        })
}

// ------------------------------------------------------------------------------------------
// (b) Turn::on_message
// ------------------------------------------------------------------------------------------

fn check_payload(p: &CallbackPayload, status: TaskStatus) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.status, status);
    let want = if status == TaskStatus::Running {
        75
    } else {
        100
    };
    prop_assert_eq!(p.progress, want, "progress of a {:?} payload", status);
    prop_assert_eq!((p.task_id, p.subtask_id), (7, 3));
    let wire = serde_json::to_value(p).expect("a payload serialises");
    prop_assert_eq!(&wire["status"], status.as_str());
    Ok(())
}

/// Feeds `msgs` the way the agent actor does: the turn is dropped at its first `Finished`.
fn run_turn(msgs: &[Value], cancel_at: Option<usize>) -> Result<(), TestCaseError> {
    let mut turn = Some(Turn::new(ctx(), "hi".into()));
    let mut cancelled = false;
    let mut finished = 0;
    for (i, msg) in msgs.iter().enumerate() {
        let Some(t) = turn.as_mut() else { break };
        if cancel_at == Some(i) {
            t.cancelled = true;
            cancelled = true;
        }
        let kind = msg.get("type").and_then(Value::as_str);
        match t.on_message(msg) {
            LineOutcome::Ignore => prop_assert!(
                cancelled || !matches!(kind, Some("system" | "assistant" | "user")),
                "a {kind:?} message was ignored: {msg}"
            ),
            LineOutcome::Progress => {
                let p = t.progress_event();
                prop_assert!(!cancelled, "progress after a cancel: {msg}");
                prop_assert!(
                    matches!(kind, Some("system" | "assistant" | "user")),
                    "{msg}"
                );
                check_payload(&p, TaskStatus::Running)?;
            }
            LineOutcome::Finished(status, p) => {
                finished += 1;
                prop_assert_eq!(kind, Some("result"), "only a result ends a turn: {}", msg);
                prop_assert!(status.is_terminal());
                match p {
                    None => prop_assert_eq!(status, TaskStatus::Cancelled),
                    Some(p) => {
                        prop_assert!(!cancelled, "a cancelled turn must end silently");
                        prop_assert!(matches!(status, TaskStatus::Completed | TaskStatus::Failed));
                        check_payload(&p, status)?;
                    }
                }
                turn = None;
            }
        }
    }
    let results = msgs.iter().filter(|m| m["type"] == "result").count();
    prop_assert_eq!(finished, results.min(1), "one Finished per turn");
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn turn_parser_handles_any_json(msgs in prop::collection::vec(json_tree(3), 0..8)) {
        run_turn(&msgs, None)?;
    }

    #[test]
    fn turn_parser_handles_stream_messages(
        msgs in prop::collection::vec(stream_message(), 0..10),
        cancel_at in prop::option::of(0usize..10),
    ) {
        run_turn(&msgs, cancel_at)?;
    }

    #[test]
    fn turn_parser_handles_arbitrary_lines(lines in prop::collection::vec(stream_line(), 0..10)) {
        let msgs: Vec<Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        run_turn(&msgs, None)?;
    }
}

// ------------------------------------------------------------------------------------------
// (c) mask_str
// ------------------------------------------------------------------------------------------

/// Text built from pieces of secrets and of the syntax around them.
fn secretish_text() -> impl Strategy<Value = String> {
    #[rustfmt::skip]
    const PIECES: &[&str] = &[
        "sk-", "sk-ant-", "api03-", "Bearer ", "basic ", "password=", "api_key: ", "secret",
        "token", "=", ":", "\"", "'", " ", ",", "}", "@", "/", "https://", "git://", "u:",
        "ghp_", "xoxb-", "AKIA", "eyJ", ".", "***", "\n", "abcdefgh", "0123456789",
        "ABCDEFGHIJKLMNOP", "é", "🙂", "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
    ];
    prop::collection::vec(prop::sample::select(PIECES), 0..12).prop_map(|p| p.concat())
}

/// `scheme://user:password@host` URLs whose password holds `key=value` syntax.
fn credential_url() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(&["https://", "git://", "ssh://"][..]);
    let key = prop::sample::select(&["password=", "token:", "secret=", "api_key=", ""][..]);
    let sep = prop::sample::select(&[",", "'", "}", " ", ""][..]);
    let password = ("[a-z]{0,2}", key, "[a-z0-9/]{0,8}", sep, "[a-z]{0,3}")
        .prop_map(|(a, k, v, s, t)| format!("{a}{k}{v}{s}{t}"));
    (scheme, "[a-z]{1,4}", password, "[a-z./]{0,8}")
        .prop_map(|(scheme, user, pw, host)| format!("{scheme}{user}:{pw}@{host}"))
}

/// `(url, password marker)`: a credential URL whose password holds a marker of upper-case
/// letters and digits no other part of the URL can contain. Unlike [`credential_url`] the URL
/// is well-formed (a host, no space in the userinfo): a password there must always go.
fn credential_url_with_marker() -> impl Strategy<Value = (String, String)> {
    let scheme = prop::sample::select(&["https://", "git://", "ssh://"][..]);
    let key = prop::sample::select(&["password=", "token:", "secret=", "api_key=", ""][..]);
    let sep = prop::sample::select(&[",", "'", "}", ""][..]);
    (
        scheme,
        "[a-z]{1,4}",
        ("[a-z]{0,2}", key, "[A-Z0-9]{6,10}", sep, "[a-z]{0,3}"),
        "[a-z][a-z./]{0,8}",
    )
        .prop_map(|(scheme, user, (a, k, marker, s, t), host)| {
            (
                format!("{scheme}{user}:{a}{k}{marker}{s}{t}@{host}"),
                marker,
            )
        })
}

proptest! {
    #![proptest_config(config())]

    /// Idempotency alone passes for a mask that does nothing: the password must be gone.
    #[test]
    fn mask_removes_the_password_of_credential_urls((url, marker) in credential_url_with_marker()) {
        let out = mask_str(&url);
        prop_assert!(!out.contains(&marker), "password {:?} survived in {:?}", marker, out);
    }

    #[test]
    fn mask_is_idempotent_on_any_text(s in any::<String>()) {
        let once = mask_str(&s);
        prop_assert_eq!(mask_str(&once), once.clone(), "input {:?}", s);
    }

    #[test]
    fn mask_is_idempotent_on_secretish_text(s in prop_oneof![secretish_text(), credential_url()]) {
        let once = mask_str(&s);
        prop_assert_eq!(mask_str(&once), once.clone(), "input {:?}", s);
    }

    /// The key after a separator (start of text, space, `=`, quote…): the common case.
    #[test]
    fn mask_removes_delimited_anthropic_keys(
        pre in "(.{0,20}[ =:\"'\n,;(])?", key in "[A-Za-z0-9]{20,40}", post in ".{0,20}",
    ) {
        let key = format!("sk-ant-{key}");
        let out = mask_str(&format!("{pre}{key}{post}"));
        prop_assert!(!out.contains(&key), "{:?} survived in {:?}", key, out);
    }

    /// The key anywhere in random text, even glued to the character before it.
    #[test]
    fn mask_removes_anthropic_keys_anywhere(pre in ".{0,20}", key in "[A-Za-z0-9]{20,40}", post in ".{0,20}") {
        let key = format!("sk-ant-{key}");
        let out = mask_str(&format!("{pre}{key}{post}"));
        prop_assert!(!out.contains(&key), "{:?} survived in {:?}", key, out);
    }
}
