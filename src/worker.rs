//! One worker: a sandboxed container with one long-lived CLI process in it, started ahead of
//! demand and left waiting on stdin. Drives one turn at a time over stream-json, resets the
//! conversation between requests (`conversation`), and interrupts, kills or removes itself.

mod conversation;
mod settle;
#[cfg(test)]
mod tests;
mod warm_up;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use crate::cli::mcp;
use crate::cli::transcript::{transcript, transcript_path};
use crate::cli::{
    CliEvent, CliSettings, ControlRequest, ControlResult, Initialized, LineError, McpRequest,
    StdinLine, cli_argv, cli_env, credential_prelude, kill_cli_command, launch_files, ndjson_lines,
    resume_args, with_pid_file,
};
use crate::credentials::Credentials;
use crate::domain::{
    BlockDelta, BlockKind, ContentBlock, HistoryMessage, LaunchProfile, ModelInfo, Role,
    StopReason, ToolChoice, ToolSpec, TurnEvent, TurnItem, TurnOutcome, TurnRequest, TurnStatus,
    Usage,
};
use crate::gateway::{RelayLink, WorkerToken};
use crate::runtime::{ContainerRuntime, ExecOutput, ExecSpec, LABEL_SESSION, RuntimeError};
use crate::sandbox::{SandboxConfig, worker_labels};
use conversation::{Conversation, StreamCheck};

/// The CPU weight of a worker while it starts ahead of demand, against Docker's default
/// (`CPU_SHARES`) for the others.
const STARTING_CPU_SHARES: i64 = 128;
const CPU_SHARES: i64 = 1024;

/// How much of the CLI's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 2048;

/// The session a dedicated worker belongs to, and the volume that is its workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionWorkspace {
    pub session_id: String,
    pub volume: String,
}

/// Settings every worker shares.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub sandbox: SandboxConfig,
    pub cli: CliSettings,
    /// The real credentials. They never reach a worker: the gateway holds them, and each
    /// worker gets its own token for the relay instead. Kept here for `/status` (kind only).
    pub credentials: Credentials,
    /// The relay workers reach the upstream through, and the gateway that issues their tokens.
    /// `None` only in unit tests on the fake runtime.
    pub relay: Option<RelayLink>,
    /// The id of this ccpool instance, on every container's labels.
    pub instance_id: String,
    /// How long a container start plus a CLI start may take, up to the CLI answering `initialize`.
    pub start_timeout: Duration,
    /// Watchdog: how long the CLI's stdout may stay silent during a turn.
    pub silence_limit: Duration,
    /// After an interrupt, how long the CLI has to end the turn before it is killed.
    pub interrupt_grace: Duration,
    /// The longest stdout line accepted.
    pub max_line_bytes: usize,
    /// The most stdout one turn may print: a CLI whose agent floods its stdout is stopped
    /// before the flood costs more than this much parsing and memory.
    pub max_turn_bytes: u64,
    /// Throwaway turns a new worker's CLI runs (answered by the relay, then rewound) before it
    /// serves anyone, so that its first real turn is as fast as a later one (`warm_up`).
    pub warm_up_turns: usize,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            sandbox: SandboxConfig::default(),
            cli: CliSettings::default(),
            credentials: Credentials::None,
            relay: None,
            instance_id: "default".to_string(),
            start_timeout: Duration::from_secs(60),
            silence_limit: Duration::from_secs(120),
            interrupt_grace: Duration::from_secs(5),
            max_line_bytes: 16 * 1024 * 1024,
            max_turn_bytes: 256 * 1024 * 1024,
            warm_up_turns: 3,
        }
    }
}

