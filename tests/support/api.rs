//! Serves `ccpool::http::app` on 127.0.0.1 for end-to-end tests, and runs the official SDKs.

use std::time::Duration;

use ccpool::http::{ApiSettings, AppState, app};
use ccpool::listener::Limits;
use ccpool::pool::WarmPool;
use ccpool::sessions::{SessionConfig, Sessions};
use tokio_util::sync::CancellationToken;

/// A running ccpool HTTP server; `stop` ends it.
pub struct Server {
    pub base_url: String,
    pub sessions: Sessions,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(pool: &WarmPool) -> Server {
        Self::start_with(pool, SessionConfig::default()).await
    }

    pub async fn start_with(pool: &WarmPool, session_config: SessionConfig) -> Server {
        Self::start_custom(pool, session_config, test_api(), Limits::default()).await
    }

    /// A server with its own API settings and connection limits, served by ccpool's own
    /// accept loop (as `ccpool serve` does).
    pub async fn start_custom(
        pool: &WarmPool,
        session_config: SessionConfig,
        api: ApiSettings,
        limits: Limits,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let sessions = Sessions::start(pool.clone(), session_config).await.unwrap();
        let mut api = api;
        api.listen = Some(listener.local_addr().unwrap());
        let state = AppState::new(pool.clone(), sessions.clone(), api);
        let mut router = app(state);
        if let Some(relay) = &pool.settings().relay {
            router = ccpool::gateway::with_retry_after(router, relay.gateway.clone());
        }
        let task = tokio::spawn(ccpool::listener::serve(
            listener,
            router,
            limits,
            stop.clone(),
        ));
        Server {
            base_url,
            sessions,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        self.sessions.shutdown().await;
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// The API settings of the tests: a short ping interval and one model alias.
pub fn test_api() -> ApiSettings {
    let mut api = ApiSettings {
        ping_interval: Duration::from_secs(2),
        ..ApiSettings::default()
    };
    api.openai
        .model_aliases
        .insert("gpt-4o".into(), "claude-sonnet-4-5".into());
    api
}

/// The Python that has the official SDKs (set up by scripts/test.sh); fails loudly without.
pub fn sdk_python() -> String {
    let python = std::env::var("CCPOOL_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let check = std::process::Command::new(&python)
        .args(["-c", "import anthropic, openai"])
        .output();
    assert!(
        matches!(&check, Ok(o) if o.status.success()),
        "{python} lacks the anthropic/openai SDKs: run scripts/test.sh, or set CCPOOL_TEST_PYTHON"
    );
    python
}

/// Runs a Python script from tests/sdk with arguments; returns its stdout parsed as JSON.
pub async fn run_sdk_script(script: &str, args: &[&str]) -> serde_json::Value {
    let python = sdk_python();
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(python)
        .arg(path)
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}
