//! Chat Completions as a `Dialect`: its request type, its translation, and how a chat is
//! answered (`chat.completion.chunk` events ending in `[DONE]`, or one `chat.completion`).

use std::time::{SystemTime, UNIX_EPOCH};

use super::OpenAiError;
use super::translate::{self, ChunkWriter, CompletionBuilder};
use super::wire::{ChatCompletion, ChatCompletionRequest};
use crate::chat::{ChatEnd, ChatItem};
use crate::dialect::{Context, Dialect, Reply, SseEvent, Translated};
use crate::failure::Failure;

/// The Chat Completions API (`POST /v1/chat/completions`).
pub struct ChatCompletions;

impl Dialect for ChatCompletions {
    type Request = ChatCompletionRequest;
    type Reply = CompletionReply;
    type Error = OpenAiError;

    const ROUTE: &'static str = "/v1/chat/completions";

    fn to_chat(
        request: ChatCompletionRequest,
        context: &Context<'_>,
    ) -> Result<Translated<CompletionReply>, OpenAiError> {
        let model = request.model.clone();
        let translated = translate::to_chat(request, context)?;
        let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Translated {
            chat: translated.chat,
            stream: translated.stream,
            reply: CompletionReply {
                chunks: ChunkWriter::new(
                    id.clone(),
                    created,
                    model.clone(),
                    translated.include_usage,
                ),
                completion: CompletionBuilder::default(),
                id,
                created,
                model,
            },
        })
    }

    fn invalid(field: &str, message: String) -> OpenAiError {
        OpenAiError::invalid(field, message)
    }
}

/// One completion answer: its id, `created`, the model the client asked for, and the chunk
/// writer or the completion so far.
pub struct CompletionReply {
    chunks: ChunkWriter,
    completion: CompletionBuilder,
    id: String,
    created: u64,
    model: String,
}

impl Reply for CompletionReply {
    type Object = ChatCompletion;

    /// `data:` chunks, a `data: {"error": …}` when the request fails after streaming began,
    /// and `data: [DONE]` at the end of a successful stream.
    fn events(&mut self, item: &ChatItem) -> Vec<SseEvent> {
        let mut events: Vec<SseEvent> = self
            .chunks
            .write(item)
            .iter()
            .map(|chunk| SseEvent::json(None, chunk))
            .collect();
        if let ChatItem::End(end) = item {
            match &end.failure {
                Some(failure) => events.push(SseEvent::json(
                    None,
                    &OpenAiError::from(Failure::from_chat(failure)).body(),
                )),
                None => events.push(SseEvent::data("[DONE]")),
            }
        }
        events
    }

    fn push(&mut self, item: &ChatItem) {
        self.completion.push(item);
    }

    fn finish(self, end: &ChatEnd) -> ChatCompletion {
        self.completion
            .finish(end, &self.id, self.created, &self.model)
    }
}
