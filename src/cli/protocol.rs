//! Stage two of the output path and the stdin side: the CLI's stream-json lines as typed
//! values, and their translation into serde-free domain events.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::mcp::{self, McpRequest};
use crate::domain::{
    BlockDelta, BlockKind, ContentBlock, ModelInfo, StopReason, TurnEvent, TurnOutcome, TurnStatus,
    Usage,
};

/// A line ccpool writes to the CLI's stdin.
#[derive(Clone, Debug, PartialEq)]
pub enum StdinLine {
    /// A user message carrying client content, with the id ccpool gives it (a conversation is
    /// rewound to its first message's id). Always sent with `client_composed: true`, so the CLI
    /// delivers its text verbatim: no `@path` file expansion, no slash commands.
    User {
        uuid: String,
        content: Vec<ContentBlock>,
    },
    /// A control request with its id.
    Control {
        request_id: String,
        request: ControlRequest,
    },
    /// The in-band MCP server's answer to the CLI's `mcp_message` request `request_id`.
    McpResponse {
        request_id: String,
        /// The JSON-RPC answer (see `cli::mcp`).
        message: Value,
    },
}

/// The control requests ccpool sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlRequest {
    Initialize,
    Interrupt,
    SetModel(String),
    /// Cuts the conversation at `target` (that message and everything after it go), leaving
    /// no note in it. `last_seen` is the last user message ccpool sent, which the CLI wants
    /// when the target came from a transcript.
    RewindConversation {
        target: String,
        last_seen: String,
    },
    /// A JSON-RPC message from the in-band MCP server to the CLI (a notification).
    McpMessage(Value),
}

impl StdinLine {
    /// The line as JSON text, without the trailing newline.
    pub fn to_json(&self) -> String {
        let value = match self {
            StdinLine::User { uuid, content } => json!({
                "type": "user",
                "message": {"role": "user", "content": content.iter().map(content_json).collect::<Vec<_>>()},
                "parent_tool_use_id": null,
                "session_id": "default",
                "uuid": uuid,
                "client_composed": true,
            }),
            StdinLine::Control {
                request_id,
                request,
            } => {
                let request = match request {
                    ControlRequest::Initialize => json!({"subtype": "initialize"}),
                    ControlRequest::Interrupt => json!({"subtype": "interrupt"}),
                    ControlRequest::SetModel(model) => {
                        json!({"subtype": "set_model", "model": model})
                    }
                    ControlRequest::RewindConversation { target, last_seen } => json!({
                        "subtype": "rewind_conversation",
                        "target_message_uuid": target,
                        "last_seen_user_message_uuid": last_seen,
                    }),
                    ControlRequest::McpMessage(message) => json!({
                        "subtype": "mcp_message",
                        "server_name": mcp::SERVER,
                        "message": message,
                    }),
                };
                json!({"type": "control_request", "request_id": request_id, "request": request})
            }
            StdinLine::McpResponse {
                request_id,
                message,
            } => json!({
                "type": "control_response",
                "response": {
                    "subtype": "success",
                    "request_id": request_id,
                    "response": {"mcp_response": message},
                },
            }),
        };
        value.to_string()
    }
}

/// The CLI's answer to `initialize`: what ccpool keeps of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Initialized {
    /// The models the CLI offers.
    pub models: Vec<ModelInfo>,
    /// The CLI's version (`claude_code_version`).
    pub cli_version: Option<String>,
}

