//! The `ccpool` command: read the configuration (file, environment, flags), start tracing,
//! and serve, print the configuration, or check the set-up.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use ccpool::config::{LogFormat, ServeArgs, file_settings};
use ccpool::docker::DockerRuntime;
use ccpool::domain::LaunchProfile;
use ccpool::gateway::{Gateway, RelayLink, with_retry_after};
use ccpool::http::{AppState, app};
use ccpool::pool::WarmPool;
use ccpool::runtime::ContainerRuntime;

#[derive(Parser)]
#[command(
    version,
    about = "Claude Code CLI workers in Docker behind the Anthropic and OpenAI APIs"
)]
struct Cli {
    /// A TOML configuration file (keys are the flags' long names). Default: ./ccpool.toml
    /// when it exists.
    #[arg(long, global = true, env = "CCPOOL_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Print the effective configuration, secrets masked.
    Config(ServeArgs),
    /// Check Docker, the worker image, the credentials and the CLI, and say what to fix.
    Doctor(ServeArgs),
}

/// Errors end the process with one readable line (the chain of causes), never a Debug dump
/// or a backtrace, whatever `RUST_BACKTRACE` says.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    load_config_file()?;
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let (Command::Serve(args) | Command::Config(args) | Command::Doctor(args)) = &cli.command;
    let filter = ccpool::config::log_filter(std::env::var("RUST_LOG").ok().as_deref());
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Config(args) => {
            args.validate()?;
            let (_, sub) = matches.subcommand().expect("a subcommand was parsed");
            let command = Cli::command();
            let config = command
                .find_subcommand("config")
                .expect("config is a subcommand");
            print!(
                "{}",
                ccpool::config::to_toml(config, sub, &args.runtime.credentials_source())
            );
            Ok(())
        }
        Command::Doctor(args) => runtime.block_on(ccpool::doctor::run(&args)),
    }
}

/// Applies the configuration file before anything else runs (no thread exists yet): each key
/// becomes the environment variable its flag reads, unless the environment sets it already.
fn load_config_file() -> anyhow::Result<()> {
    // An empty CCPOOL_ variable (as compose passes an unset one) means unset.
    for (name, value) in std::env::vars_os() {
        if value.is_empty() && name.to_string_lossy().starts_with("CCPOOL_") {
            // SAFETY: called first thing in `main`, before any thread is started.
            unsafe { std::env::remove_var(name) };
        }
    }
    let args: Vec<String> = std::env::args().collect();
    let named = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
        })
        .or_else(|| std::env::var("CCPOOL_CONFIG").ok());
    let path = match named {
        Some(path) => std::path::PathBuf::from(path),
        None if std::path::Path::new("ccpool.toml").exists() => "ccpool.toml".into(),
        None => return Ok(()),
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("serve is a subcommand");
    let known = serve
        .get_arguments()
        .filter_map(|a| {
            Some((
                a.get_long()?.to_string(),
                a.get_env()?.to_str()?.to_string(),
            ))
        })
        .collect();
    for (env, value) in file_settings(&text, &known, |env| std::env::var_os(env).is_some())? {
        // SAFETY: called first thing in `main`, before any thread is started.
        unsafe { std::env::set_var(env, value) };
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.validate()?;
    let credentials = args.runtime.credentials()?;
    match credentials {
        ccpool::credentials::Credentials::None if args.runtime.upstream_url.is_none() => {
            tracing::warn!(
                "no credentials for the workers: set CLAUDE_CODE_OAUTH_TOKEN (a token from \
                 `claude setup-token`) or ANTHROPIC_API_KEY, or pass --credentials-file; until \
                 then /ready answers 503 and requests get a 503 that says so"
            );
        }
        _ => tracing::info!(
            credentials = credentials.kind(),
            source = %args.runtime.credentials_source(),
            "credentials found"
        ),
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if let Some(warning) = credentials.expiry_warning(now_ms) {
        tracing::warn!("{warning}");
    }
    let (runtime, endpoint) = DockerRuntime::discover()
        .await
        .context("connecting to Docker")?;
    tracing::info!(endpoint = %endpoint, "Docker found");
    let image = &args.runtime.worker_image;
    if !runtime.image_exists(image).await? {
        anyhow::bail!("the worker image {image} is missing: build it with images/build.sh");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;

    // The workers' network, and the relay: their only way to the model API.
    let network = ccpool::network::prepare(
        &runtime,
        &args.runtime.network,
        &args.runtime.instance,
        args.runtime.relay_listen,
        args.runtime.relay_url.clone(),
    )
    .await
    .context("preparing the workers' network")?;
    tracing::info!("{}", network.summary);
    let gateway = Gateway::new(&credentials, args.runtime.gateway_config(&credentials))?;
    let relay_listener = tokio::net::TcpListener::bind(network.relay_listen)
        .await
        .with_context(|| format!("binding the relay to {}", network.relay_listen))?;
    let relay_addr = gateway.serve(relay_listener)?;
    let relay_url = network
        .relay_url
        .clone()
        .unwrap_or_else(|| format!("http://{relay_addr}"));
    tracing::info!(listen = %relay_addr, url = %relay_url, "relay serving");
    let mut settings = args.runtime.worker_settings(credentials);
    settings.sandbox.network = network.mode.clone();
    settings.relay = Some(RelayLink {
        url: relay_url,
        gateway: gateway.clone(),
    });
    let pool = WarmPool::start(
        Arc::new(runtime.clone()),
        settings,
        args.runtime.pool_config(),
        LaunchProfile::default(),
    )
    .await?;
    let sessions = ccpool::sessions::Sessions::start(pool.clone(), args.session_config()).await?;
    tracing::info!(listen = %args.listen, "serving");

    // On SIGINT or SIGTERM: stop accepting; running streams get the grace period, then the
    // pool interrupts what is left and removes every container.
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let signal = tokio_util::sync::CancellationToken::new();
    let mut api = args.api_settings();
    api.docker_endpoint = Some(endpoint);
    let file_limit = ccpool::listener::raise_file_limit().unwrap_or(1024);
    let mut limits = args.listener_limits(file_limit);
    limits.refused_peers = network.worker_subnets.clone();
    tracing::info!(
        file_limit,
        max_connections = limits.max_connections,
        "connection limits"
    );
    let router = with_retry_after(
        app(AppState::new(pool.clone(), sessions.clone(), api)),
        gateway.clone(),
    );
    let server = ccpool::listener::serve(listener, router, limits, signal.clone());
    let mut server = std::pin::pin!(server);
    tokio::select! {
        _ = &mut server => {}
        _ = shutdown_signal() => {
            signal.cancel();
            if tokio::time::timeout(grace, &mut server).await.is_err() {
                tracing::warn!("requests still running after {grace:?}: interrupting them");
            }
        }
    }
    sessions.shutdown().await;
    pool.shutdown(Duration::from_secs(10)).await;
    gateway.shutdown().await;
    ccpool::network::remove(&runtime, &network).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
