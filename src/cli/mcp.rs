//! The in-band MCP server through which the CLI reaches the client's own tools: the CLI is
//! launched with an `sdk` MCP server named `client`, and sends its JSON-RPC messages for it
//! as `mcp_message` control requests on stdout; ccpool answers them on stdin. The model sees
//! each client tool as `mcp__client__NAME`; the client only ever sees `NAME`.

use serde_json::{Value, json};

use crate::domain::{ContentBlock, ToolSpec};

/// The name of the in-band server, as the CLI and the model see it.
pub const SERVER: &str = "client";
/// The prefix of the model-facing names of the client's tools.
pub const TOOL_PREFIX: &str = "mcp__client__";
/// The MCP protocol version ccpool answers `initialize` with (the CLI's own).
const PROTOCOL_VERSION: &str = "2025-11-25";

/// The `--mcp-config` value that declares the in-band server.
pub fn mcp_config() -> String {
    json!({"mcpServers": {SERVER: {"type": "sdk", "name": SERVER}}}).to_string()
}

/// The `--allowedTools` rule that lets the model call every client tool without asking.
pub fn allowed_tools() -> String {
    format!("{TOOL_PREFIX}*")
}

/// The client's name of a tool the model called, if it is a client tool.
pub fn client_name(model_name: &str) -> Option<&str> {
    model_name.strip_prefix(TOOL_PREFIX)
}

/// The name the model knows a client tool by.
pub fn model_name(client_name: &str) -> String {
    format!("{TOOL_PREFIX}{client_name}")
}

/// A JSON-RPC message the CLI sends to the in-band server.
#[derive(Clone, Debug, PartialEq)]
pub enum McpRequest {
    Initialize {
        id: Value,
    },
    /// A notification (`notifications/initialized`, …): acknowledged with an empty result.
    Notification {
        method: String,
    },
    ListTools {
        id: Value,
    },
    /// The model called a client tool.
    CallTool {
        id: Value,
        /// The client's tool name (without the `mcp__client__` prefix).
        name: String,
        /// The call's arguments, as JSON text.
        arguments: String,
        /// The upstream's own `tool_use` id.
        tool_use_id: String,
    },
    /// A method ccpool does not serve: answered with a JSON-RPC error.
    Other {
        id: Value,
        method: String,
    },
}

impl McpRequest {
    /// Reads the JSON-RPC `message` of an `mcp_message` control request.
    pub fn parse(message: &Value) -> McpRequest {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let Some(id) = message.get("id").cloned() else {
            return McpRequest::Notification { method };
        };
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        match method.as_str() {
            "initialize" => McpRequest::Initialize { id },
            "tools/list" => McpRequest::ListTools { id },
            "tools/call" => McpRequest::CallTool {
                id,
                name: params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: params
                    .get("arguments")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
                tool_use_id: params
                    .pointer("/_meta/claudecode~1toolUseId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            },
            _ => McpRequest::Other { id, method },
        }
    }
}

/// The answer to `initialize`: a tools server whose list can change.
pub fn initialize_result(id: &Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {"tools": {"listChanged": true}},
            "serverInfo": {"name": SERVER, "version": "1"},
        },
    })
}

/// The answer to a notification.
pub fn empty_result() -> Value {
    json!({"jsonrpc": "2.0", "result": {}})
}

/// The answer to `tools/list`.
pub fn tools_list_result(id: &Value, tools: &[ToolSpec]) -> Value {
    let tools: Vec<Value> = tools
        .iter()
        .map(|t| {
            let mut tool = json!({
                "name": t.name,
                "inputSchema": serde_json::from_str::<Value>(&t.input_schema)
                    .unwrap_or_else(|_| json!({"type": "object"})),
            });
            if let Some(description) = &t.description {
                tool["description"] = json!(description);
            }
            tool
        })
        .collect();
    json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}})
}

