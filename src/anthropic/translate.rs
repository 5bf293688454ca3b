//! Explicit translation between the Messages API and the domain: a request into a
//! `ChatRequest`, and chat items back into SSE events or a `message` object.

use serde_json::Value;

use crate::chat::{ChatEnd, ChatItem, ChatRequest};
use crate::dialect::Context;
use crate::domain::{
    BlockDelta, BlockKind, ContentBlock, HistoryMessage, IMAGE_MEDIA_TYPES, LaunchProfile, Role,
    ToolChoice, ToolSpec, TurnEvent, TurnRequest, Usage,
};

use super::AnthropicError;
use super::wire::{
    ContentBlockParam, Delta, ImageSource, Message, MessageDelta, MessageParam, MessageRole,
    MessagesRequest, OutputFormat, ResponseBlock, ResponseUsage, StreamEvent, TextBlock,
    ThinkingConfig, ToolChoiceParam, ToolParam, ToolResultBlock, ToolResultPart,
};
use crate::tagged::TextOr;

/// The output-token limit the CLI asks for when nothing else is set.
const CLI_DEFAULT_MAX_TOKENS: u32 = 32000;

/// Parses a request body into `T`, with errors that name the offending field.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AnthropicError> {
    crate::dialect::parse_json(body, crate::dialect::PathStyle::Dotted, |_, message| {
        AnthropicError::invalid(message)
    })
}

/// A Messages API request as a chat request.
pub fn to_chat(request: MessagesRequest, context: &Context) -> Result<ChatRequest, AnthropicError> {
    let tools = tools(request.tools.unwrap_or_default())?;
    let single_tool_call = request
        .tool_choice
        .as_ref()
        .is_some_and(ToolChoiceParam::single_tool_call);
    let tool_choice = tool_choice(request.tool_choice, &tools)?;
    if request.max_tokens == 0 {
        return Err(AnthropicError::invalid("max_tokens: must be at least 1"));
    }
    if request.container.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(AnthropicError::invalid(
            "container: code-execution containers are not available through ccpool",
        ));
    }
    if request
        .mcp_servers
        .as_ref()
        .is_some_and(|m| m.as_array().is_none_or(|m| !m.is_empty()))
    {
        return Err(AnthropicError::invalid(
            "mcp_servers: the MCP connector is not available through ccpool",
        ));
    }
    if request.model.trim().is_empty() {
        return Err(AnthropicError::invalid("model: must not be empty"));
    }
    let (history, content) = split_messages(request.messages, context.fetch_remote_images)?;
    let stop_sequences = request.stop_sequences.unwrap_or_default();
    if stop_sequences.iter().any(String::is_empty) {
        return Err(AnthropicError::invalid(
            "stop_sequences: each stop sequence must be non-empty",
        ));
    }
    let include_thinking = request
        .thinking
        .is_some_and(|t| t != ThinkingConfig::Disabled);
    let output_config = request.output_config.unwrap_or_default();
    let json_schema = output_schema(output_config.format, request.output_format)?;
    let structured = json_schema.is_some();
    let profile = LaunchProfile {
        // The model goes into the profile where the request flow picks a worker (`chat`).
        model: None,
        system_prompt: system_prompt(request.system.as_ref()),
        builtin_tools: false,
        json_schema,
        max_output_tokens: (request.max_tokens != CLI_DEFAULT_MAX_TOKENS)
            .then_some(request.max_tokens),
        effort: effort(output_config.effort)?,
    };
    let mut chat = ChatRequest {
        owner: context.owner.clone(),
        profile,
        turn: TurnRequest {
            history,
            content,
            model: Some(request.model),
            tools,
            tool_choice,
        },
        stop_sequences,
        include_thinking,
        structured,
        forced_tool: None,
        single_tool_call,
    };
    chat.force_tool()
        .map_err(|why| AnthropicError::invalid(format!("tool_choice: {why}")))?;
    Ok(chat)
}

/// The client's tools (custom tools only: the wire type refuses the others by name).
fn tools(tools: Vec<ToolParam>) -> Result<Vec<ToolSpec>, AnthropicError> {
    let mut out: Vec<ToolSpec> = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        let at = format!("tools.{i}");
        let ToolParam::Custom(tool) = tool;
        let name = tool.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(AnthropicError::invalid(format!(
                "{at}.name: must match ^[a-zA-Z0-9_-]{{1,64}}$"
            )));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(AnthropicError::invalid(format!(
                "{at}.name: tool names must be unique; \"{name}\" appears twice"
            )));
        }
        if tool.input_schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(AnthropicError::invalid(format!(
                "{at}.input_schema: a JSON schema object with \"type\": \"object\" is required"
            )));
        }
        if let Some(why) = crate::dialect::tool_schema_error(&tool.input_schema) {
            return Err(AnthropicError::invalid(format!("{at}.input_schema: {why}")));
        }
        out.push(ToolSpec {
            name,
            description: tool.description,
            input_schema: tool.input_schema.to_string(),
        });
    }
    Ok(out)
}

/// `tool_choice` for the request's tools: `any` needs tools, `tool` names one of them. Its
/// `disable_parallel_tool_use` is `ChatRequest::single_tool_call`.
fn tool_choice(
    choice: Option<ToolChoiceParam>,
    tools: &[ToolSpec],
) -> Result<ToolChoice, AnthropicError> {
    match choice {
        None | Some(ToolChoiceParam::Auto { .. }) => Ok(ToolChoice::Auto),
        Some(ToolChoiceParam::None) => Ok(ToolChoice::None),
        Some(ToolChoiceParam::Any { .. }) if tools.is_empty() => Err(AnthropicError::invalid(
            "tool_choice: \"any\" requires tools",
        )),
        Some(ToolChoiceParam::Any { .. }) => Ok(ToolChoice::Any),
        Some(ToolChoiceParam::Tool { name, .. }) => {
            if !tools.iter().any(|t| t.name == name) {
                return Err(AnthropicError::invalid(format!(
                    "tool_choice.name: \"{name}\" is not one of the tools"
                )));
            }
            Ok(ToolChoice::Tool(name))
        }
    }
}

