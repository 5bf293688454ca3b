//! Fingerprints of conversations as the client saw them, for affinity: a request whose history
//! (everything before its new user turn) fingerprints equal to the conversation a held worker
//! has in its context continues on that worker. Pure functions over domain types.
//!
//! Canonical form, so that what a client resends compares equal to what it was shown:
//! consecutive messages of one role are one message (the API merges consecutive user turns);
//! in an assistant message adjacent text blocks are joined (an OpenAI client resends one
//! string); empty text blocks count for nothing; a tool call is its id, name and input as
//! canonical JSON (sorted keys, no spaces); a tool result is its id, error flag and content; an
//! image is its media type and a hash of its data. Thinking never reaches the domain types,
//! so hidden thinking does not change a fingerprint. The model is part of it.

use sha2::{Digest, Sha256};

use crate::domain::{ContentBlock, HistoryMessage, Role, TurnRequest};

/// A SHA-256 digest of a conversation (its canonical messages, in order) and its model.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Fingerprint([u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Fingerprint {
    /// The empty conversation with `model`.
    pub(crate) fn start(model: Option<&str>) -> Self {
        let mut h = Sha256::new();
        h.update(b"ccpool-conversation-v1\0");
        match model {
            Some(m) => field(&mut h, m.as_bytes()),
            None => h.update([0xff]),
        }
        Fingerprint(h.finalize().into())
    }

    /// This conversation followed by one message (already canonical: see `canonical`).
    pub(crate) fn then(self, role: Role, content: &[ContentBlock]) -> Self {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(match role {
            Role::User => b"U",
            Role::Assistant => b"A",
        });
        blocks(&mut h, content);
        Fingerprint(h.finalize().into())
    }
}

/// A request seen as a possible continuation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Continuation {
    /// The conversation before the new user turn.
    pub(crate) before: Fingerprint,
    /// The new user turn: the request's trailing user messages and its content, merged.
    pub(crate) user: Vec<ContentBlock>,
}

impl Continuation {
    /// The conversation once `answer` follows the new user turn: what a held worker has in
    /// its context when the answer reached the client whole.
    pub(crate) fn after(&self, answer: &[ContentBlock]) -> Fingerprint {
        self.before.then(Role::User, &self.user).then(
            Role::Assistant,
            &canonical(Role::Assistant, answer.to_vec()),
        )
    }
}

/// Splits a request into the conversation before its new user turn and that turn.
pub(crate) fn continuation(turn: &TurnRequest) -> Continuation {
    let mut messages = merged(&turn.history);
    let mut user = Vec::new();
    if messages.last().is_some_and(|m| m.role == Role::User) {
        user = messages.pop().expect("just seen").content;
    }
    user.extend(turn.content.iter().cloned());
    let before = messages
        .iter()
        .fold(Fingerprint::start(turn.model.as_deref()), |fp, m| {
            fp.then(m.role, &m.content)
        });
    Continuation {
        before,
        user: canonical(Role::User, user),
    }
}

/// The history with consecutive messages of one role merged, each in canonical form.
fn merged(history: &[HistoryMessage]) -> Vec<HistoryMessage> {
    let mut out: Vec<HistoryMessage> = Vec::with_capacity(history.len());
    for m in history {
        match out.last_mut() {
            Some(last) if last.role == m.role => last.content.extend(m.content.iter().cloned()),
            _ => out.push(m.clone()),
        }
    }
    for m in &mut out {
        m.content = canonical(m.role, std::mem::take(&mut m.content));
    }
    out
}

