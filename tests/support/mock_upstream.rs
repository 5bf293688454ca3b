//! A mock of the Anthropic Messages API (`POST /v1/messages`) for integration
//! tests and benchmarks.
//!
//! The real Claude Code CLI is pointed at it with
//! `ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`. It streams SSE exactly like the
//! real API and records every request it receives.
//!
//! The reply is chosen by keywords in the text of the last user message:
//! `[[think]]`, `[[tool]]`, `[[max]]`, `[[long]]`, `[[slow]]`, `[[midfail]]`,
//! `[[e400]]`, `[[e401]]`, `[[e403]]`, `[[e429]]`, `[[e500]]`, `[[e529]]`, and
//! `[[bash:COMMAND]]` (the model calls the Bash tool with COMMAND).
//! Without a keyword the reply is `"Echo: " + PROMPT`, PROMPT being the last
//! text block of the last user message. A last user message carrying
//! `tool_result` blocks is answered with `"Tool said: "` and every result in
//! order, joined with `" | "` (`"[error] "` before a failed one, `"[image]"`
//! for an image); `[[slow]]` and `[[long]]` in a tool result pace that answer as they would
//! a prompt.
//!
//! `[[tool]]` makes the model run `TOOL_COMMAND` with the CLI's Bash tool, or the command
//! given as `[[cmd:…]]` (up to the last `]]`).
//!
//! Client-defined tools (offered as `mcp__client__NAME` by the CLI): `[[call]]`
//! calls the first one, `[[call2]]` makes two parallel calls (the first two
//! tools, or the first twice), `[[textcall]]` writes a sentence and then calls
//! the first one (`[[use:NAME]]` calls the client's tool NAME instead). The input is
//! `[[input:{…}]]` from the prompt, else `{"q": PROMPT}` (and `{"q": PROMPT, "n": 2}` for
//! the second call).
//!
//! Every answer carries subscription-style rate-limit headers (`RATELIMIT_HEADERS`).
//! `POST /v1/oauth/token` is a mock OAuth token endpoint (refresh grant): it answers after
//! `TOKEN_DELAY` with `sk-ant-oat01-refreshed-N` / `sk-ant-ort01-rotated-N` (N counts its
//! calls), or 400 `invalid_grant` for the refresh token `sk-ant-ort01-bad`.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::serve::ListenerExt;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Delay before each content_block_delta in the `[[slow]]` scenario.
pub const SLOW_DELTA_DELAY: Duration = Duration::from_millis(50);
/// Number of text deltas in the `[[long]]` scenario.
pub const LONG_DELTAS: usize = 400;
/// Number of text deltas sent before the connection is cut in `[[midfail]]`.
pub const MIDFAIL_DELTAS: usize = 3;
/// How long after its last bytes `[[midfail]]` cuts the connection.
pub const MIDFAIL_PAUSE: Duration = Duration::from_millis(200);
/// Text of the text block preceding the tool call in `[[tool]]`.
pub const TOOL_PREAMBLE: &str = "I'll run a command.";
/// Command the mock asks the CLI to run in `[[tool]]`.
pub const TOOL_COMMAND: &str = "echo tool-ran";
/// Text of the text block preceding the client tool call in `[[textcall]]`.
pub const CALL_PREAMBLE: &str = "Let me check.";
/// How the CLI names the client's tools to the model.
pub const CLIENT_TOOL_PREFIX: &str = "mcp__client__";
/// The rate-limit headers on every answer.
pub const RATELIMIT_HEADERS: [(&str, &str); 2] = [
    ("anthropic-ratelimit-unified-status", "allowed"),
    ("anthropic-ratelimit-unified-5h-utilization", "0.42"),
];
/// How long the mock token endpoint takes to answer.
pub const TOKEN_DELAY: Duration = Duration::from_millis(300);
/// Thinking deltas of the `[[think]]` scenario.
pub const THINKING_DELTAS: [&str; 2] = ["Let me think ", "about this carefully."];
/// Signature of the thinking block of the `[[think]]` scenario.
pub const THINKING_SIGNATURE: &str = "EqQBCkYIBxgCKkBtb2NrLXNpZ25hdHVyZS1mb3ItdGVzdHM=";

