//! The Responses API's shapes, as serde types: the `POST /v1/responses` request with its input
//! items, and what ccpool answers with (the `response` object, its output items, the stream
//! events, the input-item list, the deletion). Parameters ccpool cannot honour are still parsed
//! so that they are accepted without effect, or refused by name.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::tagged::{Listed, Text, TextOr, describe, field_error, nested, only, tagged};

/// `POST /v1/responses`.
#[derive(Debug, Deserialize)]
pub struct CreateResponse {
    pub model: String,
    /// A string (one user message) or a list of items; parsed item by item by the translation,
    /// so an error names the item at fault.
    #[serde(default)]
    pub input: Option<Input>,
    /// The system prompt. Not carried over by `previous_response_id`.
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// Accepted without effect: the CLI chooses its own sampling.
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Only `function` tools are served; the translation refuses the others by name.
    #[serde(default)]
    pub tools: Option<Vec<ToolParam>>,
    /// `none`, `auto`, `required`, or `{"type":"function","name":…}`.
    #[serde(default)]
    pub tool_choice: Option<ToolChoiceParam>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub text: Option<TextConfig>,
    #[serde(default)]
    pub reasoning: Option<ReasoningConfig>,
    /// Up to 16 string values, echoed in the response.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// Keep the response for `GET` and `previous_response_id` (default true).
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// Refused when true: ccpool answers while the client waits.
    #[serde(default)]
    pub background: Option<bool>,
    /// Refused: ccpool keeps no conversation objects (`previous_response_id` works).
    #[serde(default)]
    pub conversation: Option<Value>,
    /// Refused: ccpool keeps no prompt templates.
    #[serde(default)]
    pub prompt: Option<Value>,
    /// Refused when above 0: log probabilities are not available.
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    /// Accepted without effect.
    #[serde(default)]
    pub stream_options: Option<Value>,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub truncation: Option<String>,
    #[serde(default)]
    pub max_tool_calls: Option<u32>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub safety_identifier: Option<String>,
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
    #[serde(default)]
    pub service_tier: Option<String>,
}

/// `input`: a string (one user message), or a list of items.
pub type Input = TextOr<InputItemParam>;

/// An item of `input` as a client sends it: a message without `type` is a message, and a
/// string `content` is one text part (`output_text` for the assistant, `input_text`
/// otherwise).
#[derive(Clone, Debug, PartialEq)]
pub enum InputItemParam {
    Item(InputItem),
    /// A reference to a stored item: refused by the translation.
    Reference,
    /// An item type ccpool does not serve (`computer_call_output`, …): its type, refused by
    /// the translation.
    Other(String),
}

impl Listed for InputItemParam {
    const PLURAL: &'static str = "items";
}

impl<'de> Deserialize<'de> for InputItemParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (kind, value) = tagged(deserializer, "type")?;
        let kind = match kind {
            Some(kind) => kind,
            None if value.get("role").is_some() => "message".to_string(),
            None => return Err(field_error("type", "field required")),
        };
        Ok(InputItemParam::Item(match kind.as_str() {
            "message" => {
                let message: MessageParam = nested(value)?;
                let content = match message.content {
                    TextOr::List(parts) => parts,
                    TextOr::Text(text) if text.is_empty() => Vec::new(),
                    TextOr::Text(text) if message.role == "assistant" => {
                        vec![ContentPart::OutputText {
                            text,
                            annotations: Vec::new(),
                            logprobs: Vec::new(),
                        }]
                    }
                    TextOr::Text(text) => vec![ContentPart::InputText { text }],
                };
                InputItem::Message(MessageItem {
                    id: message.id,
                    role: message.role,
                    content,
                    status: message.status,
                })
            }
            "function_call" => InputItem::FunctionCall(nested(value)?),
            "function_call_output" => InputItem::FunctionCallOutput(nested(value)?),
            "reasoning" => InputItem::Reasoning(nested(value)?),
            "item_reference" => return Ok(InputItemParam::Reference),
            _ => return Ok(InputItemParam::Other(kind)),
        }))
    }
}

/// A message as a client may send it: `content` a string or parts.
#[derive(Deserialize)]
struct MessageParam {
    #[serde(default)]
    id: Option<String>,
    role: String,
    content: TextOr<ContentPart>,
    #[serde(default)]
    status: Option<String>,
}

/// A tool the client declares: a function, or another type (a built-in tool of OpenAI's),
/// kept by name to be refused.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolParam {
    Function(FunctionTool),
    Other(String),
}

impl<'de> Deserialize<'de> for ToolParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match only(deserializer, "type", "function")? {
            Ok(tool) => ToolParam::Function(tool),
            Err(kind) => ToolParam::Other(kind),
        })
    }
}

