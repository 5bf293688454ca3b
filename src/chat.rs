//! The business function every API dialect calls: serve one chat request, on a pooled worker
//! or in a session (`start`, `Target`), and turn the worker's turn into exactly what the
//! client asked for. Relays only the first
//! upstream message (the CLI continues on its own after a `max_tokens` stop: that is cut and
//! interrupted), enforces stop sequences on the streamed text, and hides thinking blocks the
//! client did not ask for, keeping block indexes dense. Knows domain types only.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};

use crate::domain::{
    BlockDelta, BlockKind, LaunchProfile, OwnerKey, StopReason, ToolChoice, TurnEvent, TurnItem,
    TurnOutcome, TurnRequest, TurnStatus, Usage,
};
use crate::pool::{PoolError, TurnStream, WarmPool};
use crate::sessions::{SessionError, SessionOptions, Sessions};

/// One chat request, translated from either dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatRequest {
    pub owner: OwnerKey,
    pub profile: LaunchProfile,
    pub turn: TurnRequest,
    /// Cut the text at the first of these, and stop.
    pub stop_sequences: Vec<String>,
    /// Relay thinking blocks (otherwise they are dropped).
    pub include_thinking: bool,
    /// The profile has a JSON schema: the answer is the validated object, which comes at the
    /// end (`ChatEnd::structured_output`); no block is relayed, and the CLI's second upstream
    /// turn is part of the request.
    pub structured: bool,
    /// Set by `force_tool`: the structured answer is presented as this tool call.
    pub forced_tool: Option<ForcedTool>,
    /// At most one tool call per message (Anthropic's `disable_parallel_tool_use`, OpenAI's
    /// `parallel_tool_calls: false`). The CLI has no such switch: a message is cut before its
    /// second call (see `ChatStream::single_tool_call`).
    pub single_tool_call: bool,
}

/// A tool call the client forced (`tool_choice` any or a named tool). The CLI has no switch
/// for it, so the request is answered through `--json-schema`, and the validated object is
/// presented as the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForcedTool {
    /// The object is this tool's input (its input schema is the JSON schema).
    One(String),
    /// Any of several tools: the object is `{"call": {"name": …, "input": …}}`.
    AnyOf,
}

impl ChatRequest {
    /// Turns a forced `tool_choice` into a structured request whose answer is a call: the JSON
    /// schema is the tool's input schema (or, for `Any` over several tools, a choice of
    /// `{name, input}` objects), no tool is offered, and `forced_tool` says how to present the
    /// object. Exact: the call's name and an input valid against the schema. Approximate: the
    /// model answers through the CLI's `StructuredOutput` tool, the call's id is ccpool's, the
    /// worker is not parked (the results replay the history), and a worker is started for
    /// that schema. Nothing changes for `Auto` and `None`; a named tool that is not offered is
    /// an error.
    pub fn force_tool(&mut self) -> Result<(), String> {
        let tools = &self.turn.tools;
        let (schema, forced) = match &self.turn.tool_choice {
            ToolChoice::Auto | ToolChoice::None => return Ok(()),
            ToolChoice::Tool(name) => {
                let tool = tools.iter().find(|t| &t.name == name).ok_or_else(|| {
                    format!("tool_choice names the tool {name:?}, which is not in tools")
                })?;
                (tool.input_schema.clone(), ForcedTool::One(name.clone()))
            }
            ToolChoice::Any => match tools.as_slice() {
                [] => {
                    return Err("tool_choice requires a tool call, but no tools were given".into());
                }
                [tool] => (
                    tool.input_schema.clone(),
                    ForcedTool::One(tool.name.clone()),
                ),
                several => {
                    let choices: Vec<serde_json::Value> = several
                        .iter()
                        .map(|t| {
                            serde_json::json!({
                                "type": "object",
                                "properties": {
                                    "name": {"const": t.name},
                                    "input": serde_json::from_str::<serde_json::Value>(&t.input_schema)
                                        .unwrap_or_else(|_| serde_json::json!({"type": "object"})),
                                },
                                "required": ["name", "input"],
                            })
                        })
                        .collect();
                    let schema = serde_json::json!({
                        "type": "object",
                        "properties": {"call": {"anyOf": choices}},
                        "required": ["call"],
                    });
                    (schema.to_string(), ForcedTool::AnyOf)
                }
            },
        };
        self.profile.json_schema = Some(schema);
        self.turn.tools = Vec::new();
        self.turn.tool_choice = ToolChoice::Auto;
        self.structured = true;
        self.forced_tool = Some(forced);
        Ok(())
    }
}

/// The call a forced request's structured output stands for: (tool name, input JSON).
fn forced_call(forced: &ForcedTool, object: &str) -> Option<(String, String)> {
    match forced {
        ForcedTool::One(name) => Some((name.clone(), object.to_string())),
        ForcedTool::AnyOf => {
            let value: serde_json::Value = serde_json::from_str(object).ok()?;
            let call = value.get("call")?;
            Some((
                call.get("name")?.as_str()?.to_string(),
                call.get("input")?.to_string(),
            ))
        }
    }
}

