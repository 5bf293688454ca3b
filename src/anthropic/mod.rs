//! The Anthropic Messages API dialect: `POST /v1/messages` (streaming and not) and
//! `POST /v1/messages/count_tokens`. Wire types and their translation stay here; the handlers
//! are thin: parse, translate, call `chat::start`, render.

mod error;
mod handlers;
pub mod translate;
pub mod wire;

pub use error::AnthropicError;
pub use handlers::routes;

#[cfg(test)]
mod tests;
