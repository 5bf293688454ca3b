//! The service's typed configuration, from command-line flags and `CCPOOL_…` environment
//! variables (flags win), validated before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::cli::CliSettings;
use crate::credentials::{Credentials, Secret};
use crate::pool::{PoolConfig, ReusePolicy};
use crate::sandbox::SandboxConfig;
use crate::worker::WorkerSettings;

/// What happens to a worker after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyName {
    Reuse,
    Fresh,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(Secret::new(s))
    }
}

/// Every setting of the worker runtime and the pool.
#[derive(Clone, Debug, Args)]
pub struct RuntimeArgs {
    /// A subscription token (`claude setup-token`) for the workers; before the CLI's own
    /// CLAUDE_CODE_OAUTH_TOKEN, ANTHROPIC_API_KEY and ~/.claude/.credentials.json.
    #[arg(long, env = "CCPOOL_OAUTH_TOKEN", value_parser = parse_secret)]
    pub oauth_token: Option<Secret>,
    /// An Anthropic API key for the workers.
    #[arg(long, env = "CCPOOL_ANTHROPIC_API_KEY", value_parser = parse_secret)]
    pub anthropic_api_key: Option<Secret>,
    /// A Claude credentials file for the workers (its refresh token is never copied).
    #[arg(long, env = "CCPOOL_CREDENTIALS_FILE")]
    pub credentials_file: Option<std::path::PathBuf>,
    /// Names this ccpool instance on its containers' labels; a restart removes what the
    /// previous run of the same instance left. Give side-by-side instances different names.
    #[arg(long, env = "CCPOOL_INSTANCE", default_value = "ccpool")]
    pub instance: String,
    /// The worker image (build it with images/build.sh).
    #[arg(
        long,
        env = "CCPOOL_WORKER_IMAGE",
        default_value = "ccpool-worker:latest"
    )]
    pub worker_image: String,
    /// The workers' network. `internal` (default): ccpool creates an internal network (no
    /// route out, no traffic between workers) whose only reachable endpoint is its relay.
    /// Or a network name (compose: set --relay-listen and --relay-url too), `none`, or
    /// `host` (UNSAFE: workers reach everything the host reaches, ccpool's API included).
    #[arg(long, env = "CCPOOL_NETWORK", default_value = crate::network::INTERNAL)]
    pub network: String,
    /// Where the relay listens. Default: the host's address on the workers' network, any
    /// port (127.0.0.1 with `host` networking).
    #[arg(long, env = "CCPOOL_RELAY_LISTEN")]
    pub relay_listen: Option<SocketAddr>,
    /// The relay's URL as workers see it. Default: built from the address it listens on.
    #[arg(long, env = "CCPOOL_RELAY_URL")]
    pub relay_url: Option<String>,
    /// Host names that tools of sessions may fetch from. Not supported yet: any value is
    /// refused (workers have no way out but the model API).
    #[arg(
        long = "egress-allow",
        env = "CCPOOL_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    pub egress_allow: Vec<String>,
    /// The OAuth token endpoint ccpool refreshes a credentials file's access token at.
    #[arg(long, env = "CCPOOL_OAUTH_TOKEN_URL", default_value = crate::gateway::broker::CLAUDE_OAUTH_TOKEN_URL)]
    pub oauth_token_url: String,
    /// Memory limit of each worker container, in MiB (0: none).
    #[arg(long, env = "CCPOOL_MEMORY_MIB", default_value_t = 1024)]
    pub memory_mib: u32,
    /// CPU limit of each worker container, in cores (0: none).
    #[arg(long, env = "CCPOOL_CPUS", default_value_t = 1.0)]
    pub cpus: f64,
    /// Process limit of each worker container (0: none).
    #[arg(long, env = "CCPOOL_PIDS_LIMIT", default_value_t = 256)]
    pub pids_limit: i64,
    /// Size of each tmpfs (/tmp, home, workspace), in MiB.
    #[arg(long, env = "CCPOOL_TMPFS_MIB", default_value_t = 512)]
    pub tmpfs_mib: u32,
    /// Turn off the read-only root filesystem (on by default).
    #[arg(long, env = "CCPOOL_WRITABLE_ROOTFS")]
    pub writable_rootfs: bool,
    /// Keep Linux capabilities (all are dropped by default).
    #[arg(long, env = "CCPOOL_KEEP_CAPABILITIES")]
    pub keep_capabilities: bool,
    /// Allow gaining privileges through setuid binaries (forbidden by default).
    #[arg(long, env = "CCPOOL_ALLOW_NEW_PRIVILEGES")]
    pub allow_new_privileges: bool,
    /// Run without an init process as PID 1 (one runs by default).
    #[arg(long, env = "CCPOOL_NO_INIT")]
    pub no_init: bool,
    /// The upstream the relay forwards the workers' model API requests to (default: the
    /// Anthropic API).
    #[arg(long, env = "CCPOOL_UPSTREAM_URL")]
    pub upstream_url: Option<String>,
    /// The model workers start with; requests for it need no model switch.
    #[arg(long, env = "CCPOOL_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Upstream retries the CLI makes before reporting an error.
    #[arg(long, env = "CCPOOL_CLI_MAX_RETRIES", default_value_t = 0)]
    pub cli_max_retries: u32,
    /// Seconds an upstream byte stream may stay silent before the CLI gives up on it.
    #[arg(long, env = "CCPOOL_STREAM_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub stream_idle_timeout_secs: u64,
    /// Watchdog: seconds the CLI may stay silent during a request before it is stopped.
    #[arg(long, env = "CCPOOL_SILENCE_LIMIT_SECS", default_value_t = 120)]
    pub silence_limit_secs: u64,
    /// Seconds a worker may take to start (container and CLI).
    #[arg(long, env = "CCPOOL_START_TIMEOUT_SECS", default_value_t = 60)]
    pub start_timeout_secs: u64,
    /// Throwaway turns a new worker's CLI runs before it serves anyone, answered by the relay
    /// and then rewound, so that its first real request is as fast as a later one (0: none).
    #[arg(long, env = "CCPOOL_WARM_UP_TURNS", default_value_t = 3)]
    pub warm_up_turns: usize,
    /// What happens to a worker after a request.
    #[arg(long, env = "CCPOOL_POLICY", value_enum, default_value_t = PolicyName::Reuse)]
    pub policy: PolicyName,
    /// With `reuse`: requests a worker serves before it is retired.
    #[arg(long, env = "CCPOOL_MAX_USES", default_value_t = 100)]
    pub max_uses: u32,
    /// With `reuse`: seconds a worker lives before it is retired.
    #[arg(long, env = "CCPOOL_MAX_AGE_SECS", default_value_t = 3600)]
    pub max_age_secs: u64,
    /// Containers at most.
    #[arg(long, env = "CCPOOL_MAX_WORKERS", default_value_t = 8)]
    pub max_workers: usize,
    /// Warm workers kept at least for the default launch profile.
    #[arg(long, env = "CCPOOL_WARM", default_value_t = 2)]
    pub warm: usize,
    /// Adaptive warm pool: each launch profile keeps as many warm workers as the most
    /// requests it had in flight at once within this many seconds (at least its minimum, at
    /// most --max-workers; 0 turns it off).
    #[arg(long, env = "CCPOOL_DEMAND_WINDOW_SECS", default_value_t = 60)]
    pub demand_window_secs: u64,
    /// Seconds a request may wait for a worker before it is told the pool is busy.
    #[arg(long, env = "CCPOOL_CHECKOUT_TIMEOUT_SECS", default_value_t = 30)]
    pub checkout_timeout_secs: u64,
    /// Seconds a used worker may stay idle before it is retired.
    #[arg(long, env = "CCPOOL_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Seconds a worker keeps a stateless conversation for its next turn (affinity; 0 turns
    /// it off: every follow-up replays its history on a reset worker).
    #[arg(long, env = "CCPOOL_HOLD_IDLE_SECS", default_value_t = 300)]
    pub hold_idle_secs: u64,
    /// Seconds a worker parked on client tool calls waits for their results.
    #[arg(long, env = "CCPOOL_PARKED_IDLE_SECS", default_value_t = 900)]
    pub parked_idle_secs: u64,
    /// A request that would wait for a cold start takes over (resets) its key's least
    /// recently used held conversation idle this many seconds (any, when --max-workers is
    /// reached; a first turn takes over a first turn's holding at once).
    #[arg(long, env = "CCPOOL_TAKEOVER_IDLE_SECS", default_value_t = 1)]
    pub takeover_idle_secs: u64,
}

