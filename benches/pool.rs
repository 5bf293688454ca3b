//! Benchmark of the warm pool with the real CLI in real containers against the mock upstream.
//! Prints, for the `reuse` and `fresh` policies: time from submitting a prompt to the first
//! text delta (p50/p90), requests per second at concurrency 1 and 4, and CPU per request
//! (whole machine: CLI, Docker, ccpool and the mock). As a baseline, the same CLI run directly
//! on the host, started ahead of time and waiting on stdin.
//!
//! Run: `cargo bench --bench pool` (needs the images from images/build.sh). Sizes can be set
//! with BENCH_REQUESTS (per measured phase, default 40); BENCH_PHASES picks phases
//! (`relay,host,reuse,fresh,follow,http,tools`, default all). `relay` is the relay's own first-delta
//! overhead. `http` runs everything through ccpool's HTTP server with default pool settings: a
//! burst right after start, stateless three-turn conversations at c=1 and c=4, a new session's
//! first turn (BENCH_BURST sets the burst size, default twice BENCH_REQUESTS, at most 80;
//! BENCH_WARM_UP_TURNS and BENCH_TAKEOVER_MS set `--warm-up-turns` and `--takeover-idle-secs`,
//! to compare).
//! Workers run on the internal test network and reach the mock through the relay. `tools`
//! times a client tool round trip through HTTP: the first delta of a warm first turn, of a
//! parked turn resumed by its results, and of results replayed.

#[path = "../tests/support/mock_upstream.rs"]
mod mock_upstream;
#[path = "../tests/support/docker.rs"]
#[allow(dead_code)]
mod test_docker;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ccpool::cli::{CliEvent, CliSettings, McpRequest, StdinLine, StreamEvent, cli_argv, cli_env};
use ccpool::credentials::Credentials;
use ccpool::docker::DockerRuntime;
use ccpool::domain::{BlockDelta, LaunchProfile, OwnerKey, TurnEvent, TurnItem, TurnRequest};
use ccpool::pool::{PoolConfig, ReusePolicy, WarmPool};
use ccpool::worker::WorkerSettings;
use futures::StreamExt;
use mock_upstream::MockUpstream;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

struct Phase {
    name: String,
    first_delta: Vec<Duration>,
    requests: usize,
    wall: Duration,
    cpu: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

impl Phase {
    fn print(&self) {
        let mut d = self.first_delta.clone();
        d.sort();
        println!(
            "{:<34} first delta p50 {:>7.1} ms  p90 {:>7.1} ms | {:>6.1} req/s | CPU {:>6.1} ms/req | n={}",
            self.name,
            percentile(&d, 0.5).as_secs_f64() * 1e3,
            percentile(&d, 0.9).as_secs_f64() * 1e3,
            self.requests as f64 / self.wall.as_secs_f64(),
            self.cpu.as_secs_f64() * 1e3 / self.requests as f64,
            self.requests,
        );
    }
}

/// Busy CPU time of the whole machine so far (from /proc/stat).
fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    let ticks = 100; // USER_HZ on Linux.
    Duration::from_millis(busy * 1000 / ticks)
}

