//! The OpenAI Responses API dialect: `POST /v1/responses` (also under `/openai`), streaming
//! and not, a translator only (`wire`, `translate`, `render`, `dialect`), and the store of
//! responses that `previous_response_id` and the stored-response routes (`http::responses`)
//! read. Errors take the OpenAI shape of `openai::OpenAiError`.

mod dialect;
pub mod render;
pub mod store;
pub mod translate;
pub mod wire;

pub use dialect::{ResponseReply, Responses};
pub use store::{ResponseStore, StoreLimits};

#[cfg(test)]
mod tests;
