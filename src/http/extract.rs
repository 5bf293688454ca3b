//! The extractors every route shares: the session a chat request names (`SessionTarget`), its
//! owner (`Owner`), the body within the size limit (`LimitedBody`), and the dialect the caller
//! speaks (`CallerDialect`), which is how every route chooses the shape of its errors
//! (`ApiError`).

use std::hash::{Hash, Hasher};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::state::AppState;
use crate::anthropic::AnthropicError;
use crate::chat::Target;
use crate::domain::OwnerKey;
use crate::failure::{Failure, FailureKind};
use crate::openai::OpenAiError;
use crate::sessions::SessionOptions;

/// The dialect a caller speaks: the chat route it calls decides, else an `anthropic-version`
/// header asks for the Anthropic shape, else it is OpenAI's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerDialect {
    Anthropic,
    OpenAi,
}

impl CallerDialect {
    pub fn of(headers: &HeaderMap, path: &str) -> Self {
        if path.ends_with("/chat/completions") {
            CallerDialect::OpenAi
        } else if path.ends_with("/v1/messages")
            || path.ends_with("/count_tokens")
            || headers.contains_key("anthropic-version")
        {
            CallerDialect::Anthropic
        } else {
            CallerDialect::OpenAi
        }
    }

    /// A failure in this dialect's error shape.
    pub fn error(self, failure: Failure) -> ApiError {
        ApiError {
            dialect: self,
            failure,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallerDialect {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(CallerDialect::of(&parts.headers, parts.uri.path()))
    }
}

/// A failure answered in the caller's dialect.
#[derive(Debug)]
pub struct ApiError {
    pub dialect: CallerDialect,
    pub failure: Failure,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.dialect {
            CallerDialect::Anthropic => AnthropicError::from(self.failure).into_response(),
            CallerDialect::OpenAi => OpenAiError::from(self.failure).into_response(),
        }
    }
}

/// The session a chat request names: the `{session}` of a `/sessions/{session}/…` path, or
/// the `x-session-id` header; else the pool. Options for a session created by this request
/// come from `x-ccpool-session-tools: on`.
pub struct SessionTarget(pub Target);

impl<S: Send + Sync> FromRequestParts<S> for SessionTarget {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
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
        let Some(id) = from_path.or_else(|| header("x-session-id")) else {
            return Ok(SessionTarget(Target::Pool));
        };
        let tools = header("x-ccpool-session-tools")
            .is_some_and(|v| matches!(v.as_str(), "on" | "true" | "1"));
        Ok(SessionTarget(Target::Session {
            id,
            options: SessionOptions {
                tools,
                ..Default::default()
            },
        }))
    }
}

/// The owner of a request: the client's API key, hashed (so it never sits in memory as a
/// label), or anonymous. Workers never serve two owners.
pub struct Owner(pub OwnerKey);

impl<S: Send + Sync> FromRequestParts<S> for Owner {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Owner(match client_key(&parts.headers) {
            Some(key) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                key.hash(&mut h);
                OwnerKey::new(format!("key-{:016x}", h.finish()))
            }
            None => OwnerKey::anonymous(),
        }))
    }
}

/// The key a client presents, as `x-api-key` or `Authorization: Bearer`.
pub fn client_key(headers: &HeaderMap) -> Option<String> {
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

/// The request body, within `ApiSettings::max_body_bytes`; a larger one is a 413 in the
/// caller's dialect.
pub struct LimitedBody(pub Bytes);

impl FromRequest<AppState> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let dialect = CallerDialect::of(request.headers(), request.uri().path());
        read_body(request.into_body(), state.api.max_body_bytes)
            .await
            .map(LimitedBody)
            .map_err(|failure| dialect.error(failure))
    }
}

/// Reads a request body of at most `limit` bytes. A larger body is still read to its end
/// (up to eight times the limit) and discarded, so the client, which may still be sending,
/// receives the 413 instead of a broken connection.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, Failure> {
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
        return Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            FailureKind::TooLarge,
            format!("the request body exceeds ccpool's limit of {limit} bytes"),
        ));
    }
    Ok(collected.into())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    use crate::fake::harness;
    use crate::http::app;

    #[tokio::test]
    async fn a_file_too_large_gets_its_413_in_the_callers_dialect() {
        let h = harness().await;
        let limit = h.state.api.max_body_bytes;
        let put = |anthropic: bool| {
            let mut r = Request::put("/v1/sessions/s1/files/big.txt");
            if anthropic {
                r = r.header("anthropic-version", "2023-06-01");
            }
            r.body(Body::from(vec![b'x'; limit + 1])).unwrap()
        };
        for anthropic in [true, false] {
            let response = app(h.state.clone()).oneshot(put(anthropic)).await.unwrap();
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
            let has_request_id = response.headers().contains_key("request-id");
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let e: Value = serde_json::from_slice(&bytes).unwrap();
            if anthropic {
                assert_eq!(e["type"], "error", "{e}");
                assert_eq!(e["error"]["type"], "request_too_large", "{e}");
                assert!(has_request_id, "Anthropic callers get request-id");
            } else {
                assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
                assert_eq!(e["error"]["code"], "request_too_large", "{e}");
            }
        }
        h.stop().await;
    }
}
