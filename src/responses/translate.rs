//! Explicit translation of a Responses API request into a `ChatRequest`: `instructions` and
//! system/developer items make the system prompt; the stored conversation of
//! `previous_response_id` and the new input items make the history and the new user turn
//! (function calls and their outputs as tool-use and tool-result blocks); `text.format`,
//! `max_output_tokens` and `reasoning.effort` make the launch profile.

use serde_json::{Map, Value};

use crate::chat::ChatRequest;
use crate::dialect::Context;
use crate::domain::{
    ContentBlock, HistoryMessage, LaunchProfile, Role, ToolChoice, ToolSpec, TurnRequest,
};
use crate::openai::OpenAiError;

use super::render::output_items;

use super::wire::{
    ContentPart, CreateResponse, FunctionOutput, FunctionTool, InputItem, InputItemParam,
    MessageItem, ReasoningConfig, TextFormat, ToolChoiceParam, ToolParam,
};
use crate::tagged::TextOr;

/// The output-token limit the CLI asks for when nothing else is set.
const CLI_DEFAULT_MAX_TOKENS: u32 = 32000;
/// The schema `json_object` stands for: any JSON object.
const ANY_OBJECT_SCHEMA: &str = r#"{"type":"object"}"#;

/// A translated request: the chat to run, how to answer, and what the response echoes.
#[derive(Debug)]
pub struct Translated {
    pub chat: ChatRequest,
    pub stream: bool,
    /// The client's function tools and how the model must use them.
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    /// Whether the model may call several tools at once (default true).
    pub parallel_tool_calls: bool,
    /// The request's own fields, as the response object repeats them.
    pub echo: Echo,
    /// The conversation this response answers: the stored one, then the new input items,
    /// each with an id. Kept with the response when it is stored.
    pub context: Vec<InputItem>,
}

/// The request fields a `response` object repeats.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Echo {
    pub model: String,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub reasoning: ReasoningConfig,
    pub store: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub text_format: Option<TextFormat>,
    pub verbosity: Option<String>,
    pub tool_choice: Option<ToolChoiceParam>,
    pub tools: Vec<FunctionTool>,
    pub metadata: Map<String, Value>,
    pub user: Option<String>,
}

/// A Responses request as a chat request for the context's owner, continuing the stored
/// conversation of `previous_response_id` (its items and output) when it names one.
pub fn to_chat(request: CreateResponse, context: &Context) -> Result<Translated, OpenAiError> {
    refuse_unsupported(&request)?;
    let options = context.options;
    let previous = match &request.previous_response_id {
        Some(id) => {
            let stored = context
                .responses
                .get(&context.owner, id)
                .ok_or_else(|| OpenAiError {
                    code: Some("previous_response_not_found"),
                    ..not_found(id, "previous_response_id")
                })?;
            let mut items = stored.context.clone();
            items.extend(output_items(&stored.response));
            items
        }
        None => Vec::new(),
    };
    if request.model.trim().is_empty() {
        return Err(OpenAiError::invalid("model", "model must not be empty"));
    }
    if request.max_output_tokens == Some(0) {
        return Err(OpenAiError::invalid(
            "max_output_tokens",
            "max_output_tokens: must be at least 1",
        ));
    }
    let input = match request.input {
        Some(TextOr::Text(text)) if !text.is_empty() => vec![InputItem::Message(MessageItem {
            id: None,
            role: "user".into(),
            content: vec![ContentPart::InputText { text }],
            status: None,
        })],
        Some(TextOr::List(items)) if !items.is_empty() => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| input_item(item, i))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(OpenAiError::invalid(
                "input",
                "input: a non-empty string or list of items is required",
            ));
        }
    };
    let stored = previous.len();
    let mut items = previous;
    items.extend(input.into_iter().map(with_ids));
    let conversation = conversation(&items, stored, context.fetch_remote_images)?;
    let (tools, echo_tools) = tools(request.tools.unwrap_or_default())?;
    let tool_choice = tool_choice(request.tool_choice.as_ref(), &tools)?;
    let text = request.text.unwrap_or_default();
    let json_schema = match &text.format {
        None | Some(TextFormat::Text) => None,
        Some(TextFormat::JsonObject) => Some(ANY_OBJECT_SCHEMA.to_string()),
        Some(TextFormat::JsonSchema { schema, .. }) if schema.is_object() => {
            Some(schema.to_string())
        }
        Some(TextFormat::JsonSchema { .. }) => {
            return Err(OpenAiError::invalid(
                "text.format.schema",
                "text.format.schema: a JSON schema object is required",
            ));
        }
    };
    let reasoning = request.reasoning.unwrap_or_default();
    let system = request
        .instructions
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .chain(conversation.system)
        .collect::<Vec<_>>();
    let structured = json_schema.is_some();
    let profile = LaunchProfile {
        // The model goes into the profile where the request flow picks a worker (`chat`).
        model: None,
        system_prompt: (!system.is_empty()).then(|| system.join("\n\n")),
        builtin_tools: false,
        json_schema,
        max_output_tokens: request
            .max_output_tokens
            .filter(|&m| m != CLI_DEFAULT_MAX_TOKENS),
        effort: effort(reasoning.effort.as_deref())?,
    };
    let model = options
        .model_aliases
        .get(&request.model)
        .cloned()
        .unwrap_or_else(|| request.model.clone());
    let parallel_tool_calls = request.parallel_tool_calls.unwrap_or(true);
    let mut chat = ChatRequest {
        owner: context.owner.clone(),
        profile,
        turn: TurnRequest {
            history: conversation.history,
            content: conversation.content,
            model: Some(model),
            tools: tools.clone(),
            tool_choice: tool_choice.clone(),
        },
        stop_sequences: Vec::new(),
        include_thinking: false,
        structured,
        forced_tool: None,
        single_tool_call: !parallel_tool_calls,
    };
    if chat.structured && !matches!(chat.turn.tool_choice, ToolChoice::Auto | ToolChoice::None) {
        return Err(OpenAiError::invalid(
            "tool_choice",
            "tool_choice: a forced call cannot be combined with text.format json_schema",
        ));
    }
    chat.force_tool()
        .map_err(|why| OpenAiError::invalid("tool_choice", format!("tool_choice: {why}")))?;
    let echo = Echo {
        model: request.model,
        instructions: request.instructions,
        max_output_tokens: request.max_output_tokens,
        parallel_tool_calls,
        previous_response_id: request.previous_response_id,
        reasoning,
        store: request.store.unwrap_or(true),
        temperature: request.temperature,
        top_p: request.top_p,
        text_format: text.format,
        verbosity: text.verbosity,
        tool_choice: request.tool_choice,
        tools: echo_tools,
        metadata: request.metadata.unwrap_or_default(),
        user: request.user,
    };
    Ok(Translated {
        chat,
        stream: request.stream.unwrap_or(false),
        tools,
        tool_choice,
        parallel_tool_calls,
        echo,
        context: items,
    })
}

