//! Every error the HTTP API answers, mapped to exactly one status in one place. Bodies are
//! FastAPI-shaped (`{"detail": "..."}`) so existing clients keep parsing them.

use std::convert::Infallible;

use serde::Serialize;
use thiserror::Error;
use warp::http::StatusCode;
use warp::reject::Reject;
use warp::Rejection;

/// Seconds a client is told to wait when the session cap is reached.
const RETRY_AFTER_SECS: &str = "5";

/// An API error; each variant has one status.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("Invalid JSON body: {0}")]
    InvalidJson(String),
    /// The body or query is JSON/text of the wrong shape.
    #[error("{0}")]
    Unprocessable(String),
    /// The body is over the limit.
    #[error("Request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(u64),
    /// `POST /api/tasks/cancel` for a task with no session (contract: 400).
    #[error("{0}")]
    NoSessionToCancel(String),
    /// A task id with no session.
    #[error("{0}")]
    NotFound(String),
    /// The runtime is stopping or unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// The body did not arrive in time.
    #[error("The request body was not received within {0} s")]
    BodyTimeout(u64),
    /// `EXECUTOR_AUTH_TOKEN` is set and the request lacks it.
    #[error("Missing or wrong bearer token")]
    Unauthorized,
    /// The session cap is reached (429 with `Retry-After`).
    #[error("The executor runs its maximum of {0} sessions; retry later or close sessions")]
    AtCapacity(usize),
}

impl Reject for ApiError {}

impl ApiError {
    /// The one status of each variant.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoSessionToCancel(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::AtCapacity(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

impl From<actors::error::SupervisorError> for ApiError {
    fn from(e: actors::error::SupervisorError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub detail: String,
}

fn reply(status: StatusCode, detail: String) -> warp::reply::Response {
    let body = warp::reply::json(&ErrorBody { detail });
    warp::reply::with_status(body, status).into_response()
}

use warp::Reply;

/// Turns any rejection (ours or warp's) into a JSON error with the right status.
pub async fn recover(rej: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(e) = rej.find::<ApiError>() {
        let mut resp = reply(e.status(), e.to_string());
        if let ApiError::AtCapacity(_) = e {
            resp.headers_mut().insert(
                warp::http::header::RETRY_AFTER,
                warp::http::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if let ApiError::Unauthorized = e {
            resp.headers_mut().insert(
                warp::http::header::WWW_AUTHENTICATE,
                warp::http::HeaderValue::from_static("Bearer"),
            );
        }
        return Ok(resp);
    }
    let (status, detail) = if rej.is_not_found() {
        (StatusCode::NOT_FOUND, "Not Found".to_string())
    } else if rej.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed".to_string(),
        )
    } else if let Some(e) = rej.find::<warp::reject::InvalidQuery>() {
        (StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    } else if rej.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large".to_string(),
        )
    } else {
        tracing::error!("unhandled rejection: {rej:?}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error".to_string(),
        )
    };
    Ok(reply(status, detail))
}
