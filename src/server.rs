//! The HTTP surface: `fn app(state) -> Router`. For now health and pool status; the API
//! dialects mount here.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::pool::WarmPool;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: WarmPool,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/status", get(status))
        .with_state(state)
}

async fn status(State(state): State<AppState>) -> Json<Value> {
    let s = state.pool.status();
    let profiles: Vec<Value> = s
        .profiles
        .iter()
        .map(|p| {
            json!({
                "profile": p.fingerprint, "default": p.is_default, "warm": p.warm,
                "starting": p.starting, "waiting": p.waiting, "idle": p.idle, "busy": p.busy,
            })
        })
        .collect();
    Json(json!({
        "workers": s.workers,
        "max_workers": s.max_workers,
        "started": s.started,
        "start_failures": s.start_failures,
        "retired": s.retired,
        "reused": s.reused,
        "credentials": state.pool.settings().credentials.kind(),
        "profiles": profiles,
    }))
}
