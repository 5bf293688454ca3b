//! Errors in the OpenAI shape `{"error":{"message","type","param","code"}}` with the status
//! OpenAI clients expect, and the mapping from pool and chat failures.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::chat::ChatFailure;
use crate::pool::PoolError;
use crate::sessions::SessionError;

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

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }

    pub fn from_pool(e: &PoolError) -> Self {
        match e {
            PoolError::Busy(waited) => OpenAiError {
                retry_after: Some(2),
                code: Some("rate_limit_exceeded"),
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
                "server_error",
                format!("ccpool could not start a worker: {why}"),
            ),
            PoolError::Closed | PoolError::Retry => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "ccpool is shutting down",
            ),
        }
    }

    pub fn from_session(e: &SessionError) -> Self {
        let (status, kind, code) = match e {
            SessionError::InvalidId(_)
            | SessionError::InvalidPath(_)
            | SessionError::SystemPromptChanged(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_value",
            ),
            SessionError::NotFound(_) | SessionError::FileNotFound(_) => {
                (StatusCode::NOT_FOUND, "invalid_request_error", "not_found")
            }
            SessionError::OutsideWorkspace(_) => (
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "outside_workspace",
            ),
            SessionError::Exists(_) | SessionError::Busy(_) => {
                (StatusCode::CONFLICT, "invalid_request_error", "conflict")
            }
            SessionError::TooMany(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "too_many_sessions",
            ),
            SessionError::Pool(p) => return Self::from_pool(p),
            SessionError::Container(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "container_failed",
            ),
        };
        OpenAiError {
            code: Some(code),
            ..Self::new(status, kind, e.to_string())
        }
    }

    pub fn from_failure(failure: &ChatFailure) -> Self {
        match failure {
            ChatFailure::Worker(why) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                format!("the ccpool worker failed: {why}"),
            ),
            ChatFailure::Upstream {
                status,
                kind,
                message,
            } => {
                let e =
                    |code: StatusCode, kind: &'static str| Self::new(code, kind, message.clone());
                match status {
                    Some(400) => e(StatusCode::BAD_REQUEST, "invalid_request_error"),
                    Some(404) => OpenAiError {
                        code: Some("model_not_found"),
                        ..e(StatusCode::NOT_FOUND, "invalid_request_error")
                    },
                    Some(413) => e(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
                    Some(429) => OpenAiError {
                        retry_after: Some(5),
                        code: Some("rate_limit_exceeded"),
                        ..e(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
                    },
                    Some(529) => OpenAiError {
                        code: Some("overloaded"),
                        ..e(StatusCode::SERVICE_UNAVAILABLE, "server_error")
                    },
                    Some(code @ (401 | 403)) => Self::new(
                        StatusCode::BAD_GATEWAY,
                        "server_error",
                        format!(
                            "the upstream rejected ccpool's own credentials ({code} {}): the operator must renew the token \
                             ccpool uses (CLAUDE_CODE_OAUTH_TOKEN, ANTHROPIC_API_KEY or ~/.claude); your API key for ccpool \
                             is not the problem",
                            kind.as_deref().unwrap_or("authentication_error")
                        ),
                    ),
                    Some(500) => e(StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
                    _ => e(StatusCode::BAD_GATEWAY, "server_error"),
                }
            }
        }
    }
}

impl IntoResponse for OpenAiError {
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
            e.body(),
            json!({"error": {"message": "no", "type": "invalid_request_error", "param": "n", "code": "unsupported_parameter"}})
        );
    }
}