fn requests_per_phase() -> usize {
    std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// The CLI run directly on the host: one process started ahead of time, a rewind between
/// requests, exactly what a worker does minus the container.
async fn host_baseline(mock: &MockUpstream, n: usize) -> Option<Phase> {
    let binary = std::env::var("CCPOOL_CLI_BIN")
        .unwrap_or_else(|_| format!("{}/images/worker/claude", env!("CARGO_MANIFEST_DIR")));
    if !std::path::Path::new(&binary).exists() {
        println!("host baseline skipped: no CLI binary at {binary} (run images/build.sh)");
        return None;
    }
    let settings = CliSettings {
        program: binary,
        base_url: Some(mock.base_url()),
        ..CliSettings::default()
    };
    let argv = cli_argv(&settings, &LaunchProfile::default());
    let home = std::env::temp_dir().join(format!("ccpool-bench-{}", std::process::id()));
    std::fs::create_dir_all(&home).ok()?;
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .envs(cli_env(&settings, &LaunchProfile::default(), None))
        .env("ANTHROPIC_API_KEY", "sk-bench")
        .env("HOME", &home)
        .current_dir(&home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let mut lines = BufReader::new(child.stdout.take()?).lines();
    let send = |line: StdinLine| format!("{}\n", line.to_json());
    stdin
        .write_all(
            send(StdinLine::Control {
                request_id: "init".into(),
                request: ccpool::cli::ControlRequest::Initialize,
            })
            .as_bytes(),
        )
        .await
        .ok()?;
    while let Some(event) = host_event(&mut lines, &mut stdin).await {
        if matches!(event, CliEvent::ControlResponse { .. }) {
            break;
        }
    }
    let mut first = Vec::new();
    let cpu0 = machine_cpu();
    let t0 = Instant::now();
    for i in 0..n + 3 {
        let started = Instant::now();
        let uuid = uuid::Uuid::new_v4().to_string();
        let user = StdinLine::User {
            uuid: uuid.clone(),
            content: vec![ccpool::domain::ContentBlock::Text(format!("bench {i}"))],
        };
        stdin.write_all(send(user).as_bytes()).await.ok()?;
        let mut got = None;
        while let Some(event) = host_event(&mut lines, &mut stdin).await {
            match event {
                CliEvent::Stream(StreamEvent::ContentBlockDelta { .. }) if got.is_none() => {
                    got = Some(started.elapsed())
                }
                CliEvent::Result(_) => break,
                _ => {}
            }
        }
        let rewind = StdinLine::Control {
            request_id: format!("rewind{i}"),
            request: ccpool::cli::ControlRequest::RewindConversation {
                target: uuid.clone(),
                last_seen: uuid,
            },
        };
        stdin.write_all(send(rewind).as_bytes()).await.ok()?;
        while let Some(event) = host_event(&mut lines, &mut stdin).await {
            if matches!(event, CliEvent::ControlResponse { .. }) {
                break;
            }
        }
        if i >= 3 {
            first.push(got?);
        }
    }
    let phase = Phase {
        name: "host CLI (no container), c=1".into(),
        first_delta: first,
        requests: n,
        wall: t0.elapsed(),
        cpu: machine_cpu() - cpu0,
    };
    drop(stdin);
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&home);
    Some(phase)
}

/// The host CLI's next event, answering its in-band MCP server's requests on the way as a
/// worker does (no client tools): without answers the CLI waits on them.
async fn host_event(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stdin: &mut tokio::process::ChildStdin,
) -> Option<CliEvent> {
    use ccpool::cli::mcp;
    loop {
        let line = lines.next_line().await.ok()??;
        match CliEvent::parse(&line) {
            Ok(CliEvent::Mcp {
                request_id,
                request,
            }) => {
                let message = match request {
                    McpRequest::Initialize { id } => mcp::initialize_result(&id),
                    McpRequest::Notification { .. } => mcp::empty_result(),
                    McpRequest::ListTools { id } => mcp::tools_list_result(&id, &[]),
                    McpRequest::Other { id, method } => mcp::method_not_found(&id, &method),
                    McpRequest::CallTool { id, .. } => mcp::call_result(&id, &[], true),
                };
                let answer = StdinLine::McpResponse {
                    request_id,
                    message,
                };
                stdin
                    .write_all(format!("{}\n", answer.to_json()).as_bytes())
                    .await
                    .ok()?;
            }
            Ok(event) => return Some(event),
            Err(_) => {}
        }
    }
}

async fn one_request(pool: &WarmPool, owner: &OwnerKey, i: usize) -> Duration {
    let started = Instant::now();
    let mut stream = pool
        .run(
            &LaunchProfile::default(),
            owner,
            TurnRequest::text(format!("bench {i}")),
        )
        .await
        .expect("checkout");
    let mut first = None;
    while let Some(item) = stream.next().await {
        match item {
            TurnItem::Event(TurnEvent::BlockDelta {
                delta: BlockDelta::Text(_),
                ..
            }) if first.is_none() => first = Some(started.elapsed()),
            TurnItem::Finished(outcome) => assert!(outcome.is_success(), "{outcome:?}"),
            _ => {}
        }
    }
    first.expect("a text delta")
}

async fn run_phase(pool: &WarmPool, name: &str, concurrency: usize, n: usize) -> Phase {
    let owner = OwnerKey::new("bench");
    let cpu0 = machine_cpu();
    let t0 = Instant::now();
    let per_task = n / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let pool = pool.clone();
            let owner = owner.clone();
            tokio::spawn(async move {
                let mut firsts = Vec::new();
                for i in 0..per_task {
                    if concurrency == 1 {
                        // Like the host baseline: the previous request's reset is done before
                        // the clock starts (it still counts in requests per second).
                        let turns = pool.status().turns;
                        pool.wait_releases(turns, Duration::from_secs(30)).await;
                    }
                    firsts.push(one_request(&pool, &owner, c * 1000 + i).await);
                }
                firsts
            })
        })
        .collect();
    let mut first_delta = Vec::new();
    for t in tasks {
        first_delta.extend(t.await.expect("bench task"));
    }
    Phase {
        name: name.into(),
        first_delta,
        requests: per_task * concurrency,
        wall: t0.elapsed(),
        cpu: machine_cpu() - cpu0,
    }
}

