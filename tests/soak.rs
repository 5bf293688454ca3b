//! Faults, with the real engine, the real CLI and the mock upstream:
//! - a soak, bounded in count and time: 500 requests at concurrency 8, 10 % of clients
//!   disconnecting mid-stream, 5 % of workers killed with `docker kill`, 5 % upstream errors.
//!   Every request ends (an answer or a proper error), nothing leaks, and the pool is full
//!   again within 15 seconds of the end. It prints its figures.
//! - recovery when every worker is removed behind ccpool's back (the path a Docker engine
//!   restart takes): `/ready` says not ready, then ready again, and requests are served.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ccpool::credentials::Credentials;
use ccpool::pool::StartBackoff;
use ccpool::runtime::{ContainerRuntime, LABEL_INSTANCE};
use futures::StreamExt;
use serde_json::{Value, json};
use support::api::Server;
use support::docker::{docker, pool_config, reuse, settings, shutdown_clean, start_pool};
use support::mock_upstream::MockUpstream;

#[derive(Debug, Default)]
struct Outcomes {
    answered: AtomicUsize,
    upstream_errors: AtomicUsize,
    /// `[[e529]]` requests that ended in a worker error instead: a kill hit their worker.
    e529_killed: AtomicUsize,
    worker_errors: AtomicUsize,
    disconnected: AtomicUsize,
}

