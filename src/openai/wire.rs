//! The Chat Completions shapes, as serde types: the request, with its messages (tagged by
//! `role`), content parts, tools, tool choice and response format (read through `tagged`, so
//! an error names its path); and the answer (`ChatCompletion`, `ChatCompletionChunk`).
//! Parameters ccpool cannot honour are still parsed so they are accepted, or refused by name;
//! unknown fields are ignored, as the real API ignores them.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::tagged::{Listed, Text, TextOr, describe, field_error, nested, only, tagged};

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// A string or a list of up to four strings.
    #[serde(default)]
    pub stop: Option<TextOr<String>>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub tools: Option<Vec<ToolParam>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoiceParam>,
    /// Accepted without effect: the CLI has no switch for it.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub functions: Option<Vec<Value>>,
    #[serde(default)]
    pub function_call: Option<Value>,
    /// Refused when they ask for what the CLI cannot do (audio, predicted output, web search,
    /// token biases); see README.
    #[serde(default)]
    pub audio: Option<Value>,
    #[serde(default)]
    pub modalities: Option<Vec<String>>,
    #[serde(default)]
    pub prediction: Option<Value>,
    #[serde(default)]
    pub web_search_options: Option<Value>,
    #[serde(default)]
    pub logit_bias: Option<Value>,
    /// Accepted without effect: the CLI chooses its own sampling.
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// One message, tagged by its `role`.
#[derive(Debug, PartialEq)]
pub enum ChatMessage {
    /// `system` and `developer` messages make the system prompt.
    System(InstructionMessage),
    Developer(InstructionMessage),
    User(UserMessage),
    Assistant(AssistantMessage),
    Tool(ToolMessage),
    /// A result of the deprecated functions API: refused by the translation.
    Function,
}

impl<'de> Deserialize<'de> for ChatMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (role, value) = tagged(deserializer, "role")?;
        let Some(role) = role else {
            return Err(field_error("role", "field required"));
        };
        Ok(match role.as_str() {
            "system" => ChatMessage::System(nested(value)?),
            "developer" => ChatMessage::Developer(nested(value)?),
            "user" => ChatMessage::User(nested(value)?),
            "assistant" => ChatMessage::Assistant(nested(value)?),
            "tool" => ChatMessage::Tool(nested(value)?),
            "function" => ChatMessage::Function,
            other => {
                return Err(field_error(
                    "role",
                    format!(
                        "unknown role \"{other}\"; expected system, developer, user, assistant or tool"
                    ),
                ));
            }
        })
    }
}

/// A `system` or `developer` message: text only.
#[derive(Debug, PartialEq, Deserialize)]
pub struct InstructionMessage {
    #[serde(default)]
    pub content: Option<TextOr<TextPart>>,
}

/// A `user` message: text and images.
#[derive(Debug, PartialEq, Deserialize)]
pub struct UserMessage {
    #[serde(default)]
    pub content: Option<TextOr<UserPart>>,
}

/// An `assistant` message of the history: text, and the calls it made.
#[derive(Debug, PartialEq, Deserialize)]
pub struct AssistantMessage {
    #[serde(default)]
    pub content: Option<TextOr<TextPart>>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallParam>>,
}

/// A `tool` message: the result of one call.
#[derive(Debug, PartialEq, Deserialize)]
pub struct ToolMessage {
    #[serde(default)]
    pub content: Option<TextOr<TextPart>>,
    /// The call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// A content part where only text is allowed.
#[derive(Clone, Debug, PartialEq)]
pub struct TextPart {
    pub text: String,
}

impl Listed for TextPart {
    const PLURAL: &'static str = "content parts";
}

impl<'de> Deserialize<'de> for TextPart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match only::<_, Text>(deserializer, "type", "text")? {
            Ok(Text { text }) => Ok(TextPart { text }),
            Err(kind) => Err(field_error(
                "type",
                format!("only text parts are allowed here, not \"{kind}\""),
            )),
        }
    }
}

/// A content part of a user message.
#[derive(Clone, Debug, PartialEq)]
pub enum UserPart {
    Text(String),
    /// A `data:` URL, or a remote URL.
    ImageUrl(String),
    /// A part ccpool cannot read (`input_audio`, `file`, …): its type, refused by name.
    Other(String),
}

impl Listed for UserPart {
    const PLURAL: &'static str = "content parts";
}

impl<'de> Deserialize<'de> for UserPart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Image {
            image_url: ImageUrl,
        }
        match tagged(deserializer, "type")? {
            (Some(kind), value) => match kind.as_str() {
                "text" => nested::<Text, _>(value).map(|t| UserPart::Text(t.text)),
                "image_url" => nested::<Image, _>(value).map(|i| UserPart::ImageUrl(i.image_url.0)),
                _ => Ok(UserPart::Other(kind)),
            },
            (None, _) => Err(field_error("type", "field required")),
        }
    }
}

/// An `image_url`: `{"url": …, "detail": …}`, or the URL itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageUrl(pub String);