const MAX_BODY_BYTES: usize = 512 * 1024 * 1024;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Recorded requests
// ---------------------------------------------------------------------------

/// One request as it reached the mock.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// Header names are lowercased.
    pub headers: Vec<(String, String)>,
    /// `Value::Null` when the body is empty or not JSON.
    pub body: serde_json::Value,
}

impl RecordedRequest {
    /// First value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    /// `true` for `POST /v1/messages` (any query).
    pub fn is_message_request(&self) -> bool {
        self.method == "POST" && self.path_only() == "/v1/messages"
    }

    /// `system` as a string, or its text blocks joined with "\n".
    pub fn system_text(&self) -> String {
        content_text(self.body.get("system").unwrap_or(&Value::Null))
    }

    /// Text of the text blocks of the last message with role "user", joined
    /// with "\n" (the content may be a string or a list of blocks).
    pub fn last_user_text(&self) -> String {
        self.last_user_message()
            .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
            .unwrap_or_default()
    }

    /// The prompt the mock echoes: the last text block of the last user
    /// message that is not a `<system-reminder>` (falling back to the last
    /// text block at all).
    pub fn last_user_prompt(&self) -> String {
        let Some(content) = self.last_user_message().and_then(|m| m.get("content")) else {
            return String::new();
        };
        match content {
            Value::String(s) => strip_system_reminders(s),
            Value::Array(blocks) => {
                let texts: Vec<&str> = blocks.iter().filter_map(text_of_text_block).collect();
                texts
                    .iter()
                    .rev()
                    .find(|t| !t.trim_start().starts_with("<system-reminder>"))
                    .or(texts.last())
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            }
            _ => String::new(),
        }
    }

    /// Whether the request offers the model a tool of this name.
    pub fn offers_tool(&self, name: &str) -> bool {
        self.body
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|tools| {
                tools
                    .iter()
                    .any(|t| t.get("name").and_then(Value::as_str) == Some(name))
            })
    }

    /// Text of the content of the last `tool_result` block of the last user
    /// message, if that message carries one, without the `<system-reminder>`
    /// sections the CLI appends to it.
    pub fn last_user_tool_result(&self) -> Option<String> {
        let blocks = self.last_user_message()?.get("content")?.as_array()?;
        blocks
            .iter()
            .rev()
            .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| {
                strip_system_reminders(&content_text(b.get("content").unwrap_or(&Value::Null)))
            })
    }

    /// Every `tool_result` block of the last user message, in order: its
    /// tool-use id, whether it is an error, and its text without the
    /// `<system-reminder>` sections the CLI appends (an image is `"[image]"`).
    pub fn tool_results(&self) -> Vec<(String, bool, String)> {
        let Some(blocks) = self
            .last_user_message()
            .and_then(|m| m.get("content"))
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| {
                let content = b.get("content").unwrap_or(&Value::Null);
                let text = match content {
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                            Some("text") => {
                                p.get("text").and_then(Value::as_str).map(str::to_string)
                            }
                            Some("image") => Some("[image]".to_string()),
                            _ => None,
                        })
                        .map(|t| strip_system_reminders(&t).trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    other => strip_system_reminders(&content_text(other))
                        .trim()
                        .to_string(),
                };
                (
                    b.get("tool_use_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    b.get("is_error").and_then(Value::as_bool) == Some(true),
                    text,
                )
            })
            .collect()
    }

    /// The client-defined tools the request offers (`mcp__client__…`), in order.
    pub fn client_tools(&self) -> Vec<Value> {
        self.body
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter(|t| {
                        t.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.starts_with(CLIENT_TOOL_PREFIX))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The whole body serialized (for "contains no trace of X" checks).
    pub fn all_text(&self) -> String {
        self.body.to_string()
    }

    /// The `messages` array (empty when absent).
    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// The conversation as (role, text) pairs, without what the Claude CLI adds of its own:
    /// `system` entries, `<system-reminder>` blocks, and its notes of local commands
    /// (`/clear`, `/model`). Text blocks of one message are joined.
    pub fn turns(&self) -> Vec<(String, String)> {
        self.messages()
            .iter()
            .filter(|m| m["role"] != "system")
            .map(|m| {
                let text = match &m["content"] {
                    Value::String(s) => s.clone(),
                    blocks => blocks
                        .as_array()
                        .map(|b| b.as_slice())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|b| b["text"].as_str())
                        .filter(|t| {
                            !t.starts_with("<system-reminder>")
                                && !t.starts_with("<local-command")
                                && !t.starts_with("<command-name>")
                        })
                        .collect(),
                };
                (m["role"].as_str().unwrap_or_default().to_string(), text)
            })
            .collect()
    }

    /// The `model` field, if any.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// `true` when the body has `"stream": true`.
    pub fn is_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    fn last_user_message(&self) -> Option<&Value> {
        self.body
            .get("messages")?
            .as_array()?
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    }
}

