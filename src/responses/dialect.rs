//! The Responses API as a `Dialect`: its request type, its translation, and how a chat is
//! answered (named `response.*` events, or one `response` object). The reply keeps the
//! finished response in the store when the request asked for it (`store`, default true).

use super::render::{ResponseWriter, now};
use super::store::ResponseStore;
use super::translate::{self, new_id};
use super::wire::{CreateResponse, InputItem, Response};
use crate::chat::{ChatEnd, ChatItem};
use crate::dialect::{Context, Dialect, Reply, SseEvent, Translated};
use crate::domain::OwnerKey;
use crate::openai::OpenAiError;

/// The Responses API (`POST /v1/responses`).
pub struct Responses;

impl Dialect for Responses {
    type Request = CreateResponse;
    type Reply = ResponseReply;
    type Error = OpenAiError;

    const ROUTE: &'static str = "/v1/responses";

    fn to_chat(
        request: CreateResponse,
        context: &Context<'_>,
    ) -> Result<Translated<ResponseReply>, OpenAiError> {
        let translated = translate::to_chat(request, context)?;
        let writer = ResponseWriter::new(new_id("resp"), now(), &translated.echo);
        let keep = translated.echo.store.then(|| Keep {
            store: context.responses.clone(),
            owner: context.owner.clone(),
            context: translated.context,
        });
        Ok(Translated {
            chat: translated.chat,
            stream: translated.stream,
            reply: ResponseReply { writer, keep },
        })
    }

    fn invalid(field: &str, message: String) -> OpenAiError {
        OpenAiError::invalid(field, message)
    }
}

/// One response being answered, and where it is kept when it ends.
pub struct ResponseReply {
    writer: ResponseWriter,
    keep: Option<Keep>,
}

/// Where a finished response is kept, with the conversation it answered.
struct Keep {
    store: ResponseStore,
    owner: OwnerKey,
    context: Vec<InputItem>,
}

impl ResponseReply {
    fn keep(&mut self) {
        if let Some(keep) = self.keep.take() {
            let response = self.writer.response();
            if !keep.store.put(keep.owner, response.clone(), keep.context) {
                tracing::warn!(
                    response = %response.id,
                    "a response larger than the store's byte limit was not kept"
                );
            }
        }
    }
}

impl Reply for ResponseReply {
    type Object = Response;

    /// The `response.*` events of one item, named by their type. A failure after the start
    /// ends the stream with `response.failed`, which carries the error.
    fn events(&mut self, item: &ChatItem) -> Vec<SseEvent> {
        let events = self
            .writer
            .push(item)
            .iter()
            .map(|event| SseEvent::json(Some(event.name()), event))
            .collect();
        if let ChatItem::End(_) = item {
            self.keep();
        }
        events
    }

    fn push(&mut self, item: &ChatItem) {
        self.writer.push(item);
    }

    fn finish(mut self, end: &ChatEnd) -> Response {
        self.writer.push(&ChatItem::End(end.clone()));
        self.keep();
        self.writer.into_response()
    }
}
