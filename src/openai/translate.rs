//! Explicit translation between Chat Completions and the domain: a request into a
//! `ChatRequest`, and chat items back into `chat.completion` chunks or objects.

use serde_json::Value;

use crate::chat::{ChatEnd, ChatItem, ChatRequest};
use crate::dialect::Context;
use crate::domain::{
    BlockDelta, BlockKind, ContentBlock, HistoryMessage, LaunchProfile, Role, StopReason,
    ToolChoice, ToolSpec, TurnEvent, TurnRequest, Usage,
};

use super::OpenAiError;
use super::wire::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ChunkChoice,
    ChunkDelta, CompletionChoice, CompletionMessage, CompletionUsage, FunctionCall,
    FunctionCallDelta, PromptTokensDetails, ResponseFormat, TextPart, ToolCall, ToolCallDelta,
    ToolCallParam, ToolChoiceParam, ToolParam, UserPart,
};
use crate::tagged::TextOr;

/// The output-token limit the CLI asks for when nothing else is set.
const CLI_DEFAULT_MAX_TOKENS: u32 = 32000;
/// The schema `json_object` stands for: any JSON object.
const ANY_OBJECT_SCHEMA: &str = r#"{"type":"object"}"#;
/// The schema of a function without `parameters`.
const EMPTY_OBJECT_SCHEMA: &str = r#"{"type":"object","properties":{}}"#;

pub use crate::dialect::OpenAiOptions;

/// A translated request and how to answer it.
#[derive(Debug)]
pub struct Translated {
    pub chat: ChatRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parses a request body, with errors that name the offending parameter.
pub fn parse(body: &[u8]) -> Result<ChatCompletionRequest, OpenAiError> {
    crate::dialect::parse_json(
        body,
        crate::dialect::PathStyle::Bracketed,
        |field, message| OpenAiError::invalid(field, message),
    )
}

/// A Chat Completions request as a chat request.
pub fn to_chat(
    request: ChatCompletionRequest,
    context: &Context,
) -> Result<Translated, OpenAiError> {
    let options = context.options;
    refuse_unsupported(&request)?;
    if request.model.trim().is_empty() {
        return Err(OpenAiError::invalid("model", "model must not be empty"));
    }
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    if max_tokens == Some(0) {
        return Err(OpenAiError::invalid(
            "max_completion_tokens",
            "must be at least 1",
        ));
    }
    let tools = tools(request.tools.unwrap_or_default())?;
    let tool_choice = tool_choice(request.tool_choice, &tools)?;
    let (system, history, content) = split_messages(request.messages, context.fetch_remote_images)?;
    let json_schema = response_format(request.response_format)?;
    let structured = json_schema.is_some();
    let profile = LaunchProfile {
        // The model goes into the profile where the request flow picks a worker (`chat`).
        model: None,
        system_prompt: system,
        builtin_tools: false,
        json_schema,
        max_output_tokens: max_tokens.filter(|&m| m != CLI_DEFAULT_MAX_TOKENS),
        effort: effort(request.reasoning_effort.as_deref())?,
    };
    let model = options
        .model_aliases
        .get(&request.model)
        .cloned()
        .unwrap_or_else(|| request.model.clone());
    let mut chat = ChatRequest {
        owner: context.owner.clone(),
        profile,
        turn: TurnRequest {
            history,
            content,
            model: Some(model),
            tools,
            tool_choice,
        },
        stop_sequences: stop_sequences(request.stop)?,
        include_thinking: options.reasoning_content,
        structured,
        forced_tool: None,
        single_tool_call: request.parallel_tool_calls == Some(false),
    };
    if chat.structured && !matches!(chat.turn.tool_choice, ToolChoice::Auto | ToolChoice::None) {
        return Err(OpenAiError::invalid(
            "tool_choice",
            "tool_choice: a forced call cannot be combined with response_format json_schema",
        ));
    }
    chat.force_tool()
        .map_err(|why| OpenAiError::invalid("tool_choice", format!("tool_choice: {why}")))?;
    Ok(Translated {
        chat,
        stream: request.stream.unwrap_or(false),
        include_usage: request
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

fn refuse_unsupported(request: &ChatCompletionRequest) -> Result<(), OpenAiError> {
    if request.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::unsupported(
            "n",
            "n: ccpool returns one choice; n must be 1",
        ));
    }
    if request.logprobs == Some(true) || request.top_logprobs.is_some() {
        let param = if request.logprobs == Some(true) {
            "logprobs"
        } else {
            "top_logprobs"
        };
        return Err(OpenAiError::unsupported(
            param,
            format!("{param}: log probabilities are not available through ccpool"),
        ));
    }
    if request.functions.as_ref().is_some_and(|f| !f.is_empty()) || request.function_call.is_some()
    {
        return Err(OpenAiError::unsupported(
            "functions",
            "functions: the deprecated functions API is not supported by ccpool; use tools",
        ));
    }
    let given = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
    let refused = [
        (
            given(&request.audio),
            "audio",
            "audio output is not available through ccpool",
        ),
        (
            request
                .modalities
                .as_ref()
                .is_some_and(|m| m.iter().any(|m| m != "text")),
            "modalities",
            "only the \"text\" modality is available through ccpool",
        ),
        (
            given(&request.prediction),
            "prediction",
            "predicted outputs are not available through ccpool",
        ),
        (
            given(&request.web_search_options),
            "web_search_options",
            "web search is not available through ccpool",
        ),
        (
            request
                .logit_bias
                .as_ref()
                .is_some_and(|b| b.as_object().is_some_and(|b| !b.is_empty())),
            "logit_bias",
            "token biases are not available through ccpool",
        ),
    ];
    for (asked, param, why) in refused {
        if asked {
            return Err(OpenAiError::unsupported(param, format!("{param}: {why}")));
        }
    }
    Ok(())
}

/// `tools`: function tools only (`strict` is accepted; the schema is offered as is).
fn tools(tools: Vec<ToolParam>) -> Result<Vec<ToolSpec>, OpenAiError> {
    let mut out: Vec<ToolSpec> = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        let function = match tool {
            ToolParam::Function(function) => function,
            ToolParam::Other(other) => {
                return Err(OpenAiError::unsupported(
                    &format!("{at}.type"),
                    format!(
                        "{at}.type: \"{other}\" tools are not supported by ccpool; only function tools are"
                    ),
                ));
            }
        };
        let name = function.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(OpenAiError::invalid(
                format!("{at}.function.name"),
                format!("{at}.function.name: must match ^[a-zA-Z0-9_-]{{1,64}}$"),
            ));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(OpenAiError::invalid(
                format!("{at}.function.name"),
                format!("{at}.function.name: \"{name}\" appears twice; names must be unique"),
            ));
        }
        let schema = match function.parameters {
            None | Some(Value::Null) => EMPTY_OBJECT_SCHEMA.to_string(),
            Some(p) if p.get("type").and_then(Value::as_str) == Some("object") => {
                if let Some(why) = crate::dialect::tool_schema_error(&p) {
                    return Err(OpenAiError::invalid(
                        format!("{at}.function.parameters"),
                        format!("{at}.function.parameters: {why}"),
                    ));
                }
                p.to_string()
            }
            Some(_) => {
                return Err(OpenAiError::invalid(
                    format!("{at}.function.parameters"),
                    format!(
                        "{at}.function.parameters: a JSON schema with \"type\": \"object\" is required"
                    ),
                ));
            }
        };
        out.push(ToolSpec {
            name,
            description: function.description,
            input_schema: schema,
        });
    }
    Ok(out)
}

