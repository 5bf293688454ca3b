//! ccpool serves the Anthropic Messages and OpenAI Chat Completions APIs with Claude Code CLI
//! processes running in sandboxed, pooled, pre-warmed Docker containers.
//!
//! Layout (see ARCHITECTURE.md for the code map and invariants):
//! - `domain`: serde-free request and response types every layer shares.
//! - `anthropic`: the Messages API dialect (wire types, translation, handlers).
//! - `chat`: the dialect-independent business function over the pool.
//! - `failure`: the status and kind of every failure, decided once for both dialects.
//! - `openai`: the Chat Completions dialect; `models`: the model list in both shapes.
//! - `cli`: the CLI's argv, stdin lines and stream-json output (the only module that knows them).
//! - `runtime`: the container-engine seam; `docker` implements it with bollard.
//! - `sandbox`: hardening settings turned into container specs.
//! - `credentials`: upstream credentials and how they reach a worker.
//! - `worker`: one container with one long-lived CLI process; drives turns.
//! - `pool`: warm workers per launch profile, checked out per request, reused or retired.
//! - `sessions`, `session_routes`: one sandbox per conversation, and its HTTP API.
//! - `images`: remote images fetched and inlined, when enabled.
//! - `health`, `metrics`: readiness, status and Prometheus metrics.
//! - `config`: the service's typed configuration; `doctor`: set-up checks.
//! - `server`: the HTTP surface (request ids, client auth, CORS) that mounts all of the above.

pub mod anthropic;
pub mod chat;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod docker;
pub mod doctor;
pub mod domain;
pub mod failure;
pub mod health;
pub mod images;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod pool;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod session_routes;
pub mod sessions;
pub mod worker;

#[cfg(test)]
mod fake;
