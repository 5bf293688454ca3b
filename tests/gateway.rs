//! The upstream gateway with the real engine and the real CLI: workers on the internal
//! network hold no real credential and reach nothing but the relay; a retired worker's token
//! is refused; a session with tools that dumps every environment shows nothing secret; the
//! relay reports usage, rate limits and passes `retry-after` on. Without Docker: the broker
//! refreshes an expiring OAuth token once under concurrent load.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ccpool::credentials::{Credentials, Secret};
use ccpool::domain::{LaunchProfile, OwnerKey, TurnRequest};
use ccpool::gateway::{BrokerConfig, Gateway, GatewayConfig};
use ccpool::pool::ReusePolicy;
use serde_json::{Value, json};
use support::api::Server;
use support::docker::{
    exec_output, instance_containers, pool_config, reuse, settings, shutdown_clean, start_pool,
};
use support::mock_upstream::MockUpstream;

fn real_token() -> String {
    format!("sk-ant-oat01-REAL-{}", uuid::Uuid::new_v4().simple())
}

/// The relay's host and port, from its URL.
fn relay_addr(url: &str) -> (String, u16) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, port) = rest.rsplit_once(':').unwrap();
    (host.to_string(), port.parse().unwrap())
}

/// A bash script that reads the CLI's own token from its environment (as any process of the
/// worker's user can).
const READ_OWN_TOKEN: &str = "tr '\\0' '\\n' < /proc/$(cat /tmp/ccpool-cli.pid)/environ | sed -n 's/^CLAUDE_CODE_OAUTH_TOKEN=//p'";

/// A bash script that sends one count_tokens request to the relay with `token` and prints
/// the status line.
fn relay_request(host: &str, port: u16, token: &str) -> String {
    format!(
        r#"body='{{"model":"claude-sonnet-4-5","messages":[{{"role":"user","content":"hi"}}]}}'
exec 3<>/dev/tcp/{host}/{port} || exit 7
printf 'POST /v1/messages/count_tokens HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\nanthropic-beta: oauth-2025-04-20\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' '{token}' "${{#body}}" "$body" >&3
head -1 <&3"#
    )
}

