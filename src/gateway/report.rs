//! What the relay sees, reported: per upstream request its status, the tokens the upstream's
//! own answer counts (read from the stream as it passes, never buffered in front of the
//! worker), and the rate-limit headers. Read by `/status` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

/// How long an upstream's `retry-after` is handed on to ccpool's own clients.
const RETRY_AFTER_FRESH: Duration = Duration::from_secs(60);
/// The longest SSE line or JSON body looked at for usage; longer ones are passed on unread.
const MAX_TAPPED_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeaderLabels {
    header: String,
}

/// Tokens an upstream answer counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamUsage {
    pub input: u64,
    pub output: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
}

impl UpstreamUsage {
    /// Takes the fields a `usage` object carries (a later event's counts replace earlier ones).
    fn update(&mut self, usage: &Value) {
        let set = |field: &mut u64, key: &str| {
            if let Some(n) = usage.get(key).and_then(Value::as_u64) {
                *field = n;
            }
        };
        set(&mut self.input, "input_tokens");
        set(&mut self.output, "output_tokens");
        set(&mut self.cache_creation, "cache_creation_input_tokens");
        set(&mut self.cache_read, "cache_read_input_tokens");
    }
}

/// The relay's counters and the latest rate-limit state.
#[derive(Default)]
pub struct Report {
    requests: Family<StatusLabels, Counter>,
    tokens: Family<KindLabels, Counter>,
    ratelimit: Family<HeaderLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    rejected: Counter,
    unreachable: Counter,
    latest: Mutex<Latest>,
}

#[derive(Default)]
struct Latest {
    ratelimit: BTreeMap<String, String>,
    retry_after: Option<(Instant, HeaderValue)>,
    totals: UpstreamUsage,
    by_status: BTreeMap<u16, u64>,
}

impl Report {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "upstream_requests",
            "Requests the relay forwarded upstream, by upstream status",
            self.requests.clone(),
        );
        registry.register(
            "upstream_tokens",
            "Tokens counted by the upstream's own answers, by kind",
            self.tokens.clone(),
        );
        registry.register(
            "upstream_ratelimit",
            "The latest numeric anthropic-ratelimit-* header values from the upstream",
            self.ratelimit.clone(),
        );
        registry.register(
            "relay_rejected",
            "Relay requests refused for a missing, unknown or revoked worker token",
            self.rejected.clone(),
        );
        registry.register(
            "relay_upstream_unreachable",
            "Relay requests that could not reach the upstream",
            self.unreachable.clone(),
        );
    }

    fn latest(&self) -> std::sync::MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn rejected(&self) {
        self.rejected.inc();
    }

    pub(crate) fn unreachable(&self) {
        self.unreachable.inc();
    }

    /// An upstream answer's status and headers.
    pub(crate) fn answer(&self, status: u16, headers: &HeaderMap) {
        self.requests.get_or_create(&StatusLabels { status }).inc();
        let mut latest = self.latest();
        *latest.by_status.entry(status).or_default() += 1;
        for (name, value) in headers {
            let name = name.as_str();
            if !name.starts_with("anthropic-ratelimit-") {
                continue;
            }
            let Ok(text) = value.to_str() else { continue };
            if let Ok(n) = text.parse::<f64>() {
                self.ratelimit
                    .get_or_create(&HeaderLabels {
                        header: name.to_string(),
                    })
                    .set(n);
            }
            latest.ratelimit.insert(name.to_string(), text.to_string());
        }
        if matches!(status, 429 | 529) {
            if let Some(v) = headers.get("retry-after") {
                latest.retry_after = Some((Instant::now(), v.clone()));
            }
        }
    }

    pub(crate) fn usage(&self, usage: UpstreamUsage) {
        let add = |kind, n| self.tokens.get_or_create(&KindLabels { kind }).inc_by(n);
        add("input", usage.input);
        add("output", usage.output);
        add("cache_creation", usage.cache_creation);
        add("cache_read", usage.cache_read);
        let mut latest = self.latest();
        latest.totals.input += usage.input;
        latest.totals.output += usage.output;
        latest.totals.cache_creation += usage.cache_creation;
        latest.totals.cache_read += usage.cache_read;
    }

    /// The upstream's latest `retry-after`, if a 429 or 529 brought one in the last minute.
    pub fn recent_retry_after(&self) -> Option<HeaderValue> {
        let latest = self.latest();
        let (at, value) = latest.retry_after.as_ref()?;
        (at.elapsed() < RETRY_AFTER_FRESH).then(|| value.clone())
    }

    /// For `/status`.
    pub fn snapshot(&self) -> Value {
        let latest = self.latest();
        serde_json::json!({
            "requests_by_status": latest.by_status.iter().map(|(s, n)| (s.to_string(), Value::from(*n))).collect::<serde_json::Map<_, _>>(),
            "tokens": {
                "input": latest.totals.input, "output": latest.totals.output,
                "cache_creation": latest.totals.cache_creation, "cache_read": latest.totals.cache_read,
            },
            "ratelimit": latest.ratelimit,
        })
    }
}

