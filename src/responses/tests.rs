//! Router tests of the Responses dialect over the fake runtime, whose CLI replays the recorded
//! output of the real one: the object, the stream, the stored responses and their owners.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::fake::{TestApp, harness};
use crate::http::app;

fn ask(input: &str) -> Value {
    json!({"model": "gpt-4o", "input": input})
}

/// Sends a request with the client key `key`; returns the status and the body.
async fn send(
    h: &TestApp,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = app(h.state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn create(h: &TestApp, key: &str, body: Value) -> Value {
    let (status, text) = send(h, "POST", "/v1/responses", key, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The named events of an SSE body: (event name, data).
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|chunk| {
            let name = chunk.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = chunk.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_string(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

#[tokio::test]
async fn a_response_object_with_the_requested_model() {
    let h = harness().await;
    let r = create(&h, "k1", ask("[[fixture:text_partial]]")).await;
    assert!(r["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "gpt-4o", "the name the client asked for");
    assert!(r["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(r["output"].as_array().unwrap().len(), 1);
    let message = &r["output"][0];
    assert_eq!(
        (message["type"].as_str(), message["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        message["content"],
        json!([{"type": "output_text", "text": "Echo: Say hello", "annotations": [], "logprobs": []}])
    );
    assert_eq!(r["usage"]["input_tokens"], 12);
    assert_eq!(r["usage"]["output_tokens"], 9);
    assert_eq!(r["usage"]["total_tokens"], 21);
    assert!(
        h.launch_models().iter().any(|m| m == "claude-sonnet-4-5"),
        "the alias reached the CLI as a Claude model: {:?}",
        h.launch_models()
    );
    h.stop().await;
}

#[tokio::test]
async fn the_stream_tells_the_response_event_by_event() {
    let h = harness().await;
    let mut body = ask("[[fixture:text_partial]]");
    body["stream"] = json!(true);
    let (status, text) = send(&h, "POST", "/openai/v1/responses", "k1", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let events = events(&text);
    for (n, (name, data)) in events.iter().enumerate() {
        assert_eq!(
            data["type"],
            name.as_str(),
            "the SSE name is the event's type"
        );
        assert_eq!(data["sequence_number"], n as u64);
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        names[names.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(deltas, vec!["Echo: ", "Say ", "hello"], "token by token");
    let id = events[0].1["response"]["id"].as_str().unwrap();
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["id"], id);
    assert_eq!(done["output"][0]["content"][0]["text"], "Echo: Say hello");
    let (status, kept) = send(&h, "GET", &format!("/v1/responses/{id}"), "k1", None).await;
    assert_eq!(status, StatusCode::OK, "a streamed response is kept too");
    assert_eq!(serde_json::from_str::<Value>(&kept).unwrap(), *done);
    h.stop().await;
}

#[tokio::test]
async fn max_output_tokens_ends_incomplete() {
    let h = harness().await;
    let mut body = ask("[[fixture:max_tokens_partial]]");
    body["max_output_tokens"] = json!(50);
    let r = create(&h, "k1", body).await;
    assert_eq!(r["status"], "incomplete");
    assert_eq!(
        r["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(r["max_output_tokens"], 50);
    assert_eq!(
        h.pool.status().profiles.len(),
        2,
        "the limit makes a launch profile of its own"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_json_schema_format_returns_the_validated_object_as_output_text() {
    let h = harness().await;
    let mut body = ask("[[fixture:json_schema_partial]]");
    body["text"] = json!({"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}, "strict": true}});
    let r = create(&h, "k1", body).await;
    assert_eq!(r["output"][0]["content"][0]["text"], r#"{"answer":42}"#);
    assert_eq!(r["text"]["format"]["name"], "answer");
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
        let (got, text) = send(
            &h,
            "POST",
            "/v1/responses",
            "k1",
            Some(ask(&format!("[[fixture:{fixture}]]"))),
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
    }
    h.stop().await;
}

#[tokio::test]
async fn a_stored_response_belongs_to_its_key() {
    let h = harness().await;
    let r = create(&h, "k1", ask("[[fixture:text_partial]]")).await;
    let id = r["id"].as_str().unwrap();
    let path = format!("/v1/responses/{id}");

    let (status, text) = send(&h, "GET", &path, "k1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), r);

    let (status, text) = send(&h, "GET", &format!("{path}/input_items"), "k1", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let items: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["type"], "message");
    assert_eq!(items["data"][0]["role"], "user");
    assert_eq!(
        items["data"][0]["content"],
        json!([{"type": "input_text", "text": "[[fixture:text_partial]]"}])
    );
    assert_eq!(items["first_id"], items["data"][0]["id"]);
    assert_eq!(items["has_more"], false);

    for (method, path) in [
        ("GET", path.clone()),
        ("GET", format!("{path}/input_items")),
        ("DELETE", path.clone()),
    ] {
        let (status, text) = send(&h, method, &path, "k2", None).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "another key: {method} {path}"
        );
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert!(e["error"]["message"].as_str().unwrap().contains(id));
    }
    let mut follow = ask("[[fixture:text_partial]]");
    follow["previous_response_id"] = json!(id);
    let (status, text) = send(&h, "POST", "/v1/responses", "k2", Some(follow)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another key cannot continue it: {text}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["param"],
        "previous_response_id"
    );

    let (status, text) = send(&h, "DELETE", &path, "k1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"id": id, "object": "response.deleted", "deleted": true})
    );
    let (status, _) = send(&h, "GET", &path, "k1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let mut unkept = ask("[[fixture:text_partial]]");
    unkept["store"] = json!(false);
    let r = create(&h, "k1", unkept).await;
    assert_eq!(r["store"], false);
    let (status, _) = send(
        &h,
        "GET",
        &format!("/v1/responses/{}", r["id"].as_str().unwrap()),
        "k1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "store: false keeps nothing");
    h.stop().await;
}

#[tokio::test]
async fn previous_response_id_replays_the_stored_conversation() {
    let h = harness().await;
    let mut first = ask("first question");
    first["input"] =
        json!([{"role": "user", "content": "[[fixture:text_partial]] first question"}]);
    first["instructions"] = json!("Answer in French.");
    let r1 = create(&h, "k1", first).await;
    let mut second = ask("[[fixture:text_partial]] second question");
    second["previous_response_id"] = r1["id"].clone();
    let r2 = create(&h, "k1", second).await;
    assert_eq!(r2["previous_response_id"], r1["id"]);
    assert_eq!(
        r2["instructions"],
        Value::Null,
        "instructions are not carried over"
    );
    let transcript = h
        .fake
        .written()
        .into_iter()
        .find(|w| w.contains("first question"))
        .expect("the stored conversation is replayed as a transcript");
    let lines: Vec<Value> = transcript
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["type"].as_str(), lines[1]["type"].as_str()),
        (Some("user"), Some("assistant"))
    );
    assert!(
        lines[1].to_string().contains("Echo: Say hello"),
        "the answer it was shown"
    );

    let (_, text) = send(
        &h,
        "GET",
        &format!(
            "/v1/responses/{}/input_items?order=asc",
            r2["id"].as_str().unwrap()
        ),
        "k1",
        None,
    )
    .await;
    let items: Value = serde_json::from_str(&text).unwrap();
    let roles: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        vec!["user", "assistant", "user"],
        "the whole conversation it answered"
    );
    assert_eq!(items["data"][1]["id"], r1["output"][0]["id"]);

    let (_, text) = send(
        &h,
        "GET",
        &format!(
            "/v1/responses/{}/input_items?limit=1",
            r2["id"].as_str().unwrap()
        ),
        "k1",
        None,
    )
    .await;
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], true);
    assert_eq!(
        page["data"][0]["content"][0]["text"], "[[fixture:text_partial]] second question",
        "newest first by default"
    );
    h.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_in_the_openai_shape() {
    let h = harness().await;
    let big = format!(
        "{{\"model\":\"m\",\"input\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        ("not json".into(), 400, None),
        (json!({"model": "m"}).to_string(), 400, Some("input")),
        (
            json!({"model": "m", "input": [{"role": "narrator", "content": "x"}]}).to_string(),
            400,
            Some("input[0].role"),
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}).to_string(),
            400,
            Some("tools[0].type"),
        ),
        (
            json!({"model": "m", "input": "x", "background": true}).to_string(),
            400,
            Some("background"),
        ),
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_nope"}).to_string(),
            404,
            Some("previous_response_id"),
        ),
        (big, 413, None),
    ];
    for (body, status, param) in cases {
        let (got, _, text) = h.post("/v1/responses", body).await;
        assert_eq!(got.as_u16(), status, "{text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{text}"
        );
        if let Some(param) = param {
            assert_eq!(e["error"]["param"], param, "{text}");
        }
    }
    h.stop().await;
}