/// Worker settings for a benchmark instance: workers on the internal test network, reaching
/// the mock through the relay, as users' workers do.
fn bench_settings(mock: &MockUpstream, instance: &str) -> WorkerSettings {
    let credentials = Credentials::ApiKey("sk-bench".into());
    let relay = test_docker::start_relay(
        &mock.base_url(),
        &credentials,
        ccpool::gateway::BrokerConfig::default(),
    );
    let mut settings = WorkerSettings {
        instance_id: instance.into(),
        credentials,
        relay: Some(relay),
        ..WorkerSettings::default()
    };
    settings.sandbox.image =
        std::env::var("CCPOOL_WORKER_IMAGE").unwrap_or_else(|_| "ccpool-worker:latest".into());
    settings.sandbox.network = test_docker::test_network().0;
    settings
}

/// The relay's own cost: the time to the first `content_block_delta` of a streamed answer,
/// asked of the mock directly and through the relay, alternately, from the host.
async fn bench_relay_overhead(mock: &MockUpstream, n: usize) {
    let relay = test_docker::start_relay(
        &mock.base_url(),
        &Credentials::ApiKey("sk-bench".into()),
        ccpool::gateway::BrokerConfig::default(),
    );
    let token = relay.gateway.issue("bench");
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let body = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "relay overhead"}]})
    .to_string();
    let first_delta = |url: String, key: String| {
        let http = http.clone();
        let body = body.clone();
        async move {
            let started = Instant::now();
            let response = http
                .post(format!("{url}/v1/messages"))
                .header("x-api-key", key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("a response");
            assert_eq!(response.status().as_u16(), 200);
            let mut stream = response.bytes_stream();
            let mut seen = String::new();
            let mut first = None;
            while let Some(chunk) = stream.next().await {
                seen.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
                if first.is_none() && seen.contains("content_block_delta") {
                    first = Some(started.elapsed());
                }
            }
            first.expect("a delta")
        }
    };
    let (mut direct, mut relayed) = (Vec::new(), Vec::new());
    let rounds = (n * 5).max(100);
    for i in 0..rounds + 10 {
        let d = first_delta(mock.base_url(), "sk-bench".into()).await;
        let r = first_delta(relay.url.clone(), token.secret().expose().to_string()).await;
        if i >= 10 {
            direct.push(d);
            relayed.push(r);
        }
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    let (d50, d90) = (pct(&mut direct, 0.5), pct(&mut direct, 0.9));
    let (r50, r90) = (pct(&mut relayed, 0.5), pct(&mut relayed, 0.9));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "relay overhead ({rounds} streamed requests each, host client → mock): first delta direct p50 {:.2} ms p90 {:.2} ms; \
         through the relay p50 {:.2} ms p90 {:.2} ms; added p50 {:.2} ms, p90 {:.2} ms",
        ms(d50),
        ms(d90),
        ms(r50),
        ms(r90),
        ms(r50) - ms(d50),
        ms(r90) - ms(d90)
    );
    relay.gateway.shutdown().await;
}

async fn bench_policy(
    mock: &MockUpstream,
    policy: ReusePolicy,
    label: &str,
    n: usize,
) -> Vec<Phase> {
    let runtime = DockerRuntime::connect().await.expect("Docker");
    let mut settings = bench_settings(mock, &format!("bench-{label}"));
    if let Some(cpus) = std::env::var("BENCH_CPUS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        settings.sandbox.cpus = (cpus > 0.0).then_some(cpus);
    }
    let config = PoolConfig {
        policy,
        max_workers: 10,
        warm_default: 4,
        max_concurrent_starts: 2,
        ..PoolConfig::default()
    };
    let pool = WarmPool::start(
        Arc::new(runtime),
        settings,
        config,
        LaunchProfile::default(),
    )
    .await
    .expect("pool");
    assert!(pool.wait_warm(4, Duration::from_secs(120)).await, "warm-up");
    // Warm-up requests (not measured) so `reuse` has its owner's workers in place.
    run_phase(&pool, "warm-up", 4, 8).await;
    let mut phases = Vec::new();
    let n_fresh = if policy == ReusePolicy::Fresh {
        n / 4
    } else {
        n
    };
    pool.wait_warm(4, Duration::from_secs(120)).await;
    phases.push(run_phase(&pool, &format!("pool {label}, c=1"), 1, n_fresh).await);
    pool.wait_warm(4, Duration::from_secs(120)).await;
    phases.push(run_phase(&pool, &format!("pool {label}, c=4"), 4, n_fresh.max(8)).await);
    let status = pool.status();
    println!(
        "  ({label}: workers started {}, reused {}, retired {})",
        status.started, status.reused, status.retired
    );
    pool.shutdown(Duration::from_secs(30)).await;
    phases
}

