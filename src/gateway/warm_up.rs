//! The relay's own answer to a worker warming its CLI up: a new CLI process is slow on its
//! first few turns (its JavaScript is not compiled yet), so a worker runs throwaway turns
//! before it serves anyone, and the relay answers their requests itself, as a short message
//! in the Messages API's shape. Nothing of a warm-up reaches the upstream or its report.

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// The text of the canned answer, in a few deltas as a real stream has them.
const DELTAS: [&str; 3] = ["Warm", "ed ", "up."];

/// What the canned answer needs of the request.
#[derive(Deserialize)]
struct Asked {
    #[serde(default)]
    model: String,
    #[serde(default)]
    stream: bool,
}

/// The answer to a warming worker's request to `path`: a message for the Messages API, a
/// 404 in the Anthropic error shape for anything else.
pub(super) fn answer(path: &str, body: &Bytes) -> Response {
    if path.split('?').next() != Some("/v1/messages") {
        return super::relay::error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "ccpool relay: only messages are answered while a worker warms up",
        );
    }
    let asked: Asked = serde_json::from_slice(body).unwrap_or(Asked {
        model: String::new(),
        stream: false,
    });
    if asked.stream {
        let events = stream_events(&asked.model).into_iter().map(|(name, data)| {
            Ok::<_, std::convert::Infallible>(format!("event: {name}\ndata: {data}\n\n"))
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(futures::stream::iter(events)))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    } else {
        axum::Json(message(&asked.model, DELTAS.concat())).into_response()
    }
}

fn message(model: &str, text: String) -> serde_json::Value {
    serde_json::json!({
        "id": "msg_ccpool_warm_up", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 1, "output_tokens": DELTAS.len()},
    })
}

/// The SSE events of the canned answer: (event name, data).
fn stream_events(model: &str) -> Vec<(&'static str, String)> {
    use serde_json::json;
    let mut start = message(model, String::new());
    start["content"] = json!([]);
    start["stop_reason"] = json!(null);
    start["usage"]["output_tokens"] = json!(1);
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": start}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for text in DELTAS {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ));
    }
    events.extend([
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": DELTAS.len()}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    events
        .into_iter()
        .map(|(name, data)| (name, data.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_streamed_request_gets_a_whole_message_and_other_paths_a_404() {
        let body = Bytes::from(r#"{"model":"claude-x","stream":true,"messages":[]}"#);
        let response = answer("/v1/messages?beta=true", &body);
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(text.contains(r#""model":"claude-x""#));
        assert!(text.contains(r#""stop_reason":"end_turn""#));

        let plain = answer("/v1/messages", &Bytes::from(r#"{"model":"m"}"#));
        let bytes = axum::body::to_bytes(plain.into_body(), 1 << 20)
            .await
            .unwrap();
        let message: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(message["content"][0]["text"], "Warmed up.");

        let other = answer("/v1/messages/count_tokens", &body);
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
    }
}