/// The `initialize` answer as the CLI writes it; unknown fields are ignored.
#[derive(Deserialize)]
struct InitializeAnswer {
    #[serde(default)]
    models: Vec<InitializeModel>,
    #[serde(default)]
    claude_code_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitializeModel {
    #[serde(default)]
    resolved_model: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    display_name: String,
}

impl Initialized {
    /// Reads the `response` of the CLI's `initialize` control answer; what it cannot read
    /// counts as absent.
    pub fn from_answer(answer: &Value) -> Self {
        let Ok(answer) = InitializeAnswer::deserialize(answer) else {
            return Initialized::default();
        };
        Initialized {
            models: answer
                .models
                .into_iter()
                .filter(|m| !m.resolved_model.is_empty())
                .map(|m| ModelInfo {
                    id: m.resolved_model,
                    alias: m.value,
                    display_name: m.display_name,
                })
                .collect(),
            cli_version: answer.claude_code_version,
        }
    }
}

/// A content block as the Anthropic API (and so the CLI) writes it.
pub fn content_json(block: &ContentBlock) -> Value {
    match block {
        ContentBlock::Text(text) => json!({"type": "text", "text": text}),
        ContentBlock::Image { media_type, data } => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        // Normally fetched before the request starts; the upstream can fetch it too.
        ContentBlock::RemoteImage { url, .. } => json!({
            "type": "image",
            "source": {"type": "url", "url": url},
        }),
        ContentBlock::ToolUse { id, name, input } => json!({
            "type": "tool_use",
            "id": id,
            "name": name,
            "input": serde_json::from_str::<Value>(input).unwrap_or_else(|_| json!({})),
        }),
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => json!({
            "type": "tool_result",
            "tool_use_id": tool_use_id,
            "content": content.iter().map(content_json).collect::<Vec<_>>(),
            "is_error": is_error,
        }),
    }
}

/// One line of the CLI's stdout.
#[derive(Clone, Debug, PartialEq)]
pub enum CliEvent {
    /// A raw upstream SSE event relayed by `--include-partial-messages`.
    Stream(StreamEvent),
    /// The end of a turn.
    Result(ResultLine),
    /// The answer to one of our control requests.
    ControlResponse {
        request_id: String,
        result: ControlResult,
    },
    /// The CLI's JSON-RPC message for the in-band MCP server (answered with
    /// `StdinLine::McpResponse` under the same id).
    Mcp {
        request_id: String,
        request: McpRequest,
    },
    /// A control request of another kind from the CLI (ccpool registers no hooks or
    /// permission callbacks, so none is expected): carries the subtype for logs.
    ControlRequest { request_id: String, subtype: String },
    /// A line of a known kind that ccpool does not act on (`system`, `assistant`, `user`, …),
    /// or of an unknown kind: carries the `type` for logs.
    Other(String),
}

/// Whether a control request succeeded, with its response payload.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlResult {
    Success(Value),
    Error(String),
}

/// The upstream's SSE events as the CLI relays them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: StreamMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: Value,
    },
    ContentBlockDelta {
        index: u32,
        delta: Value,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: WireUsage,
    },
    MessageStop,
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct StreamMessage {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub usage: WireUsage,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct MessageDeltaBody {
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

/// The largest token count taken from a line: the output is untrusted (an agent can write to
/// its CLI's stdout), and the dialects add counts up, which must not overflow.
const MAX_TOKENS: u64 = u32::MAX as u64;

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        let count = |n: Option<u64>| n.unwrap_or(0).min(MAX_TOKENS);
        Usage {
            input_tokens: count(u.input_tokens),
            output_tokens: count(u.output_tokens),
            cache_creation_input_tokens: count(u.cache_creation_input_tokens),
            cache_read_input_tokens: count(u.cache_read_input_tokens),
        }
    }
}

/// The `result` line that ends every turn.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ResultLine {
    #[serde(default)]
    pub subtype: String,
    #[serde(default)]
    pub is_error: bool,
    #[serde(default)]
    pub result: Option<String>,
    /// This turn's usage (unlike `total_cost_usd` and `modelUsage`, which are running totals).
    #[serde(default)]
    pub usage: WireUsage,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub api_error_status: Option<u16>,
    #[serde(default)]
    pub api_error_type: Option<String>,
    #[serde(default)]
    pub terminal_reason: Option<String>,
    #[serde(default)]
    pub errors: Vec<String>,
    /// With `--json-schema`: the validated object.
    #[serde(default)]
    pub structured_output: Option<Value>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct StreamLine {
    event: StreamEvent,
}