/// Stop sequences a request may carry, and the length of each: the stream stage scans every
/// delta for each of them, so their cost is bounded here whatever the dialect allows.
pub const MAX_STOP_SEQUENCES: usize = 16;
pub const MAX_STOP_SEQUENCE_CHARS: usize = 256;
/// Content blocks a request may carry, history included (each becomes a transcript line).
pub const MAX_CONTENT_BLOCKS: usize = 10_000;

impl ChatRequest {
    /// The bounds every request meets, whatever its dialect, checked before a worker is
    /// touched: the profile's own checks, the stop sequences, the number of blocks.
    pub fn check(&self) -> Result<(), crate::domain::InvalidRequest> {
        use crate::domain::InvalidRequest;
        self.profile.check()?;
        if self.stop_sequences.len() > MAX_STOP_SEQUENCES {
            return Err(InvalidRequest(format!(
                "at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {}",
                self.stop_sequences.len()
            )));
        }
        if let Some(long) = self
            .stop_sequences
            .iter()
            .find(|s| s.chars().count() > MAX_STOP_SEQUENCE_CHARS)
        {
            return Err(InvalidRequest(format!(
                "a stop sequence may have at most {MAX_STOP_SEQUENCE_CHARS} characters, one has {}",
                long.chars().count()
            )));
        }
        if self.stop_sequences.iter().any(String::is_empty) {
            return Err(InvalidRequest("stop sequences must not be empty".into()));
        }
        let blocks = self.turn.content.len()
            + self
                .turn
                .history
                .iter()
                .map(|m| m.content.len())
                .sum::<usize>();
        if blocks > MAX_CONTENT_BLOCKS {
            return Err(InvalidRequest(format!(
                "a request may carry at most {MAX_CONTENT_BLOCKS} content blocks, this one has {blocks}"
            )));
        }
        self.turn.check_tool_pairing()
    }
}

/// What a chat stream yields: events of one message, then one `End`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatItem {
    Event(TurnEvent),
    End(ChatEnd),
}

/// How a chat request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatEnd {
    pub stop_reason: Option<StopReason>,
    pub stop_sequence: Option<String>,
    /// This request's tokens: input and cache from the message's start, output from its end.
    pub usage: Usage,
    /// Why the request failed, if it did.
    pub failure: Option<ChatFailure>,
    /// With a JSON schema: the validated object, as JSON text.
    pub structured_output: Option<String>,
}

/// Why a chat request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatFailure {
    /// The upstream API answered with an error.
    Upstream {
        status: Option<u16>,
        kind: Option<String>,
        message: String,
    },
    /// The worker failed (crash, killed container, watchdog).
    Worker(String),
}

impl ChatRequest {
    /// The profile of the worker to serve this request: the request's profile with its model,
    /// so that a worker is launched with the model it serves and never switches (a switch costs
    /// an upstream validation request and leaves a note). The default profile's model (the
    /// configured default model, or the one the CLI resolves its default to) is left as
    /// `None`: the profile the pool keeps warm.
    pub fn launch_profile(&self, default_model: Option<&str>) -> LaunchProfile {
        let model = self.turn.model.as_deref().or(self.profile.model.as_deref());
        LaunchProfile {
            model: model
                .filter(|&m| Some(m) != default_model)
                .map(str::to_string),
            ..self.profile.clone()
        }
    }
}

/// Where a chat request runs.
#[derive(Clone, Debug, Default)]
pub enum Target {
    /// A worker of the shared pool, checked out for this request.
    #[default]
    Pool,
    /// The session's dedicated worker (the session is created on first use, with `options`).
    Session { id: String, options: SessionOptions },
}

/// How a chat stream relays the turn, decided when it is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The first upstream message only; the CLI's own continuation is cut and interrupted.
    Message,
    /// Tools on, inside a session: every upstream message of the tool loop is relayed as one
    /// message, tool calls hidden, ended once when the turn ends.
    Agentic,
    /// The profile has a JSON schema: nothing is relayed; the validated object comes with the
    /// end, and the CLI's second upstream turn is part of the request.
    Structured,
}

/// A started chat: its stream, and the session it runs in (with whether it forked).
pub struct Started {
    pub stream: ChatStream,
    pub session: Option<SessionStarted>,
}

/// The session a chat runs in.
pub struct SessionStarted {
    pub id: String,
    /// The history diverged from the session's and was replayed.
    pub forked: bool,
}

/// Why a chat could not start.
#[derive(Debug)]
pub enum StartError {
    /// Refused before any worker was touched (a 400).
    Invalid(crate::domain::InvalidRequest),
    Pool(PoolError),
    Session(SessionError),
}

