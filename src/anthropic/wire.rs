//! The Messages API's request shapes, as serde types. Fields ccpool cannot honour are still
//! parsed so that they are accepted (or refused by name) rather than breaking the request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/messages`.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    pub messages: Vec<MessageParam>,
    #[serde(default)]
    pub system: Option<Value>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// Accepted; the CLI chooses its own sampling.
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u64>,
    /// `{"type":"enabled",…}` makes thinking blocks visible; the CLI decides whether to think.
    #[serde(default)]
    pub thinking: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// `format` (structured output) and `effort`.
    #[serde(default)]
    pub output_config: Option<OutputConfig>,
    /// The `structured-outputs` beta's form of `output_config.format`.
    #[serde(default)]
    pub output_format: Option<Value>,
    /// Refused: a code-execution container and MCP servers are not available through ccpool.
    #[serde(default)]
    pub container: Option<Value>,
    #[serde(default)]
    pub mcp_servers: Option<Value>,
}

/// `output_config`: how the model's output is shaped.
#[derive(Debug, Default, Deserialize)]
pub struct OutputConfig {
    /// `{"type": "json_schema", "schema": {…}}`; checked by the translation.
    #[serde(default)]
    pub format: Option<Value>,
    /// `low`, `medium`, `high`, `xhigh` or `max`.
    #[serde(default)]
    pub effort: Option<String>,
}

/// `POST /v1/messages/count_tokens`.
#[derive(Debug, Deserialize)]
pub struct CountTokensRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<MessageParam>,
    #[serde(default)]
    pub system: Option<Value>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
}

/// One message; its content is a string or a list of blocks, checked by the translation.
#[derive(Debug, Deserialize)]
pub struct MessageParam {
    pub role: String,
    pub content: Value,
}

/// A `message` object: the whole answer, or the shell `message_start` carries.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: String,
    pub content: Vec<ResponseBlock>,
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub usage: ResponseUsage,
}

/// A content block of an answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseBlock {
    Text {
        text: String,
    },
    Thinking {
        thinking: String,
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// A block type ccpool relays without knowing it: only its type.
    #[serde(untagged)]
    Other {
        #[serde(rename = "type")]
        kind: String,
    },
}

/// Token counts as the Messages API reports them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ResponseUsage {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

/// One streaming event; the SSE event name is its `type`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: Message,
    },
    ContentBlockStart {
        index: u32,
        content_block: ResponseBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: Delta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: ResponseUsage,
    },
    MessageStop,
}

impl StreamEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
        }
    }
}

/// A piece of a content block.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    TextDelta { text: String },
    ThinkingDelta { thinking: String },
    SignatureDelta { signature: String },
    InputJsonDelta { partial_json: String },
}

/// What `message_delta` changes at the end of a message.
#[derive(Clone, Debug, Serialize)]
pub struct MessageDelta {
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
}