/// A follow-up turn in a session (only the new turn reaches the live CLI) next to the same
/// follow-up sent statelessly (the history is replayed through a transcript).
async fn bench_follow_ups(mock: &MockUpstream, n: usize) -> Vec<Phase> {
    use ccpool::chat::{ChatItem, ChatRequest};
    use ccpool::domain::{ContentBlock, HistoryMessage, Role};
    use ccpool::sessions::{SessionConfig, SessionOptions, Sessions};

    let runtime = DockerRuntime::connect().await.expect("Docker");
    let settings = bench_settings(mock, "bench-sessions");
    let config = PoolConfig {
        max_workers: 6,
        warm_default: 2,
        ..PoolConfig::default()
    };
    let pool = WarmPool::start(
        Arc::new(runtime),
        settings,
        config,
        LaunchProfile::default(),
    )
    .await
    .expect("pool");
    assert!(pool.wait_warm(2, Duration::from_secs(120)).await);
    let sessions = Sessions::start(pool.clone(), SessionConfig::default())
        .await
        .expect("sessions");

    let request = |history: &[HistoryMessage], i: usize| ChatRequest {
        owner: OwnerKey::new("bench"),
        profile: LaunchProfile::default(),
        turn: TurnRequest {
            history: history.to_vec(),
            content: vec![ContentBlock::Text(format!("follow-up {i}"))],
            model: None,
            ..TurnRequest::default()
        },
        stop_sequences: Vec::new(),
        include_thinking: false,
        structured: false,
        forced_tool: None,
        single_tool_call: false,
    };
    async fn drain(mut stream: ccpool::chat::ChatStream, started: Instant) -> (Duration, String) {
        let (mut first, mut text) = (None, String::new());
        while let Some(item) = stream.next().await {
            match item {
                ChatItem::Event(TurnEvent::BlockDelta {
                    delta: BlockDelta::Text(t),
                    ..
                }) => {
                    first.get_or_insert(started.elapsed());
                    text.push_str(&t);
                }
                ChatItem::End(end) => assert!(end.failure.is_none(), "{end:?}"),
                _ => {}
            }
        }
        (first.expect("a text delta"), text)
    }

    let mut phases = Vec::new();
    for stateless in [false, true] {
        let mut history: Vec<HistoryMessage> = Vec::new();
        let mut firsts = Vec::new();
        let turns = if stateless { n / 4 } else { n };
        let cpu0 = machine_cpu();
        let t0 = Instant::now();
        for i in 0..=turns {
            let chat = request(&history, i);
            let started = Instant::now();
            let target = if stateless {
                ccpool::chat::Target::Pool
            } else {
                ccpool::chat::Target::Session {
                    id: "bench".into(),
                    options: SessionOptions::default(),
                }
            };
            let stream = ccpool::chat::start(&pool, &sessions, target, chat)
                .await
                .expect("chat")
                .stream;
            let (first, text) = drain(stream, started).await;
            if i > 0 {
                firsts.push(first);
            }
            history.push(HistoryMessage {
                role: Role::User,
                content: vec![ContentBlock::Text(format!("follow-up {i}"))],
            });
            history.push(HistoryMessage {
                role: Role::Assistant,
                content: vec![ContentBlock::Text(text)],
            });
        }
        let name = if stateless {
            "stateless follow-up (continued), c=1"
        } else {
            "session follow-up, c=1"
        };
        phases.push(Phase {
            name: name.into(),
            first_delta: firsts,
            requests: turns + 1,
            wall: t0.elapsed(),
            cpu: machine_cpu() - cpu0,
        });
    }
    sessions.shutdown().await;
    pool.shutdown(Duration::from_secs(30)).await;
    phases
}