#[derive(Deserialize)]
struct ControlRequestLine {
    request_id: String,
    request: ControlRequestBody,
}

#[derive(Deserialize)]
struct ControlRequestBody {
    subtype: String,
    #[serde(default)]
    server_name: String,
    #[serde(default)]
    message: Value,
}

#[derive(Deserialize)]
struct ControlResponseLine {
    response: ControlResponseBody,
}

#[derive(Deserialize)]
struct ControlResponseBody {
    subtype: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    response: Value,
    #[serde(default)]
    error: Option<String>,
}

/// Why a stdout line could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable CLI output line ({kind}): {source}")]
pub struct ParseError {
    kind: String,
    source: serde_json::Error,
}

impl CliEvent {
    /// Parses one stdout line. A line of an unknown `type` is `CliEvent::Other`; a line that
    /// is not JSON, or a known kind with a broken shape, is an error.
    pub fn parse(line: &str) -> Result<CliEvent, ParseError> {
        let err = |kind: &str| {
            let kind = kind.to_string();
            move |source| ParseError { kind, source }
        };
        let envelope: Envelope = serde_json::from_str(line).map_err(err("envelope"))?;
        Ok(match envelope.kind.as_str() {
            "stream_event" => {
                let l: StreamLine = serde_json::from_str(line).map_err(err("stream_event"))?;
                CliEvent::Stream(l.event)
            }
            "result" => CliEvent::Result(serde_json::from_str(line).map_err(err("result"))?),
            "control_response" => {
                let l: ControlResponseLine =
                    serde_json::from_str(line).map_err(err("control_response"))?;
                let result = if l.response.subtype == "success" {
                    ControlResult::Success(l.response.response)
                } else {
                    ControlResult::Error(l.response.error.unwrap_or(l.response.subtype))
                };
                CliEvent::ControlResponse {
                    request_id: l.response.request_id,
                    result,
                }
            }
            "control_request" => {
                let l: ControlRequestLine =
                    serde_json::from_str(line).map_err(err("control_request"))?;
                if l.request.subtype == "mcp_message" && l.request.server_name == mcp::SERVER {
                    CliEvent::Mcp {
                        request_id: l.request_id,
                        request: McpRequest::parse(&l.request.message),
                    }
                } else {
                    CliEvent::ControlRequest {
                        request_id: l.request_id,
                        subtype: l.request.subtype,
                    }
                }
            }
            other => CliEvent::Other(other.to_string()),
        })
    }
}

impl StreamEvent {
    /// The domain event for this upstream event, if it is one ccpool relays.
    pub fn to_turn_event(&self) -> Option<TurnEvent> {
        Some(match self {
            StreamEvent::MessageStart { message } => TurnEvent::MessageStart {
                id: message.id.clone(),
                model: message.model.clone(),
                usage: message.usage.into(),
            },
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => TurnEvent::BlockStart {
                index: *index,
                block: block_kind(content_block),
            },
            StreamEvent::ContentBlockDelta { index, delta } => TurnEvent::BlockDelta {
                index: *index,
                delta: block_delta(delta),
            },
            StreamEvent::ContentBlockStop { index } => TurnEvent::BlockStop { index: *index },
            StreamEvent::MessageDelta { delta, usage } => TurnEvent::MessageDelta {
                stop_reason: delta.stop_reason.as_deref().map(StopReason::parse),
                stop_sequence: delta.stop_sequence.clone(),
                usage: (*usage).into(),
            },
            StreamEvent::MessageStop => TurnEvent::MessageStop,
            StreamEvent::Unknown => return None,
        })
    }
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn block_kind(block: &Value) -> BlockKind {
    match block
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "text" => BlockKind::Text,
        "thinking" => BlockKind::Thinking,
        "redacted_thinking" => BlockKind::RedactedThinking {
            data: str_field(block, "data"),
        },
        "tool_use" => BlockKind::ToolUse {
            id: str_field(block, "id"),
            name: str_field(block, "name"),
        },
        other => BlockKind::Other(other.to_string()),
    }
}

