//! The Messages API's shapes, as serde types: the request, with its messages, content blocks
//! (tagged by `type`, read through `tagged` so an error names its path), tools and tool
//! choice; and the answer (`Message`, its blocks, the stream events, the token count). Fields
//! ccpool cannot honour are still parsed so that they are accepted (or refused by name)
//! rather than breaking the request; unknown fields are ignored, as the real API ignores them.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::tagged::{Listed, TextOr, field_error, nested, tagged};

/// `POST /v1/messages`.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    pub messages: Vec<MessageParam>,
    #[serde(default)]
    pub system: Option<TextOr<TextBlock>>,
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
    /// Makes thinking blocks visible unless disabled; the CLI decides whether to think.
    #[serde(default)]
    pub thinking: Option<ThinkingConfig>,
    /// Accepted without effect.
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub tools: Option<Vec<ToolParam>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoiceParam>,
    /// `format` (structured output) and `effort`.
    #[serde(default)]
    pub output_config: Option<OutputConfig>,
    /// The `structured-outputs` beta's form of `output_config.format`.
    #[serde(default)]
    pub output_format: Option<OutputFormat>,
    /// Refused: a code-execution container and MCP servers are not available through ccpool.
    #[serde(default)]
    pub container: Option<Value>,
    #[serde(default)]
    pub mcp_servers: Option<Value>,
}

/// `output_config`: how the model's output is shaped.
#[derive(Debug, Default, Deserialize)]
pub struct OutputConfig {
    #[serde(default)]
    pub format: Option<OutputFormat>,
    /// `low`, `medium`, `high`, `xhigh` or `max`; checked by the translation.
    #[serde(default)]
    pub effort: Option<String>,
}

/// An output format: only `{"type": "json_schema", "schema": {…}}` exists.
#[derive(Debug, PartialEq)]
pub enum OutputFormat {
    /// The schema; the translation checks it is an object.
    JsonSchema { schema: Value },
}

impl<'de> Deserialize<'de> for OutputFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct JsonSchema {
            schema: Value,
        }
        match tagged(deserializer, "type")? {
            (Some(kind), value) if kind == "json_schema" => nested::<JsonSchema, _>(value)
                .map(|f| OutputFormat::JsonSchema { schema: f.schema }),
            (kind, _) => Err(field_error(
                "type",
                format!(
                    "only \"json_schema\" is supported, got {}",
                    kind.map_or("nothing".to_string(), |t| format!("\"{t}\""))
                ),
            )),
        }
    }
}

/// `thinking`: whether the client sees the model's thinking blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThinkingConfig {
    /// With a token budget (accepted; the CLI sets its own).
    Enabled,
    /// The model decides how much to think.
    Adaptive,
    Disabled,
}

impl<'de> Deserialize<'de> for ThinkingConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match tagged(deserializer, "type")? {
            (Some(kind), _) => match kind.as_str() {
                "enabled" => Ok(ThinkingConfig::Enabled),
                "adaptive" => Ok(ThinkingConfig::Adaptive),
                "disabled" => Ok(ThinkingConfig::Disabled),
                other => Err(field_error(
                    "type",
                    format!(
                        "unknown thinking type `{other}`; expected enabled, adaptive or disabled"
                    ),
                )),
            },
            (None, _) => Err(field_error("type", "field required")),
        }
    }
}

/// A tool the client declares. Only custom tools (with an `input_schema`) can be honoured:
/// the server and built-in tool types (web search, bash, text editor, computer use, …) are
/// refused by name.
#[derive(Debug, PartialEq)]
pub enum ToolParam {
    Custom(CustomTool),
}

/// A custom tool: `type` is `custom` or absent.
#[derive(Debug, PartialEq, Deserialize)]
pub struct CustomTool {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON schema; the translation checks it is an object schema.
    pub input_schema: Value,
}