/// `tool_choice`: `none`, `auto`, `required`, or one of the tools by name.
fn tool_choice(
    choice: Option<ToolChoiceParam>,
    tools: &[ToolSpec],
) -> Result<ToolChoice, OpenAiError> {
    let bad = |message: String| OpenAiError::invalid("tool_choice", message);
    match choice {
        None => Ok(ToolChoice::Auto),
        Some(ToolChoiceParam::Mode(mode)) => match mode.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" if tools.is_empty() => {
                Err(bad("tool_choice: \"required\" needs tools".into()))
            }
            "required" => Ok(ToolChoice::Any),
            other => Err(bad(format!(
                "tool_choice: \"{other}\" is not one of none, auto, required"
            ))),
        },
        Some(ToolChoiceParam::Function { name }) => {
            if !tools.iter().any(|t| t.name == name) {
                return Err(bad(format!(
                    "tool_choice: the function \"{name}\" is not one of the tools"
                )));
            }
            Ok(ToolChoice::Tool(name))
        }
    }
}

/// An assistant message's `tool_calls` as tool-use blocks.
fn tool_calls(calls: Vec<ToolCallParam>, param: &str) -> Result<Vec<ContentBlock>, OpenAiError> {
    let mut out = Vec::with_capacity(calls.len());
    for (k, call) in calls.into_iter().enumerate() {
        let at = format!("{param}[{k}]");
        let arguments = match call.function.arguments.as_str() {
            "" => "{}",
            arguments => arguments,
        };
        let input: Value = serde_json::from_str(arguments).map_err(|_| {
            OpenAiError::invalid(
                format!("{at}.function.arguments"),
                format!("{at}.function.arguments: must be a JSON object as text"),
            )
        })?;
        if call.id.is_empty() || call.function.name.is_empty() || !input.is_object() {
            return Err(OpenAiError::invalid(
                at.clone(),
                format!("{at}: a tool call needs id, function.name and object arguments"),
            ));
        }
        out.push(ContentBlock::ToolUse {
            id: call.id,
            name: call.function.name,
            input: input.to_string(),
        });
    }
    Ok(out)
}

/// A conversation split for the CLI: system prompt, history, new user content.
type Conversation = (Option<String>, Vec<HistoryMessage>, Vec<ContentBlock>);

