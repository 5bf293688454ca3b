//! The `ccpool` command: parse the configuration, start tracing, build the pool, serve.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use ccpool::config::ServeArgs;
use ccpool::credentials::Credentials;
use ccpool::docker::DockerRuntime;
use ccpool::domain::LaunchProfile;
use ccpool::pool::WarmPool;
use ccpool::server::{AppState, app};

#[derive(Parser)]
#[command(
    version,
    about = "Claude Code CLI workers in Docker behind the Anthropic and OpenAI APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.runtime.validate()?;
    let credentials = Credentials::from_env();
    tracing::info!(credentials = credentials.kind(), "credentials found");
    let runtime = DockerRuntime::connect()
        .await
        .context("connecting to Docker")?;
    let image = &args.runtime.worker_image;
    if !runtime.image_exists(image).await? {
        anyhow::bail!("the worker image {image} is missing: build it with images/build.sh");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let pool = WarmPool::start(
        Arc::new(runtime),
        args.runtime.worker_settings(credentials),
        args.runtime.pool_config(),
        LaunchProfile::default(),
    )
    .await?;
    let sessions = ccpool::sessions::Sessions::start(pool.clone(), args.session_config()).await?;
    tracing::info!(listen = %args.listen, "serving");
    let served = axum::serve(
        listener,
        app(AppState {
            pool: pool.clone(),
            sessions: sessions.clone(),
            api: args.api_settings(),
        }),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await;
    pool.shutdown(Duration::from_secs(args.shutdown_grace_secs))
        .await;
    served.context("serving HTTP")
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
