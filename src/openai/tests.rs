//! Router tests of the OpenAI dialect over the fake runtime, whose CLI replays the recorded
//! output of the real one.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::fake::harness;

fn ask(prompt: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]})
}

/// The `data:` payloads of an SSE body.
fn data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|chunk| {
            chunk
                .lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        })
        .map(|d| d.trim().to_string())
        .collect()
}

#[tokio::test]
async fn a_completion_object_with_the_requested_model() {
    let h = harness().await;
    let (status, _, body) = h
        .post(
            "/v1/chat/completions",
            ask("[[fixture:text_partial]]").to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let c: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["object"], "chat.completion");
    assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(c["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(c["model"], "gpt-4o", "the name the client asked for");
    assert_eq!(
        c["choices"][0]["message"],
        json!({"role": "assistant", "content": "Echo: Say hello", "refusal": null})
    );
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(c["usage"]["prompt_tokens"], 12);
    assert_eq!(c["usage"]["completion_tokens"], 9);
    assert_eq!(c["usage"]["total_tokens"], 21);
    assert!(
        h.launch_models().iter().any(|m| m == "claude-sonnet-4-5"),
        "the alias reached the CLI as a Claude model: {:?}",
        h.launch_models()
    );
    assert!(
        !h.stdin()
            .iter()
            .any(|l| l["request"]["subtype"] == "set_model")
    );
    h.stop().await;
}

#[tokio::test]
async fn chunks_stream_token_by_token_and_end_with_done() {
    let h = harness().await;
    let mut body = ask("[[fixture:text_partial]]");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, _, text) = h
        .post("/openai/v1/chat/completions", body.to_string())
        .await;
    assert_eq!(status, StatusCode::OK);
    let payloads = data(&text);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let ids: std::collections::HashSet<&str> =
        chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one id for the whole stream");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["created"] == chunks[0]["created"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(content, vec!["Echo: ", "Say ", "hello"]);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 9);
    h.stop().await;
}

#[tokio::test]
async fn max_tokens_finishes_with_length() {
    let h = harness().await;
    let mut body = ask("[[fixture:max_tokens_partial]]");
    body["max_tokens"] = json!(50);
    let (status, _, text) = h.post("/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let c: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    let cli = h
        .fake
        .execs()
        .into_iter()
        .rev()
        .find(|c| c.iter().any(|a| a == "stream-json"))
        .unwrap();
    assert!(!cli.iter().any(|a| a == "--json-schema"));
    h.stop().await;
}

#[tokio::test]
async fn json_schema_returns_the_validated_object_as_content() {
    let h = harness().await;
    let mut body = ask("[[fixture:json_schema_partial]]");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}}});
    let (status, _, text) = h.post("/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let c: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(c["choices"][0]["message"]["content"], r#"{"answer":42}"#);
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    let cli = h
        .fake
        .execs()
        .into_iter()
        .rev()
        .find(|c| c.iter().any(|a| a == "--json-schema"))
        .expect("--json-schema at launch");
    let schema = &cli[cli.iter().position(|a| a == "--json-schema").unwrap() + 1];
    assert!(schema.contains("\"answer\""));
    h.stop().await;
}

