//! Claude Code itself as a client of ccpool: the CLI binary of the worker image, run on the
//! host with its defaults (its own tools, its own model, no `--tools ''`), pointed at ccpool
//! with `ANTHROPIC_BASE_URL` and a ccpool key. The worker's model (the mock upstream) calls
//! Claude Code's own Bash tool; ccpool returns that call under the client's name, the host CLI
//! runs it on the host, sends the result, ccpool resumes the parked worker, and the loop ends
//! with the model's answer. A local proxy catches any connection the host CLI tries to make
//! elsewhere.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ccpool::credentials::{Credentials, Secret};
use ccpool::listener::Limits;
use ccpool::sessions::SessionConfig;
use serde_json::Value;
use support::api::{Server, test_api};
use support::docker::{pool_config, reuse, settings, shutdown_clean, start_pool, worker_image};
use support::mock_upstream::MockUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The ccpool key the host CLI uses.
const CLIENT_KEY: &str = "sk-ccpool-claude-code-test";
/// Where the CLI lives in the worker image (images/worker/Dockerfile).
const CLI_IN_IMAGE: &str = "/opt/claude-cli/claude";

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The worker image's CLI binary, copied out of the image once per image id into the tests'
/// temporary directory (`docker create` + `docker cp`; the container carries the managed and
/// instance labels, and is removed at once).
fn host_cli(instance: &str) -> PathBuf {
    let image = worker_image();
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &image]);
    let id = id.trim_start_matches("sha256:");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("claude-cli-{}", &id[..16]));
    let binary = dir.join("claude");
    if binary.exists() {
        return binary;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let container = docker(&[
        "create",
        "--label",
        "ccpool.managed=true",
        "--label",
        &format!("ccpool.instance={instance}"),
        &image,
    ]);
    let partial = dir.join(format!("claude.{}", std::process::id()));
    let copied = std::process::Command::new("docker")
        .args(["cp", &format!("{container}:{CLI_IN_IMAGE}")])
        .arg(&partial)
        .output()
        .unwrap();
    docker(&["rm", "-f", &container]);
    assert!(
        copied.status.success(),
        "docker cp: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    std::fs::rename(&partial, &binary).unwrap();
    binary
}

/// An HTTP proxy that refuses everything and remembers each request line (a `CONNECT host:443`
/// for HTTPS): where the host CLI tried to go other than ccpool.
async fn refusing_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = socket.read(&mut head).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..n])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                log.lock().unwrap().push(line);
                let _ = socket
                    .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (url, seen)
}

/// The `session_id` the worker's CLI put in an upstream request's metadata.
fn cli_session(request: &support::mock_upstream::RecordedRequest) -> Option<String> {
    let user_id = request.body["metadata"]["user_id"].as_str()?;
    let user_id: Value = serde_json::from_str(user_id).ok()?;
    user_id["session_id"].as_str().map(str::to_string)
}

/// How the host CLI is run: its binary, its own home, ccpool's address and the proxy.
struct Claude<'a> {
    cli: &'a Path,
    home: &'a Path,
    base_url: &'a str,
    proxy: &'a str,
}