fn refuse_unsupported(request: &CreateResponse) -> Result<(), OpenAiError> {
    if request.background == Some(true) {
        return Err(OpenAiError::unsupported(
            "background",
            "background: ccpool answers while the client waits; background responses are not supported",
        ));
    }
    if request.conversation.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(OpenAiError::unsupported(
            "conversation",
            "conversation: ccpool keeps no conversation objects; continue with previous_response_id",
        ));
    }
    if request.prompt.as_ref().is_some_and(|p| !p.is_null()) {
        return Err(OpenAiError::unsupported(
            "prompt",
            "prompt: ccpool keeps no prompt templates; send instructions and input",
        ));
    }
    if request.top_logprobs.is_some_and(|n| n > 0) {
        return Err(OpenAiError::unsupported(
            "top_logprobs",
            "top_logprobs: log probabilities are not available through ccpool",
        ));
    }
    if let Some(metadata) = &request.metadata {
        if metadata.len() > 16 || metadata.values().any(|v| !v.is_string()) {
            return Err(OpenAiError::invalid(
                "metadata",
                "metadata: up to 16 keys with string values",
            ));
        }
    }
    Ok(())
}

/// One input item, or the refusal of a kind ccpool does not serve.
fn input_item(item: InputItemParam, i: usize) -> Result<InputItem, OpenAiError> {
    let at = format!("input[{i}]");
    match item {
        InputItemParam::Item(item) => Ok(item),
        InputItemParam::Reference => Err(OpenAiError::unsupported(
            &format!("{at}.type"),
            format!(
                "{at}: item references are not supported by ccpool; send the item itself, or continue with previous_response_id"
            ),
        )),
        InputItemParam::Other(other) => Err(OpenAiError::unsupported(
            &format!("{at}.type"),
            format!(
                "{at}.type: \"{other}\" items are not supported by ccpool; it serves message, function_call, function_call_output and reasoning items"
            ),
        )),
    }
}

/// An input item with the id it is listed under (the client's, or a new one).
fn with_ids(mut item: InputItem) -> InputItem {
    let (id, prefix) = match &mut item {
        InputItem::Message(m) => (&mut m.id, "msg"),
        InputItem::FunctionCall(f) => (&mut f.id, "fc"),
        InputItem::FunctionCallOutput(f) => (&mut f.id, "fco"),
        InputItem::Reasoning(r) => (&mut r.id, "rs"),
        InputItem::ItemReference { .. } => return item,
    };
    if id.is_none() {
        *id = Some(new_id(prefix));
    }
    item
}

/// The 404 of a response id that is unknown, expired, deleted or another owner's.
pub fn not_found(id: &str, param: &str) -> OpenAiError {
    OpenAiError {
        param: Some(param.to_string()),
        code: Some("not_found"),
        ..OpenAiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No response found with id '{id}'."),
        )
    }
}

