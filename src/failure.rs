//! What went wrong, independent of the API dialect: the HTTP status and the kind of every
//! pool, session and chat failure, decided once. Each dialect only names the kind in its own
//! words and renders its own error shape.

use axum::http::StatusCode;

use crate::chat::{ChatFailure, StartError};
use crate::pool::PoolError;
use crate::sessions::SessionError;

/// The kinds of failure the dialects tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    InvalidRequest,
    /// The client presented no key, or a key ccpool does not know.
    Unauthenticated,
    NotFound,
    Permission,
    Conflict,
    TooLarge,
    RateLimited,
    /// The upstream is overloaded (its 529).
    Overloaded,
    /// ccpool or the upstream failed.
    Server,
}

/// A failure as every dialect answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    pub kind: FailureKind,
    pub message: String,
    /// Seconds for a `retry-after` header.
    pub retry_after: Option<u64>,
}

impl Failure {
    pub fn new(status: StatusCode, kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry_after(self, seconds: u64) -> Self {
        Failure {
            retry_after: Some(seconds),
            ..self
        }
    }

    pub fn from_pool(e: &PoolError) -> Self {
        match e {
            PoolError::Busy(waited) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                FailureKind::RateLimited,
                format!(
                    "all ccpool workers are busy (waited {}s); retry shortly",
                    waited.as_secs()
                ),
            )
            .retry_after(2),
            PoolError::StartFailed(why) => {
                // The engine's text and container ids are for the operator's log only.
                tracing::warn!(cause = %why, "a worker failed to start");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    FailureKind::Server,
                    "ccpool could not start a worker; the operator finds the cause in ccpool's log",
                )
            }
            PoolError::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                FailureKind::Server,
                "ccpool is shutting down",
            ),
        }
    }

    /// The workers have no credentials and the upstream is Anthropic's: every request would
    /// fail upstream, so it is answered at once with what the operator must do.
    pub fn no_credentials() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            FailureKind::Server,
            "ccpool has no credentials for the upstream: the operator must set \
             CLAUDE_CODE_OAUTH_TOKEN (a token from `claude setup-token`) or ANTHROPIC_API_KEY, \
             or pass --credentials-file, and restart ccpool",
        )
    }

    pub fn from_start(e: &StartError) -> Self {
        match e {
            StartError::Invalid(e) => Self::new(
                StatusCode::BAD_REQUEST,
                FailureKind::InvalidRequest,
                e.to_string(),
            ),
            StartError::Pool(e) => Self::from_pool(e),
            StartError::Session(e) => Self::from_session(e),
        }
    }

    pub fn from_session(e: &SessionError) -> Self {
        let (status, kind) = match e {
            SessionError::InvalidId(_)
            | SessionError::InvalidPath(_)
            | SessionError::SystemPromptChanged(_) => {
                (StatusCode::BAD_REQUEST, FailureKind::InvalidRequest)
            }
            SessionError::NotFound(_) | SessionError::FileNotFound(_) => {
                (StatusCode::NOT_FOUND, FailureKind::NotFound)
            }
            SessionError::OutsideWorkspace(_) => (StatusCode::FORBIDDEN, FailureKind::Permission),
            SessionError::Exists(_) | SessionError::Busy(_) => {
                (StatusCode::CONFLICT, FailureKind::Conflict)
            }
            SessionError::TooMany(_) | SessionError::TooManyForOwner(_) => {
                (StatusCode::TOO_MANY_REQUESTS, FailureKind::RateLimited)
            }
            SessionError::QuotaExceeded(_) | SessionError::FileTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, FailureKind::TooLarge)
            }
            SessionError::Pool(p) => return Self::from_pool(p),
            SessionError::Container(why) => {
                // The engine's text and container ids are for the operator's log only.
                tracing::warn!(cause = %why, "a session's container failed");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    FailureKind::Server,
                    "the session's container failed; the operator finds the cause in ccpool's log",
                );
            }
        };
        Self::new(status, kind, e.to_string())
    }

    /// An upstream error keeps its meaning, except that a rejection of ccpool's own
    /// credentials must not read as the client's key being wrong.
    pub fn from_chat(failure: &ChatFailure) -> Self {
        let (status, kind, message) = match failure {
            ChatFailure::Worker(why) => {
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    FailureKind::Server,
                    format!("the ccpool worker failed: {why}"),
                );
            }
            ChatFailure::Upstream {
                status,
                kind,
                message,
            } => (status, kind, message),
        };
        let e = |code: StatusCode, kind: FailureKind| Self::new(code, kind, message.clone());
        match status {
            Some(400) => e(StatusCode::BAD_REQUEST, FailureKind::InvalidRequest),
            Some(404) => e(StatusCode::NOT_FOUND, FailureKind::NotFound),
            Some(413) => e(StatusCode::PAYLOAD_TOO_LARGE, FailureKind::TooLarge),
            Some(429) => e(StatusCode::TOO_MANY_REQUESTS, FailureKind::RateLimited).retry_after(5),
            Some(529) => e(
                StatusCode::from_u16(529).expect("529 is a valid status"),
                FailureKind::Overloaded,
            ),
            Some(code @ (401 | 403)) => Self::new(
                StatusCode::BAD_GATEWAY,
                FailureKind::Server,
                format!(
                    "the upstream rejected ccpool's own credentials ({code} {}): the operator must renew the token \
                     ccpool uses (CLAUDE_CODE_OAUTH_TOKEN, ANTHROPIC_API_KEY or ~/.claude); your API key for ccpool is \
                     not the problem",
                    kind.as_deref().unwrap_or("authentication_error")
                ),
            ),
            Some(500) => e(StatusCode::INTERNAL_SERVER_ERROR, FailureKind::Server),
            _ => e(StatusCode::BAD_GATEWAY, FailureKind::Server),
        }
    }
}

