//! Serde-free types of one request to a worker and of what comes back: the language the API
//! dialects translate into and out of, and the only one the worker layer accepts.

use std::fmt;

/// One user turn to be served by a worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnRequest {
    /// The conversation before this turn, oldest first. When not empty, the worker replays
    /// it faithfully before sending `content`.
    pub history: Vec<HistoryMessage>,
    /// The content of the new user message, in order.
    pub content: Vec<ContentBlock>,
    /// The model to answer with; `None` keeps the worker's current model.
    pub model: Option<String>,
    /// The client's own tools the model may call. A worker's CLI can change its tool list
    /// between turns, so they are not part of the launch profile.
    pub tools: Vec<ToolSpec>,
    /// Whether the model must call a tool. `None` offers no tool at all; forcing a call
    /// (`Any`, `Tool`) is done by the chat layer (see `chat::force_tool`).
    pub tool_choice: ToolChoice,
}

impl TurnRequest {
    /// A request with one text block and the worker's current model.
    pub fn text(text: impl Into<String>) -> Self {
        TurnRequest {
            content: vec![ContentBlock::Text(text.into())],
            ..TurnRequest::default()
        }
    }

    /// Checks that tool calls and results pair up as the Messages API requires: every
    /// `tool_result` answers a `tool_use` of the assistant message just before it, and every
    /// `tool_use` gets its `tool_result` in the user message just after it (for the history's
    /// last assistant message, the new user message). A parked worker is resumed only by a
    /// request that passes this check, so a bad one is refused before any worker is touched.
    pub fn check_tool_pairing(&self) -> Result<(), InvalidRequest> {
        let messages: Vec<(Role, &[ContentBlock])> = self
            .history
            .iter()
            .map(|m| (m.role, m.content.as_slice()))
            .chain(std::iter::once((Role::User, self.content.as_slice())))
            .collect();
        let calls = |content: &[ContentBlock]| -> Vec<String> {
            content
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::ToolUse { id, .. } => Some(id.clone()),
                    _ => None,
                })
                .collect()
        };
        let results = |content: &[ContentBlock]| -> Vec<String> {
            content
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::ToolResult { tool_use_id, .. } => Some(tool_use_id.clone()),
                    _ => None,
                })
                .collect()
        };
        // Results that answer nothing first: they name the client's mistake best.
        for (i, (role, content)) in messages.iter().enumerate() {
            if *role == Role::User {
                let answered = results(content);
                if answered.is_empty() {
                    continue;
                }
                let made = match i.checked_sub(1).map(|j| messages[j]) {
                    Some((Role::Assistant, previous)) => calls(previous),
                    _ => Vec::new(),
                };
                if let Some(unknown) = answered.iter().find(|id| !made.contains(id)) {
                    return Err(InvalidRequest(format!(
                        "a tool_result answers the tool call {unknown:?}, which the assistant \
                             message just before it did not make (its calls: {made:?})"
                    )));
                }
                let mut seen = Vec::new();
                if let Some(twice) = answered.iter().find(|id| {
                    let again = seen.contains(id);
                    seen.push(*id);
                    again
                }) {
                    return Err(InvalidRequest(format!(
                        "the tool call {twice:?} has more than one tool_result"
                    )));
                }
            }
        }
        for (i, (role, content)) in messages.iter().enumerate() {
            if *role == Role::Assistant {
                let made = calls(content);
                let answered = match messages.get(i + 1) {
                    Some((Role::User, next)) => results(next),
                    _ => Vec::new(),
                };
                let missing: Vec<&String> =
                    made.iter().filter(|id| !answered.contains(id)).collect();
                if !missing.is_empty() {
                    return Err(InvalidRequest(format!(
                        "the tool calls {missing:?} have no tool_result: each tool_use needs a \
                         tool_result in the user message that follows it"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Who said a message of the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One message of a conversation's history, as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryMessage {
    pub role: Role,
    pub content: Vec<ContentBlock>,
}

/// A block of a message's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentBlock {
    Text(String),
    /// A base64-encoded image, passed to the upstream unchanged.
    Image {
        media_type: String,
        data: String,
    },
    /// An image the client named by URL, fetched and turned into an `Image` by ccpool before
    /// the request starts (only with `--fetch-remote-images`). `field` names where it was in
    /// the client's request, for errors.
    RemoteImage {
        url: String,
        field: String,
    },
    /// The model's call of a client tool (in an assistant message), with the upstream's own
    /// tool-use id and the client's own tool name.
    ToolUse {
        id: String,
        name: String,
        /// The call's input, as JSON text.
        input: String,
    },
    /// The client's answer to a tool call (in a user message).
    ToolResult {
        tool_use_id: String,
        /// Text and image blocks.
        content: Vec<ContentBlock>,
        is_error: bool,
    },
}

/// The media types of the images the upstream accepts.
pub const IMAGE_MEDIA_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// A tool the client defines and runs itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ToolSpec {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of the tool's input, as JSON text.
    pub input_schema: String,
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// The model must call some tool.
    Any,
    /// The model must call this tool.
    Tool(String),
    /// The model must not call a tool.
    None,
}

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    PauseTurn,
    Refusal,
    Other(String),
}

impl StopReason {
    pub fn parse(s: &str) -> StopReason {
        match s {
            "end_turn" => StopReason::EndTurn,
            "max_tokens" => StopReason::MaxTokens,
            "stop_sequence" => StopReason::StopSequence,
            "tool_use" => StopReason::ToolUse,
            "pause_turn" => StopReason::PauseTurn,
            "refusal" => StopReason::Refusal,
            other => StopReason::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::ToolUse => "tool_use",
            StopReason::PauseTurn => "pause_turn",
            StopReason::Refusal => "refusal",
            StopReason::Other(s) => s,
        }
    }
}

/// Token counts of one turn (never the CLI process's running totals).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

/// One streamed event of the model's answer, in the order the upstream produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnEvent {
    MessageStart {
        id: String,
        model: String,
        usage: Usage,
    },
    BlockStart {
        index: u32,
        block: BlockKind,
    },
    BlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    BlockStop {
        index: u32,
    },
    MessageDelta {
        stop_reason: Option<StopReason>,
        stop_sequence: Option<String>,
        usage: Usage,
    },
    MessageStop,
}

/// What a content block holds, as announced when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Text,
    Thinking,
    RedactedThinking { data: String },
    ToolUse { id: String, name: String },
    Other(String),
}

