//! Pool unit tests on the fake runtime: checkout, reuse, owners, capacity, failures, shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::*;
use crate::domain::{BlockDelta, TurnEvent};
use crate::domain::{LaunchProfile, OwnerKey, TurnItem, TurnOutcome, TurnRequest, TurnStatus};
use crate::fake::FakeRuntime;
use crate::worker::{SessionWorkspace, WorkerSettings};

fn settings() -> WorkerSettings {
    WorkerSettings {
        instance_id: format!("test-{}", uuid::Uuid::new_v4().simple()),
        silence_limit: Duration::from_millis(300),
        interrupt_grace: Duration::from_millis(200),
        start_timeout: Duration::from_secs(5),
        ..WorkerSettings::default()
    }
}

fn config(policy: ReusePolicy) -> PoolConfig {
    PoolConfig {
        policy,
        max_workers: 4,
        warm_default: 1,
        checkout_timeout: Duration::from_secs(2),
        ..PoolConfig::default()
    }
}

fn reuse(max_uses: u32) -> ReusePolicy {
    ReusePolicy::Reuse {
        max_uses,
        max_age: Duration::from_secs(3600),
    }
}

async fn pool_with(fake: &FakeRuntime, config: PoolConfig) -> WarmPool {
    let pool = WarmPool::start(
        Arc::new(fake.clone()),
        settings(),
        config,
        LaunchProfile::default(),
    )
    .await
    .unwrap();
    assert!(
        pool.wait_warm(1, Duration::from_secs(5)).await,
        "the pool warms up"
    );
    pool
}

fn text(events: &[TurnEvent]) -> String {
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

/// Serves one request and waits until the worker is back in its pool (or retired).
async fn serve(pool: &WarmPool, owner: &str, prompt: &str) -> (String, TurnOutcome) {
    let lease = pool
        .checkout(&LaunchProfile::default(), &OwnerKey::new(owner))
        .await
        .unwrap();
    let container = lease.worker().container_id().to_string();
    let (events, outcome) = lease
        .start_turn(TurnRequest::text(prompt))
        .collect_all()
        .await;
    assert_eq!(
        text(&events),
        if outcome.is_success() {
            format!("Echo: {prompt}")
        } else {
            text(&events)
        }
    );
    settle(pool).await;
    (container, outcome)
}

/// Waits until every turn started so far has been released.
async fn settle(pool: &WarmPool) {
    let turns = pool.status().turns;
    assert!(
        pool.wait_releases(turns, Duration::from_secs(5)).await,
        "pool did not settle: {:?}",
        pool.status()
    );
}

#[tokio::test]
async fn a_request_takes_a_prewarmed_worker_and_starts_none() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let starts_before = fake.starts();
    let lease = pool
        .checkout(&LaunchProfile::default(), &OwnerKey::anonymous())
        .await
        .unwrap();
    assert_eq!(lease.worker().uses(), 0);
    assert_eq!(
        fake.starts(),
        starts_before,
        "no container started on the request path"
    );
    let (events, outcome) = lease
        .start_turn(TurnRequest::text("hi"))
        .collect_all()
        .await;
    assert_eq!(text(&events), "Echo: hi");
    assert!(outcome.is_success(), "{outcome:?}");
    pool.shutdown(Duration::from_secs(2)).await;
    assert!(fake.container_ids().is_empty());
}