/// A fresh id with OpenAI's prefix for its kind (`resp`, `msg`, `fc`, …).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A conversation as the domain sees it.
struct Conversation {
    /// System and developer messages, in order.
    system: Vec<String>,
    history: Vec<HistoryMessage>,
    /// The new user turn.
    content: Vec<ContentBlock>,
}

/// Items as messages: consecutive items of one role make one message (the assistant's text
/// and function calls; the user's text, images and function outputs); reasoning is dropped.
/// The first `stored` items come from `previous_response_id`.
/// Remote image URLs become `RemoteImage` blocks when `remote_images` is set.
fn conversation(
    items: &[InputItem],
    stored: usize,
    remote_images: bool,
) -> Result<Conversation, OpenAiError> {
    let mut system = Vec::new();
    let mut messages: Vec<HistoryMessage> = Vec::new();
    let mut push = |role: Role, blocks: Vec<ContentBlock>| match messages.last_mut() {
        _ if blocks.is_empty() => {}
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => messages.push(HistoryMessage {
            role,
            content: blocks,
        }),
    };
    for (i, item) in items.iter().enumerate() {
        // Errors name the position in this request's input; stored items were checked.
        let at = match i.checked_sub(stored) {
            Some(j) => format!("input[{j}]"),
            None => "previous_response_id".to_string(),
        };
        match item {
            InputItem::Message(m) => match m.role.as_str() {
                "system" | "developer" => system.push(text_of(&m.content, &at)?),
                "user" => push(Role::User, user_blocks(&m.content, &at, remote_images)?),
                "assistant" => push(Role::Assistant, assistant_blocks(&m.content, &at)?),
                other => {
                    return Err(OpenAiError::invalid(
                        format!("{at}.role"),
                        format!(
                            "{at}.role: unknown role \"{other}\"; expected user, assistant, system or developer"
                        ),
                    ));
                }
            },
            InputItem::FunctionCall(call) => push(
                Role::Assistant,
                vec![ContentBlock::ToolUse {
                    id: call.call_id.clone(),
                    name: call.name.clone(),
                    input: call.arguments.clone(),
                }],
            ),
            InputItem::FunctionCallOutput(out) => {
                let content = match &out.output {
                    FunctionOutput::Text(text) => vec![ContentBlock::Text(text.clone())],
                    FunctionOutput::List(parts) => {
                        user_blocks(parts, &format!("{at}.output"), remote_images)?
                    }
                };
                push(
                    Role::User,
                    vec![ContentBlock::ToolResult {
                        tool_use_id: out.call_id.clone(),
                        content,
                        is_error: false,
                    }],
                )
            }
            InputItem::Reasoning(_) | InputItem::ItemReference { .. } => {}
        }
    }
    let Some(last) = messages.pop() else {
        return Err(OpenAiError::invalid(
            "input",
            "input: at least one user message or function_call_output is required",
        ));
    };
    if last.role != Role::User {
        let message = if stored > 0 {
            "input: a continuation needs new user input or function_call_output items"
        } else {
            "input: the last item must be a user message or a function_call_output"
        };
        return Err(OpenAiError::invalid("input", message));
    }
    Ok(Conversation {
        system,
        history: messages,
        content: last.content,
    })
}

/// The text of a message whose parts may only be text.
fn text_of(parts: &[ContentPart], at: &str) -> Result<String, OpenAiError> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        match part {
            ContentPart::InputText { text: t } | ContentPart::OutputText { text: t, .. } => {
                text.push_str(t)
            }
            ContentPart::Refusal { refusal } => text.push_str(refusal),
            _ => {
                return Err(OpenAiError::invalid(
                    format!("{at}.content[{j}]"),
                    format!("{at}.content[{j}]: only text parts are allowed in this message"),
                ));
            }
        }
    }
    if text.is_empty() {
        return Err(OpenAiError::invalid(
            format!("{at}.content"),
            format!("{at}.content: must not be empty"),
        ));
    }
    Ok(text)
}

/// An assistant's parts as text blocks, one per part, as the model produced them (so that a
/// continued conversation matches what a worker holds). Empty parts add nothing.
fn assistant_blocks(parts: &[ContentPart], at: &str) -> Result<Vec<ContentBlock>, OpenAiError> {
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part {
            ContentPart::InputText { text }
            | ContentPart::OutputText { text, .. }
            | ContentPart::Refusal { refusal: text } => {
                if !text.is_empty() {
                    blocks.push(ContentBlock::Text(text.clone()));
                }
            }
            _ => {
                return Err(OpenAiError::invalid(
                    format!("{at}.content[{j}]"),
                    format!("{at}.content[{j}]: an assistant message holds only text parts"),
                ));
            }
        }
    }
    Ok(blocks)
}