/// The model the HTTP phases' requests name.
const BENCH_MODEL: &str = "claude-sonnet-4-5";

/// A streamed `POST /v1/messages` through ccpool's HTTP server: (time to the first text
/// delta, the answer's text).
async fn http_turn(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    messages: &[serde_json::Value],
) -> (Duration, String) {
    let body = serde_json::json!({
        "model": BENCH_MODEL,
        "max_tokens": 32000,
        "stream": true,
        "messages": messages,
    });
    let started = Instant::now();
    let mut request = http
        .post(url)
        .header("anthropic-version", "2023-06-01")
        .json(&body);
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let mut bytes = response.bytes_stream();
    let (mut buffer, mut first, mut text) = (String::new(), None, String::new());
    while let Some(chunk) = bytes.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("body")));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let data: serde_json::Value = serde_json::from_str(data).expect("SSE data");
            if data["type"] == "content_block_delta" {
                if let Some(t) = data["delta"]["text"].as_str() {
                    first.get_or_insert(started.elapsed());
                    text.push_str(t);
                }
            }
        }
    }
    (first.expect("a text delta"), text)
}

/// ccpool's HTTP server on loopback over a fresh pool with `config`.
struct HttpStack {
    pool: WarmPool,
    sessions: ccpool::sessions::Sessions,
    url: String,
    stop: tokio_util::sync::CancellationToken,
}

async fn http_stack(mock: &MockUpstream, label: &str, config: PoolConfig) -> HttpStack {
    use ccpool::http::{ApiSettings, AppState, app};
    use ccpool::sessions::{SessionConfig, Sessions};
    let runtime = DockerRuntime::connect().await.expect("Docker");
    let mut settings = bench_settings(mock, &format!("bench-{label}"));
    // The model every request names, set as the operator would (`--default-model`): its
    // requests are the default profile's. BENCH_DEFAULT_MODEL=none leaves it unset (the
    // CLI's own default, another model than the requests name).
    settings.cli.model = match std::env::var("BENCH_DEFAULT_MODEL").as_deref() {
        Ok("none") => None,
        Ok(model) => Some(model.to_string()),
        Err(_) => Some(BENCH_MODEL.to_string()),
    };
    println!("  (http: --default-model {:?})", settings.cli.model);
    if let Some(turns) = std::env::var("BENCH_WARM_UP_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.warm_up_turns = turns;
    }
    let pool = WarmPool::start(
        Arc::new(runtime),
        settings,
        config,
        LaunchProfile::default(),
    )
    .await
    .expect("pool");
    // As `ccpool serve` does by default: one session worker pre-warmed.
    let session_config = SessionConfig {
        prewarm: 1,
        ..SessionConfig::default()
    };
    let sessions = Sessions::start(pool.clone(), session_config)
        .await
        .expect("sessions");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let state = AppState::new(pool.clone(), sessions.clone(), ApiSettings::default());
    // ccpool's own accept loop, as `ccpool serve` runs it (TCP_NODELAY on every connection:
    // with axum::serve's defaults, Nagle's algorithm held some first deltas ~40 ms).
    tokio::spawn(ccpool::listener::serve(
        listener,
        app(state),
        ccpool::listener::Limits::default(),
        stop.clone(),
    ));
    HttpStack {
        pool,
        sessions,
        url,
        stop,
    }
}

impl HttpStack {
    async fn stop(self) {
        self.sessions.shutdown().await;
        self.stop.cancel();
        self.pool.shutdown(Duration::from_secs(30)).await;
    }
}