/// The JSON schema of `output_config.format` (or the beta's `output_format`), for the CLI's
/// `--json-schema`: the answer is then the validated object, as text.
fn output_schema(
    format: Option<OutputFormat>,
    beta: Option<OutputFormat>,
) -> Result<Option<String>, AnthropicError> {
    let (field, OutputFormat::JsonSchema { schema }) = match (format, beta) {
        (Some(_), Some(_)) => {
            return Err(AnthropicError::invalid(
                "output_format: give either output_config.format or output_format, not both",
            ));
        }
        (Some(format), None) => ("output_config.format", format),
        (None, Some(format)) => ("output_format", format),
        (None, None) => return Ok(None),
    };
    if !schema.is_object() {
        return Err(AnthropicError::invalid(format!(
            "{field}.schema: a JSON schema object is required"
        )));
    }
    Ok(Some(schema.to_string()))
}

/// `output_config.effort` as the CLI's effort level (the same names).
fn effort(effort: Option<String>) -> Result<Option<String>, AnthropicError> {
    match effort.as_deref() {
        None => Ok(None),
        Some("low" | "medium" | "high" | "xhigh" | "max") => Ok(effort),
        Some(other) => Err(AnthropicError::invalid(format!(
            "output_config.effort: expected low, medium, high, xhigh or max, got \"{other}\""
        ))),
    }
}

/// What Claude Code puts first in its system prompt: request metadata that changes per
/// conversation. It is not prompt text: it would split the pools and reach the model.
const BILLING_HEADER: &str = "x-anthropic-billing-header:";

/// The system prompt: a string, or text blocks joined by blank lines, without Claude Code's
/// billing-header line.
pub fn system_prompt(system: Option<&TextOr<TextBlock>>) -> Option<String> {
    let prompt = match system? {
        TextOr::Text(text) => text.clone(),
        TextOr::List(blocks) => blocks
            .iter()
            .map(|b| b.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n"),
    };
    let kept = prompt
        .split_inclusive('\n')
        .filter(|line| !line.starts_with(BILLING_HEADER))
        .collect::<String>();
    let kept = kept.trim_start_matches('\n').to_string();
    (!kept.is_empty()).then_some(kept)
}

/// Splits the messages into the history and the new user turn (the last message).
fn split_messages(
    messages: Vec<MessageParam>,
    remote_images: bool,
) -> Result<(Vec<HistoryMessage>, Vec<ContentBlock>), AnthropicError> {
    if messages.is_empty() {
        return Err(AnthropicError::invalid(
            "messages: at least one message is required",
        ));
    }
    let mut history: Vec<HistoryMessage> = Vec::with_capacity(messages.len());
    // Text of `system` messages (Claude Code's per-turn control): it joins the user message
    // it follows (Claude Code sends it after the turn it belongs to, and the same request
    // grown by an answer must keep it in the same place), else the next user message.
    let mut system_notes: Vec<ContentBlock> = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        let path = format!("messages.{i}.content");
        let role = match message.role {
            MessageRole::User => Role::User,
            MessageRole::Assistant => Role::Assistant,
            MessageRole::System => {
                let mut notes = Vec::new();
                for block in content_blocks(message.content, Role::User, &path, false)? {
                    match block {
                        ContentBlock::Text(text) => notes.push(ContentBlock::Text(text)),
                        _ => {
                            return Err(AnthropicError::invalid(format!(
                                "{path}: a system message holds text only"
                            )));
                        }
                    }
                }
                match history.last_mut() {
                    Some(last) if last.role == Role::User && system_notes.is_empty() => {
                        last.content.extend(notes)
                    }
                    _ => system_notes.extend(notes),
                }
                continue;
            }
        };
        let mut content = content_blocks(message.content, role, &path, remote_images)?;
        if role == Role::User && !system_notes.is_empty() {
            // Tool results must lead a user message; the notes follow them.
            let at = content
                .iter()
                .take_while(|b| matches!(b, ContentBlock::ToolResult { .. }))
                .count();
            content.splice(at..at, std::mem::take(&mut system_notes));
        }
        history.push(HistoryMessage { role, content });
    }
    if !system_notes.is_empty() {
        match history.last_mut() {
            Some(last) if last.role == Role::User => last.content.extend(system_notes),
            _ => {
                return Err(AnthropicError::invalid(
                    "messages: a system message must be followed by, or follow, a user message",
                ));
            }
        }
    }
    if history.is_empty() {
        return Err(AnthropicError::invalid(
            "messages: at least one user message is required",
        ));
    }
    let last = history.pop().expect("not empty");
    if last.role != Role::User {
        return Err(AnthropicError::invalid(
            "messages: the last message must have the user role (assistant prefill is not supported by ccpool)",
        ));
    }
    Ok((history, last.content))
}

