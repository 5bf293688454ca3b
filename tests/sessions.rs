//! Isolated sessions end to end: the real engine and CLI, the mock upstream, ccpool's HTTP
//! server. Workspace isolation, follow-ups that send only the new turn, forks, deletion, TTL
//! expiry, path confinement and concurrent requests.

mod support;

use std::time::{Duration, Instant};

use ccpool::credentials::Credentials;
use ccpool::domain::OwnerKey;
use ccpool::sessions::{BusyPolicy, SessionConfig};
use serde_json::{Value, json};
use support::api::Server;
use support::docker::{
    TestPool, exec_output, pool_config, reuse, settings, shutdown_clean, start_pool,
};
use support::mock_upstream::MockUpstream;

struct Stack {
    mock: MockUpstream,
    pool: TestPool,
    server: Server,
    http: reqwest::Client,
}

async fn stack(config: SessionConfig) -> Stack {
    support::init_tracing();
    let mock = MockUpstream::start().await;
    let mut pool_config = pool_config(reuse(), 1);
    pool_config.max_workers = 5;
    let pool = start_pool(
        settings(&mock.base_url(), Credentials::ApiKey("sk-test".into())),
        pool_config,
    )
    .await;
    let server = Server::start_with(&pool, config).await;
    Stack {
        mock,
        pool,
        server,
        http: reqwest::Client::new(),
    }
}