impl<'de> Deserialize<'de> for ToolParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match tagged(deserializer, "type")? {
            (None, value) => nested(value).map(ToolParam::Custom),
            (Some(kind), value) if kind == "custom" => nested(value).map(ToolParam::Custom),
            (Some(other), _) => Err(field_error(
                "type",
                format!(
                    "\"{other}\" tools run on Anthropic's servers or in Claude's own harness, which ccpool cannot offer; only custom tools (name, description, input_schema) are supported"
                ),
            )),
        }
    }
}

/// `tool_choice`. `disable_parallel_tool_use` (on `auto`, `any` and `tool`) asks for one
/// call per message.
#[derive(Debug, PartialEq)]
pub enum ToolChoiceParam {
    Auto {
        disable_parallel_tool_use: bool,
    },
    Any {
        disable_parallel_tool_use: bool,
    },
    Tool {
        name: String,
        disable_parallel_tool_use: bool,
    },
    None,
}

impl ToolChoiceParam {
    /// At most one tool call per message.
    pub fn single_tool_call(&self) -> bool {
        match self {
            ToolChoiceParam::Auto {
                disable_parallel_tool_use,
            }
            | ToolChoiceParam::Any {
                disable_parallel_tool_use,
            }
            | ToolChoiceParam::Tool {
                disable_parallel_tool_use,
                ..
            } => *disable_parallel_tool_use,
            ToolChoiceParam::None => false,
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoiceParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Parallel {
            #[serde(default)]
            disable_parallel_tool_use: Option<bool>,
        }
        #[derive(Deserialize)]
        struct Named {
            name: String,
            #[serde(default)]
            disable_parallel_tool_use: Option<bool>,
        }
        let (kind, value) = tagged(deserializer, "type")?;
        let single =
            |value| nested::<Parallel, _>(value).map(|p| p.disable_parallel_tool_use == Some(true));
        match kind.as_deref() {
            Some("auto") => Ok(ToolChoiceParam::Auto {
                disable_parallel_tool_use: single(value)?,
            }),
            Some("any") => Ok(ToolChoiceParam::Any {
                disable_parallel_tool_use: single(value)?,
            }),
            Some("none") => Ok(ToolChoiceParam::None),
            Some("tool") => nested::<Named, _>(value).map(|n| ToolChoiceParam::Tool {
                name: n.name,
                disable_parallel_tool_use: n.disable_parallel_tool_use == Some(true),
            }),
            Some(other) => Err(field_error(
                "type",
                format!("\"{other}\" is not one of auto, any, tool, none"),
            )),
            None => Err(field_error(
                "type",
                "field required (auto, any, tool or none)",
            )),
        }
    }
}

/// `POST /v1/messages/count_tokens`. Its `tools` are accepted and not counted.
#[derive(Debug, Deserialize)]
pub struct CountTokensRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<MessageParam>,
    #[serde(default)]
    pub system: Option<TextOr<TextBlock>>,
}

/// The answer of `count_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TokenCount {
    pub input_tokens: u64,
}

/// One message; its content is a string or a list of blocks.
#[derive(Debug, Deserialize)]
pub struct MessageParam {
    pub role: MessageRole,
    pub content: TextOr<ContentBlockParam>,
}

/// Whose a message is. `system` messages are Claude Code's per-turn control text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
    System,
}

/// A content block of a request's message. Which role may hold which block is checked by
/// the translation; a type ccpool does not know is refused here, by name.
#[derive(Clone, Debug, PartialEq)]
pub enum ContentBlockParam {
    Text(TextBlock),
    Image(ImageBlock),
    ToolUse(ToolUseBlock),
    ToolResult(ToolResultBlock),
    /// The model's thinking in an earlier answer (not passed back to the CLI).
    Thinking,
    RedactedThinking,
    /// A block of a server tool (web search, the MCP connector), which ccpool cannot run:
    /// its type.
    ServerTool(String),
}

/// The block types of a message that ccpool takes.
const BLOCK_TYPES: &str = "text, image, tool_use, tool_result, thinking, redacted_thinking";

impl Listed for ContentBlockParam {
    const PLURAL: &'static str = "content blocks";
}