/// A message's content as domain blocks. Thinking blocks of assistant turns are dropped (the
/// CLI does not take them back); tool calls belong to assistant messages and tool results to
/// user messages.
fn content_blocks(
    content: TextOr<ContentBlockParam>,
    role: Role,
    path: &str,
    remote_images: bool,
) -> Result<Vec<ContentBlock>, AnthropicError> {
    let blocks = match content {
        TextOr::Text(text) if text.is_empty() => {
            return Err(AnthropicError::invalid(format!(
                "{path}: text content must be non-empty"
            )));
        }
        TextOr::Text(text) => return Ok(vec![ContentBlock::Text(text)]),
        TextOr::List(blocks) if blocks.is_empty() && role == Role::User => {
            return Err(AnthropicError::invalid(format!(
                "{path}: must contain at least one block"
            )));
        }
        TextOr::List(blocks) => blocks,
    };
    let mut out = Vec::with_capacity(blocks.len());
    for (j, block) in blocks.into_iter().enumerate() {
        let at = format!("{path}.{j}");
        match (block, role) {
            (ContentBlockParam::Text(TextBlock { text, .. }), _) if text.is_empty() => {
                return Err(AnthropicError::invalid(format!(
                    "{at}.text: text content blocks must be non-empty"
                )));
            }
            (ContentBlockParam::Text(TextBlock { text, .. }), _) => {
                out.push(ContentBlock::Text(text))
            }
            (ContentBlockParam::Image(image_block), _) => {
                out.push(image(image_block.source, &at, remote_images)?)
            }
            (
                ContentBlockParam::Thinking | ContentBlockParam::RedactedThinking,
                Role::Assistant,
            ) => {}
            (ContentBlockParam::ToolUse(call), Role::Assistant) => {
                if call.id.is_empty() || call.name.is_empty() || !call.input.is_object() {
                    return Err(AnthropicError::invalid(format!(
                        "{at}: a tool_use block needs id, name and an input object"
                    )));
                }
                out.push(ContentBlock::ToolUse {
                    id: call.id,
                    name: call.name,
                    input: call.input.to_string(),
                })
            }
            (ContentBlockParam::ToolResult(result), Role::User) => {
                out.push(tool_result(result, &at, remote_images)?)
            }
            (ContentBlockParam::ToolUse(_), _) => {
                return Err(AnthropicError::invalid(format!(
                    "{at}.type: \"tool_use\" blocks belong in assistant messages"
                )));
            }
            (ContentBlockParam::ToolResult(_), _) => {
                return Err(AnthropicError::invalid(format!(
                    "{at}.type: \"tool_result\" blocks belong in user messages"
                )));
            }
            (ContentBlockParam::ServerTool(kind), _) => {
                return Err(AnthropicError::invalid(format!(
                    "{at}.type: \"{kind}\" blocks come from server tools, which ccpool cannot offer"
                )));
            }
            (ContentBlockParam::Thinking, _) => {
                return Err(AnthropicError::invalid(format!(
                    "{at}.type: \"thinking\" blocks belong in assistant messages"
                )));
            }
            (ContentBlockParam::RedactedThinking, _) => {
                return Err(AnthropicError::invalid(format!(
                    "{at}.type: \"redacted_thinking\" blocks belong in assistant messages"
                )));
            }
        }
    }
    Ok(out)
}

