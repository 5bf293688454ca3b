//! `GET /v1/models` and `GET /v1/models/{id}`: the models the CLI offers (from its
//! `initialize` answer) plus the configured aliases, in the OpenAI shape, or in the Anthropic
//! shape when the request carries an `anthropic-version` header.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::extract::CallerDialect;
use super::state::AppState;
use crate::anthropic::{AnthropicError, wire as anthropic};
use crate::openai::{OpenAiError, wire as openai};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list))
        .route("/v1/models/{id}", get(one))
        .route("/openai/v1/models", get(list))
        .route("/openai/v1/models/{id}", get(one))
}

/// A model as listed: its id and a display name.
struct Listed {
    id: String,
    display_name: String,
}

async fn known(state: &AppState) -> Vec<Listed> {
    let mut models = state.pool.models();
    if models.is_empty() {
        // No worker has answered `initialize` yet: give the warm-up a moment.
        state.pool.wait_warm(1, state.api.ping_interval).await;
        models = state.pool.models();
    }
    let mut listed: Vec<Listed> = Vec::new();
    for m in models {
        if !listed.iter().any(|l| l.id == m.id) {
            let display_name = m
                .display_name
                .trim_end_matches(" (recommended)")
                .to_string();
            listed.push(Listed {
                id: m.id,
                display_name,
            });
        }
    }
    let mut aliases: Vec<(&String, &String)> = state.api.openai.model_aliases.iter().collect();
    aliases.sort();
    for (alias, target) in aliases {
        listed.push(Listed {
            id: alias.clone(),
            display_name: format!("{alias} (alias of {target})"),
        });
    }
    listed
}

fn openai_model(m: &Listed) -> openai::Model {
    openai::Model {
        id: m.id.clone(),
        object: "model",
        created: 0,
        owned_by: "anthropic",
    }
}

fn anthropic_model(m: &Listed) -> anthropic::ModelInfo {
    anthropic::ModelInfo {
        id: m.id.clone(),
        display_name: m.display_name.clone(),
        created_at: "1970-01-01T00:00:00Z",
    }
}

async fn list(State(state): State<AppState>, dialect: CallerDialect) -> Response {
    let models = known(&state).await;
    if dialect == CallerDialect::Anthropic {
        Json(anthropic::ModelList {
            data: models.iter().map(anthropic_model).collect(),
            has_more: false,
            first_id: models.first().map(|m| m.id.clone()),
            last_id: models.last().map(|m| m.id.clone()),
        })
        .into_response()
    } else {
        Json(openai::ModelList {
            object: "list",
            data: models.iter().map(openai_model).collect(),
        })
        .into_response()
    }
}

async fn one(
    State(state): State<AppState>,
    dialect: CallerDialect,
    Path(id): Path<String>,
) -> Response {
    let models = known(&state).await;
    let found = models.iter().find(|m| m.id == id);
    match (found, dialect == CallerDialect::Anthropic) {
        (Some(m), true) => Json(anthropic_model(m)).into_response(),
        (Some(m), false) => Json(openai_model(m)).into_response(),
        (None, true) => AnthropicError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("model: {id}"),
        )
        .into_response(),
        (None, false) => OpenAiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..OpenAiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model `{id}` does not exist"),
            )
        }
        .into_response(),
    }
}
