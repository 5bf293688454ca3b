//! ccpool as operators run it: the `ccpool serve` binary in a process of its own, with the
//! real engine and CLI and the mock upstream. What only a process shows: its resident memory
//! (idle, under 32 streams, after a burst of large bodies) and its logs at `trace` and `debug`,
//! which must never carry a secret.

mod support;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ccpool::memory::resident_bytes;
use serde_json::{Value, json};
use support::docker::{remove_by_label_blocking, remove_volumes_blocking, worker_image};
use support::mock_upstream::MockUpstream;
use tokio::io::AsyncReadExt;

/// A running `ccpool serve`, its output collected as it comes.
struct Service {
    child: tokio::process::Child,
    pid: u32,
    base: String,
    instance: String,
    logs: Arc<Mutex<Vec<u8>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Starts the binary on a free loopback port with `RUST_LOG=rust_log` and `args`, and waits
    /// until `/ready` says 200 (only observable from outside: polled, bounded).
    async fn start(mock: &MockUpstream, rust_log: &str, args: &[&str]) -> Service {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let instance = format!(
            "test-proc-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let listen = format!("127.0.0.1:{port}");
        let upstream = mock.base_url();
        let image = worker_image();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccpool"));
        command
            .arg("serve")
            .args(["--listen", &listen, "--instance", &instance])
            .args(["--worker-image", &image])
            .args(["--upstream-url", &upstream])
            .args(["--default-model", "claude-sonnet-4-5"])
            .args(["--stream-idle-timeout-secs", "3"])
            .args(args)
            // No ./ccpool.toml, no credentials or settings from the test's environment.
            .current_dir(std::env::temp_dir())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::temp_dir())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            command.env("DOCKER_HOST", host);
        }
        let mut child = command.spawn().expect("the ccpool binary starts");
        let pid = child.id().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let out: Vec<Box<dyn tokio::io::AsyncRead + Send + Unpin>> = vec![
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for mut pipe in out {
            let logs = logs.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    logs.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        }
        let service = Service {
            child,
            pid,
            base: format!("http://{listen}"),
            instance,
            logs,
            readers,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = http
                .get(format!("{}/ready", service.base))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if ready == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ccpool never became ready:\n{}",
                service.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        service
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn rss_mib(&self) -> f64 {
        resident_bytes(self.pid).expect("ccpool is running") as f64 / (1024.0 * 1024.0)
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }

    /// SIGTERM, as an operator stops it; waits for the exit and for its last log lines.
    async fn stop(mut self) -> String {
        // SAFETY: a plain kill(2) on the child's own pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("ccpool stops within a minute of SIGTERM")
            .unwrap();
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.await;
        }
        let logs = self.log_text();
        assert!(status.success(), "ccpool exited with {status}:\n{logs}");
        logs
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A test that failed before `stop`: the process goes first, so that it cannot start
        // a container after the clean-up below.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.start_kill();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let label = format!("ccpool.instance={}", self.instance);
        remove_by_label_blocking(&label);
        remove_volumes_blocking(&label);
    }
}

fn ask(text: &str, stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

/// The text of an SSE answer of the Messages API: its text deltas, joined.
fn streamed_text(sse: &str) -> String {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

/// Samples `service`'s RSS until `work` ends; returns the work's result and the peak.
async fn peak_during<T>(service: &Service, work: impl Future<Output = T>) -> (T, f64) {
    let mut work = std::pin::pin!(work);
    let mut peak = service.rss_mib();
    loop {
        tokio::select! {
            out = &mut work => return (out, peak.max(service.rss_mib())),
            _ = tokio::time::sleep(Duration::from_millis(50)) => peak = peak.max(service.rss_mib()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_memory_idle_under_32_streams_and_back_under_64_mib_after_a_burst() {
    let mock = MockUpstream::start().await;
    let service = Service::start(
        &mock,
        "info",
        &[
            "--anthropic-api-key",
            "sk-test",
            "--warm",
            "2",
            "--max-workers",
            "6",
            "--checkout-timeout-secs",
            "300",
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let status = http
        .post(service.url("/v1/messages"))
        .json(&ask("warm up", false))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let idle = service.rss_mib();

    // 32 streaming requests at once (the pool serves six at a time; the others wait for a
    // worker with their stream open).
    let streams = (0..32).map(|i| {
        let (http, url) = (http.clone(), service.url("/v1/messages"));
        async move {
            let response = http
                .post(url)
                .json(&ask(&format!("[[slow]] stream number {i}"), true))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let text = response.text().await.unwrap();
            assert!(text.contains("event: message_stop"), "{text}");
            assert_eq!(
                streamed_text(&text),
                format!("Echo: [[slow]] stream number {i}")
            );
        }
    });
    let started = Instant::now();
    let (_, streaming) = peak_during(&service, futures::future::join_all(streams)).await;
    let streams_took = started.elapsed();
    println!("32 streams answered in {streams_took:.1?}, RSS peak {streaming:.1} MiB");

    // Large bodies, each alone: what refusing them costs. Both are over the block limit
    // (400): `tiny` has too many JSON objects to be parsed at all, `wide` is as costly a parse
    // as a body may get (as many objects as it may hold, each with some text).
    let body = |count: usize, text: &str| {
        let blocks = vec![json!({"type": "text", "text": text}); count];
        bytes::Bytes::from(
            json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
                   "messages": [{"role": "user", "content": blocks}]})
            .to_string(),
        )
    };
    let tiny = body(330_000, "a");
    let wide = body(49_000, &"w".repeat(170));
    assert!(wide.len() < 10 * 1024 * 1024, "{} bytes", wide.len());
    let send = |body: &bytes::Bytes| {
        let request = http
            .post(service.url("/v1/messages"))
            .header("content-type", "application/json")
            .body(body.clone());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let mut alone = Vec::new();
    for (name, body) in [("tiny", &tiny), ("wide", &wide)] {
        let started = Instant::now();
        let ((status, answer), peak) = peak_during(&service, send(body)).await;
        let took = started.elapsed();
        assert_eq!(status, 400, "{answer}");
        println!(
            "{name}: {} bytes refused in {took:.1?}, RSS peak {peak:.1} MiB: {answer}",
            body.len()
        );
        alone.push(format!(
            "{name} ({} bytes) peak {peak:.1} MiB in {took:.1?}",
            body.len()
        ));
    }

    // Then a burst: 20 at once, half of each.
    let (answers, burst_peak) = peak_during(
        &service,
        futures::future::join_all((0..20).map(|i| send(if i % 2 == 0 { &tiny } else { &wide }))),
    )
    .await;
    assert!(answers.iter().all(|(s, _)| *s == 400), "{answers:?}");
    let after_burst = service.rss_mib();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut settled = after_burst;
    // The measured value, polled against a deadline: nothing signals that pages went back.
    while settled >= 64.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        settled = service.rss_mib();
    }
    let settle_took = started.elapsed();
    println!(
        "ccpool RSS (debug build): idle {idle:.1} MiB; 32 concurrent streams: peak \
         {streaming:.1} MiB over {streams_took:.1?}; large bodies alone: {}; burst of 20: peak \
         {burst_peak:.1} MiB, right after {after_burst:.1} MiB, {settled:.1} MiB \
         {settle_took:.1?} later",
        alone.join(", ")
    );
    assert!(
        settled < 64.0,
        "RSS back under 64 MiB within a minute of the burst: {settled:.1} MiB"
    );
    let status = http
        .post(service.url("/v1/messages"))
        .json(&ask("still serving", false))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    service.stop().await;
    mock.shutdown().await;
}

/// Runs a request, a session with a file write and read, and a tools-session command at
/// `rust_log`, with a client key and the given worker credentials; returns the logs.
async fn logs_of_a_busy_run(
    mock: &MockUpstream,
    rust_log: &str,
    client_key: &str,
    credentials: &[&str],
) -> String {
    let mut args = vec!["--api-key", client_key, "--warm", "1", "--max-workers", "3"];
    args.extend_from_slice(credentials);
    let service = Service::start(mock, rust_log, &args).await;
    let http = reqwest::Client::new();
    let send = |request: reqwest::RequestBuilder| async {
        let response = request
            .header("x-api-key", client_key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };
    let (status, body) = send(
        http.post(service.url("/v1/messages"))
            .json(&ask("a stateless request", true)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("event: message_stop"), "{body}");
    let (status, body) = send(
        http.post(service.url("/v1/sessions"))
            .json(&json!({"id": "logged", "tools": true})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        http.put(service.url("/v1/sessions/logged/files/notes/a.txt"))
            .body("written through the files API"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(http.get(service.url("/v1/sessions/logged/files/notes/a.txt"))).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "written through the files API")
    );
    let (status, body) = send(
        http.post(service.url("/v1/messages"))
            .header("x-session-id", "logged")
            .json(&ask("[[tool]] run it", false)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Tool said: tool-ran"), "{body}");
    // A wrong key is refused; the attempt is logged without the key.
    let response = http
        .post(service.url("/v1/messages"))
        .header("x-api-key", format!("{client_key}-wrong"))
        .json(&ask("nope", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    service.stop().await
}

fn assert_secret_free(logs: &str, level: &str, secrets: &[&str]) {
    let marker = format!("Z {:>5} ", level.to_uppercase());
    let at_level = logs.lines().filter(|l| l.contains(&marker)).count();
    println!(
        "{at_level} lines at {level}, {} in all",
        logs.lines().count()
    );
    assert!(at_level >= 3, "the logs are at {level}:\n{logs:.4000}");
    for secret in secrets {
        if let Some(at) = logs.find(secret) {
            let around = logs.get(at.saturating_sub(300)..(at + 100).min(logs.len()));
            let around = around.unwrap_or_default().replace(secret, "<THE SECRET>");
            panic!("a secret is in the {level} logs: …{around}…");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_at_trace_or_debug() {
    let mock = MockUpstream::start().await;
    let client_key = "ccpool-client-key-0a1b2c3d4e5f";

    // trace, with a subscription token in the workers' environment.
    let token = "sk-ant-oat01-trace-secret-9f8e7d6c5b4a";
    let logs = logs_of_a_busy_run(&mock, "trace", client_key, &["--oauth-token", token]).await;
    assert!(
        mock.message_requests()
            .iter()
            .all(|r| r.header("authorization") == Some(format!("Bearer {token}").as_str())),
        "the token was used"
    );
    assert_secret_free(&logs, "trace", &[client_key, token]);

    // debug, with a credentials file written into each worker over exec stdin.
    let access = "sk-ant-oat01-debug-access-1a2b3c4d5e";
    let refresh = "sk-ant-ort01-debug-refresh-6f7a8b9c0d";
    let file = std::env::temp_dir().join(format!("ccpool-creds-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &file,
        json!({"claudeAiOauth": {"accessToken": access, "refreshToken": refresh,
               "expiresAt": 4_102_444_800_000u64, "scopes": ["user:inference"],
               "subscriptionType": "max"}})
        .to_string(),
    )
    .unwrap();
    let seen_before = mock.message_requests().len();
    let logs = logs_of_a_busy_run(
        &mock,
        "debug",
        client_key,
        &["--credentials-file", file.to_str().unwrap()],
    )
    .await;
    let _ = std::fs::remove_file(&file);
    assert!(
        mock.message_requests()[seen_before..]
            .iter()
            .all(|r| r.header("authorization") == Some(format!("Bearer {access}").as_str())),
        "the file's token was used"
    );
    assert_secret_free(&logs, "debug", &[client_key, access, refresh]);
    mock.shutdown().await;
}