/// `tool_choice`, as given and as the response echoes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ToolChoiceParam {
    /// `none`, `auto` or `required`; checked by the translation.
    Mode(String),
    /// One function, by name.
    Function {
        #[serde(rename = "type")]
        kind: FunctionType,
        name: String,
    },
    /// Another type of choice (a built-in tool, …): refused by the translation.
    #[serde(skip_serializing)]
    Other(String),
}

/// The `type` of a function choice: `function`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionType {
    Function,
}

impl<'de> Deserialize<'de> for ToolChoiceParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        match Value::deserialize(deserializer)? {
            Value::String(mode) => Ok(ToolChoiceParam::Mode(mode)),
            object @ Value::Object(_) => match object.get("type") {
                Some(Value::String(kind)) if kind == "function" => {
                    nested::<Named, _>(object).map(|n| ToolChoiceParam::Function {
                        kind: FunctionType::Function,
                        name: n.name,
                    })
                }
                Some(Value::String(kind)) => Ok(ToolChoiceParam::Other(kind.clone())),
                _ => Err(field_error("type", "field required")),
            },
            other => Err(serde::de::Error::custom(format!(
                "must be a string or an object, got {}",
                describe(&other)
            ))),
        }
    }
}

/// One item of a conversation, as a client sends it and as ccpool lists it back
/// (`input_items`). An assistant's output items read back as the same types.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputItem {
    Message(MessageItem),
    FunctionCall(FunctionCallItem),
    FunctionCallOutput(FunctionCallOutputItem),
    /// The model's reasoning from an earlier answer: accepted and not passed on.
    Reasoning(ReasoningItem),
    /// A reference to a stored item: refused by the translation.
    ItemReference {
        id: String,
    },
}

/// A message; a string `content` is read as one text part of the role's kind.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct MessageItem {
    #[serde(default)]
    pub id: Option<String>,
    pub role: String,
    pub content: Vec<ContentPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A part of a message's content.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    InputText {
        text: String,
    },
    InputImage {
        #[serde(default)]
        image_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
        #[serde(default = "auto")]
        detail: String,
    },
    /// Refused by the translation: ccpool reads no files.
    InputFile {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    OutputText {
        text: String,
        #[serde(default)]
        annotations: Vec<Value>,
        #[serde(default)]
        logprobs: Vec<Value>,
    },
    Refusal {
        refusal: String,
    },
}

fn auto() -> String {
    "auto".into()
}

impl Listed for ContentPart {
    const PLURAL: &'static str = "content parts";
}

impl<'de> Deserialize<'de> for ContentPart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Image {
            #[serde(default)]
            image_url: Option<String>,
            #[serde(default)]
            file_id: Option<String>,
            #[serde(default = "auto")]
            detail: String,
        }
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            filename: Option<String>,
        }
        #[derive(Deserialize)]
        struct Output {
            text: String,
            #[serde(default)]
            annotations: Vec<Value>,
            #[serde(default)]
            logprobs: Vec<Value>,
        }
        #[derive(Deserialize)]
        struct Refusal {
            refusal: String,
        }
        let (kind, value) = tagged(deserializer, "type")?;
        let Some(kind) = kind else {
            return Err(field_error("type", "field required"));
        };
        Ok(match kind.as_str() {
            "input_text" => ContentPart::InputText {
                text: nested::<Text, _>(value)?.text,
            },
            "input_image" => {
                let image: Image = nested(value)?;
                ContentPart::InputImage {
                    image_url: image.image_url,
                    file_id: image.file_id,
                    detail: image.detail,
                }
            }
            "input_file" => ContentPart::InputFile {
                filename: nested::<File, _>(value)?.filename,
            },
            "output_text" => {
                let output: Output = nested(value)?;
                ContentPart::OutputText {
                    text: output.text,
                    annotations: output.annotations,
                    logprobs: output.logprobs,
                }
            }
            "refusal" => ContentPart::Refusal {
                refusal: nested::<Refusal, _>(value)?.refusal,
            },
            other => {
                return Err(field_error(
                    "type",
                    format!(
                        "content part type `{other}` is not supported by ccpool (it takes input_text, input_image, output_text and refusal)"
                    ),
                ));
            }
        })
    }
}

/// The model's call of a client function.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct FunctionCallItem {
    #[serde(default)]
    pub id: Option<String>,
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The client's result of a function call.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct FunctionCallOutputItem {
    #[serde(default)]
    pub id: Option<String>,
    pub call_id: String,
    pub output: FunctionOutput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A function's result: text, or text and image parts.
pub type FunctionOutput = TextOr<ContentPart>;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ReasoningItem {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub summary: Vec<Value>,
}

/// A `function` tool as the client declares it (and as the response echoes it).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct FunctionTool {
    #[serde(rename = "type", default = "function")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

fn function() -> String {
    "function".into()
}

/// `text`: the output format.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct TextConfig {
    #[serde(default)]
    pub format: Option<TextFormat>,
    #[serde(default)]
    pub verbosity: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default)]
        strict: Option<bool>,
    },
}