fn block_delta(delta: &Value) -> BlockDelta {
    match delta
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "text_delta" => BlockDelta::Text(str_field(delta, "text")),
        "thinking_delta" => BlockDelta::Thinking(str_field(delta, "thinking")),
        "signature_delta" => BlockDelta::Signature(str_field(delta, "signature")),
        "input_json_delta" => BlockDelta::InputJson(str_field(delta, "partial_json")),
        other => BlockDelta::Other(other.to_string()),
    }
}

impl ResultLine {
    /// The domain outcome of the turn this line ends.
    pub fn outcome(&self) -> TurnOutcome {
        let text = self.result.clone().unwrap_or_default();
        let status = if self.subtype == "error_during_execution"
            && self.terminal_reason.as_deref() == Some("aborted_streaming")
        {
            TurnStatus::Interrupted
        } else if self.api_error_status.is_some()
            || self.terminal_reason.as_deref() == Some("api_error")
        {
            TurnStatus::UpstreamError {
                status: self.api_error_status,
                kind: self.api_error_type.clone(),
                message: text.clone(),
            }
        } else if self.is_error || self.subtype != "success" {
            let mut reason = match (text.is_empty(), self.subtype.is_empty()) {
                (false, _) => text.clone(),
                (true, false) => self.subtype.clone(),
                (true, true) => "a result line without a subtype".to_string(),
            };
            if !self.errors.is_empty() {
                reason = format!("{reason}: {}", self.errors.join("; "));
            }
            TurnStatus::WorkerFailed(reason)
        } else {
            TurnStatus::Completed
        };
        TurnOutcome {
            status,
            stop_reason: self.stop_reason.as_deref().map(StopReason::parse),
            usage: self.usage.into(),
            text,
            structured_output: self
                .structured_output
                .as_ref()
                .filter(|v| !v.is_null())
                .map(Value::to_string),
            streamed_text: String::new(),
            answer: Vec::new(),
            awaiting_tools: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initialize_answer_gives_the_models_and_the_version() {
        let answer = json!({
            "commands": [], "claude_code_version": "2.1.327",
            "models": [
                {"value": "default", "resolvedModel": "claude-sonnet-4-5", "displayName": "Default (recommended)", "description": "d"},
                {"value": "opus", "displayName": "no resolved model"}
            ]
        });
        let init = Initialized::from_answer(&answer);
        assert_eq!(init.cli_version.as_deref(), Some("2.1.327"));
        assert_eq!(
            init.models,
            vec![ModelInfo {
                id: "claude-sonnet-4-5".into(),
                alias: "default".into(),
                display_name: "Default (recommended)".into(),
            }]
        );
        assert_eq!(Initialized::from_answer(&json!(5)), Initialized::default());
    }

    fn fixture(name: &str) -> Vec<CliEvent> {
        let path = format!("{}/tests/fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect(&path);
        text.lines()
            .map(|l| CliEvent::parse(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
            .collect()
    }

    fn turn_events(events: &[CliEvent]) -> Vec<TurnEvent> {
        events
            .iter()
            .filter_map(|e| match e {
                CliEvent::Stream(s) => s.to_turn_event(),
                _ => None,
            })
            .collect()
    }

    fn text_of(events: &[TurnEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                TurnEvent::BlockDelta {
                    delta: BlockDelta::Text(t),
                    ..
                } => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn results(events: &[CliEvent]) -> Vec<&ResultLine> {
        events
            .iter()
            .filter_map(|e| match e {
                CliEvent::Result(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_recorded_line_parses() {
        let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("fixtures")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".jsonl") && !n.ends_with(".stdin.jsonl"))
            .collect();
        names.sort();
        assert!(names.len() >= 15, "fixtures missing: {names:?}");
        for name in names {
            let events = fixture(name.trim_end_matches(".jsonl"));
            assert!(!results(&events).is_empty(), "{name} has no result line");
        }
    }

    #[test]
    fn text_partial_streams_deltas_in_order_and_ends_completed() {
        let events = fixture("text_partial");
        let turn = turn_events(&events);
        assert!(
            matches!(&turn[0], TurnEvent::MessageStart { model, .. } if model == "claude-sonnet-4-5")
        );
        assert_eq!(
            turn[1],
            TurnEvent::BlockStart {
                index: 0,
                block: BlockKind::Text
            }
        );
        assert_eq!(text_of(&turn), "Echo: Say hello");
        assert_eq!(turn.last(), Some(&TurnEvent::MessageStop));
        let outcome = results(&events)[0].outcome();
        assert_eq!(outcome.status, TurnStatus::Completed);
        assert_eq!(outcome.stop_reason, Some(StopReason::EndTurn));
        assert_eq!(outcome.text, "Echo: Say hello");
        assert_eq!(outcome.usage.input_tokens, 12);
        assert_eq!(outcome.usage.output_tokens, 9);
    }

    #[test]
    fn thinking_blocks_come_before_text() {
        let turn = turn_events(&fixture("thinking_partial"));
        let starts: Vec<&BlockKind> = turn
            .iter()
            .filter_map(|e| match e {
                TurnEvent::BlockStart { block, .. } => Some(block),
                _ => None,
            })
            .collect();
        assert_eq!(starts, vec![&BlockKind::Thinking, &BlockKind::Text]);
        assert!(turn.iter().any(|e| matches!(
            e,
            TurnEvent::BlockDelta {
                delta: BlockDelta::Signature(_),
                ..
            }
        )));
    }

    #[test]
    fn tool_use_blocks_carry_id_name_and_json_deltas() {
        let turn = turn_events(&fixture("tool_bash_partial"));
        assert!(turn.iter().any(|e| matches!(e, TurnEvent::BlockStart { block: BlockKind::ToolUse { name, .. }, .. } if name == "Bash")));
        assert!(turn.iter().any(|e| matches!(
            e,
            TurnEvent::BlockDelta {
                delta: BlockDelta::InputJson(_),
                ..
            }
        )));
        assert!(turn.iter().any(|e| matches!(
            e,
            TurnEvent::MessageDelta {
                stop_reason: Some(StopReason::ToolUse),
                ..
            }
        )));
    }

    #[test]
    fn max_tokens_stop_is_visible_before_the_cli_continues() {
        let turn = turn_events(&fixture("max_tokens_partial"));
        let first_stop = turn.iter().find_map(|e| match e {
            TurnEvent::MessageDelta { stop_reason, .. } => stop_reason.clone(),
            _ => None,
        });
        assert_eq!(first_stop, Some(StopReason::MaxTokens));
        let starts = turn
            .iter()
            .filter(|e| matches!(e, TurnEvent::MessageStart { .. }))
            .count();
        assert_eq!(
            starts, 2,
            "the CLI continues on its own with a second upstream request"
        );
    }

    #[test]
    fn a_json_schema_turn_carries_its_structured_output() {
        let events = fixture("json_schema_partial");
        let outcome = results(&events)[0].outcome();
        assert_eq!(outcome.status, TurnStatus::Completed);
        assert_eq!(
            outcome.structured_output.as_deref(),
            Some(r#"{"answer":42}"#)
        );
        assert_eq!(
            results(&fixture("text_partial"))[0]
                .outcome()
                .structured_output,
            None
        );
    }

    #[test]
    fn upstream_errors_keep_status_and_type() {
        for (name, status, kind) in [
            ("upstream_error_400", 400, "invalid_request_error"),
            ("upstream_error_401", 401, "authentication_error"),
            ("upstream_error_429", 429, "rate_limit_error"),
            ("upstream_error_529", 529, "overloaded_error"),
        ] {
            let events = fixture(name);
            let outcome = results(&events)[0].outcome();
            match outcome.status {
                TurnStatus::UpstreamError {
                    status: s, kind: k, ..
                } => {
                    assert_eq!(s, Some(status), "{name}");
                    assert_eq!(k.as_deref(), Some(kind), "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_interrupt_ends_the_turn_as_interrupted_and_answers_the_control_request() {
        let events = fixture("stdin_interrupt");
        assert!(events.iter().any(|e| matches!(e, CliEvent::ControlResponse { request_id, result: ControlResult::Success(_) } if request_id == "req_int_1")));
        let outcomes: Vec<TurnStatus> = results(&events)
            .iter()
            .map(|r| r.outcome().status)
            .collect();
        assert_eq!(
            outcomes,
            vec![TurnStatus::Interrupted, TurnStatus::Completed]
        );
    }

    #[test]
    fn a_cut_upstream_stream_ends_without_message_delta() {
        let events = fixture("upstream_stream_cut");
        let turn = turn_events(&events);
        assert!(
            !turn
                .iter()
                .any(|e| matches!(e, TurnEvent::MessageDelta { .. }))
        );
        assert_eq!(results(&events).len(), 1);
    }

    #[test]
    fn unknown_kinds_fall_back_and_garbage_is_an_error() {
        assert_eq!(
            CliEvent::parse(r#"{"type":"brand_new","x":1}"#).unwrap(),
            CliEvent::Other("brand_new".into())
        );
        assert!(matches!(
            CliEvent::parse(r#"{"type":"stream_event","event":{"type":"future_event"}}"#).unwrap(),
            CliEvent::Stream(StreamEvent::Unknown)
        ));
        assert!(CliEvent::parse("not json").is_err());
        assert!(CliEvent::parse(r#"{"type":"result","usage":"bad"}"#).is_err());
    }

    /// Lines an agent could write to its CLI's stdout: each parses to a value or an error,
    /// never a panic, and forged counts are bounded.
    #[test]
    fn hostile_lines_parse_to_values_or_errors() {
        let huge = format!(
            r#"{{"type":"stream_event","event":{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{}}}}}}}"#,
            u64::MAX
        );
        let CliEvent::Stream(event) = CliEvent::parse(&huge).unwrap() else {
            panic!("a message_delta")
        };
        let Some(TurnEvent::MessageDelta { usage, .. }) = event.to_turn_event() else {
            panic!("a message delta")
        };
        assert_eq!(usage.output_tokens, u64::from(u32::MAX));
        let result = format!(
            r#"{{"type":"result","subtype":"success","usage":{{"input_tokens":{m},"cache_read_input_tokens":{m},"cache_creation_input_tokens":{m},"output_tokens":{m}}}}}"#,
            m = u64::MAX
        );
        let CliEvent::Result(result) = CliEvent::parse(&result).unwrap() else {
            panic!("a result")
        };
        let usage = result.outcome().usage;
        let total = usage.input_tokens
            + usage.cache_read_input_tokens
            + usage.cache_creation_input_tokens
            + usage.output_tokens;
        assert_eq!(total, 4 * u64::from(u32::MAX), "sums cannot overflow");

        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let nested_event = format!(
            r#"{{"type":"stream_event","event":{{"type":"content_block_start","index":0,"content_block":{deep}}}}}"#
        );
        for line in [
            "",
            "\u{0}",
            "{",
            "[]",
            "null",
            r#"{"type":5}"#,
            r#"{"type":"stream_event"}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":-1,"delta":{}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":4294967296,"delta":{}}}"#,
            r#"{"type":"control_request","request_id":7,"request":{}}"#,
            r#"{"type":"control_response","response":null}"#,
            deep.as_str(),
            nested_event.as_str(),
        ] {
            assert!(CliEvent::parse(line).is_err(), "{line:.80}");
        }
        // Well formed but meaningless: values ccpool ignores or answers, never acts on blindly.
        let odd = [
            (
                r#"{"type":"control_request","request_id":"x","request":{"subtype":"can_use_tool","tool_name":"Bash"}}"#,
                "control request",
            ),
            (
                r#"{"type":"control_request","request_id":"x","request":{"subtype":"mcp_message","server_name":"other","message":{"id":1,"method":"tools/call"}}}"#,
                "control request",
            ),
            (
                r#"{"type":"stream_event","event":{"type":"content_block_start","index":0,"content_block":"text"}}"#,
                "stream",
            ),
            (
                r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":7}}}"#,
                "stream",
            ),
        ];
        for (line, kind) in odd {
            let event = CliEvent::parse(line).unwrap();
            let got = match &event {
                CliEvent::ControlRequest { .. } => "control request",
                CliEvent::Stream(s) => {
                    s.to_turn_event();
                    "stream"
                }
                _ => "other",
            };
            assert_eq!(got, kind, "{line}");
        }
    }

    #[test]
    fn user_lines_are_client_composed_and_carry_their_id() {
        let user = StdinLine::User {
            uuid: "11111111-1111-4111-8111-111111111111".into(),
            content: vec![
                ContentBlock::Text("summarize @/etc/passwd".into()),
                ContentBlock::Image {
                    media_type: "image/png".into(),
                    data: "AAAA".into(),
                },
            ],
        };
        let v: Value = serde_json::from_str(&user.to_json()).unwrap();
        assert_eq!(v["client_composed"], true);
        assert_eq!(v["uuid"], "11111111-1111-4111-8111-111111111111");
        assert_eq!(v["message"]["content"][0]["text"], "summarize @/etc/passwd");
        assert_eq!(
            v["message"]["content"][1]["source"]["media_type"],
            "image/png"
        );

        let recorded = std::fs::read_to_string(format!(
            "{}/tests/fixtures/stdin_image.stdin.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let recorded: Value = serde_json::from_str(recorded.lines().next().unwrap()).unwrap();
        let keys = |v: &Value| -> Vec<String> {
            let keys = v.as_object().unwrap().keys();
            keys.filter(|k| *k != "uuid").cloned().collect()
        };
        assert_eq!(
            keys(&v),
            keys(&recorded),
            "same envelope as the recorded stdin line, plus the id"
        );
    }

    #[test]
    fn control_requests_have_the_recorded_shape() {
        let line = StdinLine::Control {
            request_id: "req_int_1".into(),
            request: ControlRequest::Interrupt,
        };
        let ours: Value = serde_json::from_str(&line.to_json()).unwrap();
        let recorded = std::fs::read_to_string(format!(
            "{}/tests/fixtures/stdin_interrupt.stdin.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let recorded: Value = serde_json::from_str(recorded.lines().nth(1).unwrap()).unwrap();
        assert_eq!(ours, recorded);
        let rewind = std::fs::read_to_string(format!(
            "{}/tests/fixtures/stdin_rewind.stdin.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let recorded: Value = serde_json::from_str(rewind.lines().nth(2).unwrap()).unwrap();
        let ours = StdinLine::Control {
            request_id: "r".into(),
            request: ControlRequest::RewindConversation {
                target: "11111111-1111-4111-8111-111111111111".into(),
                last_seen: "11111111-1111-4111-8111-111111111111".into(),
            },
        };
        let ours: Value = serde_json::from_str(&ours.to_json()).unwrap();
        assert_eq!(ours, recorded);
        let set = StdinLine::Control {
            request_id: "r".into(),
            request: ControlRequest::SetModel("claude-x".into()),
        };
        let v: Value = serde_json::from_str(&set.to_json()).unwrap();
        assert_eq!(
            v["request"],
            json!({"subtype": "set_model", "model": "claude-x"})
        );
    }
}