impl Claude<'_> {
    /// `claude -p PROMPT` in `project`, with its defaults (its own tools and model), allowed
    /// to run Bash without asking.
    async fn run(&self, project: &Path, prompt: &str) -> std::process::Output {
        let run = tokio::process::Command::new(self.cli)
            .args(["-p", prompt, "--allowedTools", "Bash"])
            .current_dir(project)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home)
            .env("SHELL", "/bin/bash")
            .env("ANTHROPIC_BASE_URL", self.base_url)
            .env("ANTHROPIC_API_KEY", CLIENT_KEY)
            // The one setting it needs to stay off the network: without it, the CLI also
            // tries api.anthropic.com (three CONNECTs in a run; the loop works all the same).
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("HTTPS_PROXY", self.proxy)
            .env("HTTP_PROXY", self.proxy)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(240), run)
            .await
            .expect("the host CLI finished")
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_its_agent_loop_through_ccpool() {
    let mock = MockUpstream::start().await;
    let settings = settings(&mock.base_url(), Credentials::ApiKey("sk-test".into()));
    let cli = host_cli(&settings.instance_id);
    let pool = start_pool(settings, pool_config(reuse(), 1)).await;
    let mut api = test_api();
    api.api_keys = vec![Secret::new(CLIENT_KEY)];
    let server =
        Server::start_custom(&pool, SessionConfig::default(), api, Limits::default()).await;
    let (proxy, proxied) = refusing_proxy().await;

    let work = std::env::temp_dir().join(format!("ccpool-claude-code-{}", uuid::Uuid::new_v4()));
    // The host CLI's home and project go away however the test ends.
    let _cleanup = scopeguard::guard(work.clone(), |work| {
        let _ = std::fs::remove_dir_all(work);
    });
    let (home, project) = (work.join("home"), work.join("project"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    let prompt = r#"Run it. [[call]] [[use:Bash]] [[input:{"command":"echo ccpool-ran | tee marker.txt","description":"Write the marker"}]]"#;
    let claude = Claude {
        cli: &cli,
        home: &home,
        base_url: &server.base_url,
        proxy: &proxy,
    };
    let output = claude.run(&project, prompt).await;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let marker = std::fs::read_to_string(project.join("marker.txt"));
    let requests = mock.message_requests();
    let shown = || {
        let bodies: Vec<String> = requests
            .iter()
            .map(|r| r.all_text().chars().take(2000).collect())
            .collect();
        format!("stdout: {stdout}\nstderr: {stderr}\nupstream: {bodies:#?}")
    };

    // The loop ran: Bash ran on the host, and the host CLI printed the model's answer to it.
    assert!(output.status.success(), "{}", shown());
    assert_eq!(stdout.trim(), "Tool said: ccpool-ran", "{}", shown());
    assert_eq!(marker.ok().as_deref(), Some("ccpool-ran\n"), "{}", shown());

    // The worker's model was offered Claude Code's own tools, and called its Bash.
    let call = requests
        .iter()
        .find(|r| r.last_user_text().contains("[[use:Bash]]"))
        .unwrap_or_else(|| panic!("the prompt reached the upstream: {}", shown()));
    let offered: Vec<String> = call
        .client_tools()
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    for name in [
        "mcp__client__Bash",
        "mcp__client__Read",
        "mcp__client__Write",
    ] {
        assert!(
            offered.iter().any(|o| o == name),
            "{name} offered: {offered:?}"
        );
    }
    // Its system-role message (the environment, with the host's directory) reached the
    // model in the user turn; its billing header line did not reach the system prompt (the
    // one there is the worker CLI's own).
    let project_dir = project.to_string_lossy().to_string();
    assert!(
        call.last_user_text().contains(&project_dir),
        "the system message's text reached the model"
    );
    let headers = call
        .system_text()
        .lines()
        .filter(|l| l.starts_with("x-anthropic-billing-header"))
        .count();
    assert_eq!(headers, 1, "{}", call.system_text());

    // The result reached the model through the parked worker (its CLI's own session, no
    // replayed transcript), and the answer to it ended the loop.
    let answered = requests
        .iter()
        .find(|r| !r.tool_results().is_empty())
        .unwrap_or_else(|| panic!("the tool result reached the upstream: {}", shown()));
    let results = answered.tool_results();
    assert_eq!(results.len(), 1);
    assert!(results[0].0.starts_with("toolu_mock_"));
    assert_eq!((results[0].1, results[0].2.as_str()), (false, "ccpool-ran"));
    assert_eq!(
        cli_session(answered),
        cli_session(call),
        "resumed, not replayed"
    );
    assert!(!answered.all_text().contains("No response requested."));

    let status = pool.status();
    assert_eq!((status.continued, status.replayed), (1, 0), "{status:?}");

    // Another conversation in the same project gets the same launch profile (its billing
    // header, which may differ, is request metadata). Claude Code's system prompt names the
    // project's memory directory, so each project has a launch profile of its own.
    let again = claude.run(&project, "Say hello").await;
    let again_out = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(again.status.success(), "{again_out}");
    assert!(again_out.starts_with("Echo: "), "{again_out}");
    let profiles = pool.status().profiles;
    assert_eq!(
        profiles.len(),
        2,
        "the default and Claude Code's: {profiles:?}"
    );

    // Nothing else left the machine.
    assert_eq!(*proxied.lock().unwrap(), Vec::<String>::new());

    server.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}
