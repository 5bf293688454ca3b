//! `POST /v1/chat/completions` end to end: ccpool's HTTP server, the real Docker engine, the
//! real CLI in containers and the mock upstream, driven by the official openai SDK and by raw
//! HTTP for bad input.

mod support;

use ccpool::credentials::Credentials;
use serde_json::{Value, json};
use support::api::{Server, run_sdk_script};
use support::docker::{pool_config, reuse, settings, shutdown_clean, start_pool};
use support::mock_upstream::MockUpstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_works_unmodified() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    let server = Server::start(&pool).await;

    let out = run_sdk_script("openai_client.py", &[&server.base_url]).await;

    assert_eq!(out["plain"]["content"], "Echo: openai turn three");
    assert_eq!(out["plain"]["model"], "gpt-4o");
    assert_eq!(out["plain"]["finish_reason"], "stop");
    assert!(out["plain"]["prompt_tokens"].as_u64().unwrap() > 0);
    let requests = mock.message_requests();
    let main = requests
        .iter()
        .find(|r| r.last_user_prompt() == "openai turn three")
        .expect("the conversation reached the upstream");
    let system = main.system_text();
    let (a, b) = (
        system.find("SYSTEM-PART-A").expect("system"),
        system.find("DEVELOPER-PART-B").expect("developer"),
    );
    assert!(a < b, "system then developer: {system}");
    assert_eq!(
        main.body["model"], "claude-sonnet-4-5",
        "the alias reached the upstream as a Claude model"
    );
    assert_eq!(main.body["max_tokens"], 200);
    let turns = main.turns();
    let expected: Vec<(String, String)> = [
        ("user", "openai turn one"),
        ("assistant", "openai answer one"),
        ("user", "openai turn two"),
        ("assistant", "openai answer two"),
        ("user", "openai turn three"),
    ]
    .iter()
    .map(|(r, t)| (r.to_string(), t.to_string()))
    .collect();
    assert_eq!(turns, expected);
    let last = main
        .messages()
        .into_iter()
        .rfind(|m| m["role"] == "user")
        .unwrap();
    assert!(
        last["content"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["type"] == "image" && b["source"]["media_type"] == "image/png")
    );

    assert_eq!(
        out["stream"]["ids"].as_array().unwrap().len(),
        1,
        "one id for the stream"
    );
    assert_eq!(out["stream"]["first_role"], "assistant");
    let deltas: Vec<&str> = out["stream"]["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(deltas.len() >= 3, "token by token: {deltas:?}");
    assert_eq!(deltas.concat(), "Echo: openai streamed reply");
    assert_eq!(out["stream"]["finish_reasons"], json!(["stop"]));
    assert!(
        out["stream"]["usage"].as_u64().unwrap() > 0,
        "include_usage"
    );
    assert_eq!(out["stream"]["last_choices"], 0);

    assert_eq!(
        out["json_schema"],
        json!({"city": "Paris", "population": 2102650})
    );
    assert!(
        mock.message_requests()
            .iter()
            .any(|r| r.offers_tool("StructuredOutput")),
        "json_schema reached the CLI as --json-schema, which offers the model its StructuredOutput tool"
    );

    assert_eq!(
        out["n2"],
        json!({"status": 400, "class": "BadRequestError", "param": "n"})
    );
    assert_eq!(out["rate_limited"]["status"], 429);
    assert_eq!(out["overloaded"]["status"], 503);
    let models: Vec<&str> = out["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        models.contains(&"gpt-4o") && models.iter().any(|m| m.starts_with("claude-")),
        "{models:?}"
    );

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
        "{{\"model\":\"gpt-4o\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "a".repeat(20 * 1024 * 1024)
    );
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        ("{{{".into(), 400, None),
        (json!({"model": "gpt-4o", "messages": {"role": "user", "content": "x"}}).to_string(), 400, Some("messages")),
        (json!({"model": "gpt-4o", "messages": [{"role": "narrator", "content": "x"}]}).to_string(), 400, Some("messages[0].role")),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": ""}]}).to_string(), 400, Some("messages[0].content")),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}).to_string(), 400, Some("max_tokens")),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 2}).to_string(), 400, Some("n")),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}).to_string(), 400, Some("messages[0].content[0].image_url.url")),
        (huge, 413, None),
    ];
    for (body, status, param) in cases {
        let response = http
            .post(format!("{}/v1/chat/completions", server.base_url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "{text}");
        let e: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert!(
            e["error"]["message"].is_string() && e["error"]["type"].is_string(),
            "{text}"
        );
        if let Some(param) = param {
            assert_eq!(e["error"]["param"], param, "{text}");
        }
    }
    assert!(
        mock.message_requests().is_empty(),
        "no bad request reached the upstream"
    );
    server.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}
