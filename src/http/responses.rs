//! The Responses API's stored responses over HTTP: `GET` and `DELETE /v1/responses/{id}`, and
//! `GET /v1/responses/{id}/input_items` (also under `/openai`). A response is only found by the
//! owner that created it; another owner's id is a 404 like an unknown one. Creating responses
//! is the generic chat endpoint's (`POST /v1/responses`).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::extract::Owner;
use super::state::AppState;
use crate::openai::OpenAiError;
use crate::responses::store::Stored;
use crate::responses::translate::not_found;
use crate::responses::wire::{Deleted, InputItem, ItemList, ItemListQuery};

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for prefix in ["/v1", "/openai/v1"] {
        router = router
            .route(
                &format!("{prefix}/responses/{{id}}"),
                get(retrieve).delete(delete),
            )
            .route(
                &format!("{prefix}/responses/{{id}}/input_items"),
                get(input_items),
            );
    }
    router
}

/// The caller's stored response `id`, or the 404.
fn find(
    state: &AppState,
    owner: &crate::domain::OwnerKey,
    id: &str,
) -> Result<Arc<Stored>, OpenAiError> {
    state
        .responses
        .get(owner, id)
        .ok_or_else(|| not_found(id, "response_id"))
}

async fn retrieve(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    Ok(Json(&find(&state, &owner, &id)?.response).into_response())
}

async fn delete(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    if !state.responses.delete(&owner, &id) {
        return Err(not_found(&id, "response_id"));
    }
    Ok(Json(Deleted {
        id,
        object: "response.deleted",
        deleted: true,
    })
    .into_response())
}

async fn input_items(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
    query: Result<Query<ItemListQuery>, QueryRejection>,
) -> Result<Response, OpenAiError> {
    let Query(query) = query.map_err(|e| OpenAiError::invalid("", e.body_text()))?;
    let stored = find(&state, &owner, &id)?;
    Ok(Json(page(&stored.context, &query)?).into_response())
}

/// One page of items: `order` (default `desc`), after the item `after`, at most `limit`
/// (1 to 100, default 20).
fn page(items: &[InputItem], query: &ItemListQuery) -> Result<ItemList, OpenAiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(OpenAiError::invalid(
            "limit",
            "limit: must be between 1 and 100",
        ));
    }
    let mut ordered: Vec<&InputItem> = items.iter().collect();
    match query.order.as_deref() {
        None | Some("desc") => ordered.reverse(),
        Some("asc") => {}
        Some(other) => {
            return Err(OpenAiError::invalid(
                "order",
                format!("order: unknown value \"{other}\"; expected asc or desc"),
            ));
        }
    }
    let start = match &query.after {
        Some(after) => {
            ordered
                .iter()
                .position(|i| item_id(i) == Some(after.as_str()))
                .ok_or_else(|| {
                    OpenAiError::invalid("after", format!("after: no item with id '{after}'"))
                })?
                + 1
        }
        None => 0,
    };
    let data: Vec<InputItem> = ordered
        .iter()
        .skip(start)
        .take(limit)
        .map(|i| (*i).clone())
        .collect();
    Ok(ItemList {
        object: "list",
        first_id: data.first().and_then(item_id).map(str::to_string),
        last_id: data.last().and_then(item_id).map(str::to_string),
        has_more: ordered.len() > start + data.len(),
        data,
    })
}

fn item_id(item: &InputItem) -> Option<&str> {
    match item {
        InputItem::Message(m) => m.id.as_deref(),
        InputItem::FunctionCall(f) => f.id.as_deref(),
        InputItem::FunctionCallOutput(f) => f.id.as_deref(),
        InputItem::Reasoning(r) => r.id.as_deref(),
        InputItem::ItemReference { id } => Some(id),
    }
}