/// The answer to `tools/call`: the client's result, as MCP content.
pub fn call_result(id: &Value, content: &[ContentBlock], is_error: bool) -> Value {
    let content: Vec<Value> = content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(text) => Some(json!({"type": "text", "text": text})),
            ContentBlock::Image { media_type, data } => {
                Some(json!({"type": "image", "data": data, "mimeType": media_type}))
            }
            // Fetched before the request starts; MCP content has no image by URL.
            ContentBlock::RemoteImage { url, .. } => {
                Some(json!({"type": "text", "text": format!("[image: {url}]")}))
            }
            // A result holds text and images only; the dialects refuse anything else.
            ContentBlock::ToolUse { .. } | ContentBlock::ToolResult { .. } => None,
        })
        .collect();
    json!({"jsonrpc": "2.0", "id": id, "result": {"content": content, "isError": is_error}})
}

/// The answer to a method ccpool does not serve.
pub fn method_not_found(id: &Value, method: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32601, "message": format!("method not found: {method}")},
    })
}

/// The notification that makes the CLI fetch the tool list again.
pub fn tools_changed() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(name: &str) -> Vec<Value> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path)
            .expect(&path)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The MCP messages the CLI sent in a recording, in order.
    fn cli_messages(name: &str) -> Vec<McpRequest> {
        recorded(name)
            .iter()
            .filter(|l| l["type"] == "control_request" && l["request"]["subtype"] == "mcp_message")
            .map(|l| McpRequest::parse(&l["request"]["message"]))
            .collect()
    }

    #[test]
    fn the_recorded_handshake_and_calls_parse() {
        let messages = cli_messages("sdk_mcp_parallel_calls.jsonl");
        assert!(matches!(&messages[0], McpRequest::Initialize { id } if id == &json!(0)));
        assert_eq!(
            messages[1],
            McpRequest::Notification {
                method: "notifications/initialized".into()
            }
        );
        assert!(matches!(&messages[2], McpRequest::ListTools { id } if id == &json!(1)));
        let calls: Vec<(String, String, String)> = messages
            .iter()
            .filter_map(|m| match m {
                McpRequest::CallTool {
                    name,
                    arguments,
                    tool_use_id,
                    ..
                } => Some((name.clone(), arguments.clone(), tool_use_id.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            calls,
            vec![
                (
                    "get_weather".into(),
                    r#"{"city":"Paris"}"#.into(),
                    "toolu_0".into()
                ),
                (
                    "get_weather".into(),
                    r#"{"city":"Error"}"#.into(),
                    "toolu_1".into()
                ),
            ]
        );
    }

    #[test]
    fn answers_have_the_recorded_shape() {
        let answers: Vec<Value> = recorded("sdk_mcp_parallel_calls.stdin.jsonl")
            .into_iter()
            .filter(|l| l["type"] == "control_response")
            .map(|l| l["response"]["response"]["mcp_response"].clone())
            .collect();
        assert_eq!(initialize_result(&json!(0)), answers[0]);
        assert_eq!(empty_result(), answers[1]);
        let weather = ToolSpec {
            name: "get_weather".into(),
            description: Some("Weather for a city".into()),
            input_schema:
                r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#
                    .into(),
        };
        assert_eq!(tools_list_result(&json!(1), &[weather]), answers[2]);
        let text = |t: &str| vec![ContentBlock::Text(t.into())];
        assert_eq!(
            call_result(&json!(2), &text("weather in Paris: sunny"), false),
            answers[3]
        );
        assert_eq!(
            call_result(&json!(3), &text("weather in Error: sunny"), true),
            answers[4]
        );
    }

    #[test]
    fn names_map_both_ways_and_images_become_mcp_images() {
        assert_eq!(model_name("get_weather"), "mcp__client__get_weather");
        assert_eq!(client_name("mcp__client__get_weather"), Some("get_weather"));
        assert_eq!(client_name("Bash"), None);
        let image = ContentBlock::Image {
            media_type: "image/png".into(),
            data: "AAAA".into(),
        };
        let v = call_result(&json!(7), &[image], false);
        assert_eq!(
            v["result"]["content"][0],
            json!({"type": "image", "data": "AAAA", "mimeType": "image/png"})
        );
        let config: Value = serde_json::from_str(&mcp_config()).unwrap();
        assert_eq!(config["mcpServers"]["client"]["type"], "sdk");
        assert_eq!(allowed_tools(), "mcp__client__*");
    }
}