#[tokio::test]
async fn upstream_errors_keep_their_meaning_in_the_openai_shape() {
    let h = harness().await;
    for (fixture, status) in [
        ("upstream_error_429", 429),
        ("upstream_error_529", 503),
        ("upstream_error_400", 400),
        ("upstream_error_401", 502),
    ] {
        let (got, headers, text) = h
            .post(
                "/v1/chat/completions",
                ask(&format!("[[fixture:{fixture}]]")).to_string(),
            )
            .await;
        assert_eq!(got.as_u16(), status, "{fixture}: {text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(e["error"].get("param").is_some() && e["error"].get("code").is_some());
        if status == 429 {
            assert!(headers.contains_key("retry-after"));
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn a_cut_upstream_stream_is_an_error_chunk_never_a_stop() {
    let h = harness().await;
    for fixture in ["upstream_stream_cut", "upstream_stream_cut_no_fallback"] {
        let body = ask(&format!("[[fixture:{fixture}]]"));
        let (status, _, text) = h.post("/v1/chat/completions", body.to_string()).await;
        assert_eq!(status.as_u16(), 502, "{text}");
        let mut body = body;
        body["stream"] = json!(true);
        let (status, _, text) = h.post("/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let chunks = data(&text);
        let last: Value = serde_json::from_str(chunks.last().unwrap()).unwrap();
        assert!(last.get("error").is_some(), "{text}");
        assert!(!chunks.iter().any(|c| c == "[DONE]"), "{text}");
        assert!(!text.contains("\"finish_reason\":\"stop\""), "{text}");
    }
    h.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_in_the_openai_shape() {
    let h = harness().await;
    let big = format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        ("not json".into(), 400, None),
        (
            json!({"model": "m", "messages": "hi"}).to_string(),
            400,
            Some("messages"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "oracle", "content": "x"}]}).to_string(),
            400,
            Some("messages[0].role"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": ""}]}).to_string(),
            400,
            Some("messages[0].content"),
        ),
        (
            json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}).to_string(),
            400,
            Some("model"),
        ),
        (
            json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]})
                .to_string(),
            400,
            Some("n"),
        ),
        (big, 413, None),
    ];
    for (body, status, param) in cases {
        let (got, _, text) = h.post("/v1/chat/completions", Body::from(body)).await;
        assert_eq!(got.as_u16(), status, "{text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert!(e["error"]["message"].is_string(), "{text}");
        if let Some(param) = param {
            assert_eq!(e["error"]["param"], param, "{text}");
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn models_are_listed_in_both_shapes() {
    let h = harness().await;
    let get = |path: &'static str, anthropic: bool| {
        let app = crate::http::app(h.state.clone());
        async move {
            use tower::ServiceExt;
            let mut request = axum::http::Request::get(path);
            if anthropic {
                request = request.header("anthropic-version", "2023-06-01");
            }
            let response = app
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, list) = get("/v1/models", false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["claude-fake-1", "claude-other-2", "gpt-4o"],
        "from the CLI's initialize answer, plus aliases"
    );
    assert_eq!(
        list["data"][0],
        serde_json::json!({"id": "claude-fake-1", "object": "model", "created": 0, "owned_by": "anthropic"})
    );
    let (_, list) = get("/v1/models", true).await;
    assert_eq!(
        list["data"][0],
        serde_json::json!({"type": "model", "id": "claude-fake-1", "display_name": "Default", "created_at": "1970-01-01T00:00:00Z"})
    );
    assert_eq!(list["has_more"], false);
    assert_eq!(
        (list["first_id"].as_str(), list["last_id"].as_str()),
        (Some("claude-fake-1"), Some("gpt-4o"))
    );
    let (status, one) = get("/v1/models/claude-other-2", false).await;
    assert_eq!(
        (status, one["id"].as_str()),
        (StatusCode::OK, Some("claude-other-2"))
    );
    let (status, missing) = get("/v1/models/nope", false).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "model_not_found");
    let (status, missing) = get("/v1/models/nope", true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["type"], "not_found_error");
    let _ = Duration::ZERO;
    h.stop().await;
}

#[tokio::test]
async fn remote_images_are_fetched_only_when_enabled() {
    use crate::http::ApiSettings;
    let png: Vec<u8> = b"\x89PNG\r\n\x1a\nfake-image-bytes".to_vec();
    let served = png.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let images = axum::Router::new()
        .route(
            "/cat.png",
            axum::routing::get(
                move || async move { ([("content-type", "image/png")], served.clone()) },
            ),
        )
        .route(
            "/page.html",
            axum::routing::get(|| async { ([("content-type", "text/html")], "<html></html>") }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, images).await.unwrap() });
    let body = |path: &str| {
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "[[fixture:text_partial]]"},
            {"type": "image_url", "image_url": {"url": format!("http://{addr}{path}")}}
        ]}]})
        .to_string()
    };

    let off = harness().await;
    let (status, _, text) = off.post("/v1/chat/completions", body("/cat.png")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("--fetch-remote-images"));
    off.stop().await;

    let fetcher = crate::images::ImageFetcher::new(1024, Duration::from_secs(5));
    let on = crate::fake::harness_with(ApiSettings {
        image_fetcher: Some(fetcher),
        ..ApiSettings::default()
    })
    .await;
    let (status, _, text) = on.post("/v1/chat/completions", body("/cat.png")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let user = on
        .stdin()
        .into_iter()
        .rfind(|l| l["type"] == "user" && l["client_composed"] == true)
        .unwrap();
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(&png);
    assert_eq!(
        user["message"]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": expected})
    );
    let (status, _, text) = on.post("/v1/chat/completions", body("/page.html")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not an image: {text}");
    let (status, _, _) = on.post("/v1/chat/completions", body("/missing.png")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    on.stop().await;
    server.abort();
}