/// Starts a chat request on its target: a pooled worker (the one holding its conversation
/// when it continues one, else a checked-out worker that replays the history), or the
/// request's session.
pub async fn start(
    pool: &WarmPool,
    sessions: &Sessions,
    target: Target,
    mut request: ChatRequest,
) -> Result<Started, StartError> {
    if request.forced_tool.is_none() {
        // The dialects check tool names first; what is left falls back to the model's choice.
        if let Err(why) = request.force_tool() {
            tracing::debug!(why = %why, "tool_choice not forced");
        }
    }
    let forced = request.forced_tool.clone();
    // What the request or the CLI would refuse is refused here, at once: a worker that
    // cannot start would cost a container and a long wait.
    request.check().map_err(StartError::Invalid)?;
    crate::cli::check_profile(&request.profile).map_err(StartError::Invalid)?;
    let structured = request.structured;
    let mode = |agentic: bool| match (structured, agentic) {
        (true, _) => Mode::Structured,
        (false, true) => Mode::Agentic,
        (false, false) => Mode::Message,
    };
    // A worker is launched with the model it serves (see `ChatRequest::launch_profile`); the
    // default profile's model is its own.
    let profile = request.launch_profile(pool.default_model().as_deref());
    if profile.model.is_none() && request.turn.model.is_some() {
        // The request names the default profile's model, which its workers run already (the
        // CLI's default when none is configured): no model switch.
        request.turn.model = pool.settings().cli.model.clone();
    }
    match target {
        Target::Pool => {
            // The worker holding this conversation, when the request continues one.
            let turn = pool
                .run_conversation(&profile, &request.owner, request.turn)
                .await
                .map_err(StartError::Pool)?;
            let stream = ChatStream::new(
                turn,
                request.stop_sequences,
                request.include_thinking,
                mode(false),
            )
            .forcing(forced)
            .single_tool_call(request.single_tool_call);
            Ok(Started {
                stream,
                session: None,
            })
        }
        Target::Session { id, options } => {
            let turn = sessions
                .start_turn(&request.owner, &id, &profile, request.turn, options)
                .await
                .map_err(StartError::Session)?;
            let stream = ChatStream::new(
                turn.stream,
                request.stop_sequences,
                request.include_thinking,
                mode(turn.agentic),
            )
            .forcing(forced)
            .single_tool_call(request.single_tool_call);
            Ok(Started {
                stream,
                session: Some(SessionStarted {
                    id,
                    forked: turn.forked,
                }),
            })
        }
    }
}

/// The events of one chat request, shaped for the client.
pub struct ChatStream {
    turn: Pin<Box<dyn Stream<Item = TurnItem> + Send>>,
    interrupt: Box<dyn Fn() + Send>,
    out: VecDeque<ChatItem>,
    stops: StopScanner,
    include_thinking: bool,
    /// Upstream block index → client block index; dropped blocks are absent.
    indexes: HashMap<(u32, u32), u32>,
    /// Upstream messages seen (block indexes restart in each).
    messages: u32,
    mode: Mode,
    agentic_output: u64,
    next_index: u32,
    /// The first upstream message has started / ended.
    started: bool,
    finished_message: bool,
    /// Set when ccpool itself ended the message (stop sequence, `max_tokens` continuation).
    cut: Option<(StopReason, Option<String>)>,
    stop_reason: Option<StopReason>,
    usage: Usage,
    /// Deltas relayed, the output-token estimate when ccpool cuts the message.
    deltas: u64,
    /// A forced tool call: the structured output is relayed as that call.
    forced: Option<ForcedTool>,
    /// The first upstream message's id and model (for a forced call's message).
    first_message: Option<(String, String)>,
    /// At most one tool call per message; `calls` counts those relayed.
    single_call: bool,
    calls: u32,
    done: bool,
}

impl ChatStream {
    pub fn new(
        turn: TurnStream,
        stop_sequences: Vec<String>,
        include_thinking: bool,
        mode: Mode,
    ) -> Self {
        let stop = turn.interrupt_handle();
        Self::from_parts(
            Box::pin(turn),
            Box::new(move || stop.cancel()),
            stop_sequences,
            include_thinking,
            mode,
        )
    }

    /// A chat stream over any turn items; `interrupt` asks the worker to stop.
    pub fn from_parts(
        turn: Pin<Box<dyn Stream<Item = TurnItem> + Send>>,
        interrupt: Box<dyn Fn() + Send>,
        stop_sequences: Vec<String>,
        include_thinking: bool,
        mode: Mode,
    ) -> Self {
        ChatStream {
            turn,
            interrupt,
            out: VecDeque::new(),
            stops: StopScanner::new(stop_sequences),
            include_thinking,
            indexes: HashMap::new(),
            messages: 0,
            mode,
            agentic_output: 0,
            next_index: 0,
            started: false,
            finished_message: false,
            cut: None,
            stop_reason: None,
            usage: Usage::default(),
            deltas: 0,
            forced: None,
            first_message: None,
            single_call: false,
            calls: 0,
            done: false,
        }
    }

    /// Presents a structured answer as the forced tool call (see `ChatRequest::force_tool`).
    pub fn forcing(mut self, forced: Option<ForcedTool>) -> Self {
        self.forced = forced;
        self
    }

    /// Relays at most one tool call per message: the message ends (`tool_use`) where a second
    /// call would start, and the CLI is interrupted. The worker's context then holds more than
    /// the client saw, so it is not kept for the conversation: the client's results are
    /// replayed with the one call it got, and the model never sees the others.
    pub fn single_tool_call(mut self, single: bool) -> Self {
        self.single_call = single;
        self
    }

