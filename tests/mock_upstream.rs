//! Self-test of the mock Anthropic upstream in tests/support/mock_upstream.rs.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::mock_upstream::{MockUpstream, parse_sse, sse_text};

fn user_body(model: &str, stream: Option<bool>, content: Value) -> Value {
    let mut body = json!({
        "model": model,
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are a test."}, {"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": content}],
    });
    if let Some(s) = stream {
        body["stream"] = json!(s);
    }
    body
}

fn prompt_body(prompt: &str, stream: Option<bool>) -> Value {
    user_body(
        "claude-sonnet-4-5",
        stream,
        json!([
            {"type": "text", "text": "<system-reminder>\nsome reminder\n</system-reminder>"},
            {"type": "text", "text": prompt}
        ]),
    )
}

async fn post(mock: &MockUpstream, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages?beta=true", mock.base_url()))
        .header("x-api-key", "sk-test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("request to mock upstream")
}

/// Posts a streaming request and returns the parsed SSE events.
async fn stream_events(mock: &MockUpstream, body: &Value) -> Vec<(String, Value)> {
    let resp = post(mock, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let text = resp.text().await.expect("read SSE body");
    assert!(text.ends_with("\n\n"), "SSE body not terminated: {text:?}");
    parse_sse(&text)
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn default_echo_streams_anthropic_events_in_order() {
    let mock = MockUpstream::start().await;
    let events = stream_events(&mock, &prompt_body("Say hello", Some(true))).await;
    assert_eq!(
        names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], json!(name), "data.type of {name}");
    }
    let start = &events[0].1["message"];
    assert_eq!(start["model"], "claude-sonnet-4-5");
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["content"], json!([]));
    assert!(start["id"].as_str().unwrap().starts_with("msg_mock_"));
    assert!(start["usage"]["input_tokens"].as_u64().unwrap() >= 1);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(
        events[2].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let deltas: Vec<&str> = events[3..6]
        .iter()
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["Echo: ", "Say ", "hello"]);
    assert_eq!(sse_text(&events), "Echo: Say hello");
    assert_eq!(
        events[7].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 3}})
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn requests_are_recorded_with_headers_and_body() {
    let mock = MockUpstream::start().await;
    let body = prompt_body("Say hello", Some(true));
    let _ = stream_events(&mock, &body).await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/v1/messages/count_tokens", mock.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let n = resp.json::<Value>().await.unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    assert!(n >= 10, "count_tokens too small: {n}");
    let resp = client
        .get(format!("{}/v1/nope?x=1", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().contains_key("request-id"));
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "not_found_error"
    );

    let all = mock.requests();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].path, "/v1/messages/count_tokens");
    assert_eq!(all[2].method, "GET");
    assert_eq!(all[2].path, "/v1/nope?x=1");
    assert_eq!(all[2].body, Value::Null);

    let msgs = mock.message_requests();
    assert_eq!(msgs.len(), 1);
    let r = &msgs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/messages?beta=true");
    assert_eq!(r.header("x-api-key"), Some("sk-test"));
    assert_eq!(r.header("X-Api-Key"), Some("sk-test"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert!(r.headers.iter().all(|(k, _)| *k == k.to_lowercase()));
    assert_eq!(r.body, body);
    assert_eq!(r.system_text(), "You are a test.\nBe brief.");
    assert_eq!(
        r.last_user_text(),
        "<system-reminder>\nsome reminder\n</system-reminder>\nSay hello"
    );
    assert_eq!(r.last_user_prompt(), "Say hello");
    assert_eq!(r.messages().len(), 1);
    assert!(r.all_text().contains("some reminder"));
    assert!(!r.all_text().contains("not in there"));

    mock.clear();
    assert!(mock.requests().is_empty());
    assert_eq!(mock.message_request_count(), 0);
    mock.shutdown().await;
}

#[tokio::test]
async fn string_content_and_string_system() {
    let mock = MockUpstream::start().await;
    let mut body = user_body("claude-x", None, json!("plain prompt"));
    body["system"] = json!("sys prompt");
    let resp = post(&mock, &body).await;
    assert_eq!(resp.status(), 200);
    let msg: Value = resp.json().await.unwrap();
    assert_eq!(msg["content"][0]["text"], "Echo: plain prompt");
    let r = &mock.message_requests()[0];
    assert_eq!(r.system_text(), "sys prompt");
    assert_eq!(r.last_user_text(), "plain prompt");
    mock.shutdown().await;
}

#[tokio::test]
async fn error_keywords_give_status_and_anthropic_error() {
    let mock = MockUpstream::start().await;
    let cases = [
        ("[[e400]]", 400, "invalid_request_error"),
        ("[[e401]]", 401, "authentication_error"),
        ("[[e403]]", 403, "permission_error"),
        ("[[e429]]", 429, "rate_limit_error"),
        ("[[e500]]", 500, "api_error"),
        ("[[e529]]", 529, "overloaded_error"),
    ];
    for (kw, status, kind) in cases {
        let resp = post(&mock, &prompt_body(&format!("{kw} go"), Some(true))).await;
        assert_eq!(resp.status().as_u16(), status, "{kw}");
        assert!(resp.headers().contains_key("request-id"), "{kw}");
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        if status == 429 || status == 529 {
            assert_eq!(retry.as_deref(), Some("1"), "{kw}");
        } else {
            assert_eq!(retry, None, "{kw}");
        }
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": kind, "message": format!("mock {kind}")}})
        );
    }
    assert_eq!(mock.message_requests().len(), cases.len());
    mock.shutdown().await;
}

