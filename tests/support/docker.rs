//! Helpers for tests against the real Docker engine and the real CLI: settings that put
//! workers on an internal network whose only way out is a relay to the mock upstream, and
//! clean-up by label.

use std::sync::Arc;
use std::time::Duration;

use ccpool::credentials::Credentials;
use ccpool::docker::DockerRuntime;
use ccpool::domain::LaunchProfile;
use ccpool::gateway::{BrokerConfig, Gateway, GatewayConfig, RelayLink};
use ccpool::pool::{PoolConfig, ReusePolicy, WarmPool};
use ccpool::runtime::{ContainerRuntime, ExecSpec, LABEL_INSTANCE, LABEL_MANAGED};
use ccpool::worker::WorkerSettings;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

/// The worker image the tests use (built by images/build.sh).
pub fn worker_image() -> String {
    std::env::var("CCPOOL_WORKER_IMAGE").unwrap_or_else(|_| "ccpool-worker:latest".to_string())
}

/// Connects to the engine and fails loudly if the worker image is missing: Docker tests are
/// never skipped.
pub async fn docker() -> DockerRuntime {
    let runtime = DockerRuntime::connect()
        .await
        .expect("the Docker engine must be reachable");
    assert!(
        runtime.image_exists(&worker_image()).await.unwrap(),
        "worker image {} missing: run images/build.sh",
        worker_image()
    );
    runtime
}

/// The internal network the tests' workers run on, shared by every test binary: no route
/// out, no traffic between containers; the host (the relay) at its gateway address.
pub const TEST_NETWORK: &str = "ccpool-test-workers";

/// The test network's name and the host's address on it, creating the network if needed.
pub fn test_network() -> (String, std::net::IpAddr) {
    static NETWORK: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();
    let gateway = *NETWORK.get_or_init(|| {
        let inspect = || {
            let out = std::process::Command::new("docker")
                .args([
                    "network",
                    "inspect",
                    TEST_NETWORK,
                    "-f",
                    "{{.Internal}} {{range .IPAM.Config}}{{.Gateway}}{{end}}",
                ])
                .output()
                .expect("docker runs");
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            out.status.success().then_some(text)
        };
        let found = inspect().or_else(|| {
            // Two test binaries may race here: one creation wins, both inspect.
            let _ = std::process::Command::new("docker")
                .args([
                    "network",
                    "create",
                    "--internal",
                    "-o",
                    "com.docker.network.bridge.enable_icc=false",
                    "--label",
                    "ccpool.managed=true",
                    "--label",
                    "ccpool.instance=test-network",
                    TEST_NETWORK,
                ])
                .output();
            inspect()
        });
        let text = found.expect("the test network exists");
        let (internal, gateway) = text.split_once(' ').expect("internal and gateway");
        assert_eq!(internal, "true", "{TEST_NETWORK} must be internal");
        gateway.parse().expect("a gateway address")
    });
    (TEST_NETWORK.to_string(), gateway)
}

/// Starts a relay to `upstream` with the real `credentials`, listening on the host's address
/// on the test network, in the current tokio runtime. Returns what workers need.
pub fn start_relay(upstream: &str, credentials: &Credentials, broker: BrokerConfig) -> RelayLink {
    let (_, gateway_ip) = test_network();
    let gateway = Gateway::new(
        credentials,
        GatewayConfig {
            upstream: upstream.to_string(),
            broker,
        },
    )
    .expect("the gateway starts");
    let listener = std::net::TcpListener::bind((gateway_ip, 0)).expect("binding the relay");
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).expect("inside a tokio runtime");
    let addr = gateway.serve(listener).unwrap();
    RelayLink {
        url: format!("http://{addr}"),
        gateway,
    }
}

