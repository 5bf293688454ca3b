//! Container removal: the graveyard task removes the containers of dropped workers (`Drop`
//! cannot await), and the sweep removes every container of this instance at start and at
//! shutdown.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::runtime::{ContainerRuntime, LABEL_INSTANCE, LABEL_MANAGED, RuntimeError};

/// Removes every container of `instance`; returns how many there were.
pub(super) async fn remove_instance_containers(
    runtime: &dyn ContainerRuntime,
    instance: &str,
) -> Result<usize, RuntimeError> {
    let containers = runtime
        .list_containers(&[(LABEL_MANAGED, "true"), (LABEL_INSTANCE, instance)])
        .await?;
    let n = containers.len();
    let removals = containers.iter().map(|c| runtime.remove_container(&c.id));
    for result in futures::future::join_all(removals).await {
        result?;
    }
    Ok(n)
}

/// Removes the containers of dropped workers, a few at a time.
pub(super) async fn run_graveyard(
    runtime: Arc<dyn ContainerRuntime>,
    buried: mpsc::UnboundedReceiver<String>,
    cancel: CancellationToken,
) {
    let removals = UnboundedReceiverStream::new(buried)
        .map(|id| {
            let runtime = runtime.clone();
            async move {
                if let Err(e) = runtime.remove_container(&id).await {
                    tracing::warn!(cause = %e, "removing a retired worker");
                }
            }
        })
        .buffer_unordered(4)
        .for_each(|()| async {});
    tokio::select! {
        _ = removals => {}
        _ = cancel.cancelled() => {}
    }
}
