//! In-process fakes for unit tests of the worker and pool logic: a container runtime whose
//! "CLI" is a task that speaks a small subset of stream-json over in-memory pipes. Never used
//! outside tests; the Docker tests use the real engine and the real CLI.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::LaunchProfile;
use crate::http::{ApiSettings, AppState, app};
use crate::pool::{PoolConfig, ReusePolicy, WarmPool};
use crate::worker::WorkerSettings;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ExecOutput, ExecProcess, ExecSpec, RuntimeError,
};

#[derive(Default)]
struct FakeState {
    next_id: u64,
    containers: HashMap<String, FakeContainer>,
    /// Every stdin line any fake CLI received, with its container id, in order.
    stdin_lines: Vec<(String, String)>,
    /// Every exec's command, in order.
    execs: Vec<Vec<String>>,
    /// What short execs (file writes) received on stdin.
    written: Vec<String>,
    volumes: HashMap<String, HashMap<String, String>>,
    starts: u64,
    /// Containers of this launch profile (its fingerprint) fail to start.
    failing_profile: Option<String>,
    /// Container starts that failed that way.
    failed_starts: u64,
    /// The total CPU times every container's samples give, in order (none by default).
    cpu_samples: Vec<Duration>,
}

struct FakeContainer {
    labels: HashMap<String, String>,
    /// Its CPU weight at creation, then each change.
    cpu_shares: Vec<Option<i64>>,
    /// How many CPU time samples were read.
    cpu_samples_read: usize,
    /// Cancelled when the container is removed or the CLI killed.
    alive: CancellationToken,
}

