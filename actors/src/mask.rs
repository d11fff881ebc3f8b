//! Masking of secrets in anything the executor reports (callback details, error texts): API
//! keys, bearer tokens, JWTs, private keys, values of keys whose names say they are secret, and
//! — whatever they look like — the exact secret values the executor knows: its own credentials
//! and each task's keys and tokens ([`SecretRegistry`]). Every callback (and so every SSE event)
//! goes through [`mask_payload`] once, where the relay takes it in.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

/// What replaces a masked secret.
pub const MASK: &str = "***";

/// Secret-looking substrings, matched anywhere in a string.
const PATTERN_SOURCES: [&str; 9] = [
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
];

/// `key=value` / `"key": "value"` pairs whose key names a secret.
const KEY_VALUE_SOURCE: &str = r#"(?i)((?:api[_-]?key|access[_-]?token|auth[_-]?token|private[_-]?token|secret|password|passwd|git[_-]?token|private[_-]?key)["']?\s*[:=]\s*["']?)([^\s"',}]{4,})"#;

static PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    PATTERN_SOURCES
        .iter()
        .filter_map(|p| Regex::new(p).ok())
        .collect()
});

static KEY_VALUE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(KEY_VALUE_SOURCE).ok());

/// Every pattern at once: one scan tells whether a string needs masking at all (nearly every
/// log line and callback string does not), where the patterns one by one were ten scans.
static ANY_PATTERN: LazyLock<Option<regex::RegexSet>> =
    LazyLock::new(|| regex::RegexSet::new(PATTERN_SOURCES.iter().chain([&KEY_VALUE_SOURCE])).ok());

/// True for object keys whose values are secrets whatever they look like (`api_key`,
/// `ANTHROPIC_AUTH_TOKEN`, `git_password`, ...), but not `apiKeySource` or `input_tokens`.
pub fn is_secret_key(key: &str) -> bool {
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

/// Most passes of [`mask_pass`] one string gets: a mask can open a new match for another
/// pattern (`AKIA…sk-ant-…`: once the AWS key is `***`, the Anthropic key starts at a word
/// boundary), so passes repeat until nothing changes.
const MAX_MASK_PASSES: usize = 4;

/// Masks secrets inside one string (idempotent: masking the result changes nothing).
pub fn mask_str(s: &str) -> String {
    if ANY_PATTERN.as_ref().is_some_and(|set| !set.is_match(s)) {
        return s.to_string();
    }
    let mut out = s.to_string();
    for _ in 0..MAX_MASK_PASSES {
        let next = mask_pass(&out);
        if next == out {
            break; // the common case (nothing to mask) costs one pass
        }
        out = next;
    }
    out
}

/// One pass of every pattern over `s`.
fn mask_pass(s: &str) -> String {
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

/// Masks the exact secret values the executor knows, then the secret patterns.
pub fn mask_text(s: &str) -> String {
    mask_str(&secrets().mask_known(s))
}

/// Masks secrets everywhere in a JSON value: strings are scanned (known values and patterns),
/// and values under secret-named keys are replaced whole.
pub fn mask_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            let masked = mask_text(s);
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

/// A callback as it may leave the executor: every text field masked.
pub fn mask_payload(p: &crate::payload::CallbackPayload) -> crate::payload::CallbackPayload {
    let mut out = p.clone();
    out.error_message = out.error_message.as_deref().map(mask_text);
    out.task_title = mask_text(&out.task_title);
    out.subtask_title = mask_text(&out.subtask_title);
    if let Some(r) = out.result.as_mut() {
        mask_value(r);
    }
    out
}

/// Shortest exact value masked: shorter ones would mask ordinary words.
pub const MIN_SECRET_LEN: usize = 6;

/// How long a finished session's secrets are still masked, for its last callbacks in flight.
pub const FORGET_DELAY: Duration = Duration::from_secs(30);

/// Executor variables whose values are secrets, masked wherever they appear.
const EXECUTOR_SECRET_VARS: &[&str] = &[
    "EXECUTOR_AUTH_TOKEN",
    "GIT_TOKEN_AES_KEY",
    "GIT_TOKEN_AES_IV",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
];

/// The executor's own secrets, read once from its environment (and the secret-named keys of
/// `EXECUTOR_ENV`).
static EXECUTOR_SECRETS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut out: Vec<String> = EXECUTOR_SECRET_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .collect();
    if let Some(Value::Object(env)) = std::env::var("EXECUTOR_ENV")
        .ok()
        .and_then(|raw| serde_json::from_str(&raw).ok())
    {
        out.extend(
            env.iter()
                .filter(|(k, _)| is_secret_key(k))
                .filter_map(|(_, v)| v.as_str().map(str::to_string)),
        );
    }
    out
});

