//! The request body reader: streams the body (chunked or not) with a byte cap, then parses JSON.
//! warp's own JSON filter answers 411 to chunked bodies and cannot tell syntax errors (400) from
//! shape errors (422); this one does both deliberately.

use bytes::Buf;
use futures::{Stream, StreamExt};
use serde_json::Value;
use warp::Filter;

use super::error::ApiError;

/// What a request body may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body (413 over it).
    pub max_bytes: u64,
    /// Longest a client may take to send it (408 after it; slow-body protection).
    pub timeout: std::time::Duration,
}

/// A filter yielding the body parsed as JSON (any JSON value; shape checks come later).
pub fn json_body(
    limits: BodyLimits,
) -> impl Filter<Extract = (Value,), Error = warp::Rejection> + Clone {
    let BodyLimits {
        max_bytes: limit,
        timeout,
    } = limits;
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |len: Option<u64>, body| async move {
            if len.is_some_and(|n| n > limit) {
                return Err(warp::reject::custom(ApiError::PayloadTooLarge(limit)));
            }
            let bytes = tokio::time::timeout(timeout, read_capped(body, limit))
                .await
                .map_err(|_| warp::reject::custom(ApiError::BodyTimeout(timeout.as_secs())))?
                .map_err(warp::reject::custom)?;
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| warp::reject::custom(ApiError::InvalidJson(e.to_string())))
        })
}

async fn read_capped<S, B>(mut body: S, limit: u64) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::InvalidJson(format!("could not read the body: {e}")))?;
        if out.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

/// Reads the required integer `task_id` query parameter (422 when absent or not an integer).
pub fn task_id_query() -> impl Filter<Extract = (i64,), Error = warp::Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|q: String| async move { parse_task_id(&q).map_err(warp::reject::custom) })
}

/// Decodes `%XX` escapes (and `+` as space); `None` for a malformed escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn parse_task_id(query: &str) -> Result<i64, ApiError> {
    int_param(query, "task_id")?
        .ok_or_else(|| ApiError::Unprocessable("query parameter `task_id` is required".into()))
}

/// An optional integer query parameter (422 when present but not an integer).
fn int_param(query: &str, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(value) = query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    percent_decode(value)
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::Unprocessable(format!("query parameter `{name}` must be an integer"))
        })
}

/// Reads `task_id` (required) and `subtask_id` (optional; Wegent's current executor_manager
/// sends it) of `POST /api/tasks/cancel`.
pub fn cancel_query(
) -> impl Filter<Extract = ((i64, Option<i64>),), Error = warp::Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|q: String| async move {
            let ids = parse_task_id(&q).and_then(|t| Ok((t, int_param(&q, "subtask_id")?)));
            ids.map_err(warp::reject::custom)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_query_parsing() {
        assert_eq!(parse_task_id("task_id=12").unwrap(), 12);
        assert_eq!(parse_task_id("x=1&task_id=-3").unwrap(), -3);
        assert_eq!(parse_task_id("task_id=%31%32").unwrap(), 12);
        assert!(matches!(
            parse_task_id("task_id=%3"),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(parse_task_id(""), Err(ApiError::Unprocessable(_))));
        assert!(matches!(
            parse_task_id("task_id=abc"),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            parse_task_id("task_id"),
            Err(ApiError::Unprocessable(_))
        ));
    }
}