/// A worker could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("writing to the CLI's stdin: {0}")]
    Stdin(std::io::Error),
    #[error(transparent)]
    Line(#[from] LineError),
    #[error(transparent)]
    Parse(#[from] crate::cli::protocol::ParseError),
    #[error("the CLI exited{0}")]
    Exited(String),
    #[error("the CLI did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the CLI refused a control request: {0}")]
    Refused(String),
    #[error("writing a file into the worker failed with exit code {0}")]
    WriteFile(i64),
    #[error("the CLI did not fetch the new tool list")]
    ToolList,
}

/// A `tools/call` request of the CLI, waiting for the client's result.
#[derive(Clone, Debug)]
struct CallRequest {
    /// The control request to answer.
    request_id: String,
    /// The JSON-RPC id to answer with.
    id: Value,
    /// The upstream's tool-use id of the call.
    tool_use_id: String,
}

/// A turn that ended with client tool calls: the CLI waits on the first `tools/call`.
#[derive(Debug, Default)]
struct Parked {
    /// The tool-use ids of the calls, in the order the model made them.
    awaiting: Vec<String>,
    /// `tools/call` requests already received, in order.
    requests: VecDeque<CallRequest>,
}

/// Why a request could not resume a parked turn.
fn resume_error(message: String) -> TurnOutcome {
    TurnOutcome {
        status: TurnStatus::UpstreamError {
            status: Some(400),
            kind: Some("invalid_request_error".into()),
            message,
        },
        ..TurnOutcome::failed("")
    }
}

type CliEvents = BoxStream<'static, Result<CliEvent, WorkerError>>;

/// What the output stages of a CLI process keep aside: the tail of its stderr (for error
/// messages), and how many stdout bytes it has printed (a turn's share is bounded).
#[derive(Clone, Default)]
pub(crate) struct OutputTaps {
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    stdout_bytes: Arc<AtomicU64>,
}

impl OutputTaps {
    fn stdout_bytes(&self) -> u64 {
        self.stdout_bytes.load(Ordering::Relaxed)
    }
}

/// A running worker. Dropping it removes its container (through the graveyard, when set).
pub struct Worker {
    id: String,
    container_id: String,
    profile: LaunchProfile,
    runtime: Arc<dyn ContainerRuntime>,
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
    events: CliEvents,
    /// The CLI's stderr tail and stdout byte count, shared with its output stages.
    taps: OutputTaps,
    /// The model the CLI uses now (launch flag or last `set_model`); `None` is its default.
    model: Option<String>,
    /// The conversation the CLI holds, if any (what a reset empties).
    conversation: Option<Conversation>,
    /// The models the CLI offered in its `initialize` answer.
    models: Vec<ModelInfo>,
    /// The CLI's version, from the same answer.
    cli_version: Option<String>,
    uses: u32,
    created: Instant,
    /// Why this worker must not serve again, once something went wrong.
    broken: Option<String>,
    /// The client tools the CLI lists now.
    tools: Vec<ToolSpec>,
    /// Set while the CLI is mid-turn, waiting on client tool results.
    parked: Option<Parked>,
    /// MCP requests of the CLI seen where they could not be answered (`is_alive`).
    inbox: VecDeque<(String, McpRequest)>,
    /// How many `tools/list` requests this worker has answered.
    lists_served: u64,
    /// Its token for the relay; revoked when the worker is dropped.
    token: Option<WorkerToken>,
    /// The names of the client tools this CLI process has offered: the CLI (2.1.327) may keep
    /// offering a tool that a new non-empty list drops, in the same conversation and after a
    /// rewind, until the process is replaced.
    offered: Vec<String>,
    next_request: u64,
    settings: Arc<WorkerSettings>,
    /// The capacity slot this worker holds in its pool.
    permit: Option<OwnedSemaphorePermit>,
    /// Where a dropped worker sends its container to be removed.
    graveyard: Option<mpsc::UnboundedSender<String>>,
    removed: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("container", &short(&self.container_id))
            .field("uses", &self.uses)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Worker {
    /// Starts a container and a CLI process in it ahead of demand, and waits until the CLI
    /// answers `initialize` and has warmed up: from then on it waits on stdin, ready for a
    /// request.
    pub async fn start(
        runtime: Arc<dyn ContainerRuntime>,
        settings: Arc<WorkerSettings>,
        profile: LaunchProfile,
    ) -> Result<Worker, WorkerError> {
        Self::start_in(runtime, settings, profile, None, true).await
    }

    /// Starts a worker whose workspace is a session's volume (labelled with the session).
    /// `ahead`: nobody waits for this start (a reservoir's or a pre-warmed one), so it yields
    /// the CPU to the workers serving requests until it is warm; a start a request waits for
    /// runs at the usual weight.
    pub async fn start_in(
        runtime: Arc<dyn ContainerRuntime>,
        settings: Arc<WorkerSettings>,
        profile: LaunchProfile,
        session: Option<&SessionWorkspace>,
        ahead: bool,
    ) -> Result<Worker, WorkerError> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let mut labels = worker_labels(&settings.instance_id, &id, &profile.fingerprint());
        if let Some(session) = session {
            labels.insert(LABEL_SESSION.to_string(), session.session_id.clone());
        }
        let mut spec = settings
            .sandbox
            .container_spec_in(labels, session.map(|s| s.volume.as_str()));
        // A worker started ahead (container, CLI start, warm-up: about a CPU-second) yields
        // the CPU to the workers that serve requests; it gets the usual weight once warm.
        spec.cpu_shares = Some(if ahead {
            STARTING_CPU_SHARES
        } else {
            CPU_SHARES
        });
        let container_id = runtime.start_container(&spec).await?;
        let token = settings.relay.as_ref().map(|r| r.gateway.issue(&id));
        match Self::launch_cli(
            &runtime,
            &settings,
            &container_id,
            id.clone(),
            profile,
            token,
        )
        .await
        {
            Ok(worker) => {
                if ahead {
                    // A pre-warmed session worker is claimed by the next new session as soon
                    // as it is ready; the pool's reservoir hands its newest workers out last.
                    if session.is_some() {
                        let quiet = settle::until_quiet(runtime.as_ref(), &container_id).await;
                        tracing::debug!(worker = %worker.id(), quiet, "pre-warmed; quiet");
                    }
                    if let Err(e) = runtime.set_cpu_shares(&container_id, CPU_SHARES).await {
                        tracing::warn!(cause = %e, "a warm worker keeps the CPU weight of a start");
                    }
                }
                Ok(worker)
            }
            Err(e) => {
                if let Err(remove) = runtime.remove_container(&container_id).await {
                    tracing::warn!(cause = %remove, "removing a worker that failed to start");
                }
                Err(e)
            }
        }
    }

    async fn launch_cli(
        runtime: &Arc<dyn ContainerRuntime>,
        settings: &Arc<WorkerSettings>,
        container_id: &str,
        id: String,
        profile: LaunchProfile,
        token: Option<WorkerToken>,
    ) -> Result<Worker, WorkerError> {
        let taps = OutputTaps::default();
        let (stdin, events) = spawn_cli(
            runtime.as_ref(),
            settings,
            container_id,
            &profile,
            None,
            &taps,
            token.as_ref(),
        )
        .await?;
        let mut worker = Worker {
            id,
            container_id: container_id.to_string(),
            profile,
            runtime: runtime.clone(),
            stdin,
            events,
            taps,
            model: None,
            conversation: None,
            models: Vec::new(),
            cli_version: None,
            uses: 0,
            created: Instant::now(),
            broken: None,
            tools: Vec::new(),
            parked: None,
            inbox: VecDeque::new(),
            lists_served: 0,
            token,
            offered: Vec::new(),
            next_request: 0,
            settings: settings.clone(),
            permit: None,
            graveyard: None,
            // The caller removes the container if this function fails.
            removed: true,
        };
        worker.model = worker.launch_model();
        let init = worker
            .control(ControlRequest::Initialize, settings.start_timeout)
            .await?;
        let init = Initialized::from_answer(&init);
        worker.models = init.models;
        worker.cli_version = init.cli_version;
        worker.warm_up(settings.warm_up_turns).await?;
        worker.removed = false;
        tracing::debug!(worker = %worker.id, container = short(container_id), "worker ready");
        Ok(worker)
    }

    /// Replays a conversation the worker did not produce: writes it as a transcript and
    /// replaces the CLI process with one that resumes it. The container stays.
    async fn replay(&mut self, history: &[HistoryMessage]) -> Result<(), WorkerError> {
        let settings = self.settings.clone();
        let session = uuid::Uuid::new_v4().to_string();
        let path = format!(
            "$HOME/{}",
            transcript_path(&settings.sandbox.workspace, &session)
        );
        let (content, first) = transcript(&session, &settings.sandbox.workspace, history);
        write_file(
            self.runtime.as_ref(),
            &settings,
            &self.container_id,
            &path,
            &content,
        )
        .await?;
        self.relaunch(Some(&session)).await?;
        self.conversation = first.map(Conversation::replayed);
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    pub fn profile(&self) -> &LaunchProfile {
        &self.profile
    }

    /// How many requests this worker has served.
    pub fn uses(&self) -> u32 {
        self.uses
    }

    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// The CLI's version, as it reported it when it started.
    pub fn cli_version(&self) -> Option<&str> {
        self.cli_version.as_deref()
    }

    /// The model the CLI uses now; `None` is its default.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The models the CLI listed when it started.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Why the worker must not serve again, if it must not.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The ids of the client tool calls the CLI waits on; empty unless the worker is parked.
    pub fn awaiting_tools(&self) -> &[String] {
        self.parked
            .as_ref()
            .map(|p| p.awaiting.as_slice())
            .unwrap_or_default()
    }

    /// Binds the worker to a capacity slot and to the pool's graveyard.
    pub(crate) fn attach(
        &mut self,
        permit: OwnedSemaphorePermit,
        graveyard: mpsc::UnboundedSender<String>,
    ) {
        self.permit = Some(permit);
        self.graveyard = Some(graveyard);
    }

    /// True unless the CLI process or its container is known to be gone. Costs no I/O: it
    /// only looks at whether the output stream has ended.
    pub fn is_alive(&mut self) -> bool {
        if self.broken.is_some() {
            return false;
        }
        // An idle CLI prints next to nothing: more than this, or more MCP requests waiting
        // than this, is something else writing to its stdout (a background process of an
        // agent), which must not keep this look busy or the inbox growing.
        const IDLE_LINES: usize = 256;
        for _ in 0..IDLE_LINES {
            if self.inbox.len() > IDLE_LINES / 4 {
                break;
            }
            match self.events.next().now_or_never() {
                None => return true,
                Some(Some(Ok(CliEvent::Mcp {
                    request_id,
                    request,
                }))) => self.inbox.push_back((request_id, request)),
                Some(Some(Ok(event @ (CliEvent::Stream(_) | CliEvent::Result(_))))) => {
                    // The CLI prints a turn's output only during a turn: this is a turn the
                    // worker took as ended (a forged `result`), or no CLI at all.
                    let kind = match event {
                        CliEvent::Result(_) => "result",
                        _ => "stream_event",
                    };
                    tracing::warn!(worker = %self.id, kind, "turn output from an idle CLI");
                    self.mark_broken("the CLI printed a turn's output while idle");
                    return false;
                }
                Some(Some(Ok(event))) => {
                    tracing::debug!(worker = %self.id, ?event, "line from an idle CLI");
                }
                Some(Some(Err(e))) => {
                    self.mark_broken(e.to_string());
                    return false;
                }
                Some(None) => {
                    self.mark_broken("the CLI exited while idle");
                    return false;
                }
            }
        }
        tracing::warn!(worker = %self.id, "a flood of lines from an idle CLI");
        self.mark_broken("the CLI printed too much while idle");
        false
    }

    fn mark_broken(&mut self, why: impl Into<String>) {
        if self.broken.is_none() {
            let why = why.into();
            tracing::debug!(worker = %self.id, why = %why, "worker retired");
            self.broken = Some(why);
        }
    }

    async fn write_line(&mut self, line: &StdinLine) -> Result<(), WorkerError> {
        let mut text = line.to_json();
        text.push('\n');
        let result = async {
            self.stdin.write_all(text.as_bytes()).await?;
            self.stdin.flush().await
        }
        .await;
        result.map_err(|e| {
            self.mark_broken(format!("stdin: {e}"));
            WorkerError::Stdin(e)
        })
    }

    /// A control request's id. Its random part keeps an agent that writes to its CLI's stdout
    /// from answering ccpool's control requests in the CLI's place (a forged rewind).
    fn request_id(&mut self) -> String {
        self.next_request += 1;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        format!("ccpool_{}_{}_{}", self.id, self.next_request, &nonce[..16])
    }

    /// Answers an MCP request of the CLI that the in-band server answers by itself
    /// (`initialize`, notifications, `tools/list`). A `tools/call` is handed back: only a
    /// turn knows its result.
    async fn serve_mcp(
        &mut self,
        request_id: String,
        request: McpRequest,
    ) -> Result<Option<CallRequest>, WorkerError> {
        let message = match request {
            McpRequest::Initialize { id } => mcp::initialize_result(&id),
            McpRequest::Notification { .. } => mcp::empty_result(),
            McpRequest::ListTools { id } => {
                self.lists_served += 1;
                mcp::tools_list_result(&id, &self.tools)
            }
            McpRequest::Other { id, method } => mcp::method_not_found(&id, &method),
            McpRequest::CallTool {
                id, tool_use_id, ..
            } => {
                return Ok(Some(CallRequest {
                    request_id,
                    id,
                    tool_use_id,
                }));
            }
        };
        self.write_line(&StdinLine::McpResponse {
            request_id,
            message,
        })
        .await?;
        Ok(None)
    }

    /// Serves an MCP request outside a turn's relay. A tool call is kept for the parked turn
    /// it belongs to, or refused when there is none.
    async fn serve_mcp_aside(
        &mut self,
        request_id: String,
        request: McpRequest,
    ) -> Result<(), WorkerError> {
        if let Some(call) = self.serve_mcp(request_id, request).await? {
            match &mut self.parked {
                Some(parked) => parked.requests.push_back(call),
                None => self.answer_call(call, &[], true).await?,
            }
        }
        Ok(())
    }

    async fn answer_call(
        &mut self,
        call: CallRequest,
        content: &[ContentBlock],
        is_error: bool,
    ) -> Result<(), WorkerError> {
        self.write_line(&StdinLine::McpResponse {
            request_id: call.request_id,
            message: mcp::call_result(&call.id, content, is_error),
        })
        .await
    }

    /// Serves the MCP requests `is_alive` set aside.
    async fn serve_inbox(&mut self) -> Result<(), WorkerError> {
        while let Some((request_id, request)) = self.inbox.pop_front() {
            self.serve_mcp_aside(request_id, request).await?;
        }
        Ok(())
    }

    /// Waits until the CLI has fetched the tool list more than `served` times in all and
    /// answered the control request `ack`, serving MCP requests on the way.
    async fn await_tool_list(
        &mut self,
        served: u64,
        ack: String,
        limit: Duration,
    ) -> Result<(), WorkerError> {
        let wait = async {
            let mut acked = false;
            while !(acked && self.lists_served > served) {
                match self.events.next().await {
                    Some(Ok(CliEvent::ControlResponse { request_id, result }))
                        if request_id == ack =>
                    {
                        if let ControlResult::Error(e) = result {
                            return Err(WorkerError::Refused(e));
                        }
                        acked = true;
                    }
                    Some(Ok(CliEvent::Mcp {
                        request_id,
                        request,
                    })) => self.serve_mcp_aside(request_id, request).await?,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err(WorkerError::Exited(self.stderr_summary())),
                }
            }
            Ok(())
        };
        let result = match tokio::time::timeout(limit, wait).await {
            Ok(r) => r,
            Err(_) => Err(WorkerError::ToolList),
        };
        if let Err(e) = &result {
            self.mark_broken(format!("tool list: {e}"));
        }
        result
    }

    /// Whether the CLI might offer, along with `tools`, a tool of an earlier turn that they
    /// drop (an empty list offers nothing).
    fn would_keep_offering(&self, tools: &[ToolSpec]) -> bool {
        !tools.is_empty()
            && self
                .offered
                .iter()
                .any(|name| !tools.iter().any(|t| &t.name == name))
    }

    /// Makes the CLI offer `tools` from its next upstream request on: the in-band server
    /// notifies `tools/list_changed`, and the CLI fetches the list again at once.
    async fn set_tools(&mut self, tools: Vec<ToolSpec>) -> Result<(), WorkerError> {
        if tools == self.tools {
            return Ok(());
        }
        self.tools = tools;
        let served = self.lists_served;
        let request_id = self.request_id();
        self.write_line(&StdinLine::Control {
            request_id: request_id.clone(),
            request: ControlRequest::McpMessage(mcp::tools_changed()),
        })
        .await?;
        self.await_tool_list(served, request_id, self.settings.interrupt_grace)
            .await
    }

    /// Sends a control request and waits for its answer.
    async fn control(
        &mut self,
        request: ControlRequest,
        limit: Duration,
    ) -> Result<Value, WorkerError> {
        let request_id = self.request_id();
        self.write_line(&StdinLine::Control {
            request_id: request_id.clone(),
            request,
        })
        .await?;
        let wait = async {
            loop {
                match self.events.next().await {
                    Some(Ok(CliEvent::ControlResponse {
                        request_id: id,
                        result,
                    })) if id == request_id => {
                        return match result {
                            ControlResult::Success(v) => Ok(v),
                            ControlResult::Error(e) => Err(WorkerError::Refused(e)),
                        };
                    }
                    Some(Ok(CliEvent::Mcp {
                        request_id,
                        request,
                    })) => self.serve_mcp_aside(request_id, request).await?,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err(WorkerError::Exited(self.stderr_summary())),
                }
            }
        };
        let result = match tokio::time::timeout(limit, wait).await {
            Ok(r) => r,
            Err(_) => Err(WorkerError::Timeout(limit)),
        };
        if let Err(e) = &result {
            if !matches!(e, WorkerError::Refused(_)) {
                self.mark_broken(e.to_string());
            }
        }
        result
    }

    fn stderr_summary(&self) -> String {
        let tail = self
            .taps
            .stderr_tail
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&tail);
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        }
    }

    /// Serves one turn: sends the user message and relays the CLI's events to `out` until
    /// the turn's `result`. When `cancel` fires or `out` is closed (the client left), the CLI
    /// is interrupted; if it does not stop within the grace period, or stays silent past the
    /// watchdog limit, it is killed. Never hangs and never panics: every end is an outcome.
    pub async fn run_turn(
        &mut self,
        request: TurnRequest,
        out: &mpsc::Sender<TurnItem>,
        cancel: &CancellationToken,
    ) -> TurnOutcome {
        self.uses += 1;
        if self.broken.is_some() || !self.is_alive() {
            return TurnOutcome::failed(format!(
                "worker unusable: {}",
                self.broken.clone().unwrap_or_default()
            ));
        }
        if let Err(e) = self.serve_inbox().await {
            return TurnOutcome::failed(e.to_string());
        }
        if self.parked.is_some() {
            return self.resume(request.content, out, cancel).await;
        }
        let (history, content) = results_into_history(request.history, request.content);
        let tools = match request.tool_choice {
            ToolChoice::None => Vec::new(),
            _ => request.tools,
        };
        if history.is_empty() && self.conversation.is_none() && self.would_keep_offering(&tools) {
            // A new conversation that must not be offered a tool of an earlier one: a new
            // process, which lists exactly these tools from its start.
            self.tools = tools.clone();
            if let Err(e) = self.relaunch(None).await {
                return TurnOutcome::failed(format!("starting the CLI for a new tool list: {e}"));
            }
        }
        if !history.is_empty() {
            if let Err(e) = self.replay(&history).await {
                self.mark_broken(format!("replaying the history: {e}"));
                return TurnOutcome::failed(format!("replaying the history: {e}"));
            }
        }
        if let Some(model) = request.model.clone() {
            if self.model.as_ref() != Some(&model) {
                let limit = self.settings.interrupt_grace;
                match self
                    .control(ControlRequest::SetModel(model.clone()), limit)
                    .await
                {
                    Ok(_) => self.model = Some(model),
                    Err(WorkerError::Refused(e)) => {
                        return TurnOutcome {
                            status: TurnStatus::UpstreamError {
                                status: Some(400),
                                kind: Some("invalid_request_error".into()),
                                message: format!("model {model}: {e}"),
                            },
                            ..TurnOutcome::failed("")
                        };
                    }
                    Err(e) => return TurnOutcome::failed(e.to_string()),
                }
            }
        }
        if let Err(e) = self.set_tools(tools).await {
            return TurnOutcome::failed(format!("changing the tool list: {e}"));
        }
        for tool in &self.tools {
            if !self.offered.contains(&tool.name) {
                self.offered.push(tool.name.clone());
            }
        }
        let line = self.user_line(content);
        if let Err(e) = self.write_line(&line).await {
            return TurnOutcome::failed(e.to_string());
        }
        self.relay_until_result(HashMap::new(), out, cancel).await
    }

    /// Resumes a parked turn: `content` must answer every awaited call (tool results, in
    /// any order; other blocks go with the last result, since a CLI mid-turn takes no user
    /// message). The CLI gets the results as the answers to its `tools/call` requests, and
    /// the model's next message is relayed as this turn.
    async fn resume(
        &mut self,
        content: Vec<ContentBlock>,
        out: &mpsc::Sender<TurnItem>,
        cancel: &CancellationToken,
    ) -> TurnOutcome {
        let awaiting = self.awaiting_tools().to_vec();
        let mut answers: HashMap<String, (Vec<ContentBlock>, bool)> = HashMap::new();
        let mut extra = Vec::new();
        for block in content {
            match block {
                ContentBlock::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } => {
                    if !awaiting.contains(&tool_use_id) {
                        return resume_error(format!(
                            "tool_result for an unknown tool call {tool_use_id:?}; the calls \
                             awaiting a result are {awaiting:?}"
                        ));
                    }
                    if answers
                        .insert(tool_use_id.clone(), (content, is_error))
                        .is_some()
                    {
                        return resume_error(format!(
                            "more than one tool_result for the tool call {tool_use_id:?}"
                        ));
                    }
                }
                other => extra.push(other),
            }
        }
        let missing: Vec<&String> = awaiting
            .iter()
            .filter(|id| !answers.contains_key(*id))
            .collect();
        if !missing.is_empty() {
            return resume_error(format!(
                "the tool calls {missing:?} have no tool_result; each tool_use needs one"
            ));
        }
        if let Some(last) = awaiting.last().and_then(|id| answers.get_mut(id)) {
            last.0.extend(extra);
        }
        let Some(parked) = self.parked.take() else {
            return resume_error("no tool call is awaiting a result".into());
        };
        // The first call's request has usually arrived already; the CLI sends the next one
        // once the previous is answered, so the others are answered as they come.
        for call in parked.requests {
            let Some((content, is_error)) = answers.remove(&call.tool_use_id) else {
                self.mark_broken(format!("unexpected tool call {}", call.tool_use_id));
                return TurnOutcome::failed("the CLI asked for a tool call it had not made");
            };
            if let Err(e) = self.answer_call(call, &content, is_error).await {
                return TurnOutcome::failed(e.to_string());
            }
        }
        self.relay_until_result(answers, out, cancel).await
    }

    /// Relays the turn to `out` until its `result`, or until it parks on client tool calls.
    /// `answers` are client tool results to give the CLI as it asks for them.
    async fn relay_until_result(
        &mut self,
        mut answers: HashMap<String, (Vec<ContentBlock>, bool)>,
        out: &mpsc::Sender<TurnItem>,
        cancel: &CancellationToken,
    ) -> TurnOutcome {
        let silence_limit = self.settings.silence_limit;
        let grace = self.settings.interrupt_grace;
        // Set once the CLI has been asked to stop: until when it may take, and why.
        let mut stopping: Option<(tokio::time::Instant, Option<String>)> = None;
        let mut message = MessageAnswer::default();
        let mut answer: Option<Vec<ContentBlock>> = None;
        let mut streamed_text = String::new();
        let mut check = StreamCheck::default();
        let mut calls: VecDeque<CallRequest> = VecDeque::new();
        // The client tool calls this turn made (a `tools/call` for any other is not the CLI's).
        let mut made: Vec<String> = answers.keys().cloned().collect();
        // Blocks of the current message calling a client tool this turn did not offer.
        let mut unoffered: Vec<u32> = Vec::new();
        // Whether the current message has relayed a tool call.
        let mut calls_relayed = false;
        let budget_from = self.taps.stdout_bytes();
        loop {
            let wait = match stopping {
                Some((deadline, _)) => {
                    deadline.saturating_duration_since(tokio::time::Instant::now())
                }
                None => silence_limit,
            };
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled(), if stopping.is_none() => {
                    stopping = Some(self.interrupt(None).await);
                    continue;
                }
                next = tokio::time::timeout(wait, self.events.next()) => next,
            };
            match next {
                Err(_) => match stopping {
                    None => {
                        let why = format!("the CLI was silent for {silence_limit:?}");
                        tracing::warn!(worker = %self.id, "{why}; interrupting");
                        stopping = Some(self.interrupt(Some(why)).await);
                    }
                    Some((_, failure)) => {
                        self.kill_cli().await;
                        let why = failure.unwrap_or_else(|| {
                            format!("the CLI did not stop within {grace:?} of an interrupt")
                        });
                        return TurnOutcome::failed(why);
                    }
                },
                Ok(None) => {
                    let why = format!("the CLI exited mid-turn{}", self.stderr_summary());
                    self.mark_broken(why.clone());
                    return TurnOutcome::failed(why);
                }
                Ok(Some(Err(e))) => {
                    self.mark_broken(e.to_string());
                    self.kill_cli().await;
                    return TurnOutcome::failed(e.to_string());
                }
                Ok(Some(Ok(_)))
                    if self.taps.stdout_bytes() - budget_from > self.settings.max_turn_bytes =>
                {
                    let why = format!(
                        "the CLI printed more than {} bytes in one turn",
                        self.settings.max_turn_bytes
                    );
                    self.mark_broken(why.clone());
                    self.kill_cli().await;
                    return TurnOutcome::failed(why);
                }
                Ok(Some(Ok(event))) => match event {
                    CliEvent::Stream(event) => {
                        if !check.observe(&event) || stopping.is_some() {
                            continue;
                        }
                        let Some(event) = event.to_turn_event() else {
                            continue;
                        };
                        if self.unoffered_call(&event, &mut unoffered) {
                            continue;
                        }
                        let event = match event {
                            // Every call of the message was hidden: no call for the client.
                            TurnEvent::MessageDelta {
                                stop_reason: Some(StopReason::ToolUse),
                                stop_sequence,
                                usage,
                            } if !unoffered.is_empty() && !calls_relayed => {
                                TurnEvent::MessageDelta {
                                    stop_reason: Some(StopReason::EndTurn),
                                    stop_sequence,
                                    usage,
                                }
                            }
                            event => event,
                        };
                        message.observe(&event);
                        match &event {
                            TurnEvent::MessageStart { .. } => calls_relayed = false,
                            TurnEvent::BlockStart {
                                block: BlockKind::ToolUse { id, name },
                                ..
                            } => {
                                calls_relayed = true;
                                if mcp::client_name(name).is_some() {
                                    made.push(id.clone());
                                }
                            }
                            _ => {}
                        }
                        let event = client_facing(event);
                        if let TurnEvent::BlockDelta {
                            delta: BlockDelta::Text(text),
                            ..
                        } = &event
                        {
                            streamed_text.push_str(text);
                        }
                        let ended = event == TurnEvent::MessageStop;
                        if out.send(TurnItem::Event(event)).await.is_err() {
                            stopping = Some(self.interrupt(None).await);
                            continue;
                        }
                        if !ended {
                            continue;
                        }
                        let done = std::mem::take(&mut message);
                        if done.stop_reason == Some(StopReason::ToolUse)
                            && !done.client_calls.is_empty()
                        {
                            // The CLI now waits on the client: the turn ends here, parked.
                            let awaiting = done.client_calls.clone();
                            let outcome = TurnOutcome {
                                status: TurnStatus::Completed,
                                stop_reason: Some(StopReason::ToolUse),
                                usage: done.usage,
                                text: done.text(),
                                structured_output: None,
                                streamed_text: std::mem::take(&mut streamed_text),
                                answer: answer.unwrap_or(done.blocks),
                                awaiting_tools: awaiting.clone(),
                            };
                            self.parked = Some(Parked {
                                awaiting,
                                requests: std::mem::take(&mut calls),
                            });
                            return outcome;
                        }
                        answer.get_or_insert(done.blocks);
                    }
                    CliEvent::Mcp {
                        request_id,
                        request,
                    } => match self.serve_mcp(request_id, request).await {
                        Ok(Some(call)) if !made.contains(&call.tool_use_id) => {
                            // Not a call of this turn: an agent writing to the CLI's stdout.
                            tracing::warn!(worker = %self.id, "a tool call this turn did not make");
                            if let Err(e) = self.answer_call(call, &[], true).await {
                                return TurnOutcome::failed(e.to_string());
                            }
                        }
                        Ok(Some(call)) => match answers.remove(&call.tool_use_id) {
                            Some((content, is_error)) => {
                                if let Err(e) = self.answer_call(call, &content, is_error).await {
                                    return TurnOutcome::failed(e.to_string());
                                }
                            }
                            None if stopping.is_some() => {
                                let _ = self.answer_call(call, &[], true).await;
                            }
                            None => calls.push_back(call),
                        },
                        Ok(None) => {}
                        Err(e) => return TurnOutcome::failed(e.to_string()),
                    },
                    CliEvent::Result(result) => {
                        let mut outcome = result.outcome();
                        if stopping.is_none() {
                            check.judge(&mut outcome);
                        }
                        outcome.streamed_text = std::mem::take(&mut streamed_text);
                        outcome.answer = answer.take().unwrap_or(message.blocks);
                        if let Some((_, Some(failure))) = stopping {
                            // The watchdog fired: the turn failed even if the CLI ended it.
                            self.mark_broken(failure.clone());
                            outcome.status = TurnStatus::WorkerFailed(failure);
                        }
                        return outcome;
                    }
                    _ => {}
                },
            }
        }
    }

    /// True for an event of a block that calls a client tool this turn does not offer: the
    /// model cannot call it through this turn's CLI (it would be answered as unknown), so
    /// the block is a forged line or a stale tool; it is neither relayed nor waited on.
    /// `unoffered` holds the current message's such blocks.
    fn unoffered_call(&self, event: &TurnEvent, unoffered: &mut Vec<u32>) -> bool {
        match event {
            TurnEvent::MessageStart { .. } => {
                unoffered.clear();
                false
            }
            TurnEvent::BlockStart {
                index,
                block: BlockKind::ToolUse { name, .. },
            } => match mcp::client_name(name) {
                Some(client) if !self.tools.iter().any(|t| t.name == client) => {
                    tracing::warn!(worker = %self.id, "a call of a client tool not offered");
                    unoffered.push(*index);
                    true
                }
                _ => false,
            },
            TurnEvent::BlockDelta { index, .. } | TurnEvent::BlockStop { index } => {
                unoffered.contains(index)
            }
            _ => false,
        }
    }

    /// Asks the CLI to stop the running turn; returns when to give up on it and, when the
    /// stop is a failure (the watchdog), why.
    async fn interrupt(
        &mut self,
        failure: Option<String>,
    ) -> (tokio::time::Instant, Option<String>) {
        let request_id = self.request_id();
        let line = StdinLine::Control {
            request_id,
            request: ControlRequest::Interrupt,
        };
        if let Err(e) = self.write_line(&line).await {
            tracing::debug!(worker = %self.id, cause = %e, "sending interrupt");
        }
        (
            tokio::time::Instant::now() + self.settings.interrupt_grace,
            failure,
        )
    }

    /// Kills the CLI process (not the container) and marks the worker broken.
    pub async fn kill_cli(&mut self) {
        self.mark_broken("the CLI was killed");
        self.kill_process().await;
    }

    async fn kill_process(&mut self) {
        let spec = ExecSpec {
            cmd: kill_cli_command(),
            env: Vec::new(),
            user: Some(self.settings.sandbox.user.clone()),
            working_dir: None,
        };
        if let Err(e) = run_to_end(self.runtime.as_ref(), &self.container_id, &spec, b"").await {
            tracing::debug!(worker = %self.id, cause = %e, "killing the CLI");
        }
    }

    /// Ends a parked turn whose client did not come back: the CLI is interrupted while it
    /// waits on the tool calls, which are answered as failed, and the turn ends.
    async fn end_parked_turn(&mut self, limit: Duration) -> Result<(), WorkerError> {
        let Some(parked) = self.parked.take() else {
            return Ok(());
        };
        self.interrupt(None).await;
        for call in parked.requests {
            self.answer_call(call, &[], true).await?;
        }
        self.skip_to_result(limit).await
    }

    /// Reads the CLI's output up to the current turn's `result`, whatever it says, serving
    /// MCP requests on the way (a turn no client sees: a parked one ending, a warm-up).
    async fn skip_to_result(&mut self, limit: Duration) -> Result<(), WorkerError> {
        let wait = async {
            loop {
                match self.events.next().await {
                    Some(Ok(CliEvent::Result(_))) => return Ok(()),
                    Some(Ok(CliEvent::Mcp {
                        request_id,
                        request,
                    })) => self.serve_mcp_aside(request_id, request).await?,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err(WorkerError::Exited(self.stderr_summary())),
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(r) => r,
            Err(_) => Err(WorkerError::Timeout(limit)),
        }
    }

    /// Removes the container now and waits for it.
    pub async fn remove(mut self) {
        self.removed = true;
        if let Err(e) = self.runtime.remove_container(&self.container_id).await {
            tracing::warn!(worker = %self.id, cause = %e, "removing a worker container");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        match &self.graveyard {
            Some(graveyard) if graveyard.send(self.container_id.clone()).is_ok() => {}
            _ => {
                // No pool to hand it to: remove it on the runtime if there is one.
                let runtime = self.runtime.clone();
                let id = self.container_id.clone();
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = runtime.remove_container(&id).await;
                    });
                }
            }
        }
    }
}

