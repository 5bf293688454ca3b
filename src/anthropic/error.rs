//! Errors in the Anthropic shape `{"type":"error","error":{"type":…,"message":…}}` with the
//! status the real API uses, and the mapping from pool and chat failures.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::chat::ChatFailure;
use crate::pool::PoolError;
use crate::sessions::SessionError;

/// An error answer of the Anthropic API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnthropicError {
    pub status: StatusCode,
    /// The Anthropic error type: `invalid_request_error`, `rate_limit_error`, …
    pub kind: &'static str,
    pub message: String,
    /// Seconds for a `retry-after` header.
    pub retry_after: Option<u64>,
}

impl AnthropicError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        AnthropicError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// The body, also used as the data of an SSE `error` event.
    pub fn body(&self) -> Value {
        json!({"type": "error", "error": {"type": self.kind, "message": self.message}})
    }

    pub fn from_pool(e: &PoolError) -> Self {
        match e {
            PoolError::Busy(waited) => AnthropicError {
                retry_after: Some(2),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    format!(
                        "all ccpool workers are busy (waited {}s); retry shortly",
                        waited.as_secs()
                    ),
                )
            },
            PoolError::StartFailed(why) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                format!("ccpool could not start a worker: {why}"),
            ),
            PoolError::Closed | PoolError::Retry => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "ccpool is shutting down",
            ),
        }
    }

    pub fn from_session(e: &SessionError) -> Self {
        let (status, kind) = match e {
            SessionError::InvalidId(_)
            | SessionError::InvalidPath(_)
            | SessionError::SystemPromptChanged(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            SessionError::NotFound(_) | SessionError::FileNotFound(_) => {
                (StatusCode::NOT_FOUND, "not_found_error")
            }
            SessionError::OutsideWorkspace(_) => (StatusCode::FORBIDDEN, "permission_error"),
            SessionError::Exists(_) | SessionError::Busy(_) => {
                (StatusCode::CONFLICT, "invalid_request_error")
            }
            SessionError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
            SessionError::Pool(p) => return Self::from_pool(p),
            SessionError::Container(_) => (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
        };
        Self::new(status, kind, e.to_string())
    }

    pub fn from_failure(failure: &ChatFailure) -> Self {
        match failure {
            ChatFailure::Upstream {
                status,
                kind,
                message,
            } => upstream(*status, kind.as_deref(), message),
            ChatFailure::Worker(why) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                format!("the ccpool worker failed: {why}"),
            ),
        }
    }
}

/// An upstream error keeps its meaning, except that a rejection of ccpool's own credentials
/// must not read as the client's key being wrong.
fn upstream(status: Option<u16>, kind: Option<&str>, message: &str) -> AnthropicError {
    let e = |code: u16, kind: &'static str| {
        AnthropicError::new(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            kind,
            message.to_string(),
        )
    };
    match status {
        Some(400) => e(400, "invalid_request_error"),
        Some(404) => e(404, "not_found_error"),
        Some(413) => e(413, "request_too_large"),
        Some(429) => AnthropicError {
            retry_after: Some(5),
            ..e(429, "rate_limit_error")
        },
        Some(529) => e(529, "overloaded_error"),
        Some(code @ (401 | 403)) => AnthropicError::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            format!(
                "the upstream rejected ccpool's own credentials ({code} {}): the operator must renew \
                 the token ccpool uses (CLAUDE_CODE_OAUTH_TOKEN, ANTHROPIC_API_KEY or ~/.claude); \
                 your API key for ccpool is not the problem",
                kind.unwrap_or("authentication_error")
            ),
        ),
        Some(500) => e(500, "api_error"),
        _ => e(502, "api_error"),
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn up(status: u16, kind: &str) -> AnthropicError {
        AnthropicError::from_failure(&ChatFailure::Upstream {
            status: Some(status),
            kind: Some(kind.into()),
            message: "m".into(),
        })
    }

    #[test]
    fn upstream_errors_keep_their_meaning() {
        assert_eq!(
            (up(429, "rate_limit_error").status, up(429, "").kind),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
        );
        assert_eq!(up(429, "").retry_after, Some(5));
        assert_eq!(up(529, "overloaded_error").status.as_u16(), 529);
        assert_eq!(up(529, "").kind, "overloaded_error");
        assert_eq!(
            (up(400, "").status, up(400, "").kind),
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        );
    }

    #[test]
    fn an_upstream_401_blames_ccpools_credentials_not_the_client() {
        let e = up(401, "authentication_error");
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_ne!(e.kind, "authentication_error");
        assert!(
            e.message.contains("ccpool's own credentials"),
            "{}",
            e.message
        );
    }

    #[test]
    fn pool_and_worker_failures() {
        let busy = AnthropicError::from_pool(&PoolError::Busy(Duration::from_secs(30)));
        assert_eq!(
            (busy.status, busy.kind, busy.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some(2))
        );
        let crash = AnthropicError::from_failure(&ChatFailure::Worker("exited".into()));
        assert_eq!(
            (crash.status, crash.kind),
            (StatusCode::INTERNAL_SERVER_ERROR, "api_error")
        );
        assert_eq!(crash.body()["type"], "error");
        assert_eq!(crash.body()["error"]["type"], "api_error");
    }
}
