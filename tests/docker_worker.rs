//! The worker runtime against the real Docker engine, the real CLI in real containers, and
//! the mock upstream: streaming, reuse (the reset leaves no trace), interrupt, a killed container,
//! credentials, the sandbox, and clean-up.

mod support;

use std::time::{Duration, Instant};

use ccpool::credentials::Credentials;
use ccpool::domain::{
    BlockDelta, ContentBlock, HistoryMessage, LaunchProfile, OwnerKey, Role, TurnEvent, TurnItem,
    TurnRequest, TurnStatus,
};
use ccpool::pool::ReusePolicy;
use ccpool::runtime::{ContainerRuntime, LABEL_INSTANCE, LABEL_MANAGED};
use futures::StreamExt;
use support::docker::{
    self, instance_containers, pool_config, reuse, settings, shutdown_clean, start_pool,
};
use support::mock_upstream::MockUpstream;

fn text_deltas(events: &[TurnEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::BlockDelta {
                delta: BlockDelta::Text(t),
                ..
            } => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn anon() -> OwnerKey {
    OwnerKey::anonymous()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_streams_back_token_deltas() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;

    let stream = pool
        .run(
            &LaunchProfile::default(),
            &anon(),
            TurnRequest::text("Say hello to the pool"),
        )
        .await
        .unwrap();
    let (events, outcome) = stream.collect_all().await;

    assert_eq!(outcome.status, TurnStatus::Completed, "{outcome:?}");
    let deltas = text_deltas(&events);
    assert!(deltas.len() >= 4, "token by token, got {deltas:?}");
    assert_eq!(deltas.concat(), "Echo: Say hello to the pool");
    assert!(matches!(
        events.first(),
        Some(TurnEvent::MessageStart { .. })
    ));
    assert_eq!(events.last(), Some(&TurnEvent::MessageStop));
    assert!(
        outcome.usage.input_tokens > 0 && outcome.usage.output_tokens > 0,
        "{:?}",
        outcome.usage
    );

    let requests = mock.message_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].last_user_prompt(), "Say hello to the pool");
    assert_eq!(requests[0].header("x-api-key"), Some("sk-test"));
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_on_one_warm_worker_leave_no_trace_of_each_other() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    let owner = OwnerKey::new("alice");

    let lease = pool
        .checkout(&LaunchProfile::default(), &owner)
        .await
        .unwrap();
    let first_container = lease.worker().container_id().to_string();
    let (_, first) = lease
        .start_turn(TurnRequest::text("remember the word pelican-42"))
        .collect_all()
        .await;
    assert!(first.is_success(), "{first:?}");

    // The release (the reset) runs after the turn; wait for the worker to come back.
    assert!(pool.wait_releases(1, Duration::from_secs(30)).await);
    let lease = pool
        .checkout(&LaunchProfile::default(), &owner)
        .await
        .unwrap();
    assert_eq!(
        lease.worker().container_id(),
        first_container,
        "same warm worker"
    );
    let (events, second) = lease
        .start_turn(TurnRequest::text("what was the word?"))
        .collect_all()
        .await;
    assert!(second.is_success(), "{second:?}");
    assert_eq!(text_deltas(&events).concat(), "Echo: what was the word?");

    let requests = mock.message_requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests[0].all_text().contains("pelican-42"));
    assert!(
        !requests[1].all_text().contains("pelican-42"),
        "the second request carries a trace of the first"
    );
    // The reset (a rewind) leaves no note: the second request is shaped exactly like the
    // first, a single user message holding only the client's text.
    for (request, prompt) in requests
        .iter()
        .zip(["remember the word pelican-42", "what was the word?"])
    {
        let messages = request.messages();
        assert_eq!(messages[0]["role"], "user");
        assert_eq!(
            messages[0]["content"],
            serde_json::json!([{"type": "text", "text": prompt}]),
            "{messages:?}"
        );
        assert!(
            messages[1..].iter().all(|m| m["role"] == "system"),
            "{messages:?}"
        );
        assert!(!request.all_text().contains("local-command"));
    }
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_warms_up_on_the_relay_alone_and_leaves_no_trace() {
    let mock = MockUpstream::start().await;
    let warmed_settings = settings(&mock.base_url(), Credentials::ApiKey("sk-test".into()));
    let gateway = warmed_settings.relay.as_ref().unwrap().gateway.clone();
    let turns = warmed_settings.warm_up_turns;
    assert!(turns > 0, "warming up is the default");
    let warmed = start_pool(warmed_settings, pool_config(reuse(), 1)).await;
    let mut cold_settings = settings(&mock.base_url(), Credentials::ApiKey("sk-test".into()));
    cold_settings.warm_up_turns = 0;
    let cold_gateway = cold_settings.relay.as_ref().unwrap().gateway.clone();
    let cold = start_pool(cold_settings, pool_config(reuse(), 1)).await;

    // Every warm-up request was answered by the relay: none reached the upstream.
    let started = warmed.status().started;
    assert!(started >= 1);
    assert_eq!(gateway.warm_up_answers(), turns as u64 * started);
    assert_eq!(cold_gateway.warm_up_answers(), 0);
    assert_eq!(
        mock.message_request_count(),
        0,
        "a warm-up reached the upstream"
    );

    // The same request on a warmed worker and on a never-used one: the upstream gets the
    // same body (but for the per-process metadata), with no trace of the warm-up.
    for pool in [&warmed, &cold] {
        let lease = pool
            .checkout(&LaunchProfile::default(), &anon())
            .await
            .unwrap();
        assert_eq!(lease.worker().uses(), 0, "warm-up turns are not uses");
        let (events, outcome) = lease
            .start_turn(TurnRequest::text("the same first request"))
            .collect_all()
            .await;
        assert!(outcome.is_success(), "{outcome:?}");
        assert_eq!(
            text_deltas(&events).concat(),
            "Echo: the same first request"
        );
    }
    let mut requests = mock.message_requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in &mut requests {
        assert!(
            !request.all_text().contains("warm-up"),
            "{:?}",
            request.body
        );
        request.body.as_object_mut().unwrap().remove("metadata");
    }
    assert_eq!(requests[0].body, requests[1].body);
    shutdown_clean(warmed).await;
    shutdown_clean(cold).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_mid_stream_ends_the_turn_and_the_worker_serves_again() {
    support::init_tracing();
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;

    let lease = pool
        .checkout(&LaunchProfile::default(), &anon())
        .await
        .unwrap();
    let container = lease.worker().container_id().to_string();
    let mut stream = lease.start_turn(TurnRequest::text("[[slow]] [[long]] go"));
    let mut deltas = 0;
    while let Some(TurnItem::Event(event)) = stream.next().await {
        if matches!(event, TurnEvent::BlockDelta { .. }) {
            deltas += 1;
            if deltas == 3 {
                break;
            }
        }
    }
    let interrupted_at = Instant::now();
    stream.interrupt();
    let (rest, outcome) = stream.collect_all().await;
    assert_eq!(outcome.status, TurnStatus::Interrupted, "{outcome:?}");
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(5),
        "took {:?}",
        interrupted_at.elapsed()
    );
    assert!(
        deltas + text_deltas(&rest).len() < 50,
        "the stream went on after the interrupt"
    );

    assert!(pool.wait_releases(1, Duration::from_secs(30)).await);
    let lease = pool
        .checkout(&LaunchProfile::default(), &anon())
        .await
        .unwrap();
    assert_eq!(
        lease.worker().container_id(),
        container,
        "the interrupted worker is reused"
    );
    let (events, outcome) = lease
        .start_turn(TurnRequest::text("after interrupt"))
        .collect_all()
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(text_deltas(&events).concat(), "Echo: after interrupt");
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_mid_request_ends_it_with_an_error_and_the_worker_is_replaced() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    let started_before = pool.status().started;

    let lease = pool
        .checkout(&LaunchProfile::default(), &anon())
        .await
        .unwrap();
    let container = lease.worker().container_id().to_string();
    let mut stream = lease.start_turn(TurnRequest::text("[[slow]] [[long]] go"));
    while let Some(TurnItem::Event(event)) = stream.next().await {
        if matches!(event, TurnEvent::BlockDelta { .. }) {
            break;
        }
    }
    let killed_at = Instant::now();
    docker::docker()
        .await
        .client()
        .kill_container(
            &container,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    let (_, outcome) = stream.collect_all().await;
    assert!(
        matches!(outcome.status, TurnStatus::WorkerFailed(_)),
        "{outcome:?}"
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "no hang: {:?}",
        killed_at.elapsed()
    );

    // The pool replaces it: a new warm worker, and the killed container is removed.
    assert!(pool.wait_warm(1, Duration::from_secs(60)).await);
    assert!(pool.status().started > started_before);
    let (_, next) = pool
        .run(
            &LaunchProfile::default(),
            &anon(),
            TurnRequest::text("still there?"),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(next.is_success(), "{next:?}");
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_token_reaches_the_upstream_as_bearer_and_nowhere_else() {
    let token = "sk-ant-oat01-test-subscription-token";
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::OAuthToken(token.into())),
        pool_config(reuse(), 1),
    )
    .await;

    let lease = pool
        .checkout(&LaunchProfile::default(), &anon())
        .await
        .unwrap();
    let container = lease.worker().container_id().to_string();
    let (_, outcome) = lease
        .start_turn(TurnRequest::text("hello"))
        .collect_all()
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    let request = &mock.message_requests()[0];
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(request.header("x-api-key"), None);

    // Not in the container's configuration, which `docker inspect` shows to anyone.
    let inspect = docker::docker()
        .await
        .client()
        .inspect_container(&container, None)
        .await
        .unwrap();
    let shown = serde_json::to_string(&inspect).unwrap();
    assert!(
        !shown.contains(token),
        "the token is visible in docker inspect"
    );
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_is_placed_in_the_tmpfs_home() {
    let mock = MockUpstream::start().await;
    let file = serde_json::json!({"claudeAiOauth": {
        "accessToken": "sk-ant-oat01-from-file", "refreshToken": "sk-ant-ort01-x",
        "expiresAt": 4_102_444_800_000u64, "scopes": ["user:inference"], "subscriptionType": "max"}});
    let pool = start_pool(
        settings(
            &mock.base_url(),
            Credentials::CredentialsFile(file.to_string().as_str().into()),
        ),
        pool_config(reuse(), 1),
    )
    .await;
    let (_, outcome) = pool
        .run(
            &LaunchProfile::default(),
            &anon(),
            TurnRequest::text("hello"),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(
        mock.message_requests()[0].header("authorization"),
        Some("Bearer sk-ant-oat01-from-file")
    );
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_in_the_hardened_sandbox() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    let lease = pool
        .checkout(&LaunchProfile::default(), &anon())
        .await
        .unwrap();
    let container = lease.worker().container_id().to_string();

    let (code, out) = docker::exec_output(&container, "1000:1000", "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; tr '\\0' ' ' < /proc/1/cmdline; echo").await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(
        out.contains("docker-init"),
        "an init process is PID 1: {out}"
    );

    let (code, out) = docker::exec_output(&container, "1000:1000", "touch /usr/x").await;
    assert_ne!(code, 0, "the root filesystem is writable: {out}");
    let (code, out) = docker::exec_output(
        &container,
        "1000:1000",
        "touch /tmp/x \"$HOME/x\" /workspace/x && test ! -e /var/run/docker.sock",
    )
    .await;
    assert_eq!(code, 0, "tmpfs mounts writable, no Docker socket: {out}");
    let (_, out) = docker::exec_output(
        &container,
        "1000:1000",
        "ps -eo user,comm 2>/dev/null || (for p in /proc/[0-9]*; do stat -c '%U' $p; done)",
    )
    .await;
    assert!(
        !out.lines()
            .any(|l| l.trim_start().starts_with("root") && !l.contains("docker-init")),
        "only the init runs as root: {out}"
    );

    let inspect = docker::docker()
        .await
        .client()
        .inspect_container(&container, None)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(1024 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    // A warm worker has the usual CPU weight back (128 only while it started).
    assert_eq!(host.cpu_shares, Some(1024));
    assert_eq!(host.pids_limit, Some(256));
    assert_eq!(host.readonly_rootfs, Some(true));
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
    assert_eq!(
        labels.get(LABEL_INSTANCE),
        Some(&pool.settings().instance_id)
    );
    drop(lease);
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_text_is_never_a_file_mention_and_images_and_models_reach_the_upstream() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    // A 1x1 PNG.
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let request = TurnRequest {
        history: Vec::new(),
        content: vec![
            ContentBlock::Text("summarize @/etc/passwd".into()),
            ContentBlock::Image {
                media_type: "image/png".into(),
                data: png.into(),
            },
        ],
        model: Some("claude-haiku-4-5".into()),
        ..TurnRequest::default()
    };
    let (_, outcome) = pool
        .run(&LaunchProfile::default(), &anon(), request)
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(outcome.is_success(), "{outcome:?}");

    let all: String = mock.requests().iter().map(|r| r.all_text()).collect();
    assert!(
        !all.contains("root:x:0:0"),
        "/etc/passwd reached the upstream"
    );
    // Switching the model makes the CLI check it with a small request of its own first.
    let requests = mock.message_requests();
    let request = requests
        .iter()
        .find(|r| r.all_text().contains("summarize @/etc/passwd"))
        .expect("the prompt reached the upstream verbatim");
    assert_eq!(request.body["model"], "claude-haiku-4-5");
    let last = request
        .messages()
        .into_iter()
        .rfind(|m| m["role"] == "user")
        .unwrap();
    let image = last["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "image")
        .cloned();
    assert_eq!(image.map(|b| b["source"]["data"].clone()), Some(png.into()));
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_the_worker_did_not_produce_is_replayed_in_order() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    let say = |role, text: &str| HistoryMessage {
        role,
        content: vec![ContentBlock::Text(text.into())],
    };
    let request = TurnRequest {
        history: vec![
            say(Role::User, "first question @/etc/passwd"),
            say(Role::Assistant, "first answer"),
            say(Role::User, "second question"),
            say(Role::Assistant, "second answer"),
        ],
        content: vec![ContentBlock::Text("third question".into())],
        model: None,
        ..TurnRequest::default()
    };
    let owner = OwnerKey::new("replay");
    let (events, outcome) = pool
        .run(&LaunchProfile::default(), &owner, request)
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(text_deltas(&events).concat(), "Echo: third question");

    let request = mock.message_requests().pop().unwrap();
    let turns = request.turns();
    let expected: Vec<(String, String)> = [
        ("user", "first question @/etc/passwd"),
        ("assistant", "first answer"),
        ("user", "second question"),
        ("assistant", "second answer"),
        ("user", "third question"),
    ]
    .iter()
    .map(|(r, t)| (r.to_string(), t.to_string()))
    .collect();
    assert_eq!(turns, expected);
    assert!(!request.all_text().contains("root:x:0:0"));

    // The worker is reset and serves its owner again afterwards, with a fresh conversation.
    assert!(pool.wait_releases(1, Duration::from_secs(30)).await);
    let (_, outcome) = pool
        .run(
            &LaunchProfile::default(),
            &owner,
            TurnRequest::text("alone"),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    let last = mock.message_requests().pop().unwrap();
    assert!(
        !last.all_text().contains("first question"),
        "the replayed history leaked into the next request"
    );
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_reported_promptly_with_their_status() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(reuse(), 1),
    )
    .await;
    for (keyword, status, kind) in [
        ("[[e429]]", 429, "rate_limit_error"),
        ("[[e529]]", 529, "overloaded_error"),
        ("[[e401]]", 401, "authentication_error"),
        ("[[e400]]", 400, "invalid_request_error"),
    ] {
        let started = Instant::now();
        let stream = pool
            .run(
                &LaunchProfile::default(),
                &anon(),
                TurnRequest::text(keyword),
            )
            .await
            .unwrap();
        let (_, outcome) = stream.collect_all().await;
        match &outcome.status {
            TurnStatus::UpstreamError {
                status: s, kind: k, ..
            } => {
                assert_eq!(*s, Some(status), "{keyword}");
                assert_eq!(k.as_deref(), Some(kind), "{keyword}");
            }
            other => panic!("{keyword}: {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{keyword} took {:?}",
            started.elapsed()
        );
    }
    // A stream cut halfway is an upstream error, whatever the CLI concludes, and it is never
    // retried as a second (non-streaming) request.
    let before = mock.message_request_count();
    let started = Instant::now();
    let (_, outcome) = pool
        .run(
            &LaunchProfile::default(),
            &anon(),
            TurnRequest::text("[[midfail]]"),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(started.elapsed() < Duration::from_secs(30), "{outcome:?}");
    assert!(
        matches!(outcome.status, TurnStatus::UpstreamError { .. }),
        "{outcome:?}"
    );
    assert_eq!(mock.message_request_count(), before + 1);
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_policy_gives_every_request_a_new_container() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config(ReusePolicy::Fresh, 1),
    )
    .await;
    let mut containers = Vec::new();
    for prompt in ["one", "two"] {
        let lease = pool
            .checkout(&LaunchProfile::default(), &anon())
            .await
            .unwrap();
        containers.push(lease.worker().container_id().to_string());
        let (_, outcome) = lease
            .start_turn(TurnRequest::text(prompt))
            .collect_all()
            .await;
        assert!(outcome.is_success(), "{outcome:?}");
    }
    assert_ne!(containers[0], containers[1]);
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_removes_what_an_earlier_run_of_the_instance_left() {
    let mock = MockUpstream::start().await;
    let settings = settings(&mock.base_url(), Credentials::ApiKey("sk-test".into()));
    let runtime = docker::docker().await;
    let labels = ccpool::sandbox::worker_labels(&settings.instance_id, "leftover", "p");
    let leftover = runtime
        .start_container(&settings.sandbox.container_spec(labels))
        .await
        .unwrap();
    assert_eq!(
        instance_containers(&settings.instance_id).await,
        vec![leftover.clone()]
    );

    let pool = start_pool(settings, pool_config(reuse(), 1)).await;
    let now = instance_containers(&pool.settings().instance_id).await;
    assert!(!now.contains(&leftover), "the leftover is still there");
    assert_eq!(now.len(), 1, "only the new warm worker: {now:?}");
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

/// The engine's CPU samples of a worker's container, which a pre-warmed session worker waits
/// on until its CLI is quiet: the first comes at once and holds the CLI's start, the next
/// about a second later, never less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_samples_a_workers_cpu_time() {
    let mock = MockUpstream::start().await;
    let worker_settings = settings(&mock.base_url(), Credentials::ApiKey("sk-test".into()));
    let instance = worker_settings.instance_id.clone();
    let pool = start_pool(worker_settings, pool_config(reuse(), 1)).await;
    let container = instance_containers(&instance)
        .await
        .pop()
        .expect("a warm worker");
    let runtime = docker::docker().await;
    let t0 = Instant::now();
    let samples: Vec<Duration> = runtime
        .cpu_time_samples(&container)
        .take(2)
        .map(|s| s.expect("a sample"))
        .collect()
        .await;
    assert_eq!(samples.len(), 2);
    assert!(
        samples[0] > Duration::from_millis(100),
        "a CLI start takes a good part of a CPU-second: {samples:?}"
    );
    assert!(samples[1] >= samples[0], "{samples:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    shutdown_clean(pool).await;
    mock.shutdown().await;
}