/// Tool results in a new user message, with no parked turn to take them: a CLI takes tool
/// results only as answers to its own calls, so they go into the replayed history, and the
/// rest of the message is sent as the prompt.
fn results_into_history(
    mut history: Vec<HistoryMessage>,
    content: Vec<ContentBlock>,
) -> (Vec<HistoryMessage>, Vec<ContentBlock>) {
    let (results, rest): (Vec<ContentBlock>, Vec<ContentBlock>) = content
        .into_iter()
        .partition(|b| matches!(b, ContentBlock::ToolResult { .. }));
    if !results.is_empty() {
        history.push(HistoryMessage {
            role: Role::User,
            content: results,
        });
    }
    (history, rest)
}

/// One upstream message as the client will send it back: its text and client tool calls.
#[derive(Debug, Default)]
struct MessageAnswer {
    blocks: Vec<ContentBlock>,
    /// Upstream block index → position in `blocks`.
    positions: HashMap<u32, usize>,
    /// The tool-use ids of the client tool calls, in order.
    client_calls: Vec<String>,
    usage: Usage,
    stop_reason: Option<StopReason>,
}

impl MessageAnswer {
    /// Takes in one event of the message, as the upstream sent it (model-facing names).
    fn observe(&mut self, event: &TurnEvent) {
        match event {
            TurnEvent::MessageStart { usage, .. } => self.usage = *usage,
            TurnEvent::BlockStart { index, block } => {
                let block = match block {
                    BlockKind::Text => ContentBlock::Text(String::new()),
                    BlockKind::ToolUse { id, name } => match mcp::client_name(name) {
                        Some(name) => {
                            self.client_calls.push(id.clone());
                            ContentBlock::ToolUse {
                                id: id.clone(),
                                name: name.to_string(),
                                input: String::new(),
                            }
                        }
                        None => return,
                    },
                    _ => return,
                };
                self.positions.insert(*index, self.blocks.len());
                self.blocks.push(block);
            }
            TurnEvent::BlockDelta { index, delta } => {
                let Some(&at) = self.positions.get(index) else {
                    return;
                };
                match (&mut self.blocks[at], delta) {
                    (ContentBlock::Text(text), BlockDelta::Text(more)) => text.push_str(more),
                    (ContentBlock::ToolUse { input, .. }, BlockDelta::InputJson(more)) => {
                        input.push_str(more)
                    }
                    _ => {}
                }
            }
            TurnEvent::MessageDelta {
                stop_reason, usage, ..
            } => {
                self.stop_reason = stop_reason.clone();
                self.usage.output_tokens = usage.output_tokens;
            }
            TurnEvent::BlockStop { index } => {
                // A call without input deltas has the empty object as its input.
                if let Some(&at) = self.positions.get(index) {
                    if let ContentBlock::ToolUse { input, .. } = &mut self.blocks[at] {
                        if input.is_empty() {
                            input.push_str("{}");
                        }
                    }
                }
            }
            TurnEvent::MessageStop => {}
        }
    }