/// Stateless three-turn conversations through HTTP at `concurrency`: first turns and
/// follow-ups (each resends the whole conversation) timed apart; turns per second and CPU per
/// turn over all of them.
async fn http_conversations(stack: &HttpStack, concurrency: usize, n: usize) -> Vec<Phase> {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/messages", stack.url);
    let per_task = (n / 3 / concurrency).max(1);
    let (cpu0, t0) = (machine_cpu(), Instant::now());
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let (mut firsts, mut follow_ups) = (Vec::new(), Vec::new());
                for i in 0..per_task {
                    let mut messages = Vec::new();
                    for t in 0..3 {
                        messages.push(serde_json::json!({"role": "user", "content": format!("conversation {c}-{i} turn {t}")}));
                        let (first, text) = http_turn(&http, &url, &[], &messages).await;
                        if t == 0 { firsts.push(first) } else { follow_ups.push(first) }
                        messages.push(serde_json::json!({"role": "assistant", "content": text}));
                    }
                }
                (firsts, follow_ups)
            })
        })
        .collect();
    let (mut firsts, mut follow_ups) = (Vec::new(), Vec::new());
    for t in tasks {
        let (f, u) = t.await.expect("bench task");
        firsts.extend(f);
        follow_ups.extend(u);
    }
    let (wall, cpu) = (t0.elapsed(), machine_cpu() - cpu0);
    let turns = per_task * concurrency * 3;
    vec![
        Phase {
            name: format!("http first turn, c={concurrency}"),
            first_delta: firsts,
            requests: turns,
            wall,
            cpu,
        },
        Phase {
            name: format!("http follow-up, c={concurrency}"),
            first_delta: follow_ups,
            requests: turns,
            wall,
            cpu,
        },
    ]
}

/// `n` single-turn requests at concurrency 4, sent as soon as the pool is ready.
async fn http_burst(stack: &HttpStack, n: usize) -> Phase {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/messages", stack.url);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cpu0, t0) = (machine_cpu(), Instant::now());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, next) = (http.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                let mut firsts = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                    let messages = [serde_json::json!({"role": "user", "content": "burst"})];
                    firsts.push(http_turn(&http, &url, &[], &messages).await.0);
                }
                firsts
            })
        })
        .collect();
    let mut first_delta = Vec::new();
    for t in tasks {
        first_delta.extend(t.await.expect("bench task"));
    }
    let mut slowest = first_delta.clone();
    slowest.sort();
    slowest.reverse();
    println!(
        "  (http: the burst's slowest first deltas, ms: {:?})",
        slowest
            .iter()
            .take(12)
            .map(|d| d.as_millis())
            .collect::<Vec<_>>()
    );
    Phase {
        name: format!("http burst after start, c=4, {n} req"),
        first_delta,
        requests: n,
        wall: t0.elapsed(),
        cpu: machine_cpu() - cpu0,
    }
}

/// The first request of a new session. A session worker is pre-warmed (its container on a
/// fresh volume, its CLI started) for the latest new session's launch profile: a first,
/// unmeasured session sets it, and each measured one starts once one is ready.
async fn http_new_sessions(stack: &HttpStack, n: usize) -> Phase {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/messages", stack.url);
    let new_session = |i: usize| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let id = format!("bench-{}", uuid::Uuid::new_v4().simple());
            let messages = [serde_json::json!({"role": "user", "content": format!("session {i}")})];
            let headers = [("x-session-id", id.clone())];
            let first = http_turn(&http, &url, &headers, &messages).await.0;
            (first, id)
        }
    };
    let prewarmed = || async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while stack.pool.status().prewarmed_sessions == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (_, warm_up) = new_session(usize::MAX).await;
    // CPU over the whole phase (the pre-warmed starts included); requests per second over
    // the requests' own time (not the waits for a pre-warmed worker).
    let cpu0 = machine_cpu();
    let (mut first_delta, mut wall, mut claimed) = (Vec::new(), Duration::ZERO, 0);
    let delete = |id: String| {
        let http = http.clone();
        async move {
            let _ = http
                .delete(format!("{}/v1/sessions/{id}", stack.url))
                .send()
                .await;
        }
    };
    delete(warm_up).await;
    for i in 0..n {
        prewarmed().await;
        let ready = stack.pool.status().prewarmed_sessions;
        let t0 = Instant::now();
        let (first, id) = new_session(i).await;
        wall += t0.elapsed();
        claimed += usize::from(stack.pool.status().prewarmed_sessions < ready);
        first_delta.push(first);
        delete(id).await;
    }
    println!("  (http: {claimed} of {n} new sessions claimed a pre-warmed worker)");
    Phase {
        name: "http new session's first turn, c=1".into(),
        first_delta,
        requests: n,
        wall,
        cpu: machine_cpu() - cpu0,
    }
}