const REQUESTS: usize = 500;
const CONCURRENCY: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_every_request_ends_and_nothing_leaks() {
    let mock = MockUpstream::start().await;
    mock.set_keep_bodies(false);
    let mut config = pool_config(reuse(), 4);
    config.max_workers = 10;
    config.checkout_timeout = Duration::from_secs(60);
    // Every request is a one-shot conversation: its holding is let go at the reaper's next
    // pass, so "back to full" below means warm workers, not conversations held for follow-ups.
    config.hold_idle = Duration::from_millis(1);
    // The soak's own kills make starts fail (a kill can hit a worker still starting: 12 of 19
    // starts once): retry soon and never give the profile up, so that the refill below
    // measures starts, not the backoff's waits for a broken image (which its own tests cover).
    config.start_backoff = StartBackoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(1),
        give_up_after: 0,
    };
    let mut worker_settings = settings(&mock.base_url(), Credentials::ApiKey("sk-test".into()));
    worker_settings.silence_limit = Duration::from_secs(20);
    let instance = worker_settings.instance_id.clone();
    let pool = start_pool(worker_settings, config).await;
    let server = Server::start(&pool).await;
    let started_before = pool.status().started;
    let http = reqwest::Client::new();
    let outcomes = Arc::new(Outcomes::default());
    let first_deltas = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kills = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();

    let runs = futures::stream::iter(0..REQUESTS).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/messages", server.base_url);
        let outcomes = outcomes.clone();
        let first_deltas = first_deltas.clone();
        let kills = kills.clone();
        let instance = instance.clone();
        async move {
            let (prompt, stream, disconnect) = match i % 20 {
                0 => ("[[e529]] overloaded".to_string(), false, false),
                1 | 11 => ("[[slow]] [[long]] going away".to_string(), true, true),
                _ => (format!("soak request {i}"), i % 2 == 0, false),
            };
            if i % 20 == 5 {
                // 5 % of the time, kill a worker of this instance.
                let runtime = docker().await;
                let workers = runtime.list_containers(&[(LABEL_INSTANCE, &instance)]).await.unwrap();
                if let Some(victim) = workers.iter().filter(|c| c.running).nth(i % 3) {
                    let _ = runtime.client().kill_container(&victim.id, None::<bollard::query_parameters::KillContainerOptions>).await;
                    kills.fetch_add(1, Ordering::SeqCst);
                }
            }
            let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": stream, "messages": [{"role": "user", "content": prompt}]});
            let started = Instant::now();
            let finished = tokio::time::timeout(Duration::from_secs(90), async {
                let response = http.post(&url).json(&body).send().await.expect("ccpool answers");
                let status = response.status().as_u16();
                if !stream || status != 200 {
                    let text = response.text().await.unwrap();
                    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
                    match status {
                        200 => {
                            assert_eq!(v["content"][0]["text"], format!("Echo: {prompt}"));
                            outcomes.answered.fetch_add(1, Ordering::SeqCst);
                        }
                        429 | 529 => {
                            assert_eq!(v["type"], "error");
                            outcomes.upstream_errors.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {
                            assert_eq!(v["type"], "error", "{text}");
                            if i % 20 == 0 {
                                outcomes.e529_killed.fetch_add(1, Ordering::SeqCst);
                            }
                            outcomes.worker_errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    return;
                }
                let mut events = response.bytes_stream();
                let mut text = String::new();
                let mut deltas = 0;
                while let Some(chunk) = events.next().await {
                    let Ok(chunk) = chunk else { break };
                    let piece = String::from_utf8_lossy(&chunk).to_string();
                    if deltas == 0 && piece.contains("text_delta") {
                        first_deltas.lock().unwrap().push(started.elapsed());
                    }
                    deltas += piece.matches("text_delta").count();
                    text.push_str(&piece);
                    if disconnect && deltas >= 3 {
                        outcomes.disconnected.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                if text.contains("event: message_stop") {
                    outcomes.answered.fetch_add(1, Ordering::SeqCst);
                } else {
                    assert!(text.contains("event: error"), "a stream ended with neither message_stop nor error: {text}");
                    outcomes.worker_errors.fetch_add(1, Ordering::SeqCst);
                }
            })
            .await;
            assert!(finished.is_ok(), "request {i} hung");
        }
    });
    runs.buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let elapsed = t0.elapsed();

    // The pool is back to full within 15 seconds of the end (replacements started near the
    // end ran at a starting worker's low CPU weight behind the soak's requests, and each
    // warms up: measured 0.1–7.8 s on a loaded 2-core machine): every turn released, every
    // capacity slot a worker again (the killed ones replaced), none busy or starting. Its
    // workers may be warm or idle (kept for their owner): the adaptive target is the soak's
    // own peak, so the filler does not trade idle workers for fresh ones. No single signal
    // says all of this: the status is polled, bounded.
    let end = Instant::now();
    let turns = pool.status().turns;
    assert!(
        pool.wait_releases(turns, Duration::from_secs(5)).await,
        "turns not released: {:?}",
        pool.status()
    );
    let full = |s: &ccpool::pool::PoolStatus| {
        s.workers == s.max_workers
            && s.profiles
                .iter()
                .all(|p| p.busy == 0 && p.starting == 0 && p.waiting == 0)
    };
    while !full(&pool.status()) {
        assert!(
            end.elapsed() < Duration::from_secs(15),
            "not full again: {:?}",
            pool.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refill = end.elapsed();

    // No exec process is left behind in any worker: init, sleep and the CLI only.
    let runtime = docker().await;
    for c in runtime
        .list_containers(&[(LABEL_INSTANCE, &instance)])
        .await
        .unwrap()
        .iter()
        .filter(|c| c.running)
    {
        let top = runtime
            .client()
            .top_processes(&c.id, None::<bollard::query_parameters::TopOptions>)
            .await
            .unwrap();
        let processes = top.processes.unwrap_or_default();
        assert!(
            processes.len() <= 3,
            "a leaked process in {}: {processes:?}",
            c.id
        );
    }

    let total = outcomes.answered.load(Ordering::SeqCst)
        + outcomes.upstream_errors.load(Ordering::SeqCst)
        + outcomes.worker_errors.load(Ordering::SeqCst)
        + outcomes.disconnected.load(Ordering::SeqCst);
    assert_eq!(total, REQUESTS, "{outcomes:?}");
    assert!(
        outcomes.answered.load(Ordering::SeqCst) >= REQUESTS * 7 / 10,
        "{outcomes:?}"
    );
    // Every [[e529]] request is a 529 passed on, but for one whose worker a kill hit (its
    // neighbour in the sequence kills a worker while it is in flight: 0 to 4 of 25 seen), which
    // is a worker error; no other request is ever a 429 or 529.
    let upstream = outcomes.upstream_errors.load(Ordering::SeqCst);
    let e529_killed = outcomes.e529_killed.load(Ordering::SeqCst);
    assert_eq!(upstream + e529_killed, REQUESTS / 20, "{outcomes:?}");
    assert!(upstream >= REQUESTS / 40, "{outcomes:?}");
    let mut firsts = first_deltas.lock().unwrap().clone();
    firsts.sort();
    let pct = |p: f64| {
        firsts
            .get(((firsts.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let status = pool.status();
    println!(
        "soak: {REQUESTS} requests at concurrency {CONCURRENCY} in {:.1}s ({:.1} req/s): answered {}, upstream errors {}, \
         worker errors {}, disconnected {}; {} workers killed, {} replacements, {} failed starts; first delta p50 {:.0} ms p90 {:.0} ms; \
         pool full again {:.0} ms after the end",
        elapsed.as_secs_f64(),
        REQUESTS as f64 / elapsed.as_secs_f64(),
        outcomes.answered.load(Ordering::SeqCst),
        outcomes.upstream_errors.load(Ordering::SeqCst),
        outcomes.worker_errors.load(Ordering::SeqCst),
        outcomes.disconnected.load(Ordering::SeqCst),
        kills.load(Ordering::SeqCst),
        status.started - started_before,
        status.start_failures,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.9).as_secs_f64() * 1e3,
        refill.as_secs_f64() * 1e3,
    );
    server.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_when_every_worker_is_removed_behind_its_back() {
    let mock = MockUpstream::start().await;
    let worker_settings = settings(&mock.base_url(), Credentials::ApiKey("sk-test".into()));
    let instance = worker_settings.instance_id.clone();
    let pool = start_pool(worker_settings, pool_config(reuse(), 2)).await;
    let server = Server::start(&pool).await;
    let http = reqwest::Client::new();
    let ask = |prompt: &str| json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]});
    let r = http
        .post(format!("{}/v1/messages", server.base_url))
        .json(&ask("before"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Everything goes, as when the engine restarts: /ready says so until the pool has refilled
    // (observable only from outside: poll, bounded).
    support::docker::remove_by_label_blocking(&format!("{LABEL_INSTANCE}={instance}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut not_ready_seen = false;
    while !not_ready_seen && Instant::now() < deadline {
        let ready = http
            .get(format!("{}/ready", server.base_url))
            .send()
            .await
            .unwrap();
        not_ready_seen = ready.status().as_u16() == 503;
        if !not_ready_seen {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(not_ready_seen, "/ready never said not ready");

    // Requests are served again, by replacements, without a restart of ccpool.
    let r = http
        .post(format!("{}/v1/messages", server.base_url))
        .json(&ask("after"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    assert!(
        pool.wait_warm(2, Duration::from_secs(60)).await,
        "{:?}",
        pool.status()
    );
    let ready = http
        .get(format!("{}/ready", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    server.stop().await;
    shutdown_clean(pool).await;
    mock.shutdown().await;
}
