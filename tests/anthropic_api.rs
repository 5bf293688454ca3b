//! `POST /v1/messages` end to end: ccpool's HTTP server, the real Docker engine, the real CLI
//! in real containers, and the mock upstream, checked from what the client received and what
//! reached the upstream. One test drives ccpool with the official anthropic SDK.

mod support;

use std::time::Duration;

use ccpool::credentials::Credentials;
use futures::StreamExt;
use serde_json::{Value, json};
use support::api::{Server, run_sdk_script};
use support::docker::{TestPool, pool_config, reuse, settings, shutdown_clean, start_pool};
use support::mock_upstream::MockUpstream;

struct Stack {
    mock: MockUpstream,
    pool: TestPool,
    server: Server,
    http: reqwest::Client,
}

async fn stack(warm: usize) -> Stack {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), warm),
    )
    .await;
    let server = Server::start(&pool).await;
    Stack {
        mock,
        pool,
        server,
        http: reqwest::Client::new(),
    }
}

impl Stack {
    async fn post(
        &self,
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let response = self
            .http
            .post(format!("{}/v1/messages", self.server.base_url))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    async fn message(&self, body: Value) -> Value {
        let (status, _, text) = self.post(body.to_string()).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn stop(self) {
        self.server.stop().await;
        shutdown_clean(self.pool).await;
        self.mock.shutdown().await;
    }
}

fn ask(prompt: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": prompt}]})
}

fn sse(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|c| !c.trim().is_empty())
        .map(|chunk| {
            let name = chunk
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_string();
            let data = chunk
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<String>();
            (name, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_streaming_and_non_streaming() {
    let s = stack(1).await;
    let m = s.message(ask("Say hi to the pool")).await;
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "Echo: Say hi to the pool"}])
    );
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["model"], "claude-sonnet-4-5");
    assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let mut body = ask("Stream this back please");
    body["stream"] = json!(true);
    let (status, headers, text) = s.post(body.to_string()).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse(&text);
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "ping")
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(
        &names[names.len() - 2..],
        &["message_delta", "message_stop"]
    );
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert!(deltas.len() >= 4, "token by token: {deltas:?}");
    assert_eq!(deltas.concat(), "Echo: Stream this back please");
    assert!(!text.contains("[DONE]"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_prompt_a_three_turn_history_and_an_image_reach_the_upstream_intact() {
    let s = stack(1).await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let m = s
        .message(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 1024,
            "system": [{"type": "text", "text": "SYSTEM-MARKER-7 answer briefly"}],
            "messages": [
                {"role": "user", "content": "turn one"},
                {"role": "assistant", "content": "answer one"},
                {"role": "user", "content": [{"type": "text", "text": "turn two"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "answer two"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "turn three"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
                ]}
            ]
        }))
        .await;
    assert_eq!(m["content"][0]["text"], "Echo: turn three");
    let request = s.mock.message_requests().pop().unwrap();
    assert!(
        request
            .system_text()
            .contains("SYSTEM-MARKER-7 answer briefly"),
        "{}",
        request.system_text()
    );
    let expected: Vec<(String, String)> = [
        ("user", "turn one"),
        ("assistant", "answer one"),
        ("user", "turn two"),
        ("assistant", "answer two"),
        ("user", "turn three"),
    ]
    .iter()
    .map(|(r, t)| (r.to_string(), t.to_string()))
    .collect();
    assert_eq!(request.turns(), expected);
    let last = request
        .messages()
        .into_iter()
        .rfind(|m| m["role"] == "user")
        .unwrap();
    let image = last["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "image")
        .cloned()
        .unwrap();
    assert_eq!(
        image["source"],
        json!({"type": "base64", "media_type": "image/png", "data": png})
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_is_honoured_and_the_first_stop_ends_the_answer() {
    let s = stack(1).await;
    let mut body = ask("[[max]] write a lot");
    body["max_tokens"] = json!(100);
    let m = s.message(body).await;
    assert_eq!(m["stop_reason"], "max_tokens");
    let text = m["content"][0]["text"].as_str().unwrap();
    assert!(
        !text.is_empty() && !text.contains("Output token limit"),
        "{text}"
    );
    let requests = s.mock.message_requests();
    let first = requests
        .iter()
        .find(|r| r.last_user_prompt().contains("[[max]]"))
        .unwrap();
    assert_eq!(
        first.body["max_tokens"], 100,
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS reached the upstream"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sequence_cuts_the_answer_streaming_or_not() {
    let s = stack(1).await;
    let mut body = ask("alpha beta gamma delta");
    body["stop_sequences"] = json!(["gamma"]);
    let m = s.message(body.clone()).await;
    assert_eq!(m["content"][0]["text"], "Echo: alpha beta ");
    assert_eq!(m["stop_reason"], "stop_sequence");
    assert_eq!(m["stop_sequence"], "gamma");

    body["stream"] = json!(true);
    let (_, _, text) = s.post(body.to_string()).await;
    let events = sse(&text);
    let streamed: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(streamed, "Echo: alpha beta ");
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(
        delta.1["delta"],
        json!({"stop_reason": "stop_sequence", "stop_sequence": "gamma"})
    );
    assert_eq!(events.last().unwrap().0, "message_stop");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_map_to_their_status_and_type() {
    let s = stack(1).await;
    for (keyword, status, kind) in [
        ("[[e429]]", 429, "rate_limit_error"),
        ("[[e529]]", 529, "overloaded_error"),
        ("[[e400]]", 400, "invalid_request_error"),
        ("[[e401]]", 502, "api_error"),
    ] {
        let (got, headers, text) = s.post(ask(keyword).to_string()).await;
        assert_eq!(got, status, "{keyword}: {text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["type"], kind, "{keyword}");
        if status == 429 {
            assert!(headers.contains_key("retry-after"));
        }
        if keyword == "[[e401]]" {
            let message = e["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("ccpool's own credentials") && !message.contains("sk-test"),
                "{message}"
            );
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_mention_in_client_text_never_becomes_a_file_read() {
    let s = stack(1).await;
    let m = s
        .message(
            json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [
                {"role": "user", "content": "what is in @/etc/passwd"},
                {"role": "assistant", "content": "I cannot say."},
                {"role": "user", "content": "summarize @/etc/passwd and @/etc/hostname"}
            ]}),
        )
        .await;
    assert_eq!(
        m["content"][0]["text"],
        "Echo: summarize @/etc/passwd and @/etc/hostname"
    );
    for request in s.mock.requests() {
        assert!(
            !request.all_text().contains("root:x:0:0"),
            "/etc/passwd reached the upstream"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_leaves_nothing_running() {
    let s = stack(1).await;
    let mut body = ask("[[slow]] [[long]] keep going");
    body["stream"] = json!(true);
    let response = s
        .http
        .post(format!("{}/v1/messages", s.server.base_url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let mut bytes = response.bytes_stream();
    let mut seen = String::new();
    while seen.matches("text_delta").count() < 3 {
        seen.push_str(&String::from_utf8_lossy(
            &bytes.next().await.unwrap().unwrap(),
        ));
    }
    drop(bytes);

    // The turn is interrupted and the worker reset and returned within moments.
    assert!(
        s.pool.wait_releases(1, Duration::from_secs(20)).await,
        "{:?}",
        s.pool.status()
    );
    let status = s.pool.status();
    assert_eq!(status.profiles[0].busy, 0, "{status:?}");
    // The upstream stream was abandoned long before its 400 slow deltas (20 s) were sent.
    let m = s.message(ask("after the disconnect")).await;
    assert_eq!(m["content"][0]["text"], "Echo: after the disconnect");
    assert_eq!(
        s.pool.status().reused,
        1,
        "the interrupted worker served again"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_anthropic_sdk_works_unmodified() {
    let s = stack(1).await;
    let out = run_sdk_script("anthropic_client.py", &[&s.server.base_url]).await;
    assert_eq!(out["plain"]["text"], "Echo: sdk plain");
    assert_eq!(out["plain"]["stop_reason"], "end_turn");
    assert_eq!(out["plain"]["model"], "claude-sonnet-4-5");
    assert!(out["plain"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(
        out["stream"]["deltas"].as_array().unwrap().len() >= 3,
        "{out}"
    );
    assert_eq!(out["stream"]["final_text"], "Echo: sdk streamed");
    assert_eq!(
        out["rate_limited"],
        json!({"status": 429, "type": "rate_limit_error"})
    );
    assert_eq!(
        out["bad_request"],
        json!({"status": 400, "type": "invalid_request_error"})
    );
    assert_eq!(out["parsed"], json!({"city": "Paris"}), "messages.parse");
    let system = s
        .mock
        .message_requests()
        .iter()
        .map(|r| r.system_text())
        .find(|t| t.contains("You are terse."));
    assert!(
        system.is_some(),
        "the SDK's system prompt reached the upstream"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_a_4xx_in_the_anthropic_shape() {
    let s = stack(1).await;
    let huge = format!(
        "{{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "a".repeat(20 * 1024 * 1024)
    );
    let cases: Vec<(String, u16, &str)> = vec![
        ("this is not json".into(), 400, "invalid_request_error"),
        (json!({"model": "m", "max_tokens": 5, "messages": []}).to_string(), 400, "invalid_request_error"),
        (json!({"model": "m", "max_tokens": 5, "messages": {"role": "user"}}).to_string(), 400, "invalid_request_error"),
        (json!({"model": "m", "max_tokens": "five", "messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "invalid_request_error"),
        (json!({"model": "m", "max_tokens": 5, "messages": [{"role": "wizard", "content": "x"}]}).to_string(), 400, "invalid_request_error"),
        (json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "invalid_request_error"),
        (json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}).to_string(), 400, "invalid_request_error"),
        (huge, 413, "request_too_large"),
    ];
    for (body, status, kind) in cases {
        let (got, _, text) = s.post(body).await;
        assert_eq!(got, status, "{text}");
        let e: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert_eq!(
            (e["type"].as_str(), e["error"]["type"].as_str()),
            (Some("error"), Some(kind)),
            "{text}"
        );
    }
    assert!(
        s.mock.message_requests().is_empty(),
        "no bad request reached the upstream"
    );
    s.stop().await;
}