/// A setting is out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl RuntimeArgs {
    /// Checks ranges that clap's types do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_string()));
        if self.max_workers == 0 {
            return err("max-workers must be at least 1");
        }
        if self.warm > self.max_workers {
            return err("warm must not exceed max-workers");
        }
        if self.policy == PolicyName::Reuse && self.max_uses == 0 {
            return err("max-uses must be at least 1");
        }
        if !(self.cpus >= 0.0 && self.cpus.is_finite()) {
            return err("cpus must be a non-negative number");
        }
        if self.instance.is_empty()
            || !self
                .instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return err("instance must be letters, digits, '-' or '_'");
        }
        if !self.egress_allow.is_empty() {
            return err(
                "egress-allow is not supported yet: workers reach nothing but the model API through ccpool's \
                 relay, and ccpool has no filtering egress proxy that could let tools fetch from chosen hosts \
                 without opening everything. Remove the setting",
            );
        }
        if let Some(url) = &self.upstream_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return err("upstream-url must be an http:// or https:// URL");
            }
        }
        Ok(())
    }

    /// The workers' credentials: the configuration's first, then what the CLI itself would
    /// find in the environment.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        if let Some(token) = &self.oauth_token {
            return Ok(Credentials::OAuthToken(token.clone()));
        }
        if let Some(key) = &self.anthropic_api_key {
            return Ok(Credentials::ApiKey(key.clone()));
        }
        if let Some(path) = &self.credentials_file {
            let content = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!(
                    "reading the credentials file {}: {e}",
                    path.display()
                ))
            })?;
            return Credentials::from_file_content(&content).map_err(ConfigError);
        }
        Ok(Credentials::from_env())
    }

    /// Where the workers' credentials come from, named without the secret.
    pub fn credentials_source(&self) -> String {
        let env = |k: &str| std::env::var(k).ok().is_some_and(|v| !v.is_empty());
        let home = std::env::var("HOME").unwrap_or_default();
        let file = std::path::Path::new(&home).join(Credentials::FILE_IN_HOME);
        if self.oauth_token.is_some() {
            "oauth-token from --oauth-token (CCPOOL_OAUTH_TOKEN)".into()
        } else if self.anthropic_api_key.is_some() {
            "api-key from --anthropic-api-key (CCPOOL_ANTHROPIC_API_KEY)".into()
        } else if let Some(path) = &self.credentials_file {
            format!("credentials-file {}", path.display())
        } else if env("CLAUDE_CODE_OAUTH_TOKEN") {
            "oauth-token from CLAUDE_CODE_OAUTH_TOKEN".into()
        } else if env("ANTHROPIC_API_KEY") {
            "api-key from ANTHROPIC_API_KEY".into()
        } else if file.exists() {
            format!("credentials-file {}", file.display())
        } else {
            "none: set CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`) or ANTHROPIC_API_KEY"
                .into()
        }
    }

    pub fn worker_settings(&self, credentials: Credentials) -> WorkerSettings {
        let nonzero = |v: u32| (v > 0).then_some(v);
        WorkerSettings {
            sandbox: SandboxConfig {
                image: self.worker_image.clone(),
                network: self.network.clone(),
                memory_mib: nonzero(self.memory_mib),
                cpus: (self.cpus > 0.0).then_some(self.cpus),
                pids_limit: (self.pids_limit > 0).then_some(self.pids_limit),
                tmpfs_size_mib: self.tmpfs_mib,
                read_only_rootfs: !self.writable_rootfs,
                cap_drop_all: !self.keep_capabilities,
                no_new_privileges: !self.allow_new_privileges,
                init: !self.no_init,
                ..SandboxConfig::default()
            },
            cli: CliSettings {
                model: self.default_model.clone(),
                max_retries: self.cli_max_retries,
                stream_idle_timeout: Duration::from_secs(self.stream_idle_timeout_secs),
                ..CliSettings::default()
            },
            credentials,
            instance_id: self.instance.clone(),
            start_timeout: Duration::from_secs(self.start_timeout_secs),
            silence_limit: Duration::from_secs(self.silence_limit_secs),
            warm_up_turns: self.warm_up_turns,
            ..WorkerSettings::default()
        }
    }

    /// The gateway's settings. A credentials file is written back to where it was read
    /// after each refresh, so that a restart starts from the newest refresh token.
    pub fn gateway_config(&self, credentials: &Credentials) -> crate::gateway::GatewayConfig {
        let file = match credentials {
            Credentials::CredentialsFile(_) => self.credentials_file.clone().or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| std::path::Path::new(&home).join(Credentials::FILE_IN_HOME))
            }),
            _ => None,
        };
        crate::gateway::GatewayConfig {
            upstream: self
                .upstream_url
                .clone()
                .unwrap_or_else(|| crate::gateway::DEFAULT_UPSTREAM.to_string()),
            broker: crate::gateway::BrokerConfig {
                token_url: self.oauth_token_url.clone(),
                write_back: file,
                ..crate::gateway::BrokerConfig::default()
            },
        }
    }

    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            policy: match self.policy {
                PolicyName::Reuse => ReusePolicy::Reuse {
                    max_uses: self.max_uses,
                    max_age: Duration::from_secs(self.max_age_secs),
                },
                PolicyName::Fresh => ReusePolicy::Fresh,
            },
            max_workers: self.max_workers,
            warm_default: self.warm,
            demand_window: Duration::from_secs(self.demand_window_secs),
            checkout_timeout: Duration::from_secs(self.checkout_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            hold_idle: Duration::from_secs(self.hold_idle_secs),
            parked_idle: Duration::from_secs(self.parked_idle_secs),
            takeover_idle: Duration::from_secs(self.takeover_idle_secs),
            ..PoolConfig::default()
        }
    }
}

