//! The Anthropic Messages API dialect: `POST /v1/messages` (streaming and not) and
//! `POST /v1/messages/count_tokens`. A translator only: `wire` (request types), `translate`
//! (request → `ChatRequest`, chat items → events or a `message`), `dialect` (the `Dialect`
//! and its `Reply`), `error` (the Anthropic error shape). The request flow is
//! `http::endpoint`'s.

mod dialect;
mod error;
pub mod translate;
pub mod wire;

pub use dialect::{Anthropic, MessageReply, count_tokens};
pub use error::AnthropicError;

#[cfg(test)]
mod tests;