/// `system` and `developer` messages make the system prompt; the rest is the conversation,
/// whose last message is the new user turn.
fn split_messages(
    messages: Vec<ChatMessage>,
    remote_images: bool,
) -> Result<Conversation, OpenAiError> {
    if messages.is_empty() {
        return Err(OpenAiError::invalid(
            "messages",
            "messages must contain at least one message",
        ));
    }
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        let param = format!("messages[{i}]");
        let content_param = format!("{param}.content");
        match message {
            ChatMessage::System(m) | ChatMessage::Developer(m) => {
                system.push(text_only(m.content, &content_param)?)
            }
            ChatMessage::User(m) => {
                let content = user_content(m.content, &content_param, remote_images)?;
                push_user(&mut turns, content);
            }
            ChatMessage::Assistant(m) => {
                let calls = match m.tool_calls {
                    None => Vec::new(),
                    Some(calls) => tool_calls(calls, &format!("{param}.tool_calls"))?,
                };
                let mut content = match (m.content, calls.is_empty()) {
                    (None, false) => Vec::new(),
                    (Some(TextOr::Text(s)), false) if s.is_empty() => Vec::new(),
                    (content, _) => vec![ContentBlock::Text(text_only(content, &content_param)?)],
                };
                content.extend(calls);
                turns.push(HistoryMessage {
                    role: Role::Assistant,
                    content,
                });
            }
            ChatMessage::Tool(m) => {
                let Some(id) = m.tool_call_id.filter(|id| !id.is_empty()) else {
                    return Err(OpenAiError::invalid(
                        format!("{param}.tool_call_id"),
                        format!("{param}.tool_call_id: required on a tool message"),
                    ));
                };
                let content = match m.content {
                    None => Vec::new(),
                    Some(TextOr::Text(s)) if s.is_empty() => Vec::new(),
                    content => vec![ContentBlock::Text(text_only(content, &content_param)?)],
                };
                let result = ContentBlock::ToolResult {
                    tool_use_id: id,
                    content,
                    is_error: false,
                };
                push_user(&mut turns, vec![result]);
            }
            ChatMessage::Function => {
                return Err(OpenAiError::unsupported(
                    &format!("{param}.role"),
                    format!(
                        "{param}.role: \"function\" messages belong to the deprecated functions API; use tool messages"
                    ),
                ));
            }
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    let Some(last) = turns.pop() else {
        return Err(OpenAiError::invalid(
            "messages",
            "messages must contain a user message",
        ));
    };
    if last.role != Role::User {
        return Err(OpenAiError::invalid(
            "messages",
            "the last message must have the user role",
        ));
    }
    Ok((system, turns, last.content))
}

/// Adds user-side content: tool results and the user text that follows them form one user
/// message, as the Messages API wants them.
fn push_user(turns: &mut Vec<HistoryMessage>, content: Vec<ContentBlock>) {
    match turns.last_mut() {
        Some(last)
            if last.role == Role::User
                && last
                    .content
                    .iter()
                    .any(|b| matches!(b, ContentBlock::ToolResult { .. })) =>
        {
            last.content.extend(content)
        }
        _ => turns.push(HistoryMessage {
            role: Role::User,
            content,
        }),
    }
}

/// Content that may only be text (a string or text parts), required and non-empty.
fn text_only(content: Option<TextOr<TextPart>>, param: &str) -> Result<String, OpenAiError> {
    let text = match content {
        Some(TextOr::Text(s)) => s,
        Some(TextOr::List(parts)) => parts.into_iter().map(|p| p.text).collect(),
        None => {
            return Err(OpenAiError::invalid(
                param,
                format!("{param}: content is required"),
            ));
        }
    };
    if text.is_empty() {
        return Err(OpenAiError::invalid(
            param,
            format!("{param}: content must not be empty"),
        ));
    }
    Ok(text)
}

/// A user message's content: non-empty text, text parts and images.
fn user_content(
    content: Option<TextOr<UserPart>>,
    param: &str,
    remote_images: bool,
) -> Result<Vec<ContentBlock>, OpenAiError> {
    match content {
        Some(TextOr::Text(s)) if !s.is_empty() => Ok(vec![ContentBlock::Text(s)]),
        Some(TextOr::List(parts)) if !parts.is_empty() => parts
            .into_iter()
            .enumerate()
            .map(|(j, part)| {
                let at = format!("{param}[{j}]");
                match part {
                    UserPart::Text(t) if !t.is_empty() => Ok(ContentBlock::Text(t)),
                    UserPart::Text(_) => Err(OpenAiError::invalid(
                        format!("{at}.text"),
                        format!("{at}.text: a non-empty string is required"),
                    )),
                    UserPart::ImageUrl(url) => image(&url, &at, remote_images),
                    UserPart::Other(other) => Err(OpenAiError::unsupported(
                        &format!("{at}.type"),
                        format!("{at}.type: \"{other}\" parts are not supported by ccpool"),
                    )),
                }
            })
            .collect(),
        None => Err(OpenAiError::invalid(
            param,
            format!("{param}: content is required"),
        )),
        Some(_) => Err(OpenAiError::invalid(
            param,
            format!("{param}: content must not be empty"),
        )),
    }
}

/// An `image_url` part as an image block (see `dialect::image_url`).
fn image(url: &str, at: &str, remote_images: bool) -> Result<ContentBlock, OpenAiError> {
    let param = format!("{at}.image_url.url");
    crate::dialect::image_url(url, &param, remote_images)
        .map_err(|message| OpenAiError::invalid(param, message))
}

/// `stop`: up to four non-empty sequences.
fn stop_sequences(stop: Option<TextOr<String>>) -> Result<Vec<String>, OpenAiError> {
    let list = match stop {
        None => return Ok(Vec::new()),
        Some(TextOr::Text(s)) => vec![s],
        Some(TextOr::List(items)) => items,
    };
    if list.len() > 4 || list.iter().any(String::is_empty) {
        return Err(OpenAiError::invalid(
            "stop",
            "stop: up to 4 non-empty sequences",
        ));
    }
    Ok(list)
}

/// The JSON schema a `response_format` asks for, if any.
fn response_format(format: Option<ResponseFormat>) -> Result<Option<String>, OpenAiError> {
    match format {
        None | Some(ResponseFormat::Text) => Ok(None),
        Some(ResponseFormat::JsonObject) => Ok(Some(ANY_OBJECT_SCHEMA.to_string())),
        Some(ResponseFormat::JsonSchema {
            schema: Some(schema),
        }) if schema.is_object() => Ok(Some(schema.to_string())),
        Some(ResponseFormat::JsonSchema { .. }) => Err(OpenAiError::invalid(
            "response_format.json_schema.schema",
            "response_format.json_schema.schema: a JSON schema object is required",
        )),
    }
}

/// `reasoning_effort` as the CLI's effort level.
fn effort(reasoning: Option<&str>) -> Result<Option<String>, OpenAiError> {
    Ok(match reasoning {
        None => None,
        Some("none" | "minimal" | "low") => Some("low".into()),
        Some("medium") => Some("medium".into()),
        Some("high") => Some("high".into()),
        Some("xhigh") => Some("xhigh".into()),
        Some(other) => {
            return Err(OpenAiError::invalid(
                "reasoning_effort",
                format!("reasoning_effort: unknown value \"{other}\""),
            ));
        }
    })
}

/// The OpenAI finish reason for a stop reason.
pub fn finish_reason(reason: Option<&StopReason>) -> &'static str {
    match reason {
        Some(StopReason::MaxTokens) => "length",
        Some(StopReason::ToolUse) => "tool_calls",
        Some(StopReason::Refusal) => "content_filter",
        _ => "stop",
    }
}