impl<'de> Deserialize<'de> for ImageUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            url: String,
        }
        match Value::deserialize(deserializer)? {
            Value::String(url) => Ok(ImageUrl(url)),
            object @ Value::Object(_) => nested::<Object, _>(object).map(|o| ImageUrl(o.url)),
            other => Err(serde::de::Error::custom(format!(
                "expected an object with a url, got {}",
                describe(&other)
            ))),
        }
    }
}

/// A call in an assistant message's `tool_calls`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ToolCallParam {
    pub id: String,
    pub function: FunctionCallParam,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FunctionCallParam {
    pub name: String,
    /// The input, as JSON text; empty stands for `{}`.
    #[serde(default)]
    pub arguments: String,
}

/// A tool the client declares: only function tools are served; another type is kept by
/// name, to be refused as unsupported.
#[derive(Debug, PartialEq)]
pub enum ToolParam {
    Function(FunctionDefinition),
    Other(String),
}

/// A function tool's `function`. `strict` is accepted; the schema is offered as is.
#[derive(Debug, PartialEq, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON schema; the translation checks it is an object schema.
    #[serde(default)]
    pub parameters: Option<Value>,
}

impl<'de> Deserialize<'de> for ToolParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Function {
            function: FunctionDefinition,
        }
        Ok(
            match only::<_, Function>(deserializer, "type", "function")? {
                Ok(f) => ToolParam::Function(f.function),
                Err(kind) => ToolParam::Other(kind),
            },
        )
    }
}

/// `tool_choice`: `none`, `auto`, `required`, or `{"type":"function","function":{"name"}}`.
#[derive(Debug, PartialEq)]
pub enum ToolChoiceParam {
    /// A string, checked by the translation.
    Mode(String),
    Function {
        name: String,
    },
}

impl<'de> Deserialize<'de> for ToolChoiceParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        #[derive(Deserialize)]
        struct Function {
            function: Named,
        }
        let value = Value::deserialize(deserializer)?;
        match value {
            Value::String(mode) => Ok(ToolChoiceParam::Mode(mode)),
            object if object.get("type").and_then(Value::as_str) == Some("function") => {
                nested::<Function, _>(object).map(|f| ToolChoiceParam::Function {
                    name: f.function.name,
                })
            }
            _ => Err(serde::de::Error::custom(
                "expected none, auto, required or {\"type\": \"function\", \"function\": {\"name\": …}}",
            )),
        }
    }
}

/// `response_format`.
#[derive(Debug, PartialEq)]
pub enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// The schema of `json_schema.schema` (checked to be an object by the translation).
    JsonSchema {
        schema: Option<Value>,
    },
}

impl<'de> Deserialize<'de> for ResponseFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Schema {
            #[serde(default)]
            schema: Option<Value>,
        }
        #[derive(Deserialize)]
        struct JsonSchema {
            json_schema: Schema,
        }
        match tagged(deserializer, "type")? {
            (Some(kind), value) => match kind.as_str() {
                "text" => Ok(ResponseFormat::Text),
                "json_object" => Ok(ResponseFormat::JsonObject),
                "json_schema" => {
                    nested::<JsonSchema, _>(value).map(|f| ResponseFormat::JsonSchema {
                        schema: f.json_schema.schema,
                    })
                }
                other => Err(field_error(
                    "type",
                    format!("expected text, json_object or json_schema, got \"{other}\""),
                )),
            },
            (None, _) => Err(field_error(
                "type",
                "field required (text, json_object or json_schema)",
            )),
        }
    }
}

/// A `chat.completion` object: the whole answer.
#[derive(Clone, Debug, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<CompletionChoice>,
    pub usage: CompletionUsage,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub message: CompletionMessage,
    /// Always null: ccpool has no log probabilities.
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

/// The assistant's message of a completion.
#[derive(Clone, Debug, Serialize)]
pub struct CompletionMessage {
    pub role: &'static str,
    /// Null when the message is only tool calls.
    pub content: Option<String>,
    pub refusal: Option<String>,
    /// The model's thinking, when the configuration exposes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// The model's calls of the client's functions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// One function call of the model, whole.
#[derive(Clone, Debug, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Clone, Debug, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// The input, as JSON text.
    pub arguments: String,
}

/// A piece of a streamed function call: the first carries id, type and name, the others
/// argument fragments.
#[derive(Clone, Debug, Serialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionCallDelta,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FunctionCallDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Token counts as Chat Completions reports them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CompletionUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u64,
}

/// A `chat.completion.chunk`: one streamed piece of the answer.
#[derive(Clone, Debug, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChunkChoice>,
    /// With `stream_options.include_usage`: null on every chunk but the last, which has no
    /// choices; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<CompletionUsage>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: ChunkDelta,
    /// Always null: ccpool has no log probabilities.
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

/// What a chunk adds to the message.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChunkDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A model as `GET /v1/models` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Model {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}
