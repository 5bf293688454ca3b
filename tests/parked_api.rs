//! Parked turns end to end, through ccpool's HTTP server, with the real engine and CLI and the
//! mock upstream, in both chat APIs, streamed and not: a call parks the worker, and the request
//! carrying the results resumes it with no CLI start (no new container, the same CLI process
//! in every container, the start counter unchanged); parallel calls, failed results, an image
//! in a result, forced tools, bad input (400s that name the problem, the worker still parked),
//! a parked worker released after its idle time or retired under capacity pressure whose
//! results are then replayed, and clients that leave while parked or while the resumed turn
//! streams.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ccpool::credentials::Credentials;
use ccpool::pool::{PoolConfig, PoolStatus};
use futures::StreamExt;
use serde_json::{Value, json};
use support::api::Server;
use support::docker::{
    TestPool, exec_output, instance_containers, pool_config, reuse, settings, shutdown_clean,
    start_pool,
};
use support::mock_upstream::{CALL_PREAMBLE, MockUpstream, parse_sse};

/// A 1x1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

struct Stack {
    mock: MockUpstream,
    pool: TestPool,
    server: Server,
    http: reqwest::Client,
    instance: String,
}

async fn stack(config: PoolConfig) -> Stack {
    let mock = MockUpstream::start().await;
    let settings = settings(&mock.base_url(), Credentials::ApiKey("sk-test".into()));
    let instance = settings.instance_id.clone();
    let pool = start_pool(settings, config).await;
    let server = Server::start(&pool).await;
    Stack {
        mock,
        pool,
        server,
        http: reqwest::Client::new(),
        instance,
    }
}

/// What shows a CLI start: the pool's start counter, and every container's CLI process id.
#[derive(Debug, PartialEq, Eq)]
struct Starts {
    started: u64,
    pids: BTreeMap<String, String>,
}

