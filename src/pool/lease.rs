//! A worker checked out for one request (`Lease`), the task that runs its turn, and the
//! turn's events (`TurnStream`), whose drop interrupts the turn.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use deadpool::managed::Object;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::PoolInner;
use super::demand::InFlight;
use super::hold::HoldPlan;
use super::owner::{OwnerManager, OwnerState};
use crate::domain::{TurnEvent, TurnItem, TurnOutcome, TurnRequest};
use crate::worker::Worker;

/// A worker checked out for one request. Serve it with `start_turn`; a lease dropped unused
/// returns the worker untouched.
pub struct Lease {
    worker: Option<Object<OwnerManager>>,
    owner: Arc<OwnerState>,
    pool: Arc<PoolInner>,
    /// Set for a conversation turn: the worker may hold the conversation afterwards.
    hold: Option<HoldPlan>,
    /// The request in its profile's demand, until its turn is over.
    in_flight: Option<InFlight>,
}

impl Lease {
    pub(super) fn new(
        worker: Object<OwnerManager>,
        owner: Arc<OwnerState>,
        pool: Arc<PoolInner>,
    ) -> Self {
        Lease {
            worker: Some(worker),
            owner,
            pool,
            hold: None,
            in_flight: None,
        }
    }

    /// The request stays counted in its profile's demand until the turn is over.
    pub(super) fn counting(mut self, in_flight: InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    /// After its turn, the worker holds the conversation if the client saw it whole.
    pub(super) fn holding(mut self, plan: HoldPlan) -> Self {
        self.hold = Some(plan);
        self
    }

    pub fn worker(&self) -> &Worker {
        self.worker
            .as_ref()
            .expect("a lease holds its worker until it is consumed")
    }

    /// Starts the turn in a task the pool owns and returns its events. Dropping the stream
    /// interrupts the turn; the worker is then reset and kept, or retired, by policy.
    pub fn start_turn(mut self, request: TurnRequest) -> TurnStream {
        let worker = self.worker.take().expect("a lease is consumed once");
        let owner = self.owner.clone();
        let pool = self.pool.clone();
        let hold = self.hold.take();
        let in_flight = self.in_flight.take();
        spawn_turn(
            &self.pool,
            worker,
            request,
            move |worker, outcome, cut, reply| async move {
                // A holding is immediate and comes first, so that the client's next request
                // (tool results, sent as soon as a tool ran) finds it.
                let worker = match hold {
                    Some(plan) => pool.hold(worker, owner.clone(), &outcome, cut, plan),
                    None => Some(worker),
                };
                // The client has its answer before a reset, which takes a while.
                reply.await;
                drop(in_flight);
                if let Some(worker) = worker {
                    pool.release(worker, &owner, &outcome).await;
                }
            },
        )
    }
}

/// Runs one turn in a task the pool owns and returns its events. `finish` gets the worker,
/// the outcome, the turn's token (cancelled if the turn was interrupted or cut, even later),
/// and the future that sends the final `Finished` item; it decides whether that is sent
/// before or after it puts the worker away.
pub(super) fn spawn_turn<W, F, Fut>(
    pool: &Arc<PoolInner>,
    mut worker: W,
    request: TurnRequest,
    finish: F,
) -> TurnStream
where
    W: std::ops::DerefMut<Target = Worker> + Send + 'static,
    F: FnOnce(W, TurnOutcome, CancellationToken, futures::future::BoxFuture<'static, ()>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    pool.counters.count_turn();
    let (tx, rx) = mpsc::channel(pool.config.turn_channel_capacity);
    let cancel = pool.cancel.child_token();
    let stream_cancel = cancel.clone();
    let span = tracing::debug_span!("turn", worker = %worker.id());
    let releases = pool.clone();
    pool.tasks.spawn(tracing::Instrument::instrument(
        async move {
            let outcome = worker.run_turn(request, &tx, &cancel).await;
            let last = TurnItem::Finished(outcome.clone());
            let reply: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
                let _ = tx.send(last).await;
            });
            finish(worker, outcome, cancel, reply).await;
            releases.releases.send_modify(|n| *n += 1);
        },
        span,
    ));
    TurnStream {
        rx,
        cancel: stream_cancel,
        finished: false,
    }
}

/// The events of one running turn; the last item is `TurnItem::Finished`. Dropping it before
/// that item was taken interrupts the turn (and, the client having seen less than the whole
/// answer, the worker does not hold the conversation).
pub struct TurnStream {
    rx: mpsc::Receiver<TurnItem>,
    cancel: CancellationToken,
    /// The `Finished` item was taken.
    finished: bool,
}

impl Drop for TurnStream {
    fn drop(&mut self) {
        if !self.finished {
            self.cancel.cancel();
        }
    }
}

impl Stream for TurnStream {
    type Item = TurnItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TurnItem>> {
        let item = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(TurnItem::Finished(_))) = &item {
            self.finished = true;
        }
        item
    }
}

impl TurnStream {
    /// Asks the worker to stop the turn; the stream still ends with its `Finished` item.
    pub fn interrupt(&self) {
        self.cancel.cancel();
    }

    /// A handle that interrupts the turn when cancelled, for stages that own the stream.
    pub fn interrupt_handle(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Collects the whole turn: its events and its outcome.
    pub async fn collect_all(mut self) -> (Vec<TurnEvent>, TurnOutcome) {
        let mut events = Vec::new();
        while let Some(item) = self.next().await {
            match item {
                TurnItem::Event(e) => events.push(e),
                TurnItem::Finished(outcome) => return (events, outcome),
            }
        }
        (
            events,
            TurnOutcome::failed("the turn ended without an outcome"),
        )
    }
}