    fn relaying(&self) -> bool {
        self.cut.is_none() && (self.mode == Mode::Agentic || !self.finished_message)
    }

    fn stop_here(&mut self, reason: StopReason, sequence: Option<String>) {
        self.cut = Some((reason, sequence));
        (self.interrupt)();
    }

    fn on_event(&mut self, event: TurnEvent) {
        if self.mode == Mode::Structured {
            // The object arrives with the result; the tool call that carries it is not text.
            if let TurnEvent::MessageStart { id, model, usage } = event {
                if !self.started {
                    self.started = true;
                    self.usage = usage;
                    self.first_message = Some((id, model));
                }
            }
            return;
        }
        match event {
            TurnEvent::MessageStart { id, model, usage } => {
                self.messages += 1;
                if self.started {
                    // A later upstream message: part of a tool loop in agentic mode, else the
                    // CLI going on by itself after the first one.
                    if self.mode != Mode::Agentic && self.cut.is_none() {
                        self.stop_here(
                            self.stop_reason.clone().unwrap_or(StopReason::EndTurn),
                            None,
                        );
                    }
                    return;
                }
                self.started = true;
                self.usage = usage;
                self.out.push_back(ChatItem::Event(TurnEvent::MessageStart {
                    id,
                    model,
                    usage,
                }));
            }
            TurnEvent::BlockStart { index, block } if self.relaying() => {
                let hidden = match block {
                    BlockKind::Thinking | BlockKind::RedactedThinking { .. } => {
                        !self.include_thinking
                    }
                    // In agentic mode the CLI runs its tools itself; the client sees the text.
                    BlockKind::ToolUse { .. } => self.mode == Mode::Agentic,
                    _ => false,
                };
                if hidden {
                    return;
                }
                if matches!(block, BlockKind::ToolUse { .. }) {
                    self.calls += 1;
                    if self.single_call && self.calls > 1 {
                        self.end_message_here(StopReason::ToolUse);
                        return;
                    }
                }
                let mapped = self.next_index;
                self.next_index += 1;
                self.indexes.insert((self.messages, index), mapped);
                self.out.push_back(ChatItem::Event(TurnEvent::BlockStart {
                    index: mapped,
                    block,
                }));
            }
            TurnEvent::BlockDelta { index, delta } if self.relaying() => {
                let Some(&mapped) = self.indexes.get(&(self.messages, index)) else {
                    return;
                };
                match delta {
                    BlockDelta::Text(text) => {
                        let (emit, hit) = self.stops.push(mapped, &text);
                        self.emit_text(mapped, emit);
                        if let Some(sequence) = hit {
                            self.out
                                .push_back(ChatItem::Event(TurnEvent::BlockStop { index: mapped }));
                            let usage = Usage {
                                output_tokens: self.deltas,
                                ..self.usage
                            };
                            self.usage = usage;
                            self.out.push_back(ChatItem::Event(TurnEvent::MessageDelta {
                                stop_reason: Some(StopReason::StopSequence),
                                stop_sequence: Some(sequence.clone()),
                                usage,
                            }));
                            self.out.push_back(ChatItem::Event(TurnEvent::MessageStop));
                            self.stop_here(StopReason::StopSequence, Some(sequence));
                        }
                    }
                    delta => {
                        self.deltas += 1;
                        self.out.push_back(ChatItem::Event(TurnEvent::BlockDelta {
                            index: mapped,
                            delta,
                        }))
                    }
                }
            }
            TurnEvent::BlockStop { index } if self.relaying() => {
                let Some(&mapped) = self.indexes.get(&(self.messages, index)) else {
                    return;
                };
                let rest = self.stops.flush(mapped);
                self.emit_text(mapped, rest);
                self.out
                    .push_back(ChatItem::Event(TurnEvent::BlockStop { index: mapped }));
            }
            TurnEvent::MessageDelta {
                stop_reason,
                stop_sequence,
                usage,
            } if self.relaying() => {
                self.stop_reason = stop_reason.clone();
                if self.mode == Mode::Agentic {
                    // One message to the client: the end comes once, when the turn ends.
                    self.agentic_output += usage.output_tokens;
                    return;
                }
                self.usage.output_tokens = usage.output_tokens;
                let usage = self.usage;
                self.out.push_back(ChatItem::Event(TurnEvent::MessageDelta {
                    stop_reason,
                    stop_sequence,
                    usage,
                }));
            }
            TurnEvent::MessageStop if self.relaying() => {
                if self.mode == Mode::Agentic {
                    return;
                }
                self.finished_message = true;
                self.out.push_back(ChatItem::Event(TurnEvent::MessageStop));
                if self.stop_reason == Some(StopReason::MaxTokens) {
                    // Without this the CLI asks the model to go on past the limit.
                    self.stop_here(StopReason::MaxTokens, None);
                }
            }
            _ => {}
        }
    }