#[tokio::test]
async fn reuse_clears_between_requests_and_keeps_the_worker_for_its_owner() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let (first, _) = serve(&pool, "alice", "one").await;
    let (second, _) = serve(&pool, "alice", "two").await;
    assert_eq!(first, second, "the same owner gets the same worker back");
    let lines = fake.stdin_of(&first);
    let kinds: Vec<String> = lines
        .iter()
        .map(|l| match l["type"].as_str().unwrap() {
            "control_request" => l["request"]["subtype"].as_str().unwrap().to_string(),
            _ => l["message"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "initialize",
            "one",
            "rewind_conversation",
            "two",
            "rewind_conversation"
        ]
    );
    for line in lines.iter().filter(|l| l["type"] == "user") {
        assert_eq!(line["client_composed"], true);
    }
    // Each rewind goes back to the first message of its conversation.
    let rewinds: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["type"] == "control_request" && l["request"]["subtype"] != "initialize")
        .collect();
    assert_eq!(
        rewinds[0]["request"]["target_message_uuid"],
        lines[1]["uuid"]
    );
    assert_eq!(
        rewinds[1]["request"]["target_message_uuid"],
        lines[3]["uuid"]
    );
    assert_eq!(pool.status().reused, 1);
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_request_right_after_another_waits_for_the_reset_instead_of_taking_a_new_worker() {
    let mut fake = FakeRuntime::new();
    fake.clear_delay = Duration::from_millis(150);
    let pool = pool_with(&fake, config(reuse(10))).await;
    let owner = OwnerKey::new("alice");
    let lease = pool
        .checkout(&LaunchProfile::default(), &owner)
        .await
        .unwrap();
    let first = lease.worker().container_id().to_string();
    let (_, outcome) = lease
        .start_turn(TurnRequest::text("one"))
        .collect_all()
        .await;
    assert!(outcome.is_success());
    // The reset is still running: the next checkout waits for it.
    let lease = pool
        .checkout(&LaunchProfile::default(), &owner)
        .await
        .unwrap();
    assert_eq!(lease.worker().container_id(), first);
    assert_eq!(lease.worker().uses(), 1);
    drop(lease);
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_worker_never_serves_two_owners() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let (alice, _) = serve(&pool, "alice", "a").await;
    let (bob, _) = serve(&pool, "bob", "b").await;
    let (alice_again, _) = serve(&pool, "alice", "a2").await;
    assert_ne!(alice, bob);
    assert_eq!(alice, alice_again);
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn fresh_policy_retires_every_worker_after_one_request() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(ReusePolicy::Fresh)).await;
    let (first, _) = serve(&pool, "alice", "one").await;
    let (second, _) = serve(&pool, "alice", "two").await;
    assert_ne!(first, second);
    // The retired container goes away through the graveyard.
    for _ in 0..100 {
        if !fake.container_ids().contains(&first) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!fake.container_ids().contains(&first));
    assert!(
        !fake
            .stdin_of(&first)
            .iter()
            .any(|l| l["request"]["subtype"] == "rewind_conversation")
    );
    pool.shutdown(Duration::from_secs(2)).await;
    assert!(fake.container_ids().is_empty());
}

