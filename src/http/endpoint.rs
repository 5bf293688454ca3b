//! The one chat request flow, generic over the `Dialect`: limited body, parse, translate,
//! remote images, owner, session or pool, the status line held until the first item, metrics,
//! and the answer as SSE or one object. A dialect only translates.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use super::extract::{LimitedBody, Owner, SessionTarget};
use super::state::AppState;
use crate::anthropic::AnthropicError;
use crate::chat::{self, ChatFailure, ChatItem, SessionStarted};
use crate::dialect::{Context, Dialect, Reply, SseEvent, Translated};
use crate::domain::{ContentBlock, TurnRequest};
use crate::failure::Failure;
use crate::images::ImageFetcher;

/// `POST` a chat request in dialect `D`.
pub async fn chat<D: Dialect>(
    State(state): State<AppState>,
    arrival: Option<axum::Extension<super::middleware::Arrival>>,
    SessionTarget(target): SessionTarget,
    Owner(owner): Owner,
    LimitedBody(body): LimitedBody,
) -> Result<Response, D::Error> {
    if state.credentials_missing() {
        return Err(Failure::no_credentials().into());
    }
    let request = parse::<D>(body).await?;
    let context = Context {
        owner,
        options: &state.api.openai,
        fetch_remote_images: state.api.image_fetcher.is_some(),
        responses: &state.responses,
    };
    let Translated {
        mut chat,
        stream: streaming,
        reply,
    } = D::to_chat(request, &context)?;
    if let Some(fetcher) = &state.api.image_fetcher {
        fetch_remote_images::<D>(&mut chat.turn, fetcher).await?;
    }
    let started = chat::start(&state.pool, &state.sessions, target, chat)
        .await
        .map_err(|e| Failure::from_start(&e))?;
    let mut stream = started.stream;

    // Hold the status line until the first item: an error before anything streamed gets its
    // own HTTP status, like the real APIs'.
    let first = stream.next().await;
    if let Some(ChatItem::End(end)) = &first {
        if let Some(failure) = &end.failure {
            return Err(Failure::from_chat(failure).into());
        }
    }
    let arrived = arrival.map_or_else(std::time::Instant::now, |a| a.0.0);
    let items = state.metrics.observe(
        D::ROUTE,
        arrived,
        futures::stream::iter(first).chain(stream),
    );
    let response = if streaming {
        sse(items, reply, state.api.ping_interval)
    } else {
        collect::<D>(Box::pin(items), reply).await?
    };
    Ok(session_headers(response, started.session))
}

/// A body larger than this is parsed on a blocking thread, not on the runtime's.
const LARGE_BODY_BYTES: usize = 256 * 1024;

/// Large bodies parsed at once, across all requests: each can cost over ten times its size
/// while it is parsed (a body of many tiny blocks), so a burst waits here rather than
/// multiplying the peak.
static LARGE_PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The most JSON objects and arrays a body may hold. Each costs hundreds of bytes once parsed,
/// so this bounds what a body costs, whatever its shape; a request within the other limits
/// (`chat::MAX_CONTENT_BLOCKS` blocks) stays far below it.
const MAX_JSON_CONTAINERS: usize = 5 * chat::MAX_CONTENT_BLOCKS;

/// How many JSON objects and arrays `body` opens (a byte scan: strings are skipped, nothing
/// is allocated).
fn json_containers(body: &[u8]) -> usize {
    let (mut count, mut in_string, mut escaped) = (0, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => count += 1,
                _ => {}
            }
        }
    }
    count
}

/// Parses a request body whole (it is bounded by the body limit) with `parse`. A large one is
/// parsed on a blocking thread, at most `LARGE_PARSES` at a time, so it never stalls the
/// runtime's threads (other requests' streams, the accept loop), and only when its count of
/// objects and arrays is within `MAX_JSON_CONTAINERS` (else `too_many` says why).
async fn parse_whole<T, E>(
    body: bytes::Bytes,
    parse: fn(&[u8]) -> Result<T, E>,
    too_many: fn(String) -> E,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<Failure> + Send + 'static,
{
    if body.len() <= LARGE_BODY_BYTES {
        return parse(&body);
    }
    let check = move || {
        let containers = json_containers(&body);
        if containers > MAX_JSON_CONTAINERS {
            return Err(too_many(format!(
                "the request body holds {containers} JSON objects and arrays; at most \
                 {MAX_JSON_CONTAINERS} are accepted"
            )));
        }
        parse(&body)
    };
    let failed = |what: &str| {
        Failure::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            crate::failure::FailureKind::Server,
            what,
        )
    };
    let _permit = LARGE_PARSES
        .acquire()
        .await
        .map_err(|_| failed("the parser is closed"))?;
    tokio::task::spawn_blocking(check)
        .await
        .map_err(|_| failed("parsing the request body failed"))?
}

