//! Thin handlers: read the body, translate, run the chat, render it as SSE or a message.

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::{Stream, StreamExt};
use serde_json::json;

use super::AnthropicError;
use super::translate::{MessageBuilder, estimate_tokens, parse, sse_event, to_chat};
use super::wire::{CountTokensRequest, MessagesRequest};
use crate::chat::{self, ChatItem};
use crate::server::{AppState, SessionTarget, owner_of, session_headers};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

/// Reads the body within the configured limit.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, AnthropicError> {
    crate::server::read_body(body, limit).await.map_err(|e| {
        AnthropicError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!(
                "the request body exceeds ccpool's limit of {} bytes",
                e.limit
            ),
        )
    })
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

async fn messages(
    State(state): State<AppState>,
    session: SessionTarget,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = format!("req_{}", uuid::Uuid::new_v4().simple());
    let response = match serve(state, session, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    with_request_id(response, &request_id)
}

async fn serve(
    state: AppState,
    session: SessionTarget,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, AnthropicError> {
    let body = read_body(body, state.api.max_body_bytes).await?;
    let mut request: MessagesRequest = parse(&body)?;
    if let Some(fetcher) = &state.api.image_fetcher {
        inline_remote_images(&mut request, fetcher).await?;
    }
    let model = request.model.clone();
    let streaming = request.stream.unwrap_or(false);
    let chat = to_chat(request, owner_of(headers))?;
    let (mut stream, forked) = match &session.id {
        Some(id) => {
            let started = state
                .sessions
                .start_chat(id, chat, session.options.clone())
                .await
                .map_err(|e| AnthropicError::from_session(&e))?;
            (started.stream, Some(started.forked))
        }
        None => {
            let stream = chat::start(&state.pool, chat)
                .await
                .map_err(|e| AnthropicError::from_pool(&e))?;
            (stream, None)
        }
    };
    let tag = |response: Response| session_headers(response, session.id.as_deref().zip(forked));

    // Hold the status line until the first item: an error before anything streamed gets its
    // own HTTP status, like the real API's.
    let first = stream.next().await;
    if let Some(ChatItem::End(end)) = &first {
        if let Some(failure) = &end.failure {
            return Err(AnthropicError::from_failure(failure));
        }
    }
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let items = state
        .metrics
        .observe("/v1/messages", futures::stream::iter(first).chain(stream));
    if streaming {
        Ok(tag(
            sse(items, id, model, state.api.ping_interval).into_response()
        ))
    } else {
        collect(Box::pin(items), &id, &model)
            .await
            .map(|m| tag(Json(m).into_response()))
    }
}

/// Replaces `url` image sources by the images themselves, as base64 sources.
async fn inline_remote_images(
    request: &mut MessagesRequest,
    fetcher: &crate::images::ImageFetcher,
) -> Result<(), AnthropicError> {
    for (i, message) in request.messages.iter_mut().enumerate() {
        let Some(blocks) = message.content.as_array_mut() else {
            continue;
        };
        for (j, block) in blocks.iter_mut().enumerate() {
            let Some(source) = block.get_mut("source") else {
                continue;
            };
            if source.get("type").and_then(|t| t.as_str()) != Some("url") {
                continue;
            }
            let Some(url) = source
                .get("url")
                .and_then(|u| u.as_str())
                .map(str::to_string)
            else {
                continue;
            };
            let (media_type, data) = fetcher.fetch(&url).await.map_err(|e| {
                AnthropicError::invalid(format!("messages.{i}.content.{j}.source.url: {e}"))
            })?;
            *source = json!({"type": "base64", "media_type": media_type, "data": data});
        }
    }
    Ok(())
}

async fn collect(
    mut items: impl Stream<Item = ChatItem> + Unpin,
    id: &str,
    model: &str,
) -> Result<serde_json::Value, AnthropicError> {
    let mut message = MessageBuilder::default();
    while let Some(item) = items.next().await {
        match item {
            ChatItem::End(end) => {
                if let Some(failure) = &end.failure {
                    return Err(AnthropicError::from_failure(failure));
                }
                return Ok(message.finish(&end, id, model));
            }
            event => message.push(&event),
        }
    }
    Err(AnthropicError::from_failure(&chat::ChatFailure::Worker(
        "the chat ended without an outcome".into(),
    )))
}

/// The SSE response: one event per chat event, a `ping` after `message_start` and while
/// waiting, and an `error` event when the request fails after streaming began.
fn sse(
    items: impl Stream<Item = ChatItem> + Send + 'static,
    id: String,
    model: String,
    ping_interval: std::time::Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = items.flat_map(move |item| {
        let events: Vec<Event> = match item {
            ChatItem::Event(event) => match sse_event(&event, &id, &model) {
                Some((name, data)) => {
                    let mut out = vec![Event::default().event(name).data(data.to_string())];
                    if name == "message_start" {
                        out.push(ping());
                    }
                    out
                }
                None => Vec::new(),
            },
            ChatItem::End(end) => match &end.failure {
                Some(failure) => {
                    let error = AnthropicError::from_failure(failure);
                    vec![
                        Event::default()
                            .event("error")
                            .data(error.body().to_string()),
                    ]
                }
                None => Vec::new(),
            },
        };
        futures::stream::iter(events.into_iter().map(Ok))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(ping_interval).event(ping()))
}

fn ping() -> Event {
    Event::default().event("ping").data(r#"{"type": "ping"}"#)
}

async fn count_tokens(State(state): State<AppState>, body: Body) -> Response {
    let counted = async {
        let body = read_body(body, state.api.max_body_bytes).await?;
        let request: CountTokensRequest = parse(&body)?;
        if request.messages.is_empty() {
            return Err(AnthropicError::invalid(
                "messages: at least one message is required",
            ));
        }
        Ok(json!({"input_tokens": estimate_tokens(request.system.as_ref(), &request.messages)}))
    };
    match counted.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
