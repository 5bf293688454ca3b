//! Upstream fidelity end to end: what the model sees is the client's request and nothing else
//! but the documented additions (README, "What the model sees"). Each client request is
//! compared with the upstream request the mock recorded for it: the client's messages, in
//! order, block for block; the system prompt as the CLI's billing header and identity line
//! plus the client's text; the CLI's environment notes only as `system` messages after the
//! user's turn; no reset notes on reused workers; no model validation requests; and a cut
//! upstream stream reaches the client as an error in both APIs, streamed or not.

mod support;

use ccpool::credentials::Credentials;
use serde_json::{Value, json};
use support::api::Server;
use support::docker::{TestPool, pool_config, reuse, settings, shutdown_clean, start_pool};
use support::mock_upstream::{MockUpstream, RecordedRequest, parse_sse};

/// The identity line the CLI puts after its billing header (2.1.327, `-p` without
/// `--append-system-prompt`).
const IDENTITY: &str = "You are a Claude agent, built on Anthropic's Claude Agent SDK.";

/// A 1x1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

struct Stack {
    mock: MockUpstream,
    pool: TestPool,
    server: Server,
    http: reqwest::Client,
}

async fn stack() -> Stack {
    let mock = MockUpstream::start().await;
    let mut config = pool_config(reuse(), 1);
    config.max_workers = 4;
    // Affinity off: this test reuses workers after their reset, which is what it checks.
    config.hold_idle = std::time::Duration::ZERO;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        config,
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
    async fn post(&self, path: &str, body: &Value) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.server.base_url))
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Sends a request and returns the upstream requests it caused.
    async fn upstream_of(&self, path: &str, body: &Value) -> Vec<RecordedRequest> {
        let before = self.mock.message_request_count();
        let (status, text) = self.post(path, body).await;
        assert_eq!(status, 200, "{text}");
        // The answer is out before the worker's reset; the reset causes no request.
        let after = self.mock.message_requests();
        after[before..].to_vec()
    }

    async fn stop(self) {
        self.server.stop().await;
        shutdown_clean(self.pool).await;
        self.mock.shutdown().await;
    }
}

/// Content as a list of blocks (a string is one text block).
fn blocks(content: &Value) -> Value {
    match content {
        Value::String(s) => json!([{"type": "text", "text": s}]),
        other => other.clone(),
    }
}

/// The upstream messages without the CLI's `system` notes, and the texts of those notes.
fn split_notes(request: &RecordedRequest) -> (Vec<Value>, Vec<String>) {
    let (notes, messages): (Vec<Value>, Vec<Value>) = request
        .messages()
        .into_iter()
        .partition(|m| m["role"] == "system");
    let texts = notes
        .iter()
        .flat_map(|m| match &m["content"] {
            Value::String(s) => vec![s.clone()],
            blocks => blocks
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["text"].as_str().unwrap_or_default().to_string())
                .collect(),
        })
        .collect();
    let messages = messages
        .into_iter()
        .map(|m| {
            // The CLI marks blocks for prompt caching; that changes nothing the model reads.
            let mut content = blocks(&m["content"]);
            for block in content.as_array_mut().unwrap() {
                block.as_object_mut().unwrap().remove("cache_control");
            }
            json!({"role": m["role"], "content": content})
        })
        .collect();
    (messages, texts)
}

