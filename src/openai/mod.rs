//! The OpenAI Chat Completions dialect: `POST /v1/chat/completions` (also under `/openai`),
//! streaming and not. A translator only, laid out like `anthropic`: `wire`, `translate`,
//! `dialect` (the `Dialect` and its `Reply`), `error` (the OpenAI error shape).

mod dialect;
mod error;
pub mod translate;
pub mod wire;

pub use dialect::{ChatCompletions, CompletionReply};
pub use error::OpenAiError;

#[cfg(test)]
mod tests;
