//! Stream-json output: line writing, ids and the message shapes of the real
//! CLI.

use std::io::{self, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Small non-cryptographic generator (splitmix64) for session ids and uuids,
/// seeded once from `/dev/urandom`, the clock and the pid.
pub struct Rng(u64);

impl Rng {
    /// Seeds a new generator.
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        let urandom =
            std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut seed = nanos ^ (u64::from(std::process::id()) << 32);
        if urandom.is_ok() {
            seed ^= u64::from_le_bytes(bytes);
        }
        Rng(seed)
    }

    /// Next pseudo-random value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random version-4 UUID string.
    pub fn uuid(&mut self) -> String {
        let hi = (self.next_u64() & !0xF000) | 0x4000;
        let lo = (self.next_u64() & !(0b11 << 62)) | (0b10 << 62);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xFFFF,
            hi & 0xFFFF,
            lo >> 48,
            lo & 0xFFFF_FFFF_FFFF
        )
    }
}

/// Writes one JSON value as a line on stdout and flushes. Like the real
/// CLI, a top-level `"type"` key comes first (the other keys are sorted).
pub fn emit(value: &Value) -> io::Result<()> {
    crate::cpu::per_line();
    let mut line = match value {
        Value::Object(map) if map.get("type").is_some_and(Value::is_string) => {
            let mut rest = map.clone();
            let kind = rest.remove("type").unwrap_or_default();
            let rest = serde_json::to_string(&rest)?;
            let sep = if rest.len() > 2 { "," } else { "" };
            format!("{{\"type\":{kind}{sep}{}", &rest[1..])
        }
        _ => serde_json::to_string(value)?,
    };
    line.push('\n');
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}

/// Writes raw bytes plus a newline on stdout (for lines that are not JSON on purpose).
pub fn emit_raw(text: &str) -> io::Result<()> {
    crate::cpu::per_line();
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Builds the messages of one session; every message carries its id.
pub struct Messages {
    /// The session id (`--resume` value or random).
    pub session_id: String,
    /// Model reported in init and assistant lines.
    pub model: String,
    /// Permission mode reported in init lines.
    pub permission_mode: String,
    /// Source of message uuids.
    pub rng: Rng,
}

impl Messages {
    /// `system`/`init`, written at the start of every turn.
    pub fn init(&mut self) -> Value {
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        json!({
            "type": "system",
            "subtype": "init",
            "cwd": cwd,
            "session_id": self.session_id,
            "tools": ["Bash", "Read"],
            "mcp_servers": [],
            "model": self.model,
            "permissionMode": self.permission_mode,
            "apiKeySource": "ANTHROPIC_API_KEY",
            "claude_code_version": crate::VERSION,
            "uuid": self.rng.uuid(),
        })
    }

    /// An `assistant` line with the given message id and content blocks.
    pub fn assistant(&mut self, id: &str, content: Value) -> Value {
        json!({
            "type": "assistant",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": content,
                "stop_reason": null,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
            "parent_tool_use_id": null,
            "session_id": self.session_id,
            "uuid": self.rng.uuid(),
        })
    }

    /// An `assistant` line with a single text block.
    pub fn assistant_text(&mut self, id: &str, text: &str) -> Value {
        self.assistant(id, json!([{"type": "text", "text": text}]))
    }

    /// A `user` line with the given content blocks (tool results, interrupts).
    pub fn user(&mut self, content: Value) -> Value {
        json!({
            "type": "user",
            "message": {"role": "user", "content": content},
            "parent_tool_use_id": null,
            "session_id": self.session_id,
            "uuid": self.rng.uuid(),
        })
    }

    /// A `result` line; `extra` fields (subtype, is_error, result, ...) are
    /// merged over the common ones.
    pub fn result(&mut self, duration_ms: u128, extra: Value) -> Value {
        let mut result = json!({
            "type": "result",
            "subtype": "success",
            "is_error": false,
            "num_turns": 1,
            "session_id": self.session_id,
            "duration_ms": duration_ms as u64,
            "duration_api_ms": 0,
            "total_cost_usd": 0.0,
            "usage": {"input_tokens": 1, "output_tokens": 1},
            "stop_reason": "end_turn",
            "terminal_reason": "completed",
            "uuid": self.rng.uuid(),
        });
        if let (Some(map), Value::Object(extra)) = (result.as_object_mut(), extra) {
            map.extend(extra);
        }
        result
    }
}

/// A successful `control_response` to request `request_id`.
pub fn control_success(request_id: &Value, response: Value) -> Value {
    json!({
        "type": "control_response",
        "response": {
            "subtype": "success",
            "request_id": request_id,
            "response": response,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        let mut rng = Rng::new();
        let a = rng.uuid();
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(a, rng.uuid());
    }

    #[test]
    fn result_extra_overrides() {
        let mut m = Messages {
            session_id: "s".into(),
            model: "m".into(),
            permission_mode: "default".into(),
            rng: Rng::new(),
        };
        let r = m.result(5, json!({"subtype": "error_max_turns", "result": null}));
        assert_eq!(r["subtype"], "error_max_turns");
        assert_eq!(r["result"], Value::Null);
        assert_eq!(r["duration_ms"], 5);
    }
}
