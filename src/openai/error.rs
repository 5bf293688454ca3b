//! Errors in the OpenAI shape `{"error":{"message","type","param","code"}}` with the status
//! OpenAI clients expect. Which failure gets which status is decided in `failure`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::chat::ChatFailure;
use crate::failure::{Failure, FailureKind};
use crate::pool::PoolError;
use crate::sessions::SessionError;

/// The body of an error answer: `{"error": {"message", "type", "param", "code"}}`, `param`
/// and `code` null when there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

/// An error answer of the OpenAI API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// The request parameter at fault, if one is.
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl OpenAiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        OpenAiError {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// A client mistake about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        OpenAiError {
            param: Some(param.into()),
            code: Some("invalid_value"),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// A parameter ccpool does not support.
    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        OpenAiError {
            code: Some("unsupported_parameter"),
            ..Self::invalid(param, message)
        }
    }

    /// The body, also used as the data of an SSE event when a stream fails.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
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

impl From<Failure> for OpenAiError {
    fn from(f: Failure) -> Self {
        let (status, kind, code) = match f.kind {
            FailureKind::InvalidRequest => (f.status, "invalid_request_error", None),
            FailureKind::Unauthenticated => {
                (f.status, "invalid_request_error", Some("invalid_api_key"))
            }
            FailureKind::NotFound => (f.status, "invalid_request_error", Some("not_found")),
            FailureKind::Permission => {
                (f.status, "invalid_request_error", Some("permission_denied"))
            }
            FailureKind::Conflict => (f.status, "invalid_request_error", Some("conflict")),
            FailureKind::TooLarge => (f.status, "invalid_request_error", Some("request_too_large")),
            FailureKind::RateLimited => (f.status, "rate_limit_error", Some("rate_limit_exceeded")),
            // OpenAI clients know no 529: an overloaded upstream is a 503.
            FailureKind::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("overloaded"),
            ),
            FailureKind::Server => (f.status, "server_error", None),
        };
        OpenAiError {
            status,
            kind,
            message: f.message,
            param: None,
            code,
            retry_after: f.retry_after,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        crate::failure::error_response(self.status, self.body(), self.retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(status: u16) -> OpenAiError {
        OpenAiError::from_failure(&ChatFailure::Upstream {
            status: Some(status),
            kind: None,
            message: "m".into(),
        })
    }

    #[test]
    fn upstream_and_pool_errors_map_as_openai_clients_expect() {
        assert_eq!(up(429).status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(up(429).retry_after, Some(5));
        assert_eq!(up(529).status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(up(400).status, StatusCode::BAD_REQUEST);
        assert_eq!(up(401).status, StatusCode::BAD_GATEWAY);
        assert!(up(401).message.contains("ccpool's own credentials"));
        let busy = OpenAiError::from_pool(&PoolError::Busy(std::time::Duration::from_secs(3)));
        assert_eq!(
            (busy.status, busy.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, Some(2))
        );
        let e = OpenAiError::unsupported("n", "no");
        assert_eq!(
            serde_json::to_value(e.body()).unwrap(),
            serde_json::json!({"error": {"message": "no", "type": "invalid_request_error", "param": "n", "code": "unsupported_parameter"}})
        );
    }
}
