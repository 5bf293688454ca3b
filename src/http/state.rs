//! What every handler shares (`AppState`) and the settings of the HTTP APIs (`ApiSettings`).

use std::time::Duration;

use crate::pool::WarmPool;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: WarmPool,
    pub sessions: crate::sessions::Sessions,
    pub metrics: crate::metrics::Metrics,
    pub api: ApiSettings,
    /// The Responses API's stored responses.
    pub responses: crate::responses::ResponseStore,
}

impl AppState {
    pub fn new(pool: WarmPool, sessions: crate::sessions::Sessions, api: ApiSettings) -> Self {
        let metrics = crate::metrics::Metrics::new(pool.clone(), sessions.clone());
        let responses = crate::responses::ResponseStore::new(api.responses_store);
        AppState {
            pool,
            sessions,
            metrics,
            api,
            responses,
        }
    }

    /// The workers have no credentials and talk to Anthropic's own API (no `--upstream-url`):
    /// every request would fail there.
    pub fn credentials_missing(&self) -> bool {
        let settings = self.pool.settings();
        let upstream_is_anthropic = match &settings.relay {
            Some(relay) => relay.gateway.upstream() == crate::gateway::DEFAULT_UPSTREAM,
            None => settings.cli.base_url.is_none(),
        };
        settings.credentials == crate::credentials::Credentials::None && upstream_is_anthropic
    }
}

/// Settings of the HTTP APIs.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// How often a streaming response sends `ping` while it waits.
    pub ping_interval: Duration,
    /// Model aliases and the reasoning switch of the OpenAI dialects.
    pub openai: crate::dialect::OpenAiOptions,
    /// Client API keys; empty means no authentication (allowed on loopback only).
    pub api_keys: Vec<crate::credentials::Secret>,
    /// Origins allowed by CORS; empty means localhost origins.
    pub cors_origins: Vec<String>,
    /// Fetches remote image URLs, when the configuration enables it.
    pub image_fetcher: Option<crate::images::ImageFetcher>,
    /// The Docker endpoint in use, for `/status`.
    pub docker_endpoint: Option<String>,
    /// How many Responses API responses are kept, and for how long.
    pub responses_store: crate::responses::StoreLimits,
    /// The address ccpool listens on: a loopback one makes `Host` checked (DNS rebinding).
    pub listen: Option<std::net::SocketAddr>,
    /// More host names a `Host` header may carry (besides loopback names and the listen
    /// address); when set, `Host` is checked whatever the listen address.
    pub allowed_hosts: Vec<String>,
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
            responses_store: Default::default(),
            listen: None,
            allowed_hosts: Vec::new(),
        }
    }
}
