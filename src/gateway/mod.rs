//! The upstream gateway: workers hold no real credential and reach nothing but the model API
//! through ccpool. `Gateway` owns the relay server (`relay`), the live worker tokens
//! (`tokens`), the real credential and its refresh (`broker`), and what the relay reports
//! (`report`). A worker learns the relay's URL and its own token through `RelayLink`.

pub mod broker;
pub mod relay;
pub mod report;
pub mod tokens;
mod warm_up;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::credentials::Credentials;
pub use broker::{Broker, BrokerConfig, BrokerStatus, UpstreamAuth};
pub use report::Report;
pub use tokens::{WorkerToken, WorkerTokens};

/// The Anthropic API, where the relay forwards by default.
pub const DEFAULT_UPSTREAM: &str = "https://api.anthropic.com";

/// Which kind of credential a worker's token poses as, so the CLI behaves as it would with
/// the real one (an OAuth token turns on the subscription's behaviour and beta header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Given to the CLI as `CLAUDE_CODE_OAUTH_TOKEN`; it sends `Authorization: Bearer`.
    OAuth,
    /// Given to the CLI as `ANTHROPIC_API_KEY`; it sends `x-api-key`.
    ApiKey,
}

/// Settings of the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The real upstream (no trailing slash needed).
    pub upstream: String,
    pub broker: BrokerConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            upstream: DEFAULT_UPSTREAM.to_string(),
            broker: BrokerConfig::default(),
        }
    }
}

/// The relay, its tokens, the credential broker and the report.
pub struct Gateway {
    upstream: String,
    client: reqwest::Client,
    tokens: WorkerTokens,
    broker: Broker,
    report: Arc<Report>,
    kind: TokenKind,
    /// Requests of warming workers the relay answered itself (`warm_up`).
    warm_up_answers: std::sync::atomic::AtomicU64,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstream", &self.upstream)
            .field("kind", &self.kind)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
#[error("starting the upstream gateway: {0}")]
pub struct GatewayError(String);

impl Gateway {
    pub fn new(
        credentials: &Credentials,
        config: GatewayConfig,
    ) -> Result<Arc<Gateway>, GatewayError> {
        let broker = Broker::new(credentials, config.broker).map_err(GatewayError)?;
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| GatewayError(format!("building the upstream client: {e}")))?;
        let kind = match credentials {
            Credentials::ApiKey(_) | Credentials::None => TokenKind::ApiKey,
            Credentials::OAuthToken(_) | Credentials::CredentialsFile(_) => TokenKind::OAuth,
        };
        Ok(Arc::new(Gateway {
            upstream: config.upstream.trim_end_matches('/').to_string(),
            client,
            tokens: WorkerTokens::default(),
            broker,
            report: Arc::new(Report::default()),
            kind,
            warm_up_answers: Default::default(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

    /// The relay's routes: every path is forwarded.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .fallback(relay::relay)
            .with_state(self.clone())
    }

    /// Serves the relay on `listener` and keeps the credential fresh, until `shutdown`.
    /// Returns the address it serves on.
    pub fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = self.router();
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(cause = %e, "the relay stopped");
            }
        });
        let gateway = self.clone();
        let cancel = self.cancel.clone();
        self.tasks
            .spawn(async move { gateway.broker.keep_fresh(cancel).await });
        Ok(addr)
    }

    /// Stops the relay and the refresh task, and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }

    /// A new token for a worker; dropping it revokes it.
    pub fn issue(&self, worker: &str) -> WorkerToken {
        self.tokens.issue(worker)
    }

    /// Where the relay forwards to.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub fn token_kind(&self) -> TokenKind {
        self.kind
    }

    pub fn report(&self) -> &Arc<Report> {
        &self.report
    }

    pub fn broker_status(&self) -> BrokerStatus {
        self.broker.status()
    }

    pub fn live_tokens(&self) -> usize {
        self.tokens.live_count()
    }

    /// How many requests of warming workers the relay has answered itself.
    pub fn warm_up_answers(&self) -> u64 {
        self.warm_up_answers
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_warm_up_answer(&self) {
        self.warm_up_answers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Why the gateway cannot serve, for `/ready`: a failed refresh of a token that has
    /// expired or is about to.
    pub fn not_ready_because(&self) -> Option<String> {
        let status = self.broker.status();
        let failure = status.failure?;
        Some(match status.expires_in_secs {
            Some(left) if left <= 0 => {
                format!("the OAuth access token expired and refreshing it failed: {failure}")
            }
            Some(left) => {
                format!("refreshing the OAuth access token failed ({left}s left): {failure}")
            }
            None => format!("refreshing the OAuth access token failed: {failure}"),
        })
    }

    /// For `/status`.
    pub fn status_json(&self) -> serde_json::Value {
        let b = self.broker.status();
        serde_json::json!({
            "upstream": self.upstream,
            "live_worker_tokens": self.tokens.live_count(),
            "warm_up_answers": self.warm_up_answers(),
            "credential": {
                "kind": b.kind, "expires_in_secs": b.expires_in_secs, "refreshable": b.refreshable,
                "refreshes": b.refreshes, "refresh_failure": b.failure,
            },
            "upstream_report": self.report.snapshot(),
        })
    }

    /// Hands the upstream's `retry-after` of a recent 429 or 529 on to ccpool's own clients'
    /// 429 and 529 answers, in place of ccpool's guess.
    pub fn pass_retry_after(
        &self,
        mut response: axum::response::Response,
    ) -> axum::response::Response {
        if matches!(response.status().as_u16(), 429 | 529) {
            if let Some(v) = self.report.recent_retry_after() {
                response.headers_mut().insert("retry-after", v);
            }
        }
        response
    }
}

/// What a worker needs to reach the upstream through the gateway: the relay's URL as seen
/// from inside a worker, and the gateway that issues its token.
#[derive(Clone, Debug)]
pub struct RelayLink {
    pub url: String,
    pub gateway: Arc<Gateway>,
}

/// Applies `Gateway::pass_retry_after` to every answer of `app`.
pub fn with_retry_after(app: Router, gateway: Arc<Gateway>) -> Router {
    app.layer(axum::middleware::map_response(move |response| {
        let gateway = gateway.clone();
        async move { gateway.pass_retry_after(response) }
    }))
}
