//! The OpenAI Chat Completions dialect: `POST /v1/chat/completions` (also under `/openai`),
//! streaming and not. Wire types and their translation stay here; handlers are thin.

mod error;
mod handlers;
pub mod translate;
pub mod wire;

pub use error::OpenAiError;
pub use handlers::routes;

#[cfg(test)]
mod tests;
