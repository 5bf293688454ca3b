//! `GET /health` (alive), `GET /ready` (Docker reachable, worker image present, a warm worker),
//! `GET /status` (pool per profile, sessions, versions, credentials kind) and `GET /metrics`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
}

async fn ready(State(state): State<AppState>) -> Response {
    let runtime = state.pool.runtime();
    let docker = runtime.version().await.is_ok();
    let image = &state.pool.settings().sandbox.image;
    let image_present = docker && runtime.image_exists(image).await.unwrap_or(false);
    let warm = state.pool.live_warm();
    let credentials = !state.credentials_missing();
    let gateway = state
        .pool
        .settings()
        .relay
        .as_ref()
        .and_then(|r| r.gateway.not_ready_because());
    let ready = docker && image_present && warm > 0 && credentials && gateway.is_none();
    let mut body = json!({
        "ready": ready,
        "checks": {
            "docker": docker, "worker_image": image_present, "warm_workers": warm,
            "credentials": credentials,
            "upstream_credential": gateway.as_deref().unwrap_or("ok"),
        },
    });
    if !credentials {
        body["reason"] = json!(crate::failure::Failure::no_credentials().message);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
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
                "held": p.held, "parked": p.parked, "in_flight": p.in_flight,
                "target": {"warm": p.target, "why": p.target_reason},
                "failed_starts": p.failed_starts,
            })
        })
        .collect();
    let docker = state.pool.runtime().version().await.ok();
    Json(json!({
        "workers": s.workers,
        "max_workers": s.max_workers,
        "started": s.started,
        "start_failures": s.start_failures,
        "retired": s.retired,
        "reused": s.reused,
        "conversations": {"continued": s.continued, "replayed": s.replayed},
        "profiles": profiles,
        "sessions": state.sessions.count(),
        "prewarmed_sessions": s.prewarmed_sessions,
        "credentials": state.pool.settings().credentials.kind(),
        "cli_version": state.pool.cli_version(),
        "docker_version": docker,
        "docker_endpoint": state.api.docker_endpoint,
        "network": state.pool.settings().sandbox.network,
        "gateway": state.pool.settings().relay.as_ref().map(|r| r.gateway.status_json()),
    }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use crate::credentials::Secret;
    use crate::fake::{TestApp, harness, harness_with};
    use crate::http::{ApiSettings, app};

    async fn send(
        h: &TestApp,
        request: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = app(h.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&bytes).to_string())
    }

    fn ask() -> String {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "[[fixture:text_partial]]"}]}).to_string()
    }

    #[tokio::test]
    async fn api_keys_are_checked_on_both_header_styles_and_refusals_speak_the_callers_dialect() {
        let h = harness_with(ApiSettings {
            api_keys: vec![Secret::new("key-one"), Secret::new("key-two")],
            ..ApiSettings::default()
        })
        .await;
        let post = |path: &str, header: Option<(&str, &str)>| {
            let mut r = Request::post(path).header("content-type", "application/json");
            if let Some((k, v)) = header {
                r = r.header(k, v);
            }
            r.body(Body::from(ask())).unwrap()
        };
        let (status, _, body) = send(&h, post("/v1/messages", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (e["type"].as_str(), e["error"]["type"].as_str()),
            (Some("error"), Some("authentication_error"))
        );
        let (status, _, body) = send(
            &h,
            post(
                "/v1/chat/completions",
                Some(("authorization", "Bearer wrong")),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            e["error"]["code"], "invalid_api_key",
            "OpenAI shape: {body}"
        );
        let (status, _, _) = send(&h, post("/v1/messages", Some(("x-api-key", "key-two")))).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = send(
            &h,
            post("/v1/messages", Some(("authorization", "Bearer key-one"))),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = send(&h, Request::get("/health").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "health needs no key");
        let (status, _, _) = send(&h, Request::get("/status").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "status does");
        h.stop().await;
    }

    #[tokio::test]
    async fn cors_allows_localhost_origins_by_default_and_only_those() {
        let h = harness().await;
        let preflight = |origin: &str| {
            Request::builder()
                .method("OPTIONS")
                .uri("/v1/messages")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type,x-api-key")
                .body(Body::empty())
                .unwrap()
        };
        let (status, headers, _) = send(&h, preflight("http://localhost:5173")).await;
        assert!(status.is_success(), "{status}");
        assert_eq!(
            headers["access-control-allow-origin"],
            "http://localhost:5173"
        );
        let (_, headers, _) = send(&h, preflight("https://evil.example")).await;
        assert!(headers.get("access-control-allow-origin").is_none());
        h.stop().await;

        let h = harness_with(ApiSettings {
            cors_origins: vec!["https://app.example".into()],
            ..ApiSettings::default()
        })
        .await;
        let (_, headers, _) = send(&h, preflight("https://app.example")).await;
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example"
        );
        let (_, headers, _) = send(&h, preflight("http://localhost:3000")).await;
        assert!(headers.get("access-control-allow-origin").is_none());
        h.stop().await;
    }

    #[tokio::test]
    async fn request_ids_are_echoed_or_generated() {
        let h = harness().await;
        let (_, headers, _) = send(
            &h,
            Request::get("/health")
                .header("x-request-id", "client-chosen-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(headers["x-request-id"], "client-chosen-42");
        let (_, headers, _) = send(&h, Request::get("/health").body(Body::empty()).unwrap()).await;
        assert!(
            headers["x-request-id"]
                .to_str()
                .unwrap()
                .starts_with("req_")
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn ready_status_and_metrics_report_the_pool() {
        let h = harness().await;
        let (status, _, body) = send(&h, Request::get("/ready").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ready: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ready["checks"]["docker"], true);
        for _ in 0..3 {
            let (status, _, _) = send(
                &h,
                Request::post("/v1/messages")
                    .header("content-type", "application/json")
                    .body(Body::from(ask()))
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        let (_, _, body) = send(
            &h,
            Request::post("/v1/messages")
                .header("content-type", "application/json")
                .body(Body::from("nope"))
                .unwrap(),
        )
        .await;
        assert!(body.contains("invalid_request_error"));
        let (_, _, status_body) =
            send(&h, Request::get("/status").body(Body::empty()).unwrap()).await;
        let status: Value = serde_json::from_str(&status_body).unwrap();
        assert_eq!(status["docker_version"], "fake");
        assert!(status["started"].as_u64().unwrap() >= 1);
        let (status, headers, metrics) =
            send(&h, Request::get("/metrics").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        assert!(
            metrics.contains(r#"ccpool_http_requests_total{route="/v1/messages",status="200"} 3"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"ccpool_http_requests_total{route="/v1/messages",status="400"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"ccpool_first_delta_seconds_count{route="/v1/messages"} 3"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"ccpool_tokens_total{kind="output"} 27"#),
            "{metrics}"
        );
        assert!(metrics.contains("ccpool_pool_warm"), "{metrics}");
        assert!(metrics.contains("ccpool_worker_starts_total"), "{metrics}");
        assert!(metrics.contains("ccpool_sessions 0"), "{metrics}");
        h.stop().await;
    }

    #[tokio::test]
    async fn unknown_routes_get_a_404_in_the_callers_shape() {
        let h = harness().await;
        let (status, _, body) =
            send(&h, Request::get("/v2/nothing").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let e: Value = serde_json::from_str(&body).unwrap();
        assert!(e["error"]["message"].is_string());
        let (_, _, body) = send(
            &h,
            Request::get("/v2/nothing")
                .header("anthropic-version", "2023-06-01")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["type"], "not_found_error");
        h.stop().await;
    }
}