    /// The message's text blocks, joined.
    fn text(&self) -> String {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// An event as the client sees it: a client tool under the client's own name.
fn client_facing(event: TurnEvent) -> TurnEvent {
    match event {
        TurnEvent::BlockStart {
            index,
            block: BlockKind::ToolUse { id, name },
        } => {
            let name = mcp::client_name(&name).map(str::to_string).unwrap_or(name);
            TurnEvent::BlockStart {
                index,
                block: BlockKind::ToolUse { id, name },
            }
        }
        other => other,
    }
}

/// The typed output path of one CLI process: exec frames → stdout bytes (stderr kept aside)
/// → lines of bounded length → CLI events.
fn cli_events(
    output: BoxStream<'static, Result<ExecOutput, RuntimeError>>,
    taps: OutputTaps,
    max_line_bytes: usize,
) -> CliEvents {
    let stderr_tail = taps.stderr_tail.clone();
    let stdout = output.filter_map(move |frame| {
        let tail = stderr_tail.clone();
        async move {
            match frame {
                Ok(ExecOutput::Stdout(bytes)) => Some(Ok::<Bytes, std::io::Error>(bytes)),
                Ok(ExecOutput::Stderr(bytes)) => {
                    if let Ok(mut tail) = tail.lock() {
                        tail.extend_from_slice(&bytes);
                        let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                        tail.drain(..excess);
                    }
                    None
                }
                Err(e) => Some(Err(std::io::Error::other(e))),
            }
        }
    });
    ndjson_lines(Box::pin(stdout), max_line_bytes)
        .map(move |line| {
            let line = line?;
            taps.stdout_bytes
                .fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
            Ok(CliEvent::parse(&line)?)
        })
        .boxed()
}

/// Starts a CLI process for `profile` in a running container (resuming `resume` when set),
/// and returns its stdin and its typed output. The worker's relay token goes in as the first
/// line of stdin, so it is in no exec configuration (which the engine keeps and logs).
async fn spawn_cli(
    runtime: &dyn ContainerRuntime,
    settings: &WorkerSettings,
    container_id: &str,
    profile: &LaunchProfile,
    resume: Option<&str>,
    taps: &OutputTaps,
    token: Option<&WorkerToken>,
) -> Result<(Pin<Box<dyn AsyncWrite + Send>>, CliEvents), WorkerError> {
    let sandbox = &settings.sandbox;
    for (path, content) in launch_files(profile) {
        write_file(runtime, settings, container_id, path, content).await?;
    }
    let relay = settings.relay.as_ref();
    let prelude = match relay.filter(|_| token.is_some()) {
        Some(r) => credential_prelude(r.gateway.token_kind()),
        None => String::new(),
    };
    let mut cmd = with_pid_file(&prelude, cli_argv(&settings.cli, profile));
    if let Some(session) = resume {
        cmd.extend(resume_args(session));
    }
    let mut env = cli_env(&settings.cli, profile, relay.map(|r| r.url.as_str()));
    env.push(("HOME".into(), sandbox.home.clone()));
    let spec = ExecSpec {
        cmd,
        env,
        user: Some(sandbox.user.clone()),
        working_dir: Some(sandbox.workspace.clone()),
    };
    let mut process = runtime.exec(container_id, &spec).await?;
    if let (Some(token), false) = (token, prelude.is_empty()) {
        let line = format!("{}\n", token.secret().expose());
        process
            .stdin
            .write_all(line.as_bytes())
            .await
            .map_err(WorkerError::Stdin)?;
    }
    let events = cli_events(process.output, taps.clone(), settings.max_line_bytes);
    Ok((process.stdin, events))
}

/// Writes `content` to `path` (may start with `$HOME`) inside the container, readable by the
/// worker's user only, through exec stdin: tmpfs mounts cannot be written with `docker cp`.
async fn write_file(
    runtime: &dyn ContainerRuntime,
    settings: &WorkerSettings,
    container_id: &str,
    path: &str,
    content: &str,
) -> Result<(), WorkerError> {
    let script = format!("umask 077 && mkdir -p \"$(dirname \"{path}\")\" && cat > \"{path}\"");
    let spec = ExecSpec {
        cmd: vec!["bash".into(), "-c".into(), script],
        env: vec![("HOME".into(), settings.sandbox.home.clone())],
        user: Some(settings.sandbox.user.clone()),
        working_dir: None,
    };
    let code = run_to_end(runtime, container_id, &spec, content.as_bytes()).await?;
    if code != 0 {
        return Err(WorkerError::WriteFile(code));
    }
    Ok(())
}

/// What a short command printed and how it exited.
pub struct CommandOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs a short command in a container to its end, feeding it `stdin`, and collects its output.
pub async fn run_command(
    runtime: &dyn ContainerRuntime,
    container_id: &str,
    spec: &ExecSpec,
    stdin: &[u8],
) -> Result<CommandOutput, WorkerError> {
    let mut process = runtime.exec(container_id, spec).await?;
    process
        .stdin
        .write_all(stdin)
        .await
        .map_err(WorkerError::Stdin)?;
    process.stdin.shutdown().await.map_err(WorkerError::Stdin)?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(frame) = process.output.next().await {
        match frame? {
            ExecOutput::Stdout(b) => stdout.extend_from_slice(&b),
            ExecOutput::Stderr(b) => stderr.extend_from_slice(&b),
        }
    }
    let exit_code = runtime.exec_exit_code(&process.id).await?.unwrap_or(-1);
    Ok(CommandOutput {
        exit_code,
        stdout,
        stderr,
    })
}

/// Runs a short command to its end, feeding it `stdin`; returns its exit code.
async fn run_to_end(
    runtime: &dyn ContainerRuntime,
    container_id: &str,
    spec: &ExecSpec,
    stdin: &[u8],
) -> Result<i64, WorkerError> {
    Ok(run_command(runtime, container_id, spec, stdin)
        .await?
        .exit_code)
}
