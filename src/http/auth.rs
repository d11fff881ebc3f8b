//! Optional bearer-token protection (`EXECUTOR_AUTH_TOKEN`): when set, every route except the
//! probes (`/`, `/health`, `/ready`) needs `Authorization: Bearer <token>` (the scheme in any
//! case, as RFC 7235 §2.1 has it).

use std::sync::Arc;

use actors::config::Secret;
use warp::{Filter, Rejection};

use super::error::ApiError;

/// Passes when no token is configured or the request carries it; rejects with 401 otherwise.
pub fn require(token: Option<Arc<Secret>>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let token = token.clone();
            async move {
                let Some(token) = token else { return Ok(()) };
                let given = header.as_deref().and_then(bearer).unwrap_or("");
                if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
                    Ok(())
                } else {
                    Err(warp::reject::custom(ApiError::Unauthorized))
                }
            }
        })
        .untuple_one()
}

/// The credentials of a `Bearer` authorization value; the scheme is case-insensitive.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer, constant_time_eq};

    #[test]
    fn the_scheme_is_case_insensitive() {
        assert_eq!(bearer("bearer t"), Some("t"));
        assert_eq!(bearer("BEARER  t "), Some("t"));
        assert_eq!(bearer("Basic t"), None);
        assert_eq!(bearer("Bearert"), None);
    }

    #[test]
    fn compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