fn text_of_text_block(block: &Value) -> Option<&str> {
    if block.get("type").and_then(Value::as_str) == Some("text") {
        block.get("text").and_then(Value::as_str)
    } else {
        None
    }
}

/// Removes the `<system-reminder>…</system-reminder>` sections of a text (and
/// then trims it); a text without any is returned unchanged.
pub fn strip_system_reminders(text: &str) -> String {
    const OPEN: &str = "<system-reminder>";
    const CLOSE: &str = "</system-reminder>";
    if !text.contains(OPEN) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        match rest[start..].find(CLOSE) {
            Some(end) => rest = &rest[start + end + CLOSE.len()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// A content value (string or block list) as text: the string itself, or the
/// text blocks joined with "\n".
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(text_of_text_block)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    /// Number of recorded `POST /v1/messages` requests.
    message_count: watch::Sender<usize>,
    next_request: AtomicU64,
    next_message: AtomicU64,
    /// Calls of the mock token endpoint.
    token_calls: AtomicU64,
    /// When false, requests are recorded with `body: Value::Null`.
    keep_bodies: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, mut req: RecordedRequest) {
        let is_message = req.is_message_request();
        if !self.keep_bodies.load(Ordering::Relaxed) {
            req.body = Value::Null;
        }
        let mut log = self.lock();
        log.push(req);
        if is_message {
            // Updated under the lock so that a waiter never sees a count
            // ahead of the log.
            self.message_count.send_modify(|c| *c += 1);
        }
    }
}

/// A mock Anthropic Messages API listening on 127.0.0.1.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Binds 127.0.0.1:0 and serves in a background tokio task.
    pub async fn start() -> MockUpstream {
        Self::start_on("127.0.0.1:0").await
    }

    /// Binds `addr` (e.g. `0.0.0.0:0` for a ccpool container to reach it through the host's
    /// gateway) and serves in a background tokio task.
    pub async fn start_on(addr: &str) -> MockUpstream {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("mock upstream: bind");
        let addr = listener.local_addr().expect("mock upstream: local_addr");
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let (message_count, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            message_count,
            next_request: AtomicU64::new(1),
            next_message: AtomicU64::new(1),
            token_calls: AtomicU64::new(0),
            keep_bodies: AtomicBool::new(true),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = shutdown_rx.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!("mock upstream: server error: {e}");
            }
        });
        MockUpstream {
            addr,
            shared,
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
        }
    }

    /// `"http://127.0.0.1:PORT"`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Snapshot of every recorded request, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().clone()
    }

    /// Snapshot of the recorded `POST /v1/messages` requests (any query).
    pub fn message_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .iter()
            .filter(|r| r.is_message_request())
            .cloned()
            .collect()
    }

    /// Number of recorded `POST /v1/messages` requests.
    pub fn message_request_count(&self) -> usize {
        *self.shared.message_count.borrow()
    }

    /// Whether recorded requests keep their body (default: true). Long
    /// benchmarks can turn this off to keep memory flat; replies are still
    /// chosen from the body.
    pub fn set_keep_bodies(&self, keep: bool) {
        self.shared.keep_bodies.store(keep, Ordering::Relaxed);
    }

    /// How many times the mock token endpoint was called.
    pub fn token_calls(&self) -> u64 {
        self.shared.token_calls.load(Ordering::SeqCst)
    }

    /// The mock token endpoint's URL.
    pub fn token_url(&self) -> String {
        format!("{}/v1/oauth/token", self.base_url())
    }

    /// Forgets every recorded request.
    pub fn clear(&self) {
        let mut log = self.shared.lock();
        log.clear();
        self.shared.message_count.send_replace(0);
    }

    /// Resolves when at least `n` `POST /v1/messages` requests have been
    /// recorded, or panics after `timeout`.
    pub async fn wait_for_message_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<RecordedRequest> {
        let mut rx = self.shared.message_count.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|&c| c >= n)).await;
        if !matches!(reached, Ok(Ok(_))) {
            let seen: Vec<String> = self
                .requests()
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect();
            panic!(
                "mock upstream: timed out after {timeout:?} waiting for {n} POST /v1/messages \
                 requests; got {} (all requests: {seen:?})",
                self.message_request_count()
            );
        }
        self.message_requests()
    }

    /// Stops the server task and awaits it. Connections still streaming get
    /// a short grace period, then the task is aborted.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let request_number = shared.next_request.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    let rec = RecordedRequest {
        method: parts.method.as_str().to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: json,
    };
    let input_tokens = (bytes.len() / 4).max(1);

    let mut response = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/messages") => {
            let planned = plan(&rec);
            let model = rec.model().unwrap_or("claude-mock").to_string();
            let stream = rec.is_stream();
            shared.record(rec);
            match planned {
                Planned::Error(status, kind) => error_response(status, kind),
                Planned::Reply(reply) => {
                    let n = shared.next_message.fetch_add(1, Ordering::Relaxed);
                    let reply = reply.with_ids(n);
                    let msg_id = format!("msg_mock_{n}");
                    if stream {
                        sse_response(&reply, &msg_id, &model, input_tokens)
                    } else {
                        json_message_response(&reply, &msg_id, &model, input_tokens)
                    }
                }
            }
        }
        (&Method::POST, "/v1/oauth/token") => {
            let refresh = rec.body["refresh_token"].as_str().unwrap_or("").to_string();
            shared.record(rec);
            let n = shared.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(TOKEN_DELAY).await;
            if refresh.is_empty() || refresh == "sk-ant-ort01-bad" {
                json_response(
                    StatusCode::BAD_REQUEST,
                    Obj::new().str("error", "invalid_grant").end(),
                )
            } else {
                json_response(
                    StatusCode::OK,
                    Obj::new()
                        .str("token_type", "Bearer")
                        .str("access_token", &format!("sk-ant-oat01-refreshed-{n}"))
                        .str("refresh_token", &format!("sk-ant-ort01-rotated-{n}"))
                        .num("expires_in", 28800)
                        .end(),
                )
            }
        }
        (&Method::POST, "/v1/messages/count_tokens") => {
            shared.record(rec);
            json_response(
                StatusCode::OK,
                Obj::new().num("input_tokens", input_tokens).end(),
            )
        }
        _ => {
            shared.record(rec);
            let mut r = json_response(
                StatusCode::NOT_FOUND,
                error_body("not_found_error", "Not found"),
            );
            if parts.method == Method::HEAD {
                *r.body_mut() = Body::empty();
            }
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&format!("req_mock_{request_number:06}")) {
        response.headers_mut().insert("request-id", v);
    }
    for (name, value) in RATELIMIT_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