/// An increment of a content block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockDelta {
    Text(String),
    Thinking(String),
    Signature(String),
    InputJson(String),
    Other(String),
}

/// How a turn ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnStatus {
    /// The CLI reported success.
    Completed,
    /// The turn was interrupted (client gone, or asked to stop).
    Interrupted,
    /// The upstream API answered with an error.
    UpstreamError {
        /// The HTTP status the upstream answered with, when known.
        status: Option<u16>,
        /// The upstream's error type (`rate_limit_error`, …), when known.
        kind: Option<String>,
        message: String,
    },
    /// The worker failed: the CLI crashed, its container died, it fell silent, or it
    /// printed what cannot be read.
    WorkerFailed(String),
}

/// The end of a turn: its status and totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnOutcome {
    pub status: TurnStatus,
    pub stop_reason: Option<StopReason>,
    pub usage: Usage,
    /// The final text as the CLI reports it.
    pub text: String,
    /// With a JSON schema: the validated object, as JSON text.
    pub structured_output: Option<String>,
    /// Every text delta the turn relayed, joined: what the client was shown.
    pub streamed_text: String,
    /// The assistant message the turn relayed, as the client will send it back in its
    /// history: text and tool-use blocks, in order (thinking is left out).
    pub answer: Vec<ContentBlock>,
    /// The ids of the client tool calls the CLI is waiting on. Not empty means the worker is
    /// parked: the CLI is mid-turn, and the client's next request carries the results.
    pub awaiting_tools: Vec<String>,
}

impl TurnOutcome {
    pub fn failed(reason: impl Into<String>) -> Self {
        TurnOutcome {
            status: TurnStatus::WorkerFailed(reason.into()),
            stop_reason: None,
            usage: Usage::default(),
            text: String::new(),
            structured_output: None,
            streamed_text: String::new(),
            answer: Vec::new(),
            awaiting_tools: Vec::new(),
        }
    }

    pub fn is_success(&self) -> bool {
        self.status == TurnStatus::Completed
    }
}

/// What a turn stream yields: events, then exactly one `Finished` as the last item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnItem {
    Event(TurnEvent),
    Finished(TurnOutcome),
}

/// A model the CLI offers, from its `initialize` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// The full model id (`claude-sonnet-4-5`).
    pub id: String,
    /// The CLI's short name for it (`sonnet`, `default`).
    pub alias: String,
    pub display_name: String,
}

/// Who a worker serves. A worker that served one owner never serves another.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey(String);

impl OwnerKey {
    /// An owner named by something that is not a secret (a session id, a key's hash).
    pub fn new(id: impl Into<String>) -> Self {
        OwnerKey(id.into())
    }

