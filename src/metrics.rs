//! Prometheus metrics: requests by route and status, first-delta and duration histograms,
//! tokens, and, read from the pool and the sessions at scrape time, pool gauges, worker
//! starts, retirements and failures, and sessions. Served at `GET /metrics`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::Stream;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::chat::ChatItem;
use crate::domain::{BlockDelta, TurnEvent};
use crate::pool::WarmPool;
use crate::sessions::Sessions;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    kind: &'static str,
}

/// The service's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    first_delta: Family<RouteLabels, Histogram>,
    duration: Family<RouteLabels, Histogram>,
    tokens: Family<TokenLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    pub fn new(pool: WarmPool, sessions: Sessions) -> Self {
        let mut registry = Registry::with_prefix("ccpool");
        let requests = Family::<RequestLabels, Counter>::default();
        let first_delta = Family::<RouteLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "first_delta_seconds",
            "Time from the request's arrival to the first text delta",
            first_delta.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of its answer",
            duration.clone(),
        );
        registry.register(
            "tokens",
            "Tokens of answered requests by kind",
            tokens.clone(),
        );
        if let Some(relay) = &pool.settings().relay {
            relay.gateway.report().register(&mut registry);
        }
        registry.register_collector(Box::new(PoolCollector { pool, sessions }));
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            requests,
            first_delta,
            duration,
            tokens,
        }
    }

    pub fn count_request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(cause = %e, "encoding metrics");
        }
        out
    }

    /// Passes a chat stream through, timing its first text delta and its end from the
    /// request's arrival (`started`), and counting its tokens.
    pub fn observe<S>(
        &self,
        route: &'static str,
        started: Instant,
        items: S,
    ) -> impl Stream<Item = ChatItem> + Send + use<S>
    where
        S: Stream<Item = ChatItem> + Send,
    {
        use futures::StreamExt;
        let metrics = self.clone();
        let mut first_seen = false;
        items.inspect(move |item| match item {
            ChatItem::Event(TurnEvent::BlockDelta {
                delta: BlockDelta::Text(_),
                ..
            }) if !first_seen => {
                first_seen = true;
                let labels = RouteLabels {
                    route: route.to_string(),
                };
                metrics
                    .first_delta
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
            }
            ChatItem::End(end) => {
                let labels = RouteLabels {
                    route: route.to_string(),
                };
                metrics
                    .duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                if end.failure.is_none() {
                    let u = end.usage;
                    metrics
                        .tokens
                        .get_or_create(&TokenLabels { kind: "input" })
                        .inc_by(u.input_tokens);
                    metrics
                        .tokens
                        .get_or_create(&TokenLabels { kind: "output" })
                        .inc_by(u.output_tokens);
                    metrics
                        .tokens
                        .get_or_create(&TokenLabels { kind: "cache_read" })
                        .inc_by(u.cache_read_input_tokens);
                    metrics
                        .tokens
                        .get_or_create(&TokenLabels {
                            kind: "cache_creation",
                        })
                        .inc_by(u.cache_creation_input_tokens);
                }
            }
            _ => {}
        })
    }
}

/// Reads the pool and the sessions at scrape time.
struct PoolCollector {
    pool: WarmPool,
    sessions: Sessions,
}

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolCollector")
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.pool.status();
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     value: i64|
         -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)
        };
        let counter = |encoder: &mut DescriptorEncoder,
                       name: &str,
                       help: &str,
                       value: u64|
         -> Result<(), std::fmt::Error> {
            let c = ConstCounter::new(value);
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)
        };
        gauge(
            &mut encoder,
            "pool_workers",
            "Worker containers that exist",
            status.workers as i64,
        )?;
        gauge(
            &mut encoder,
            "pool_max_workers",
            "Worker containers at most",
            status.max_workers as i64,
        )?;
        let sum = |f: fn(&crate::pool::ProfileStatus) -> usize| {
            status.profiles.iter().map(f).sum::<usize>() as i64
        };
        gauge(
            &mut encoder,
            "pool_warm",
            "Never-used workers ready to serve",
            sum(|p| p.warm),
        )?;
        gauge(
            &mut encoder,
            "pool_busy",
            "Workers serving a request",
            sum(|p| p.busy),
        )?;
        gauge(
            &mut encoder,
            "pool_idle",
            "Used workers kept for their owners",
            sum(|p| p.idle),
        )?;
        gauge(
            &mut encoder,
            "pool_held",
            "Used workers holding a conversation for its next turn (parked ones included)",
            sum(|p| p.held),
        )?;
        gauge(
            &mut encoder,
            "pool_parked",
            "Held workers waiting on client tool results",
            sum(|p| p.parked),
        )?;
        gauge(
            &mut encoder,
            "pool_waiting",
            "Requests waiting for a worker",
            sum(|p| p.waiting),
        )?;
        gauge(
            &mut encoder,
            "pool_starting",
            "Workers being started",
            sum(|p| p.starting),
        )?;
        counter(
            &mut encoder,
            "worker_starts",
            "Workers started",
            status.started,
        )?;
        counter(
            &mut encoder,
            "worker_start_failures",
            "Worker starts that failed",
            status.start_failures,
        )?;
        counter(
            &mut encoder,
            "worker_retirements",
            "Workers retired",
            status.retired,
        )?;
        counter(
            &mut encoder,
            "worker_reuses",
            "Requests served by a reused worker",
            status.reused,
        )?;
        counter(
            &mut encoder,
            "conversation_continuations",
            "Conversation turns served by the worker holding the conversation (no replay)",
            status.continued,
        )?;
        counter(
            &mut encoder,
            "conversation_replays",
            "Conversation turns whose history was replayed on another worker",
            status.replayed,
        )?;
        gauge(
            &mut encoder,
            "sessions",
            "Sessions that exist",
            self.sessions.count() as i64,
        )?;
        Ok(())
    }
}