    /// Ends the client's message before the current event (no block is open then), with an
    /// output-token estimate, and stops the worker.
    fn end_message_here(&mut self, reason: StopReason) {
        self.usage.output_tokens = self.deltas;
        self.out.push_back(ChatItem::Event(TurnEvent::MessageDelta {
            stop_reason: Some(reason.clone()),
            stop_sequence: None,
            usage: self.usage,
        }));
        self.out.push_back(ChatItem::Event(TurnEvent::MessageStop));
        self.stop_here(reason, None);
    }

    fn emit_text(&mut self, index: u32, text: String) {
        if !text.is_empty() {
            self.deltas += 1;
            self.out.push_back(ChatItem::Event(TurnEvent::BlockDelta {
                index,
                delta: BlockDelta::Text(text),
            }));
        }
    }

    fn on_finished(&mut self, outcome: TurnOutcome) {
        if self.mode == Mode::Agentic
            && self.started
            && self.cut.is_none()
            && outcome.status == TurnStatus::Completed
        {
            self.usage.output_tokens = self.agentic_output;
            let usage = self.usage;
            let stop_reason = Some(self.stop_reason.clone().unwrap_or(StopReason::EndTurn));
            self.out.push_back(ChatItem::Event(TurnEvent::MessageDelta {
                stop_reason,
                stop_sequence: None,
                usage,
            }));
            self.out.push_back(ChatItem::Event(TurnEvent::MessageStop));
        }
        // A structured answer spans several upstream turns: the CLI's totals for the turn count.
        let usage = if self.started && self.mode != Mode::Structured {
            self.usage
        } else {
            outcome.usage
        };
        let mut end = ChatEnd {
            stop_reason: None,
            stop_sequence: None,
            usage,
            failure: None,
            structured_output: None,
        };
        match (self.cut.take(), outcome.status) {
            (Some((reason, sequence)), _) => {
                end.stop_reason = Some(reason);
                end.stop_sequence = sequence;
            }
            (None, TurnStatus::Completed) if self.mode == Mode::Structured => {
                let call = match (&self.forced, &outcome.structured_output) {
                    (Some(forced), Some(object)) => forced_call(forced, object),
                    _ => None,
                };
                match outcome.structured_output {
                    Some(_) if call.is_some() => {
                        let (name, input) = call.unwrap_or_default();
                        self.push_forced_call(name, input, usage);
                        end.stop_reason = Some(StopReason::ToolUse);
                    }
                    Some(object) => {
                        end.stop_reason = Some(StopReason::EndTurn);
                        end.structured_output = Some(object);
                    }
                    None => {
                        end.failure = Some(ChatFailure::Worker(
                            "the CLI returned no structured output".into(),
                        ))
                    }
                }
            }
            (None, TurnStatus::Completed) => {
                end.stop_reason = self.stop_reason.clone().or(outcome.stop_reason)
            }
            (
                None,
                TurnStatus::UpstreamError {
                    status,
                    kind,
                    message,
                },
            ) => {
                end.failure = Some(ChatFailure::Upstream {
                    status,
                    kind,
                    message,
                })
            }
            (None, TurnStatus::Interrupted) => {
                end.failure = Some(ChatFailure::Worker("the request was interrupted".into()))
            }
            (None, TurnStatus::WorkerFailed(why)) => end.failure = Some(ChatFailure::Worker(why)),
        }
        self.out.push_back(ChatItem::End(end));
        self.done = true;
    }
}

impl ChatStream {
    /// The message of a forced tool call: one `tool_use` block with the whole input.
    fn push_forced_call(&mut self, name: String, input: String, usage: Usage) {
        let (id, model) = self.first_message.clone().unwrap_or_default();
        let events = [
            TurnEvent::MessageStart { id, model, usage },
            TurnEvent::BlockStart {
                index: 0,
                block: BlockKind::ToolUse {
                    id: format!("toolu_ccpool_{}", uuid::Uuid::new_v4().simple()),
                    name,
                },
            },
            TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::InputJson(input),
            },
            TurnEvent::BlockStop { index: 0 },
            TurnEvent::MessageDelta {
                stop_reason: Some(StopReason::ToolUse),
                stop_sequence: None,
                usage,
            },
            TurnEvent::MessageStop,
        ];
        self.out.extend(events.into_iter().map(ChatItem::Event));
    }
}

impl Stream for ChatStream {
    type Item = ChatItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChatItem>> {
        loop {
            if let Some(item) = self.out.pop_front() {
                return Poll::Ready(Some(item));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.turn.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(TurnItem::Event(event))) => self.on_event(event),
                Poll::Ready(Some(TurnItem::Finished(outcome))) => self.on_finished(outcome),
                Poll::Ready(None) => {
                    self.on_finished(TurnOutcome::failed("the turn ended without an outcome"))
                }
            }
        }
    }
}

/// Finds stop sequences in streamed text, holding back only what could still become one.
struct StopScanner {
    sequences: Vec<String>,
    /// Held-back text per upstream block.
    pending: HashMap<u32, String>,
}

impl StopScanner {
    fn new(sequences: Vec<String>) -> Self {
        let sequences = sequences.into_iter().filter(|s| !s.is_empty()).collect();
        StopScanner {
            sequences,
            pending: HashMap::new(),
        }
    }