impl<'de> Deserialize<'de> for TextFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct JsonSchema {
            name: String,
            schema: Value,
            #[serde(default)]
            description: Option<String>,
            #[serde(default)]
            strict: Option<bool>,
        }
        match tagged(deserializer, "type")? {
            (Some(kind), value) => match kind.as_str() {
                "text" => Ok(TextFormat::Text),
                "json_object" => Ok(TextFormat::JsonObject),
                "json_schema" => {
                    let format: JsonSchema = nested(value)?;
                    Ok(TextFormat::JsonSchema {
                        name: format.name,
                        schema: format.schema,
                        description: format.description,
                        strict: format.strict,
                    })
                }
                other => Err(field_error(
                    "type",
                    format!("expected text, json_object or json_schema, got \"{other}\""),
                )),
            },
            (None, _) => Err(field_error("type", "field required")),
        }
    }
}

/// `reasoning`: the effort maps to the CLI's effort level; summaries are not produced.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ReasoningConfig {
    #[serde(default)]
    pub effort: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default, skip_serializing)]
    pub generate_summary: Option<String>,
}

/// The `response` object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Response {
    pub id: String,
    pub object: &'static str,
    pub created_at: u64,
    pub status: Status,
    pub background: bool,
    pub completed_at: Option<u64>,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub max_tool_calls: Option<u32>,
    /// The model name the client asked for.
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub reasoning: ReasoningConfig,
    pub service_tier: &'static str,
    pub store: bool,
    pub temperature: f64,
    pub text: TextEcho,
    pub tool_choice: ToolChoiceParam,
    pub tools: Vec<FunctionTool>,
    pub top_p: f64,
    pub truncation: &'static str,
    pub usage: Option<Usage>,
    pub user: Option<String>,
    pub metadata: Map<String, Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Completed,
    Incomplete,
    Failed,
}

/// `text` as the response echoes it: the format always named.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TextEcho {
    pub format: TextFormat,
    pub verbosity: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResponseError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: &'static str,
}

/// An item of a response's `output`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        status: Status,
        role: &'static str,
        content: Vec<OutputText>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: Status,
    },
}

/// An `output_text` part (its only kind in ccpool's answers).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename = "output_text")]
pub struct OutputText {
    pub text: String,
    pub annotations: Vec<Value>,
    pub logprobs: Vec<Value>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InputTokensDetails {
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u64,
}

/// One server-sent event of a streamed response; its `type` is also the SSE event name.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    #[serde(rename = "response.created")]
    Created {
        sequence_number: u64,
        response: Box<Response>,
    },
    #[serde(rename = "response.in_progress")]
    InProgress {
        sequence_number: u64,
        response: Box<Response>,
    },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        sequence_number: u64,
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        sequence_number: u64,
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        sequence_number: u64,
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        sequence_number: u64,
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        sequence_number: u64,
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        sequence_number: u64,
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        sequence_number: u64,
        item_id: String,
        output_index: usize,
        name: String,
        arguments: String,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        sequence_number: u64,
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.completed")]
    Completed {
        sequence_number: u64,
        response: Box<Response>,
    },
    #[serde(rename = "response.incomplete")]
    Incomplete {
        sequence_number: u64,
        response: Box<Response>,
    },
    #[serde(rename = "response.failed")]
    Failed {
        sequence_number: u64,
        response: Box<Response>,
    },
}

impl StreamEvent {
    /// The event's `type`, the SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Created { .. } => "response.created",
            StreamEvent::InProgress { .. } => "response.in_progress",
            StreamEvent::OutputItemAdded { .. } => "response.output_item.added",
            StreamEvent::ContentPartAdded { .. } => "response.content_part.added",
            StreamEvent::OutputTextDelta { .. } => "response.output_text.delta",
            StreamEvent::OutputTextDone { .. } => "response.output_text.done",
            StreamEvent::ContentPartDone { .. } => "response.content_part.done",
            StreamEvent::FunctionCallArgumentsDelta { .. } => {
                "response.function_call_arguments.delta"
            }
            StreamEvent::FunctionCallArgumentsDone { .. } => {
                "response.function_call_arguments.done"
            }
            StreamEvent::OutputItemDone { .. } => "response.output_item.done",
            StreamEvent::Completed { .. } => "response.completed",
            StreamEvent::Incomplete { .. } => "response.incomplete",
            StreamEvent::Failed { .. } => "response.failed",
        }
    }
}

/// `GET /v1/responses/{id}/input_items`: one page of a response's input items.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ItemList {
    pub object: &'static str,
    pub data: Vec<InputItem>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// The query of `input_items`.
#[derive(Debug, Default, Deserialize)]
pub struct ItemListQuery {
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub order: Option<String>,
}

/// `DELETE /v1/responses/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Deleted {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}