/// A user's parts as text and image blocks.
fn user_blocks(
    parts: &[ContentPart],
    at: &str,
    remote_images: bool,
) -> Result<Vec<ContentBlock>, OpenAiError> {
    if parts.is_empty() {
        return Err(OpenAiError::invalid(
            format!("{at}.content"),
            format!("{at}.content: must not be empty"),
        ));
    }
    parts
        .iter()
        .enumerate()
        .map(|(j, part)| {
            let at = format!("{at}.content[{j}]");
            match part {
                ContentPart::InputText { text } | ContentPart::OutputText { text, .. }
                    if !text.is_empty() =>
                {
                    Ok(ContentBlock::Text(text.clone()))
                }
                ContentPart::InputText { .. } | ContentPart::OutputText { .. } => Err(
                    OpenAiError::invalid(format!("{at}.text"), format!("{at}.text: must not be empty")),
                ),
                ContentPart::InputImage {
                    image_url,
                    file_id,
                    ..
                } => match (image_url, file_id) {
                    (Some(url), _) => image(url, &format!("{at}.image_url"), remote_images),
                    (None, Some(_)) => Err(OpenAiError::unsupported(
                        &format!("{at}.file_id"),
                        format!("{at}.file_id: ccpool keeps no files; send the image inline as a data: URL"),
                    )),
                    (None, None) => Err(OpenAiError::invalid(
                        format!("{at}.image_url"),
                        format!("{at}.image_url: required"),
                    )),
                },
                ContentPart::InputFile { .. } => Err(OpenAiError::unsupported(
                    &format!("{at}.type"),
                    format!("{at}.type: \"input_file\" parts are not supported by ccpool"),
                )),
                ContentPart::Refusal { .. } => Err(OpenAiError::invalid(
                    format!("{at}.type"),
                    format!("{at}.type: a refusal belongs to an assistant message"),
                )),
            }
        })
        .collect()
}

/// An `input_image` URL as an image block (see `dialect::image_url`).
fn image(url: &str, param: &str, remote_images: bool) -> Result<ContentBlock, OpenAiError> {
    crate::dialect::image_url(url, param, remote_images)
        .map_err(|message| OpenAiError::invalid(param, message))
}

/// The client's function tools, as domain tools and as the response echoes them. Any other
/// tool type is a built-in tool of OpenAI's that ccpool cannot run.
fn tools(raw: Vec<ToolParam>) -> Result<(Vec<ToolSpec>, Vec<FunctionTool>), OpenAiError> {
    let mut specs = Vec::new();
    let mut echo = Vec::new();
    for (i, tool) in raw.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        let tool = match tool {
            ToolParam::Function(tool) => tool,
            ToolParam::Other(kind) => {
                return Err(OpenAiError::unsupported(
                    &format!("{at}.type"),
                    format!(
                        "{at}.type: \"{kind}\" is a built-in tool, which ccpool cannot run; only tools of type \"function\" are supported"
                    ),
                ));
            }
        };
        if tool.name.is_empty() {
            return Err(OpenAiError::invalid(
                format!("{at}.name"),
                format!("{at}.name: must not be empty"),
            ));
        }
        let schema = match &tool.parameters {
            None | Some(Value::Null) => r#"{"type":"object","properties":{}}"#.to_string(),
            Some(schema @ Value::Object(_)) => {
                if let Some(why) = crate::dialect::tool_schema_error(schema) {
                    return Err(OpenAiError::invalid(
                        format!("{at}.parameters"),
                        format!("{at}.parameters: {why}"),
                    ));
                }
                schema.to_string()
            }
            Some(_) => {
                return Err(OpenAiError::invalid(
                    format!("{at}.parameters"),
                    format!("{at}.parameters: must be a JSON schema object"),
                ));
            }
        };
        if specs.iter().any(|s: &ToolSpec| s.name == tool.name) {
            return Err(OpenAiError::invalid(
                format!("{at}.name"),
                format!("{at}.name: \"{}\" is declared twice", tool.name),
            ));
        }
        specs.push(ToolSpec {
            name: tool.name.clone(),
            description: tool.description.clone(),
            input_schema: schema,
        });
        echo.push(tool);
    }
    Ok((specs, echo))
}

