//! The session API over HTTP: create, list, describe and end sessions, and read or write
//! files of a session's workspace. Errors come in the caller's dialect (`CallerDialect`).

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiError, CallerDialect, Owner, read_body};
use super::state::AppState;
use crate::failure::{Failure, FailureKind};
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

impl CallerDialect {
    fn session(self, e: SessionError) -> ApiError {
        self.error(Failure::from_session(&e))
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

/// The caller's own sessions only: a session belongs to the key that created it.
async fn list(State(state): State<AppState>, Owner(owner): Owner) -> Json<Value> {
    let mut data = Vec::new();
    for s in state.sessions.list(&owner) {
        let running = state.sessions.container_running(&owner, &s.id).await;
        data.push(summary_json(&s, Some(running)));
    }
    Json(json!({"object": "list", "data": data}))
}

async fn describe(
    State(state): State<AppState>,
    dialect: CallerDialect,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = state
        .sessions
        .describe(&owner, &id)
        .map_err(|e| dialect.session(e))?;
    let running = state.sessions.container_running(&owner, &id).await;
    Ok(Json(summary_json(&s, Some(running))))
}

async fn end(
    State(state): State<AppState>,
    dialect: CallerDialect,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .sessions
        .end(&owner, &id)
        .await
        .map_err(|e| dialect.session(e))?;
    Ok(Json(json!({"id": id, "deleted": true})))
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

async fn create(
    State(state): State<AppState>,
    dialect: CallerDialect,
    Owner(owner): Owner,
    body: Body,
) -> Result<Response, ApiError> {
    let invalid = |message: String| {
        dialect.error(Failure::new(
            StatusCode::BAD_REQUEST,
            FailureKind::InvalidRequest,
            message,
        ))
    };
    let body = read_body(body, 64 * 1024)
        .await
        .map_err(|_| invalid("invalid session id: the request body is too large".into()))?;
    let request: CreateSession = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSession::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("invalid session options: {e}")))?
    };
    let id = request
        .id
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let options = SessionOptions {
        tools: request.tools,
        system_prompt: request.system,
        model: request.model,
    };
    let s = state
        .sessions
        .create(&owner, &id, options)
        .await
        .map_err(|e| dialect.session(e))?;
    Ok((StatusCode::CREATED, Json(summary_json(&s, Some(true)))).into_response())
}

/// Streams the file: it is never held in memory whole.
async fn read_file(
    State(state): State<AppState>,
    dialect: CallerDialect,
    Owner(owner): Owner,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let file = state
        .sessions
        .read_file(&owner, &id, &path)
        .await
        .map_err(|e| dialect.session(e))?;
    Ok((
        [
            ("content-type", "application/octet-stream".to_string()),
            ("content-length", file.size.to_string()),
        ],
        Body::from_stream(file.body),
    )
        .into_response())
}

/// Streams the body into the workspace, within the file limit and the workspace quota.
async fn write_file(
    State(state): State<AppState>,
    dialect: CallerDialect,
    Owner(owner): Owner,
    Path((id, path)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let limit = state.api.max_body_bytes as u64;
    // A body that says its length (content-length) is refused before anything is read.
    if http_body::Body::size_hint(&body).lower() > limit {
        return Err(dialect.session(SessionError::FileTooLarge(limit)));
    }
    let bytes = state
        .sessions
        .write_file(&owner, &id, &path, body.into_data_stream(), limit)
        .await
        .map_err(|e| dialect.session(e))?;
    Ok(Json(json!({"path": path, "bytes": bytes})))
}