/// A message's blocks in canonical form: no empty text; in an assistant message, adjacent
/// text blocks joined.
fn canonical(role: Role, content: Vec<ContentBlock>) -> Vec<ContentBlock> {
    let mut out: Vec<ContentBlock> = Vec::with_capacity(content.len());
    for block in content {
        match block {
            ContentBlock::Text(t) if t.is_empty() => {}
            ContentBlock::Text(t) if role == Role::Assistant => match out.last_mut() {
                Some(ContentBlock::Text(prev)) => prev.push_str(&t),
                _ => out.push(ContentBlock::Text(t)),
            },
            other => out.push(other),
        }
    }
    out
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn blocks(h: &mut Sha256, content: &[ContentBlock]) {
    h.update((content.len() as u64).to_le_bytes());
    for block in content {
        match block {
            ContentBlock::Text(t) => {
                h.update(b"t");
                field(h, t.as_bytes());
            }
            ContentBlock::Image { media_type, data } => {
                h.update(b"i");
                field(h, media_type.as_bytes());
                h.update(Sha256::digest(data.as_bytes()));
            }
            ContentBlock::RemoteImage { url, .. } => {
                // Resolved before a worker sees it; compared by address, should one remain.
                h.update(b"w");
                field(h, url.as_bytes());
            }
            ContentBlock::ToolUse { id, name, input } => {
                h.update(b"u");
                field(h, id.as_bytes());
                field(h, name.as_bytes());
                field(h, canonical_json(input).as_bytes());
            }
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                h.update(b"r");
                field(h, tool_use_id.as_bytes());
                h.update([u8::from(*is_error)]);
                blocks(h, &canonical(Role::User, content.clone()));
            }
        }
    }
}