/// `tool_choice`: `none`, `auto`, `required`, or one named function.
fn tool_choice(
    choice: Option<&ToolChoiceParam>,
    tools: &[ToolSpec],
) -> Result<ToolChoice, OpenAiError> {
    let choice = match choice {
        None => ToolChoice::Auto,
        Some(ToolChoiceParam::Mode(mode)) => match mode.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Any,
            other => {
                return Err(OpenAiError::invalid(
                    "tool_choice",
                    format!(
                        "tool_choice: unknown value \"{other}\"; expected none, auto, required or a function"
                    ),
                ));
            }
        },
        Some(ToolChoiceParam::Function { name, .. }) => ToolChoice::Tool(name.clone()),
        Some(ToolChoiceParam::Other(kind)) => {
            return Err(OpenAiError::unsupported(
                "tool_choice.type",
                format!(
                    "tool_choice.type: \"{kind}\" is not supported by ccpool; choose none, auto, required or a function"
                ),
            ));
        }
    };
    match &choice {
        ToolChoice::Tool(name) if !tools.iter().any(|t| &t.name == name) => {
            Err(OpenAiError::invalid(
                "tool_choice.name",
                format!("tool_choice.name: \"{name}\" is not one of the request's tools"),
            ))
        }
        ToolChoice::Any if tools.is_empty() => Err(OpenAiError::invalid(
            "tool_choice",
            "tool_choice: \"required\" needs at least one tool",
        )),
        _ => Ok(choice),
    }
}