#[tokio::test]
async fn non_streaming_returns_message_objects() {
    let mock = MockUpstream::start().await;

    let msg: Value = post(&mock, &prompt_body("Say hi", None))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["model"], "claude-sonnet-4-5");
    assert_eq!(msg["stop_reason"], "end_turn");
    assert_eq!(
        msg["content"],
        json!([{"type": "text", "text": "Echo: Say hi"}])
    );
    assert_eq!(msg["usage"]["cache_read_input_tokens"], 0);

    let msg: Value = post(&mock, &prompt_body("[[think]] q", Some(false)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msg["content"][0]["type"], "thinking");
    assert!(!msg["content"][0]["signature"].as_str().unwrap().is_empty());
    assert_eq!(msg["content"][1]["text"], "Echo: [[think]] q");

    let msg: Value = post(&mock, &prompt_body("[[tool]] run", Some(false)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msg["stop_reason"], "tool_use");
    assert_eq!(msg["content"][0]["text"], "I'll run a command.");
    let tool = &msg["content"][1];
    assert_eq!(tool["type"], "tool_use");
    assert_eq!(tool["name"], "Bash");
    assert!(tool["id"].as_str().unwrap().starts_with("toolu_mock_"));
    assert_eq!(
        tool["input"],
        json!({"command": "echo tool-ran", "description": "mock"})
    );

    let msg: Value = post(&mock, &prompt_body("[[max]] go", Some(false)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msg["stop_reason"], "max_tokens");
    mock.shutdown().await;
}

#[tokio::test]
async fn thinking_stream_has_thinking_then_text_block() {
    let mock = MockUpstream::start().await;
    let events = stream_events(&mock, &prompt_body("[[think]] why", Some(true))).await;
    assert_eq!(
        events[2].1["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    let kinds: Vec<(u64, String)> = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            (
                d["index"].as_u64().unwrap(),
                d["delta"]["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kinds[0], (0, "thinking_delta".to_string()));
    assert_eq!(kinds[1], (0, "thinking_delta".to_string()));
    assert_eq!(kinds[2], (0, "signature_delta".to_string()));
    assert!(
        kinds[3..]
            .iter()
            .all(|k| *k == (1, "text_delta".to_string()))
    );
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(starts[1]["index"], 1);
    assert_eq!(starts[1]["content_block"]["type"], "text");
    assert_eq!(sse_text(&events), "Echo: [[think]] why");
    assert_eq!(names(&events).last(), Some(&"message_stop"));
    mock.shutdown().await;
}

#[tokio::test]
async fn tool_turn_then_tool_result_turn() {
    let mock = MockUpstream::start().await;
    let events = stream_events(&mock, &prompt_body("[[tool]] run it", Some(true))).await;
    let tool_start = events
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .expect("tool_use block")
        .1
        .clone();
    assert_eq!(tool_start["index"], 1);
    assert_eq!(tool_start["content_block"]["name"], "Bash");
    assert_eq!(tool_start["content_block"]["input"], json!({}));
    let partial: Vec<&str> = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert!(partial.len() > 1, "input_json not split: {partial:?}");
    let input: Value = serde_json::from_str(&partial.concat()).unwrap();
    assert_eq!(
        input,
        json!({"command": "echo tool-ran", "description": "mock"})
    );
    let delta = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    let tool_id = tool_start["content_block"]["id"].clone();
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": true,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "[[tool]] run it"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "Bash", "input": input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "tool-ran\n\n<system-reminder>\n<total_tokens>1 tokens left</total_tokens>\n</system-reminder>", "is_error": false}]}
        ]
    });
    let events = stream_events(&mock, &body).await;
    assert_eq!(sse_text(&events), "Tool said: tool-ran");
    let delta = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(
        !events
            .iter()
            .any(|(_, d)| d["content_block"]["type"] == "tool_use")
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn max_long_and_slow() {
    let mock = MockUpstream::start().await;
    let events = stream_events(&mock, &prompt_body("[[max]] go", Some(true))).await;
    let delta = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(sse_text(&events), "Echo: [[max]] go");

    let events = stream_events(&mock, &prompt_body("[[long]]", Some(true))).await;
    let texts: Vec<&str> = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "text_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 400);
    assert_eq!(texts[0], "w0 ");
    assert_eq!(texts[399], "w399 ");
    let delta = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(delta["usage"]["output_tokens"], 400);

    let t = Instant::now();
    let events = stream_events(&mock, &prompt_body("[[slow]] a b", Some(true))).await;
    let elapsed = t.elapsed();
    // 4 deltas ("Echo: ", "[[slow]] ", "a ", "b") at 50 ms each.
    assert_eq!(sse_text(&events), "Echo: [[slow]] a b");
    assert!(
        elapsed >= Duration::from_millis(195),
        "slow too fast: {elapsed:?}"
    );

    let t = Instant::now();
    let _ = stream_events(&mock, &prompt_body("fast one two three", Some(true))).await;
    // 5 deltas: would take 250 ms with the slow delay.
    assert!(t.elapsed() < Duration::from_millis(200), "default is slow");
    mock.shutdown().await;
}

#[tokio::test]
async fn slow_stream_delivers_events_incrementally() {
    let mock = MockUpstream::start().await;
    let mut resp = post(&mock, &prompt_body("[[slow]] a b c d e", Some(true))).await;
    let t = Instant::now();
    let first = resp.chunk().await.unwrap().expect("first chunk");
    let first = String::from_utf8_lossy(&first).to_string();
    assert!(first.starts_with("event: message_start\n"), "{first:?}");
    assert!(
        t.elapsed() < Duration::from_millis(45),
        "message_start was not flushed before the first delta"
    );
    let mut rest = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let all = first + &String::from_utf8_lossy(&rest);
    assert!(all.contains("event: message_stop\n"));
    mock.shutdown().await;
}

#[tokio::test]
async fn midfail_cuts_the_stream_without_message_stop() {
    let mock = MockUpstream::start().await;
    let mut resp = post(&mock, &prompt_body("[[midfail]] go now please", Some(true))).await;
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    let mut errored = false;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => received.extend_from_slice(&c),
            Ok(None) => break,
            Err(_) => {
                errored = true;
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&received).to_string();
    assert!(errored, "the body read should fail; got {text:?}");
    assert!(!text.contains("message_stop"), "{text:?}");
    assert!(!text.contains("message_delta"), "{text:?}");
    let events = parse_sse(&text);
    assert_eq!(names(&events)[0], "message_start");
    assert_eq!(sse_text(&events), "Echo: [[midfail]] go ");
    mock.shutdown().await;
}

#[tokio::test]
async fn wait_for_message_requests_resolves_on_arrival() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/v1/messages", mock.base_url());
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let client = reqwest::Client::new();
        for i in 0..2 {
            client
                .post(&url)
                .json(&prompt_body(&format!("n{i}"), None))
                .send()
                .await
                .unwrap();
        }
    });
    let got = mock
        .wait_for_message_requests(2, Duration::from_secs(5))
        .await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].last_user_prompt(), "n0");
    assert_eq!(got[1].last_user_prompt(), "n1");
    sender.await.unwrap();
    mock.shutdown().await;
}

