//! The session API over HTTP: create, list, describe and end sessions, and read or write
//! files of a session's workspace. Errors come in the Anthropic shape when the request
//! carries `anthropic-version`, else in the OpenAI shape.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::anthropic::AnthropicError;
use crate::openai::OpenAiError;
use crate::server::{AppState, read_body};
use crate::sessions::{SessionError, SessionOptions, SessionSummary};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", get(list).post(create))
        .route("/v1/sessions/{id}", get(describe).delete(end))
        .route(
            "/v1/sessions/{id}/files/{*path}",
            get(read_file).put(write_file),
        )
}

fn error(headers: &HeaderMap, e: &SessionError) -> Response {
    if headers.contains_key("anthropic-version") {
        AnthropicError::from_session(e).into_response()
    } else {
        OpenAiError::from_session(e).into_response()
    }
}

fn summary_json(s: &SessionSummary, running: Option<bool>) -> Value {
    let state = match (&s.container, running) {
        (None, _) => "none",
        (Some(_), Some(false)) => "stopped",
        (Some(_), _) => "running",
    };
    json!({
        "id": s.id, "created": s.created, "last_used": s.last_used, "model": s.model,
        "turns": s.turns, "forks": s.forks, "tools": s.tools, "volume": s.volume,
        "container": {"id": s.container, "state": state},
    })
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let mut data = Vec::new();
    for s in state.sessions.list() {
        let running = state.sessions.container_running(&s.id).await;
        data.push(summary_json(&s, Some(running)));
    }
    Json(json!({"object": "list", "data": data}))
}

async fn describe(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match state.sessions.describe(&id) {
        Ok(s) => {
            let running = state.sessions.container_running(&id).await;
            Json(summary_json(&s, Some(running))).into_response()
        }
        Err(e) => error(&headers, &e),
    }
}

async fn end(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match state.sessions.end(&id).await {
        Ok(()) => Json(json!({"id": id, "deleted": true})).into_response(),
        Err(e) => error(&headers, &e),
    }
}

/// `POST /v1/sessions`: all fields optional; the id is generated when absent.
#[derive(Debug, Default, Deserialize)]
struct CreateSession {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    tools: bool,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

async fn create(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(body, 64 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                &headers,
                &SessionError::InvalidId("the request body is too large".into()),
            );
        }
    };
    let request: CreateSession = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSession::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                let e = OpenAiError::invalid("", format!("invalid session options: {e}"));
                return if headers.contains_key("anthropic-version") {
                    AnthropicError::invalid(e.message).into_response()
                } else {
                    e.into_response()
                };
            }
        }
    };
    let id = request
        .id
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let options = SessionOptions {
        tools: request.tools,
        system_prompt: request.system,
        model: request.model,
    };
    match state.sessions.create(&id, options).await {
        Ok(s) => (StatusCode::CREATED, Json(summary_json(&s, Some(true)))).into_response(),
        Err(e) => error(&headers, &e),
    }
}

async fn read_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
) -> Response {
    match state.sessions.read_file(&id, &path).await {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(e) => error(&headers, &e),
    }
}

async fn write_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
    body: Body,
) -> Response {
    let content = match read_body(body, state.api.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return OpenAiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("the file exceeds {} bytes", e.limit),
            )
            .into_response();
        }
    };
    match state.sessions.write_file(&id, &path, &content).await {
        Ok(()) => Json(json!({"path": path, "bytes": content.len()})).into_response(),
        Err(e) => error(&headers, &e),
    }
}