/// Asserts the upstream request is the client's conversation plus only the documented
/// additions.
fn assert_faithful(request: &RecordedRequest, client_messages: &[Value], client_system: &[&str]) {
    let (messages, notes) = split_notes(request);
    let expected: Vec<Value> = client_messages
        .iter()
        .map(|m| json!({"role": m["role"], "content": blocks(&m["content"])}))
        .collect();
    assert_eq!(messages, expected, "the client's messages, in order, only");
    // The notes: the environment, the model and the date, after the user's turn.
    let last_user = request
        .messages()
        .iter()
        .rposition(|m| m["role"] == "user")
        .unwrap();
    let first_note = request
        .messages()
        .iter()
        .position(|m| m["role"] == "system");
    assert!(first_note.is_none_or(|at| at > last_user));
    for note in &notes {
        assert!(
            note.starts_with("# Environment") || note.starts_with("You are powered by"),
            "an undocumented note: {note}"
        );
    }
    let system: Vec<String> = request.body["system"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        system[0].starts_with("x-anthropic-billing-header: "),
        "{system:?}"
    );
    assert_eq!(system[1], IDENTITY);
    assert_eq!(&system[2..], client_system, "no agent prompt of the CLI's");
    let text = request.all_text();
    for trace in ["local-command", "<command-name>", "/clear"] {
        assert!(!text.contains(trace), "{trace} reached the upstream");
    }
}