    /// Adds text to a block; returns what can be sent now and the stop sequence hit, if any.
    fn push(&mut self, block: u32, text: &str) -> (String, Option<String>) {
        if self.sequences.is_empty() {
            return (text.to_string(), None);
        }
        let mut buf = self.pending.remove(&block).unwrap_or_default();
        buf.push_str(text);
        let hit = self
            .sequences
            .iter()
            .filter_map(|s| buf.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, sequence)) = hit {
            buf.truncate(at);
            return (buf, Some(sequence.clone()));
        }
        let keep = self
            .sequences
            .iter()
            .map(|s| {
                s.char_indices()
                    .map(|(i, _)| i)
                    .skip(1)
                    .filter(|&k| buf.ends_with(&s[..k]))
                    .max()
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let held = buf.split_off(buf.len() - keep);
        if !held.is_empty() {
            self.pending.insert(block, held);
        }
        (buf, None)
    }

    /// The held-back text of a block that ends.
    fn flush(&mut self, block: u32) -> String {
        self.pending.remove(&block).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CliEvent;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The turn items the worker layer yields for a recorded CLI transcript.
    fn recorded(name: &str) -> Vec<TurnItem> {
        let path = format!("{}/tests/fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        let mut items = Vec::new();
        for line in text.lines() {
            match CliEvent::parse(line).unwrap() {
                CliEvent::Stream(s) => items.extend(s.to_turn_event().map(TurnItem::Event)),
                CliEvent::Result(r) => {
                    items.push(TurnItem::Finished(r.outcome()));
                    break;
                }
                _ => {}
            }
        }
        items
    }

    fn run(items: Vec<TurnItem>, stops: &[&str], thinking: bool) -> (Vec<ChatItem>, usize) {
        drive(items, stops, thinking, Mode::Message, |s| s)
    }

    /// Runs a chat stream over `items` (set up further by `with`) to its end: its items and
    /// how many times it interrupted the CLI.
    fn drive(
        items: Vec<TurnItem>,
        stops: &[&str],
        thinking: bool,
        mode: Mode,
        with: impl FnOnce(ChatStream) -> ChatStream,
    ) -> (Vec<ChatItem>, usize) {
        let interrupts = Arc::new(AtomicUsize::new(0));
        let counter = interrupts.clone();
        let stream = ChatStream::from_parts(
            Box::pin(futures::stream::iter(items)),
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
            stops.iter().map(|s| s.to_string()).collect(),
            thinking,
            mode,
        );
        let out = futures::executor::block_on(with(stream).collect::<Vec<_>>());
        (out, interrupts.load(Ordering::SeqCst))
    }

    fn text(items: &[ChatItem]) -> String {
        items
            .iter()
            .filter_map(|i| match i {
                ChatItem::Event(TurnEvent::BlockDelta {
                    delta: BlockDelta::Text(t),
                    ..
                }) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn end(items: &[ChatItem]) -> &ChatEnd {
        match items.last() {
            Some(ChatItem::End(e)) => e,
            other => panic!("no end: {other:?}"),
        }
    }

    #[test]
    fn a_plain_turn_passes_through_with_its_usage() {
        let (items, interrupts) = run(recorded("text_partial"), &[], false);
        assert_eq!(text(&items), "Echo: Say hello");
        let end = end(&items);
        assert_eq!(end.stop_reason, Some(StopReason::EndTurn));
        assert_eq!(end.failure, None);
        assert_eq!((end.usage.input_tokens, end.usage.output_tokens), (12, 9));
        assert_eq!(interrupts, 0);
    }

    #[test]
    fn max_tokens_ends_at_the_first_stop_and_interrupts_the_continuation() {
        let (items, interrupts) = run(recorded("max_tokens_partial"), &[], false);
        let starts = items
            .iter()
            .filter(|i| matches!(i, ChatItem::Event(TurnEvent::MessageStart { .. })))
            .count();
        assert_eq!(starts, 1, "only the first upstream message is relayed");
        assert_eq!(end(&items).stop_reason, Some(StopReason::MaxTokens));
        assert_eq!(end(&items).failure, None);
        assert!(interrupts >= 1);
        let stops = items
            .iter()
            .filter(|i| matches!(i, ChatItem::Event(TurnEvent::MessageStop)))
            .count();
        assert_eq!(stops, 1);
    }

    #[test]
    fn a_stop_sequence_cuts_the_text_even_across_deltas() {
        // text_partial streams "Echo: ", "Say ", "hello": "y he" spans two deltas.
        let (items, interrupts) = run(recorded("text_partial"), &["y he"], false);
        assert_eq!(text(&items), "Echo: Sa");
        let end = end(&items);
        assert_eq!(end.stop_reason, Some(StopReason::StopSequence));
        assert_eq!(end.stop_sequence.as_deref(), Some("y he"));
        assert_eq!(interrupts, 1);
        let tail: Vec<&ChatItem> = items.iter().rev().skip(1).take(3).collect();
        assert!(matches!(tail[0], ChatItem::Event(TurnEvent::MessageStop)));
        assert!(matches!(
            tail[1],
            ChatItem::Event(TurnEvent::MessageDelta {
                stop_reason: Some(StopReason::StopSequence),
                ..
            })
        ));
        assert!(matches!(
            tail[2],
            ChatItem::Event(TurnEvent::BlockStop { .. })
        ));
    }

    #[test]
    fn held_back_text_that_is_not_a_stop_sequence_is_released() {
        let (items, interrupts) = run(recorded("text_partial"), &["Sayonara"], false);
        assert_eq!(text(&items), "Echo: Say hello");
        assert_eq!(end(&items).stop_reason, Some(StopReason::EndTurn));
        assert_eq!(interrupts, 0);
    }

    #[test]
    fn thinking_is_hidden_unless_asked_for_and_indexes_stay_dense() {
        let (hidden, _) = run(recorded("thinking_partial"), &[], false);
        let starts: Vec<(u32, BlockKind)> = hidden
            .iter()
            .filter_map(|i| match i {
                ChatItem::Event(TurnEvent::BlockStart { index, block }) => {
                    Some((*index, block.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(starts, vec![(0, BlockKind::Text)]);
        assert!(hidden.iter().all(
            |i| !matches!(i, ChatItem::Event(TurnEvent::BlockDelta { index, .. }) if *index != 0)
        ));

        let (shown, _) = run(recorded("thinking_partial"), &[], true);
        let kinds: Vec<BlockKind> = shown
            .iter()
            .filter_map(|i| match i {
                ChatItem::Event(TurnEvent::BlockStart { block, .. }) => Some(block.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, vec![BlockKind::Thinking, BlockKind::Text]);
    }

    #[test]
    fn agentic_mode_relays_a_whole_tool_loop_as_one_message() {
        let (out, interrupts) = drive(
            recorded("tool_bash_partial"),
            &[],
            false,
            Mode::Agentic,
            |s| s,
        );
        assert_eq!(interrupts, 0, "the tool loop runs to its end");
        let starts = out
            .iter()
            .filter(|i| matches!(i, ChatItem::Event(TurnEvent::MessageStart { .. })))
            .count();
        let stops = out
            .iter()
            .filter(|i| matches!(i, ChatItem::Event(TurnEvent::MessageStop)))
            .count();
        assert_eq!((starts, stops), (1, 1));
        let kinds: Vec<(u32, BlockKind)> = out
            .iter()
            .filter_map(|i| match i {
                ChatItem::Event(TurnEvent::BlockStart { index, block }) => {
                    Some((*index, block.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds,
            vec![(0, BlockKind::Text), (1, BlockKind::Text)],
            "tool calls hidden, indexes dense"
        );
        assert_eq!(text(&out), "Running a command.The tool said: tool-ran.");
        assert_eq!(end(&out).stop_reason, Some(StopReason::EndTurn));
    }

    #[test]
    fn a_structured_answer_comes_whole_at_the_end() {
        let (out, _) = drive(
            recorded("json_schema_partial"),
            &[],
            false,
            Mode::Structured,
            |s| s,
        );
        assert_eq!(out.len(), 1, "no block is relayed: {out:?}");
        let end = end(&out);
        assert_eq!(end.structured_output.as_deref(), Some(r#"{"answer":42}"#));
        assert_eq!(end.stop_reason, Some(StopReason::EndTurn));
        assert_eq!(end.failure, None);
    }

    #[test]
    fn upstream_errors_and_worker_failures_end_as_failures() {
        let (items, _) = run(recorded("upstream_error_529"), &[], false);
        assert!(matches!(
            &end(&items).failure,
            Some(ChatFailure::Upstream {
                status: Some(529),
                ..
            })
        ));
        let (items, _) = run(
            vec![TurnItem::Finished(TurnOutcome::failed("container died"))],
            &[],
            false,
        );
        assert_eq!(
            end(&items).failure,
            Some(ChatFailure::Worker("container died".into()))
        );
        let (items, _) = run(Vec::new(), &[], false);
        assert!(matches!(end(&items).failure, Some(ChatFailure::Worker(_))));
    }

    #[test]
    fn the_scanner_holds_back_only_possible_prefixes() {
        let mut s = StopScanner::new(vec!["END".into(), "é!".into()]);
        assert_eq!(s.push(0, "abcE"), ("abc".to_string(), None));
        assert_eq!(s.push(0, "Nx"), ("ENx".to_string(), None));
        assert_eq!(s.push(0, "café"), ("caf".to_string(), None));
        assert_eq!(s.push(0, "!tail"), (String::new(), Some("é!".to_string())));
        assert_eq!(s.flush(0), "");
    }

    fn tool(name: &str, schema: &str) -> crate::domain::ToolSpec {
        crate::domain::ToolSpec {
            name: name.into(),
            description: None,
            input_schema: schema.into(),
        }
    }

    fn forced_request(choice: ToolChoice) -> ChatRequest {
        ChatRequest {
            owner: OwnerKey::anonymous(),
            profile: LaunchProfile::default(),
            turn: TurnRequest {
                tools: vec![
                    tool(
                        "record",
                        r#"{"type":"object","properties":{"answer":{"type":"integer"}}}"#,
                    ),
                    tool("other", r#"{"type":"object"}"#),
                ],
                tool_choice: choice,
                ..TurnRequest::text("go")
            },
            stop_sequences: Vec::new(),
            include_thinking: false,
            structured: false,
            forced_tool: None,
            single_tool_call: false,
        }
    }

    #[test]
    fn a_forced_tool_becomes_a_json_schema_and_nothing_else_changes_otherwise() {
        let mut named = forced_request(ToolChoice::Tool("record".into()));
        named.force_tool().unwrap();
        assert_eq!(named.forced_tool, Some(ForcedTool::One("record".into())));
        assert_eq!(
            named.profile.json_schema.as_deref(),
            Some(r#"{"type":"object","properties":{"answer":{"type":"integer"}}}"#)
        );
        assert!(named.structured && named.turn.tools.is_empty());

        let mut any = forced_request(ToolChoice::Any);
        any.force_tool().unwrap();
        assert_eq!(any.forced_tool, Some(ForcedTool::AnyOf));
        let schema: serde_json::Value =
            serde_json::from_str(any.profile.json_schema.as_deref().unwrap()).unwrap();
        assert_eq!(schema["type"], "object");
        assert_eq!(
            schema["properties"]["call"]["anyOf"][1]["properties"]["name"]["const"],
            "other"
        );
        assert_eq!(
            forced_call(
                &ForcedTool::AnyOf,
                r#"{"call":{"name":"other","input":{"a":1}}}"#
            ),
            Some(("other".to_string(), r#"{"a":1}"#.to_string()))
        );

        let mut missing = forced_request(ToolChoice::Tool("nope".into()));
        assert!(missing.force_tool().unwrap_err().contains("nope"));
        for choice in [ToolChoice::Auto, ToolChoice::None] {
            let mut plain = forced_request(choice.clone());
            plain.force_tool().unwrap();
            assert_eq!(plain, forced_request(choice));
        }
    }

    #[test]
    fn a_single_tool_call_request_ends_the_message_before_its_second_call() {
        let calls = |items: &[ChatItem]| -> Vec<String> {
            items
                .iter()
                .filter_map(|i| match i {
                    ChatItem::Event(TurnEvent::BlockStart {
                        block: BlockKind::ToolUse { id, .. },
                        ..
                    }) => Some(id.clone()),
                    _ => None,
                })
                .collect()
        };
        // The first upstream message (two calls), and the turn's end.
        let mut items = recorded("sdk_mcp_parallel_calls");
        let stop = items
            .iter()
            .position(|i| matches!(i, TurnItem::Event(TurnEvent::MessageStop)))
            .unwrap();
        let finished = items.pop().unwrap();
        items.truncate(stop + 1);
        items.push(finished);
        let (both, interrupts) = run(items.clone(), &[], false);
        assert_eq!(calls(&both), ["toolu_0", "toolu_1"]);
        assert_eq!(interrupts, 0);

        let (one, interrupted) = drive(items, &[], false, Mode::Message, |s| {
            s.single_tool_call(true)
        });
        assert_eq!(calls(&one), ["toolu_0"]);
        assert_eq!(interrupted, 1, "the CLI is stopped");
        let events: Vec<&TurnEvent> = one
            .iter()
            .filter_map(|i| match i {
                ChatItem::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        let n = events.len();
        assert_eq!(events[n - 3], &TurnEvent::BlockStop { index: 0 });
        assert!(matches!(
            events[n - 2],
            TurnEvent::MessageDelta { stop_reason: Some(StopReason::ToolUse), usage, .. }
                if usage.output_tokens > 0
        ));
        assert_eq!(events[n - 1], &TurnEvent::MessageStop);
        assert_eq!(end(&one).stop_reason, Some(StopReason::ToolUse));
        assert_eq!(end(&one).failure, None);
    }

    #[test]
    fn a_forced_call_is_relayed_as_one_tool_use_block() {
        let (out, _) = drive(
            recorded("json_schema_partial"),
            &[],
            false,
            Mode::Structured,
            |s| s.forcing(Some(ForcedTool::One("record".into()))),
        );
        let events: Vec<&TurnEvent> = out
            .iter()
            .filter_map(|i| match i {
                ChatItem::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        assert!(matches!(events[0], TurnEvent::MessageStart { .. }));
        assert!(matches!(
            events[1],
            TurnEvent::BlockStart { index: 0, block: BlockKind::ToolUse { id, name } }
                if name == "record" && id.starts_with("toolu_")
        ));
        assert_eq!(
            events[2],
            &TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::InputJson(r#"{"answer":42}"#.into())
            }
        );
        assert!(matches!(
            events[4],
            TurnEvent::MessageDelta {
                stop_reason: Some(StopReason::ToolUse),
                ..
            }
        ));
        let Some(ChatItem::End(end)) = out.last() else {
            panic!("no end")
        };
        assert_eq!(end.stop_reason, Some(StopReason::ToolUse));
        assert_eq!(end.structured_output, None);
        assert_eq!(end.failure, None);
    }
}
