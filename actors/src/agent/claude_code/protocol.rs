//! The stream-json wire format of the Claude Code CLI (research/claude-code-cli.md §1), apart
//! from the pipes (`agent::process`) and from what the messages mean (`turn`, `turn_flow`):
//! serde types for every line the executor writes, and typed views of the lines it acts on.
//! Other stdout messages stay `serde_json::Value`s: they go into thinking steps verbatim.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Prefix of the id of the `initialize` request sent to process generation `gen`.
const INIT_ID: &str = "req_init_";

/// Prefix of the id of an `interrupt` request.
const INTERRUPT_ID: &str = "req_int_";

/// A line written to the CLI's stdin.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outbound<'a> {
    /// A user message: one subtask's prompt.
    User {
        /// The message.
        message: UserMessage<'a>,
        /// Always `null`: the prompt is not a tool result.
        parent_tool_use_id: Option<&'a str>,
        /// Always `""`: the CLI keeps its own session.
        session_id: &'a str,
    },
    /// A request of the executor (initialize, interrupt).
    ControlRequest {
        /// Matches the CLI's `control_response`.
        request_id: String,
        /// What is asked.
        request: Request,
    },
    /// The executor's answer to a request of the CLI.
    ControlResponse {
        /// The answer.
        response: Response,
    },
}

/// The `message` of a user line.
#[derive(Debug, Serialize)]
pub struct UserMessage<'a> {
    /// Always `user`.
    pub role: &'static str,
    /// The prompt text.
    pub content: &'a str,
}

/// A control request of the executor.
#[derive(Debug, Serialize)]
#[serde(tag = "subtype", rename_all = "snake_case")]
pub enum Request {
    /// The first line to every new process; the turn is sent once it is answered.
    Initialize {
        /// No hooks are registered (`null`).
        hooks: Option<Value>,
    },
    /// Stop the running turn (a cancel).
    Interrupt,
}

/// The executor's answer to a control request of the CLI.
#[derive(Debug, Serialize)]
#[serde(tag = "subtype", rename_all = "snake_case")]
pub enum Response {
    /// The request is granted.
    Success {
        /// The CLI's id, echoed.
        request_id: Value,
        /// The grant.
        response: Allow,
    },
    /// The request is refused.
    Error {
        /// The CLI's id, echoed.
        request_id: Value,
        /// Why.
        error: &'static str,
    },
}

/// A `can_use_tool` grant (the executor runs in bypass mode: every tool is allowed as asked).
#[derive(Debug, Serialize)]
pub struct Allow {
    /// Always `allow`.
    pub behavior: &'static str,
    /// The tool input, unchanged.
    #[serde(rename = "updatedInput")]
    pub updated_input: Value,
}