/// Settings of `ccpool serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. A non-loopback address needs API keys (or
    /// --allow-unauthenticated-network).
    #[arg(long, env = "CCPOOL_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Client API keys, accepted as `x-api-key` or `Authorization: Bearer` (repeatable; in
    /// the environment, comma-separated). None: no authentication, loopback only.
    #[arg(long = "api-key", env = "CCPOOL_API_KEYS", value_delimiter = ',', value_parser = parse_secret)]
    pub api_keys: Vec<Secret>,
    /// Serve a non-loopback address without API keys (for a container whose port is
    /// published on the host's loopback only, as in compose.yaml).
    #[arg(long, env = "CCPOOL_ALLOW_UNAUTHENTICATED_NETWORK")]
    pub allow_unauthenticated_network: bool,
    /// Origins allowed by CORS (repeatable; in the environment, comma-separated). None:
    /// localhost origins.
    #[arg(
        long = "cors-origin",
        env = "CCPOOL_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// More host names clients may use in `Host` (repeatable; in the environment,
    /// comma-separated). Loopback names and the listen address are always allowed; on a
    /// loopback address any other `Host` (a DNS-rebinding page) gets a 421.
    #[arg(
        long = "allowed-host",
        env = "CCPOOL_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Fetch `http(s)` image URLs in requests and send them inline (off: such URLs get a
    /// 400). Clients can then make ccpool reach any address it can reach.
    #[arg(long, env = "CCPOOL_FETCH_REMOTE_IMAGES")]
    pub fetch_remote_images: bool,
    /// Log format.
    #[arg(long, env = "CCPOOL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Connections served at once; past it a new one gets a 503 (lowered to fit the file
    /// limit).
    #[arg(long, env = "CCPOOL_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers; also how long an idle kept-alive
    /// connection stays open.
    #[arg(long, env = "CCPOOL_HEADER_TIMEOUT_SECS", default_value_t = 30)]
    pub header_timeout_secs: u64,
    /// Seconds a request body may pause between two pieces.
    #[arg(long, env = "CCPOOL_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Seconds running requests get to finish at shutdown.
    #[arg(long, env = "CCPOOL_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// The largest request body accepted, in MiB.
    #[arg(long, env = "CCPOOL_MAX_BODY_MIB", default_value_t = 10)]
    pub max_body_mib: usize,
    /// OpenAI model names mapped to Claude models, as NAME=MODEL (repeatable; in the
    /// environment, comma-separated).
    #[arg(long = "model-alias", env = "CCPOOL_MODEL_ALIASES", value_delimiter = ',', value_parser = parse_alias)]
    pub model_aliases: Vec<(String, String)>,
    /// Seconds a session may stay idle before it ends.
    #[arg(long, env = "CCPOOL_SESSION_TTL_SECS", default_value_t = 1800)]
    pub session_ttl_secs: u64,
    /// Sessions at most.
    #[arg(long, env = "CCPOOL_MAX_SESSIONS", default_value_t = 16)]
    pub max_sessions: usize,
    /// Sessions at most for one API key (one owner).
    #[arg(long, env = "CCPOOL_MAX_SESSIONS_PER_KEY", default_value_t = 8)]
    pub max_sessions_per_key: usize,
    /// The MiB a session's workspace may hold, as far as the files API writes them.
    #[arg(long, env = "CCPOOL_SESSION_WORKSPACE_MIB", default_value_t = 1024)]
    pub session_workspace_mib: u64,
    /// A second request to a busy session: wait for its turn, or get 409 at once.
    #[arg(long, env = "CCPOOL_SESSION_BUSY", value_enum, default_value_t = BusyName::Wait)]
    pub session_busy: BusyName,
    /// Keep a session's workspace volume when the session ends.
    #[arg(long, env = "CCPOOL_KEEP_SESSION_VOLUMES")]
    pub keep_session_volumes: bool,
    /// Session workers started ahead, each on a fresh workspace volume, that new sessions
    /// claim (0: none; off with --keep-session-volumes or --session-restart adopt).
    #[arg(long, env = "CCPOOL_SESSION_PREWARM", default_value_t = 1)]
    pub session_prewarm: usize,
    /// At startup, remove what sessions of an earlier run left, or adopt their workspaces.
    #[arg(long, env = "CCPOOL_SESSION_RESTART", value_enum, default_value_t = RestartName::Remove)]
    pub session_restart: RestartName,
    /// Expose the model's thinking as `reasoning_content` in OpenAI answers (never in `content`).
    #[arg(long, env = "CCPOOL_OPENAI_REASONING_CONTENT")]
    pub openai_reasoning_content: bool,
    /// Responses API: how many stored responses are kept at most (the oldest go first).
    #[arg(long, env = "CCPOOL_RESPONSES_MAX", default_value_t = 10_000)]
    pub responses_max: usize,
    /// Responses API: the stored responses' total size at most, in MiB.
    #[arg(long, env = "CCPOOL_RESPONSES_MAX_MIB", default_value_t = 256)]
    pub responses_max_mib: usize,
    /// Responses API: seconds a stored response is kept.
    #[arg(long, env = "CCPOOL_RESPONSES_TTL_SECS", default_value_t = 21600)]
    pub responses_ttl_secs: u64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// What a second request to a busy session gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BusyName {
    Wait,
    Reject,
}