// ---------------------------------------------------------------------------
// Reply planning
// ---------------------------------------------------------------------------

enum Planned {
    Error(StatusCode, &'static str),
    Reply(Reply),
}

#[derive(Clone, Debug)]
enum Block {
    Text(Vec<String>),
    Thinking {
        deltas: Vec<String>,
        signature: String,
    },
    ToolUse {
        id: String,
        name: String,
        /// The input JSON, split into `input_json_delta` pieces.
        chunks: Vec<String>,
    },
}

#[derive(Clone, Debug)]
struct Reply {
    blocks: Vec<Block>,
    stop_reason: &'static str,
    slow: bool,
    /// Cut the connection after the first `MIDFAIL_DELTAS` text deltas.
    midfail: bool,
}

impl Reply {
    /// Fills in the per-message tool_use ids: `toolu_mock_N`, then `toolu_mock2_N`, ….
    fn with_ids(mut self, n: u64) -> Reply {
        let mut k = 0;
        for b in &mut self.blocks {
            if let Block::ToolUse { id, .. } = b {
                k += 1;
                *id = if k == 1 {
                    format!("toolu_mock_{n}")
                } else {
                    format!("toolu_mock{k}_{n}")
                };
            }
        }
        self
    }
}

const ERROR_KEYWORDS: [(&str, u16, &str); 6] = [
    ("[[e400]]", 400, "invalid_request_error"),
    ("[[e401]]", 401, "authentication_error"),
    ("[[e403]]", 403, "permission_error"),
    ("[[e429]]", 429, "rate_limit_error"),
    ("[[e500]]", 500, "api_error"),
    ("[[e529]]", 529, "overloaded_error"),
];

/// Splits text after each space: "Echo: Say hello" -> ["Echo: ", "Say ", "hello"].
pub fn split_words(text: &str) -> Vec<String> {
    let pieces: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
    if pieces.is_empty() {
        vec![String::new()]
    } else {
        pieces
    }
}

/// Splits a string into chunks of about `size` characters.
fn chunk_chars(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

fn plan(rec: &RecordedRequest) -> Planned {
    if rec.body.is_null() {
        return Planned::Error(StatusCode::BAD_REQUEST, "invalid_request_error");
    }
    let text = rec.last_user_text();
    for (keyword, status, kind) in ERROR_KEYWORDS {
        if text.contains(keyword) {
            let status = StatusCode::from_u16(status).expect("valid status");
            return Planned::Error(status, kind);
        }
    }
    let has = |k: &str| text.contains(k);
    // `[[slow]]` and `[[long]]` also work inside tool results (a slow or long resumed turn).
    let results_text: String = rec
        .tool_results()
        .into_iter()
        .map(|(_, _, text)| text)
        .collect();
    let paced = |k: &str| has(k) || results_text.contains(k);
    let midfail = has("[[midfail]]");
    let mut blocks = Vec::new();
    let mut stop_reason = "end_turn";

    if has("[[think]]") {
        blocks.push(Block::Thinking {
            deltas: THINKING_DELTAS.iter().map(|s| s.to_string()).collect(),
            signature: THINKING_SIGNATURE.to_string(),
        });
    }
    let echo = || split_words(&format!("Echo: {}", rec.last_user_prompt()));
    if midfail {
        let mut deltas = echo();
        while deltas.len() < MIDFAIL_DELTAS {
            deltas.push("... ".to_string());
        }
        deltas.truncate(MIDFAIL_DELTAS);
        blocks.push(Block::Text(deltas));
    } else if !rec.tool_results().is_empty() && paced("[[long]]") {
        blocks.push(Block::Text(
            (0..LONG_DELTAS).map(|i| format!("w{i} ")).collect(),
        ));
    } else if !rec.tool_results().is_empty() {
        let said: Vec<String> = rec
            .tool_results()
            .into_iter()
            .map(|(_, is_error, text)| {
                if is_error {
                    format!("[error] {text}")
                } else {
                    text
                }
            })
            .collect();
        blocks.push(Block::Text(split_words(&format!(
            "Tool said: {}",
            said.join(" | ")
        ))));
    } else if (has("[[call]]") || has("[[call2]]") || has("[[textcall]]"))
        && !rec.client_tools().is_empty()
    {
        let tools = rec.client_tools();
        // `[[use:NAME]]` picks the client's tool NAME for the first call.
        let named = text
            .split("[[use:")
            .nth(1)
            .and_then(|rest| rest.split_once("]]"))
            .map(|(name, _)| format!("{CLIENT_TOOL_PREFIX}{name}"))
            .filter(|name| tools.iter().any(|t| t["name"] == name.as_str()));
        let name = |i: usize| match (&named, i) {
            (Some(name), 0) => name.clone(),
            _ => tools[i.min(tools.len() - 1)]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        let prompt = rec.last_user_prompt();
        let first = text
            .split("[[input:")
            .nth(1)
            .and_then(|rest| rest.rsplit_once("]]").map(|(json, _)| json.to_string()))
            .unwrap_or_else(|| Obj::new().str("q", &prompt).end());
        if has("[[textcall]]") {
            blocks.push(Block::Text(split_words(CALL_PREAMBLE)));
        }
        blocks.push(Block::ToolUse {
            id: String::new(),
            name: name(0),
            chunks: chunk_chars(&first, 16),
        });
        if has("[[call2]]") {
            let second = Obj::new().str("q", &prompt).num("n", 2).end();
            blocks.push(Block::ToolUse {
                id: String::new(),
                name: name(1),
                chunks: chunk_chars(&second, 16),
            });
        }
        stop_reason = "tool_use";
    } else if rec.offers_tool("StructuredOutput") {
        // `--json-schema`: answer through the StructuredOutput tool, with the object given
        // as `[[json:{…}]]` in the prompt, else `{"answer": PROMPT}`.
        let input = text
            .split("[[json:")
            .nth(1)
            .and_then(|rest| rest.rsplit_once("]]").map(|(json, _)| json.to_string()))
            .unwrap_or_else(|| Obj::new().str("answer", &rec.last_user_prompt()).end());
        blocks.push(Block::ToolUse {
            id: String::new(),
            name: "StructuredOutput".to_string(),
            chunks: chunk_chars(&input, 16),
        });
        stop_reason = "tool_use";
    } else if let Some(command) = text
        .split("[[bash:")
        .nth(1)
        .and_then(|rest| rest.split_once("]]").map(|(c, _)| c.to_string()))
    {
        let input = Obj::new()
            .str("command", &command)
            .str("description", "mock")
            .end();
        blocks.push(Block::ToolUse {
            id: String::new(),
            name: "Bash".to_string(),
            chunks: chunk_chars(&input, 16),
        });
        stop_reason = "tool_use";
    } else if has("[[tool]]") {
        let command = text
            .split("[[cmd:")
            .nth(1)
            .and_then(|rest| rest.rsplit_once("]]").map(|(cmd, _)| cmd.to_string()))
            .unwrap_or_else(|| TOOL_COMMAND.to_string());
        let input = Obj::new()
            .str("command", &command)
            .str("description", "mock")
            .end();
        blocks.push(Block::Text(split_words(TOOL_PREAMBLE)));
        blocks.push(Block::ToolUse {
            id: String::new(),
            name: "Bash".to_string(),
            chunks: chunk_chars(&input, 16),
        });
        stop_reason = "tool_use";
    } else if has("[[long]]") {
        blocks.push(Block::Text(
            (0..LONG_DELTAS).map(|i| format!("w{i} ")).collect(),
        ));
    } else {
        blocks.push(Block::Text(echo()));
    }
    if has("[[max]]") && stop_reason == "end_turn" {
        stop_reason = "max_tokens";
    }
    Planned::Reply(Reply {
        blocks,
        stop_reason,
        slow: paced("[[slow]]"),
        midfail,
    })
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------
//
// serde_json (without `preserve_order`) sorts object keys, but the CLI passes
// the upstream events through with their key order, so the JSON sent to the
// client is written by hand in the real API's key order.

/// A JSON object written field by field, in order. Values are raw JSON.
struct Obj(String);

impl Obj {
    fn new() -> Obj {
        Obj(String::from("{"))
    }

    fn raw(mut self, key: &str, raw_json: &str) -> Obj {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&js(key));
        self.0.push(':');
        self.0.push_str(raw_json);
        self
    }

    fn str(self, key: &str, value: &str) -> Obj {
        let v = js(value);
        self.raw(key, &v)
    }

    fn num(self, key: &str, value: usize) -> Obj {
        self.raw(key, &value.to_string())
    }

    fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// A JSON string literal.
fn js(s: &str) -> String {
    Value::from(s).to_string()
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The Anthropic error body for an error type and message.
pub fn error_body(kind: &str, message: &str) -> String {
    Obj::new()
        .str("type", "error")
        .raw(
            "error",
            &Obj::new().str("type", kind).str("message", message).end(),
        )
        .end()
}

fn error_response(status: StatusCode, kind: &str) -> Response {
    let mut r = json_response(status, error_body(kind, &format!("mock {kind}")));
    if status.as_u16() == 429 || status.as_u16() == 529 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn usage(input_tokens: usize, output_tokens: usize) -> String {
    Obj::new()
        .num("input_tokens", input_tokens)
        .num("cache_creation_input_tokens", 0)
        .num("cache_read_input_tokens", 0)
        .num("output_tokens", output_tokens)
        .end()
}

fn count_deltas(reply: &Reply) -> usize {
    let n: usize = reply
        .blocks
        .iter()
        .map(|b| match b {
            Block::Text(d) => d.len(),
            Block::Thinking { deltas, .. } => deltas.len() + 1,
            Block::ToolUse { chunks, .. } => chunks.len(),
        })
        .sum();
    n.max(1)
}

/// The full message object (`content` given as raw JSON).
fn message_json(
    msg_id: &str,
    model: &str,
    content: &str,
    stop_reason: Option<&str>,
    usage: &str,
) -> String {
    Obj::new()
        .str("id", msg_id)
        .str("type", "message")
        .str("role", "assistant")
        .str("model", model)
        .raw("content", content)
        .raw("stop_reason", &stop_reason.map_or("null".to_string(), js))
        .raw("stop_sequence", "null")
        .raw("usage", usage)
        .end()
}

fn json_message_response(
    reply: &Reply,
    msg_id: &str,
    model: &str,
    input_tokens: usize,
) -> Response {
    let content: Vec<String> = reply
        .blocks
        .iter()
        .map(|b| match b {
            Block::Text(d) => Obj::new()
                .str("type", "text")
                .str("text", &d.concat())
                .end(),
            Block::Thinking { deltas, signature } => Obj::new()
                .str("type", "thinking")
                .str("thinking", &deltas.concat())
                .str("signature", signature)
                .end(),
            Block::ToolUse {
                id, name, chunks, ..
            } => Obj::new()
                .str("type", "tool_use")
                .str("id", id)
                .str("name", name)
                .raw("input", &chunks.concat())
                .end(),
        })
        .collect();
    let deltas = count_deltas(reply);
    let message = message_json(
        msg_id,
        model,
        &format!("[{}]", content.join(",")),
        Some(reply.stop_reason),
        &usage(input_tokens, deltas),
    );
    let chunks: Vec<Chunk> = if reply.midfail {
        // Half of the JSON, then the connection is cut.
        let text = Bytes::from(message);
        vec![Chunk::Event(text.slice(..text.len() / 2)), Chunk::Fail]
    } else if reply.slow {
        // As long as the stream would have taken.
        vec![Chunk::Delayed(
            SLOW_DELTA_DELAY * deltas as u32,
            Bytes::from(message),
        )]
    } else {
        return json_response(StatusCode::OK, message);
    };
    let mut r = Response::new(chunk_body(chunks, false));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// One piece of a streamed body.
enum Chunk {
    /// Sent as is.
    Event(Bytes),
    /// A content_block_delta: delayed in the slow scenario.
    Delta(Bytes),
    /// Sent after the given delay.
    Delayed(Duration, Bytes),
    /// Abort the response (the connection is cut).
    Fail,
}

fn chunk_body(chunks: Vec<Chunk>, slow: bool) -> Body {
    let stream = futures::stream::iter(chunks).then(move |chunk| async move {
        match chunk {
            Chunk::Event(b) => Ok(b),
            Chunk::Delta(b) => {
                if slow {
                    tokio::time::sleep(SLOW_DELTA_DELAY).await;
                }
                Ok(b)
            }
            Chunk::Delayed(delay, b) => {
                tokio::time::sleep(delay).await;
                Ok(b)
            }
            Chunk::Fail => {
                // The cut comes a moment after what was sent, as a real one does mid-stream:
                // long enough for it to pass the relay and the CLI. With 10 ms, on a loaded
                // machine, the CLI once read the reset before the deltas and dropped them.
                tokio::time::sleep(MIDFAIL_PAUSE).await;
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "mock upstream: [[midfail]] cut the stream",
                ))
            }
        }
    });
    Body::from_stream(stream)
}

/// One SSE event: `event: NAME\ndata: JSON\n\n`.
pub fn sse_event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn sse_chunks(reply: &Reply, msg_id: &str, model: &str, input_tokens: usize) -> Vec<Chunk> {
    let mut out = Vec::new();
    let message = message_json(msg_id, model, "[]", None, &usage(input_tokens, 1));
    out.push(Chunk::Event(sse_event(
        "message_start",
        &Obj::new()
            .str("type", "message_start")
            .raw("message", &message)
            .end(),
    )));
    out.push(Chunk::Event(Bytes::from_static(
        b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
    )));
    let delta = |index: usize, delta: String| {
        Chunk::Delta(sse_event(
            "content_block_delta",
            &Obj::new()
                .str("type", "content_block_delta")
                .num("index", index)
                .raw("delta", &delta)
                .end(),
        ))
    };
    let mut sent = 0usize;
    for (index, block) in reply.blocks.iter().enumerate() {
        let start = match block {
            Block::Text(_) => Obj::new().str("type", "text").str("text", "").end(),
            Block::Thinking { .. } => Obj::new()
                .str("type", "thinking")
                .str("thinking", "")
                .str("signature", "")
                .end(),
            Block::ToolUse { id, name, .. } => Obj::new()
                .str("type", "tool_use")
                .str("id", id)
                .str("name", name)
                .raw("input", "{}")
                .end(),
        };
        out.push(Chunk::Event(sse_event(
            "content_block_start",
            &Obj::new()
                .str("type", "content_block_start")
                .num("index", index)
                .raw("content_block", &start)
                .end(),
        )));
        match block {
            Block::Text(deltas) => {
                for t in deltas {
                    let d = Obj::new().str("type", "text_delta").str("text", t).end();
                    out.push(delta(index, d));
                    sent += 1;
                }
            }
            Block::Thinking { deltas, signature } => {
                for t in deltas {
                    let d = Obj::new()
                        .str("type", "thinking_delta")
                        .str("thinking", t)
                        .end();
                    out.push(delta(index, d));
                    sent += 1;
                }
                let d = Obj::new()
                    .str("type", "signature_delta")
                    .str("signature", signature)
                    .end();
                out.push(delta(index, d));
                sent += 1;
            }
            Block::ToolUse { chunks, .. } => {
                for c in chunks {
                    let d = Obj::new()
                        .str("type", "input_json_delta")
                        .str("partial_json", c)
                        .end();
                    out.push(delta(index, d));
                    sent += 1;
                }
            }
        }
        if reply.midfail && matches!(block, Block::Text(_)) {
            out.push(Chunk::Fail);
            return out;
        }
        out.push(Chunk::Event(sse_event(
            "content_block_stop",
            &Obj::new()
                .str("type", "content_block_stop")
                .num("index", index)
                .end(),
        )));
    }
    let delta = Obj::new()
        .str("stop_reason", reply.stop_reason)
        .raw("stop_sequence", "null")
        .end();
    out.push(Chunk::Event(sse_event(
        "message_delta",
        &Obj::new()
            .str("type", "message_delta")
            .raw("delta", &delta)
            .raw("usage", &Obj::new().num("output_tokens", sent.max(1)).end())
            .end(),
    )));
    out.push(Chunk::Event(sse_event(
        "message_stop",
        "{\"type\":\"message_stop\"}",
    )));
    out
}

fn sse_response(reply: &Reply, msg_id: &str, model: &str, input_tokens: usize) -> Response {
    let chunks = sse_chunks(reply, msg_id, model, input_tokens);
    let mut r = Response::new(chunk_body(chunks, reply.slow));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

// ---------------------------------------------------------------------------
// Helpers for tests
// ---------------------------------------------------------------------------

/// Parses an SSE body into `(event name, data JSON)` pairs. Incomplete trailing
/// events are dropped; data that is not JSON becomes `Value::Null`.
pub fn parse_sse(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for raw in text.split("\n\n") {
        if raw.trim().is_empty() {
            continue;
        }
        let mut name = String::new();
        let mut data = String::new();
        for line in raw.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if name.is_empty() && data.is_empty() {
            continue;
        }
        out.push((name, serde_json::from_str(&data).unwrap_or(Value::Null)));
    }
    // Drop a final event that was not terminated by a blank line.
    if !text.ends_with("\n\n") && !out.is_empty() {
        out.pop();
    }
    out
}

/// Concatenation of the `text_delta` texts of parsed SSE events.
pub fn sse_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .filter_map(|(_, d)| {
            let delta = d.get("delta")?;
            if delta.get("type")?.as_str()? == "text_delta" {
                delta.get("text")?.as_str().map(str::to_string)
            } else {
                None
            }
        })
        .collect()
}
