//! Router tests: requests through `app()` on a pool over the fake runtime, whose CLI replays
//! the recorded output of the real one. Checks both directions: what the CLI is given (argv,
//! stdin lines, transcript) and what the client gets back.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::fake::harness;

fn request(prompt: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": prompt}]})
}

/// (event name, data) pairs of an SSE body.
fn sse(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|chunk| !chunk.trim().is_empty())
        .map(|chunk| {
            let mut name = String::new();
            let mut data = String::new();
            for line in chunk.lines() {
                if let Some(n) = line
                    .strip_prefix("event: ")
                    .or_else(|| line.strip_prefix("event:"))
                {
                    name = n.trim().to_string();
                } else if let Some(d) = line
                    .strip_prefix("data: ")
                    .or_else(|| line.strip_prefix("data:"))
                {
                    data.push_str(d);
                }
            }
            (name, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}

#[tokio::test]
async fn a_non_streaming_request_answers_a_message_object() {
    let h = harness().await;
    let (status, headers, body) = h.messages(request("[[fixture:text_partial]]")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers.get("request-id").is_some());
    let m: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["model"], "claude-sonnet-4-5");
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "Echo: Say hello"}])
    );
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["stop_sequence"], Value::Null);
    assert_eq!(m["usage"]["input_tokens"], 12);
    assert_eq!(m["usage"]["output_tokens"], 9);

    // What the CLI was given: the model at launch (never switched), then the prompt as a
    // client-composed user line.
    assert!(
        h.launch_models().iter().any(|m| m == "claude-sonnet-4-5"),
        "{:?}",
        h.launch_models()
    );
    let stdin = h.stdin();
    assert!(!stdin.iter().any(|l| l["request"]["subtype"] == "set_model"));
    let user = stdin
        .iter()
        .find(|l| l["type"] == "user" && l["client_composed"] == true)
        .expect("user line");
    assert_eq!(
        user["message"]["content"],
        json!([{"type": "text", "text": "[[fixture:text_partial]]"}])
    );
    h.stop().await;
}

#[tokio::test]
async fn a_request_naming_the_clis_default_model_is_served_by_the_default_profile() {
    let h = harness().await;
    let starts = h.fake.starts();
    // The fake CLI resolves its `default` to claude-fake-1.
    let mut body = request("hello");
    body["model"] = json!("claude-fake-1");
    // The CLI's own output limit: no launch flag, so nothing but the model could differ.
    body["max_tokens"] = json!(32000);
    let (status, _, body) = h.messages(body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let m: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["model"], "claude-fake-1", "the model asked for is named");
    let pool = h.pool.status();
    assert_eq!(pool.profiles.len(), 1, "no other profile: {pool:?}");
    assert!(h.launch_models().is_empty(), "{:?}", h.launch_models());
    let stdin = h.stdin();
    assert!(!stdin.iter().any(|l| l["request"]["subtype"] == "set_model"));
    // It took the warm worker: any start since is the filler's top-up, for the default.
    assert!(h.fake.starts() <= starts + 1);
    h.stop().await;
}

#[tokio::test]
async fn a_streaming_request_relays_the_real_event_sequence() {
    let h = harness().await;
    let mut body = request("[[fixture:text_partial]]");
    body["stream"] = json!(true);
    let (status, headers, text) = h.messages(body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("content-type").unwrap(), "text/event-stream");
    let events = sse(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        assert_eq!(
            data["type"],
            name.as_str(),
            "the data's type matches the event name"
        );
    }
    assert_eq!(events[0].1["message"]["model"], "claude-sonnet-4-5");
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Echo: Say hello");
    assert!(
        events
            .iter()
            .all(|(_, d)| d["index"].is_null() || d["index"] == 0)
    );
    assert_eq!(events[7].1["delta"]["stop_reason"], "end_turn");
    assert!(!text.contains("[DONE]"));
    h.stop().await;
}

#[tokio::test]
async fn max_tokens_stops_at_the_first_stop_and_interrupts_the_cli() {
    let h = harness().await;
    let mut body = request("[[fixture:max_tokens_partial]]");
    body["stream"] = json!(true);
    let (status, _, text) = h.messages(body).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse(&text);
    assert_eq!(
        events.iter().filter(|(n, _)| n == "message_start").count(),
        1
    );
    assert_eq!(
        events.iter().filter(|(n, _)| n == "message_stop").count(),
        1
    );
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "max_tokens");
    // The worker reads stdin in order, so once its reset is done the interrupt was received.
    assert!(h.pool.wait_releases(1, Duration::from_secs(5)).await);
    assert!(
        h.stdin()
            .iter()
            .any(|l| l["request"]["subtype"] == "interrupt"),
        "the continuation is interrupted"
    );
    h.stop().await;
}

#[tokio::test]
async fn stop_sequences_cut_the_text() {
    let h = harness().await;
    let mut body = request("[[fixture:text_partial]]");
    body["stop_sequences"] = json!(["hello"]);
    let (status, _, text) = h.messages(body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let m: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["content"][0]["text"], "Echo: Say ");
    assert_eq!(m["stop_reason"], "stop_sequence");
    assert_eq!(m["stop_sequence"], "hello");
    h.stop().await;
}