pub fn usage(usage: &Usage) -> CompletionUsage {
    let prompt =
        usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens;
    CompletionUsage {
        prompt_tokens: prompt,
        completion_tokens: usage.output_tokens,
        total_tokens: prompt + usage.output_tokens,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: usage.cache_read_input_tokens,
        },
    }
}

/// Renders chat items as `chat.completion.chunk` objects, one id and `created` for all.
pub struct ChunkWriter {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
    sent_role: bool,
    /// Content block index → tool call index, for the calls streamed so far.
    calls: std::collections::HashMap<u32, u32>,
}

impl ChunkWriter {
    pub fn new(id: String, created: u64, model: String, include_usage: bool) -> Self {
        ChunkWriter {
            id,
            created,
            model,
            include_usage,
            sent_role: false,
            calls: std::collections::HashMap::new(),
        }
    }

    fn tool_call(&mut self, call: ToolCallDelta, out: &mut Vec<ChatCompletionChunk>) {
        self.role(out);
        out.push(self.delta(
            ChunkDelta {
                tool_calls: Some(vec![call]),
                ..ChunkDelta::default()
            },
            None,
        ));
    }

    fn chunk(
        &self,
        choices: Vec<ChunkChoice>,
        usage: Option<CompletionUsage>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: None,
            choices,
            usage: self.include_usage.then_some(usage),
        }
    }

    fn delta(&self, delta: ChunkDelta, finish_reason: Option<&'static str>) -> ChatCompletionChunk {
        let choice = ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        };
        self.chunk(vec![choice], None)
    }

    fn role(&mut self, out: &mut Vec<ChatCompletionChunk>) {
        if !self.sent_role {
            self.sent_role = true;
            out.push(self.delta(
                ChunkDelta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    ..ChunkDelta::default()
                },
                None,
            ));
        }
    }

    fn content(&mut self, text: &str, out: &mut Vec<ChatCompletionChunk>) {
        self.role(out);
        out.push(self.delta(
            ChunkDelta {
                content: Some(text.to_string()),
                ..ChunkDelta::default()
            },
            None,
        ));
    }

    /// The chunks for one item (a failure is rendered by the caller).
    pub fn write(&mut self, item: &ChatItem) -> Vec<ChatCompletionChunk> {
        let mut out = Vec::new();
        match item {
            ChatItem::Event(TurnEvent::MessageStart { .. }) => self.role(&mut out),
            ChatItem::Event(TurnEvent::BlockDelta {
                delta: BlockDelta::Text(text),
                ..
            }) => self.content(text, &mut out),
            ChatItem::Event(TurnEvent::BlockDelta {
                delta: BlockDelta::Thinking(text),
                ..
            }) => {
                self.role(&mut out);
                out.push(self.delta(
                    ChunkDelta {
                        reasoning_content: Some(text.clone()),
                        ..ChunkDelta::default()
                    },
                    None,
                ));
            }
            ChatItem::Event(TurnEvent::BlockStart {
                index,
                block: BlockKind::ToolUse { id, name },
            }) => {
                let k = self.calls.len() as u32;
                self.calls.insert(*index, k);
                let call = ToolCallDelta {
                    index: k,
                    id: Some(id.clone()),
                    kind: Some("function"),
                    function: FunctionCallDelta {
                        name: Some(name.clone()),
                        arguments: Some(String::new()),
                    },
                };
                self.tool_call(call, &mut out);
            }
            ChatItem::Event(TurnEvent::BlockDelta {
                index,
                delta: BlockDelta::InputJson(piece),
            }) => {
                if let Some(&k) = self.calls.get(index) {
                    let call = ToolCallDelta {
                        index: k,
                        id: None,
                        kind: None,
                        function: FunctionCallDelta {
                            name: None,
                            arguments: Some(piece.clone()),
                        },
                    };
                    self.tool_call(call, &mut out);
                }
            }
            ChatItem::Event(_) => {}
            ChatItem::End(end) if end.failure.is_none() => {
                self.role(&mut out);
                if let Some(object) = &end.structured_output {
                    self.content(object, &mut out);
                }
                let finish = finish_reason(end.stop_reason.as_ref());
                out.push(self.delta(ChunkDelta::default(), Some(finish)));
                if self.include_usage {
                    out.push(self.chunk(Vec::new(), Some(usage(&end.usage))));
                }
            }
            ChatItem::End(_) => {}
        }
        out
    }
}