impl<'de> Deserialize<'de> for ContentBlockParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (kind, value) = tagged(deserializer, "type")?;
        let Some(kind) = kind else {
            return Err(field_error("type", "a content block needs a type"));
        };
        Ok(match kind.as_str() {
            "text" => ContentBlockParam::Text(nested(value)?),
            "image" => ContentBlockParam::Image(nested(value)?),
            "tool_use" => ContentBlockParam::ToolUse(nested(value)?),
            "tool_result" => ContentBlockParam::ToolResult(nested(value)?),
            "thinking" => ContentBlockParam::Thinking,
            "redacted_thinking" => ContentBlockParam::RedactedThinking,
            "server_tool_use" | "web_search_tool_result" | "mcp_tool_use" | "mcp_tool_result" => {
                ContentBlockParam::ServerTool(kind)
            }
            other => {
                return Err(field_error(
                    "type",
                    format!(
                        "content block type `{other}` is not supported by ccpool (it takes {BLOCK_TYPES})"
                    ),
                ));
            }
        })
    }
}

/// A `text` block (also the only block of a system prompt). `cache_control` and
/// `citations` are accepted without effect.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TextBlock {
    #[serde(rename = "type")]
    pub kind: TextType,
    pub text: String,
}

/// The type of a text block, which must say `text`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextType {
    Text,
}

impl Listed for TextBlock {
    const PLURAL: &'static str = "text blocks";
}

/// An `image` block.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ImageBlock {
    pub source: ImageSource,
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageSource {
    /// Inline; the translation checks the media type.
    Base64 { media_type: String, data: String },
    /// Fetched by ccpool only with `--fetch-remote-images`.
    Url { url: String },
    /// A source ccpool cannot read (`file`, …): its type.
    Other(String),
}

impl<'de> Deserialize<'de> for ImageSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Base64 {
            media_type: String,
            data: String,
        }
        #[derive(Deserialize)]
        struct Url {
            url: String,
        }
        match tagged(deserializer, "type")? {
            (Some(kind), value) => match kind.as_str() {
                "base64" => nested::<Base64, _>(value).map(|b| ImageSource::Base64 {
                    media_type: b.media_type,
                    data: b.data,
                }),
                "url" => nested::<Url, _>(value).map(|u| ImageSource::Url { url: u.url }),
                _ => Ok(ImageSource::Other(kind)),
            },
            (None, _) => Err(field_error("type", "field required")),
        }
    }
}

/// A `tool_use` block of an assistant message: a call the model made earlier.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ToolUseBlock {
    pub id: String,
    pub name: String,
    /// The call's input; the translation checks it is an object.
    pub input: Value,
}

/// A `tool_result` block of a user message: the client's answer to a call.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ToolResultBlock {
    pub tool_use_id: String,
    #[serde(default)]
    pub content: Option<TextOr<ToolResultPart>>,
    #[serde(default)]
    pub is_error: Option<bool>,
}

/// A block of a tool result's content: text or an image.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolResultPart {
    Text(TextBlock),
    Image(ImageBlock),
}

impl Listed for ToolResultPart {
    const PLURAL: &'static str = "content blocks";
}

impl<'de> Deserialize<'de> for ToolResultPart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match tagged(deserializer, "type")? {
            (Some(kind), value) if kind == "text" => nested(value).map(ToolResultPart::Text),
            (Some(kind), value) if kind == "image" => nested(value).map(ToolResultPart::Image),
            (kind, _) => Err(field_error(
                "type",
                format!(
                    "{} blocks in a tool_result are not supported by ccpool (text and image are)",
                    kind.map_or("untyped".to_string(), |k| format!("\"{k}\""))
                ),
            )),
        }
    }
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
    /// Sent after `message_start` and while the stream is idle.
    Ping,
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
            StreamEvent::Ping => "ping",
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

/// A model as `GET /v1/models` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename = "model")]
pub struct ModelInfo {
    pub id: String,
    pub display_name: String,
    /// RFC 3339.
    pub created_at: &'static str,
}

/// `GET /v1/models`: one page holding every model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelList {
    pub data: Vec<ModelInfo>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}