/// Waits (at most 120 s) until every turn is released and the filler has no start in flight,
/// then (at most 10 s) until the machine is quiet: a CLI just started keeps working for about
/// a second after it is warm, which would otherwise land on the next phase's first requests.
/// Not until the warm targets are met: held conversations may be using the capacity, and the
/// filler does not evict them to reach a target (a new conversation takes one over instead).
async fn settle(pool: &WarmPool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    pool.wait_releases(pool.status().turns, Duration::from_secs(120))
        .await;
    while Instant::now() < deadline {
        let s = pool.status();
        if s.profiles.iter().all(|p| p.starting == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Quiet: under 40 ms of CPU in 200 ms, a tenth of one core.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let before = machine_cpu();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if machine_cpu() - before < Duration::from_millis(40) {
            break;
        }
    }
}

/// Everything through ccpool's HTTP server with default pool settings (but host networking).
async fn bench_http(mock: &MockUpstream, n: usize) -> Vec<Phase> {
    // 80 requests by default; a short run (CI's BENCH_REQUESTS=16) bursts less.
    let burst = std::env::var("BENCH_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((2 * n).min(80));
    let mut phases = Vec::new();
    let mut config = PoolConfig::default();
    if let Some(ms) = std::env::var("BENCH_TAKEOVER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.takeover_idle = Duration::from_millis(ms);
    }
    let stack = http_stack(mock, "http", config).await;
    let warm = PoolConfig::default().warm_default;
    assert!(stack.pool.wait_warm(warm, Duration::from_secs(120)).await);
    phases.push(http_burst(&stack, burst).await);
    settle(&stack.pool).await;
    phases.extend(http_conversations(&stack, 1, n).await);
    settle(&stack.pool).await;
    phases.extend(http_conversations(&stack, 4, n).await);
    settle(&stack.pool).await;
    phases.push(http_new_sessions(&stack, (n / 4).max(3)).await);
    let s = stack.pool.status();
    println!(
        "  (http: workers started {}, continued {}, replayed {}, reused {}, retired {})",
        s.started, s.continued, s.replayed, s.reused, s.retired
    );
    for p in &s.profiles {
        println!(
            "  (http: profile {}: target {} warm, {}; warm {}, held {}, idle {})",
            p.fingerprint, p.target, p.target_reason, p.warm, p.held, p.idle
        );
    }
    stack.stop().await;
    phases
}

/// A streamed `POST /v1/messages` with client tools: (time to the first delta of any kind, the
/// message's content blocks as a client would send them back).
async fn http_tool_turn(
    http: &reqwest::Client,
    url: &str,
    messages: &[serde_json::Value],
    tools: &serde_json::Value,
) -> (Duration, Vec<serde_json::Value>) {
    let body = serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": true,
        "messages": messages,
        "tools": tools,
    });
    let started = Instant::now();
    let response = http
        .post(url)
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "bench-tools")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let mut bytes = response.bytes_stream();
    let (mut buffer, mut first) = (String::new(), None);
    let (mut blocks, mut inputs) = (Vec::<serde_json::Value>::new(), Vec::<String>::new());
    while let Some(chunk) = bytes.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("body")));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let data: serde_json::Value = serde_json::from_str(data).expect("SSE data");
            match data["type"].as_str() {
                Some("content_block_start") => {
                    blocks.push(data["content_block"].clone());
                    inputs.push(String::new());
                }
                Some("content_block_delta") => {
                    first.get_or_insert(started.elapsed());
                    let i = data["index"].as_u64().expect("index") as usize;
                    if let Some(t) = data["delta"]["text"].as_str() {
                        let text = format!("{}{t}", blocks[i]["text"].as_str().unwrap_or(""));
                        blocks[i]["text"] = serde_json::json!(text);
                    }
                    if let Some(part) = data["delta"]["partial_json"].as_str() {
                        inputs[i].push_str(part);
                    }
                }
                _ => {}
            }
        }
    }
    for (block, input) in blocks.iter_mut().zip(inputs) {
        if block["type"] == "tool_use" {
            block["input"] = serde_json::from_str(&input).expect("tool input");
        }
    }
    (first.expect("a delta"), blocks)
}

