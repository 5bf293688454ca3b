//! Thin handlers: read the body, translate, run the chat, render chunks or a completion.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::{Stream, StreamExt};

use super::OpenAiError;
use super::translate::{ChunkWriter, CompletionBuilder, parse, to_chat};
use crate::chat::{self, ChatFailure, ChatItem};
use crate::server::{AppState, SessionTarget, owner_of, read_body, session_headers};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/openai/v1/chat/completions", post(completions))
}

async fn completions(
    State(state): State<AppState>,
    session: SessionTarget,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match serve(state, session, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn serve(
    state: AppState,
    session: SessionTarget,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OpenAiError> {
    let body = read_body(body, state.api.max_body_bytes)
        .await
        .map_err(|e| OpenAiError {
            code: Some("request_too_large"),
            ..OpenAiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!(
                    "the request body exceeds ccpool's limit of {} bytes",
                    e.limit
                ),
            )
        })?;
    let mut request = parse(&body)?;
    if let Some(fetcher) = &state.api.image_fetcher {
        inline_remote_images(&mut request, fetcher).await?;
    }
    let model = request.model.clone();
    let translated = to_chat(request, owner_of(headers), &state.api.openai)?;
    let (mut stream, forked) = match &session.id {
        Some(id) => {
            let started = state
                .sessions
                .start_chat(id, translated.chat, session.options.clone())
                .await
                .map_err(|e| OpenAiError::from_session(&e))?;
            (started.stream, Some(started.forked))
        }
        None => {
            let stream = chat::start(&state.pool, translated.chat)
                .await
                .map_err(|e| OpenAiError::from_pool(&e))?;
            (stream, None)
        }
    };
    let tag = |response: Response| session_headers(response, session.id.as_deref().zip(forked));

    // An error before anything streamed gets its own HTTP status.
    let first = stream.next().await;
    if let Some(ChatItem::End(end)) = &first {
        if let Some(failure) = &end.failure {
            return Err(OpenAiError::from_failure(failure));
        }
    }
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let items = state.metrics.observe(
        "/v1/chat/completions",
        futures::stream::iter(first).chain(stream),
    );
    if translated.stream {
        let writer = ChunkWriter::new(id, created, model, translated.include_usage);
        Ok(tag(
            sse(items, writer, state.api.ping_interval).into_response()
        ))
    } else {
        let mut completion = CompletionBuilder::default();
        let mut items = Box::pin(items);
        while let Some(item) = items.next().await {
            match item {
                ChatItem::End(end) => {
                    if let Some(failure) = &end.failure {
                        return Err(OpenAiError::from_failure(failure));
                    }
                    return Ok(tag(
                        Json(completion.finish(&end, &id, created, &model)).into_response()
                    ));
                }
                event => completion.push(&event),
            }
        }
        Err(OpenAiError::from_failure(&ChatFailure::Worker(
            "the chat ended without an outcome".into(),
        )))
    }
}

/// Replaces `http(s)` image URLs by the images themselves, as `data:` URLs.
async fn inline_remote_images(
    request: &mut super::wire::ChatCompletionRequest,
    fetcher: &crate::images::ImageFetcher,
) -> Result<(), OpenAiError> {
    for (i, message) in request.messages.iter_mut().enumerate() {
        let Some(parts) = message.content.as_array_mut() else {
            continue;
        };
        for (j, part) in parts.iter_mut().enumerate() {
            let Some(url) = part.pointer_mut("/image_url/url") else {
                continue;
            };
            let Some(remote) = url
                .as_str()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            else {
                continue;
            };
            let param = format!("messages[{i}].content[{j}].image_url.url");
            let (media_type, data) = fetcher
                .fetch(remote)
                .await
                .map_err(|e| OpenAiError::invalid(param.clone(), format!("{param}: {e}")))?;
            *url = serde_json::Value::String(format!("data:{media_type};base64,{data}"));
        }
    }
    Ok(())
}

/// `data:` chunks, a `data: {"error": …}` when the request fails after streaming began, and
/// `data: [DONE]` at the end of a successful stream. Comments keep an idle stream alive.
fn sse(
    items: impl Stream<Item = ChatItem> + Send + 'static,
    mut writer: ChunkWriter,
    ping_interval: std::time::Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = items.flat_map(move |item| {
        let mut events: Vec<Event> = writer
            .write(&item)
            .into_iter()
            .map(|chunk| Event::default().data(chunk.to_string()))
            .collect();
        if let ChatItem::End(end) = &item {
            match &end.failure {
                Some(failure) => events.push(
                    Event::default().data(OpenAiError::from_failure(failure).body().to_string()),
                ),
                None => events.push(Event::default().data("[DONE]")),
            }
        }
        futures::stream::iter(events.into_iter().map(Ok))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(ping_interval))
}
