//! Waiting for a new CLI to go quiet before its worker counts as warm. After its start and
//! warm-up a CLI keeps working for about a second (its garbage collector and deferred start-up
//! work: measured with 2.1.327, 130–190 ms of CPU in the 1.5 s after the warm-up, on the main
//! thread and JavaScriptCore's heap helpers), and on 2 cores a request served in that time, by
//! it or by a worker beside it, reached its first delta tens of milliseconds later. A
//! pre-warmed session worker, which the next new session claims the moment it is ready,
//! therefore waits, still at its low CPU weight, until the engine's CPU samples of its
//! container show it quiet. The pool's own workers do not wait (see `Worker::start_in`).

use std::time::Duration;

use futures::StreamExt;

use crate::runtime::ContainerRuntime;

/// Quiet: less CPU than this between two of the engine's samples (about a second apart).
const QUIET: Duration = Duration::from_millis(50);
/// At most this many samples are read (Docker's: about five seconds)...
const SAMPLES: usize = 6;
/// ... and for at most this long.
const LIMIT: Duration = Duration::from_secs(7);

/// Waits until the container's CPU time grows by less than `QUIET` between two samples, at
/// most `SAMPLES` samples or `LIMIT`; an engine that gives no samples does not wait. Whether it
/// went quiet.
pub(super) async fn until_quiet(runtime: &dyn ContainerRuntime, container_id: &str) -> bool {
    let mut samples = runtime.cpu_time_samples(container_id).take(SAMPLES);
    let quiet = async {
        let mut last = None;
        while let Some(sample) = samples.next().await {
            let total = match sample {
                Ok(total) => total,
                Err(e) => {
                    tracing::debug!(cause = %e, "no CPU samples: not waiting for quiet");
                    return false;
                }
            };
            if let Some(before) = last {
                let used: Duration = total.saturating_sub(before);
                tracing::trace!(
                    container = container_id,
                    used_ms = used.as_millis() as u64,
                    "CPU since the last sample"
                );
                if used < QUIET {
                    return true;
                }
            }
            last = Some(total);
        }
        false
    };
    tokio::time::timeout(LIMIT, quiet).await.unwrap_or(false)
}