/// Worker settings for tests: a unique instance, workers on the internal test network
/// reaching the mock only through a relay that holds `credentials`, prompt upstream errors.
pub fn settings(upstream: &str, credentials: Credentials) -> WorkerSettings {
    let relay = start_relay(upstream, &credentials, BrokerConfig::default());
    let mut s = WorkerSettings {
        relay: Some(relay),
        instance_id: format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        credentials,
        silence_limit: Duration::from_secs(30),
        interrupt_grace: Duration::from_secs(5),
        start_timeout: Duration::from_secs(60),
        ..WorkerSettings::default()
    };
    s.sandbox.image = worker_image();
    s.sandbox.network = test_network().0;
    s.cli.model = Some("claude-sonnet-4-5".to_string());
    s.cli.stream_idle_timeout = Duration::from_secs(3);
    s
}

pub fn pool_config(policy: ReusePolicy, warm: usize) -> PoolConfig {
    PoolConfig {
        policy,
        warm_default: warm,
        max_workers: 3,
        checkout_timeout: Duration::from_secs(60),
        ..PoolConfig::default()
    }
}

pub fn reuse() -> ReusePolicy {
    ReusePolicy::Reuse {
        max_uses: 100,
        max_age: Duration::from_secs(3600),
    }
}

/// A pool on the real engine. If a test fails before `shutdown_clean`, dropping it still
/// removes the instance's containers.
pub struct TestPool {
    pool: WarmPool,
    instance: String,
}

impl std::ops::Deref for TestPool {
    type Target = WarmPool;
    fn deref(&self) -> &WarmPool {
        &self.pool
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        let label = format!("{LABEL_INSTANCE}={}", self.instance);
        remove_by_label_blocking(&label);
        remove_volumes_blocking(&label);
    }
}

/// Removes every volume carrying `label` with the docker CLI (usable from `Drop`).
pub fn remove_volumes_blocking(label: &str) {
    let listed = std::process::Command::new("docker")
        .args(["volume", "ls", "-q", "--filter", &format!("label={label}")])
        .output();
    if let Ok(out) = listed {
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !names.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&names)
                .output();
        }
    }
}

/// Removes every container carrying `label` with the docker CLI (usable from `Drop`).
pub fn remove_by_label_blocking(label: &str) {
    let listed = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output();
    if let Ok(out) = listed {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

/// Starts a pool on the real engine and waits until `warm` workers are ready.
pub async fn start_pool(settings: WorkerSettings, config: PoolConfig) -> TestPool {
    let warm = config.warm_default;
    let instance = settings.instance_id.clone();
    let pool = WarmPool::start(
        Arc::new(docker().await),
        settings,
        config,
        LaunchProfile::default(),
    )
    .await
    .expect("pool starts");
    let pool = TestPool { pool, instance };
    assert!(
        pool.wait_warm(warm, Duration::from_secs(90)).await,
        "pool did not warm up: {:?}",
        pool.status()
    );
    pool
}

/// Containers of one instance (running or not).
pub async fn instance_containers(instance: &str) -> Vec<String> {
    docker()
        .await
        .list_containers(&[(LABEL_MANAGED, "true"), (LABEL_INSTANCE, instance)])
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Shuts the pool down and asserts it left no container behind.
pub async fn shutdown_clean(pool: TestPool) {
    let instance = pool.instance.clone();
    pool.shutdown(Duration::from_secs(20)).await;
    assert_eq!(
        instance_containers(&instance).await,
        Vec::<String>::new(),
        "containers left behind"
    );
}

/// Runs a command in a container as `user` and returns (exit code, stdout+stderr).
pub async fn exec_output(container: &str, user: &str, script: &str) -> (i64, String) {
    let runtime = docker().await;
    let spec = ExecSpec {
        cmd: vec!["bash".into(), "-c".into(), script.into()],
        user: Some(user.into()),
        ..ExecSpec::default()
    };
    let mut process = runtime.exec(container, &spec).await.unwrap();
    process.stdin.shutdown().await.unwrap();
    let mut text = String::new();
    while let Some(frame) = process.output.next().await {
        match frame.unwrap() {
            ccpool::runtime::ExecOutput::Stdout(b) | ccpool::runtime::ExecOutput::Stderr(b) => {
                text.push_str(&String::from_utf8_lossy(&b))
            }
        }
    }
    let code = runtime
        .exec_exit_code(&process.id)
        .await
        .unwrap()
        .unwrap_or(-1);
    (code, text)
}
