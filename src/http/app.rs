//! `fn app(state) -> Router`: the only place that mounts routes. A dialect is one line here.

use axum::Router;
use axum::routing::post;

use super::endpoint::{chat, count_tokens};
use super::middleware::{authenticate, cors_layer, method_not_allowed, not_found, request_context};
use super::state::AppState;
use crate::anthropic::Anthropic;
use crate::openai::ChatCompletions;
use crate::responses::Responses;

/// The service: the dialects (also nested under `/sessions/{session}`), the session API, the
/// models, health, status and metrics, behind the request context, authentication and CORS.
pub fn app(state: AppState) -> Router {
    let chat_routes = || {
        Router::new()
            .route("/v1/messages", post(chat::<Anthropic>))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/v1/chat/completions", post(chat::<ChatCompletions>))
            .route("/openai/v1/chat/completions", post(chat::<ChatCompletions>))
            .route("/v1/responses", post(chat::<Responses>))
            .route("/openai/v1/responses", post(chat::<Responses>))
    };
    let cors = cors_layer(&state.api.cors_origins);
    Router::new()
        .merge(chat_routes())
        .nest("/sessions/{session}", chat_routes())
        .merge(super::sessions::routes())
        .merge(super::responses::routes())
        .merge(super::models::routes())
        .merge(super::health::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .layer(cors)
        .with_state(state)
}