impl Stack {
    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_as("key-main", path, body).await
    }

    /// A request of the owner of the client key `key`.
    async fn post_as(&self, key: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.server.base_url))
            .header("anthropic-version", "2023-06-01")
            .header("x-api-key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Status and body of a request, read to its end.
    async fn call(&self, path: &str, body: &Value) -> (u16, String) {
        let response = self.post(path, body).await;
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// An Anthropic message, streamed or not, as one `message` object.
    async fn message(&self, body: &Value) -> Value {
        self.message_as("key-main", body).await
    }

    async fn message_as(&self, key: &str, body: &Value) -> Value {
        let response = self.post_as(key, "/v1/messages", body).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        if body["stream"] == true {
            folded_message(&parse_sse(&text))
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// An OpenAI chat completion, streamed or not, as `{content, tool_calls, finish_reason}`.
    async fn completion(&self, body: &Value) -> Value {
        let (status, text) = self.call("/v1/chat/completions", body).await;
        assert_eq!(status, 200, "{text}");
        if body["stream"] == true {
            folded_completion(&text)
        } else {
            let c: Value = serde_json::from_str(&text).unwrap();
            let message = &c["choices"][0]["message"];
            json!({
                "content": message["content"],
                "tool_calls": message["tool_calls"].as_array().map(|calls| calls.iter().map(|t| json!({
                    "id": t["id"], "name": t["function"]["name"], "arguments": t["function"]["arguments"],
                })).collect::<Vec<_>>()).unwrap_or_default(),
                "finish_reason": c["choices"][0]["finish_reason"],
            })
        }
    }

    /// The start counter and CLI process ids once the reservoir is full again (nothing
    /// starting), so that a later difference can only come from the request in between.
    async fn starts(&self) -> Starts {
        let warm = self.pool.config().warm_default;
        assert!(self.pool.wait_warm(warm, Duration::from_secs(90)).await);
        self.until("no worker starting", |p| {
            p.profiles.iter().all(|p| p.starting == 0)
        })
        .await;
        let mut pids = BTreeMap::new();
        for container in instance_containers(&self.instance).await {
            let (code, pid) = exec_output(&container, "1000", "cat /tmp/ccpool-cli.pid").await;
            assert_eq!(code, 0, "{pid}");
            pids.insert(container, pid.trim().to_string());
        }
        Starts {
            started: self.pool.status().started,
            pids,
        }
    }

    fn parked(&self) -> usize {
        self.pool.status().profiles.iter().map(|p| p.parked).sum()
    }

    /// Waits (bounded) until the pool's status satisfies `done`: the reaper's expiry and a
    /// release's reset have no other signal.
    async fn until(&self, what: &str, done: impl Fn(&PoolStatus) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !done(&self.pool.status()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {:?}",
                self.pool.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.server.stop().await;
        shutdown_clean(self.pool).await;
        self.mock.shutdown().await;
    }
}

/// The events of a streamed Anthropic message folded into the `message` object it stands
/// for (tool inputs joined from their `input_json_delta`s and parsed).
fn folded_message(events: &[(String, Value)]) -> Value {
    let mut message = Value::Null;
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial: Vec<String> = Vec::new();
    for (name, data) in events {
        match name.as_str() {
            "message_start" => message = data["message"].clone(),
            "content_block_start" => {
                assert_eq!(data["index"], blocks.len(), "dense indexes: {events:?}");
                blocks.push(data["content_block"].clone());
                partial.push(String::new());
            }
            "content_block_delta" => {
                let i = data["index"].as_u64().unwrap() as usize;
                match data["delta"]["type"].as_str().unwrap() {
                    "text_delta" => {
                        let text = blocks[i]["text"].as_str().unwrap().to_string()
                            + data["delta"]["text"].as_str().unwrap();
                        blocks[i]["text"] = json!(text);
                    }
                    "input_json_delta" => {
                        partial[i].push_str(data["delta"]["partial_json"].as_str().unwrap())
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let i = data["index"].as_u64().unwrap() as usize;
                if blocks[i]["type"] == "tool_use" {
                    blocks[i]["input"] = serde_json::from_str(&partial[i]).unwrap();
                }
            }
            "message_delta" => {
                message["stop_reason"] = data["delta"]["stop_reason"].clone();
            }
            _ => {}
        }
    }
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("message_stop"));
    message["content"] = json!(blocks);
    message
}

/// A streamed chat completion folded into `{content, tool_calls, finish_reason}`.
fn folded_completion(body: &str) -> Value {
    let mut content = String::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(text) = choice["delta"]["content"].as_str() {
            content.push_str(text);
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = call["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                calls.push(
                    json!({"id": call["id"], "name": call["function"]["name"], "arguments": ""}),
                );
            }
            let arguments = calls[i]["arguments"].as_str().unwrap().to_string()
                + call["function"]["arguments"].as_str().unwrap_or_default();
            calls[i]["arguments"] = json!(arguments);
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    assert!(done, "the stream ends with [DONE]: {body}");
    json!({"content": content, "tool_calls": calls, "finish_reason": finish})
}

fn weather() -> Value {
    json!({"name": "get_weather", "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

fn clock() -> Value {
    json!({"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}}})
}

fn function(tool: Value) -> Value {
    json!({"type": "function", "function": {"name": tool["name"], "description": tool["description"], "parameters": tool["input_schema"]}})
}

fn anthropic(messages: &[Value], tools: &[Value], stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": stream, "messages": messages, "tools": tools})
}

fn openai(messages: &[Value], tools: &[Value], stream: bool) -> Value {
    let tools: Vec<Value> = tools.iter().cloned().map(function).collect();
    json!({"model": "gpt-4o", "stream": stream, "messages": messages, "tools": tools})
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn tool_uses(message: &Value) -> Vec<Value> {
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .cloned()
        .collect()
}

fn text_of(message: &Value) -> String {
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect()
}

fn result(id: &Value, content: Value, is_error: bool) -> Value {
    json!({"type": "tool_result", "tool_use_id": id, "content": content, "is_error": is_error})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_results_resume_the_parked_worker_without_a_cli_start_streamed_or_not() {
    let s = stack(pool_config(reuse(), 1)).await;

    // Not streamed: text before the call is kept; the call parks the worker.
    let mut messages = vec![user(
        r#"[[textcall]] weather please [[input:{"city":"Paris"}]]"#,
    )];
    let first = s.message(&anthropic(&messages, &[weather()], false)).await;
    assert_eq!(first["stop_reason"], "tool_use", "{first}");
    assert_eq!(first["content"][0]["text"], CALL_PREAMBLE);
    let call = &tool_uses(&first)[0];
    assert_eq!(call["name"], "get_weather", "the client's name");
    assert_eq!(call["input"], json!({"city": "Paris"}));
    let id = call["id"].clone();
    assert!(id.as_str().unwrap().starts_with("toolu_mock_"), "{id}");
    assert_eq!(s.parked(), 1, "{:?}", s.pool.status());

    let before = s.starts().await;
    let (continued, replayed) = (s.pool.status().continued, s.pool.status().replayed);
    messages.push(json!({"role": "assistant", "content": first["content"]}));
    messages.push(json!({"role": "user", "content": [result(&id, json!("sunny, 21C"), false)]}));
    let answer = s.message(&anthropic(&messages, &[weather()], false)).await;
    assert_eq!(answer["stop_reason"], "end_turn", "{answer}");
    assert_eq!(text_of(&answer), "Tool said: sunny, 21C");
    assert_eq!(s.starts().await, before, "no CLI start, no new container");
    let status = s.pool.status();
    assert_eq!(
        (status.continued, status.replayed),
        (continued + 1, replayed)
    );
    assert_eq!(s.parked(), 0);

    // What reached the upstream: the client's schema, then the result as the call's answer.
    let requests = s.mock.message_requests();
    let offered = requests[0].client_tools();
    assert_eq!(offered[0]["name"], "mcp__client__get_weather");
    assert_eq!(offered[0]["input_schema"], weather()["input_schema"]);
    assert_eq!(
        requests.last().unwrap().tool_results(),
        vec![(id.as_str().unwrap().to_string(), false, "sunny, 21C".into())]
    );

    // Streamed: two parallel calls; the results come back in the other order, the first
    // failed, the second with an image; the upstream gets them in the order of the calls.
    let mut messages = vec![user("[[call2]] two things")];
    let first = s
        .message(&anthropic(&messages, &[weather(), clock()], true))
        .await;
    assert_eq!(first["stop_reason"], "tool_use", "{first}");
    let calls = tool_uses(&first);
    let names: Vec<&str> = calls.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["get_time", "get_weather"]);
    assert_eq!(
        calls[1]["input"],
        json!({"q": "[[call2]] two things", "n": 2})
    );
    let before = s.starts().await;
    messages.push(json!({"role": "assistant", "content": first["content"]}));
    messages.push(json!({"role": "user", "content": [
        result(&calls[1]["id"], json!([{"type": "text", "text": "noon"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]), false),
        result(&calls[0]["id"], json!("no such city"), true),
    ]}));
    let answer = s
        .message(&anthropic(&messages, &[weather(), clock()], true))
        .await;
    assert_eq!(answer["stop_reason"], "end_turn", "{answer}");
    assert_eq!(
        text_of(&answer),
        "Tool said: [error] no such city | noon\n[image]"
    );
    assert_eq!(s.starts().await, before, "no CLI start, no new container");
    let last = s.mock.message_requests().pop().unwrap();
    assert_eq!(
        last.tool_results(),
        vec![
            (
                calls[0]["id"].as_str().unwrap().to_string(),
                true,
                "no such city".to_string()
            ),
            (
                calls[1]["id"].as_str().unwrap().to_string(),
                false,
                "noon\n[image]".to_string()
            ),
        ]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_tool_messages_resume_the_parked_worker_without_a_cli_start_streamed_or_not() {
    let s = stack(pool_config(reuse(), 1)).await;
    for stream in [true, false] {
        let mut messages = vec![user("[[call2]] both please")];
        let first = s
            .completion(&openai(&messages, &[weather(), clock()], stream))
            .await;
        assert_eq!(first["finish_reason"], "tool_calls", "{first}");
        let calls = first["tool_calls"].as_array().unwrap().clone();
        let names: Vec<&str> = calls.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["get_time", "get_weather"], "{first}");
        let second: Value = serde_json::from_str(calls[1]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(second, json!({"q": "[[call2]] both please", "n": 2}));
        assert_eq!(s.parked(), 1);

        let before = s.starts().await;
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": calls.iter().map(|c| json!({
            "id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}
        })).collect::<Vec<_>>()}));
        // The results in the other order.
        messages
            .push(json!({"role": "tool", "tool_call_id": calls[1]["id"], "content": "result 1"}));
        messages.push(json!({"role": "tool", "tool_call_id": calls[0]["id"], "content": [{"type": "text", "text": "result 0"}]}));
        let answer = s
            .completion(&openai(&messages, &[weather(), clock()], stream))
            .await;
        assert_eq!(answer["finish_reason"], "stop", "{answer}");
        assert_eq!(answer["content"], "Tool said: result 0 | result 1");
        assert_eq!(s.starts().await, before, "no CLI start (stream: {stream})");
        assert_eq!(s.parked(), 0);
        let ids: Vec<String> = s
            .mock
            .message_requests()
            .pop()
            .unwrap()
            .tool_results()
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        let called: Vec<String> = calls
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, called, "the results in the order of the calls");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_tool_yields_a_call_in_both_apis() {
    let s = stack(pool_config(reuse(), 1)).await;
    let oslo = r#"forecast [[json:{"city":"Oslo"}]]"#;

    // Anthropic `any` with one tool, streamed: the call of that tool, with a valid input.
    let mut body = anthropic(&[user(oslo)], &[weather()], true);
    body["tool_choice"] = json!({"type": "any"});
    let forced = s.message(&body).await;
    assert_eq!(forced["stop_reason"], "tool_use", "{forced}");
    let call = &tool_uses(&forced)[0];
    assert_eq!(
        (&call["name"], &call["input"]),
        (&json!("get_weather"), &json!({"city": "Oslo"}))
    );
    // The model was asked for exactly that tool's input, through the structured output.
    let request = s.mock.message_requests().pop().unwrap();
    assert!(
        request.offers_tool("StructuredOutput"),
        "{}",
        request.all_text()
    );
    assert!(request.client_tools().is_empty());

    // Its result replays the history (a forced call does not park) and the turn completes.
    let messages = vec![
        user(oslo),
        json!({"role": "assistant", "content": forced["content"]}),
        json!({"role": "user", "content": [result(&call["id"], json!("cold"), false)]}),
    ];
    let (status, text) = s
        .call("/v1/messages", &anthropic(&messages, &[weather()], false))
        .await;
    assert_eq!(status, 200, "{text}");

    // Anthropic `tool` naming one of two, not streamed.
    let mut body = anthropic(
        &[user(r#"what time [[json:{"zone":"UTC"}]]"#)],
        &[weather(), clock()],
        false,
    );
    body["tool_choice"] = json!({"type": "tool", "name": "get_time"});
    let forced = s.message(&body).await;
    assert_eq!(forced["stop_reason"], "tool_use", "{forced}");
    assert_eq!(tool_uses(&forced)[0]["name"], "get_time");
    assert_eq!(tool_uses(&forced)[0]["input"], json!({"zone": "UTC"}));

    // OpenAI `required` over two tools, streamed: the model picks one.
    let mut body = openai(
        &[user(
            r#"pick [[json:{"call":{"name":"get_weather","input":{"city":"Rome"}}}]]"#,
        )],
        &[weather(), clock()],
        true,
    );
    body["tool_choice"] = json!("required");
    let forced = s.completion(&body).await;
    assert_eq!(forced["finish_reason"], "tool_calls", "{forced}");
    assert_eq!(forced["tool_calls"][0]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(forced["tool_calls"][0]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Rome"}));

    // OpenAI naming a function, not streamed.
    let mut body = openai(&[user(oslo)], &[weather(), clock()], false);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let forced = s.completion(&body).await;
    assert_eq!(forced["finish_reason"], "tool_calls", "{forced}");
    assert_eq!(forced["tool_calls"][0]["name"], "get_weather");
    s.stop().await;
}

/// The error message of a 400 in either API's shape.
fn error_message(status: u16, body: &str) -> String {
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(body).unwrap();
    v["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tool_input_is_a_400_that_names_it_and_the_parked_worker_waits_on() {
    let s = stack(pool_config(reuse(), 1)).await;
    let mut messages = vec![user("[[call]] go")];
    let first = s.message(&anthropic(&messages, &[weather()], false)).await;
    let id = tool_uses(&first)[0]["id"].clone();
    messages.push(json!({"role": "assistant", "content": first["content"]}));
    let before = s.starts().await;
    let requests = s.mock.message_request_count();

    // A result for an unknown id, results missing, a malformed schema: refused at once.
    let mut unknown = messages.clone();
    unknown.push(json!({"role": "user", "content": [result(&id, json!("a"), false), result(&json!("toolu_nope"), json!("b"), false)]}));
    let (status, body) = s
        .call("/v1/messages", &anthropic(&unknown, &[weather()], true))
        .await;
    assert!(
        error_message(status, &body).contains("toolu_nope"),
        "{body}"
    );
    let mut missing = messages.clone();
    missing.push(user("never mind"));
    let (status, body) = s
        .call("/v1/messages", &anthropic(&missing, &[weather()], false))
        .await;
    assert!(
        error_message(status, &body).contains(id.as_str().unwrap()),
        "{body}"
    );
    let bad_schema = json!({"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": 7}}}});
    let (status, body) = s
        .call(
            "/v1/messages",
            &anthropic(&[user("hi")], &[bad_schema], false),
        )
        .await;
    assert!(
        error_message(status, &body).contains("tools.0.input_schema"),
        "{body}"
    );
    let mut openai_unknown = vec![
        user("[[call]] go"),
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}),
    ];
    openai_unknown.push(json!({"role": "tool", "tool_call_id": "call_nope", "content": "x"}));
    let (status, body) = s
        .call(
            "/v1/chat/completions",
            &openai(&openai_unknown, &[weather()], false),
        )
        .await;
    assert!(error_message(status, &body).contains("call_nope"), "{body}");
    let bad_parameters = json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": "city"}}});
    let mut body = openai(&[user("hi")], &[], false);
    body["tools"] = json!([bad_parameters]);
    let (status, body) = s.call("/v1/chat/completions", &body).await;
    assert!(
        error_message(status, &body).contains("tools[0].function.parameters"),
        "{body}"
    );
    assert_eq!(
        s.mock.message_request_count(),
        requests,
        "nothing reached the upstream"
    );
    assert_eq!(s.parked(), 1, "still parked");

    // The right results still resume the parked worker.
    messages.push(json!({"role": "user", "content": [result(&id, json!("fine"), false)]}));
    let answer = s.message(&anthropic(&messages, &[weather()], false)).await;
    assert_eq!(text_of(&answer), "Tool said: fine");
    assert_eq!(s.starts().await, before, "no CLI start");

    // A tool named like a CLI built-in is the client's own (the built-ins are off and the
    // model knows client tools as mcp__client__NAME): it is offered and called as any other.
    // (Other owners, so that each gets a worker that never offered other tools.)
    let bash = json!({"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}});
    let call = s
        .message_as(
            "key-bash",
            &anthropic(
                &[user(r#"[[call]] [[input:{"command":"ls"}]]"#)],
                &[bash],
                false,
            ),
        )
        .await;
    assert_eq!(tool_uses(&call)[0]["name"], "Bash", "{call}");
    assert!(
        s.mock
            .message_requests()
            .pop()
            .unwrap()
            .offers_tool("mcp__client__Bash")
    );

    // 200 tools: all offered, and a call comes back.
    let many: Vec<Value> = (0..200)
        .map(|i| {
            json!({"name": format!("tool_{i:03}"), "description": format!("tool number {i}"),
            "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}}})
        })
        .collect();
    let call = s
        .message_as(
            "key-many",
            &anthropic(&[user("[[call]] many")], &many, true),
        )
        .await;
    assert_eq!(call["stop_reason"], "tool_use", "{call}");
    assert_eq!(tool_uses(&call)[0]["name"], "tool_000");
    assert_eq!(
        s.mock
            .message_requests()
            .pop()
            .unwrap()
            .client_tools()
            .len(),
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_worker_is_released_after_its_idle_time_and_the_results_are_then_replayed() {
    let config = PoolConfig {
        parked_idle: Duration::from_secs(2),
        ..pool_config(reuse(), 1)
    };
    let s = stack(config).await;
    let mut messages = vec![user(r#"[[call]] go [[input:{"city":"Lima"}]]"#)];
    let first = s.message(&anthropic(&messages, &[weather()], true)).await;
    let id = tool_uses(&first)[0]["id"].clone();
    assert_eq!(s.parked(), 1);
    let requests = s.mock.message_request_count();

    // The client does not come back: the worker is released (its parked turn ended, the
    // worker reset into its owner's pool), no container is left over, the upstream is not
    // asked anything more.
    s.until("the parked worker is released", |p| {
        p.profiles[0].held == 0 && p.profiles[0].busy == 0 && p.profiles[0].idle == 1
    })
    .await;
    assert_eq!(s.mock.message_request_count(), requests);
    let status = s.pool.status();
    assert_eq!(status.profiles.len(), 1, "{status:?}");
    assert_eq!(status.workers, 2, "one warm, one idle: {status:?}");
    assert_eq!(
        instance_containers(&s.instance).await.len(),
        status.workers,
        "{status:?}"
    );

    // The results come late: the history is replayed, and the turn completes.
    let replayed = status.replayed;
    messages.push(json!({"role": "assistant", "content": first["content"]}));
    messages.push(json!({"role": "user", "content": [result(&id, json!("warm"), false)]}));
    let answer = s.message(&anthropic(&messages, &[weather()], false)).await;
    assert_eq!(answer["stop_reason"], "end_turn", "{answer}");
    assert_eq!(s.pool.status().replayed, replayed + 1);
    let last = s.mock.message_requests().pop().unwrap();
    let body = last.all_text();
    assert!(
        body.contains(id.as_str().unwrap()) && body.contains("warm"),
        "the call and its result reached the upstream: {body}"
    );
    assert!(
        body.contains(r#""name":"mcp__client__get_weather""#),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_worker_gives_way_under_capacity_pressure_and_its_results_are_replayed() {
    let config = PoolConfig {
        max_workers: 2,
        ..pool_config(reuse(), 1)
    };
    let s = stack(config).await;
    let mut messages = vec![user("[[call]] go")];
    let first = s.message(&anthropic(&messages, &[weather()], false)).await;
    let id = tool_uses(&first)[0]["id"].clone();
    assert_eq!(s.parked(), 1);
    s.starts().await;
    let retired = s.pool.status().retired;

    // Another owner takes the warm worker, and while it streams asks for one more: the pool is
    // full, so the parked worker (the only holding) is retired to make room.
    let busy = s
        .post_as(
            "key-other",
            "/v1/messages",
            &anthropic(&[user("[[slow]] [[long]] busy")], &[], true),
        )
        .await;
    assert_eq!(busy.status(), 200);
    let mut bytes = busy.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("text_delta") {
        seen.push_str(&String::from_utf8_lossy(
            &bytes.next().await.unwrap().unwrap(),
        ));
    }
    let other = s
        .message_as("key-other", &anthropic(&[user("more")], &[], false))
        .await;
    assert_eq!(text_of(&other), "Echo: more");
    drop(bytes);
    let status = s.pool.status();
    assert_eq!(s.parked(), 0, "{status:?}");
    assert_eq!(status.retired, retired + 1, "{status:?}");

    // The results come back: replayed, and the turn completes.
    let replayed = status.replayed;
    messages.push(json!({"role": "assistant", "content": first["content"]}));
    messages.push(json!({"role": "user", "content": [result(&id, json!("late"), false)]}));
    let answer = s.message(&anthropic(&messages, &[weather()], false)).await;
    assert_eq!(answer["stop_reason"], "end_turn", "{answer}");
    assert_eq!(s.pool.status().replayed, replayed + 1);
    let body = s.mock.message_requests().pop().unwrap().all_text();
    assert!(
        body.contains(id.as_str().unwrap()) && body.contains("late"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_while_parked_or_while_the_resumed_turn_streams_leak_nothing() {
    let s = stack(pool_config(reuse(), 1)).await;

    // A client leaves while the call streams (before message_stop): nothing is held.
    let turns = s.pool.status().turns;
    let response = s
        .post(
            "/v1/messages",
            &anthropic(&[user("[[slow]] [[call]] leave")], &[weather()], true),
        )
        .await;
    let mut bytes = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("input_json_delta") {
        seen.push_str(&String::from_utf8_lossy(
            &bytes.next().await.unwrap().unwrap(),
        ));
    }
    drop(bytes);
    assert!(
        s.pool
            .wait_releases(turns + 1, Duration::from_secs(30))
            .await
    );
    s.until("the interrupted worker is back", |p| {
        p.profiles[0].held == 0 && p.profiles[0].busy == 0
    })
    .await;

    // A client parks a worker, then leaves while its resumed turn streams.
    let mut messages = vec![user("[[call]] go")];
    let first = s.message(&anthropic(&messages, &[weather()], false)).await;
    let id = tool_uses(&first)[0]["id"].clone();
    assert_eq!(s.parked(), 1);
    let turns = s.pool.status().turns;
    messages.push(json!({"role": "assistant", "content": first["content"]}));
    messages.push(
        json!({"role": "user", "content": [result(&id, json!("[[slow]] [[long]] lots"), false)]}),
    );
    let response = s
        .post("/v1/messages", &anthropic(&messages, &[weather()], true))
        .await;
    assert_eq!(response.status(), 200);
    let mut bytes = response.bytes_stream();
    let mut seen = String::new();
    while seen.matches("text_delta").count() < 3 {
        seen.push_str(&String::from_utf8_lossy(
            &bytes.next().await.unwrap().unwrap(),
        ));
    }
    drop(bytes);
    // The resumed turn is interrupted long before its 400 slow deltas, the worker reset.
    assert!(
        s.pool
            .wait_releases(turns + 1, Duration::from_secs(30))
            .await,
        "{:?}",
        s.pool.status()
    );
    s.until("nothing held or busy", |p| {
        p.profiles[0].held == 0 && p.profiles[0].busy == 0
    })
    .await;
    let status = s.pool.status();
    assert_eq!(instance_containers(&s.instance).await.len(), status.workers);

    // The next request works, on a clean conversation.
    let answer = s
        .message(&anthropic(&[user("after")], &[weather()], false))
        .await;
    assert_eq!(text_of(&answer), "Echo: after");
    let last = s.mock.message_requests().pop().unwrap();
    assert_eq!(last.turns().len(), 1, "{:?}", last.turns());
    s.stop().await;
}
