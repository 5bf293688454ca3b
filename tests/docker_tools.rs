//! Client-defined tools on one worker, with the real CLI in a real container and the mock
//! upstream: a call parks the turn and the next request's results resume it on the same
//! process; parallel calls, failed results, an image in a result, bad resumes, a parked
//! worker ended and released, the tool list changed on a running CLI, and a history with
//! tool calls replayed through the transcript.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ccpool::credentials::Credentials;
use ccpool::domain::{
    BlockDelta, BlockKind, ContentBlock, HistoryMessage, LaunchProfile, Role, StopReason,
    ToolChoice, ToolSpec, TurnEvent, TurnItem, TurnOutcome, TurnRequest, TurnStatus,
};
use ccpool::worker::{Worker, WorkerSettings};
use serde_json::{Value, json};
use support::docker::{
    docker, exec_output, instance_containers, remove_by_label_blocking, settings,
};
use support::mock_upstream::{CALL_PREAMBLE, MockUpstream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A 1x1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

fn weather() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: Some("Weather for a city".into()),
        input_schema:
            r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#
                .into(),
    }
}

fn clock() -> ToolSpec {
    ToolSpec {
        name: "get_time".into(),
        description: None,
        input_schema: r#"{"type":"object","properties":{"zone":{"type":"string"}}}"#.into(),
    }
}

fn with_tools(text: &str, tools: Vec<ToolSpec>) -> TurnRequest {
    TurnRequest {
        tools,
        ..TurnRequest::text(text)
    }
}

fn result(id: &str, text: &str) -> ContentBlock {
    ContentBlock::ToolResult {
        tool_use_id: id.into(),
        content: vec![ContentBlock::Text(text.into())],
        is_error: false,
    }
}

fn results_only(blocks: Vec<ContentBlock>) -> TurnRequest {
    TurnRequest {
        content: blocks,
        ..TurnRequest::default()
    }
}

/// One worker against the mock; its containers go when the test ends, even on a failure.
struct Bench {
    mock: MockUpstream,
    worker: Option<Worker>,
    instance: String,
}

impl Bench {
    async fn start() -> Bench {
        let mock = MockUpstream::start().await;
        let settings: WorkerSettings =
            settings(&mock.base_url(), Credentials::ApiKey("sk-test".into()));
        let instance = settings.instance_id.clone();
        let runtime = Arc::new(docker().await);
        let worker = Worker::start(runtime, Arc::new(settings), LaunchProfile::default())
            .await
            .expect("worker starts");
        Bench {
            mock,
            worker: Some(worker),
            instance,
        }
    }

    fn worker(&mut self) -> &mut Worker {
        self.worker.as_mut().expect("worker")
    }

    async fn turn(&mut self, request: TurnRequest) -> (Vec<TurnEvent>, TurnOutcome) {
        let (tx, mut rx) = mpsc::channel(4096);
        let outcome = self
            .worker()
            .run_turn(request, &tx, &CancellationToken::new())
            .await;
        drop(tx);
        let mut events = Vec::new();
        while let Some(item) = rx.recv().await {
            if let TurnItem::Event(e) = item {
                events.push(e);
            }
        }
        (events, outcome)
    }

    /// The PID of the worker's CLI process.
    async fn cli_pid(&mut self) -> String {
        let container = self.worker().container_id().to_string();
        let (code, pid) = exec_output(&container, "1000", "cat /tmp/ccpool-cli.pid").await;
        assert_eq!(code, 0);
        pid.trim().to_string()
    }

    async fn finish(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.remove().await;
        }
        assert!(instance_containers(&self.instance).await.is_empty());
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        remove_by_label_blocking(&format!("ccpool.instance={}", self.instance));
    }
}