impl Outbound<'_> {
    /// The line as written (one JSON object, no newline).
    pub fn line(&self) -> String {
        // Serialising these types cannot fail: every field is a string, an option or a Value.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The user line carrying `prompt`.
pub fn user(prompt: &str) -> String {
    Outbound::User {
        message: UserMessage {
            role: "user",
            content: prompt,
        },
        parent_tool_use_id: None,
        session_id: "",
    }
    .line()
}

/// The `initialize` request to process generation `gen`.
pub fn initialize(gen: u64) -> String {
    Outbound::ControlRequest {
        request_id: format!("{INIT_ID}{gen}"),
        request: Request::Initialize { hooks: None },
    }
    .line()
}

/// The `interrupt` request to process generation `gen`.
pub fn interrupt(gen: u64) -> String {
    Outbound::ControlRequest {
        request_id: format!("{INTERRUPT_ID}{gen}"),
        request: Request::Interrupt,
    }
    .line()
}

/// The answer to a control request of the CLI: `can_use_tool` is allowed, anything else is
/// refused (so a turn never waits on the executor).
pub fn answer(req: &CliRequest) -> String {
    let response = match req.request.subtype.as_deref() {
        Some("can_use_tool") => Response::Success {
            request_id: req.request_id.clone(),
            response: Allow {
                behavior: "allow",
                updated_input: req
                    .request
                    .input
                    .clone()
                    .unwrap_or_else(|| Value::Object(Default::default())),
            },
        },
        _ => Response::Error {
            request_id: req.request_id.clone(),
            error: "not supported by this executor",
        },
    };
    Outbound::ControlResponse { response }.line()
}

/// A stdout message the agent acts on itself (everything else is a [`Inbound::Message`]).
#[derive(Debug)]
pub enum Inbound<'a> {
    /// The CLI answers one of the executor's requests.
    ControlResponse(CliResponse),
    /// The CLI asks the executor something.
    ControlRequest(CliRequest),
    /// A conversation message (`system`, `assistant`, `user`, `result`, ...).
    Message(&'a Value),
}

/// A `control_response` line.
#[derive(Debug, Default, Deserialize)]
pub struct CliResponse {
    /// Its body.
    #[serde(default)]
    pub response: CliResponseBody,
}

/// The body of a `control_response`.
#[derive(Debug, Default, Deserialize)]
pub struct CliResponseBody {
    /// Which request it answers.
    #[serde(default)]
    pub request_id: String,
}

impl CliResponse {
    /// Whether it answers the `initialize` request of process generation `gen`.
    pub fn answers_init(&self, gen: u64) -> bool {
        self.response
            .request_id
            .strip_prefix(INIT_ID)
            .is_some_and(|g| g == gen.to_string())
    }
}

/// A `control_request` line of the CLI.
#[derive(Debug, Default, Deserialize)]
pub struct CliRequest {
    /// Echoed in the answer (any JSON value).
    #[serde(default)]
    pub request_id: Value,
    /// What it asks.
    #[serde(default)]
    pub request: CliRequestBody,
}

/// The body of a CLI `control_request`.
#[derive(Debug, Default, Deserialize)]
pub struct CliRequestBody {
    /// `can_use_tool`, ...
    pub subtype: Option<String>,
    /// The tool input of a `can_use_tool`.
    pub input: Option<Value>,
}

/// Sorts one parsed stdout message (a malformed control line reads as an empty one).
pub fn classify(msg: &Value) -> Inbound<'_> {
    match msg.get("type").and_then(Value::as_str) {
        Some("control_response") => {
            Inbound::ControlResponse(CliResponse::deserialize(msg).unwrap_or_default())
        }
        Some("control_request") => {
            Inbound::ControlRequest(CliRequest::deserialize(msg).unwrap_or_default())
        }
        _ => Inbound::Message(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(line: &str) -> Value {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn lines_written_match_the_cli_contract() {
        assert_eq!(
            parsed(&user("hi")),
            json!({"type": "user", "message": {"role": "user", "content": "hi"},
                   "parent_tool_use_id": null, "session_id": ""})
        );
        assert_eq!(
            parsed(&initialize(3)),
            json!({"type": "control_request", "request_id": "req_init_3",
                   "request": {"subtype": "initialize", "hooks": null}})
        );
        assert_eq!(
            parsed(&interrupt(3)),
            json!({"type": "control_request", "request_id": "req_int_3",
                   "request": {"subtype": "interrupt"}})
        );
    }

    #[test]
    fn tool_requests_are_allowed_and_others_refused() {
        let Inbound::ControlRequest(r) = classify(&json!({"type": "control_request",
            "request_id": "r1", "request": {"subtype": "can_use_tool", "input": {"a": 1}}}))
        else {
            panic!("not a request")
        };
        assert_eq!(
            parsed(&answer(&r)),
            json!({"type": "control_response", "response": {"subtype": "success",
                   "request_id": "r1", "response": {"behavior": "allow", "updatedInput": {"a": 1}}}})
        );
        let Inbound::ControlRequest(r) = classify(&json!({"type": "control_request",
            "request_id": 7, "request": {"subtype": "hook_callback"}}))
        else {
            panic!("not a request")
        };
        assert_eq!(
            parsed(&answer(&r)),
            json!({"type": "control_response", "response": {"subtype": "error",
                   "request_id": 7, "error": "not supported by this executor"}})
        );
    }

    #[test]
    fn only_the_current_generations_init_answer_counts() {
        let msg = json!({"type": "control_response", "response": {"request_id": "req_init_2"}});
        let Inbound::ControlResponse(r) = classify(&msg) else {
            panic!("not a response")
        };
        assert!(r.answers_init(2));
        assert!(!r.answers_init(12) && !r.answers_init(1));
        let bad = json!({"type": "control_response", "response": 5});
        assert!(matches!(classify(&bad), Inbound::ControlResponse(r) if !r.answers_init(0)));
    }
}