/// Builds the non-streaming `chat.completion` object.
#[derive(Default)]
pub struct CompletionBuilder {
    content: String,
    reasoning: String,
    /// The tool calls, with their content block index.
    calls: Vec<(u32, ToolCall)>,
}

impl CompletionBuilder {
    pub fn push(&mut self, item: &ChatItem) {
        match item {
            ChatItem::Event(TurnEvent::BlockDelta {
                delta: BlockDelta::Text(t),
                ..
            }) => self.content.push_str(t),
            ChatItem::Event(TurnEvent::BlockDelta {
                delta: BlockDelta::Thinking(t),
                ..
            }) => self.reasoning.push_str(t),
            ChatItem::Event(TurnEvent::BlockStart {
                index,
                block: BlockKind::ToolUse { id, name },
            }) => self.calls.push((
                *index,
                ToolCall {
                    id: id.clone(),
                    kind: "function",
                    function: FunctionCall {
                        name: name.clone(),
                        arguments: String::new(),
                    },
                },
            )),
            ChatItem::Event(TurnEvent::BlockDelta {
                index,
                delta: BlockDelta::InputJson(piece),
            }) => {
                if let Some((_, call)) = self.calls.iter_mut().find(|(i, _)| i == index) {
                    call.function.arguments.push_str(piece);
                }
            }
            _ => {}
        }
    }

