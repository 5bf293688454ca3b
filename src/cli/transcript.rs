//! A conversation the worker did not produce, written as a CLI transcript so that a CLI
//! started with `--resume <session>` replays it to the upstream faithfully.

use serde_json::{Value, json};

use crate::cli::mcp;
use crate::cli::protocol::content_json;
use crate::domain::{ContentBlock, HistoryMessage, Role};

/// The CLI version the transcript lines claim (the pinned one).
const CLI_VERSION: &str = "2.1.327";

/// Where the CLI looks for the transcript of `session` when its working directory is `cwd`:
/// `$HOME/.claude/projects/<cwd with every / replaced by ->/<session>.jsonl`, relative to `$HOME`.
pub fn transcript_path(cwd: &str, session: &str) -> String {
    format!(".claude/projects/{}/{session}.jsonl", cwd.replace('/', "-"))
}

/// The transcript: one JSON line per message, each pointing at the previous one; and the id
/// of its first line (where a rewind cuts the conversation back to nothing).
pub fn transcript(
    session: &str,
    cwd: &str,
    history: &[HistoryMessage],
) -> (String, Option<String>) {
    let mut out = String::new();
    let mut first = None;
    let mut parent: Value = Value::Null;
    for (i, message) in history.iter().enumerate() {
        let uuid = uuid::Uuid::new_v4().to_string();
        let timestamp = format!("2026-01-01T00:00:{:02}.{:03}Z", (i / 1000) % 60, i % 1000);
        let content: Vec<Value> = message
            .content
            .iter()
            .map(|block| content_json(&model_facing(block)))
            .collect();
        let (kind, body) = match message.role {
            Role::User => ("user", json!({"role": "user", "content": content})),
            Role::Assistant => (
                "assistant",
                json!({
                    "id": format!("msg_history_{i}"),
                    "type": "message",
                    "role": "assistant",
                    "model": "",
                    "content": content,
                    "stop_reason": if message.content.iter().any(|b| matches!(b, ContentBlock::ToolUse { .. })) { "tool_use" } else { "end_turn" },
                    "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }),
            ),
        };
        let line = json!({
            "parentUuid": parent,
            "isSidechain": false,
            "type": kind,
            "message": body,
            "uuid": uuid,
            "timestamp": timestamp,
            "userType": "external",
            "cwd": cwd,
            "sessionId": session,
            "version": CLI_VERSION,
        });
        out.push_str(&line.to_string());
        out.push('\n');
        first.get_or_insert_with(|| uuid.clone());
        parent = Value::String(uuid);
    }
    (out, first)
}

/// A block as the model saw it: a client tool's call under the name the CLI offers it by.
fn model_facing(block: &ContentBlock) -> ContentBlock {
    match block {
        ContentBlock::ToolUse { id, name, input } => ContentBlock::ToolUse {
            id: id.clone(),
            name: mcp::model_name(name),
            input: input.clone(),
        },
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_chain_by_parent_uuid_in_order() {
        let history = vec![
            HistoryMessage {
                role: Role::User,
                content: vec![ContentBlock::Text("one".into())],
            },
            HistoryMessage {
                role: Role::Assistant,
                content: vec![ContentBlock::Text("two".into())],
            },
            HistoryMessage {
                role: Role::User,
                content: vec![ContentBlock::Text("three".into())],
            },
        ];
        let (text, first) = transcript("sess", "/workspace", &history);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["parentUuid"], Value::Null);
        assert_eq!(first.as_deref(), lines[0]["uuid"].as_str());
        assert_eq!(lines[1]["parentUuid"], lines[0]["uuid"]);
        assert_eq!(lines[2]["parentUuid"], lines[1]["uuid"]);
        assert_eq!(lines[1]["type"], "assistant");
        assert_eq!(lines[1]["message"]["content"][0]["text"], "two");
        assert_eq!(lines[2]["message"]["role"], "user");
        assert!(
            lines
                .iter()
                .all(|l| l["sessionId"] == "sess" && l["cwd"] == "/workspace")
        );
        assert_eq!(
            transcript_path("/workspace", "sess"),
            ".claude/projects/-workspace/sess.jsonl"
        );
    }
}