/// The exact secret values the executor knows: its own (from its environment) and each live
/// task's (registered when a subtask is accepted, forgotten when its session ends). Values are
/// only compared, never logged.
#[derive(Default)]
pub struct SecretRegistry {
    tasks: RwLock<HashMap<i64, (u64, Vec<String>)>>,
    /// Bumped whenever the set of values changes.
    version: std::sync::atomic::AtomicU64,
    /// One automaton over every value and its percent-encoding, for the `version` it was built
    /// at: every log line and callback string is scanned once, not once per value of every
    /// live task (hundreds of values with hundreds of tasks).
    compiled: RwLock<Option<(u64, std::sync::Arc<Compiled>)>>,
}

/// The known values as one leftmost-longest automaton (a value containing another is masked
/// whole), with one [`MASK`] per pattern for `replace_all`.
struct Compiled {
    automaton: Option<aho_corasick::AhoCorasick>,
    masks: Vec<&'static str>,
    /// Only when the automaton did not build (it fails only past its size limits): the values,
    /// longest first, replaced one by one, so that a secret is never left unmasked.
    values: Vec<String>,
}

static REGISTRY: LazyLock<SecretRegistry> = LazyLock::new(SecretRegistry::default);

/// The process-wide registry.
pub fn secrets() -> &'static SecretRegistry {
    &REGISTRY
}

