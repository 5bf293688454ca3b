//! ccpool serves the Anthropic Messages, OpenAI Chat Completions and OpenAI Responses APIs with Claude Code CLI
//! processes running in sandboxed, pooled, pre-warmed Docker containers.
//!
//! Layout (see ARCHITECTURE.md for the code map and invariants):
//! - `domain`: serde-free request and response types every layer shares.
//! - `anthropic`: the Messages API dialect (wire types, translation, handlers).
//! - `dialect`: what a dialect is (a translator: wire request, `to_chat`, reply, error shape).
//! - `tagged`: reading the dialects' tagged and string-or-list wire values with errors that name the path.
//! - `chat`: the dialect-independent business function: session or pool, and the stream stage.
//! - `failure`: the status and kind of every failure, decided once for both dialects.
//! - `openai`: the Chat Completions dialect.
//! - `responses`: the Responses API dialect and its store of responses.
//! - `cli`: the CLI's argv, stdin lines and stream-json output (the only module that knows them).
//! - `runtime`: the container-engine seam; `docker` implements it with bollard.
//! - `sandbox`: hardening settings turned into container specs.
//! - `credentials`: upstream credentials and how they reach a worker.
//! - `worker`: one container with one long-lived CLI process; drives turns.
//! - `pool`: warm workers per launch profile, checked out per request, reused or retired.
//! - `sessions`: one sandbox per conversation.
//! - `images`: remote images fetched and inlined, when enabled.
//! - `metrics`: Prometheus metrics.
//! - `config`: the service's typed configuration; `doctor`: set-up checks.
//! - `http`: the HTTP surface: `app()` mounts every route; the one chat endpoint, generic over
//!   the dialect; the session API, models, health and status; request ids, client auth, CORS.
//! - `listener`: the accept loop (time limits, a connection cap, the file limit).
//! - `memory`: the allocator (jemalloc, which gives freed memory back) and RSS readings.

pub mod anthropic;
pub mod chat;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod dialect;
pub mod docker;
pub mod doctor;
pub mod domain;
pub mod failure;
pub mod gateway;
pub mod http;
pub mod images;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod network;
pub mod openai;
pub mod pool;
pub mod responses;
pub mod runtime;
pub mod sandbox;
pub mod sessions;
pub mod tagged;
pub mod worker;

#[cfg(test)]
mod fake;