#[tokio::test]
async fn reuse_retires_a_worker_at_its_maximum_number_of_uses() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(2))).await;
    let (a, _) = serve(&pool, "alice", "1").await;
    let (b, _) = serve(&pool, "alice", "2").await;
    let (c, _) = serve(&pool, "alice", "3").await;
    assert_eq!(a, b);
    assert_ne!(b, c, "retired after two uses");
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn waiting_is_bounded_and_ends_in_busy() {
    let fake = FakeRuntime::new();
    let pool = pool_with(
        &fake,
        PoolConfig {
            max_workers: 1,
            checkout_timeout: Duration::from_millis(200),
            ..config(reuse(10))
        },
    )
    .await;
    let held = pool
        .checkout(&LaunchProfile::default(), &OwnerKey::new("a"))
        .await
        .unwrap();
    let started = Instant::now();
    let second = pool
        .checkout(&LaunchProfile::default(), &OwnerKey::new("b"))
        .await;
    assert!(
        matches!(second, Err(PoolError::Busy(_))),
        "{:?}",
        second.err()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(held);
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn an_idle_worker_of_another_owner_is_evicted_when_capacity_runs_out() {
    let fake = FakeRuntime::new();
    let pool = pool_with(
        &fake,
        PoolConfig {
            max_workers: 1,
            ..config(reuse(10))
        },
    )
    .await;
    let (alice, _) = serve(&pool, "alice", "a").await;
    let (bob, outcome) = serve(&pool, "bob", "b").await;
    assert!(outcome.is_success());
    assert_ne!(alice, bob);
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_worker_killed_while_idle_is_never_handed_out_and_is_replaced() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let (first, _) = serve(&pool, "alice", "one").await;
    fake.kill(&first);
    let (second, outcome) = serve(&pool, "alice", "two").await;
    assert_ne!(first, second);
    assert!(outcome.is_success(), "{outcome:?}");
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_worker_killed_mid_request_fails_that_request_and_is_retired() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let lease = pool
        .checkout(&LaunchProfile::default(), &OwnerKey::anonymous())
        .await
        .unwrap();
    let container = lease.worker().container_id().to_string();
    let mut stream = lease.start_turn(TurnRequest::text("[[slow]]"));
    assert!(matches!(stream.next().await, Some(TurnItem::Event(_))));
    fake.kill(&container);
    let (_, outcome) = stream.collect_all().await;
    assert!(
        matches!(outcome.status, TurnStatus::WorkerFailed(_)),
        "{outcome:?}"
    );
    assert!(pool.wait_warm(1, Duration::from_secs(5)).await, "replaced");
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn dropping_the_stream_interrupts_the_turn_and_the_worker_is_reused() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let lease = pool
        .checkout(&LaunchProfile::default(), &OwnerKey::anonymous())
        .await
        .unwrap();
    let container = lease.worker().container_id().to_string();
    let mut stream = lease.start_turn(TurnRequest::text("[[slow]]"));
    assert!(matches!(stream.next().await, Some(TurnItem::Event(_))));
    drop(stream);
    settle(&pool).await;
    let lines = fake.stdin_of(&container);
    assert!(
        lines.iter().any(|l| l["request"]["subtype"] == "interrupt"),
        "{lines:?}"
    );
    let (again, outcome) = serve(&pool, "anonymous", "after").await;
    assert_eq!(again, container);
    assert!(outcome.is_success());
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_watchdog_ends_a_silent_turn_and_kills_the_cli() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let started = Instant::now();
    let (container, outcome) = serve(&pool, "alice", "[[hang]]").await;
    assert!(
        matches!(&outcome.status, TurnStatus::WorkerFailed(why) if why.contains("silent")),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let (next, _) = serve(&pool, "alice", "next").await;
    assert_ne!(next, container, "a worker that hung is not reused");
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn shutdown_removes_every_container_and_refuses_new_requests() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    serve(&pool, "a", "x").await;
    serve(&pool, "b", "y").await;
    pool.shutdown(Duration::from_secs(2)).await;
    assert!(fake.container_ids().is_empty());
    let after = pool
        .checkout(&LaunchProfile::default(), &OwnerKey::anonymous())
        .await;
    assert!(matches!(after, Err(PoolError::Closed)));
}

#[tokio::test]
async fn a_new_profile_gets_its_own_workers_and_recent_profiles_stay_warm() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let other = LaunchProfile {
        system_prompt: Some("Be brief.".into()),
        ..LaunchProfile::default()
    };
    let lease = pool.checkout(&other, &OwnerKey::anonymous()).await.unwrap();
    assert_eq!(lease.worker().profile(), &other);
    drop(lease);
    for _ in 0..200 {
        if pool
            .status()
            .profiles
            .iter()
            .any(|p| !p.is_default && p.warm == 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = pool.status();
    assert_eq!(status.profiles.len(), 2);
    assert_eq!(status.profiles[1].warm, 1, "{status:?}");
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn counting_live_warm_workers_for_readiness_changes_nothing() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let before = pool.status();
    for id in fake.container_ids() {
        fake.kill(&id);
    }
    assert_eq!(pool.live_warm(), 0);
    let after = pool.status();
    assert_eq!(after.profiles[0].warm, before.profiles[0].warm, "{after:?}");
    assert_eq!(after.retired, before.retired);
    pool.shutdown(Duration::from_secs(2)).await;
}

// Held conversations (affinity).

use crate::domain::{ContentBlock, HistoryMessage, Role};

/// A stateless conversation as a client keeps it: its messages, resent whole each turn.
#[derive(Clone, Default)]
struct Chat {
    history: Vec<HistoryMessage>,
}

impl Chat {
    fn request(&self, prompt: &str) -> TurnRequest {
        TurnRequest {
            history: self.history.clone(),
            ..TurnRequest::text(prompt)
        }
    }

    /// Records the turn as the client saw it.
    fn saw(&mut self, prompt: &str, answer: &str) {
        self.history.push(HistoryMessage {
            role: Role::User,
            content: vec![ContentBlock::Text(prompt.into())],
        });
        self.history.push(HistoryMessage {
            role: Role::Assistant,
            content: vec![ContentBlock::Text(answer.into())],
        });
    }
}

/// The container whose CLI received `prompt` as a user message.
fn container_that_got(fake: &FakeRuntime, prompt: &str) -> String {
    let got = |c: &String| {
        fake.stdin_of(c)
            .iter()
            .any(|l| l["type"] == "user" && l["message"]["content"][0]["text"] == prompt)
    };
    let found: Vec<String> = fake.container_ids().into_iter().filter(got).collect();
    assert_eq!(found.len(), 1, "{prompt:?} reached {found:?}");
    found[0].clone()
}

/// One turn of `chat` for `owner`; the chat records what the client saw. Returns the
/// container that served it.
async fn turn(
    pool: &WarmPool,
    fake: &FakeRuntime,
    owner: &str,
    chat: &mut Chat,
    prompt: &str,
) -> String {
    let stream = pool
        .run_conversation(
            &LaunchProfile::default(),
            &OwnerKey::new(owner),
            chat.request(prompt),
        )
        .await
        .unwrap();
    let (events, outcome) = stream.collect_all().await;
    assert!(outcome.is_success(), "{outcome:?}");
    chat.saw(prompt, &text(&events));
    settle(pool).await;
    container_that_got(fake, prompt)
}

fn was_reset(fake: &FakeRuntime, container: &str) -> bool {
    fake.stdin_of(container)
        .iter()
        .any(|l| l["request"]["subtype"] == "rewind_conversation")
}

fn user_lines(fake: &FakeRuntime, container: &str) -> Vec<String> {
    fake.stdin_of(container)
        .iter()
        .filter(|l| l["type"] == "user")
        .map(|l| {
            l["message"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_follow_up_continues_on_the_worker_holding_the_conversation_without_a_start() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let mut chat = Chat::default();
    let first = turn(&pool, &fake, "alice", &mut chat, "one").await;
    assert!(pool.wait_warm(1, Duration::from_secs(5)).await);
    let starts = fake.starts();
    let execs = fake.execs().len();
    let status = pool.status();
    assert_eq!((status.profiles[0].held, status.profiles[0].idle), (1, 0));
    let second = turn(&pool, &fake, "alice", &mut chat, "two").await;
    let third = turn(&pool, &fake, "alice", &mut chat, "three").await;
    assert_eq!(
        (first.as_str(), second.as_str()),
        (third.as_str(), third.as_str())
    );
    assert_eq!(fake.starts(), starts, "no container started");
    assert_eq!(
        fake.execs().len(),
        execs,
        "no CLI started, no transcript written"
    );
    assert_eq!(
        user_lines(&fake, &first),
        vec!["one", "two", "three"],
        "only the new turns were sent"
    );
    assert!(!was_reset(&fake, &first), "no reset between them");
    let status = pool.status();
    assert_eq!((status.continued, status.replayed), (2, 0));
    pool.shutdown(Duration::from_secs(2)).await;
    assert!(fake.container_ids().is_empty());
}

#[tokio::test]
async fn an_edited_history_replays_on_another_worker_and_the_holding_stays() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let mut chat = Chat::default();
    let first = turn(&pool, &fake, "alice", &mut chat, "one").await;
    let mut edited = chat.clone();
    edited.history[1].content = vec![ContentBlock::Text("Echo: something else".into())];
    let other = turn(&pool, &fake, "alice", &mut edited, "two").await;
    assert_ne!(other, first);
    let status = pool.status();
    assert_eq!((status.continued, status.replayed), (0, 1));
    assert_eq!(status.profiles[0].held, 2, "{status:?}");
    // The original conversation still continues on its worker.
    assert_eq!(turn(&pool, &fake, "alice", &mut chat, "again").await, first);
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn two_owners_with_identical_histories_never_share_a_worker() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let mut alice = Chat::default();
    let first = turn(&pool, &fake, "alice", &mut alice, "same").await;
    let mut bob = alice.clone();
    let bobs = turn(&pool, &fake, "bob", &mut bob, "next for bob").await;
    assert_ne!(bobs, first);
    assert_eq!(pool.status().replayed, 1);
    assert_eq!(
        turn(&pool, &fake, "alice", &mut alice, "next for alice").await,
        first
    );
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn an_answer_cut_after_the_turn_ended_is_not_continued() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let mut chat = Chat::default();
    let mut stream = pool
        .run_conversation(
            &LaunchProfile::default(),
            &OwnerKey::new("alice"),
            chat.request("one"),
        )
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(TurnItem::Event(e)) = stream.next().await {
        events.push(e);
        if matches!(events.last(), Some(TurnEvent::MessageStop)) {
            break;
        }
    }
    // The worker is done; the consumer cuts the answer now (a stop sequence in the last delta).
    settle(&pool).await;
    stream.interrupt();
    drop(stream);
    chat.saw("one", &text(&events));
    let first = container_that_got(&fake, "one");
    let second = turn(&pool, &fake, "alice", &mut chat, "two").await;
    assert_ne!(second, first, "replayed elsewhere");
    let status = pool.status();
    assert_eq!((status.continued, status.replayed), (0, 1));
    // The cut holding ended: its worker was reset and returned to its owner's pool.
    for _ in 0..200 {
        if was_reset(&fake, &first) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(was_reset(&fake, &first));
    assert_eq!(user_lines(&fake, &first), vec!["one"]);
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_turn_dropped_by_its_client_or_interrupted_is_not_held() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let mut stream = pool
        .run_conversation(
            &LaunchProfile::default(),
            &OwnerKey::new("alice"),
            TurnRequest::text("[[slow]]"),
        )
        .await
        .unwrap();
    assert!(matches!(stream.next().await, Some(TurnItem::Event(_))));
    drop(stream);
    settle(&pool).await;
    let status = pool.status();
    assert_eq!((status.profiles[0].held, status.profiles[0].idle), (0, 1));
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_structured_output_profile_never_holds() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(10))).await;
    let profile = LaunchProfile {
        json_schema: Some(r#"{"type":"object"}"#.into()),
        ..LaunchProfile::default()
    };
    let stream = pool
        .run_conversation(&profile, &OwnerKey::new("alice"), TurnRequest::text("x"))
        .await
        .unwrap();
    stream.collect_all().await;
    settle(&pool).await;
    assert!(pool.status().profiles.iter().all(|p| p.held == 0));
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_held_conversation_is_released_after_its_idle_time_and_reset_for_its_owner() {
    let fake = FakeRuntime::new();
    let pool = pool_with(
        &fake,
        PoolConfig {
            hold_idle: Duration::from_millis(100),
            ..config(reuse(10))
        },
    )
    .await;
    let mut chat = Chat::default();
    let first = turn(&pool, &fake, "alice", &mut chat, "one").await;
    // The filler reaps at least once a second.
    for _ in 0..300 {
        if pool.status().profiles[0].idle == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = pool.status();
    assert_eq!((status.profiles[0].held, status.profiles[0].idle), (0, 1));
    assert!(was_reset(&fake, &first));
    // A follow-up now replays, on the same (reset) worker of its owner.
    assert_eq!(turn(&pool, &fake, "alice", &mut chat, "two").await, first);
    assert_eq!(pool.status().replayed, 1);
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_held_conversation_is_evicted_when_another_owner_needs_the_capacity() {
    let fake = FakeRuntime::new();
    let pool = pool_with(
        &fake,
        PoolConfig {
            max_workers: 1,
            ..config(reuse(10))
        },
    )
    .await;
    let mut alice = Chat::default();
    let first = turn(&pool, &fake, "alice", &mut alice, "one").await;
    let mut bob = Chat::default();
    let bobs = turn(&pool, &fake, "bob", &mut bob, "hi").await;
    assert_ne!(bobs, first);
    let status = pool.status();
    assert_eq!(status.profiles[0].held, 1, "bob's conversation is held now");
    assert!(
        !fake.container_ids().contains(&first),
        "alice's was retired"
    );
    pool.shutdown(Duration::from_secs(2)).await;
}

// The adaptive warm pool and the filler's backoff.

/// Waits (at most 10 s) until the pool's status satisfies `done`; returns that status.
async fn until(pool: &WarmPool, done: impl Fn(&PoolStatus) -> bool) -> PoolStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = pool.status();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never reached: {status:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_warm_target_follows_the_recent_peak_of_demand_and_decays_when_it_goes() {
    let fake = FakeRuntime::new();
    let config = PoolConfig {
        max_workers: 8,
        demand_window: Duration::from_secs(1),
        ..config(reuse(10))
    };
    let pool = pool_with(&fake, config).await;
    let status = pool.status();
    assert_eq!(status.profiles[0].target, 1);
    assert_eq!(
        status.profiles[0].target_reason,
        "configured minimum (--warm)"
    );

    // Four requests at once (each a different owner, so none waits for another's worker).
    let leases = futures::future::join_all((0..4).map(|i| {
        let pool = pool.clone();
        async move {
            pool.checkout(&LaunchProfile::default(), &OwnerKey::new(format!("o{i}")))
                .await
                .unwrap()
        }
    }))
    .await;
    let status = until(&pool, |s| s.profiles[0].warm == 4).await;
    assert_eq!(status.profiles[0].target, 4, "{status:#?}");
    assert_eq!(status.profiles[0].target_reason, "peak 4 in last 1s");
    assert_eq!(status.profiles[0].in_flight, 4);

    // The requests end; after the window the target is the minimum again and the reservoir
    // is trimmed back to it.
    drop(leases);
    let status = until(&pool, |s| s.profiles[0].warm == 1).await;
    assert_eq!(status.profiles[0].target, 1, "{status:#?}");
    assert_eq!(
        status.profiles[0].target_reason,
        "configured minimum (--warm)"
    );
    assert_eq!(status.profiles[0].in_flight, 0);
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_target_of_a_busy_profile_is_capped_by_the_capacity() {
    let fake = FakeRuntime::new();
    let config = PoolConfig {
        max_workers: 2,
        ..config(reuse(10))
    };
    let pool = pool_with(&fake, config).await;
    let owners = ["a", "b", "c"];
    let checkouts = owners.map(|o| {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.checkout(&LaunchProfile::default(), &OwnerKey::new(o))
                .await
        })
    });
    let status = until(&pool, |s| s.profiles[0].in_flight == 3).await;
    assert_eq!(status.profiles[0].target, 2, "{status:#?}");
    assert_eq!(
        status.profiles[0].target_reason,
        "peak 3 in last 60s, capped at --max-workers"
    );
    for c in checkouts {
        c.abort();
    }
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_profile_whose_workers_fail_to_start_is_backed_off_then_given_up_until_asked_for() {
    let fake = FakeRuntime::new();
    let config = PoolConfig {
        checkout_timeout: Duration::from_millis(300),
        start_backoff: StartBackoff {
            first: Duration::from_millis(20),
            max: Duration::from_millis(80),
            give_up_after: 4,
        },
        ..config(reuse(10))
    };
    let pool = pool_with(&fake, config).await;
    let broken = LaunchProfile {
        system_prompt: Some("broken".into()),
        ..LaunchProfile::default()
    };
    fake.fail_starts_of(Some(&broken));
    let started = Instant::now();
    let failed = pool.checkout(&broken, &OwnerKey::anonymous()).await;
    assert!(
        matches!(&failed, Err(PoolError::StartFailed(e)) if e.contains("no such image")),
        "{:?}",
        failed.map(|_| ())
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // The filler gives the profile up after four failures in a row (more while the request
    // waited), each after a longer wait: 20, 40, 80, 80 ms.
    let status = until(&pool, |s| {
        let p = &s.profiles[1];
        p.failed_starts >= 4 && p.target_reason.contains("not refilled") && p.starting == 0
    })
    .await;
    let profile = &status.profiles[1];
    assert_eq!(profile.target, 0, "{status:#?}");
    assert!(profile.target_reason.contains(&format!(
        "not refilled after {} failed starts",
        profile.failed_starts
    )));
    assert_eq!(
        status.profiles[0].warm, 1,
        "the default profile is unaffected"
    );
    let attempts = fake.failed_starts();
    assert_eq!(attempts, u64::from(profile.failed_starts));
    assert!(
        attempts <= 6,
        "one start at a time, never a storm: {attempts}"
    );
    // Nothing more is tried for it while nobody asks (four times the longest wait).
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(fake.failed_starts(), attempts);
    assert_eq!(
        fake.container_ids().len(),
        1,
        "only the default profile's warm worker"
    );

    // A request asks for it again: once its workers start, it is served and healthy.
    fake.fail_starts_of(None);
    let lease = pool
        .checkout(&broken, &OwnerKey::anonymous())
        .await
        .unwrap();
    assert_eq!(lease.worker().profile(), &broken);
    let status = pool.status();
    assert_eq!(status.profiles[1].failed_starts, 0, "{status:#?}");
    assert_eq!(status.start_failures, attempts);
    drop(lease);
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_new_conversation_takes_over_a_first_turn_at_once_and_a_later_one_idle_past_the_limit() {
    let mut fake = FakeRuntime::new();
    fake.start_delay = Duration::from_secs(3);
    let config = PoolConfig {
        takeover_idle: Duration::from_millis(300),
        ..config(reuse(10))
    };
    let pool = pool_with(&fake, config).await;
    let mut first = Chat::default();
    let holder = turn(&pool, &fake, "alice", &mut first, "one").await;
    assert_eq!(
        pool.status().profiles[0].warm,
        0,
        "its replacement is starting"
    );

    // A first turn's holding is reset and serves a new conversation at once, rather than
    // the new one waiting for the start.
    let started = Instant::now();
    let mut second = Chat::default();
    let served = turn(&pool, &fake, "alice", &mut second, "two").await;
    assert_eq!(served, holder);
    assert!(was_reset(&fake, &holder));
    assert!(started.elapsed() < Duration::from_millis(250), "no wait");

    // Once a conversation has continued, its holding is left alone at first: the next new
    // conversation waits, and takes it over once it is idle long enough, well before the
    // start would be done.
    turn(&pool, &fake, "alice", &mut second, "two again").await;
    let started = Instant::now();
    let mut third = Chat::default();
    let served = turn(&pool, &fake, "alice", &mut third, "three").await;
    let waited = started.elapsed();
    assert_eq!(served, holder);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(2000),
        "{waited:?}"
    );
    // Once the start is done, the second conversation's follow-up replays on that new
    // worker; the third's continues.
    assert!(pool.wait_warm(1, Duration::from_secs(5)).await);
    turn(&pool, &fake, "alice", &mut second, "two once more").await;
    turn(&pool, &fake, "alice", &mut third, "three again").await;
    let status = pool.status();
    assert_eq!((status.continued, status.replayed), (2, 1));
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_burst_of_one_shot_requests_runs_on_the_workers_it_has_instead_of_waiting_for_starts() {
    let mut fake = FakeRuntime::new();
    fake.start_delay = Duration::from_secs(2);
    let config = PoolConfig {
        warm_default: 2,
        max_workers: 8,
        ..config(reuse(100))
    };
    let pool = pool_with(&fake, config).await;
    assert!(pool.wait_warm(2, Duration::from_secs(20)).await);
    // Four at a time, twenty in all, from one key: every one is served by the two warm
    // workers (each taking over a finished one-shot's holding), none waits for the starts.
    let started = Instant::now();
    let workers: Vec<String> = futures::stream::iter(0..20)
        .map(|i| {
            let (pool, fake) = (pool.clone(), fake.clone());
            async move {
                let mut chat = Chat::default();
                turn(&pool, &fake, "alice", &mut chat, &format!("one-shot {i}")).await
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let distinct: std::collections::HashSet<&String> = workers.iter().collect();
    assert_eq!(distinct.len(), 2, "{workers:?}");
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_sent_the_moment_the_answer_ends_finds_the_holding() {
    let fake = FakeRuntime::new();
    let pool = pool_with(&fake, config(reuse(100))).await;
    let owner = OwnerKey::new("alice");
    let mut chat = Chat::default();
    let prompts: Vec<String> = (0..30).map(|i| format!("turn {i}")).collect();
    for prompt in &prompts {
        // No wait for the release: the next request goes out as soon as the stream ends.
        let stream = pool
            .run_conversation(&LaunchProfile::default(), &owner, chat.request(prompt))
            .await
            .unwrap();
        let (events, outcome) = stream.collect_all().await;
        assert!(outcome.is_success(), "{outcome:?}");
        chat.saw(prompt, &text(&events));
    }
    let status = pool.status();
    assert_eq!((status.continued, status.replayed), (29, 0), "{status:?}");
    pool.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_worker_started_ahead_yields_the_cpu_until_warm_and_a_session_start_does_not() {
    let fake = FakeRuntime::new();
    let ms = Duration::from_millis;
    fake.set_cpu_samples(vec![ms(0), ms(300), ms(600), ms(620), ms(900)]);
    let pool = pool_with(&fake, config(reuse(10))).await;
    let (pooled, _) = serve(&pool, "alice", "one").await;
    assert_eq!(fake.cpu_shares_of(&pooled), [Some(128), Some(1024)]);
    assert_eq!(
        fake.cpu_samples_read(&pooled),
        0,
        "a pool worker does not wait for quiet (pre-warmed session workers do)"
    );

    let workspace = SessionWorkspace {
        session_id: "s1".into(),
        volume: "ccpool.test.alice.s1".into(),
    };
    let session = pool
        .start_dedicated(LaunchProfile::default(), workspace)
        .await
        .unwrap();
    assert_eq!(
        fake.cpu_shares_of(session.container_id()),
        [Some(1024)],
        "a request waits for it"
    );
    assert_eq!(fake.cpu_samples_read(session.container_id()), 0);
    drop(session);
    pool.shutdown(Duration::from_secs(2)).await;
}