/// A `tool_result` block: its content is a string or text and image blocks.
fn tool_result(
    block: ToolResultBlock,
    at: &str,
    remote_images: bool,
) -> Result<ContentBlock, AnthropicError> {
    if block.tool_use_id.is_empty() {
        return Err(AnthropicError::invalid(format!(
            "{at}.tool_use_id: must not be empty"
        )));
    }
    let content = match block.content {
        None => Vec::new(),
        Some(TextOr::Text(text)) if text.is_empty() => Vec::new(),
        Some(TextOr::Text(text)) => vec![ContentBlock::Text(text)],
        Some(TextOr::List(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (k, part) in parts.into_iter().enumerate() {
                out.push(match part {
                    ToolResultPart::Text(text) => ContentBlock::Text(text.text),
                    ToolResultPart::Image(image_block) => image(
                        image_block.source,
                        &format!("{at}.content.{k}"),
                        remote_images,
                    )?,
                });
            }
            out
        }
    };
    Ok(ContentBlock::ToolResult {
        tool_use_id: block.tool_use_id,
        content,
        is_error: block.is_error.unwrap_or(false),
    })
}

/// An image block's source as a domain block: base64 of a known media type, or a URL to
/// fetch when remote images are fetched.
fn image(
    source: ImageSource,
    at: &str,
    remote_images: bool,
) -> Result<ContentBlock, AnthropicError> {
    match source {
        ImageSource::Base64 { media_type, data } => {
            if !IMAGE_MEDIA_TYPES.contains(&media_type.as_str()) {
                return Err(AnthropicError::invalid(format!(
                    "{at}.source.media_type: \"{media_type}\" is not one of {}",
                    IMAGE_MEDIA_TYPES.join(", ")
                )));
            }
            if data.is_empty() {
                return Err(AnthropicError::invalid(format!(
                    "{at}.source.data: must not be empty"
                )));
            }
            Ok(ContentBlock::Image { media_type, data })
        }
        ImageSource::Url { url } if remote_images => Ok(ContentBlock::RemoteImage {
            url,
            field: format!("{at}.source.url"),
        }),
        ImageSource::Url { .. } => Err(AnthropicError::invalid(format!(
            "{at}.source.type: \"url\" images are fetched by ccpool only with --fetch-remote-images; send the image as base64"
        ))),
        ImageSource::Other(kind) => Err(AnthropicError::invalid(format!(
            "{at}.source.type: \"{kind}\" images are not supported by ccpool; send the image as base64{}",
            if remote_images { " or by URL" } else { "" }
        ))),
    }
}

/// A rough token count: about four characters a token, and a fixed cost per image. An
/// estimate, documented as such.
pub fn estimate_tokens(system: Option<&TextOr<TextBlock>>, messages: &[MessageParam]) -> u64 {
    const IMAGE: u64 = 1600 * 4;
    fn chars(text: &str) -> u64 {
        text.chars().count() as u64
    }
    fn part(part: &ToolResultPart) -> u64 {
        match part {
            ToolResultPart::Text(t) => chars(&t.text),
            ToolResultPart::Image(_) => IMAGE,
        }
    }
    fn block(block: &ContentBlockParam) -> u64 {
        match block {
            ContentBlockParam::Text(t) => chars(&t.text),
            ContentBlockParam::Image(_) => IMAGE,
            ContentBlockParam::ToolResult(r) => match &r.content {
                None => 0,
                Some(TextOr::Text(text)) => chars(text),
                Some(TextOr::List(parts)) => parts.iter().map(part).sum(),
            },
            _ => 0,
        }
    }
    fn content<T>(content: &TextOr<T>, each: impl Fn(&T) -> u64) -> u64 {
        match content {
            TextOr::Text(text) => chars(text),
            TextOr::List(items) => items.iter().map(each).sum(),
        }
    }
    let total = system.map_or(0, |s| content(s, |b| chars(&b.text)))
        + messages
            .iter()
            .map(|m| content(&m.content, block) + 12)
            .sum::<u64>();
    (total / 4).max(1)
}

fn usage(usage: &Usage) -> ResponseUsage {
    ResponseUsage {
        input_tokens: usage.input_tokens,
        cache_creation_input_tokens: usage.cache_creation_input_tokens,
        cache_read_input_tokens: usage.cache_read_input_tokens,
        output_tokens: usage.output_tokens,
    }
}

/// A block as it starts: empty.
fn block_start(block: &BlockKind) -> ResponseBlock {
    match block {
        BlockKind::Text => ResponseBlock::Text {
            text: String::new(),
        },
        BlockKind::Thinking => ResponseBlock::Thinking {
            thinking: String::new(),
            signature: String::new(),
        },
        BlockKind::RedactedThinking { data } => {
            ResponseBlock::RedactedThinking { data: data.clone() }
        }
        BlockKind::ToolUse { id, name } => ResponseBlock::ToolUse {
            id: id.clone(),
            name: name.clone(),
            input: Value::Object(Default::default()),
        },
        BlockKind::Other(kind) => ResponseBlock::Other { kind: kind.clone() },
    }
}

fn delta(delta: &BlockDelta) -> Option<Delta> {
    Some(match delta {
        BlockDelta::Text(text) => Delta::TextDelta { text: text.clone() },
        BlockDelta::Thinking(thinking) => Delta::ThinkingDelta {
            thinking: thinking.clone(),
        },
        BlockDelta::Signature(signature) => Delta::SignatureDelta {
            signature: signature.clone(),
        },
        BlockDelta::InputJson(partial) => Delta::InputJsonDelta {
            partial_json: partial.clone(),
        },
        BlockDelta::Other(_) => return None,
    })
}

/// The events of a structured answer, which arrives whole at the end: one message holding
/// one text block, the validated object as JSON text.
pub fn structured_events(end: &ChatEnd, object: &str, id: &str, model: &str) -> Vec<StreamEvent> {
    [
        TurnEvent::MessageStart {
            id: id.to_string(),
            model: model.to_string(),
            usage: Usage {
                output_tokens: 0,
                ..end.usage
            },
        },
        TurnEvent::BlockStart {
            index: 0,
            block: BlockKind::Text,
        },
        TurnEvent::BlockDelta {
            index: 0,
            delta: BlockDelta::Text(object.to_string()),
        },
        TurnEvent::BlockStop { index: 0 },
        TurnEvent::MessageDelta {
            stop_reason: end.stop_reason.clone(),
            stop_sequence: None,
            usage: end.usage,
        },
        TurnEvent::MessageStop,
    ]
    .iter()
    .filter_map(|event| stream_event(event, id, model))
    .collect()
}

/// The streaming event for one chat event; `id` and `model` are what the client sees.
pub fn stream_event(event: &TurnEvent, id: &str, model: &str) -> Option<StreamEvent> {
    Some(match event {
        TurnEvent::MessageStart { usage: u, .. } => StreamEvent::MessageStart {
            message: Message {
                id: id.to_string(),
                kind: "message",
                role: "assistant",
                model: model.to_string(),
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage: usage(u),
            },
        },
        TurnEvent::BlockStart { index, block } => StreamEvent::ContentBlockStart {
            index: *index,
            content_block: block_start(block),
        },
        TurnEvent::BlockDelta { index, delta: d } => StreamEvent::ContentBlockDelta {
            index: *index,
            delta: delta(d)?,
        },
        TurnEvent::BlockStop { index } => StreamEvent::ContentBlockStop { index: *index },
        TurnEvent::MessageDelta {
            stop_reason,
            stop_sequence,
            usage: u,
        } => StreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: stop_reason.as_ref().map(|r| r.as_str().to_string()),
                stop_sequence: stop_sequence.clone(),
            },
            usage: usage(u),
        },
        TurnEvent::MessageStop => StreamEvent::MessageStop,
    })
}

/// Builds the non-streaming `message` object from a whole chat.
#[derive(Default)]
pub struct MessageBuilder {
    blocks: Vec<Option<ResponseBlock>>,
    /// The input JSON of tool_use blocks, by block index, as it streamed.
    inputs: std::collections::HashMap<usize, String>,
}

