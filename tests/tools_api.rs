//! Client tools end to end in both APIs: ccpool's HTTP server, the real engine and CLI, the
//! mock upstream, and the official anthropic and openai SDKs as the clients. A call comes back
//! under the client's name with the upstream's id, and the results reach the upstream.

mod support;

use ccpool::credentials::Credentials;
use serde_json::json;
use support::api::{Server, run_sdk_script};
use support::docker::{pool_config, reuse, settings, shutdown_clean, start_pool};
use support::mock_upstream::MockUpstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_round_trips_with_the_official_sdks() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    let server = Server::start(&pool).await;
    let out = run_sdk_script("tools_client.py", &[&server.base_url]).await;

    let call = &out["anthropic_call"];
    assert_eq!(call["name"], "get_weather", "{out}");
    assert_eq!(call["input"], json!({"city": "Oslo"}));
    assert_eq!(call["stop_reason"], "tool_use");
    assert!(call["id"].as_str().unwrap().starts_with("toolu_mock_"));
    assert!(
        !call["partial"].as_array().unwrap().is_empty(),
        "input_json_delta streamed"
    );
    assert_eq!(out["anthropic_answer"]["stop_reason"], "end_turn", "{out}");
    assert_eq!(out["server_tool"]["status"], 400);
    assert!(
        out["server_tool"]["message"]
            .as_str()
            .unwrap()
            .contains("web_search_20250305")
    );

    let calls = out["openai_calls"]["calls"].as_array().unwrap();
    assert_eq!(out["openai_calls"]["finish_reason"], "tool_calls", "{out}");
    let names: Vec<&str> = calls.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["get_time", "get_weather"]);
    let second: serde_json::Value =
        serde_json::from_str(calls[1]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(second, json!({"q": "[[call2]] both please", "n": 2}));
    assert_eq!(out["openai_answer"]["finish_reason"], "stop", "{out}");

    // What reached the upstream: the client's schema, and every result in order.
    let requests = mock.message_requests();
    let offered = requests[0].client_tools();
    assert_eq!(offered[0]["name"], "mcp__client__get_weather");
    assert_eq!(offered[0]["input_schema"]["required"], json!(["city"]));
    let results: Vec<Vec<String>> = requests
        .iter()
        .map(|r| r.all_text())
        .map(|body| {
            ["snow, -3C", "result 0", "result 1"]
                .iter()
                .filter(|t| body.contains(*t))
                .map(|t| t.to_string())
                .collect()
        })
        .collect();
    assert!(
        results.iter().any(|r| r == &["snow, -3C".to_string()]),
        "the Anthropic result reached the upstream: {results:?}"
    );
    let openai_results = requests
        .iter()
        .find(|r| r.all_text().contains("result 0"))
        .expect("the OpenAI results reached the upstream");
    let body = openai_results.all_text();
    assert!(body.find("result 0") < body.find("result 1"), "in order");
    server.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}
