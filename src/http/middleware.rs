//! The layers around every route: the request context (request id, tracing span, metrics by
//! route and status), client authentication, CORS, and the fallback for unknown routes.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::extract::{ApiError, CallerDialect, client_key};
use super::state::AppState;
use crate::failure::{Failure, FailureKind};

/// The answer for a route that does not exist, in the caller's dialect.
pub async fn not_found(dialect: CallerDialect, uri: axum::http::Uri) -> ApiError {
    dialect.error(Failure::new(
        StatusCode::NOT_FOUND,
        FailureKind::NotFound,
        format!("no route {}", uri.path()),
    ))
}

/// The answer for a route that exists with another method (`GET /v1/messages`), in the
/// caller's dialect.
pub async fn method_not_allowed(
    dialect: CallerDialect,
    method: Method,
    uri: axum::http::Uri,
) -> ApiError {
    dialect.error(Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        FailureKind::InvalidRequest,
        format!("{method} is not allowed on {}", uri.path()),
    ))
}

/// When the request arrived (its headers were read): the metrics time from here.
#[derive(Clone, Copy, Debug)]
pub struct Arrival(pub std::time::Instant);

/// The request id (`x-request-id` from the client, else generated) on the tracing span of the
/// request and on its response (also as `request-id` for Anthropic callers, as the real API
/// does); and the request counted by route and status.
pub async fn request_context(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
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
    let dialect = CallerDialect::of(request.headers(), request.uri().path());
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert("x-request-id", value);
    }
    request
        .extensions_mut()
        .insert(Arrival(std::time::Instant::now()));
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), route = %route);
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), "answered"));
    state
        .metrics
        .count_request(&route, response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&id) {
        if dialect == CallerDialect::Anthropic {
            response.headers_mut().insert("request-id", value.clone());
        }
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Checks the client's API key, when keys are configured, in constant time. `/health` and
/// `/ready` are open. A 401 comes in the caller's dialect.
pub async fn authenticate(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use subtle::ConstantTimeEq;
    let path = request.uri().path();
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
    CallerDialect::of(request.headers(), path)
        .error(Failure::new(
            StatusCode::UNAUTHORIZED,
            FailureKind::Unauthenticated,
            message,
        ))
        .into_response()
}

/// CORS: the configured origins, or any localhost origin by default.
pub fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    // The same rule the guard applies: one list of allowed origins.
    let configured = origins.to_vec();
    let allow = AllowOrigin::predicate(move |origin, _| {
        origin
            .to_str()
            .is_ok_and(|o| super::guard::origin_allowed(o, &configured))
    });
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