/// A JSON error answer with its status and, when set, a `retry-after` header: how every
/// dialect's error type becomes a response.
pub fn error_response(
    status: StatusCode,
    body: impl serde::Serialize,
    retry_after: Option<u64>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(status: u16) -> Failure {
        Failure::from_chat(&ChatFailure::Upstream {
            status: Some(status),
            kind: None,
            message: "m".into(),
        })
    }

    #[test]
    fn upstream_errors_keep_their_meaning() {
        assert_eq!(
            (up(429).status.as_u16(), up(429).kind, up(429).retry_after),
            (429, FailureKind::RateLimited, Some(5))
        );
        assert_eq!(
            (up(529).status.as_u16(), up(529).kind),
            (529, FailureKind::Overloaded)
        );
        assert_eq!(
            (up(400).status.as_u16(), up(400).kind),
            (400, FailureKind::InvalidRequest)
        );
        assert_eq!(
            (up(404).status.as_u16(), up(404).kind),
            (404, FailureKind::NotFound)
        );
        assert_eq!(up(418).status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn an_upstream_401_blames_ccpools_credentials() {
        let e = up(401);
        assert_eq!(
            (e.status, e.kind),
            (StatusCode::BAD_GATEWAY, FailureKind::Server)
        );
        assert!(e.message.contains("ccpool's own credentials"));
    }

    #[test]
    fn pool_and_session_failures() {
        let busy = Failure::from_pool(&PoolError::Busy(std::time::Duration::from_secs(30)));
        assert_eq!(
            (busy.status, busy.kind, busy.retry_after),
            (
                StatusCode::TOO_MANY_REQUESTS,
                FailureKind::RateLimited,
                Some(2)
            )
        );
        let conflict = Failure::from_session(&SessionError::Busy("s".into()));
        assert_eq!(
            (conflict.status, conflict.kind),
            (StatusCode::CONFLICT, FailureKind::Conflict)
        );
        let outside = Failure::from_session(&SessionError::OutsideWorkspace("p".into()));
        assert_eq!(outside.status, StatusCode::FORBIDDEN);
        let pool = Failure::from_session(&SessionError::Pool(PoolError::Closed));
        assert_eq!(pool.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
