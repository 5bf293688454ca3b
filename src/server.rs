//! The HTTP surface: `fn app(state) -> Router` with the API dialects, health and status.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::domain::OwnerKey;
use crate::pool::WarmPool;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: WarmPool,
    pub sessions: crate::sessions::Sessions,
    pub api: ApiSettings,
}

/// The session a chat request names: the `{session}` of a `/sessions/{session}/…` path, or
/// the `x-session-id` header. Options for a session created by this request come from
/// `x-ccpool-session-tools: on`.
pub struct SessionTarget {
    pub id: Option<String>,
    pub options: crate::sessions::SessionOptions,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SessionTarget {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let from_path = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|params| {
                params
                    .iter()
                    .find(|(k, _)| *k == "session")
                    .map(|(_, v)| v.to_string())
            });
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let id = from_path.or_else(|| header("x-session-id"));
        let tools = header("x-ccpool-session-tools")
            .is_some_and(|v| matches!(v.as_str(), "on" | "true" | "1"));
        Ok(SessionTarget {
            id,
            options: crate::sessions::SessionOptions {
                tools,
                ..Default::default()
            },
        })
    }
}

/// Adds the session headers to a response: which session, and whether it forked.
pub fn session_headers(
    mut response: axum::response::Response,
    session: Option<(&str, bool)>,
) -> axum::response::Response {
    if let Some((id, forked)) = session {
        let headers = response.headers_mut();
        if let Ok(v) = axum::http::HeaderValue::from_str(id) {
            headers.insert("x-ccpool-session", v);
        }
        headers.insert(
            "x-ccpool-session-forked",
            axum::http::HeaderValue::from_static(if forked { "true" } else { "false" }),
        );
    }
    response
}

/// Settings of the HTTP APIs.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// How often a streaming response sends `ping` while it waits.
    pub ping_interval: Duration,
    /// Model aliases and the reasoning switch of the OpenAI dialect.
    pub openai: crate::openai::translate::OpenAiOptions,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_body_bytes: 10 * 1024 * 1024,
            ping_interval: Duration::from_secs(10),
            openai: Default::default(),
        }
    }
}

pub fn app(state: AppState) -> Router {
    let chat_routes = || {
        Router::new()
            .merge(crate::anthropic::routes())
            .merge(crate::openai::routes())
    };
    Router::new()
        .merge(chat_routes())
        .nest("/sessions/{session}", chat_routes())
        .merge(crate::session_routes::routes())
        .merge(crate::models::routes())
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/status", get(status))
        .with_state(state)
}

/// A request body was larger than the limit.
#[derive(Debug)]
pub struct BodyTooLarge {
    pub limit: usize,
}

/// Reads a request body of at most `limit` bytes. A larger body is still read to its end
/// (up to eight times the limit) and discarded, so the client, which may still be sending,
/// receives the 413 instead of a broken connection.
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, BodyTooLarge> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut collected = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > limit.saturating_mul(8) {
            break;
        }
        if seen <= limit {
            collected.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(BodyTooLarge { limit });
    }
    Ok(collected.into())
}

/// The owner of a request: the client's API key, hashed (so it never sits in memory as a
/// label), or anonymous. Workers never serve two owners.
pub fn owner_of(headers: &HeaderMap) -> OwnerKey {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .filter(|k| !k.is_empty());
    match key {
        Some(key) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            OwnerKey::new(format!("key-{:016x}", h.finish()))
        }
        None => OwnerKey::anonymous(),
    }
}

async fn status(State(state): State<AppState>) -> Json<Value> {
    let s = state.pool.status();
    let profiles: Vec<Value> = s
        .profiles
        .iter()
        .map(|p| {
            json!({
                "profile": p.fingerprint, "default": p.is_default, "warm": p.warm,
                "starting": p.starting, "waiting": p.waiting, "idle": p.idle, "busy": p.busy,
            })
        })
        .collect();
    Json(json!({
        "workers": s.workers,
        "max_workers": s.max_workers,
        "started": s.started,
        "start_failures": s.start_failures,
        "retired": s.retired,
        "reused": s.reused,
        "credentials": state.pool.settings().credentials.kind(),
        "profiles": profiles,
    }))
}