#[tokio::test]
async fn upstream_errors_map_to_their_status_before_streaming() {
    let h = harness().await;
    for (fixture, status, kind) in [
        ("upstream_error_429", 429, "rate_limit_error"),
        ("upstream_error_529", 529, "overloaded_error"),
        ("upstream_error_400", 400, "invalid_request_error"),
        ("upstream_error_401", 502, "api_error"),
    ] {
        for stream in [false, true] {
            let mut body = request(&format!("[[fixture:{fixture}]]"));
            body["stream"] = json!(stream);
            let (got, headers, text) = h.messages(body).await;
            assert_eq!(got.as_u16(), status, "{fixture} stream={stream}: {text}");
            let e: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(e["type"], "error");
            assert_eq!(e["error"]["type"], kind, "{fixture}");
            if status == 429 {
                assert!(headers.get("retry-after").is_some());
            }
            if fixture == "upstream_error_401" {
                assert!(
                    e["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("ccpool's own credentials")
                );
            }
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn output_config_format_returns_the_validated_object_as_the_text() {
    let h = harness().await;
    for stream in [false, true] {
        let mut body = request("[[fixture:json_schema_partial]]");
        body["output_config"] = json!({"format": {"type": "json_schema", "schema":
            {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}}});
        body["stream"] = json!(stream);
        let (status, _, text) = h.messages(body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        if stream {
            let events = sse(&text);
            let names: Vec<&str> = events
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| *n != "ping")
                .collect();
            assert_eq!(
                names,
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop"
                ]
            );
            let delta = events
                .iter()
                .find(|(n, _)| n == "content_block_delta")
                .unwrap();
            assert_eq!(delta.1["delta"]["text"], r#"{"answer":42}"#);
        } else {
            let m: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                m["content"],
                json!([{"type": "text", "text": r#"{"answer":42}"#}])
            );
            assert_eq!(m["stop_reason"], "end_turn");
        }
    }
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
async fn a_cut_upstream_stream_is_an_error_never_a_normal_end() {
    // Recorded: the CLI closes the cut message itself and calls the turn a success.
    let h = harness().await;
    for fixture in ["upstream_stream_cut", "upstream_stream_cut_no_fallback"] {
        let prompt = format!("[[fixture:{fixture}]]");
        let (status, _, text) = h.messages(request(&prompt)).await;
        assert_eq!(status.as_u16(), 502, "{text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["error"]["type"], "api_error", "{text}");

        let mut body = request(&prompt);
        body["stream"] = json!(true);
        let (status, _, text) = h.messages(body).await;
        assert_eq!(status, StatusCode::OK, "the answer had begun: {text}");
        let events = sse(&text);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
        assert_eq!(names.last(), Some(&"error"), "{names:?}");
        assert!(
            !names.contains(&"message_stop") && !names.contains(&"message_delta"),
            "{names:?}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn the_system_prompt_and_max_tokens_are_launch_flags_and_history_is_replayed() {
    let h = harness().await;
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 77, "system": "Answer in French.",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "premier"},
            {"role": "user", "content": [
                {"type": "text", "text": "[[fixture:text_partial]]"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]}
        ]
    });
    let (status, _, text) = h.messages(body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let cli_execs: Vec<Vec<String>> = h
        .fake
        .execs()
        .into_iter()
        .filter(|c| c.iter().any(|a| a == "stream-json"))
        .collect();
    let last = cli_execs.last().expect("a CLI exec");
    let after = |flag: &str| {
        last.iter()
            .position(|a| a == flag)
            .map(|i| last[i + 1].clone())
    };
    assert_eq!(
        after("--system-prompt").as_deref(),
        Some("Answer in French.")
    );
    assert!(
        after("--resume").is_some(),
        "a history is replayed by resuming a transcript"
    );
    let transcript = h
        .fake
        .written()
        .into_iter()
        .find(|w| w.contains("premier"))
        .expect("transcript");
    let lines: Vec<Value> = transcript
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["type"].as_str(), lines[1]["type"].as_str()),
        (Some("user"), Some("assistant"))
    );
    let user = h
        .stdin()
        .into_iter()
        .rfind(|l| l["type"] == "user" && l["client_composed"] == true)
        .unwrap();
    assert_eq!(
        user["message"]["content"][1]["source"]["data"],
        "iVBORw0KGgo="
    );
    assert_eq!(
        h.pool.status().profiles.len(),
        2,
        "a profile of its own for the system prompt"
    );
    h.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_in_the_anthropic_shape() {
    let h = harness().await;
    let big = format!(
        "{{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(Body, u16, &str)> = vec![
        (Body::from("{not json"), 400, "invalid_request_error"),
        (Body::from("[]"), 400, "invalid_request_error"),
        (Body::from(json!({"model": "m", "max_tokens": 5, "messages": []}).to_string()), 400, "invalid_request_error"),
        (Body::from(json!({"model": "m", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}).to_string()), 400, "invalid_request_error"),
        (Body::from(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}).to_string()), 400, "invalid_request_error"),
        (Body::from(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"name": "t"}]}).to_string()), 400, "invalid_request_error"),
        (Body::from(big), 413, "request_too_large"),
    ];
    for (body, status, kind) in cases {
        let (got, _, text) = h.post("/v1/messages", body).await;
        assert_eq!(got.as_u16(), status, "{text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["type"], "error", "{text}");
        assert_eq!(e["error"]["type"], kind, "{text}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty());
    }
    h.stop().await;
}

#[tokio::test]
async fn count_tokens_answers_an_estimate() {
    let h = harness().await;
    let (status, _, text) = h
        .post(
            "/v1/messages/count_tokens",
            json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}]})
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() >= 1);
    let (status, _, _) = h.post("/v1/messages/count_tokens", "nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    h.stop().await;
}
