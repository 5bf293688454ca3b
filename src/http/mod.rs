//! The HTTP surface. `app` is the only place that mounts routes; `endpoint` is the one chat
//! request flow, generic over the `Dialect`; `extract` holds the extractors every route shares
//! (session target, owner, request id, limited body, the caller's dialect); `middleware` the
//! layers (request context, client authentication, CORS); `guard` what keeps web pages out
//! (Origin, content type, Host); `state` what handlers share. The
//! route modules (`health`, `models`, `sessions`, `responses`) and the dialects never import `app`.

mod app;
mod endpoint;
mod extract;
mod guard;
mod health;
mod middleware;
mod models;
mod responses;
mod sessions;
mod state;

pub use app::app;
pub use extract::read_body;
pub use state::{ApiSettings, AppState};
