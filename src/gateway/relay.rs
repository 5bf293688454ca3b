//! The relay: the only endpoint workers reach. It checks a request's worker token, puts the
//! real credential in its place, forwards it to the upstream over pooled keep-alive
//! connections, and streams the answer back chunk by chunk while the report reads usage from
//! it. The real credential appears in no log line and no error.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::Gateway;
use super::broker::UpstreamAuth;
use super::report::{BodyKind, UsageTap};

/// The largest request body a worker may send through the relay.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Headers that belong to one connection and are never forwarded, plus the worker's own
/// credential headers (replaced) and `accept-encoding` (so that usage can be read from
/// the answer).
fn dropped_on_request(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
            | "x-api-key"
            | "accept-encoding"
    )
}

fn dropped_on_response(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// An error in the Anthropic shape, which the CLI understands.
pub(super) fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// The worker token a request presents, as the CLI sends it: `Authorization: Bearer` for
/// an OAuth token, `x-api-key` for an API key.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        return v.to_str().ok()?.strip_prefix("Bearer ");
    }
    headers.get("x-api-key")?.to_str().ok()
}

pub(super) async fn relay(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(checked) = presented(&parts.headers).and_then(|t| gateway.tokens.check(t)) else {
        gateway.report.rejected();
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "ccpool relay: unknown or revoked worker token",
        );
    };
    let worker = checked.worker;
    if checked.warming {
        let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "ccpool relay: the request body is too large or was cut",
            );
        };
        gateway.count_warm_up_answer();
        return super::warm_up::answer(parts.uri.path(), &body);
    }
    let auth = match gateway.broker.auth().await {
        Ok(auth) => auth,
        Err(e) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                &format!("ccpool relay: {e}"),
            );
        }
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "ccpool relay: the request body is too large or was cut",
        );
    };
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        if !dropped_on_request(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    match auth {
        UpstreamAuth::Bearer(token) => {
            if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                v.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, v);
            }
        }
        UpstreamAuth::ApiKey(key) => {
            if let Ok(mut v) = HeaderValue::from_str(key.expose()) {
                v.set_sensitive(true);
                headers.insert("x-api-key", v);
            }
        }
        UpstreamAuth::None => {}
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", gateway.upstream);
    let sent = gateway
        .client
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(r) => r,
        Err(e) => {
            gateway.report.unreachable();
            tracing::warn!(worker = %worker, cause = %e.without_url(), "relay: the upstream is unreachable");
            return error(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "ccpool relay: the upstream is unreachable",
            );
        }
    };
    let status = upstream.status();
    gateway.report.answer(status.as_u16(), upstream.headers());
    tracing::debug!(worker = %worker, status = status.as_u16(), "relayed");
    let mut response = Response::builder().status(status);
    if let Some(h) = response.headers_mut() {
        for (name, value) in upstream.headers() {
            if !dropped_on_response(name) {
                h.append(name.clone(), value.clone());
            }
        }
    }
    let mut tap = UsageTap::new(BodyKind::of(upstream.headers()), gateway.report.clone());
    let stream = upstream.bytes_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            tap.feed(bytes);
        }
        chunk
    });
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            error(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "ccpool relay: a bad upstream answer",
            )
        })
}