    pub fn finish(self, end: &ChatEnd, id: &str, created: u64, model: &str) -> ChatCompletion {
        let content = end.structured_output.clone().unwrap_or(self.content);
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .map(|(_, mut call)| {
                if call.function.arguments.is_empty() {
                    call.function.arguments = "{}".into();
                }
                call
            })
            .collect();
        let message = CompletionMessage {
            role: "assistant",
            content: (!content.is_empty() || tool_calls.is_empty()).then_some(content),
            refusal: None,
            reasoning_content: (!self.reasoning.is_empty()).then_some(self.reasoning),
            tool_calls,
        };
        ChatCompletion {
            id: id.to_string(),
            object: "chat.completion",
            created,
            model: model.to_string(),
            system_fingerprint: None,
            choices: vec![CompletionChoice {
                index: 0,
                message,
                logprobs: None,
                finish_reason: finish_reason(end.stop_reason.as_ref()),
            }],
            usage: usage(&end.usage),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    fn usage_json(u: &Usage) -> Value {
        serde_json::to_value(usage(u)).unwrap()
    }
    use crate::domain::BlockKind;
    use crate::domain::OwnerKey;
    use std::collections::HashMap;

    fn translate(body: Value) -> Result<Translated, OpenAiError> {
        let options = OpenAiOptions {
            model_aliases: HashMap::from([("gpt-4o".to_string(), "claude-sonnet-4-5".to_string())]),
            reasoning_content: false,
        };
        let context = Context {
            owner: OwnerKey::anonymous(),
            options: &options,
            fetch_remote_images: false,
            responses: &Default::default(),
        };
        to_chat(parse(body.to_string().as_bytes())?, &context)
    }

    fn base() -> Value {
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(extra: Value) -> Value {
        let mut b = base();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    }

    fn refused(body: Value, param: &str) {
        let e = translate(body.clone()).expect_err(&body.to_string());
        assert_eq!(e.status.as_u16(), 400, "{body}");
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        assert!(!e.message.is_empty());
    }

    #[test]
    fn a_full_request_translates_field_by_field() {
        let t = translate(json!({
            "model": "gpt-4o", "max_completion_tokens": 300, "max_tokens": 999, "stream": true,
            "stream_options": {"include_usage": true}, "stop": ["END", "STOP"], "reasoning_effort": "minimal",
            "temperature": 0.1, "top_p": 0.9, "seed": 7, "user": "u", "presence_penalty": 0.5, "frequency_penalty": 0.5,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "un"},
                {"role": "user", "content": [
                    {"type": "text", "text": "two"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
                ]}
            ]
        }))
        .unwrap();
        assert!(t.stream && t.include_usage);
        let chat = t.chat;
        assert_eq!(
            chat.profile.system_prompt.as_deref(),
            Some("Be brief.\n\nUse French.")
        );
        assert_eq!(
            chat.profile.max_output_tokens,
            Some(300),
            "max_completion_tokens wins"
        );
        assert_eq!(chat.profile.effort.as_deref(), Some("low"));
        assert_eq!(
            chat.turn.model.as_deref(),
            Some("claude-sonnet-4-5"),
            "aliases map to Claude models"
        );
        assert_eq!(chat.stop_sequences, vec!["END", "STOP"]);
        assert_eq!(chat.turn.history.len(), 2);
        assert_eq!(
            chat.turn.history[1],
            HistoryMessage {
                role: Role::Assistant,
                content: vec![ContentBlock::Text("un".into())]
            }
        );
        assert_eq!(
            chat.turn.content[1],
            ContentBlock::Image {
                media_type: "image/png".into(),
                data: "AAAA".into()
            }
        );
        assert!(!chat.structured && !chat.include_thinking);
    }

    #[test]
    fn response_formats_become_json_schemas() {
        let t = translate(with(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}))).unwrap();
        assert!(t.chat.structured);
        let schema: Value =
            serde_json::from_str(t.chat.profile.json_schema.as_deref().unwrap()).unwrap();
        assert_eq!(schema["properties"]["a"]["type"], "integer");
        let t = translate(with(json!({"response_format": {"type": "json_object"}}))).unwrap();
        assert_eq!(
            t.chat.profile.json_schema.as_deref(),
            Some(ANY_OBJECT_SCHEMA)
        );
        let t = translate(with(json!({"response_format": {"type": "text"}}))).unwrap();
        assert!(!t.chat.structured);
        assert_eq!(
            translate(base()).unwrap().chat.profile,
            LaunchProfile::default()
        );
        assert_eq!(
            translate(base()).unwrap().chat.turn.model.as_deref(),
            Some("claude-sonnet-4-5")
        );
        let t = translate(
            json!({"model": "claude-opus-4-1", "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap();
        assert_eq!(
            t.chat.turn.model.as_deref(),
            Some("claude-opus-4-1"),
            "Claude ids pass through"
        );
    }

    #[test]
    fn function_tools_calls_and_tool_messages_translate() {
        let t = translate(with(json!({
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "strict": true,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}}],
            "parallel_tool_calls": false,
            "messages": [
                {"role": "user", "content": "weather in Oslo and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "snow"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "sun"}]}
            ]
        })))
        .unwrap();
        let chat = t.chat;
        assert_eq!(chat.turn.tools[0].name, "get_weather");
        assert_eq!(chat.turn.tool_choice, ToolChoice::Auto);
        assert!(chat.single_tool_call, "parallel_tool_calls false");
        assert_eq!(chat.turn.history.len(), 2);
        assert_eq!(
            chat.turn.history[1].content[1],
            ContentBlock::ToolUse {
                id: "call_2".into(),
                name: "get_weather".into(),
                input: r#"{"city":"Rome"}"#.into()
            }
        );
        assert_eq!(
            chat.turn.content,
            vec![
                ContentBlock::ToolResult {
                    tool_use_id: "call_1".into(),
                    content: vec![ContentBlock::Text("snow".into())],
                    is_error: false
                },
                ContentBlock::ToolResult {
                    tool_use_id: "call_2".into(),
                    content: vec![ContentBlock::Text("sun".into())],
                    is_error: false
                },
            ]
        );
        let forced = translate(with(json!({
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "required"
        })))
        .unwrap();
        assert_eq!(
            forced.chat.forced_tool,
            Some(crate::chat::ForcedTool::One("f".into()))
        );
    }

    #[test]
    fn tool_calls_stream_as_deltas_and_fill_the_completion() {
        let events = [
            TurnEvent::MessageStart {
                id: "m".into(),
                model: "x".into(),
                usage: Usage::default(),
            },
            TurnEvent::BlockStart {
                index: 0,
                block: BlockKind::ToolUse {
                    id: "toolu_1".into(),
                    name: "get_weather".into(),
                },
            },
            TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::InputJson("{\"city\":".into()),
            },
            TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::InputJson("\"Oslo\"}".into()),
            },
            TurnEvent::BlockStop { index: 0 },
            TurnEvent::BlockStart {
                index: 1,
                block: BlockKind::ToolUse {
                    id: "toolu_2".into(),
                    name: "get_time".into(),
                },
            },
            TurnEvent::BlockStop { index: 1 },
        ];
        let end = ChatEnd {
            stop_reason: Some(StopReason::ToolUse),
            stop_sequence: None,
            usage: Usage::default(),
            failure: None,
            structured_output: None,
        };
        let mut writer = ChunkWriter::new("c".into(), 1, "m".into(), false);
        let mut builder = CompletionBuilder::default();
        let mut chunks = Vec::new();
        for event in events {
            let item = ChatItem::Event(event);
            builder.push(&item);
            chunks.extend(writer.write(&item));
        }
        chunks.extend(writer.write(&ChatItem::End(end.clone())));
        let chunks: Vec<Value> = chunks
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(
            *calls[0],
            json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
        );
        assert_eq!(
            *calls[1],
            json!({"index": 0, "function": {"arguments": "{\"city\":"}})
        );
        assert_eq!(calls[3]["index"], 1);
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );
        let completion = serde_json::to_value(builder.finish(&end, "c", 1, "m")).unwrap();
        let message = &completion["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(
            message["tool_calls"][0],
            json!({"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}})
        );
        assert_eq!(message["tool_calls"][1]["function"]["arguments"], "{}");
        assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn client_mistakes_are_4xx_that_name_the_parameter() {
        refused(json!({"model": "m"}), "messages");
        refused(
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "model",
        );
        refused(with(json!({"messages": "hi"})), "messages");
        refused(with(json!({"messages": []})), "messages");
        refused(
            with(json!({"messages": [{"role": "robot", "content": "x"}]})),
            "messages[0].role",
        );
        refused(
            with(json!({"messages": [{"role": "user", "content": ""}]})),
            "messages[0].content",
        );
        refused(
            with(json!({"messages": [{"role": "user", "content": 3}]})),
            "messages[0].content",
        );
        refused(
            with(json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]})),
            "messages[0].content[0].type",
        );
        refused(
            with(
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
            ),
            "messages[0].content[0].image_url.url",
        );
        refused(
            with(
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
            ),
            "messages",
        );
        refused(
            with(json!({"messages": [{"role": "system", "content": "only"}]})),
            "messages",
        );
        refused(
            with(json!({"messages": [{"role": "tool", "content": "x"}]})),
            "messages[0].tool_call_id",
        );
        refused(
            with(json!({"messages": [{"role": "function", "content": "x", "name": "f"}]})),
            "messages[0].role",
        );
        refused(with(json!({"n": 2})), "n");
        refused(with(json!({"logprobs": true})), "logprobs");
        refused(
            with(json!({"tools": [{"type": "web_search_preview"}]})),
            "tools[0].type",
        );
        refused(
            with(json!({"tools": [{"type": "function", "function": {"name": "a b"}}]})),
            "tools[0].function.name",
        );
        refused(
            with(
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}]}),
            ),
            "tools[0].function.parameters",
        );
        refused(with(json!({"tool_choice": "required"})), "tool_choice");
        refused(
            with(
                json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            ),
            "tool_choice",
        );
        refused(with(json!({"functions": [{"name": "f"}]})), "functions");
        refused(with(json!({"stop": 5})), "stop");
        refused(with(json!({"max_tokens": "ten"})), "max_tokens");
        refused(with(json!({"max_tokens": 0})), "max_completion_tokens");
        refused(
            with(json!({"response_format": {"type": "xml"}})),
            "response_format.type",
        );
        refused(
            with(json!({"reasoning_effort": "extreme"})),
            "reasoning_effort",
        );
        refused(
            with(json!({"audio": {"voice": "alloy", "format": "mp3"}})),
            "audio",
        );
        refused(with(json!({"modalities": ["text", "audio"]})), "modalities");
        refused(
            with(json!({"prediction": {"type": "content", "content": "x"}})),
            "prediction",
        );
        refused(
            with(json!({"web_search_options": {}})),
            "web_search_options",
        );
        refused(with(json!({"logit_bias": {"50256": -100}})), "logit_bias");
        assert!(
            translate(with(
                json!({"n": 1, "tools": [], "tool_choice": "none", "logprobs": false,
                    "modalities": ["text"], "logit_bias": {}, "store": true, "verbosity": "low",
                    "service_tier": "auto", "prompt_cache_key": "k", "safety_identifier": "s",
                    "metadata": {"a": "b"}, "parallel_tool_calls": true})
            ))
            .is_ok()
        );
        let e = parse(b"nope").unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
    }

    #[test]
    fn typed_messages_name_the_path_and_the_problem() {
        let message = |body: Value| {
            let e = translate(body.clone()).expect_err(&body.to_string());
            (e.param.unwrap_or_default(), e.message)
        };
        let user =
            |content: Value| with(json!({"messages": [{"role": "user", "content": content}]}));
        assert_eq!(
            message(with(json!({"messages": [{"role": "narrator", "content": "x"}]}))),
            (
                "messages[0].role".into(),
                "messages[0].role: unknown role \"narrator\"; expected system, developer, user, assistant or tool".into()
            )
        );
        assert_eq!(
            message(with(json!({"messages": [{"content": "x"}]}))),
            (
                "messages[0].role".into(),
                "messages[0].role: field required".into()
            )
        );
        assert_eq!(
            message(user(
                json!([{"type": "text", "text": "a"}, {"type": "text", "text": 5}])
            )),
            (
                "messages[0].content[1].text".into(),
                "messages[0].content[1].text: invalid type: integer `5`, expected a string".into()
            )
        );
        assert_eq!(
            message(user(
                json!([{"type": "image_url", "image_url": {"detail": "low"}}])
            )),
            (
                "messages[0].content[0].image_url.url".into(),
                "messages[0].content[0].image_url.url: field required".into()
            )
        );
        let unknown = translate(user(json!([{"type": "hologram"}]))).unwrap_err();
        assert_eq!(
            (
                unknown.param.as_deref(),
                unknown.code,
                unknown.message.as_str()
            ),
            (
                Some("messages[0].content[0].type"),
                Some("unsupported_parameter"),
                "messages[0].content[0].type: \"hologram\" parts are not supported by ccpool"
            )
        );
        assert_eq!(
            message(with(
                json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": "data:x"}]}, {"role": "user", "content": "x"}]})
            )),
            (
                "messages[0].content[0].type".into(),
                "messages[0].content[0].type: only text parts are allowed here, not \"image_url\""
                    .into()
            )
        );
        assert_eq!(
            message(with(
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {}}]}, {"role": "user", "content": "x"}]})
            )),
            (
                "messages[0].tool_calls[0].function.name".into(),
                "messages[0].tool_calls[0].function.name: field required".into()
            )
        );
        assert_eq!(
            message(with(json!({"stop": ["a", 1]}))),
            (
                "stop[1]".into(),
                "stop[1]: invalid type: integer `1`, expected a string".into()
            )
        );
        assert_eq!(
            message(with(json!({"stop": 5}))),
            (
                "stop".into(),
                "stop: must be a string or a list of strings, got a number".into()
            )
        );
        // A bare URL string as `image_url` is taken, as before.
        let chat = translate(user(
            json!([{"type": "image_url", "image_url": "data:image/png;base64,AAAA"}]),
        ))
        .unwrap()
        .chat;
        assert_eq!(
            chat.turn.content,
            vec![ContentBlock::Image {
                media_type: "image/png".into(),
                data: "AAAA".into()
            }]
        );
    }

    #[test]
    fn finish_reasons_and_usage_translate() {
        assert_eq!(finish_reason(Some(&StopReason::EndTurn)), "stop");
        assert_eq!(finish_reason(Some(&StopReason::StopSequence)), "stop");
        assert_eq!(finish_reason(Some(&StopReason::MaxTokens)), "length");
        assert_eq!(finish_reason(Some(&StopReason::ToolUse)), "tool_calls");
        assert_eq!(finish_reason(Some(&StopReason::Refusal)), "content_filter");
        let u = usage_json(&Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_creation_input_tokens: 2,
            cache_read_input_tokens: 3,
        });
        assert_eq!(
            u,
            json!({"prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20, "prompt_tokens_details": {"cached_tokens": 3}})
        );
    }

    #[test]
    fn chunks_share_one_id_and_start_with_the_role() {
        let mut w = ChunkWriter::new("chatcmpl-1".into(), 42, "gpt-4o".into(), true);
        let mut chunks = Vec::new();
        for item in [
            ChatItem::Event(TurnEvent::MessageStart {
                id: "x".into(),
                model: "m".into(),
                usage: Usage::default(),
            }),
            ChatItem::Event(TurnEvent::BlockStart {
                index: 0,
                block: BlockKind::Text,
            }),
            ChatItem::Event(TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::Text("Hel".into()),
            }),
            ChatItem::Event(TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::Text("lo".into()),
            }),
            ChatItem::End(ChatEnd {
                stop_reason: Some(StopReason::MaxTokens),
                stop_sequence: None,
                usage: Usage {
                    input_tokens: 3,
                    output_tokens: 2,
                    ..Usage::default()
                },
                failure: None,
                structured_output: None,
            }),
        ] {
            chunks.extend(
                w.write(&item)
                    .iter()
                    .map(|c| serde_json::to_value(c).unwrap()),
            );
        }
        assert_eq!(chunks.len(), 5);
        assert!(
            chunks
                .iter()
                .all(|c| c["id"] == "chatcmpl-1" && c["created"] == 42 && c["model"] == "gpt-4o")
        );
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(chunks[4]["usage"]["completion_tokens"], 2);
        assert!(chunks[..4].iter().all(|c| c["usage"].is_null()));
        // The whole shape the SDKs parse: nulls where they expect them.
        assert_eq!(
            chunks[0],
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 42,
                "model": "gpt-4o", "system_fingerprint": null, "usage": null,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                    "logprobs": null, "finish_reason": null}]})
        );
        assert_eq!(
            chunks[4],
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 42,
                "model": "gpt-4o", "system_fingerprint": null, "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                    "prompt_tokens_details": {"cached_tokens": 0}}})
        );
    }

    #[test]
    fn a_completion_object_never_carries_thinking_in_content() {
        let mut b = CompletionBuilder::default();
        b.push(&ChatItem::Event(TurnEvent::BlockDelta {
            index: 0,
            delta: BlockDelta::Thinking("secret plan".into()),
        }));
        b.push(&ChatItem::Event(TurnEvent::BlockDelta {
            index: 1,
            delta: BlockDelta::Text("Answer".into()),
        }));
        let end = ChatEnd {
            stop_reason: Some(StopReason::EndTurn),
            stop_sequence: None,
            usage: Usage::default(),
            failure: None,
            structured_output: None,
        };
        let c = serde_json::to_value(b.finish(&end, "chatcmpl-2", 7, "gpt-4o")).unwrap();
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["choices"][0]["message"]["content"], "Answer");
        assert_eq!(
            c["choices"][0]["message"]["reasoning_content"],
            "secret plan"
        );
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        let structured = ChatEnd {
            structured_output: Some(r#"{"a":1}"#.into()),
            ..end
        };
        let c = serde_json::to_value(CompletionBuilder::default().finish(&structured, "i", 1, "m"))
            .unwrap();
        assert_eq!(c["choices"][0]["message"]["content"], r#"{"a":1}"#);
    }
}