impl MessageBuilder {
    pub fn push(&mut self, item: &ChatItem) {
        let ChatItem::Event(event) = item else { return };
        match event {
            TurnEvent::BlockStart { index, block } => {
                let i = *index as usize;
                if self.blocks.len() <= i {
                    self.blocks.resize_with(i + 1, || None);
                }
                self.blocks[i] = Some(block_start(block));
            }
            TurnEvent::BlockDelta { index, delta } => {
                let Some(Some(block)) = self.blocks.get_mut(*index as usize) else {
                    return;
                };
                if let BlockDelta::InputJson(piece) = delta {
                    self.inputs
                        .entry(*index as usize)
                        .or_default()
                        .push_str(piece);
                    return;
                }
                match (block, delta) {
                    (ResponseBlock::Text { text }, BlockDelta::Text(piece))
                    | (
                        ResponseBlock::Thinking { thinking: text, .. },
                        BlockDelta::Thinking(piece),
                    )
                    | (
                        ResponseBlock::Thinking {
                            signature: text, ..
                        },
                        BlockDelta::Signature(piece),
                    ) => text.push_str(piece),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    pub fn finish(mut self, end: &ChatEnd, id: &str, model: &str) -> Message {
        for (index, json) in std::mem::take(&mut self.inputs) {
            if let Some(Some(ResponseBlock::ToolUse { input, .. })) = self.blocks.get_mut(index) {
                *input = serde_json::from_str(&json)
                    .unwrap_or_else(|_| Value::Object(Default::default()));
            }
        }
        Message {
            id: id.to_string(),
            kind: "message",
            role: "assistant",
            model: model.to_string(),
            content: match &end.structured_output {
                Some(object) => vec![ResponseBlock::Text {
                    text: object.clone(),
                }],
                None => self.blocks.into_iter().flatten().collect(),
            },
            stop_reason: end.stop_reason.as_ref().map(|r| r.as_str().to_string()),
            stop_sequence: end.stop_sequence.clone(),
            usage: usage(&end.usage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerKey;
    use serde_json::json;

    /// The SSE event (name, data) for one chat event.
    fn sse_event(event: &TurnEvent, id: &str, model: &str) -> Option<(&'static str, Value)> {
        let event = stream_event(event, id, model)?;
        Some((event.name(), serde_json::to_value(&event).unwrap()))
    }
    use crate::domain::StopReason;

    fn request(body: Value) -> Result<ChatRequest, AnthropicError> {
        let parsed: MessagesRequest = parse(body.to_string().as_bytes())?;
        let options = Default::default();
        let context = Context {
            owner: OwnerKey::anonymous(),
            options: &options,
            fetch_remote_images: false,
            responses: &Default::default(),
        };
        to_chat(parsed, &context)
    }

    fn check_invalid(body: Value, mentions: &str) {
        let err = request(body.clone()).expect_err(&body.to_string());
        assert_eq!(err.status.as_u16(), 400, "{body}");
        assert_eq!(err.kind, "invalid_request_error");
        assert!(
            err.message.contains(mentions),
            "{body}: {} does not mention {mentions}",
            err.message
        );
    }

    #[test]
    fn a_full_request_translates_field_by_field() {
        let chat = request(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 256, "stream": true,
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            "stop_sequences": ["END"], "temperature": 0.2, "top_k": 5, "metadata": {"user_id": "u"},
            "thinking": {"type": "enabled", "budget_tokens": 1024}, "some_future_field": 1,
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}, {"type": "text", "text": "two"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "three", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]}
            ]
        }))
        .unwrap();
        assert_eq!(
            chat.profile.system_prompt.as_deref(),
            Some("Be brief.\n\nBe kind.")
        );
        assert_eq!(chat.profile.max_output_tokens, Some(256));
        assert_eq!(chat.turn.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(chat.stop_sequences, vec!["END"]);
        assert!(chat.include_thinking);
        assert_eq!(
            chat.turn.history,
            vec![
                HistoryMessage {
                    role: Role::User,
                    content: vec![ContentBlock::Text("one".into())]
                },
                HistoryMessage {
                    role: Role::Assistant,
                    content: vec![ContentBlock::Text("two".into())]
                },
            ]
        );
        assert_eq!(
            chat.turn.content,
            vec![
                ContentBlock::Text("three".into()),
                ContentBlock::Image {
                    media_type: "image/png".into(),
                    data: "AAAA".into()
                }
            ]
        );
    }

    #[test]
    fn the_cli_default_output_limit_keeps_the_default_profile() {
        let chat = request(json!({"model": "m", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert_eq!(chat.profile, LaunchProfile::default());
        assert!(!chat.include_thinking);
        assert!(chat.turn.history.is_empty());
    }

    #[test]
    fn output_formats_become_json_schemas_and_effort_a_launch_flag() {
        let base = || json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let mut body = base();
        body["output_config"] =
            json!({"format": {"type": "json_schema", "schema": schema}, "effort": "max"});
        let chat = request(body).unwrap();
        assert!(chat.structured);
        let got: Value =
            serde_json::from_str(chat.profile.json_schema.as_deref().unwrap()).unwrap();
        assert_eq!(got, schema);
        assert_eq!(chat.profile.effort.as_deref(), Some("max"));
        // The structured-outputs beta's form.
        let mut body = base();
        body["output_format"] = json!({"type": "json_schema", "schema": schema});
        assert!(request(body).unwrap().structured);
        let mut body = base();
        body["output_config"] = json!({"format": null});
        assert!(!request(body).unwrap().structured);

        let mut both = base();
        both["output_config"] = json!({"format": {"type": "json_schema", "schema": schema}});
        both["output_format"] = json!({"type": "json_schema", "schema": schema});
        check_invalid(both, "output_format");
        let mut body = base();
        body["output_config"] = json!({"format": {"type": "xml"}});
        check_invalid(body, "output_config.format.type");
        let mut body = base();
        body["output_format"] = json!({"type": "json_schema"});
        check_invalid(body, "output_format.schema");
        let mut body = base();
        body["output_config"] = json!({"effort": "extreme"});
        check_invalid(body, "output_config.effort");
        // Refused by name: what the CLI cannot provide.
        let mut body = base();
        body["container"] = json!("container_1");
        check_invalid(body, "container");
        let mut body = base();
        body["mcp_servers"] = json!([{"type": "url", "url": "https://x", "name": "x"}]);
        check_invalid(body, "mcp_servers");
        // Accepted without effect.
        let mut body = base();
        for (k, v) in [
            ("service_tier", json!("auto")),
            ("inference_geo", json!("us")),
            ("speed", json!("fast")),
            ("cache_control", json!({"type": "ephemeral"})),
            ("context_management", json!({"edits": []})),
            ("mcp_servers", json!([])),
        ] {
            body[k] = v;
        }
        assert!(request(body).is_ok());
    }

    #[test]
    fn bad_requests_are_refused_by_name() {
        let ok = |extra: Value| {
            let mut base = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                base[k] = v.clone();
            }
            base
        };
        check_invalid(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            "max_tokens",
        );
        check_invalid(ok(json!({"max_tokens": "ten"})), "max_tokens");
        check_invalid(ok(json!({"max_tokens": 0})), "max_tokens");
        check_invalid(ok(json!({"messages": []})), "messages");
        check_invalid(ok(json!({"messages": "hi"})), "messages");
        check_invalid(
            ok(json!({"messages": [{"role": "tool", "content": "x"}]})),
            "messages.0.role",
        );
        check_invalid(
            ok(json!({"messages": [{"role": "user", "content": ""}]})),
            "messages.0.content",
        );
        check_invalid(
            ok(json!({"messages": [{"role": "user", "content": []}]})),
            "messages.0.content",
        );
        check_invalid(
            ok(json!({"messages": [{"role": "user", "content": 5}]})),
            "messages.0.content",
        );
        check_invalid(
            ok(json!({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]})),
            "messages.0.content.0.text",
        );
        check_invalid(
            ok(json!({"messages": [{"role": "user", "content": [{"type": "document"}]}]})),
            "messages.0.content.0.type",
        );
        check_invalid(
            ok(
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
            ),
            "last message",
        );
        check_invalid(
            ok(json!({"tools": [{"name": "t", "input_schema": {}}]})),
            "tools",
        );
        check_invalid(ok(json!({"tool_choice": {"type": "any"}})), "tool_choice");
        check_invalid(ok(json!({"system": 5})), "system");
        check_invalid(ok(json!({"stop_sequences": [""]})), "stop_sequences");
        check_invalid(ok(json!({"model": 3})), "model");
        check_invalid(
            ok(
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}]}),
            ),
            "source.type",
        );
        check_invalid(
            ok(
                json!({"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]}, {"role": "user", "content": "hi"}]}),
            ),
            "tool_result",
        );
        let not_json = parse::<MessagesRequest>(b"{not json").unwrap_err();
        assert!(not_json.message.contains("not valid JSON"));
        let not_object = parse::<MessagesRequest>(b"[1,2]").unwrap_err();
        assert!(not_object.message.contains("object"));
        // Empty tools and tool_choice auto are harmless and accepted.
        assert!(request(ok(json!({"tools": [], "tool_choice": {"type": "auto"}}))).is_ok());
    }

    #[test]
    fn typed_blocks_name_the_path_and_the_problem() {
        let message = |content: Value| {
            let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": content}]});
            request(body.clone()).expect_err(&body.to_string()).message
        };
        assert_eq!(
            message(json!([{"type": "foo"}])),
            "messages.0.content.0.type: content block type `foo` is not supported by ccpool (it takes text, image, tool_use, tool_result, thinking, redacted_thinking)"
        );
        assert_eq!(
            message(json!([{"text": "a"}])),
            "messages.0.content.0.type: a content block needs a type"
        );
        assert_eq!(
            message(json!([{"type": "text", "text": "a"}, {"type": "text", "text": 5}])),
            "messages.0.content.1.text: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            message(json!([{"type": "image", "source": {"type": "base64", "data": "AAAA"}}])),
            "messages.0.content.0.source.media_type: field required"
        );
        assert_eq!(
            message(
                json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document"}]}])
            ),
            "messages.0.content.0.content.0.type: \"document\" blocks in a tool_result are not supported by ccpool (text and image are)"
        );
        assert_eq!(
            message(
                json!([{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}])
            ),
            "messages.0.content.0.type: \"server_tool_use\" blocks come from server tools, which ccpool cannot offer"
        );
        assert_eq!(
            message(json!({"type": "text", "text": "a"})),
            "messages.0.content: must be a string or a list of content blocks, got an object"
        );
        let body = |extra: Value| {
            let mut body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            request(body).expect_err("refused").message
        };
        assert_eq!(
            body(json!({"messages": [{"role": "tool", "content": "x"}]})),
            "messages.0.role: unknown variant `tool`, expected one of `user`, `assistant`, `system`"
        );
        assert_eq!(
            body(json!({"system": [{"type": "image", "source": {}}]})),
            "system.0.type: unknown variant `image`, expected `text`"
        );
        assert_eq!(
            body(json!({"thinking": {"type": "sometimes"}})),
            "thinking.type: unknown thinking type `sometimes`; expected enabled, adaptive or disabled"
        );
        assert_eq!(
            body(json!({"tool_choice": {"type": "tool"}})),
            "tool_choice.name: field required"
        );
        assert_eq!(
            body(json!({"tools": [{"name": "t"}]})),
            "tools.0.input_schema: field required"
        );
        let missing =
            request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(missing.unwrap_err().message, "max_tokens: field required");
    }

    #[test]
    fn what_claude_code_sends_is_accepted() {
        // The fields of the requests Claude Code 2.1.327 sends upstream, so also to ccpool when
        // it is the client: enabled thinking with `display` (or adaptive), custom tools with
        // `type`, `context_management`, `metadata`, `cache_control` on blocks.
        for thinking in [
            json!({"type": "enabled", "budget_tokens": 31999, "display": "updates"}),
            json!({"type": "adaptive"}),
        ] {
            let chat = request(json!({"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": true,
                "thinking": thinking, "context_management": {"edits": []}, "metadata": {"user_id": "u"},
                "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
                "tools": [{"type": "custom", "name": "mcp__client__f", "description": "d", "input_schema": {"type": "object"}}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "go", "cache_control": {"type": "ephemeral"}}]},
                    {"role": "assistant", "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "tool_use", "id": "toolu_1", "name": "mcp__client__f", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "ok"}]}]}
                ]}))
            .unwrap();
            assert!(chat.include_thinking);
            assert_eq!(chat.turn.history[1].content.len(), 1, "thinking is dropped");
        }
        let hidden = request(
            json!({"model": "m", "max_tokens": 10, "thinking": {"type": "disabled"},
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        assert!(!hidden.include_thinking);
    }

    fn weather_tool() -> Value {
        json!({"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}})
    }

    #[test]
    fn tools_tool_choice_and_tool_blocks_translate() {
        let ok = |extra: Value| {
            let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [
                        {"type": "text", "text": "no"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                    ]},
                    {"type": "text", "text": "and?"}
                ]}
            ]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            body
        };
        let chat = request(ok(json!({"tools": [weather_tool()]}))).unwrap();
        assert_eq!(chat.turn.tools.len(), 1);
        assert_eq!(chat.turn.tools[0].name, "get_weather");
        assert_eq!(chat.turn.tools[0].description.as_deref(), Some("Weather"));
        assert_eq!(chat.turn.tool_choice, ToolChoice::Auto);
        assert_eq!(
            chat.turn.history[1].content[1],
            ContentBlock::ToolUse {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                input: r#"{"city":"Oslo"}"#.into()
            }
        );
        assert_eq!(
            chat.turn.content[0],
            ContentBlock::ToolResult {
                tool_use_id: "toolu_1".into(),
                content: vec![
                    ContentBlock::Text("no".into()),
                    ContentBlock::Image {
                        media_type: "image/png".into(),
                        data: "AAAA".into()
                    }
                ],
                is_error: true
            }
        );
        assert_eq!(chat.turn.content[1], ContentBlock::Text("and?".into()));

        let forced = request(ok(json!({"tools": [weather_tool()], "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}}))).unwrap();
        assert_eq!(
            forced.forced_tool,
            Some(crate::chat::ForcedTool::One("get_weather".into()))
        );
        assert!(forced.structured && forced.profile.json_schema.is_some());
        assert!(forced.single_tool_call, "disable_parallel_tool_use");
        let none = request(ok(
            json!({"tools": [weather_tool()], "tool_choice": {"type": "none"}}),
        ))
        .unwrap();
        assert_eq!(none.turn.tool_choice, ToolChoice::None);
        assert!(!none.single_tool_call, "parallel calls by default");

        check_invalid(
            ok(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]})),
            "web_search_20250305",
        );
        check_invalid(
            ok(json!({"tools": [{"type": "bash_20250124", "name": "bash"}]})),
            "bash_20250124",
        );
        check_invalid(
            ok(json!({"tools": [weather_tool(), weather_tool()]})),
            "unique",
        );
        check_invalid(
            ok(
                json!({"tools": [{"name": "t", "input_schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}]}),
            ),
            "tools.0.input_schema: not a valid JSON Schema",
        );
        check_invalid(
            ok(
                json!({"tools": [{"name": "t", "input_schema": {"type": "object", "required": "a"}}]}),
            ),
            "tools.0.input_schema",
        );
        // A tool named like one of the CLI's built-ins is the client's own: the built-ins are
        // off and the model knows the client's tools under the `mcp__client__` prefix.
        assert_eq!(
            request(ok(
                json!({"tools": [{"name": "Bash", "input_schema": {"type": "object"}}]})
            ))
            .unwrap()
            .turn
            .tools[0]
                .name,
            "Bash"
        );
        check_invalid(
            ok(json!({"tools": [{"name": "bad name", "input_schema": {"type": "object"}}]})),
            "tools.0.name",
        );
        check_invalid(
            ok(
                json!({"tools": [weather_tool()], "tool_choice": {"type": "tool", "name": "other"}}),
            ),
            "other",
        );
        check_invalid(
            ok(json!({"tool_choice": {"type": "sometimes"}})),
            "sometimes",
        );
        let many: Vec<Value> = (0..200)
            .map(|i| json!({"name": format!("t{i}"), "input_schema": {"type": "object"}}))
            .collect();
        assert_eq!(
            request(ok(json!({"tools": many})))
                .unwrap()
                .turn
                .tools
                .len(),
            200
        );
    }

    #[test]
    fn claude_code_system_messages_and_billing_header() {
        let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.327.abc; cc_entrypoint=cli;"},
            {"type": "text", "text": "You are Claude Code."}
        ],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": "Be brief this turn."},
            {"role": "user", "content": "go"}
        ]});
        let chat = request(body.clone()).unwrap();
        assert_eq!(
            chat.profile.system_prompt.as_deref(),
            Some("You are Claude Code.")
        );
        // After a user message, a system message joins it: the first request of a loop and
        // the next one (grown by the answer and a tool result) agree on that message.
        let first = request(json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "do it"},
            {"role": "system", "content": [{"type": "text", "text": "ENV"}]}
        ]}))
        .unwrap();
        let user = vec![
            ContentBlock::Text("do it".into()),
            ContentBlock::Text("ENV".into()),
        ];
        assert_eq!(first.turn.content, user);
        let next = request(json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "do it"},
            {"role": "system", "content": "ENV"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}
        ], "tools": [{"name": "Bash", "input_schema": {"type": "object"}}]}))
        .unwrap();
        assert_eq!(next.turn.history[0].content, user);
        assert_eq!(next.turn.content.len(), 1);
        assert_eq!(
            chat.turn.content,
            vec![
                ContentBlock::Text("Be brief this turn.".into()),
                ContentBlock::Text("go".into())
            ]
        );
        let mut other = body;
        other["system"][0]["text"] = json!("x-anthropic-billing-header: cc_version=2.1.327.def;");
        assert_eq!(
            request(other).unwrap().profile,
            chat.profile,
            "the header does not split pools"
        );
        assert_eq!(
            system_prompt(Some(&TextOr::Text(
                "x-anthropic-billing-header: a\nRest".into()
            ))),
            Some("Rest".into())
        );
    }

    #[test]
    fn a_streamed_tool_call_builds_the_message_input() {
        let mut builder = MessageBuilder::default();
        for event in [
            TurnEvent::BlockStart {
                index: 0,
                block: BlockKind::ToolUse {
                    id: "toolu_1".into(),
                    name: "get_weather".into(),
                },
            },
            TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::InputJson("{\"city\": ".into()),
            },
            TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::InputJson("\"Oslo\"}".into()),
            },
            TurnEvent::BlockStop { index: 0 },
        ] {
            builder.push(&ChatItem::Event(event));
        }
        let end = ChatEnd {
            stop_reason: Some(StopReason::ToolUse),
            stop_sequence: None,
            usage: Usage::default(),
            failure: None,
            structured_output: None,
        };
        let message = serde_json::to_value(builder.finish(&end, "msg_1", "m")).unwrap();
        assert_eq!(
            message["content"][0],
            json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}})
        );
        assert_eq!(message["stop_reason"], "tool_use");
    }

    #[test]
    fn events_render_in_the_real_shape() {
        let start = TurnEvent::MessageStart {
            id: "up".into(),
            model: "x".into(),
            usage: Usage {
                input_tokens: 7,
                output_tokens: 1,
                ..Usage::default()
            },
        };
        let (name, data) = sse_event(&start, "msg_1", "claude-asked").unwrap();
        assert_eq!(name, "message_start");
        assert_eq!(data["message"]["id"], "msg_1");
        assert_eq!(data["message"]["model"], "claude-asked");
        assert_eq!(data["message"]["usage"]["input_tokens"], 7);
        assert_eq!(data["message"]["content"], json!([]));
        let delta = TurnEvent::BlockDelta {
            index: 1,
            delta: BlockDelta::Text("hi".into()),
        };
        assert_eq!(
            sse_event(&delta, "m", "m").unwrap().1,
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "hi"}})
        );
        let end = TurnEvent::MessageDelta {
            stop_reason: Some(StopReason::MaxTokens),
            stop_sequence: None,
            usage: Usage {
                output_tokens: 3,
                ..Usage::default()
            },
        };
        let (name, data) = sse_event(&end, "m", "m").unwrap();
        assert_eq!(name, "message_delta");
        assert_eq!(data["delta"]["stop_reason"], "max_tokens");
        assert_eq!(data["usage"]["output_tokens"], 3);
    }

    #[test]
    fn every_event_serializes_with_its_name_as_type() {
        let events = [
            StreamEvent::ContentBlockStart {
                index: 0,
                content_block: block_start(&BlockKind::ToolUse {
                    id: "toolu_1".into(),
                    name: "f".into(),
                }),
            },
            StreamEvent::ContentBlockDelta {
                index: 0,
                delta: Delta::InputJsonDelta {
                    partial_json: "{".into(),
                },
            },
            StreamEvent::ContentBlockStop { index: 0 },
            StreamEvent::MessageStop,
            StreamEvent::Ping,
        ];
        let json: Vec<Value> = events
            .iter()
            .map(|e| {
                let v = serde_json::to_value(e).unwrap();
                assert_eq!(v["type"], e.name());
                v
            })
            .collect();
        assert_eq!(
            json,
            vec![
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_stop"}),
                json!({"type": "ping"}),
            ]
        );
        let other =
            serde_json::to_value(block_start(&BlockKind::Other("server_tool_use".into()))).unwrap();
        assert_eq!(other, json!({"type": "server_tool_use"}));
        let error = AnthropicError::invalid("messages: bad");
        assert_eq!(
            serde_json::to_value(error.body()).unwrap(),
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "messages: bad"}})
        );
    }

    #[test]
    fn a_message_is_assembled_from_events() {
        let mut b = MessageBuilder::default();
        for e in [
            TurnEvent::BlockStart {
                index: 0,
                block: BlockKind::Thinking,
            },
            TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::Thinking("hm".into()),
            },
            TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::Signature("sig".into()),
            },
            TurnEvent::BlockStart {
                index: 1,
                block: BlockKind::Text,
            },
            TurnEvent::BlockDelta {
                index: 1,
                delta: BlockDelta::Text("Hel".into()),
            },
            TurnEvent::BlockDelta {
                index: 1,
                delta: BlockDelta::Text("lo".into()),
            },
        ] {
            b.push(&ChatItem::Event(e));
        }
        let end = ChatEnd {
            stop_reason: Some(StopReason::EndTurn),
            stop_sequence: None,
            usage: Usage {
                input_tokens: 5,
                output_tokens: 2,
                ..Usage::default()
            },
            failure: None,
            structured_output: None,
        };
        let m = serde_json::to_value(b.finish(&end, "msg_1", "claude-x")).unwrap();
        assert_eq!(
            m["content"],
            json!([{"type": "thinking", "thinking": "hm", "signature": "sig"}, {"type": "text", "text": "Hello"}])
        );
        assert_eq!(m["stop_reason"], "end_turn");
        assert_eq!(m["stop_sequence"], Value::Null);
        assert_eq!(m["usage"]["input_tokens"], 5);
        assert_eq!(m["model"], "claude-x");
        assert_eq!(m["type"], "message");
    }

    #[test]
    fn token_estimates_grow_with_the_text() {
        let hi = || MessageParam {
            role: MessageRole::User,
            content: TextOr::Text("hi".into()),
        };
        let small = estimate_tokens(None, &[hi()]);
        let large = estimate_tokens(Some(&TextOr::Text("x".repeat(400))), &[hi()]);
        assert!(small >= 1 && large >= small + 90, "{small} {large}");
    }
}
