//! Errors in the Anthropic shape `{"type":"error","error":{"type":…,"message":…}}` with the
//! status the real API uses. Which failure gets which status is decided in `failure`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::chat::ChatFailure;
use crate::failure::{Failure, FailureKind};
use crate::pool::PoolError;
use crate::sessions::SessionError;

/// The body of an error answer: `{"type": "error", "error": {"type": …, "message": …}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename = "error")]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub message: &'a str,
}

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
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                message: &self.message,
            },
        }
    }

    pub fn from_pool(e: &PoolError) -> Self {
        Failure::from_pool(e).into()
    }

    pub fn from_session(e: &SessionError) -> Self {
        Failure::from_session(e).into()
    }

    pub fn from_failure(failure: &ChatFailure) -> Self {
        Failure::from_chat(failure).into()
    }
}

impl From<Failure> for AnthropicError {
    fn from(f: Failure) -> Self {
        let kind = match f.kind {
            FailureKind::InvalidRequest | FailureKind::Conflict => "invalid_request_error",
            FailureKind::Unauthenticated => "authentication_error",
            FailureKind::NotFound => "not_found_error",
            FailureKind::Permission => "permission_error",
            FailureKind::TooLarge => "request_too_large",
            FailureKind::RateLimited => "rate_limit_error",
            FailureKind::Overloaded => "overloaded_error",
            FailureKind::Server => "api_error",
        };
        AnthropicError {
            status: f.status,
            kind,
            message: f.message,
            retry_after: f.retry_after,
        }
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        crate::failure::error_response(self.status, self.body(), self.retry_after)
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
        assert_eq!(
            serde_json::to_value(crash.body()).unwrap(),
            serde_json::json!({"type": "error", "error": {"type": "api_error", "message": crash.message}})
        );
    }
}