/// A container runtime held entirely in memory.
#[derive(Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<FakeState>>,
    /// Delay of every container start.
    pub start_delay: Duration,
    /// How long the fake CLI takes to answer a `rewind_conversation`.
    pub clear_delay: Duration,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// The total CPU times each container's samples give from now on, in order.
    pub fn set_cpu_samples(&self, samples: Vec<Duration>) {
        self.state.lock().unwrap().cpu_samples = samples;
    }

    /// How many CPU time samples of a container were read.
    pub fn cpu_samples_read(&self, container_id: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .containers
            .get(container_id)
            .map_or(0, |c| c.cpu_samples_read)
    }

    /// A container's CPU weight at creation, then each change.
    pub fn cpu_shares_of(&self, container_id: &str) -> Vec<Option<i64>> {
        let state = self.state.lock().unwrap();
        state
            .containers
            .get(container_id)
            .map(|c| c.cpu_shares.clone())
            .unwrap_or_default()
    }

    /// Containers that exist now.
    pub fn container_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .state
            .lock()
            .unwrap()
            .containers
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// How many containers were ever started.
    pub fn starts(&self) -> u64 {
        self.state.lock().unwrap().starts
    }

    /// The stdin lines a container's CLI received.
    pub fn stdin_of(&self, container: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .stdin_lines
            .iter()
            .filter(|(c, _)| c == container)
            .map(|(_, l)| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every exec's command so far.
    pub fn execs(&self) -> Vec<Vec<String>> {
        self.state.lock().unwrap().execs.clone()
    }

    /// What file-writing execs received.
    pub fn written(&self) -> Vec<String> {
        self.state.lock().unwrap().written.clone()
    }

    /// The volumes that exist now, with their labels, by name.
    pub fn volumes(&self) -> Vec<(String, HashMap<String, String>)> {
        let mut volumes: Vec<_> = self
            .state
            .lock()
            .unwrap()
            .volumes
            .clone()
            .into_iter()
            .collect();
        volumes.sort_by(|a, b| a.0.cmp(&b.0));
        volumes
    }

    /// The labels of a container that exists.
    pub fn labels_of(&self, container: &str) -> Option<HashMap<String, String>> {
        let state = self.state.lock().unwrap();
        state.containers.get(container).map(|c| c.labels.clone())
    }

    /// Makes every container start of `profile` fail (like a missing image), or none.
    pub fn fail_starts_of(&self, profile: Option<&LaunchProfile>) {
        self.state.lock().unwrap().failing_profile = profile.map(LaunchProfile::fingerprint);
    }

    /// How many container starts failed because of `fail_starts_of`.
    pub fn failed_starts(&self) -> u64 {
        self.state.lock().unwrap().failed_starts
    }

    /// Kills a container behind the pool's back, like `docker kill`.
    pub fn kill(&self, container: &str) {
        if let Some(c) = self.state.lock().unwrap().containers.remove(container) {
            c.alive.cancel();
        }
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn start_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        tokio::time::sleep(self.start_delay).await;
        let mut state = self.state.lock().unwrap();
        let profile = spec.labels.get(crate::runtime::LABEL_PROFILE);
        if profile.is_some() && profile == state.failing_profile.as_ref() {
            state.failed_starts += 1;
            return Err(RuntimeError::CreateContainer("no such image (fake)".into()));
        }
        state.next_id += 1;
        state.starts += 1;
        let id = format!("fake{:04}", state.next_id);
        state.containers.insert(
            id.clone(),
            FakeContainer {
                labels: spec.labels.clone(),
                cpu_shares: vec![spec.cpu_shares],
                cpu_samples_read: 0,
                alive: CancellationToken::new(),
            },
        );
        Ok(id)
    }

    async fn exec(&self, container_id: &str, spec: &ExecSpec) -> Result<ExecProcess, RuntimeError> {
        let alive = {
            let state = self.state.lock().unwrap();
            let c = state
                .containers
                .get(container_id)
                .ok_or_else(|| RuntimeError::NotFound(container_id.to_string()))?;
            c.alive.clone()
        };
        let script = spec.cmd.get(2).cloned().unwrap_or_default();
        self.state.lock().unwrap().execs.push(spec.cmd.clone());
        let (stdin_writer, stdin_reader) = tokio::io::duplex(1 << 20);
        let (out_tx, out_rx) = mpsc::channel::<Result<ExecOutput, RuntimeError>>(256);
        if script.contains("kill -KILL") {
            // The CLI is killed: its output ends, the container stays.
            let fresh = CancellationToken::new();
            let mut state = self.state.lock().unwrap();
            if let Some(c) = state.containers.get_mut(container_id) {
                let old = std::mem::replace(&mut c.alive, fresh);
                old.cancel();
            }
        } else if script.contains("cat >") {
            // A file write: keep what it receives; its output ends when its stdin does.
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut content = String::new();
                let _ =
                    tokio::io::AsyncReadExt::read_to_string(&mut { stdin_reader }, &mut content)
                        .await;
                state.lock().unwrap().written.push(content);
                drop(out_tx);
            });
        } else if script.contains("exec \"$@\"") {
            let state = self.state.clone();
            let container = container_id.to_string();
            tokio::spawn(fake_cli(
                state,
                container,
                stdin_reader,
                out_tx,
                alive.clone(),
                self.clear_delay,
            ));
        }
        // Like a hijacked exec connection, the output ends the moment the container dies.
        let output = tokio_stream::wrappers::ReceiverStream::new(out_rx)
            .take_until(alive.clone().cancelled_owned())
            .boxed();
        Ok(ExecProcess {
            id: format!("exec-{container_id}"),
            stdin: Box::pin(stdin_writer),
            output,
        })
    }

    async fn exec_exit_code(&self, _exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        Ok(Some(0))
    }

    async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.kill(container_id);
        Ok(())
    }

    async fn set_cpu_shares(&self, container_id: &str, shares: i64) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().unwrap();
        let container = state
            .containers
            .get_mut(container_id)
            .ok_or_else(|| RuntimeError::NotFound(container_id.to_string()))?;
        container.cpu_shares.push(Some(shares));
        Ok(())
    }

    fn cpu_time_samples(
        &self,
        container_id: &str,
    ) -> futures::stream::BoxStream<'static, Result<Duration, RuntimeError>> {
        let samples = self.state.lock().unwrap().cpu_samples.clone();
        let (state, id) = (self.state.clone(), container_id.to_string());
        futures::stream::iter(samples)
            .map(move |sample| {
                if let Some(c) = state.lock().unwrap().containers.get_mut(&id) {
                    c.cpu_samples_read += 1;
                }
                Ok(sample)
            })
            .boxed()
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .containers
            .iter()
            .filter(|(_, c)| {
                labels
                    .iter()
                    .all(|(k, v)| c.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(id, c)| ContainerInfo {
                id: id.clone(),
                labels: c.labels.clone(),
                running: true,
            })
            .collect())
    }

    async fn create_volume(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.state
            .lock()
            .unwrap()
            .volumes
            .insert(name.to_string(), labels.clone());
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.state.lock().unwrap().volumes.remove(name);
        Ok(())
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, RuntimeError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .volumes
            .iter()
            .filter(|(_, l)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(n, _)| n.clone())
            .collect())
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        Ok("fake".into())
    }

    async fn image_exists(&self, _image: &str) -> Result<bool, RuntimeError> {
        Ok(true)
    }
}