impl SecretRegistry {
    /// Adds a task's secret values (kept until [`forget_later`](Self::forget_later)).
    pub fn register(&self, task_id: i64, values: impl IntoIterator<Item = String>) {
        let Ok(mut tasks) = self.tasks.write() else {
            return;
        };
        let entry = tasks.entry(task_id).or_default();
        entry.0 += 1;
        let mut added = false;
        for v in values {
            let v = v.trim().to_string();
            if v.len() >= MIN_SECRET_LEN && !entry.1.contains(&v) {
                entry.1.push(v);
                added = true;
            }
        }
        if added {
            self.version
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    }

    /// Drops a task's values after [`FORGET_DELAY`], unless it registers new ones meanwhile.
    pub fn forget_later(&'static self, task_id: i64) {
        let gen = self.generation(task_id);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            tokio::time::sleep(FORGET_DELAY).await;
            if let Ok(mut tasks) = self.tasks.write() {
                if tasks.get(&task_id).map(|e| e.0) == gen
                    && tasks.remove(&task_id).is_some_and(|e| !e.1.is_empty())
                {
                    self.version
                        .fetch_add(1, std::sync::atomic::Ordering::Release);
                }
            }
        });
    }

    fn generation(&self, task_id: i64) -> Option<u64> {
        self.tasks.read().ok()?.get(&task_id).map(|e| e.0)
    }

    /// `s` with every known value (as is and percent-encoded) replaced by [`MASK`].
    pub fn mask_known(&self, s: &str) -> String {
        let compiled = self.compiled();
        match &compiled.automaton {
            Some(ac) if ac.is_match(s) => ac.replace_all(s, &compiled.masks),
            Some(_) => s.to_string(),
            None => compiled
                .values
                .iter()
                .fold(s.to_string(), |out, v| out.replace(v.as_str(), MASK)),
        }
    }

    /// The automaton for the current values, rebuilt when they changed.
    fn compiled(&self) -> std::sync::Arc<Compiled> {
        let version = self.version.load(std::sync::atomic::Ordering::Acquire);
        if let Ok(c) = self.compiled.read() {
            if let Some((v, c)) = c.as_ref() {
                if *v == version {
                    return c.clone();
                }
            }
        }
        let mut values: Vec<String> = EXECUTOR_SECRETS
            .iter()
            .filter(|v| v.trim().len() >= MIN_SECRET_LEN)
            .cloned()
            .collect();
        if let Ok(tasks) = self.tasks.read() {
            values.extend(tasks.values().flat_map(|e| e.1.iter().cloned()));
        }
        let encoded: Vec<String> = values
            .iter()
            .map(|v| crate::workspace::percent_encode(v))
            .collect();
        values.extend(encoded);
        values.sort_unstable();
        values.dedup();
        let automaton = (!values.is_empty())
            .then(|| {
                aho_corasick::AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                    .build(&values)
                    .ok()
            })
            .flatten();
        let masks = vec![MASK; values.len()];
        if automaton.is_some() {
            values.clear(); // kept only for the fallback
        }
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let compiled = std::sync::Arc::new(Compiled {
            automaton,
            masks,
            values,
        });
        if let Ok(mut slot) = self.compiled.write() {
            *slot = Some((version, compiled.clone()));
        }
        compiled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_pattern_compiles_and_is_in_the_quick_check() {
        assert_eq!(PATTERNS.len(), PATTERN_SOURCES.len());
        assert!(KEY_VALUE.is_some());
        let set = ANY_PATTERN.as_ref().expect("the set compiles");
        assert_eq!(set.len(), PATTERN_SOURCES.len() + 1);
        // Each pattern's own example is seen by the quick check.
        for s in [
            "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----",
            "x sk-ant-abcdefgh12",
            "key sk-abcdefgh12",
            "ghp_abcdefghij12",
            "xoxb-abcdefghij12",
            "AKIAABCDEFGHIJKLMNOP",
            "eyJabcde.fghijkl.mnopqrs",
            "Authorization: Bearer abcdefgh123",
            "https://user:pw@host/x",
            "password=hunter22",
        ] {
            assert!(set.is_match(s), "{s}");
            assert_ne!(mask_str(s), s, "{s}");
        }
    }

    #[test]
    fn known_values_are_masked_whole_encoded_and_as_soon_as_registered() {
        let reg = SecretRegistry::default();
        reg.register(-7, ["tok-inner-1234".to_string()]);
        assert_eq!(reg.mask_known("a tok-inner-1234 b"), "a *** b");
        // A value registered after the automaton was built is masked too; one containing an
        // earlier value is masked whole, and its percent-encoding as well.
        reg.register(-8, ["x/tok-inner-1234/y".to_string()]);
        assert_eq!(reg.mask_known("[x/tok-inner-1234/y]"), "[***]");
        assert_eq!(reg.mask_known("u=x%2Ftok-inner-1234%2Fy"), "u=***");
        assert_eq!(reg.mask_known("nothing here"), "nothing here");
    }

    #[test]
    fn a_mask_that_opens_a_new_match_is_masked_in_the_same_call() {
        // Found by the idempotency property: the AWS key's mask puts `sk-ant-` at a boundary.
        let once = mask_str("AKIAABCDEFGHIJKLMNOPsk-ant-sk-ant-");
        assert_eq!(mask_str(&once), once);
        assert!(!once.contains("AKIA"), "{once}");
    }

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

    #[test]
    fn known_values_are_masked_whatever_they_look_like() {
        let reg = SecretRegistry::default();
        reg.register(1, ["plain-value-42".to_string(), "abc".to_string()]);
        assert_eq!(
            reg.mask_known("got plain-value-42 and plain%2Dvalue abc"),
            "got *** and plain%2Dvalue abc"
        );
        assert_eq!(
            mask_str("https://h/r.git?private_token=glsecret99"),
            "https://h/r.git?private_token=***"
        );
    }
}
