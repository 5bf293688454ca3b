//! The Messages API as a `Dialect`: its request type, its translation, and how a chat is
//! answered (SSE events with a `ping`, or one `message`).

use super::AnthropicError;
use super::translate::{
    self, MessageBuilder, estimate_tokens, parse, stream_event, structured_events,
};
use super::wire::{CountTokensRequest, Message, MessagesRequest, StreamEvent, TokenCount};
use crate::chat::{ChatEnd, ChatItem};
use crate::dialect::{Context, Dialect, PathStyle, Reply, SseEvent, Translated};
use crate::failure::Failure;

/// The Messages API (`POST /v1/messages`).
pub struct Anthropic;

impl Dialect for Anthropic {
    type Request = MessagesRequest;
    type Reply = MessageReply;
    type Error = AnthropicError;

    const ROUTE: &'static str = "/v1/messages";
    const PATHS: PathStyle = PathStyle::Dotted;

    fn to_chat(
        request: MessagesRequest,
        context: &Context<'_>,
    ) -> Result<Translated<MessageReply>, AnthropicError> {
        let model = request.model.clone();
        let stream = request.stream.unwrap_or(false);
        let chat = translate::to_chat(request, context)?;
        Ok(Translated {
            chat,
            stream,
            reply: MessageReply::new(model),
        })
    }

    /// The Anthropic shape names the field in the message.
    fn invalid(_field: &str, message: String) -> AnthropicError {
        AnthropicError::invalid(message)
    }
}

/// One `message` answer: its id, the model the client asked for, and the blocks so far.
pub struct MessageReply {
    id: String,
    model: String,
    message: MessageBuilder,
}

impl MessageReply {
    fn new(model: String) -> Self {
        MessageReply {
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            model,
            message: MessageBuilder::default(),
        }
    }
}

impl Reply for MessageReply {
    type Object = Message;

    /// One event per chat event, a `ping` after `message_start`, and an `error` event when
    /// the request fails after streaming began.
    fn events(&mut self, item: &ChatItem) -> Vec<SseEvent> {
        match item {
            ChatItem::Event(event) => match stream_event(event, &self.id, &self.model) {
                Some(event) => {
                    let mut out = vec![SseEvent::json(Some(event.name()), &event)];
                    if event.name() == "message_start" {
                        out.extend(Self::keep_alive());
                    }
                    out
                }
                None => Vec::new(),
            },
            ChatItem::End(end) => match (&end.failure, &end.structured_output) {
                (Some(failure), _) => {
                    let error = AnthropicError::from(Failure::from_chat(failure));
                    vec![SseEvent::json(Some("error"), &error.body())]
                }
                // A structured answer comes whole, at the end.
                (None, Some(object)) => structured_events(end, object, &self.id, &self.model)
                    .iter()
                    .map(|event| SseEvent::json(Some(event.name()), event))
                    .collect(),
                (None, None) => Vec::new(),
            },
        }
    }

    fn keep_alive() -> Option<SseEvent> {
        Some(SseEvent::json(Some("ping"), &StreamEvent::Ping))
    }

    fn push(&mut self, item: &ChatItem) {
        self.message.push(item);
    }

    fn finish(self, end: &ChatEnd) -> Message {
        self.message.finish(end, &self.id, &self.model)
    }
}

/// `POST /v1/messages/count_tokens`: an estimate of the request's input tokens.
pub fn count_tokens(body: &[u8]) -> Result<TokenCount, AnthropicError> {
    let request: CountTokensRequest = parse(body)?;
    if request.messages.is_empty() {
        return Err(AnthropicError::invalid(
            "messages: at least one message is required",
        ));
    }
    Ok(TokenCount {
        input_tokens: estimate_tokens(request.system.as_ref(), &request.messages),
    })
}