type Out = mpsc::Sender<Result<ExecOutput, RuntimeError>>;

async fn emit(out: &Out, v: Value) -> bool {
    let mut line = v.to_string();
    line.push('\n');
    out.send(Ok(ExecOutput::Stdout(Bytes::from(line))))
        .await
        .is_ok()
}

fn stream_event(event: Value) -> Value {
    json!({"type": "stream_event", "event": event, "session_id": "fake"})
}

fn result(subtype: &str, text: &str, terminal: &str) -> Value {
    json!({"type": "result", "subtype": subtype, "is_error": subtype != "success", "result": text,
           "stop_reason": "end_turn", "terminal_reason": terminal,
           "usage": {"input_tokens": 3, "output_tokens": 2}})
}

/// A stand-in for the CLI: answers `initialize`, `mcp_message` (a `tools/list_changed` makes
/// it fetch the in-band server's tool list), `set_model`, `interrupt`,
/// `rewind_conversation` (refused as `stale_target` for an id it was never sent), and
/// user messages (`Echo: …`; `[[slow]]` streams slowly until interrupted; `[[hang]]` never
/// answers, not even an interrupt; `[[raw:HEX]]` first prints those bytes as they are, as an
/// agent writing to its CLI's stdout would, and `[[after:HEX]]` prints them after the result).
async fn fake_cli(
    state: Arc<Mutex<FakeState>>,
    container: String,
    stdin: tokio::io::DuplexStream,
    out: Out,
    alive: CancellationToken,
    clear_delay: Duration,
) {
    let mut lines = BufReader::new(stdin).lines();
    // The ids of the user lines in the conversation, for rewinds.
    let mut sent_ids: Vec<String> = Vec::new();
    loop {
        let line = tokio::select! {
            _ = alive.cancelled() => return,
            line = lines.next_line() => match line { Ok(Some(l)) => l, _ => return },
        };
        state
            .lock()
            .unwrap()
            .stdin_lines
            .push((container.clone(), line.clone()));
        let msg: Value = serde_json::from_str(&line).unwrap();
        if msg["type"] == "user" {
            if let Some(uuid) = msg["uuid"].as_str() {
                sent_ids.push(uuid.to_string());
            }
        }
        if msg["type"] == "control_request" {
            let id = msg["request_id"].clone();
            let response = match msg["request"]["subtype"].as_str() {
                Some("rewind_conversation") => {
                    tokio::time::sleep(clear_delay).await;
                    let target = msg["request"]["target_message_uuid"].as_str();
                    match target.and_then(|t| sent_ids.iter().position(|s| s == t)) {
                        Some(at) => {
                            sent_ids.truncate(at);
                            json!({"rewound": true, "targetMessageUuid": target})
                        }
                        None => json!({"rewound": false, "reason": "stale_target"}),
                    }
                }
                Some("initialize") => json!({"models": [
                    {"value": "default", "resolvedModel": "claude-fake-1", "displayName": "Default"},
                    {"value": "fake", "resolvedModel": "claude-fake-1", "displayName": "Fake"},
                    {"value": "other", "resolvedModel": "claude-other-2", "displayName": "Other"}
                ]}),
                _ => json!({}),
            };
            emit(&out, json!({"type": "control_response", "response": {"subtype": "success", "request_id": id, "response": response}})).await;
            let subtype = msg["request"]["subtype"].as_str();
            if subtype == Some("mcp_message") {
                let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
                emit(&out, json!({"type": "control_request", "request_id": "fake_list", "request": {"subtype": "mcp_message", "server_name": "client", "message": list}})).await;
            }
            continue;
        }
        if msg["type"] == "control_response" {
            continue;
        }
        let text = msg["message"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let raw = |marker: &str| {
            text.split(marker)
                .nth(1)
                .and_then(|r| r.split("]]").next())
                .map(hex_bytes)
        };
        if let Some(bytes) = raw("[[raw:") {
            let _ = out.send(Ok(ExecOutput::Stdout(Bytes::from(bytes)))).await;
        }
        if let Some(name) = text
            .split("[[fixture:")
            .nth(1)
            .and_then(|r| r.split("]]").next())
        {
            // Replays what the real CLI printed for a recorded scenario, up to its first result.
            let path = format!("{}/tests/fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
            let mut messages = 0;
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let value: Value = serde_json::from_str(line).unwrap();
                if value["type"] == "system" && value["subtype"] == "init" {
                    continue;
                }
                if value["event"]["type"] == "message_start" {
                    messages += 1;
                }
                if messages == 2 && value["event"]["type"] == "message_start" {
                    // A continuation is a second upstream request, which takes a while: an
                    // interrupt sent meanwhile ends the turn, as with the real CLI.
                    let next =
                        tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await;
                    if let Ok(Ok(Some(line))) = next {
                        state
                            .lock()
                            .unwrap()
                            .stdin_lines
                            .push((container.clone(), line.clone()));
                        let msg: Value = serde_json::from_str(&line).unwrap();
                        if msg["request"]["subtype"] == "interrupt" {
                            emit(&out, json!({"type": "control_response", "response": {"subtype": "success", "request_id": msg["request_id"], "response": {}}})).await;
                            emit(
                                &out,
                                result("error_during_execution", "", "aborted_streaming"),
                            )
                            .await;
                            break;
                        }
                    }
                }
                emit(&out, value.clone()).await;
                if value["type"] == "result" {
                    break;
                }
            }
            continue;
        }
        if text.contains("[[hang]]") {
            // Never answers again, not even an interrupt.
            alive.cancelled().await;
            return;
        }
        let mut interrupted = false;
        emit(&out, stream_event(json!({"type": "message_start", "message": {"id": "msg_fake", "model": "claude-fake", "usage": {"input_tokens": 3}}}))).await;
        emit(&out, stream_event(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))).await;
        let pieces: Vec<String> = if text.contains("[[slow]]") {
            (0..500).map(|i| format!("w{i} ")).collect()
        } else {
            vec!["Echo: ".to_string(), text.clone()]
        };
        for piece in pieces {
            if text.contains("[[slow]]") {
                // Read control lines between deltas, as the real CLI does.
                tokio::select! {
                    _ = alive.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    line = lines.next_line() => {
                        let Ok(Some(line)) = line else { return };
                        state.lock().unwrap().stdin_lines.push((container.clone(), line.clone()));
                        let msg: Value = serde_json::from_str(&line).unwrap();
                        if msg["request"]["subtype"] == "interrupt" {
                            emit(&out, json!({"type": "control_response", "response": {"subtype": "success", "request_id": msg["request_id"], "response": {}}})).await;
                            interrupted = true;
                        }
                    }
                }
                if interrupted {
                    break;
                }
            }
            emit(&out, stream_event(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}))).await;
        }
        if interrupted {
            emit(
                &out,
                result("error_during_execution", "", "aborted_streaming"),
            )
            .await;
            continue;
        }
        emit(
            &out,
            stream_event(json!({"type": "content_block_stop", "index": 0})),
        )
        .await;
        emit(&out, stream_event(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 2}}))).await;
        emit(&out, stream_event(json!({"type": "message_stop"}))).await;
        emit(
            &out,
            result("success", &format!("Echo: {text}"), "completed"),
        )
        .await;
        if let Some(bytes) = raw("[[after:") {
            let _ = out.send(Ok(ExecOutput::Stdout(Bytes::from(bytes)))).await;
        }
    }
}

