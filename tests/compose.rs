//! The compose stack end to end: `docker-compose up` with the CI override (local base
//! images, the ccpool binary cargo built, workers pointed at the mock upstream), a streamed
//! request through it, and `docker-compose down` leaving nothing behind.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use support::mock_upstream::MockUpstream;

struct Stack {
    project: String,
    instance: String,
    port: u16,
    upstream: String,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .args([
                "-p",
                &self.project,
                "-f",
                "compose.yaml",
                "-f",
                "compose.ci.yaml",
            ])
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CCPOOL_PORT", self.port.to_string())
            .env("CCPOOL_UPSTREAM_URL", &self.upstream)
            .env("CCPOOL_INSTANCE", &self.instance)
            .env("CCPOOL_IMAGE", format!("ccpool-ci:{}", self.project))
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("CLAUDE_CODE_OAUTH_TOKEN", "")
            .env("CCPOOL_DEFAULT_MODEL", "claude-sonnet-4-5")
            .output()
            .expect("docker-compose runs")
    }

    fn containers(&self, label: &str) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label={label}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Whatever happened, take the stack down and remove what ccpool started.
        let _ = self.compose(&["down", "--volumes", "--timeout", "5"]);
        support::docker::remove_by_label_blocking(&format!("ccpool.instance={}", self.instance));
        let _ = Command::new("docker")
            .args(["rmi", "-f", &format!("ccpool-ci:{}", self.project)])
            .output();
    }
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_serves_a_streamed_request_and_leaves_nothing_behind() {
    // The ccpool container relays to the mock through the host's gateway address.
    let mock = MockUpstream::start_on("0.0.0.0:0").await;
    let binary = env!("CARGO_BIN_EXE_ccpool");
    let target = format!(
        "{}/images/ccpool-prebuilt/ccpool",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::copy(binary, &target).expect("copying the ccpool binary into the build context");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let stack = Stack {
        project: format!("ccpooltest{id}"),
        instance: format!("test-compose-{id}"),
        port,
        upstream: format!("http://host.docker.internal:{}", mock.port()),
    };
    check("docker-compose config", &stack.compose(&["config", "-q"]));
    check(
        "docker-compose up",
        &stack.compose(&["up", "-d", "--build"]),
    );

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Readiness is only observable from outside: poll, bounded.
        let ready = http
            .get(format!("{base}/ready"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if ready == 200 {
            break;
        }
        let exited = stack.containers(&format!("com.docker.compose.project={}", stack.project));
        let exited = exited.iter().any(|id| {
            let state = Command::new("docker")
                .args(["inspect", "-f", "{{.Config.Labels}} {{.State.Status}}", id])
                .output()
                .unwrap();
            let state = String::from_utf8_lossy(&state.stdout).to_string();
            state.contains("com.docker.compose.service:ccpool")
                && state.trim_end().ends_with("exited")
        });
        if exited || Instant::now() > deadline {
            let logs = stack.compose(&["logs", "--no-color", "ccpool"]);
            panic!(
                "the stack never became ready:\n{}",
                String::from_utf8_lossy(&logs.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": true,
                      "messages": [{"role": "user", "content": "hello through compose"}]});
    let response = http
        .post(format!("{base}/v1/messages"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let mut text = String::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let streamed: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, "Echo: hello through compose");
    assert!(text.contains("event: message_stop"));
    assert!(
        !stack
            .containers(&format!("ccpool.instance={}", stack.instance))
            .is_empty(),
        "workers run as siblings"
    );

    check(
        "docker-compose down",
        &stack.compose(&["down", "--timeout", "30"]),
    );
    assert_eq!(
        stack.containers(&format!("com.docker.compose.project={}", stack.project)),
        Vec::<String>::new()
    );
    assert_eq!(
        stack.containers(&format!("ccpool.instance={}", stack.instance)),
        Vec::<String>::new(),
        "ccpool removed its workers when it was stopped"
    );
    mock.shutdown().await;
}