/// A chat request body in dialect `D` (see `parse_whole`).
async fn parse<D: Dialect>(body: bytes::Bytes) -> Result<D::Request, D::Error> {
    parse_whole(body, D::parse, |message| D::invalid("", message)).await
}

/// `POST /v1/messages/count_tokens`: an estimate, answered at once.
pub async fn count_tokens(
    LimitedBody(body): LimitedBody,
) -> Result<Json<crate::anthropic::wire::TokenCount>, AnthropicError> {
    parse_whole(
        body,
        crate::anthropic::count_tokens,
        AnthropicError::invalid,
    )
    .await
    .map(Json)
}

/// Fetches every image the request names by URL (history included) and inlines it.
async fn fetch_remote_images<D: Dialect>(
    turn: &mut TurnRequest,
    fetcher: &ImageFetcher,
) -> Result<(), D::Error> {
    let blocks = turn
        .history
        .iter_mut()
        .flat_map(|m| m.content.iter_mut())
        .chain(turn.content.iter_mut());
    for block in blocks {
        fetch_into::<D>(block, fetcher).await?;
    }
    Ok(())
}

async fn fetch_into<D: Dialect>(
    block: &mut ContentBlock,
    fetcher: &ImageFetcher,
) -> Result<(), D::Error> {
    match block {
        ContentBlock::RemoteImage { url, field } => {
            let (media_type, data) = fetcher
                .fetch(url)
                .await
                .map_err(|e| D::invalid(field, format!("{field}: {e}")))?;
            *block = ContentBlock::Image { media_type, data };
        }
        ContentBlock::ToolResult { content, .. } => {
            for inner in content {
                Box::pin(fetch_into::<D>(inner, fetcher)).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The whole answer as one object, or the failure it ended with.
async fn collect<D: Dialect>(
    mut items: impl Stream<Item = ChatItem> + Unpin,
    mut reply: D::Reply,
) -> Result<Response, D::Error> {
    while let Some(item) = items.next().await {
        match item {
            ChatItem::End(end) => {
                if let Some(failure) = &end.failure {
                    return Err(Failure::from_chat(failure).into());
                }
                return Ok(Json(reply.finish(&end)).into_response());
            }
            item => reply.push(&item),
        }
    }
    Err(Failure::from_chat(&ChatFailure::Worker(
        "the chat ended without an outcome".into(),
    ))
    .into())
}

/// The answer as SSE: the dialect's events for each item, and its keep-alive while idle.
fn sse<R: Reply>(
    items: impl Stream<Item = ChatItem> + Send + 'static,
    mut reply: R,
    ping_interval: std::time::Duration,
) -> Response {
    let events = items.flat_map(move |item| {
        let events = reply.events(&item);
        futures::stream::iter(events.into_iter().map(|e| Ok::<_, Infallible>(event(e))))
    });
    let mut keep_alive = KeepAlive::new().interval(ping_interval);
    if let Some(e) = R::keep_alive() {
        keep_alive = keep_alive.event(event(e));
    }
    Sse::new(events).keep_alive(keep_alive).into_response()
}

fn event(e: SseEvent) -> Event {
    let event = Event::default().data(e.data);
    match e.name {
        Some(name) => event.event(name),
        None => event,
    }
}

/// The session headers: which session, and whether it forked.
fn session_headers(mut response: Response, session: Option<SessionStarted>) -> Response {
    if let Some(session) = session {
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&session.id) {
            headers.insert("x-ccpool-session", v);
        }
        headers.insert(
            "x-ccpool-session-forked",
            HeaderValue::from_static(if session.forked { "true" } else { "false" }),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::{MAX_JSON_CONTAINERS, json_containers};
    use axum::http::StatusCode;

    #[tokio::test]
    async fn a_body_of_too_many_objects_is_refused_before_it_is_parsed() {
        let h = crate::fake::harness().await;
        let blocks = vec![r#"{"a":1}"#; MAX_JSON_CONTAINERS + 10].join(",");
        let body = format!(
            r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":[{blocks}]}}]}}"#
        );
        assert!(body.len() > super::LARGE_BODY_BYTES);
        for path in [
            "/v1/messages",
            "/v1/messages/count_tokens",
            "/v1/chat/completions",
        ] {
            let (status, _, text) = h.post(path, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {text}");
            assert!(
                text.contains("JSON objects and arrays; at most 50000"),
                "{path}: {text}"
            );
        }
        // Under the bound, a large body is parsed (on a blocking thread) as usual.
        let text = "x".repeat(300 * 1024);
        let body = serde_json::json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": text}]});
        let (status, _, _) = h.post("/v1/messages/count_tokens", body.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        h.stop().await;
    }

    #[test]
    fn containers_are_counted_outside_strings_only() {
        assert_eq!(
            json_containers(br#"{"a": [1, {"b": "[{"}], "c": "\"{"}"#),
            3
        );
        assert_eq!(json_containers(br#"[]"#), 1);
        assert_eq!(json_containers(br#""\\" {}"#), 1);
    }
}
