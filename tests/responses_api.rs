//! `POST /v1/responses` and the stored responses end to end: ccpool's HTTP server, the real
//! Docker engine, the real CLI in containers and the mock upstream, driven by the official
//! openai SDK and by raw HTTP for bad input.

mod support;

use ccpool::credentials::Credentials;
use serde_json::{Value, json};
use support::api::{Server, run_sdk_script};
use support::docker::{pool_config, reuse, settings, shutdown_clean, start_pool};
use support::mock_upstream::MockUpstream;

fn pairs(turns: &[(&str, &str)]) -> Vec<(String, String)> {
    turns
        .iter()
        .map(|(r, t)| (r.to_string(), t.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_speaks_the_responses_api() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    let server = Server::start(&pool).await;

    let out = run_sdk_script("responses_client.py", &[&server.base_url]).await;
    let requests = mock.message_requests();
    let reaching = |prompt: &str| {
        requests
            .iter()
            .find(|r| r.last_user_prompt() == prompt)
            .unwrap_or_else(|| panic!("{prompt} reached the upstream"))
            .clone()
    };

    // responses.create with a string input and instructions.
    let plain = &out["plain"];
    assert!(plain["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(plain["object"], "response");
    assert_eq!(plain["status"], "completed");
    assert_eq!(plain["model"], "gpt-4o");
    assert_eq!(plain["output_text"], "Echo: responses turn one");
    assert_eq!(plain["output_types"], json!(["message"]));
    assert!(plain["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        plain["total_tokens"].as_u64().unwrap(),
        plain["input_tokens"].as_u64().unwrap() + plain["output_tokens"].as_u64().unwrap()
    );
    let first = reaching("responses turn one");
    assert!(
        first.system_text().contains("RESP-INSTRUCTIONS"),
        "instructions are the system prompt"
    );
    assert_eq!(first.body["model"], "claude-sonnet-4-5");

    // An item input with a developer message and an image.
    assert_eq!(out["items"]["output_text"], "Echo: responses image turn");
    let image = reaching("responses image turn");
    assert!(image.system_text().contains("RESP-DEVELOPER"));
    let last = image
        .messages()
        .into_iter()
        .rfind(|m| m["role"] == "user")
        .unwrap();
    assert!(
        last["content"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["type"] == "image" && b["source"]["media_type"] == "image/png"),
        "{last}"
    );

    // responses.stream: the SDK's accumulated text equals the deltas.
    let stream = &out["stream"];
    let deltas: Vec<&str> = stream["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(deltas.len() >= 3, "token by token: {deltas:?}");
    assert_eq!(deltas.concat(), "Echo: responses streamed reply");
    assert_eq!(stream["output_text"], deltas.concat());
    assert_eq!(stream["status"], "completed");
    let types: Vec<&str> = stream["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types[..2], ["response.created", "response.in_progress"]);
    assert_eq!(types.last(), Some(&"response.completed"));
    let sequence: Vec<u64> = stream["sequence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(sequence, (0..sequence.len() as u64).collect::<Vec<_>>());

    // previous_response_id: the upstream sees the whole conversation.
    assert_eq!(out["chain"]["second"], "Echo: chain turn two");
    assert_eq!(
        reaching("chain turn two").turns(),
        pairs(&[
            ("user", "chain turn one"),
            ("assistant", "Echo: chain turn one"),
            ("user", "chain turn two"),
        ])
    );

    // text.format json_schema, and responses.parse with a pydantic model.
    assert_eq!(
        out["json_schema"],
        json!({"city": "Paris", "population": 2102650})
    );
    assert_eq!(out["parsed"], json!({"city": "Lyon", "population": 522250}));
    assert!(
        requests.iter().any(|r| r.offers_tool("StructuredOutput")),
        "the format reached the CLI as --json-schema"
    );

    // max_output_tokens → incomplete.
    assert_eq!(
        out["max_output_tokens"]["status"], "incomplete",
        "{}",
        out["max_output_tokens"]
    );
    assert_eq!(out["max_output_tokens"]["reason"], "max_output_tokens");
    let limited = requests
        .iter()
        .find(|r| r.last_user_prompt().contains("[[max]]"))
        .unwrap();
    assert_eq!(limited.body["max_tokens"], 50);

    // Retrieve, input items, another key, delete.
    assert_eq!(out["retrieve"]["output_text"], "Echo: chain turn two");
    assert_eq!(
        out["retrieve"]["items"],
        json!([
            ["message", "user"],
            ["message", "assistant"],
            ["message", "user"]
        ])
    );
    for name in ["foreign", "foreign_continue", "deleted"] {
        assert_eq!(out[name]["status"], 404, "{name}: {}", out[name]);
        assert_eq!(out[name]["class"], "NotFoundError");
    }

    // Upstream errors and what ccpool refuses.
    assert_eq!(out["rate_limited"]["status"], 429);
    assert_eq!(out["rate_limited"]["class"], "RateLimitError");
    assert_eq!(out["overloaded"]["status"], 503);
    assert_eq!(
        out["web_search"],
        json!({"status": 400, "class": "BadRequestError", "param": "tools[0].type", "code": "unsupported_parameter"})
    );
    assert_eq!(out["background"]["param"], "background");

    server.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_a_4xx_in_the_openai_shape() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    let server = Server::start(&pool).await;
    let http = reqwest::Client::new();
    let huge = format!(
        "{{\"model\":\"gpt-4o\",\"input\":\"{}\"}}",
        "a".repeat(20 * 1024 * 1024)
    );
    let text = |extra: Value| {
        let mut body = json!({"model": "gpt-4o", "input": "x"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body.to_string()
    };
    let message = |content: Value| text(json!({"input": [{"role": "user", "content": content}]}));
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        ("{{{".into(), 400, None),
        ("[1]".into(), 400, None),
        (json!({"input": "x"}).to_string(), 400, Some("model")),
        (json!({"model": "gpt-4o"}).to_string(), 400, Some("input")),
        (text(json!({"input": 7})), 400, Some("input")),
        (text(json!({"input": []})), 400, Some("input")),
        (
            text(json!({"input": [{"role": "narrator", "content": "x"}]})),
            400,
            Some("input[0].role"),
        ),
        (
            text(json!({"input": [{"role": "assistant", "content": "x"}]})),
            400,
            Some("input"),
        ),
        (
            text(json!({"input": [{"type": "computer_call_output", "call_id": "c"}]})),
            400,
            Some("input[0].type"),
        ),
        (
            text(json!({"input": [{"type": "function_call_output", "output": "x"}]})),
            400,
            Some("input[0].call_id"),
        ),
        (message(json!("")), 400, Some("input[0].content")),
        (
            message(json!([{"type": "input_audio", "input_audio": {}}])),
            400,
            Some("input[0].content[0].type"),
        ),
        (
            message(json!([{"type": "input_image", "image_url": "https://example.com/cat.png"}])),
            400,
            Some("input[0].content[0].image_url"),
        ),
        (
            message(json!([{"type": "input_image", "image_url": "data:image/tiff;base64,AAAA"}])),
            400,
            Some("input[0].content[0].image_url"),
        ),
        (
            message(json!([{"type": "input_file", "file_id": "file-1"}])),
            400,
            Some("input[0].content[0].type"),
        ),
        (
            text(json!({"max_output_tokens": "many"})),
            400,
            Some("max_output_tokens"),
        ),
        (
            text(json!({"max_output_tokens": 0})),
            400,
            Some("max_output_tokens"),
        ),
        (
            text(json!({"text": {"format": {"type": "yaml"}}})),
            400,
            Some("text.format.type"),
        ),
        (
            text(json!({"text": {"format": {"type": "json_schema", "name": "x"}}})),
            400,
            Some("text.format.schema"),
        ),
        (
            text(json!({"reasoning": {"effort": "extreme"}})),
            400,
            Some("reasoning.effort"),
        ),
        (
            text(json!({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]})),
            400,
            Some("tools[0].type"),
        ),
        (
            text(json!({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]})),
            400,
            Some("tools[0].type"),
        ),
        (
            text(json!({"tools": [{"type": "computer_use_preview"}]})),
            400,
            Some("tools[0].type"),
        ),
        (
            text(
                json!({"tools": [{"type": "mcp", "server_label": "s", "server_url": "https://x"}]}),
            ),
            400,
            Some("tools[0].type"),
        ),
        (
            text(json!({"tool_choice": {"type": "web_search_preview"}})),
            400,
            Some("tool_choice.type"),
        ),
        (text(json!({"background": true})), 400, Some("background")),
        (
            text(json!({"conversation": "conv_1"})),
            400,
            Some("conversation"),
        ),
        (text(json!({"metadata": {"k": 5}})), 400, Some("metadata")),
        (
            text(json!({"previous_response_id": "resp_unknown"})),
            404,
            Some("previous_response_id"),
        ),
        (huge, 413, None),
    ];
    for (body, status, param) in cases {
        let response = http
            .post(format!("{}/v1/responses", server.base_url))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        let shown = &body[..body.len().min(200)];
        assert_eq!(got, status, "{shown}: {text}");
        let e: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert!(
            e["error"]["message"].is_string() && e["error"]["type"].is_string(),
            "{text}"
        );
        if let Some(param) = param {
            assert_eq!(e["error"]["param"], param, "{shown}: {text}");
        }
    }
    for path in [
        "/v1/responses/resp_unknown",
        "/v1/responses/resp_unknown/input_items",
    ] {
        let response = http
            .get(format!("{}{path}", server.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path}");
        let e: Value = response.json().await.unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }
    assert!(
        mock.message_requests().is_empty(),
        "no bad request reached the upstream"
    );
    server.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_agents_sdk_runs_an_agent_with_its_default_model() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    let server = Server::start(&pool).await;

    let out = run_sdk_script("agents_client.py", &[&server.base_url]).await;

    assert_eq!(out["plain"]["final_output"], "Echo: agents plain turn");
    assert_eq!(out["plain"]["items"], json!(["message_output_item"]));
    let plain = mock
        .message_requests()
        .into_iter()
        .find(|r| r.last_user_prompt() == "agents plain turn")
        .expect("the agent's turn reached the upstream");
    assert!(plain.system_text().contains("AGENT-INSTRUCTIONS"));
    let deltas: Vec<&str> = out["streamed"]["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(deltas.len() >= 3, "token by token: {deltas:?}");
    assert_eq!(deltas.concat(), "Echo: agents streamed turn");
    assert_eq!(out["streamed"]["final_output"], deltas.concat());

    // An agent with a function tool: the SDK runs it on the client side, sends its output,
    // and the final output is the model's answer to it.
    let tool = &out["tool"];
    assert_eq!(tool["ran"], json!(["Oslo"]), "{out}");
    assert_eq!(
        tool["items"],
        json!([
            "tool_call_item",
            "tool_call_output_item",
            "message_output_item"
        ])
    );
    assert_eq!(
        tool["final_output"],
        "Tool said: tool-result: 12C and sunny in Oslo"
    );
    assert_eq!(tool["responses"], 2);
    let requests = mock.message_requests();
    let offered = requests
        .iter()
        .find(|r| r.system_text().contains("AGENT-TOOLS"))
        .expect("the tool agent's turn reached the upstream")
        .client_tools();
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0]["name"], "mcp__client__get_weather");
    assert_eq!(offered[0]["description"], "The weather in a city.");
    assert_eq!(offered[0]["input_schema"]["required"], json!(["city"]));
    assert!(
        requests.iter().any(|r| {
            let results = r.tool_results();
            results.len() == 1
                && results[0].0.starts_with("toolu_mock_")
                && !results[0].1
                && results[0].2 == "tool-result: 12C and sunny in Oslo"
        }),
        "the tool's output reached the upstream"
    );

    server.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

/// The names of a JSON array of strings.
fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_round_trip_through_the_responses_api() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    let server = Server::start(&pool).await;

    let out = run_sdk_script("responses_tools.py", &[&server.base_url]).await;
    let requests = mock.message_requests();
    let with_results = |results: &[&str]| {
        requests
            .iter()
            .find(|r| {
                let got: Vec<String> = r.tool_results().into_iter().map(|(_, _, t)| t).collect();
                got == results
            })
            .unwrap_or_else(|| panic!("no upstream request carried the results {results:?}"))
    };

    // Not streamed: a function_call item under the client's name with the upstream's id,
    // then its output with previous_response_id.
    let plain = &out["plain"];
    assert_eq!(plain["status"], "completed", "{out}");
    assert_eq!(strings(&plain["output_types"]), ["function_call"]);
    let call = &plain["calls"][0];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], r#"{"city":"Oslo"}"#);
    assert!(call["call_id"].as_str().unwrap().starts_with("toolu_mock_"));
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(plain["output_text"], "");
    assert_eq!(plain["answer"], "Tool said: snow, -3C");
    assert_eq!(strings(&plain["answer_types"]), ["message"]);
    assert_eq!(
        strings(&plain["items"]),
        ["message", "function_call", "function_call_output"]
    );
    // The upstream saw the client's schema, and the output answering the upstream's id.
    let first = requests
        .iter()
        .find(|r| r.last_user_prompt().starts_with("[[call]] weather in Oslo"))
        .unwrap();
    let offered = first.client_tools();
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0]["name"], "mcp__client__get_weather");
    assert_eq!(offered[0]["description"], "Weather for a city");
    assert_eq!(
        offered[0]["input_schema"],
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    );
    let answered = with_results(&["snow, -3C"]);
    assert_eq!(
        answered.tool_results()[0].0,
        call["call_id"].as_str().unwrap()
    );

    // Streamed: the events in the documented order, then the whole input replayed.
    let stream = &out["stream"];
    assert_eq!(stream["status"], "completed");
    assert_eq!(
        strings(&stream["output_types"]),
        ["message", "function_call"]
    );
    assert_eq!(stream["output_text"], "Let me check.");
    assert_eq!(stream["calls"][0]["arguments"], r#"{"city":"Bergen"}"#);
    let events = stream["events"].as_array().unwrap();
    let seq: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seq,
        (0..seq.len() as u64).collect::<Vec<_>>(),
        "sequence_number"
    );
    let call_events: Vec<&Value> = events.iter().filter(|e| e["output_index"] == 1).collect();
    let kinds: Vec<&str> = call_events
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    let deltas = kinds
        .iter()
        .filter(|k| **k == "response.function_call_arguments.delta")
        .count();
    assert!(deltas >= 2, "arguments streamed in pieces: {kinds:?}");
    let mut expected = vec!["response.output_item.added"];
    expected.extend(std::iter::repeat_n(
        "response.function_call_arguments.delta",
        deltas,
    ));
    expected.extend([
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]);
    assert_eq!(kinds, expected);
    let item_id = stream["calls"][0]["id"].as_str().unwrap();
    assert!(call_events.iter().all(|e| e["item_id"] == item_id));
    assert_eq!(call_events[0]["item"], "function_call");
    let joined: String = call_events
        .iter()
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(joined, r#"{"city":"Bergen"}"#);
    let done = call_events[call_events.len() - 2];
    assert_eq!(done["arguments"], joined);
    assert_eq!(done["name"], "get_weather");
    // The text message came first and was closed before the call was added.
    let message_done = events
        .iter()
        .position(|e| e["type"] == "response.output_item.done" && e["output_index"] == 0)
        .unwrap();
    let call_added = events
        .iter()
        .position(|e| e["type"] == "response.output_item.added" && e["output_index"] == 1)
        .unwrap();
    assert!(message_done < call_added);
    assert_eq!(
        events.last().unwrap()["type"],
        "response.completed",
        "{events:?}"
    );
    assert_eq!(stream["answer"], "Tool said: rain, 8C");
    let replayed = with_results(&["rain, 8C"]);
    assert_eq!(
        replayed.turns()[..2],
        pairs(&[
            (
                "user",
                "[[textcall]] weather in Bergen? [[input:{\"city\":\"Bergen\"}]]"
            ),
            ("assistant", "Let me check."),
        ])
    );

    // Two calls in one response, both outputs in order in one request.
    let parallel = &out["parallel"];
    let names: Vec<&str> = parallel["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get_time", "get_weather"], "{out}");
    assert_eq!(parallel["answer"], "Tool said: result 0 | result 1");
    let both = with_results(&["result 0", "result 1"]);
    let ids: Vec<String> = both.tool_results().into_iter().map(|r| r.0).collect();
    let call_ids: Vec<&str> = parallel["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, call_ids);

    // parallel_tool_calls false: one call, whose output alone answers it; the upstream then
    // sees the conversation the client saw (one call), not the second call the model made.
    let serial = &out["serial"];
    assert_eq!(serial["parallel_tool_calls"], false);
    let calls = serial["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{out}");
    assert_eq!(calls[0]["name"], "get_time");
    // The worker that saw both calls is not kept: the output is replayed with the one call.
    let after = requests
        .iter()
        .find(|r| r.all_text().contains("only 0"))
        .expect("the output reached the upstream");
    let assistant_calls: Vec<Value> = after
        .messages()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_use")
        .collect();
    assert_eq!(assistant_calls.len(), 1, "{}", after.all_text());
    assert_eq!(assistant_calls[0]["id"], calls[0]["call_id"]);
    let other = &out["serial_other_dialects"];
    assert_eq!(strings(&other["chat"]), ["get_time"], "{out}");
    assert_eq!(other["chat_finish"], "tool_calls");
    assert_eq!(strings(&other["anthropic"]), ["get_time"]);
    assert_eq!(other["anthropic_stop"], "tool_use");
    let anthropic_events = strings(&other["anthropic_events"]);
    assert_eq!(anthropic_events.last(), Some(&"message_stop"), "{out}");
    assert_eq!(
        anthropic_events
            .iter()
            .filter(|e| **e == "content_block_stop")
            .count(),
        1
    );

    // Forced calls: a named function, and "required" over two tools.
    let forced = &out["forced"];
    assert_eq!(strings(&forced["named_types"]), ["function_call"], "{out}");
    assert_eq!(forced["named"][0]["name"], "get_weather");
    assert_eq!(forced["named"][0]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(forced["required"][0]["name"], "get_time");
    assert_eq!(forced["required"][0]["arguments"], r#"{"q":"Lima"}"#);
    assert_eq!(
        forced["tool_choice"],
        json!({"type": "function", "name": "get_weather"})
    );

    // reasoning.summary and text.verbosity: accepted and echoed, with no effect.
    assert_eq!(
        out["accepted"],
        json!({"output_text": "Echo: accepted fields", "summary": "auto", "verbosity": "low"})
    );

    server.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}