/// What kind of body a tap reads usage from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    EventStream,
    Json,
    Other,
}

impl BodyKind {
    pub(crate) fn of(headers: &HeaderMap) -> BodyKind {
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct.starts_with("text/event-stream") {
            BodyKind::EventStream
        } else if ct.starts_with("application/json") {
            BodyKind::Json
        } else {
            BodyKind::Other
        }
    }
}

/// Reads usage from a body as its chunks pass by. It keeps only the current SSE line (or a
/// JSON body up to a bound); it never holds a chunk back. Reports when dropped.
pub(crate) struct UsageTap {
    kind: BodyKind,
    pending: Vec<u8>,
    overflow: bool,
    usage: UpstreamUsage,
    seen: bool,
    report: std::sync::Arc<Report>,
}

impl UsageTap {
    pub(crate) fn new(kind: BodyKind, report: std::sync::Arc<Report>) -> UsageTap {
        UsageTap {
            kind,
            pending: Vec::new(),
            overflow: false,
            usage: UpstreamUsage::default(),
            seen: false,
            report,
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        match self.kind {
            BodyKind::Other => {}
            BodyKind::Json => self.keep(chunk),
            BodyKind::EventStream => {
                let mut rest = chunk;
                while let Some(i) = rest.iter().position(|&b| b == b'\n') {
                    self.keep(&rest[..i]);
                    self.sse_line();
                    rest = &rest[i + 1..];
                }
                self.keep(rest);
            }
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.pending.len() + bytes.len() > MAX_TAPPED_BYTES {
            self.overflow = true;
            self.pending.clear();
        } else if !self.overflow {
            self.pending.extend_from_slice(bytes);
        }
    }

    fn sse_line(&mut self) {
        let line = std::mem::take(&mut self.pending);
        let overflow = std::mem::replace(&mut self.overflow, false);
        if overflow {
            return;
        }
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        // Only the events that carry usage are parsed.
        if !contains(data, b"\"message_start\"") && !contains(data, b"\"message_delta\"") {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        let usage = event
            .get("usage")
            .or_else(|| event.get("message").and_then(|m| m.get("usage")));
        if let Some(usage) = usage {
            self.usage.update(usage);
            self.seen = true;
        }
    }

    fn finish(&mut self) {
        if self.kind == BodyKind::Json && !self.overflow {
            if let Ok(body) = serde_json::from_slice::<Value>(&self.pending) {
                if let Some(usage) = body.get("usage") {
                    self.usage.update(usage);
                    self.seen = true;
                }
            }
        }
        if self.seen {
            self.report.usage(self.usage);
        }
    }
}

impl Drop for UsageTap {
    fn drop(&mut self) {
        self.finish();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn usage_is_read_from_a_stream_cut_anywhere() {
        let sse = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":40,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n",
        );
        for cut in [1, 7, 50, 200, sse.len()] {
            let report = Arc::new(Report::default());
            let mut tap = UsageTap::new(BodyKind::EventStream, report.clone());
            for piece in sse.as_bytes().chunks(cut) {
                tap.feed(piece);
            }
            drop(tap);
            let s = report.snapshot();
            assert_eq!(
                s["tokens"],
                serde_json::json!({"input": 12, "output": 7, "cache_creation": 3, "cache_read": 40}),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_json_answer_and_the_rate_limit_headers_are_reported() {
        let report = Arc::new(Report::default());
        let mut tap = UsageTap::new(BodyKind::Json, report.clone());
        tap.feed(br#"{"usage":{"input_tokens":5,"#);
        tap.feed(br#""output_tokens":2}}"#);
        drop(tap);
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-ratelimit-unified-5h-utilization",
            HeaderValue::from_static("0.25"),
        );
        headers.insert(
            "anthropic-ratelimit-unified-status",
            HeaderValue::from_static("allowed"),
        );
        headers.insert("retry-after", HeaderValue::from_static("17"));
        report.answer(200, &headers);
        assert!(
            report.recent_retry_after().is_none(),
            "only a 429 or 529 hands it on"
        );
        report.answer(429, &headers);
        assert_eq!(report.recent_retry_after().unwrap(), "17");
        let s = report.snapshot();
        assert_eq!(s["tokens"]["input"], 5);
        assert_eq!(s["tokens"]["output"], 2);
        assert_eq!(s["requests_by_status"]["429"], 1);
        assert_eq!(
            s["ratelimit"]["anthropic-ratelimit-unified-status"],
            "allowed"
        );
        let mut registry = Registry::default();
        report.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "upstream_ratelimit{header=\"anthropic-ratelimit-unified-5h-utilization\"} 0.25"
            ),
            "{text}"
        );
        assert!(
            text.contains("upstream_requests_total{status=\"429\"} 1"),
            "{text}"
        );
    }
}
