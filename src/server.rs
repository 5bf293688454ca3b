//! The HTTP surface: `fn app(state) -> Router` with the API dialects, sessions, models,
//! health and metrics, behind request ids, client authentication and CORS.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::domain::OwnerKey;
use crate::pool::WarmPool;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: WarmPool,
    pub sessions: crate::sessions::Sessions,
    pub metrics: crate::metrics::Metrics,
    pub api: ApiSettings,
}

impl AppState {
    pub fn new(pool: WarmPool, sessions: crate::sessions::Sessions, api: ApiSettings) -> Self {
        let metrics = crate::metrics::Metrics::new(pool.clone(), sessions.clone());
        AppState {
            pool,
            sessions,
            metrics,
            api,
        }
    }
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
    /// Client API keys; empty means no authentication (allowed on loopback only).
    pub api_keys: Vec<crate::credentials::Secret>,
    /// Origins allowed by CORS; empty means localhost origins.
    pub cors_origins: Vec<String>,
    /// Fetches remote image URLs, when the configuration enables it.
    pub image_fetcher: Option<crate::images::ImageFetcher>,
    /// The Docker endpoint in use, for `/status`.
    pub docker_endpoint: Option<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_body_bytes: 10 * 1024 * 1024,
            ping_interval: Duration::from_secs(10),
            openai: Default::default(),
            api_keys: Vec::new(),
            cors_origins: Vec::new(),
            image_fetcher: None,
            docker_endpoint: None,
        }
    }
}

pub fn app(state: AppState) -> Router {
    let chat_routes = || {
        Router::new()
            .merge(crate::anthropic::routes())
            .merge(crate::openai::routes())
    };
    let cors = cors_layer(&state.api.cors_origins);
    Router::new()
        .merge(chat_routes())
        .nest("/sessions/{session}", chat_routes())
        .merge(crate::session_routes::routes())
        .merge(crate::models::routes())
        .merge(crate::health::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .layer(cors)
        .with_state(state)
}

/// Whether a request speaks the Anthropic dialect (its errors take the Anthropic shape).
pub fn speaks_anthropic(headers: &HeaderMap, path: &str) -> bool {
    headers.contains_key("anthropic-version")
        || path.ends_with("/v1/messages")
        || path.ends_with("/count_tokens")
}

async fn not_found(uri: axum::http::Uri, headers: HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let message = format!("no route {}", uri.path());
    if speaks_anthropic(&headers, uri.path()) {
        crate::anthropic::AnthropicError::new(StatusCode::NOT_FOUND, "not_found_error", message)
            .into_response()
    } else {
        crate::openai::OpenAiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
            .into_response()
    }
}

/// The request id (`x-request-id` from the client, else generated) on the tracing span of the
/// request and on its response; and the request counted by route and status.
async fn request_context(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::new_v4().simple()));
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert("x-request-id", value);
    }
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), route = %route);
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), "answered"));
    state
        .metrics
        .count_request(&route, response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Checks the client's API key, when keys are configured, in constant time. `/health` and
/// `/ready` are open. A 401 comes in the caller's API format.
async fn authenticate(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use subtle::ConstantTimeEq;
    let path = request.uri().path().to_string();
    if state.api.api_keys.is_empty() || path == "/health" || path == "/ready" {
        return next.run(request).await;
    }
    let presented = client_key(request.headers()).unwrap_or_default();
    let known = state.api.api_keys.iter().fold(0u8, |found, key| {
        found
            | presented
                .as_bytes()
                .ct_eq(key.expose().as_bytes())
                .unwrap_u8()
    });
    if known == 1 {
        return next.run(request).await;
    }
    let message = if presented.is_empty() {
        "ccpool needs an API key: send it as x-api-key or Authorization: Bearer"
    } else {
        "this API key is not one of ccpool's keys"
    };
    if speaks_anthropic(request.headers(), &path) {
        crate::anthropic::AnthropicError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            message,
        )
        .into_response()
    } else {
        crate::openai::OpenAiError {
            code: Some("invalid_api_key"),
            ..crate::openai::OpenAiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                message,
            )
        }
        .into_response()
    }
}

/// The key a client presents, as `x-api-key` or `Authorization: Bearer`.
fn client_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .filter(|k| !k.is_empty())
        .map(str::to_string)
}

/// CORS: the configured origins, or any localhost origin by default.
fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let allow = if origins.is_empty() {
        AllowOrigin::predicate(|origin, _| {
            origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .is_some_and(|(_, host)| {
                    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
                        if port.chars().all(|c| c.is_ascii_digit()) {
                            h
                        } else {
                            host
                        }
                    });
                    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
                })
        })
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(Duration::from_secs(600))
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
    match client_key(headers) {
        Some(key) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            OwnerKey::new(format!("key-{:016x}", h.finish()))
        }
        None => OwnerKey::anonymous(),
    }
}