impl Stack {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url)
    }

    async fn json(
        &self,
        request: reqwest::RequestBuilder,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self, id: &str) -> Value {
        let (status, _, body) = self
            .json(
                self.http
                    .post(self.url("/v1/sessions"))
                    .json(&json!({"id": id})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// A Messages API request in session `id` (by header) with the given turns.
    async fn ask(&self, id: &str, messages: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": messages});
        self.json(
            self.http
                .post(self.url("/v1/messages"))
                .header("x-session-id", id)
                .json(&body),
        )
        .await
    }

    async fn stop(self) {
        self.server.stop().await;
        shutdown_clean(self.pool).await;
        self.mock.shutdown().await;
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(r, t)| (r.to_string(), t.to_string()))
        .collect()
}

/// The containers of the no-key owner's session `id` (the label is `{owner}.{id}`).
async fn session_containers(id: &str) -> Vec<String> {
    let output = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=ccpool.session=anonymous.{id}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Sends one request line as is (no normalisation) and returns the status line and more.
async fn raw_request(base_url: &str, request_line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{request_line}\r\nHost: {addr}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn volume_exists(name: &str) -> bool {
    std::process::Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_in_one_sessions_workspace_is_invisible_to_another() {
    let s = stack(SessionConfig::default()).await;
    let a = s.create("iso-a").await;
    let b = s.create("iso-b").await;
    assert_ne!(a["container"]["id"], b["container"]["id"]);

    let (status, _, _) = s
        .json(
            s.http
                .put(s.url("/v1/sessions/iso-a/files/notes/secret.txt"))
                .body("only for A"),
        )
        .await;
    assert_eq!(status, 200);
    let read = s
        .http
        .get(s.url("/v1/sessions/iso-a/files/notes/secret.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200);
    assert_eq!(read.text().await.unwrap(), "only for A");

    let (status, _, body) = s
        .json(
            s.http
                .get(s.url("/v1/sessions/iso-b/files/notes/secret.txt")),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let b_container = b["container"]["id"].as_str().unwrap();
    let (code, out) = exec_output(
        b_container,
        "1000:1000",
        "ls -R /workspace; cat /workspace/notes/secret.txt",
    )
    .await;
    assert_ne!(code, 0);
    assert!(!out.contains("only for A"), "{out}");
    let a_container = a["container"]["id"].as_str().unwrap();
    let (code, out) =
        exec_output(a_container, "1000:1000", "cat /workspace/notes/secret.txt").await;
    assert_eq!((code, out.as_str()), (0, "only for A"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_sends_only_the_new_turn_and_the_upstream_sees_the_whole_conversation() {
    let s = stack(SessionConfig::default()).await;
    let (status, headers, first) = s
        .ask(
            "talk",
            json!([{"role": "user", "content": "first question"}]),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(headers["x-ccpool-session"], "talk");
    let answer = first["content"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(answer, "Echo: first question");
    let container = s
        .server
        .sessions
        .describe(&OwnerKey::anonymous(), "talk")
        .unwrap()
        .container;

    let (status, headers, second) = s
        .ask(
            "talk",
            json!([
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": "second question"}
            ]),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(headers["x-ccpool-session-forked"], "false");
    assert_eq!(second["content"][0]["text"], "Echo: second question");
    let summary = s
        .server
        .sessions
        .describe(&OwnerKey::anonymous(), "talk")
        .unwrap();
    assert_eq!(
        (summary.turns, summary.forks),
        (2, 0),
        "no replay: the live CLI got only the new turn"
    );
    assert_eq!(summary.container, container, "the same container and CLI");

    let last = s.mock.message_requests().pop().unwrap();
    assert_eq!(
        last.turns(),
        pairs(&[
            ("user", "first question"),
            ("assistant", "Echo: first question"),
            ("user", "second question")
        ])
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_history_forks_and_the_upstream_sees_the_edited_one() {
    let s = stack(SessionConfig::default()).await;
    let (_, _, first) = s
        .ask(
            "fork",
            json!([{"role": "user", "content": "original question"}]),
        )
        .await;
    let answer = first["content"][0]["text"].as_str().unwrap().to_string();
    let (status, headers, second) = s
        .ask(
            "fork",
            json!([
                {"role": "user", "content": "edited question"},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": "follow-up"}
            ]),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(headers["x-ccpool-session-forked"], "true");
    let last = s.mock.message_requests().pop().unwrap();
    assert_eq!(
        last.turns(),
        pairs(&[
            ("user", "edited question"),
            ("assistant", "Echo: original question"),
            ("user", "follow-up")
        ])
    );
    assert_eq!(
        s.server
            .sessions
            .describe(&OwnerKey::anonymous(), "fork")
            .unwrap()
            .forks,
        1
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_session_removes_its_container_and_volume() {
    let s = stack(SessionConfig::default()).await;
    let created = s.create("doomed").await;
    let volume = created["volume"].as_str().unwrap().to_string();
    assert_eq!(session_containers("doomed").await.len(), 1);
    assert!(volume_exists(&volume));
    let (status, _, listed) = s.json(s.http.get(s.url("/v1/sessions"))).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["id"], "doomed");
    assert_eq!(listed["data"][0]["container"]["state"], "running");

    let (status, _, body) = s.json(s.http.delete(s.url("/v1/sessions/doomed"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(session_containers("doomed").await.is_empty());
    assert!(!volume_exists(&volume), "the volume is deleted");
    let (status, _, _) = s.json(s.http.get(s.url("/v1/sessions/doomed"))).await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_after_its_ttl() {
    let s = stack(SessionConfig {
        ttl: Duration::from_secs(1),
        ..SessionConfig::default()
    })
    .await;
    let created = s.create("short-lived").await;
    let volume = created["volume"].as_str().unwrap().to_string();
    // Expiry is a matter of time, observable only from outside: poll, bounded.
    let deadline = Instant::now() + Duration::from_secs(15);
    while s
        .server
        .sessions
        .describe(&OwnerKey::anonymous(), "short-lived")
        .is_ok()
        || !session_containers("short-lived").await.is_empty()
        || volume_exists(&volume)
    {
        assert!(Instant::now() < deadline, "the session did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_out_of_the_workspace_are_rejected() {
    let s = stack(SessionConfig::default()).await;
    let created = s.create("paths").await;
    let container = created["container"]["id"].as_str().unwrap();
    let (code, out) = exec_output(
        container,
        "1000:1000",
        "ln -s /etc /workspace/etc-link && ln -s /etc/passwd /workspace/pw",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    for (method, path, status) in [
        // Encoded so that the client does not normalise the dots away before sending.
        ("PUT", "..%2Fescape.txt", 400),
        ("PUT", "a/..%2F..%2Fescape.txt", 400),
        ("PUT", "%2Fetc%2Fescape.txt", 400),
        ("GET", "..%2F..%2Fetc%2Fpasswd", 400),
        ("GET", "etc-link/passwd", 403),
        ("GET", "pw", 403),
        ("PUT", "etc-link/evil", 403),
        ("PUT", "pw", 403),
    ] {
        let url = s.url(&format!("/v1/sessions/paths/files/{path}"));
        let request = if method == "PUT" {
            s.http.put(url).body("x")
        } else {
            s.http.get(url)
        };
        let (got, _, body) = s.json(request).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(!body.to_string().contains("root:x:0:0"), "{body}");
    }
    // A client that sends the dots as they are.
    let raw = raw_request(
        &s.server.base_url,
        "PUT /v1/sessions/paths/files/a/../../../etc/x HTTP/1.1",
    )
    .await;
    assert!(
        raw.starts_with("HTTP/1.1 400") || raw.starts_with("HTTP/1.1 404"),
        "{raw}"
    );
    let (code, _) = exec_output(container, "1000:1000", "test ! -e /etc/x").await;
    assert_eq!(code, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_concurrent_request_gets_409_with_the_reject_policy() {
    let s = stack(SessionConfig {
        on_busy: BusyPolicy::Reject,
        ..SessionConfig::default()
    })
    .await;
    s.create("busy").await;
    let slow = {
        let http = s.http.clone();
        let url = s.url("/v1/messages");
        tokio::spawn(async move {
            let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "[[slow]] take your time"}]});
            http.post(url)
                .header("x-session-id", "busy")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    s.mock
        .wait_for_message_requests(1, Duration::from_secs(20))
        .await;
    let (status, _, body) = s
        .ask("busy", json!([{"role": "user", "content": "me too"}]))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(slow.await.unwrap(), 200);
    // Through the path prefix too, once the session is free.
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "via the path"}]});
    let (status, headers, done) = s
        .json(
            s.http
                .post(s.url("/sessions/busy/v1/chat/completions"))
                .json(&body),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(headers["x-ccpool-session"], "busy");
    assert_eq!(
        done["choices"][0]["message"]["content"],
        "Echo: via the path"
    );
    let (status, _, _) = s
        .ask("bad id!", json!([{"role": "user", "content": "x"}]))
        .await;
    assert_eq!(status, 400);
    s.stop().await;
}

/// (id or name, session label, profile label) of this instance's containers (`ps`) or
/// volumes (`volume`) whose session label is a pre-warmed one.
fn prewarmed_of(instance: &str, what: &str) -> Vec<(String, String)> {
    let format = "{{.Label \"ccpool.session\"}} {{.Label \"ccpool.profile\"}}";
    let (args, format) = match what {
        "ps" => (vec!["ps", "-a"], format!("{{{{.ID}}}} {format}")),
        _ => (vec!["volume", "ls"], format!("{{{{.Name}}}} {format}")),
    };
    let filter = format!("label=ccpool.instance={instance}");
    let output = std::process::Command::new("docker")
        .args(args)
        .args(["--filter", &filter, "--format", &format])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let (name, label) = (parts.next()?, parts.next()?);
            let profile = parts.next().unwrap_or_default();
            label
                .starts_with("prewarmed-")
                .then(|| (name.to_string(), profile.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_claims_a_prewarmed_worker_on_a_fresh_volume_of_its_own() {
    let s = stack(SessionConfig {
        prewarm: 1,
        ..SessionConfig::default()
    })
    .await;
    let instance = s.pool.settings().instance_id.clone();
    // A first session teaches the pool its launch profile (model, output limit): the next
    // pre-warmed worker is for it.
    let (status, _, body) = s
        .ask("first", json!([{"role": "user", "content": "Say hello"}]))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, _, first) = s.json(s.http.get(s.url("/v1/sessions/first"))).await;
    let first = first["container"]["id"].as_str().unwrap().to_string();
    let inspect = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"ccpool.profile\"}}",
            &first,
        ])
        .output()
        .unwrap();
    let profile = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    // A start is the engine's business: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(60);
    let containers = loop {
        let found = prewarmed_of(&instance, "ps");
        if s.pool.status().prewarmed_sessions == 1 && found.len() == 1 && found[0].1 == profile {
            break found;
        }
        assert!(Instant::now() < deadline, "{found:?} {:?}", s.pool.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let volumes = prewarmed_of(&instance, "volume");
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let volume = volumes[0].0.clone();
    assert!(volume.starts_with(&format!("ccpool.{instance}.prewarmed-")));

    // The next session's first request is served by that container, on that volume.
    let (status, _, body) = s
        .ask("fresh", json!([{"role": "user", "content": "Say hello"}]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "Echo: Say hello");
    let (status, _, described) = s.json(s.http.get(s.url("/v1/sessions/fresh"))).await;
    assert_eq!(status, 200, "{described}");
    let container = described["container"]["id"].as_str().unwrap().to_string();
    assert!(
        container.starts_with(&containers[0].0),
        "{container} {containers:?}"
    );
    assert_eq!(described["volume"], volume);
    assert_eq!(described["container"]["state"], "running");
    // Its workspace is the fresh volume: empty.
    let (code, out) = exec_output(&container, "1000", "ls -A /workspace").await;
    assert_eq!((code, out.trim()), (0, ""));

    let (status, _, body) = s.json(s.http.delete(s.url("/v1/sessions/fresh"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !volume_exists(&volume),
        "the claimed volume goes with its session"
    );
    // The next pre-warmed one is unclaimed; stopping removes it with its volume.
    s.stop().await;
    assert!(prewarmed_of(&instance, "volume").is_empty());
}