/// JSON text with object keys sorted and no insignificant whitespace; text that is not JSON
/// is kept as it is.
fn canonical_json(text: &str) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => {
            let mut out = String::new();
            write(&v, &mut out);
            out
        }
        Err(_) => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> ContentBlock {
        ContentBlock::Text(t.into())
    }

    fn msg(role: Role, content: Vec<ContentBlock>) -> HistoryMessage {
        HistoryMessage { role, content }
    }

    fn request(history: Vec<HistoryMessage>, prompt: &str) -> TurnRequest {
        TurnRequest {
            history,
            content: vec![text(prompt)],
            model: Some("claude-sonnet-4-5".into()),
            ..Default::default()
        }
    }

    /// The fingerprint a worker holds after answering `first` with `answer`.
    fn held_after(first: &TurnRequest, answer: Vec<ContentBlock>) -> Fingerprint {
        continuation(first).after(&answer)
    }

    #[test]
    fn a_follow_up_resending_the_conversation_matches_and_carries_only_the_new_turn() {
        let first = request(Vec::new(), "hello");
        let held = held_after(&first, vec![text("Hi there.")]);
        let second = request(
            vec![
                msg(Role::User, vec![text("hello")]),
                msg(Role::Assistant, vec![text("Hi there.")]),
            ],
            "and then?",
        );
        let c = continuation(&second);
        assert_eq!(c.before, held);
        assert_eq!(c.user, vec![text("and then?")]);
        // And the third turn matches what the second left.
        let held = c.after(&[text("Then this.")]);
        let mut history = second.history.clone();
        history.push(msg(Role::User, vec![text("and then?")]));
        history.push(msg(Role::Assistant, vec![text("Then this.")]));
        assert_eq!(continuation(&request(history, "more")).before, held);
    }

    #[test]
    fn an_edited_or_regenerated_turn_does_not_match() {
        let first = request(Vec::new(), "hello");
        let held = held_after(&first, vec![text("Hi there.")]);
        let edited_question = request(
            vec![
                msg(Role::User, vec![text("hello!")]),
                msg(Role::Assistant, vec![text("Hi there.")]),
            ],
            "next",
        );
        assert_ne!(continuation(&edited_question).before, held);
        let other_answer = request(
            vec![
                msg(Role::User, vec![text("hello")]),
                msg(Role::Assistant, vec![text("Hi there!")]),
            ],
            "next",
        );
        assert_ne!(continuation(&other_answer).before, held);
    }

    #[test]
    fn a_cut_answer_does_not_match_the_whole_one() {
        let first = request(Vec::new(), "count");
        let held = held_after(&first, vec![text("one two STOP three")]);
        let cut = request(
            vec![
                msg(Role::User, vec![text("count")]),
                msg(Role::Assistant, vec![text("one two ")]),
            ],
            "go on",
        );
        assert_ne!(continuation(&cut).before, held);
    }

    #[test]
    fn text_blocks_of_an_answer_compare_joined_and_thinking_is_not_there() {
        let first = request(Vec::new(), "q");
        // The worker relayed two text blocks (thinking between them was hidden).
        let held = held_after(&first, vec![text("Part one. "), text("Part two.")]);
        let one_string = request(
            vec![
                msg(Role::User, vec![text("q")]),
                msg(Role::Assistant, vec![text("Part one. Part two.")]),
            ],
            "next",
        );
        assert_eq!(continuation(&one_string).before, held);
        let blocks = request(
            vec![
                msg(Role::User, vec![text("q")]),
                msg(Role::Assistant, vec![text("Part one. "), text("Part two.")]),
            ],
            "next",
        );
        assert_eq!(continuation(&blocks).before, held);
    }

    #[test]
    fn images_compare_by_media_type_and_data() {
        let image = |data: &str| ContentBlock::Image {
            media_type: "image/png".into(),
            data: data.into(),
        };
        let first = TurnRequest {
            content: vec![image("AAAA"), text("what is this?")],
            ..request(Vec::new(), "")
        };
        let held = held_after(&first, vec![text("A dot.")]);
        let follow = |data: &str| {
            continuation(&request(
                vec![
                    msg(Role::User, vec![image(data), text("what is this?")]),
                    msg(Role::Assistant, vec![text("A dot.")]),
                ],
                "sure?",
            ))
            .before
        };
        assert_eq!(follow("AAAA"), held);
        assert_ne!(follow("AAAB"), held);
    }

    #[test]
    fn trailing_user_messages_merge_into_the_new_turn() {
        let first = request(Vec::new(), "hello");
        let held = held_after(&first, vec![text("Hi.")]);
        let second = request(
            vec![
                msg(Role::User, vec![text("hello")]),
                msg(Role::Assistant, vec![text("Hi.")]),
                msg(Role::User, vec![text("one")]),
            ],
            "two",
        );
        let c = continuation(&second);
        assert_eq!(c.before, held);
        assert_eq!(c.user, vec![text("one"), text("two")]);
    }

    #[test]
    fn tool_calls_compare_by_canonical_input_and_results_by_content() {
        let call = |input: &str| ContentBlock::ToolUse {
            id: "toolu_1".into(),
            name: "get_weather".into(),
            input: input.into(),
        };
        let first = request(Vec::new(), "weather?");
        let held = held_after(
            &first,
            vec![text("Let me look."), call(r#"{"b":1,"a":"x"}"#)],
        );
        let history = |input: &str| {
            vec![
                msg(Role::User, vec![text("weather?")]),
                msg(Role::Assistant, vec![text("Let me look."), call(input)]),
            ]
        };
        let result = |is_error| ContentBlock::ToolResult {
            tool_use_id: "toolu_1".into(),
            content: vec![text("sunny")],
            is_error,
        };
        let resumed = TurnRequest {
            history: history(r#"{ "a": "x", "b": 1 }"#),
            content: vec![result(false)],
            model: Some("claude-sonnet-4-5".into()),
            ..Default::default()
        };
        let c = continuation(&resumed);
        assert_eq!(c.before, held, "key order and spaces do not matter");
        assert_eq!(c.user, vec![result(false)]);
        let other_input = TurnRequest {
            history: history(r#"{"a":"y","b":1}"#),
            ..resumed.clone()
        };
        assert_ne!(continuation(&other_input).before, held);
        let a = c.after(&[text("Sunny.")]);
        let b = continuation(&TurnRequest {
            content: vec![result(true)],
            ..resumed
        })
        .after(&[text("Sunny.")]);
        assert_ne!(a, b, "the error flag counts");
    }

    #[test]
    fn another_model_is_another_conversation() {
        let first = request(Vec::new(), "hello");
        let held = held_after(&first, vec![text("Hi.")]);
        let other = TurnRequest {
            model: Some("claude-opus-4-1".into()),
            ..request(
                vec![
                    msg(Role::User, vec![text("hello")]),
                    msg(Role::Assistant, vec![text("Hi.")]),
                ],
                "next",
            )
        };
        assert_ne!(continuation(&other).before, held);
    }
}