    /// The owner of requests that carry no client identity.
    pub fn anonymous() -> Self {
        OwnerKey("anonymous".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is fixed when a CLI process starts. Workers are pooled per profile: a request can
/// only be served by a worker launched with the profile it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LaunchProfile {
    /// The model the CLI starts with (`--model`); `None` is the configured default. A worker
    /// serves the model it was launched with: switching a running CLI costs an upstream
    /// validation request and leaves a note in the conversation.
    pub model: Option<String>,
    /// The client's system prompt. `None` sends none (only what the CLI requires), unless the
    /// built-in tools are on: then the CLI's own agent prompt describes them.
    pub system_prompt: Option<String>,
    /// Whether the CLI's built-in tools are on (only inside a session's sandbox).
    pub builtin_tools: bool,
    /// A JSON schema the final answer must satisfy (`--json-schema`).
    pub json_schema: Option<String>,
    /// The output-token limit the CLI asks the upstream for.
    pub max_output_tokens: Option<u32>,
    /// The CLI's effort level (`--effort`: low, medium, high, xhigh, max).
    pub effort: Option<String>,
}

/// A request that cannot be served as it is, found before any worker is touched. The
/// message names the part in words every dialect shares; each dialect answers it as its 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

/// The effort levels the CLI knows (`--effort`).
pub const EFFORT_LEVELS: [&str; 5] = ["low", "medium", "high", "xhigh", "max"];

impl LaunchProfile {
    /// What can be checked without JSON and without a worker: no NUL in a value that
    /// becomes a CLI argument (the kernel would refuse the whole exec), a known effort.
    pub fn check(&self) -> Result<(), InvalidRequest> {
        let nul = |what: &str, value: &Option<String>| match value {
            Some(v) if v.contains('\0') => Err(InvalidRequest(format!(
                "the {what} must not contain NUL characters"
            ))),
            _ => Ok(()),
        };
        nul("system prompt", &self.system_prompt)?;
        nul("JSON schema", &self.json_schema)?;
        nul("effort", &self.effort)?;
        if let Some(effort) = &self.effort {
            if !EFFORT_LEVELS.contains(&effort.as_str()) {
                return Err(InvalidRequest(format!(
                    "unknown effort {effort:?}; expected one of {}",
                    EFFORT_LEVELS.join(", ")
                )));
            }
        }
        if self.max_output_tokens == Some(0) {
            return Err(InvalidRequest(
                "the output-token limit must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// A short stable fingerprint, for labels and logs (never the prompt itself).
    pub fn fingerprint(&self) -> String {
        use std::hash::{Hash, Hasher};
        // DefaultHasher::new() uses fixed keys, so the value is stable within a build.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_with_a_nul_or_an_unknown_effort_is_refused() {
        assert!(LaunchProfile::default().check().is_ok());
        let nul = LaunchProfile {
            system_prompt: Some("be\0brief".into()),
            ..LaunchProfile::default()
        };
        assert!(nul.check().unwrap_err().0.contains("NUL"));
        let effort = LaunchProfile {
            effort: Some("extreme".into()),
            ..LaunchProfile::default()
        };
        assert!(effort.check().is_err());
        let fine = LaunchProfile {
            system_prompt: Some("x".repeat(300_000)),
            effort: Some("high".into()),
            ..LaunchProfile::default()
        };
        assert!(fine.check().is_ok(), "a long prompt goes through a file");
    }

    fn call(id: &str) -> ContentBlock {
        ContentBlock::ToolUse {
            id: id.into(),
            name: "t".into(),
            input: "{}".into(),
        }
    }

    fn answer(id: &str) -> ContentBlock {
        ContentBlock::ToolResult {
            tool_use_id: id.into(),
            content: Vec::new(),
            is_error: false,
        }
    }

    fn with_calls(calls: Vec<ContentBlock>, content: Vec<ContentBlock>) -> TurnRequest {
        TurnRequest {
            history: vec![
                HistoryMessage {
                    role: Role::User,
                    content: vec![ContentBlock::Text("go".into())],
                },
                HistoryMessage {
                    role: Role::Assistant,
                    content: calls,
                },
            ],
            content,
            ..TurnRequest::default()
        }
    }

    #[test]
    fn tool_results_must_answer_the_calls_just_before_them_every_one_once() {
        let ok = with_calls(vec![call("a"), call("b")], vec![answer("b"), answer("a")]);
        assert_eq!(ok.check_tool_pairing(), Ok(()));
        let unknown = with_calls(vec![call("a")], vec![answer("a"), answer("zz")]);
        let why = unknown.check_tool_pairing().unwrap_err().0;
        assert!(
            why.contains("\"zz\"") && why.contains("did not make"),
            "{why}"
        );
        let missing = with_calls(vec![call("a"), call("b")], vec![answer("a")]);
        let why = missing.check_tool_pairing().unwrap_err().0;
        assert!(
            why.contains("[\"b\"]") && why.contains("no tool_result"),
            "{why}"
        );
        let prose = with_calls(vec![call("a")], vec![ContentBlock::Text("hm".into())]);
        assert!(prose.check_tool_pairing().is_err());
        let twice = with_calls(vec![call("a")], vec![answer("a"), answer("a")]);
        assert!(
            twice
                .check_tool_pairing()
                .unwrap_err()
                .0
                .contains("more than one")
        );
        let orphan = TurnRequest {
            content: vec![answer("a")],
            ..TurnRequest::default()
        };
        assert!(orphan.check_tool_pairing().unwrap_err().0.contains("\"a\""));
        // A call answered in an earlier turn of the history is fine.
        let mut older = with_calls(vec![call("a")], vec![ContentBlock::Text("next".into())]);
        older.history.push(HistoryMessage {
            role: Role::User,
            content: vec![answer("a")],
        });
        older.history.push(HistoryMessage {
            role: Role::Assistant,
            content: vec![ContentBlock::Text("done".into())],
        });
        assert_eq!(older.check_tool_pairing(), Ok(()));
    }
}