/// A client tool round trip through HTTP, one owner, c=1, `rounds` times: a warm first turn
/// (tools offered, no call), then a call that parks its worker and the results that resume it
/// (first delta of the resumed turn), then results whose call no worker holds (a history
/// replayed through the transcript, as after a release or on another instance).
async fn bench_tools(mock: &MockUpstream, rounds: usize) -> Vec<Phase> {
    use serde_json::json;
    let config = PoolConfig {
        // Plain holdings are let go at the reaper's next pass, so that rounds do not fill
        // the pool; parked ones wait as they do by default.
        hold_idle: Duration::from_millis(1),
        ..PoolConfig::default()
    };
    let stack = http_stack(mock, "tools", config).await;
    let warm = PoolConfig::default().warm_default;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/messages", stack.url);
    let tools = json!([{"name": "get_weather", "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let (mut firsts, mut resumed, mut replayed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu0, mut t0) = (machine_cpu(), Instant::now());
    // Round 0 warms the path up (the first requests through the relay and the worker) and is
    // not counted.
    for i in 0..=rounds {
        if i == 1 {
            (firsts, resumed, replayed) = (Vec::new(), Vec::new(), Vec::new());
            (cpu0, t0) = (machine_cpu(), Instant::now());
        }
        assert!(stack.pool.wait_warm(warm, Duration::from_secs(120)).await);
        let hello = [json!({"role": "user", "content": format!("hello {i}")})];
        firsts.push(http_tool_turn(&http, &url, &hello, &tools).await.0);

        let mut messages = vec![
            json!({"role": "user", "content": format!("[[call]] weather {i} [[input:{{\"city\":\"Oslo\"}}]]")}),
        ];
        let (_, call) = http_tool_turn(&http, &url, &messages, &tools).await;
        let id = call
            .iter()
            .find(|b| b["type"] == "tool_use")
            .expect("a call")["id"]
            .clone();
        messages.push(json!({"role": "assistant", "content": call}));
        messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "snow"}]}));
        let continued = stack.pool.status().continued;
        resumed.push(http_tool_turn(&http, &url, &messages, &tools).await.0);
        assert_eq!(
            stack.pool.status().continued,
            continued + 1,
            "resumed, not replayed"
        );

        let orphan = format!("toolu_bench_{i}_{}", uuid::Uuid::new_v4().simple());
        let history = [
            json!({"role": "user", "content": format!("weather {i}?")}),
            json!({"role": "assistant", "content": [{"type": "tool_use", "id": orphan, "name": "get_weather", "input": {"city": "Lima"}}]}),
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": orphan, "content": "mild"}]}),
        ];
        replayed.push(http_tool_turn(&http, &url, &history, &tools).await.0);
        // The round's holdings end (and their resets finish) before the next round.
        while stack
            .pool
            .status()
            .profiles
            .iter()
            .any(|p| p.held > 0 || p.busy > 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (wall, cpu) = (t0.elapsed(), machine_cpu() - cpu0);
    let turns = rounds * 4;
    let phase = |name: &str, first_delta: Vec<Duration>| Phase {
        name: name.into(),
        first_delta,
        requests: turns,
        wall,
        cpu,
    };
    let p50 = |d: &[Duration]| {
        let mut d = d.to_vec();
        d.sort();
        percentile(&d, 0.5)
    };
    println!(
        "  (tools: parked resume p50 - warm first turn p50 = {:+.1} ms; target <= 10 ms)",
        (p50(&resumed).as_secs_f64() - p50(&firsts).as_secs_f64()) * 1e3
    );
    stack.stop().await;
    vec![
        phase("http tools: warm first turn, c=1", firsts),
        phase("http tools: parked resume, c=1", resumed),
        phase("http tools: replayed results, c=1", replayed),
    ]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mock = MockUpstream::start().await;
        mock.set_keep_bodies(false);
        let n = requests_per_phase();
        println!(
            "ccpool pool benchmark: {} CPUs, {n} requests per phase, mock upstream on loopback",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        );
        let wanted = std::env::var("BENCH_PHASES").unwrap_or_default();
        let run = |phase: &str| wanted.is_empty() || wanted.split(',').any(|p| p == phase);
        if run("relay") {
            bench_relay_overhead(&mock, n).await;
        }
        let mut phases = Vec::new();
        if run("host") {
            phases.extend(host_baseline(&mock, n).await);
        }
        if run("reuse") {
            phases.extend(
                bench_policy(
                    &mock,
                    ReusePolicy::Reuse {
                        max_uses: 1000,
                        max_age: Duration::from_secs(3600),
                    },
                    "reuse",
                    n,
                )
                .await,
            );
        }
        if run("fresh") {
            phases.extend(bench_policy(&mock, ReusePolicy::Fresh, "fresh", n).await);
        }
        if run("follow") {
            phases.extend(bench_follow_ups(&mock, n).await);
        }
        if run("http") {
            phases.extend(bench_http(&mock, n).await);
        }
        if run("tools") {
            phases.extend(bench_tools(&mock, (n / 4).max(3)).await);
        }
        println!();
        for p in &phases {
            p.print();
        }
        mock.shutdown().await;
    });
}
