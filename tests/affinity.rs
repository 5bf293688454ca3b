//! Conversation affinity end to end: ccpool's HTTP server, the real Docker engine, the real
//! CLI in real containers, the mock upstream. A stateless client resends its whole
//! conversation each turn; a follow-up of a conversation a worker holds goes to that worker
//! with only its new turn, and anything else replays.

mod support;

use std::time::Duration;

use ccpool::credentials::Credentials;
use serde_json::{Value, json};
use support::api::Server;
use support::docker::{TestPool, pool_config, reuse, settings, shutdown_clean, start_pool};
use support::mock_upstream::MockUpstream;

struct Stack {
    mock: MockUpstream,
    pool: TestPool,
    server: Server,
    http: reqwest::Client,
}

async fn stack() -> Stack {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
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

/// A stateless Anthropic client's conversation: its messages, resent whole on every turn.
struct Conversation {
    key: &'static str,
    messages: Vec<Value>,
    stop_sequences: Vec<&'static str>,
}

impl Conversation {
    fn new(key: &'static str) -> Self {
        Conversation {
            key,
            messages: Vec::new(),
            stop_sequences: Vec::new(),
        }
    }
}

impl Stack {
    /// Sends the conversation plus `prompt`, waits until the worker is put away, and keeps
    /// the answer as the client received it. Returns that answer's text.
    async fn say(&self, conversation: &mut Conversation, prompt: &str) -> String {
        conversation
            .messages
            .push(json!({"role": "user", "content": prompt}));
        let mut body = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "messages": conversation.messages,
        });
        if !conversation.stop_sequences.is_empty() {
            body["stop_sequences"] = json!(conversation.stop_sequences);
        }
        let turns = self.pool.status().turns;
        let response = self
            .http
            .post(format!("{}/v1/messages", self.server.base_url))
            .header("anthropic-version", "2023-06-01")
            .header("x-api-key", conversation.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let message: Value = response.json().await.unwrap();
        assert!(
            self.pool
                .wait_releases(turns + 1, Duration::from_secs(30))
                .await
        );
        conversation
            .messages
            .push(json!({"role": "assistant", "content": message["content"]}));
        message["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn status(&self) -> Value {
        self.http
            .get(format!("{}/status", self.server.base_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Conversations held, in every profile.
    fn held(&self) -> usize {
        self.pool.status().profiles.iter().map(|p| p.held).sum()
    }

    /// (continued, replayed) so far.
    fn counts(&self) -> (u64, u64) {
        let s = self.pool.status();
        (s.continued, s.replayed)
    }

    async fn stop(self) {
        self.server.stop().await;
        shutdown_clean(self.pool).await;
        self.mock.shutdown().await;
    }
}

fn pairs(turns: &[(&str, &str)]) -> Vec<(String, String)> {
    turns
        .iter()
        .map(|(r, t)| (r.to_string(), t.to_string()))
        .collect()
}

#[tokio::test]
async fn turns_two_and_three_of_a_stateless_conversation_continue_on_its_worker_without_a_start() {
    let s = stack().await;
    let mut chat = Conversation::new("key-alice");
    assert_eq!(s.say(&mut chat, "one").await, "Echo: one");
    assert_eq!(s.say(&mut chat, "two").await, "Echo: two");
    assert_eq!(s.say(&mut chat, "three").await, "Echo: three");
    // Both follow-ups continued on the holding worker: no replay, so no CLI start for them
    // (the pool's start counter also counts the filler's top-ups, which run concurrently).
    assert_eq!(s.counts(), (2, 0));
    // The CLI answered from its own context: the upstream saw the whole conversation in
    // order, every time.
    let requests = s.mock.message_requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[2].turns(),
        pairs(&[
            ("user", "one"),
            ("assistant", "Echo: one"),
            ("user", "two"),
            ("assistant", "Echo: two"),
            ("user", "three"),
        ])
    );
    assert_eq!(requests[1].turns().len(), 3);
    let status = s.status().await;
    assert_eq!(status["conversations"]["continued"], 2);
    let held: Vec<&Value> = status["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["held"])
        .collect();
    assert!(held.contains(&&json!(1)), "{status}");
    s.stop().await;
}

#[tokio::test]
async fn an_edited_history_replays_on_another_worker() {
    let s = stack().await;
    let mut chat = Conversation::new("key-alice");
    s.say(&mut chat, "one").await;
    chat.messages[1]["content"][0]["text"] = json!("Echo: uno");
    assert_eq!(s.say(&mut chat, "two").await, "Echo: two");
    assert_eq!(s.counts(), (0, 1));
    let last = s.mock.message_requests().pop().unwrap();
    assert_eq!(
        last.turns(),
        pairs(&[("user", "one"), ("assistant", "Echo: uno"), ("user", "two")]),
        "the edited history reached the upstream"
    );
    // The stale holding stays, unless capacity ran out and the edited conversation took it
    // over (reset) rather than wait for a cold start.
    assert!(s.held() >= 1);
    s.stop().await;
}

#[tokio::test]
async fn two_owners_with_identical_histories_never_share_a_worker() {
    let s = stack().await;
    let mut alice = Conversation::new("key-alice");
    s.say(&mut alice, "same start").await;
    let mut bob = Conversation::new("key-bob");
    bob.messages = alice.messages.clone();
    assert_eq!(s.say(&mut bob, "bob goes on").await, "Echo: bob goes on");
    assert_eq!(s.counts(), (0, 1), "bob's turn replayed");
    assert_eq!(
        s.say(&mut alice, "alice goes on").await,
        "Echo: alice goes on"
    );
    assert_eq!(s.counts(), (1, 1), "alice's continued on her worker");
    assert_eq!(s.held(), 2);
    s.stop().await;
}

#[tokio::test]
async fn an_answer_cut_by_a_stop_sequence_is_followed_by_a_replay() {
    let s = stack().await;
    let mut chat = Conversation::new("key-alice");
    chat.stop_sequences = vec!["STOP"];
    assert_eq!(s.say(&mut chat, "count STOP three").await, "Echo: count ");
    chat.stop_sequences.clear();
    assert_eq!(s.say(&mut chat, "next").await, "Echo: next");
    assert_eq!(s.counts(), (0, 1));
    let last = s.mock.message_requests().pop().unwrap();
    assert_eq!(
        last.turns(),
        pairs(&[
            ("user", "count STOP three"),
            ("assistant", "Echo: count "),
            ("user", "next")
        ]),
        "the upstream saw the answer as the client did"
    );
    // Even a client that resends the whole uncut answer does not continue: the worker's
    // turn was cut, so it holds nothing.
    let mut other = Conversation::new("key-alice");
    other.stop_sequences = vec!["STOP"];
    s.say(&mut other, "again STOP here").await;
    other.messages[1]["content"][0]["text"] = json!("Echo: again STOP here");
    other.stop_sequences.clear();
    s.say(&mut other, "more").await;
    assert_eq!(s.counts(), (0, 2));
    s.stop().await;
}

#[tokio::test]
async fn an_openai_client_continues_its_conversation_on_its_worker() {
    let s = stack().await;
    let mut messages = vec![json!({"role": "system", "content": "Be brief."})];
    for prompt in ["one", "two", "three"] {
        messages.push(json!({"role": "user", "content": prompt}));
        let turns = s.pool.status().turns;
        let response: Value = s
            .http
            .post(format!("{}/v1/chat/completions", s.server.base_url))
            .bearer_auth("key-openai")
            .json(&json!({"model": "gpt-4o", "messages": messages}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let answer = response["choices"][0]["message"]["content"].clone();
        assert_eq!(answer, json!(format!("Echo: {prompt}")), "{response}");
        assert!(
            s.pool
                .wait_releases(turns + 1, Duration::from_secs(30))
                .await
        );
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    assert_eq!(s.counts(), (2, 0));
    let last = s.mock.message_requests().pop().unwrap();
    assert!(last.system_text().contains("Be brief."));
    assert_eq!(last.turns().len(), 5);
    s.stop().await;
}