/// Tries a TCP connection for at most 3 s: exit 0 open, 1 refused or unreachable, 124 timed
/// out (dropped by a firewall).
fn probe(host: &str, port: u16) -> String {
    format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null; echo \"exit=$?\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_holds_the_real_credential_and_the_upstream_gets_it() {
    let token = real_token();
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(
            &mock.base_url(),
            Credentials::OAuthToken(token.as_str().into()),
        ),
        pool_config(reuse(), 2),
    )
    .await;
    let (_, outcome) = pool
        .run(
            &LaunchProfile::default(),
            &OwnerKey::anonymous(),
            TurnRequest::text("hello"),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    let request = &mock.message_requests()[0];
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {token}").as_str()),
        "the relay puts the real credential on the upstream request"
    );
    assert_eq!(
        request
            .header("anthropic-beta")
            .map(|b| b.contains("oauth")),
        Some(true)
    );

    let containers = instance_containers(&pool.settings().instance_id).await;
    assert!(containers.len() >= 2, "{containers:?}");
    let docker = support::docker::docker().await;
    let mut cli_environments_read = 0;
    for container in &containers {
        let inspect = docker
            .client()
            .inspect_container(container, None)
            .await
            .unwrap();
        let shown = serde_json::to_string(&inspect).unwrap();
        assert!(!shown.contains(&token), "the token is in docker inspect");
        assert!(
            !shown.contains("ccpool-w-"),
            "a worker token is in docker inspect"
        );
        // Every process environment, read as the worker's user (who runs the CLI and its tools).
        let (code, environ) = exec_output(
            container,
            "1000:1000",
            "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f 2>/dev/null; done",
        )
        .await;
        assert_eq!(code, 0, "{environ}");
        // A container the filler is still starting has no CLI yet: count the ones read.
        if environ.contains("CLAUDE_CODE_OAUTH_TOKEN=ccpool-w-") {
            cli_environments_read += 1;
        }
        assert!(
            !environ.contains(&token),
            "the real token is in a process environment"
        );
        // Every file, as root.
        let (_, found) = exec_output(
            container,
            "0:0",
            &format!("grep -rl --exclude-dir=proc --exclude-dir=sys '{token}' / 2>/dev/null; grep -rl '{}' /home /tmp /workspace 2>/dev/null; true", &token[..24]),
        )
        .await;
        assert_eq!(found.trim(), "", "files holding the token");
    }
    assert!(
        cli_environments_read >= 1,
        "no CLI's environment could be read, so the check above proved nothing"
    );
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_inside_a_worker_only_the_relay_answers_and_a_retired_workers_token_is_refused() {
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(
            &mock.base_url(),
            Credentials::OAuthToken(real_token().as_str().into()),
        ),
        pool_config(ReusePolicy::Fresh, 2),
    )
    .await;
    let api = Server::start(&pool).await;
    let (relay_host, relay_port) = relay_addr(&pool.settings().relay.as_ref().unwrap().url);

    // Worker A serves a request and is retired (fresh policy): its token must die with it.
    let lease = pool
        .checkout(&LaunchProfile::default(), &OwnerKey::anonymous())
        .await
        .unwrap();
    let a = lease.worker().container_id().to_string();
    let (_, a_token) = exec_output(&a, "1000:1000", READ_OWN_TOKEN).await;
    let a_token = a_token.trim().to_string();
    assert!(a_token.starts_with("ccpool-w-"), "{a_token}");
    let (code, status) = exec_output(
        &a,
        "1000:1000",
        &relay_request(&relay_host, relay_port, &a_token),
    )
    .await;
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "a live token works ({code}): {status}"
    );
    let (_, outcome) = lease
        .start_turn(TurnRequest::text("hello"))
        .collect_all()
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while instance_containers(&pool.settings().instance_id)
        .await
        .contains(&a)
    {
        assert!(Instant::now() < deadline, "worker A was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let lease = pool
        .checkout(&LaunchProfile::default(), &OwnerKey::anonymous())
        .await
        .unwrap();
    let b = lease.worker().container_id().to_string();
    let (_, b_token) = exec_output(&b, "1000:1000", READ_OWN_TOKEN).await;
    let (_, refused) = exec_output(
        &b,
        "1000:1000",
        &relay_request(&relay_host, relay_port, &a_token),
    )
    .await;
    assert!(
        refused.starts_with("HTTP/1.1 401"),
        "a retired worker's token: {refused}"
    );
    let (_, forged) = exec_output(
        &b,
        "1000:1000",
        &relay_request(&relay_host, relay_port, "sk-ant-oat01-guess"),
    )
    .await;
    assert!(
        forged.starts_with("HTTP/1.1 401"),
        "a made-up token: {forged}"
    );
    let (_, own) = exec_output(
        &b,
        "1000:1000",
        &relay_request(&relay_host, relay_port, b_token.trim()),
    )
    .await;
    assert!(own.starts_with("HTTP/1.1 200"), "its own token: {own}");

    // Other doors, from inside worker B.
    let others: Vec<String> = instance_containers(&pool.settings().instance_id)
        .await
        .into_iter()
        .filter(|c| *c != b)
        .collect();
    let other = others.first().expect("another warm worker");
    let docker = support::docker::docker().await;
    let other_ip = docker
        .client()
        .inspect_container(other, None)
        .await
        .unwrap()
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.into_values().next())
        .and_then(|e| e.ip_address)
        .expect("the other worker's address");
    let api_port: u16 = api.base_url.rsplit_once(':').unwrap().1.parse().unwrap();
    let cases = [
        ("the relay", relay_host.clone(), relay_port, "exit=0"),
        (
            "the mock upstream's port on the host",
            relay_host.clone(),
            mock.port(),
            "exit=1",
        ),
        (
            "ccpool's API port on the host",
            relay_host.clone(),
            api_port,
            "exit=1",
        ),
        ("another worker", other_ip.clone(), 8080, "exit=124"),
        (
            "an address outside",
            "1.1.1.1".to_string(),
            443,
            "exit=1|exit=124",
        ),
    ];
    for (what, host, port, expected) in cases {
        let (_, out) = exec_output(&b, "1000:1000", &probe(&host, port)).await;
        assert!(
            expected.split('|').any(|e| out.trim() == e),
            "{what} ({host}:{port}): {out} (expected {expected})"
        );
    }
    drop(lease);
    api.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_tools_that_dumps_its_environment_shows_nothing_secret_and_the_relay_reports()
 {
    support::init_tracing();
    let token = real_token();
    let mock = MockUpstream::start().await;
    let pool = start_pool(
        settings(
            &mock.base_url(),
            Credentials::OAuthToken(token.as_str().into()),
        ),
        pool_config(reuse(), 1),
    )
    .await;
    let server = Server::start(&pool).await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.base_url);
    let created = http
        .post(url("/v1/sessions"))
        .json(&json!({"id": "dump", "tools": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let command = "env; for f in /proc/[0-9]*/environ; do tr '\\\\0' '\\\\n' < $f; echo; done; ls -laR $HOME; cat $HOME/.claude/.credentials.json; grep -r sk-ant $HOME /tmp";
    let prompt = format!("[[bash:{command}]]");
    let answer = http
        .post(url("/v1/messages"))
        .header("x-session-id", "dump")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                      "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let text = answer.text().await.unwrap();
    assert!(
        text.contains("ccpool-w-"),
        "the dump ran and reached the client: {text}"
    );
    assert!(!text.contains(&token), "the real token reached the client");
    assert!(!text.contains("REAL"), "{text}");

    // A 429 upstream: ccpool's client gets the upstream's retry-after (1), not its own guess.
    let limited = http
        .post(url("/v1/messages"))
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
                      "messages": [{"role": "user", "content": "[[e429]]"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    assert_eq!(
        limited
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );

    let status: Value = http
        .get(url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let report = &status["gateway"]["upstream_report"];
    assert!(
        report["requests_by_status"]["200"].as_u64().unwrap() >= 2,
        "{status}"
    );
    assert_eq!(report["requests_by_status"]["429"], 1, "{status}");
    assert!(report["tokens"]["input"].as_u64().unwrap() > 0, "{status}");
    assert!(report["tokens"]["output"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(
        report["ratelimit"]["anthropic-ratelimit-unified-status"],
        "allowed"
    );
    assert!(!status.to_string().contains(&token));
    let metrics = http
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ccpool_upstream_requests_total{status=\"429\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "ccpool_upstream_ratelimit{header=\"anthropic-ratelimit-unified-5h-utilization\"} 0.42"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("ccpool_upstream_tokens_total{kind=\"output\"}"),
        "{metrics}"
    );

    server.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

/// A gateway to `mock` with `credentials`, served on loopback.
async fn loopback_gateway(
    mock: &MockUpstream,
    credentials: &Credentials,
    write_back: Option<std::path::PathBuf>,
) -> (Arc<Gateway>, String) {
    let gateway = Gateway::new(
        credentials,
        GatewayConfig {
            upstream: mock.base_url(),
            broker: BrokerConfig {
                token_url: mock.token_url(),
                write_back,
                ..BrokerConfig::default()
            },
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gateway.serve(listener).unwrap();
    (gateway, format!("http://{addr}"))
}

fn expiring_file(refresh: &str, in_ms: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    json!({"claudeAiOauth": {"accessToken": "sk-ant-oat01-expiring", "refreshToken": refresh,
        "expiresAt": now + in_ms, "scopes": ["user:inference", "user:profile"], "subscriptionType": "max"}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_refreshed_once_while_concurrent_requests_all_succeed() {
    let mock = MockUpstream::start().await;
    let dir = std::env::temp_dir().join(format!("ccpool-broker-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(".credentials.json");
    let content = expiring_file("sk-ant-ort01-original", 60_000);
    std::fs::write(&path, &content).unwrap();
    let credentials = Credentials::CredentialsFile(Secret::new(content));
    let (gateway, url) = loopback_gateway(&mock, &credentials, Some(path.clone())).await;
    let worker = gateway.issue("w1");

    let http = reqwest::Client::new();
    let requests = (0..8).map(|i| {
        let http = http.clone();
        let url = url.clone();
        let token = worker.secret().expose().to_string();
        async move {
            let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
                              "messages": [{"role": "user", "content": format!("during refresh {i}")}]});
            let response = http
                .post(format!("{url}/v1/messages"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    });
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
        let text = support::mock_upstream::sse_text(&support::mock_upstream::parse_sse(&body));
        assert!(text.starts_with("Echo: during refresh"), "{body}");
    }
    assert_eq!(mock.token_calls(), 1, "exactly one refresh");
    let refresh = mock
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/oauth/token")
        .unwrap();
    assert_eq!(refresh.body["grant_type"], "refresh_token");
    assert_eq!(refresh.body["refresh_token"], "sk-ant-ort01-original");
    assert_eq!(
        refresh.body["client_id"],
        ccpool::gateway::broker::CLAUDE_OAUTH_CLIENT_ID
    );
    assert_eq!(refresh.body["scope"], "user:inference user:profile");
    for r in mock.message_requests() {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer sk-ant-oat01-refreshed-1")
        );
    }
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        written["claudeAiOauth"]["refreshToken"],
        "sk-ant-ort01-rotated-1"
    );
    assert_eq!(written["claudeAiOauth"]["subscriptionType"], "max");
    let status = gateway.broker_status();
    assert_eq!(status.refreshes, 1);
    assert!(status.expires_in_secs.unwrap() > 28_000);
    assert!(gateway.not_ready_because().is_none());
    gateway.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_says_why_and_an_unknown_token_gets_401() {
    let mock = MockUpstream::start().await;
    let credentials =
        Credentials::CredentialsFile(Secret::new(expiring_file("sk-ant-ort01-bad", -1000)));
    let (gateway, url) = loopback_gateway(&mock, &credentials, None).await;
    let http = reqwest::Client::new();
    let body =
        json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]});
    let unknown = http
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", "ccpool-w-nobody.0000")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 401);
    assert_eq!(
        mock.message_request_count(),
        0,
        "nothing reached the upstream"
    );

    let worker = gateway.issue("w1");
    let expired = http
        .post(format!("{url}/v1/messages"))
        .bearer_auth(worker.secret().expose())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status().as_u16(), 401);
    let text = expired.text().await.unwrap();
    assert!(
        text.contains("authentication_error") && !text.contains("sk-ant-ort01"),
        "{text}"
    );
    let why = gateway.not_ready_because().expect("a reason");
    assert!(why.contains("expired") && why.contains("400"), "{why}");
    assert!(!why.contains("sk-ant"), "{why}");
    drop(worker);
    gateway.shutdown().await;
    mock.shutdown().await;
}
