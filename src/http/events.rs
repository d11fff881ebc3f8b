//! `GET /api/tasks/{task_id}/events`: Server-Sent Events with the same events the callback
//! receiver gets (event name `callback`, data = the payload, id = its number within the task).
//! A late subscriber first gets the current subtask's events after its `Last-Event-ID`. A slow
//! subscriber misses events rather than slowing the agent (`curl -N` follows a task).
//! A `Last-Event-ID` that is not one of ours (not a number) is ignored, as if absent: the
//! stream then starts at the subtask's first event. Ids are opaque to the client (the SSE
//! standard has it echo the last `id:` it saw), so a 400 would only turn a resumable stream
//! into a dead one (an `EventSource` does not retry after an error status).

use std::convert::Infallible;

use actors::events::Event;
use actors::runtime::Runtime;
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use warp::{Filter, Rejection, Reply};

/// `GET /api/tasks/{task_id}/events` in the OpenAPI document (documentation only: the route is
/// [`route`]).
#[utoipa::path(get, path = "/api/tasks/{task_id}/events",
    params(("task_id" = i64, Path, description = "Task to follow"),
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "Server-Sent Events: event `callback`, data = the callback payload, id = its number within the task", content_type = "text/event-stream")))]
#[allow(dead_code)] // only its generated `__path_…` type is used, by the OpenAPI derive
pub fn events_doc() {}

/// The route.
pub fn route(
    rt: Runtime,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "tasks" / i64 / "events")
        .and(warp::get())
        .and(warp::header::optional::<String>("last-event-id"))
        .map(move |task_id: i64, last: Option<String>| {
            let last = last.and_then(|v| v.trim().parse::<u64>().ok());
            let (past, rx) = rt.events().subscribe(task_id, last.unwrap_or(0));
            let live = futures::stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(ev) => return Some((ev, rx)),
                        Err(RecvError::Lagged(n)) => {
                            tracing::debug!("an event subscriber missed {n} events")
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            });
            let stream = futures::stream::iter(past).chain(live).map(sse_event);
            warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response()
        })
}

fn sse_event((id, json): Event) -> Result<warp::sse::Event, Infallible> {
    Ok(warp::sse::Event::default()
        .id(id.to_string())
        .event("callback")
        .data(json.as_str()))
}