/// Bytes written as hexadecimal digits (what is not a pair of them is skipped).
fn hex_bytes(hex: &str) -> Vec<u8> {
    hex.as_bytes()
        .chunks(2)
        .filter_map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// `bytes` as the hexadecimal digits `[[raw:…]]` and `[[after:…]]` take.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// ccpool's router on a pool over the fake runtime, for router tests.
pub struct TestApp {
    pub fake: FakeRuntime,
    pub pool: WarmPool,
    pub state: AppState,
}

pub async fn harness() -> TestApp {
    harness_with(ApiSettings::default()).await
}

/// A router over the fake runtime with these API settings (plus the `gpt-4o` alias and a
/// 1 MiB body limit).
pub async fn harness_with(api: ApiSettings) -> TestApp {
    let fake = FakeRuntime::new();
    let settings = WorkerSettings {
        instance_id: format!("router-{}", uuid::Uuid::new_v4().simple()),
        interrupt_grace: Duration::from_millis(500),
        credentials: crate::credentials::Credentials::ApiKey("sk-fake".into()),
        ..WorkerSettings::default()
    };
    let config = PoolConfig {
        policy: ReusePolicy::Reuse {
            max_uses: 100,
            max_age: Duration::from_secs(3600),
        },
        max_workers: 4,
        warm_default: 1,
        checkout_timeout: Duration::from_secs(5),
        ..PoolConfig::default()
    };
    let pool = WarmPool::start(
        Arc::new(fake.clone()),
        settings,
        config,
        LaunchProfile::default(),
    )
    .await
    .unwrap();
    assert!(pool.wait_warm(1, Duration::from_secs(5)).await);
    let mut api = ApiSettings {
        max_body_bytes: 1024 * 1024,
        ..api
    };
    api.openai
        .model_aliases
        .insert("gpt-4o".into(), "claude-sonnet-4-5".into());
    let sessions =
        crate::sessions::Sessions::start(pool.clone(), crate::sessions::SessionConfig::default())
            .await
            .unwrap();
    let state = AppState::new(pool.clone(), sessions, api);
    TestApp { fake, pool, state }
}

impl TestApp {
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    pub async fn messages(&self, body: Value) -> (StatusCode, axum::http::HeaderMap, String) {
        self.post("/v1/messages", body.to_string()).await
    }

    /// The `--model` every CLI was started with, in order.
    pub fn launch_models(&self) -> Vec<String> {
        self.fake
            .execs()
            .iter()
            .filter_map(|cmd| {
                let at = cmd.iter().position(|a| a == "--model")?;
                cmd.get(at + 1).cloned()
            })
            .collect()
    }

    /// Stdin lines the CLIs received, as JSON.
    pub fn stdin(&self) -> Vec<Value> {
        self.fake
            .container_ids()
            .iter()
            .flat_map(|c| self.fake.stdin_of(c))
            .collect()
    }

    pub async fn stop(self) {
        self.state.sessions.shutdown().await;
        self.pool.shutdown(Duration::from_secs(2)).await;
        assert!(self.fake.container_ids().is_empty());
    }
}