fn text_of(events: &[TurnEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::BlockDelta {
                delta: BlockDelta::Text(t),
                ..
            } => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn tool_starts(events: &[TurnEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::BlockStart {
                block: BlockKind::ToolUse { id, name },
                ..
            } => Some((id.clone(), name.clone())),
            _ => None,
        })
        .collect()
}

fn input_of(block: &ContentBlock) -> Value {
    match block {
        ContentBlock::ToolUse { input, .. } => serde_json::from_str(input).unwrap(),
        other => panic!("not a tool call: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_tool_call_parks_the_turn_and_its_result_resumes_the_same_process() {
    let mut bench = Bench::start().await;
    let pid = bench.cli_pid().await;

    let (events, outcome) = bench
        .turn(with_tools(
            r#"[[call]] weather please [[input:{"city":"Paris"}]]"#,
            vec![weather()],
        ))
        .await;
    assert_eq!(outcome.status, TurnStatus::Completed, "{outcome:?}");
    assert_eq!(outcome.stop_reason, Some(StopReason::ToolUse));
    let calls = tool_starts(&events);
    assert_eq!(calls.len(), 1, "{events:?}");
    let (id, name) = calls[0].clone();
    assert_eq!(name, "get_weather", "the client's own name, never mcp__…");
    assert!(id.starts_with("toolu_mock_"), "the upstream's own id: {id}");
    assert_eq!(outcome.awaiting_tools, vec![id.clone()]);
    assert_eq!(bench.worker().awaiting_tools(), std::slice::from_ref(&id));
    assert_eq!(outcome.answer.len(), 1);
    assert_eq!(input_of(&outcome.answer[0]), json!({"city": "Paris"}));
    assert!(matches!(
        events.iter().rev().nth(1),
        Some(TurnEvent::MessageDelta {
            stop_reason: Some(StopReason::ToolUse),
            ..
        })
    ));
    assert_eq!(events.last(), Some(&TurnEvent::MessageStop));

    // The upstream saw the client's tool with its schema.
    let first = &bench.mock.message_requests()[0];
    let offered = first.client_tools();
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0]["name"], "mcp__client__get_weather");
    assert_eq!(
        offered[0]["input_schema"],
        serde_json::from_str::<Value>(&weather().input_schema).unwrap()
    );
    assert_eq!(offered[0]["description"], "Weather for a city");

    let started = Instant::now();
    let (events, outcome) = bench
        .turn(results_only(vec![result(&id, "sunny, 21C")]))
        .await;
    eprintln!("resumed turn took {:?}", started.elapsed());
    assert_eq!(outcome.status, TurnStatus::Completed, "{outcome:?}");
    assert_eq!(outcome.stop_reason, Some(StopReason::EndTurn));
    assert!(outcome.awaiting_tools.is_empty());
    assert_eq!(text_of(&events), "Tool said: sunny, 21C");
    assert_eq!(
        outcome.answer,
        vec![ContentBlock::Text("Tool said: sunny, 21C".into())]
    );
    let requests = bench.mock.message_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].tool_results(),
        vec![(id.clone(), false, "sunny, 21C".to_string())]
    );
    assert_eq!(bench.cli_pid().await, pid, "no CLI start: the same process");
    bench.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_calls_take_results_in_any_order_with_errors_and_images() {
    let mut bench = Bench::start().await;
    let (events, outcome) = bench
        .turn(with_tools("[[call2]] two things", vec![weather(), clock()]))
        .await;
    assert_eq!(
        outcome.stop_reason,
        Some(StopReason::ToolUse),
        "{outcome:?}"
    );
    let calls = tool_starts(&events);
    let names: Vec<&str> = calls.iter().map(|(_, n)| n.as_str()).collect();
    // The mock calls the tools in the order the CLI lists them upstream (by name).
    assert_eq!(names, vec!["get_time", "get_weather"]);
    let ids: Vec<String> = calls.iter().map(|(id, _)| id.clone()).collect();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(outcome.awaiting_tools, ids);
    assert_eq!(
        input_of(&outcome.answer[1]),
        json!({"q": "[[call2]] two things", "n": 2})
    );

    // Results in the other order; the first failed, the second carries an image.
    let (events, outcome) = bench
        .turn(results_only(vec![
            ContentBlock::ToolResult {
                tool_use_id: ids[1].clone(),
                content: vec![
                    ContentBlock::Text("noon".into()),
                    ContentBlock::Image {
                        media_type: "image/png".into(),
                        data: PNG.into(),
                    },
                ],
                is_error: false,
            },
            ContentBlock::ToolResult {
                tool_use_id: ids[0].clone(),
                content: vec![ContentBlock::Text("no such city".into())],
                is_error: true,
            },
        ]))
        .await;
    assert_eq!(outcome.status, TurnStatus::Completed, "{outcome:?}");
    let requests = bench.mock.message_requests();
    let results = requests[1].tool_results();
    assert_eq!(
        results,
        vec![
            (ids[0].clone(), true, "no such city".to_string()),
            (ids[1].clone(), false, "noon\n[image]".to_string()),
        ],
        "in the order of the calls: {}",
        requests[1].all_text()
    );
    assert_eq!(
        text_of(&events),
        "Tool said: [error] no such city | noon\n[image]"
    );
    bench.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resumes_are_refused_and_a_parked_turn_can_be_ended_and_the_worker_reused() {
    let mut bench = Bench::start().await;
    let pid = bench.cli_pid().await;
    let (_, outcome) = bench
        .turn(with_tools("[[textcall]] look it up", vec![weather()]))
        .await;
    assert_eq!(outcome.answer[0], ContentBlock::Text(CALL_PREAMBLE.into()));
    assert_eq!(outcome.text, CALL_PREAMBLE);
    let id = outcome.awaiting_tools[0].clone();

    let (_, unknown) = bench
        .turn(results_only(vec![result("toolu_nope", "x")]))
        .await;
    assert!(
        matches!(&unknown.status, TurnStatus::UpstreamError { status: Some(400), message, .. } if message.contains("toolu_nope")),
        "{unknown:?}"
    );
    let (_, missing) = bench
        .turn(results_only(vec![ContentBlock::Text("hello?".into())]))
        .await;
    assert!(
        matches!(&missing.status, TurnStatus::UpstreamError { status: Some(400), message, .. } if message.contains(&id)),
        "{missing:?}"
    );
    assert_eq!(
        bench.worker().awaiting_tools(),
        std::slice::from_ref(&id),
        "still parked"
    );

    // The client never comes back: the parked turn is ended, the conversation cleared.
    bench
        .worker()
        .reset(Duration::from_secs(20))
        .await
        .expect("reset of a parked worker");
    assert!(bench.worker().awaiting_tools().is_empty());
    assert_eq!(
        bench.mock.message_request_count(),
        1,
        "ending the parked turn asks nothing of the upstream"
    );
    let (events, outcome) = bench.turn(TurnRequest::text("fresh start")).await;
    assert_eq!(outcome.status, TurnStatus::Completed, "{outcome:?}");
    assert_eq!(text_of(&events), "Echo: fresh start");
    let last = bench.mock.message_requests().pop().unwrap();
    assert_eq!(
        last.turns().len(),
        1,
        "nothing of the ended turn: {:?}",
        last.turns()
    );
    assert_eq!(bench.cli_pid().await, pid);

    // A parked worker that is dropped leaves nothing behind.
    let (_, outcome) = bench
        .turn(with_tools("[[call]] again", vec![weather()]))
        .await;
    assert_eq!(outcome.awaiting_tools.len(), 1);
    let worker = bench.worker.take().unwrap();
    worker.remove().await;
    assert!(instance_containers(&bench.instance).await.is_empty());
    bench.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cli_changes_its_tool_list_between_turns_and_never_offers_a_dropped_tool() {
    let mut bench = Bench::start().await;
    let pid = bench.cli_pid().await;
    let (_, outcome) = bench.turn(with_tools("first", vec![weather()])).await;
    assert!(outcome.is_success(), "{outcome:?}");
    // A new conversation whose list drops a tool: the CLI would keep offering it (even after
    // a rewind), so it gets a new process.
    bench.worker().reset(Duration::from_secs(20)).await.unwrap();
    let (_, outcome) = bench.turn(with_tools("second", vec![clock()])).await;
    assert!(outcome.is_success(), "{outcome:?}");
    let second_pid = bench.cli_pid().await;
    assert_ne!(
        second_pid, pid,
        "a new CLI process for a list that drops a tool"
    );
    // No tools at all offers nothing, on the same process.
    bench.worker().reset(Duration::from_secs(20)).await.unwrap();
    let (_, outcome) = bench
        .turn(TurnRequest {
            tool_choice: ToolChoice::None,
            ..with_tools("third", vec![clock()])
        })
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(bench.cli_pid().await, second_pid);
    // Dropping a tool again: a new process again. A list that only adds tools then changes
    // on the running CLI, within the conversation.
    bench.worker().reset(Duration::from_secs(20)).await.unwrap();
    let (_, outcome) = bench.turn(with_tools("fourth", vec![weather()])).await;
    assert!(outcome.is_success(), "{outcome:?}");
    let fourth_pid = bench.cli_pid().await;
    assert_ne!(fourth_pid, second_pid);
    let started = Instant::now();
    let (_, outcome) = bench
        .turn(with_tools("fifth", vec![weather(), clock()]))
        .await;
    eprintln!("turn with a changed tool list took {:?}", started.elapsed());
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(
        bench.cli_pid().await,
        fourth_pid,
        "the list changed on the running CLI"
    );
    let offered: Vec<Vec<Value>> = bench
        .mock
        .message_requests()
        .iter()
        .map(|r| r.client_tools().iter().map(|t| t["name"].clone()).collect())
        .collect();
    let weather_name = json!("mcp__client__get_weather");
    let clock_name = json!("mcp__client__get_time");
    assert_eq!(
        offered,
        vec![
            vec![weather_name.clone()],
            vec![clock_name.clone()],
            vec![],
            vec![weather_name.clone()],
            vec![clock_name, weather_name],
        ],
        "exactly each turn's tools, by name (tool_choice none offers nothing)"
    );
    bench.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_with_tool_calls_is_replayed_and_results_alone_can_be_the_new_turn() {
    let mut bench = Bench::start().await;
    let call = ContentBlock::ToolUse {
        id: "toolu_h1".into(),
        name: "get_weather".into(),
        input: r#"{"city":"Oslo"}"#.into(),
    };
    let history = vec![
        HistoryMessage {
            role: Role::User,
            content: vec![ContentBlock::Text("weather in Oslo?".into())],
        },
        HistoryMessage {
            role: Role::Assistant,
            content: vec![ContentBlock::Text("Checking.".into()), call.clone()],
        },
        HistoryMessage {
            role: Role::User,
            content: vec![result("toolu_h1", "snow")],
        },
        HistoryMessage {
            role: Role::Assistant,
            content: vec![ContentBlock::Text("It snows in Oslo.".into())],
        },
    ];
    let (events, outcome) = bench
        .turn(TurnRequest {
            history: history.clone(),
            ..with_tools("thanks", vec![weather()])
        })
        .await;
    assert_eq!(outcome.status, TurnStatus::Completed, "{outcome:?}");
    assert_eq!(text_of(&events), "Echo: thanks");
    let request = bench.mock.message_requests().pop().unwrap();
    let messages = request.messages();
    let body = request.all_text();
    assert!(
        body.contains(r#""name":"mcp__client__get_weather""#),
        "the call under the model-facing name: {body}"
    );
    assert!(body.contains(r#""tool_use_id":"toolu_h1""#), "{body}");
    assert!(messages.len() >= 5, "{messages:?}");

    // The new user message is only the results of the history's last call.
    bench.worker().reset(Duration::from_secs(20)).await.unwrap();
    let (events, outcome) = bench
        .turn(TurnRequest {
            history: history[..2].to_vec(),
            content: vec![result("toolu_h1", "rain")],
            tools: vec![weather()],
            ..TurnRequest::default()
        })
        .await;
    assert_eq!(outcome.status, TurnStatus::Completed, "{outcome:?}");
    // The results join the replayed history (the CLI takes tool results only as answers to
    // its own calls); the CLI then puts its "No response requested." placeholder after them.
    let request = bench.mock.message_requests().pop().unwrap();
    let messages = request.messages();
    let answered = messages.iter().position(|m| {
        m["content"][0]["type"] == "tool_result" && m["content"][0]["tool_use_id"] == "toolu_h1"
    });
    let answered = answered.unwrap_or_else(|| panic!("no tool_result: {messages:?}"));
    assert_eq!(
        messages[answered]["content"][0]["content"][0]["text"],
        "rain"
    );
    assert_eq!(
        messages[answered - 1]["content"][1]["name"],
        "mcp__client__get_weather"
    );
    assert!(!events.is_empty());
    bench.finish().await;
}