#[tokio::test]
#[should_panic(expected = "timed out")]
async fn wait_for_message_requests_panics_on_timeout() {
    let mock = MockUpstream::start().await;
    mock.wait_for_message_requests(1, Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let mock = MockUpstream::start().await;
    let url = mock.base_url();
    mock.shutdown().await;
    let res = reqwest::Client::new()
        .post(format!("{url}/v1/messages"))
        .json(&prompt_body("x", None))
        .send()
        .await;
    assert!(res.is_err(), "server still answering after shutdown");
}

#[tokio::test]
async fn sse_json_keeps_the_api_key_order() {
    let mock = MockUpstream::start().await;
    let text = post(&mock, &prompt_body("[[tool]] hi", Some(true)))
        .await
        .text()
        .await
        .unwrap();
    let expected = [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":",
        ",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"I'll \"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_mock_1\",\"name\":\"Bash\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ];
    let mut pos = 0;
    for piece in expected {
        let found = text[pos..]
            .find(piece)
            .unwrap_or_else(|| panic!("{piece:?} not found in order in {text:?}"));
        pos += found + piece.len();
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn bodies_can_be_dropped_from_the_log() {
    let mock = MockUpstream::start().await;
    mock.set_keep_bodies(false);
    let msg: Value = post(&mock, &prompt_body("still echoed", None))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msg["content"][0]["text"], "Echo: still echoed");
    let got = mock
        .wait_for_message_requests(1, Duration::from_secs(1))
        .await;
    assert_eq!(got[0].body, Value::Null);
    assert_eq!(got[0].header("x-api-key"), Some("sk-test"));
    mock.shutdown().await;
}

#[tokio::test]
async fn client_tools_are_called_and_their_results_echoed_in_order() {
    let mock = MockUpstream::start().await;
    let tools = json!([
        {"name": "Bash", "input_schema": {"type": "object"}},
        {"name": "mcp__client__get_time", "input_schema": {"type": "object"}},
        {"name": "mcp__client__get_weather", "input_schema": {"type": "object"}}
    ]);
    let ask = |text: &str| {
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "tools": tools,
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]
        })
    };
    let msg: Value = post(&mock, &ask(r#"[[call]] now [[input:{"zone":"UTC"}]]"#))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msg["stop_reason"], "tool_use");
    assert_eq!(msg["content"][0]["name"], "mcp__client__get_time");
    assert_eq!(msg["content"][0]["input"], json!({"zone": "UTC"}));

    let msg: Value = post(&mock, &ask("[[call2]] both"))
        .await
        .json()
        .await
        .unwrap();
    let calls = msg["content"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1]["name"], "mcp__client__get_weather");
    assert_eq!(calls[1]["input"], json!({"q": "[[call2]] both", "n": 2}));
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert!(
        !calls[1]["id"]
            .as_str()
            .unwrap()
            .starts_with(calls[0]["id"].as_str().unwrap()),
        "no id is a prefix of another (the CLI mixes such results up)"
    );

    let msg: Value = post(&mock, &ask("[[textcall]] then"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msg["content"][0]["text"], "Let me check.");
    assert_eq!(msg["content"][1]["type"], "tool_use");

    let answer = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": true,
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": calls},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": calls[0]["id"], "content": [{"type": "text", "text": "noon"}]},
                {"type": "tool_result", "tool_use_id": calls[1]["id"], "is_error": true, "content": "no city\n\n<system-reminder>\nx\n</system-reminder>"}
            ]}
        ]
    });
    let events = stream_events(&mock, &answer).await;
    assert_eq!(sse_text(&events), "Tool said: noon | [error] no city");
    let recorded = mock.message_requests();
    assert_eq!(
        recorded.last().unwrap().tool_results(),
        vec![
            (
                calls[0]["id"].as_str().unwrap().to_string(),
                false,
                "noon".to_string()
            ),
            (
                calls[1]["id"].as_str().unwrap().to_string(),
                true,
                "no city".to_string()
            ),
        ]
    );
    assert_eq!(recorded[0].client_tools().len(), 2);
    mock.shutdown().await;
}