/// What happens to an earlier run's sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartName {
    Remove,
    Adopt,
}

fn parse_alias(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, model)) if !name.trim().is_empty() && !model.trim().is_empty() => {
            Ok((name.trim().to_string(), model.trim().to_string()))
        }
        _ => Err(format!("expected NAME=MODEL, got {s:?}")),
    }
}

impl ServeArgs {
    /// Checks what only the whole configuration tells.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.runtime.validate()?;
        if !self.listen.ip().is_loopback()
            && self.api_keys.is_empty()
            && !self.allow_unauthenticated_network
        {
            return Err(ConfigError(format!(
                "refusing to listen on {} without API keys: anyone on the network could use your subscription. \
                 Set --api-key (CCPOOL_API_KEYS), listen on 127.0.0.1, or, for a container whose port is published \
                 on the host's loopback only, pass --allow-unauthenticated-network",
                self.listen
            )));
        }
        Ok(())
    }

    /// The accept loop's limits, with the connection cap fitted to `file_limit`.
    pub fn listener_limits(&self, file_limit: u64) -> crate::listener::Limits {
        crate::listener::Limits {
            max_connections: crate::listener::connections_for_file_limit(
                file_limit,
                self.max_connections,
            ),
            header_read: Duration::from_secs(self.header_timeout_secs.max(1)),
            body_read: Duration::from_secs(self.body_timeout_secs.max(1)),
            ..crate::listener::Limits::default()
        }
    }

    pub fn session_config(&self) -> crate::sessions::SessionConfig {
        use crate::sessions::{BusyPolicy, RestartPolicy, SessionConfig};
        SessionConfig {
            ttl: Duration::from_secs(self.session_ttl_secs),
            max_sessions: self.max_sessions,
            max_sessions_per_owner: self.max_sessions_per_key,
            workspace_quota_bytes: self.session_workspace_mib * 1024 * 1024,
            on_busy: match self.session_busy {
                BusyName::Wait => BusyPolicy::Wait,
                BusyName::Reject => BusyPolicy::Reject,
            },
            keep_volumes: self.keep_session_volumes,
            on_restart: match self.session_restart {
                RestartName::Remove => RestartPolicy::Remove,
                RestartName::Adopt => RestartPolicy::Adopt,
            },
            prewarm: self.session_prewarm,
        }
    }

    pub fn api_settings(&self) -> crate::http::ApiSettings {
        let mut api = crate::http::ApiSettings {
            max_body_bytes: self.max_body_mib * 1024 * 1024,
            ..crate::http::ApiSettings::default()
        };
        api.openai.model_aliases = self.model_aliases.iter().cloned().collect();
        api.api_keys = self.api_keys.clone();
        api.image_fetcher = self
            .fetch_remote_images
            .then(|| crate::images::ImageFetcher::new(5 * 1024 * 1024, Duration::from_secs(10)));
        api.cors_origins = self.cors_origins.clone();
        api.listen = Some(self.listen);
        api.allowed_hosts = self.allowed_hosts.clone();
        api.openai.reasoning_content = self.openai_reasoning_content;
        api.responses_store = crate::responses::StoreLimits {
            max_responses: self.responses_max,
            max_bytes: self.responses_max_mib * 1024 * 1024,
            ttl: Duration::from_secs(self.responses_ttl_secs),
        };
        api
    }
}