fn anthropic(model: &str, system: Option<&str>, messages: Value) -> Value {
    let mut body = json!({"model": model, "max_tokens": 1024, "messages": messages});
    if let Some(system) = system {
        body["system"] = json!(system);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_the_clients_request_and_only_the_documented_additions() {
    let s = stack().await;

    // No system prompt; then the same client again on the reused worker.
    for prompt in ["first conversation", "second conversation"] {
        let messages = json!([{"role": "user", "content": prompt}]);
        let sent = s
            .upstream_of(
                "/v1/messages",
                &anthropic("claude-sonnet-4-5", None, messages.clone()),
            )
            .await;
        assert_eq!(sent.len(), 1);
        assert_faithful(&sent[0], messages.as_array().unwrap(), &[]);
        s.pool
            .wait_releases(s.pool.status().turns, std::time::Duration::from_secs(30))
            .await;
    }
    assert!(s.pool.status().reused >= 1, "{:?}", s.pool.status());

    // A system prompt, a history and an image, streamed.
    let messages = json!([
        {"role": "user", "content": "remember pelican-42"},
        {"role": "assistant", "content": [{"type": "text", "text": "Noted: pelican-42."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "what is in this image?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
        ]}
    ]);
    let mut body = anthropic("claude-sonnet-4-5", Some("Be terse."), messages.clone());
    body["stream"] = json!(true);
    let sent = s.upstream_of("/v1/messages", &body).await;
    assert_eq!(sent.len(), 1);
    assert_faithful(&sent[0], messages.as_array().unwrap(), &["Be terse."]);

    // Other models: the model asked for, no validation request, no remapping.
    for model in ["claude-haiku-4-5", "claude-opus-4-1"] {
        let messages = json!([{"role": "user", "content": format!("hello {model}")}]);
        let sent = s
            .upstream_of("/v1/messages", &anthropic(model, None, messages.clone()))
            .await;
        assert_eq!(sent.len(), 1, "{model}: one request, no validation first");
        assert_eq!(sent[0].model(), Some(model));
        assert_faithful(&sent[0], messages.as_array().unwrap(), &[]);
    }

    // The OpenAI dialect: its system message becomes the system prompt.
    let body = json!({"model": "claude-sonnet-4-5", "messages": [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "hello from openai"}
    ]});
    let sent = s.upstream_of("/v1/chat/completions", &body).await;
    assert_eq!(sent.len(), 1);
    assert_faithful(
        &sent[0],
        &[json!({"role": "user", "content": "hello from openai"})],
        &["Answer in French."],
    );

    // Structured output: the CLI offers the model its StructuredOutput tool (documented); the
    // tool call ends the turn.
    let body = json!({"model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "[[json:{\"city\":\"Paris\"}]] where?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema":
            {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}});
    let sent = s.upstream_of("/v1/chat/completions", &body).await;
    assert_eq!(sent.len(), 1);
    assert_faithful(
        &sent[0],
        &[json!({"role": "user", "content": "[[json:{\"city\":\"Paris\"}]] where?"})],
        &[],
    );
    // With tools offered, the CLI also declares a deferred placeholder (`defer_loading`: not
    // loaded into the model's context) that goes with its system notes (documented).
    let tools: Vec<&str> = sent[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !(t["name"] == "DeferredToolPlaceholder" && t["defer_loading"] == true))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["StructuredOutput"]);

    // The same through the Anthropic API's output_config.format: the object is the text.
    let mut body = anthropic(
        "claude-sonnet-4-5",
        None,
        json!([{"role": "user", "content": "[[json:{\"city\":\"Oslo\"}]] where?"}]),
    );
    body["output_config"] = json!({"format": {"type": "json_schema", "schema":
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}});
    let before = s.mock.message_request_count();
    let (status, text) = s.post("/v1/messages", &body).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["content"],
        json!([{"type": "text", "text": "{\"city\":\"Oslo\"}"}])
    );
    let sent = s.mock.message_requests()[before..].to_vec();
    assert_eq!(sent.len(), 1);
    assert_faithful(
        &sent[0],
        &[json!({"role": "user", "content": "[[json:{\"city\":\"Oslo\"}]] where?"})],
        &[],
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_requests_over_three_models_make_exactly_n_upstream_requests() {
    let s = stack().await;
    let models = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"];
    let n = 9;
    for i in 0..n {
        let model = models[i % 3];
        let messages = json!([{"role": "user", "content": format!("request {i}")}]);
        let (path, body) = if i % 2 == 0 {
            ("/v1/messages", anthropic(model, None, messages))
        } else {
            (
                "/v1/chat/completions",
                json!({"model": model, "messages": messages}),
            )
        };
        let (status, text) = s.post(path, &body).await;
        assert_eq!(status, 200, "{text}");
    }
    let requests = s.mock.message_requests();
    assert_eq!(
        requests.len(),
        n,
        "{:?}",
        requests
            .iter()
            .map(|r| r.last_user_prompt())
            .collect::<Vec<_>>()
    );
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.model(), Some(models[i % 3]));
        assert_eq!(request.last_user_prompt(), format!("request {i}"));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_upstream_stream_is_an_error_in_both_apis_streamed_or_not() {
    let s = stack().await;
    for stream in [false, true] {
        let before = s.mock.message_request_count();
        let mut body = anthropic(
            "claude-sonnet-4-5",
            None,
            json!([{"role": "user", "content": "[[midfail]] tell me"}]),
        );
        body["stream"] = json!(stream);
        let (status, text) = s.post("/v1/messages", &body).await;
        if stream {
            assert_eq!(status, 200, "{text}");
            let names: Vec<String> = parse_sse(&text).into_iter().map(|(n, _)| n).collect();
            assert_eq!(names.last().map(String::as_str), Some("error"), "{names:?}");
            assert!(!names.iter().any(|n| n == "message_stop"), "{names:?}");
        } else {
            assert_eq!(status, 502, "{text}");
            let e: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(e["error"]["type"], "api_error", "{text}");
        }
        assert_eq!(s.mock.message_request_count(), before + 1, "no retry");

        let mut body = json!({"model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "[[midfail]] tell me"}]});
        body["stream"] = json!(stream);
        let (status, text) = s.post("/v1/chat/completions", &body).await;
        if stream {
            assert_eq!(status, 200, "{text}");
            let chunks: Vec<&str> = text
                .split("\n\n")
                .filter_map(|c| c.trim().strip_prefix("data: "))
                .collect();
            let last: Value = serde_json::from_str(chunks.last().unwrap()).unwrap();
            assert!(last.get("error").is_some(), "{text}");
            assert!(!text.contains("\"finish_reason\":\"stop\""), "{text}");
            assert!(!text.contains("[DONE]"), "{text}");
        } else {
            assert_eq!(status, 502, "{text}");
            let e: Value = serde_json::from_str(&text).unwrap();
            assert!(e["error"]["message"].is_string(), "{text}");
        }
    }
    s.stop().await;
}
