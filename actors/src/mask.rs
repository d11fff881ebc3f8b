//! Masking of secrets in anything the executor reports (callback details, error texts): API
//! keys, bearer tokens, JWTs, private keys, and values of keys whose names say they are secret.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// What replaces a masked secret.
pub const MASK: &str = "***";

/// Secret-looking substrings, matched anywhere in a string.
static PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // Private key blocks.
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        // Anthropic keys: distinctive enough to match glued to anything (e.g. after a literal
        // `\n` in escaped JSON); other `sk-` keys only at a word start ("task-..." is no key).
        r"sk-ant-[A-Za-z0-9_\-]{8,}",
        r"\bsk-[A-Za-z0-9_\-]{8,}",
        // GitHub and GitLab tokens, Slack tokens, AWS access key ids, JWTs: distinctive prefixes.
        r"(?:ghp|gho|ghu|ghs|ghr|github_pat|glpat)[_-][A-Za-z0-9_\-]{10,}",
        r"xox[abposr]-[A-Za-z0-9\-]{10,}",
        r"AKIA[0-9A-Z]{16}",
        r"eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}",
        // Authorization headers.
        r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/\-]{8,}=*",
        // Credentials in URLs: scheme://user:secret@host.
        r"(?i)(?:https?|git|ssh)://[^\s/:@]+:[^\s/@]+@",
    ]
    .iter()
    .filter_map(|p| Regex::new(p).ok())
    .collect()
});

/// `key=value` / `"key": "value"` pairs whose key names a secret.
static KEY_VALUE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)((?:api[_-]?key|access[_-]?token|auth[_-]?token|secret|password|passwd|git[_-]?token|private[_-]?key)["']?\s*[:=]\s*["']?)([^\s"',}]{4,})"#,
    )
    .ok()
});

/// True for object keys whose values are secrets whatever they look like (`api_key`,
/// `ANTHROPIC_AUTH_TOKEN`, `git_password`, ...), but not `apiKeySource` or `input_tokens`.
fn is_secret_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    [
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "privatekey",
        "authorization",
        "credential",
        "credentials",
    ]
    .iter()
    .any(|s| k.ends_with(s))
}

/// Masks secrets inside one string.
pub fn mask_str(s: &str) -> String {
    let mut out = s.to_string();
    // `key=value` first: masking its value can only shorten a URL's credentials part, while
    // the other order could reveal a new match on a second pass (masking must be idempotent).
    if let Some(re) = KEY_VALUE.as_ref() {
        if re.is_match(&out) {
            out = re.replace_all(&out, format!("${{1}}{MASK}")).into_owned();
        }
    }
    for re in PATTERNS.iter() {
        if re.is_match(&out) {
            out = re
                .replace_all(&out, |c: &regex::Captures<'_>| {
                    let m = &c[0];
                    if m.contains("://") {
                        // Keep the scheme, drop the credentials.
                        format!("{}{MASK}@", &m[..m.find("://").map_or(0, |i| i + 3)])
                    } else {
                        MASK.to_string()
                    }
                })
                .into_owned();
        }
    }
    out
}

/// Masks secrets everywhere in a JSON value: strings are scanned, and values under
/// secret-named keys are replaced whole.
pub fn mask_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            let masked = mask_str(s);
            if masked != *s {
                *s = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_value),
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if is_secret_key(k) && matches!(val, Value::String(s) if !s.is_empty()) {
                    *val = Value::String(MASK.into());
                } else {
                    mask_value(val);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_known_token_shapes() {
        let s = "key sk-ant-api03-abcdefghijkl and ghp_abcdefghijklmnop1234 and Bearer abc.def.ghijklmnop";
        let m = mask_str(s);
        assert!(
            !m.contains("abcdefghijkl") && !m.contains("ghp_") && !m.contains("ghijklmnop"),
            "{m}"
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(mask_str(jwt), MASK);
        assert_eq!(
            mask_str("https://token:s3cr3t@github.com/x.git"),
            "https://***@github.com/x.git"
        );
        assert_eq!(mask_str("password=hunter22 ok"), "password=*** ok");
        let pk = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----";
        assert_eq!(mask_str(pk), MASK);
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let s = "mock reply #1 to: say hello; input_tokens=25";
        assert_eq!(mask_str(s), s);
    }

    #[test]
    fn masks_secret_keys_in_json() {
        let mut v = json!({"env": {"api_key": "plain", "ANTHROPIC_AUTH_TOKEN": "x1234"},
                           "usage": {"input_tokens": 5, "output_tokens": 2}, "text": "sk-abcdefghijk"});
        mask_value(&mut v);
        assert_eq!(v["env"]["api_key"], MASK);
        assert_eq!(v["env"]["ANTHROPIC_AUTH_TOKEN"], MASK);
        assert_eq!(v["usage"]["input_tokens"], 5);
        let mut init = json!({"apiKeySource": "ANTHROPIC_API_KEY", "git_password": "p"});
        mask_value(&mut init);
        assert_eq!(init["apiKeySource"], "ANTHROPIC_API_KEY");
        assert_eq!(init["git_password"], MASK);
        assert_eq!(v["text"], MASK);
    }
}