/// The log filter: `RUST_LOG` (default `info`), except that the Docker client never logs
/// below `info`: at `debug` it prints request bodies, and an exec's body carries the
/// workers' credentials in its environment.
pub fn log_filter(spec: Option<&str>) -> tracing_subscriber::EnvFilter {
    let filter = spec
        .and_then(|s| tracing_subscriber::EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    filter.add_directive("bollard=info".parse().expect("a valid directive"))
}

/// Whether a flag holds a secret (its value is never printed).
fn is_secret_flag(long: &str) -> bool {
    matches!(long, "api-key" | "oauth-token" | "anthropic-api-key")
        || long.contains("token")
        || long.contains("secret")
        || long.contains("password")
}

/// The effective configuration of a parsed subcommand as TOML that can be pasted into
/// `ccpool.toml`: every setting by its flag's long name, with where its value came from.
/// Secrets are never printed: a secret that is set appears as a comment, masked.
pub fn to_toml(command: &clap::Command, matches: &clap::ArgMatches, credentials: &str) -> String {
    use clap::parser::ValueSource;
    let quote = |v: &str| toml::Value::String(v.to_string()).to_string();
    let scalar = |v: &str| {
        if v.parse::<i64>().is_ok()
            || v.parse::<f64>().is_ok_and(f64::is_finite)
            || v == "true"
            || v == "false"
        {
            v.to_string()
        } else {
            quote(v)
        }
    };
    let mut out = format!(
        "# ccpool configuration (paste into ccpool.toml; flags > environment > file > defaults)\n\
         # credentials: {credentials}\n"
    );
    for arg in command.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if matches!(long, "help" | "version" | "config") {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment or file",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        let key = long.replace('-', "_");
        let is_list = matches!(arg.get_action(), clap::ArgAction::Append);
        let line = if is_secret_flag(long) {
            if values.is_empty() {
                format!("# {key} = (not set)")
            } else {
                format!("# {key} = \"***\"  (set, masked; {source})")
            }
        } else if is_list {
            let items: Vec<String> = values.iter().map(|v| quote(v)).collect();
            format!("{key} = [{}]  # {source}", items.join(", "))
        } else if let Some(value) = values.first() {
            format!("{key} = {}  # {source}", scalar(value))
        } else if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            format!("{key} = false  # {source}")
        } else {
            format!("# {key} = (not set)")
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Reads a TOML configuration file into the environment variables the flags read, for
/// every key not already set in the environment: flags win over the environment, which wins
/// over the file, which wins over the defaults. `known` maps each flag's long name to its
/// environment variable. Unknown keys are an error.
pub fn file_settings(
    toml_text: &str,
    known: &std::collections::HashMap<String, String>,
    env_has: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, ConfigError> {
    let table: toml::Table = toml::from_str(toml_text)
        .map_err(|e| ConfigError(format!("the configuration file: {e}")))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        let Some(env) = known.get(&name) else {
            return Err(ConfigError(format!(
                "the configuration file has an unknown key {key:?}"
            )));
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    other => Err(ConfigError(format!(
                        "{key}: list items must be strings, not {other}"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => return Err(ConfigError(format!("{key}: unsupported value {other}"))),
        };
        if !env_has(env) {
            out.push((env.clone(), text));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    #[test]
    fn defaults_validate_and_map_to_hardened_settings() {
        let cli = Cli::try_parse_from(["ccpool"]).unwrap();
        cli.runtime.validate().unwrap();
        let settings = cli.runtime.worker_settings(Credentials::None);
        assert_eq!(
            settings.sandbox,
            SandboxConfig {
                network: crate::network::INTERNAL.to_string(),
                ..SandboxConfig::default()
            }
        );
        let gateway = cli.runtime.gateway_config(&Credentials::None);
        assert_eq!(gateway.upstream, crate::gateway::DEFAULT_UPSTREAM);
        assert_eq!(gateway.broker.write_back, None);
        assert!(matches!(
            cli.runtime.pool_config().policy,
            ReusePolicy::Reuse { max_uses: 100, .. }
        ));
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            vec!["ccpool", "--max-workers", "0"],
            vec!["ccpool", "--warm", "9"],
            vec!["ccpool", "--instance", "a b"],
            vec!["ccpool", "--cpus=-1"],
            vec!["ccpool", "--egress-allow", "pypi.org"],
            vec!["ccpool", "--upstream-url", "api.anthropic.com"],
        ] {
            let cli = Cli::try_parse_from(&args).unwrap();
            assert!(cli.runtime.validate().is_err(), "{args:?}");
        }
    }

    #[test]
    fn serve_flags_build_the_api_settings() {
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Serve::try_parse_from([
            "ccpool",
            "--model-alias",
            "gpt-4o=claude-sonnet-4-5",
            "--model-alias",
            "o3=claude-opus-4-1",
            "--max-body-mib",
            "2",
        ])
        .unwrap();
        let api = cli.serve.api_settings();
        assert_eq!(api.max_body_bytes, 2 * 1024 * 1024);
        assert_eq!(
            api.openai.model_aliases.get("o3").map(String::as_str),
            Some("claude-opus-4-1")
        );
        assert_eq!(api.openai.model_aliases.len(), 2);
        assert!(Serve::try_parse_from(["ccpool", "--model-alias", "broken"]).is_err());
    }

    #[test]
    fn a_file_fills_in_what_the_environment_does_not_set() {
        let known = std::collections::HashMap::from([
            ("max-workers".to_string(), "CCPOOL_MAX_WORKERS".to_string()),
            ("warm".to_string(), "CCPOOL_WARM".to_string()),
            ("api-key".to_string(), "CCPOOL_API_KEYS".to_string()),
            (
                "writable-rootfs".to_string(),
                "CCPOOL_WRITABLE_ROOTFS".to_string(),
            ),
        ]);
        let text = "max_workers = 5\nwarm = 3\napi-key = [\"a\", \"b\"]\nwritable_rootfs = true\n";
        let set = file_settings(text, &known, |env| env == "CCPOOL_WARM").unwrap();
        let get = |k: &str| set.iter().find(|(e, _)| e == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CCPOOL_MAX_WORKERS"), Some("5"));
        assert_eq!(
            get("CCPOOL_WARM"),
            None,
            "the environment wins over the file"
        );
        assert_eq!(get("CCPOOL_API_KEYS"), Some("a,b"));
        assert_eq!(get("CCPOOL_WRITABLE_ROOTFS"), Some("true"));
        assert!(file_settings("surprise = 1", &known, |_| false).is_err());
        assert!(file_settings("max_workers = [1]", &known, |_| false).is_err());
        assert!(file_settings("not toml at all ===", &known, |_| false).is_err());
    }

    #[test]
    fn flags_win_over_the_environment() {
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            serve: ServeArgs,
        }
        // A variable no other test reads.
        // SAFETY: tests in this binary only read this variable here.
        unsafe { std::env::set_var("CCPOOL_MAX_SESSIONS", "7") };
        let from_env = Serve::try_parse_from(["ccpool"]).unwrap();
        let from_flag = Serve::try_parse_from(["ccpool", "--max-sessions", "9"]).unwrap();
        unsafe { std::env::remove_var("CCPOOL_MAX_SESSIONS") };
        assert_eq!(from_env.serve.max_sessions, 7);
        assert_eq!(from_flag.serve.max_sessions, 9);
    }

    #[test]
    fn a_network_address_needs_keys_or_an_explicit_opt_out() {
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parse = |args: &[&str]| Serve::try_parse_from(args).unwrap().serve;
        assert!(parse(&["ccpool"]).validate().is_ok());
        let open = parse(&["ccpool", "--listen", "0.0.0.0:8787"])
            .validate()
            .unwrap_err();
        assert!(open.to_string().contains("without API keys"), "{open}");
        assert!(
            parse(&["ccpool", "--listen", "0.0.0.0:8787", "--api-key", "k"])
                .validate()
                .is_ok()
        );
        assert!(
            parse(&[
                "ccpool",
                "--listen",
                "0.0.0.0:8787",
                "--allow-unauthenticated-network"
            ])
            .validate()
            .is_ok()
        );
        let shown = format!(
            "{:?}",
            parse(&[
                "ccpool",
                "--api-key",
                "very-secret",
                "--oauth-token",
                "tok-secret"
            ])
        );
        assert!(
            !shown.contains("very-secret") && !shown.contains("tok-secret"),
            "{shown}"
        );
    }

    #[test]
    fn the_printed_configuration_is_toml_that_round_trips_with_secrets_masked() {
        use clap::{CommandFactory, FromArgMatches};
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let matches = Serve::command()
            .try_get_matches_from([
                "ccpool",
                "--api-key",
                "very-secret",
                "--oauth-token",
                "tok-secret",
                "--max-workers",
                "5",
                "--cors-origin",
                "https://a.example",
                "--writable-rootfs",
            ])
            .unwrap();
        let serve = Serve::from_arg_matches(&matches).unwrap();
        let text = to_toml(
            &Serve::command(),
            &matches,
            &serve.serve.runtime.credentials_source(),
        );
        assert!(
            !text.contains("very-secret") && !text.contains("tok-secret"),
            "{text}"
        );
        assert!(
            text.contains("# credentials: oauth-token from --oauth-token"),
            "{text}"
        );
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["max_workers"].as_integer(), Some(5));
        assert_eq!(table["writable_rootfs"].as_bool(), Some(true));
        assert_eq!(table["no_init"].as_bool(), Some(false));
        assert_eq!(table["listen"].as_str(), Some("127.0.0.1:8787"));
        assert_eq!(
            table["cors_origin"].as_array().unwrap()[0].as_str(),
            Some("https://a.example")
        );
        assert!(!table.contains_key("api_key") && !table.contains_key("oauth_token"));
        // What it prints is what `ccpool.toml` accepts.
        let known: std::collections::HashMap<String, String> = Serve::command()
            .get_arguments()
            .filter_map(|a| {
                Some((
                    a.get_long()?.to_string(),
                    a.get_env()?.to_str()?.to_string(),
                ))
            })
            .collect();
        let settings = file_settings(&text, &known, |_| false).unwrap();
        assert!(
            settings
                .iter()
                .any(|(k, v)| k == "CCPOOL_MAX_WORKERS" && v == "5")
        );
    }

    #[test]
    fn the_docker_client_never_logs_request_bodies() {
        for spec in [None, Some("trace"), Some("bollard=trace,debug")] {
            let filter = log_filter(spec).to_string();
            assert!(filter.contains("bollard=info"), "{spec:?}: {filter}");
            assert!(!filter.contains("bollard=trace"), "{spec:?}: {filter}");
        }
    }

    #[test]
    fn flags_relax_the_sandbox() {
        let cli = Cli::try_parse_from([
            "ccpool",
            "--writable-rootfs",
            "--memory-mib",
            "0",
            "--network",
            "none",
            "--policy",
            "fresh",
        ])
        .unwrap();
        let s = cli.runtime.worker_settings(Credentials::None).sandbox;
        assert!(!s.read_only_rootfs);
        assert_eq!(s.memory_mib, None);
        assert_eq!(s.network, "none");
        assert_eq!(cli.runtime.pool_config().policy, ReusePolicy::Fresh);
    }
}