/// `reasoning.effort` as the CLI's effort level.
fn effort(reasoning: Option<&str>) -> Result<Option<String>, OpenAiError> {
    Ok(match reasoning {
        None => None,
        Some("none" | "minimal" | "low") => Some("low".into()),
        Some(level @ ("medium" | "high" | "xhigh")) => Some(level.into()),
        Some(other) => {
            return Err(OpenAiError::invalid(
                "reasoning.effort",
                format!("reasoning.effort: unknown value \"{other}\""),
            ));
        }
    })
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::chat::{ChatEnd, ChatItem};
    use crate::dialect::{Dialect, OpenAiOptions};
    use crate::domain::{BlockKind, OwnerKey, StopReason, TurnEvent};
    use crate::responses::render::ResponseWriter;
    use crate::responses::{ResponseStore, Responses};
    use serde_json::json;
    use std::collections::HashMap;

    fn options() -> OpenAiOptions {
        OpenAiOptions {
            model_aliases: HashMap::from([("gpt-4o".to_string(), "claude-sonnet-4-5".to_string())]),
            reasoning_content: false,
        }
    }

    /// Translates for `owner`, with `store` as the stored responses.
    fn translate_for(
        body: Value,
        owner: &str,
        store: &ResponseStore,
    ) -> Result<Translated, OpenAiError> {
        let options = options();
        let context = Context {
            owner: OwnerKey::new(owner),
            options: &options,
            fetch_remote_images: false,
            responses: store,
        };
        to_chat(Responses::parse(body.to_string().as_bytes())?, &context)
    }

    fn translate(body: Value) -> Result<Translated, OpenAiError> {
        translate_for(body, "me", &ResponseStore::default())
    }

    fn with(extra: Value) -> Value {
        let mut b = json!({"model": "gpt-4o", "input": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    }

    fn refused(body: Value, param: &str, mentions: &str) {
        let e = translate(body.clone()).expect_err(&body.to_string());
        assert_eq!(e.status.as_u16(), 400, "{body}");
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        assert!(
            e.message.contains(mentions),
            "{body}: {} lacks {mentions}",
            e.message
        );
    }

    #[test]
    fn typed_items_name_the_path_and_the_problem() {
        let message = |body: Value| {
            let e = translate(body.clone()).expect_err(&body.to_string());
            (e.param.unwrap_or_default(), e.message)
        };
        let input = |items: Value| with(json!({"input": items}));
        assert_eq!(
            message(input(
                json!([{"role": "user", "content": [{"type": "input_text", "text": 5}]}])
            )),
            (
                "input[0].content[0].text".into(),
                "input[0].content[0].text: invalid type: integer `5`, expected a string".into()
            )
        );
        assert_eq!(
            message(input(json!([{"role": "user", "content": [{"type": "input_audio"}]}]))),
            (
                "input[0].content[0].type".into(),
                "input[0].content[0].type: content part type `input_audio` is not supported by ccpool (it takes input_text, input_image, output_text and refusal)".into()
            )
        );
        assert_eq!(
            message(input(
                json!([{"type": "function_call_output", "call_id": "c", "output": 5}])
            )),
            (
                "input[0].output".into(),
                "input[0].output: must be a string or a list of content parts, got a number".into()
            )
        );
        assert_eq!(
            message(input(json!([{"content": "x"}]))),
            (
                "input[0].type".into(),
                "input[0].type: field required".into()
            )
        );
        assert_eq!(
            message(input(json!(7))),
            (
                "input".into(),
                "input: must be a string or a list of items, got a number".into()
            )
        );
        assert_eq!(
            message(with(
                json!({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}, "strict": "yes"}}})
            )),
            (
                "text.format.strict".into(),
                "text.format.strict: invalid type: string \"yes\", expected a boolean".into()
            )
        );
        let unsupported = translate(input(
            json!([{"type": "computer_call_output", "call_id": "c"}]),
        ))
        .unwrap_err();
        assert_eq!(
            (unsupported.param.as_deref(), unsupported.code),
            (Some("input[0].type"), Some("unsupported_parameter"))
        );
        assert!(
            unsupported.message.contains("\"computer_call_output\""),
            "{}",
            unsupported.message
        );
        // The tool choice is echoed as typed.
        let t = translate(with(json!({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "f", "extra": 1}}))).unwrap();
        assert_eq!(
            serde_json::to_value(t.echo.tool_choice).unwrap(),
            json!({"type": "function", "name": "f"})
        );
    }

    #[test]
    fn a_string_input_is_one_user_message() {
        let t = translate(
            json!({"model": "gpt-4o", "input": "Say hello", "instructions": "Be brief."}),
        )
        .unwrap();
        assert!(!t.stream);
        assert_eq!(
            t.chat.turn.content,
            vec![ContentBlock::Text("Say hello".into())]
        );
        assert!(t.chat.turn.history.is_empty());
        assert_eq!(t.chat.turn.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(t.chat.owner, OwnerKey::new("me"));
        assert_eq!(t.chat.profile.system_prompt.as_deref(), Some("Be brief."));
        assert!(!t.chat.structured && t.chat.stop_sequences.is_empty());
        assert!(
            !t.chat.single_tool_call,
            "parallel_tool_calls defaults to true"
        );
        assert_eq!(
            t.echo.model, "gpt-4o",
            "the response names the client's model"
        );
        assert!(t.echo.store, "store defaults to true");
        assert_eq!(t.context.len(), 1);
        match &t.context[0] {
            InputItem::Message(m) => {
                assert!(m.id.as_deref().unwrap().starts_with("msg_"));
                assert_eq!(
                    m.content,
                    vec![ContentPart::InputText {
                        text: "Say hello".into()
                    }]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_request_translates_field_by_field() {
        let t = translate(json!({
            "model": "gpt-4o", "instructions": "Be brief.", "max_output_tokens": 300, "stream": true,
            "temperature": 0.2, "top_p": 0.9, "store": false, "metadata": {"k": "v"}, "user": "u",
            "reasoning": {"effort": "minimal", "summary": "auto"}, "parallel_tool_calls": false,
            "include": ["reasoning.encrypted_content"], "truncation": "disabled", "service_tier": "auto",
            "text": {"format": {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": true}},
            "tools": [{"type": "function", "name": "get_weather", "description": "Weather.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}],
            "tool_choice": "auto",
            "input": [
                {"role": "developer", "content": "Use French."},
                {"role": "user", "content": "one"},
                {"type": "message", "role": "assistant", "id": "msg_a", "status": "completed", "content": [{"type": "output_text", "text": "un", "annotations": []}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "two"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
                ]}
            ]
        }))
        .unwrap();
        assert!(t.stream && !t.parallel_tool_calls && !t.echo.store);
        let chat = t.chat;
        assert!(chat.single_tool_call, "parallel_tool_calls false");
        assert_eq!(
            chat.profile.system_prompt.as_deref(),
            Some("Be brief.\n\nUse French.")
        );
        assert_eq!(chat.profile.max_output_tokens, Some(300));
        assert_eq!(chat.profile.effort.as_deref(), Some("low"));
        assert_eq!(
            chat.profile.json_schema.as_deref(),
            Some(r#"{"type":"object"}"#)
        );
        assert!(chat.structured);
        assert_eq!(
            chat.turn.history,
            vec![
                HistoryMessage {
                    role: Role::User,
                    content: vec![ContentBlock::Text("one".into())]
                },
                HistoryMessage {
                    role: Role::Assistant,
                    content: vec![
                        ContentBlock::Text("un".into()),
                        ContentBlock::ToolUse {
                            id: "call_1".into(),
                            name: "get_weather".into(),
                            input: "{\"city\":\"Paris\"}".into()
                        },
                    ],
                },
            ]
        );
        assert_eq!(
            chat.turn.content,
            vec![
                ContentBlock::ToolResult {
                    tool_use_id: "call_1".into(),
                    content: vec![ContentBlock::Text("sunny".into())],
                    is_error: false
                },
                ContentBlock::Text("two".into()),
                ContentBlock::Image {
                    media_type: "image/png".into(),
                    data: "AAAA".into()
                },
            ],
            "the function output and the next user message make one user turn"
        );
        assert_eq!(
            t.tools,
            vec![ToolSpec {
                name: "get_weather".into(),
                description: Some("Weather.".into()),
                input_schema: r#"{"properties":{"city":{"type":"string"}},"type":"object"}"#.into(),
            }]
        );
        assert_eq!(t.tool_choice, ToolChoice::Auto);
        assert_eq!(t.echo.metadata["k"], "v");
        assert_eq!(t.echo.temperature, Some(0.2));
        assert_eq!(
            t.context.len(),
            7,
            "every input item is kept, reasoning too"
        );
        let ids: Vec<String> = t
            .context
            .iter()
            .map(|i| {
                serde_json::to_value(i).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ids[2], "msg_a", "the client's ids are kept");
        assert!(ids[5].starts_with("fco_") && ids[0].starts_with("msg_"));
    }

    #[test]
    fn a_continuation_appends_to_the_stored_conversation() {
        let store = ResponseStore::default();
        let first = translate(json!({"model": "gpt-4o", "input": "first"})).unwrap();
        // The stored answer has three text parts, one of them empty.
        let mut writer = ResponseWriter::new("resp_1".into(), 1, &first.echo);
        for (index, text) in ["answer", "", "more"].into_iter().enumerate() {
            let index = index as u32;
            writer.push(&ChatItem::Event(TurnEvent::BlockStart {
                index,
                block: BlockKind::Text,
            }));
            writer.push(&ChatItem::Event(TurnEvent::BlockDelta {
                index,
                delta: crate::domain::BlockDelta::Text(text.into()),
            }));
            writer.push(&ChatItem::Event(TurnEvent::BlockStop { index }));
        }
        writer.push(&ChatItem::End(ChatEnd {
            stop_reason: Some(StopReason::EndTurn),
            stop_sequence: None,
            usage: Default::default(),
            failure: None,
            structured_output: None,
        }));
        assert!(store.put(OwnerKey::new("me"), writer.into_response(), first.context));
        let second =
            json!({"model": "gpt-4o", "input": "second", "previous_response_id": "resp_1"});
        let e = translate_for(second.clone(), "you", &store).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.param.as_deref(), e.code),
            (
                404,
                Some("previous_response_id"),
                Some("previous_response_not_found")
            ),
            "another owner's response is not found"
        );
        let t = translate_for(second, "me", &store).unwrap();
        assert_eq!(
            t.chat.turn.history,
            vec![
                HistoryMessage {
                    role: Role::User,
                    content: vec![ContentBlock::Text("first".into())]
                },
                // One block per part, as the worker holds the answer.
                HistoryMessage {
                    role: Role::Assistant,
                    content: vec![
                        ContentBlock::Text("answer".into()),
                        ContentBlock::Text("more".into())
                    ],
                },
            ]
        );
        assert_eq!(
            t.chat.turn.content,
            vec![ContentBlock::Text("second".into())]
        );
        assert_eq!(t.context.len(), 3);
        assert_eq!(t.echo.previous_response_id.as_deref(), Some("resp_1"));
    }

    #[test]
    fn text_formats_and_the_default_limit() {
        let object = translate(with(json!({"text": {"format": {"type": "json_object"}}}))).unwrap();
        assert_eq!(
            object.chat.profile.json_schema.as_deref(),
            Some(ANY_OBJECT_SCHEMA)
        );
        let text = translate(with(
            json!({"text": {"format": {"type": "text"}, "verbosity": "low"}}),
        ))
        .unwrap();
        assert_eq!(text.chat.profile.json_schema, None);
        assert!(!text.chat.structured);
        let default =
            translate(with(json!({"max_output_tokens": CLI_DEFAULT_MAX_TOKENS}))).unwrap();
        assert_eq!(
            default.chat.profile,
            LaunchProfile::default(),
            "the default profile's warm workers serve it"
        );
    }

    #[test]
    fn a_remote_image_is_left_to_fetch_when_fetching_is_on() {
        let options = options();
        let store = ResponseStore::default();
        let context = Context {
            owner: OwnerKey::new("me"),
            options: &options,
            fetch_remote_images: true,
            responses: &store,
        };
        let body = json!({"model": "gpt-4o", "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/cat.png"}
        ]}]});
        let t = to_chat(
            Responses::parse(body.to_string().as_bytes()).unwrap(),
            &context,
        )
        .unwrap();
        assert_eq!(
            t.chat.turn.content,
            vec![ContentBlock::RemoteImage {
                url: "https://example.com/cat.png".into(),
                field: "input[0].content[0].image_url".into(),
            }]
        );
    }

    #[test]
    fn tool_choices_translate() {
        let tools = json!([{"type": "function", "name": "f", "parameters": null}]);
        for (choice, expected) in [
            (json!("auto"), ToolChoice::Auto),
            (json!("none"), ToolChoice::None),
            (json!("required"), ToolChoice::Any),
            (
                json!({"type": "function", "name": "f"}),
                ToolChoice::Tool("f".into()),
            ),
        ] {
            let t = translate(with(json!({"tools": tools, "tool_choice": choice}))).unwrap();
            assert_eq!(t.tool_choice, expected);
            assert_eq!(
                t.tools[0].input_schema,
                r#"{"type":"object","properties":{}}"#
            );
        }
    }

    #[test]
    fn bad_requests_are_refused_by_name() {
        refused(json!({"input": "x"}), "model", "model");
        refused(json!({"model": "gpt-4o"}), "input", "input");
        refused(with(json!({"input": ""})), "input", "non-empty");
        refused(with(json!({"input": 5})), "input", "input");
        refused(with(json!({"input": [5]})), "input[0]", "object");
        refused(
            with(json!({"input": [{"role": "user"}]})),
            "input[0].content",
            "content",
        );
        refused(
            with(json!({"input": [{"role": "oracle", "content": "x"}]})),
            "input[0].role",
            "oracle",
        );
        refused(
            with(json!({"input": [{"role": "user", "content": ""}]})),
            "input[0].content",
            "empty",
        );
        refused(
            with(
                json!({"input": [{"role": "user", "content": [{"type": "input_audio", "data": "x"}]}]}),
            ),
            "input[0].content[0].type",
            "input_audio",
        );
        refused(
            with(
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/cat.png"}]}]}),
            ),
            "input[0].content[0].image_url",
            "data:",
        );
        refused(
            with(
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}),
            ),
            "input[0].content[0].file_id",
            "file",
        );
        refused(
            with(
                json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]}),
            ),
            "input[0].content[0].type",
            "input_file",
        );
        refused(
            with(json!({"input": [{"type": "web_search_call", "id": "ws"}]})),
            "input[0].type",
            "web_search_call",
        );
        refused(
            with(json!({"input": [{"type": "item_reference", "id": "msg_1"}]})),
            "input[0].type",
            "reference",
        );
        refused(
            with(json!({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]})),
            "input[0].call_id",
            "call_id",
        );
        refused(
            with(json!({"input": [{"role": "assistant", "content": "x"}]})),
            "input",
            "last item",
        );
        refused(
            with(json!({"tools": [{"type": "web_search"}]})),
            "tools[0].type",
            "web_search",
        );
        refused(
            with(json!({"tools": [{"type": "file_search", "vector_store_ids": []}]})),
            "tools[0].type",
            "file_search",
        );
        refused(
            with(json!({"tools": [{"type": "code_interpreter"}]})),
            "tools[0].type",
            "code_interpreter",
        );
        refused(
            with(json!({"tools": [{"type": "computer_use_preview"}]})),
            "tools[0].type",
            "computer_use",
        );
        refused(
            with(json!({"tools": [{"type": "mcp", "server_label": "x"}]})),
            "tools[0].type",
            "mcp",
        );
        refused(
            with(json!({"tools": [{"type": "function"}]})),
            "tools[0].name",
            "name",
        );
        refused(
            with(json!({"tools": [{"type": "function", "name": "f", "parameters": "x"}]})),
            "tools[0].parameters",
            "schema",
        );
        refused(
            with(
                json!({"tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": 7}}}}]}),
            ),
            "tools[0].parameters",
            "not a valid JSON Schema",
        );
        refused(
            with(
                json!({"tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]}),
            ),
            "tools[1].name",
            "twice",
        );
        refused(
            with(json!({"tool_choice": "required"})),
            "tool_choice",
            "at least one tool",
        );
        refused(
            with(json!({"tool_choice": "sometimes"})),
            "tool_choice",
            "sometimes",
        );
        refused(
            with(
                json!({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}),
            ),
            "tool_choice.name",
            "\"g\"",
        );
        refused(
            with(json!({"tool_choice": {"type": "web_search_preview"}})),
            "tool_choice.type",
            "web_search_preview",
        );
        refused(
            with(json!({"background": true})),
            "background",
            "background",
        );
        refused(
            with(json!({"conversation": "conv_1"})),
            "conversation",
            "previous_response_id",
        );
        refused(
            with(json!({"prompt": {"id": "pmpt_1"}})),
            "prompt",
            "template",
        );
        refused(
            with(json!({"top_logprobs": 3})),
            "top_logprobs",
            "log probabilities",
        );
        refused(
            with(json!({"max_output_tokens": 0})),
            "max_output_tokens",
            "at least 1",
        );
        refused(
            with(json!({"max_output_tokens": "ten"})),
            "max_output_tokens",
            "max_output_tokens",
        );
        refused(
            with(json!({"text": {"format": {"type": "xml"}}})),
            "text.format.type",
            "xml",
        );
        refused(
            with(json!({"text": {"format": {"type": "json_schema", "name": "x"}}})),
            "text.format.schema",
            "schema",
        );
        refused(
            with(json!({"text": {"format": {"type": "json_schema", "name": "x", "schema": true}}})),
            "text.format.schema",
            "schema",
        );
        refused(
            with(json!({"reasoning": {"effort": "extreme"}})),
            "reasoning.effort",
            "extreme",
        );
        refused(with(json!({"metadata": {"k": 1}})), "metadata", "string");
        assert!(
            translate(with(
                json!({"background": false, "top_logprobs": 0, "conversation": null})
            ))
            .is_ok()
        );
        let e = Responses::parse(b"nope").unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        let e = Responses::parse(b"[]").unwrap_err();
        assert!(e.message.contains("object"));
    }
}
