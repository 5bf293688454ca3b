//! What a worker's conversation holds, and how it is emptied without a trace: every user line
//! ccpool sends carries its own id, and a reset rewinds the conversation to its first message
//! (`rewind_conversation`), which leaves no note for the next conversation to see (the CLI's
//! `/clear` leaves three). When the CLI refuses the rewind, or the model was switched on the
//! running CLI (its `/model` note would sit before the first message), the CLI process is
//! started again in the same container. Also: the check that every upstream message the CLI
//! relayed ended with its `message_stop`.

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use futures::StreamExt;

use super::{Worker, WorkerError, spawn_cli};
use crate::cli::{ControlRequest, StdinLine, StreamEvent};
use crate::domain::{ContentBlock, TurnOutcome, TurnStatus};

/// The ids that bound the worker's current conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Conversation {
    /// Its first message: a user line ccpool sent, or the first line of a replayed transcript.
    first: String,
    /// The last user line ccpool sent (the CLI checks a rewind against it).
    last_user: String,
}

impl Conversation {
    /// A conversation replayed from a transcript whose first line has this id.
    pub(super) fn replayed(first: String) -> Self {
        Conversation {
            last_user: first.clone(),
            first,
        }
    }
}

impl Worker {
    /// The stdin line for a user message, with a fresh id that the conversation remembers.
    pub(super) fn user_line(&mut self, content: Vec<ContentBlock>) -> StdinLine {
        let uuid = uuid::Uuid::new_v4().to_string();
        match &mut self.conversation {
            Some(conversation) => conversation.last_user = uuid.clone(),
            None => {
                self.conversation = Some(Conversation {
                    first: uuid.clone(),
                    last_user: uuid.clone(),
                })
            }
        }
        StdinLine::User { uuid, content }
    }

    /// Empties the conversation so the next request starts from nothing and sees no trace of
    /// this one: a rewind to its first message (a few milliseconds), or, when that cannot be
    /// done cleanly, a new CLI process in the same container. The container's files stay.
    pub async fn reset(&mut self, limit: std::time::Duration) -> Result<(), WorkerError> {
        if self.parked.is_some() {
            self.end_parked_turn(limit)
                .await
                .inspect_err(|e| self.mark_broken(format!("ending a parked turn: {e}")))?;
        }
        let Some(conversation) = self.conversation.take() else {
            return Ok(());
        };
        if self.model != self.launch_model() {
            return self.relaunch(None).await;
        }
        let rewind = ControlRequest::RewindConversation {
            target: conversation.first,
            last_seen: conversation.last_user,
        };
        let why = match self.control(rewind, limit).await {
            Ok(answer) if answer.get("rewound") == Some(&Value::Bool(true)) => return Ok(()),
            Ok(answer) => answer
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_string(),
            Err(WorkerError::Refused(e)) => e,
            Err(e) => {
                self.mark_broken(format!("reset: {e}"));
                return Err(e);
            }
        };
        tracing::debug!(worker = %self.id, why = %why, "rewind refused; starting the CLI again");
        self.relaunch(None).await
    }

    /// The model the CLI process starts with.
    pub(super) fn launch_model(&self) -> Option<String> {
        self.profile
            .model
            .clone()
            .or_else(|| self.settings.cli.model.clone())
    }

    /// Replaces the CLI process with a new one in the same container (resuming `resume` when
    /// set) and waits until it answers `initialize`.
    pub(super) async fn relaunch(&mut self, resume: Option<&str>) -> Result<(), WorkerError> {
        let settings = self.settings.clone();
        // Closing stdin makes the CLI exit; kill it if it does not.
        let _ = self.stdin.shutdown().await;
        let ended = tokio::time::timeout(settings.interrupt_grace, async {
            while self.events.next().await.is_some() {}
        })
        .await;
        if ended.is_err() {
            self.kill_process().await;
        }
        self.conversation = None;
        // A new process offers only what it lists from its start.
        self.offered.clear();
        let (stdin, events) = spawn_cli(
            self.runtime.as_ref(),
            &settings,
            &self.container_id,
            &self.profile,
            resume,
            &self.taps,
            self.token.as_ref(),
        )
        .await
        .inspect_err(|e| self.mark_broken(format!("relaunching the CLI: {e}")))?;
        self.stdin = stdin;
        self.events = events;
        self.model = self.launch_model();
        self.control(ControlRequest::Initialize, settings.start_timeout)
            .await?;
        Ok(())
    }
}

/// Watches the upstream events of a turn: a message that started and did not end with a
/// `message_delta` carrying its stop reason and a `message_stop` was cut off, whatever the CLI
/// concludes. On a cut stream the CLI closes the message itself (a `message_delta` without a
/// stop reason, or none, then a `message_stop`) and ends the turn with the partial text, as a
/// success or as an error of its own.
#[derive(Debug, Default)]
pub(super) struct StreamCheck {
    /// A message has started and not yet stopped.
    open: bool,
    /// The open message has had its `message_delta`.
    delta: bool,
    /// A message stopped without its `message_delta`.
    cut: bool,
}

impl StreamCheck {
    /// Notes an event; false for the closing events the CLI made up for a cut message, which
    /// must not reach the client as the end of an answer.
    pub(super) fn observe(&mut self, event: &StreamEvent) -> bool {
        match event {
            StreamEvent::MessageStart { .. } => {
                self.open = true;
                self.delta = false;
            }
            StreamEvent::MessageDelta { delta, .. } => {
                if delta.stop_reason.is_none() {
                    self.cut = true;
                    return false;
                }
                self.delta = true;
            }
            StreamEvent::MessageStop => {
                self.open = false;
                if !self.delta {
                    self.cut = true;
                    return false;
                }
            }
            _ => {}
        }
        true
    }

    /// The turn's outcome, made an upstream error if a message was cut off and the CLI did
    /// not report an upstream error of its own.
    pub(super) fn judge(&self, outcome: &mut TurnOutcome) {
        let reported = matches!(outcome.status, TurnStatus::UpstreamError { .. });
        if (self.open || self.cut) && !reported {
            outcome.status = TurnStatus::UpstreamError {
                status: None,
                kind: Some("api_error".into()),
                message: "the upstream's answer broke off before its end".into(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CliEvent;

    fn fixture(name: &str) -> Vec<CliEvent> {
        let path = format!("{}/tests/fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path)
            .expect(&path)
            .lines()
            .map(|l| CliEvent::parse(l).unwrap())
            .collect()
    }

    /// Runs the check over a recorded turn: the outcome of its first result.
    fn judged(name: &str) -> TurnStatus {
        let mut check = StreamCheck::default();
        for event in fixture(name) {
            match event {
                CliEvent::Stream(e) => {
                    check.observe(&e);
                }
                CliEvent::Result(r) => {
                    let mut outcome = r.outcome();
                    check.judge(&mut outcome);
                    return outcome.status;
                }
                _ => {}
            }
        }
        panic!("{name} has no result");
    }

    #[test]
    fn a_cut_stream_is_an_upstream_error_even_when_the_cli_calls_it_a_success() {
        for cut in ["upstream_stream_cut", "upstream_stream_cut_no_fallback"] {
            assert!(
                matches!(judged(cut), TurnStatus::UpstreamError { status: None, .. }),
                "{cut}: {:?}",
                judged(cut)
            );
        }
        for whole in ["text_partial", "thinking_partial", "tool_bash_partial"] {
            assert_eq!(judged(whole), TurnStatus::Completed, "{whole}");
        }
        // An upstream error the CLI reports keeps its own status.
        assert!(matches!(
            judged("upstream_error_429"),
            TurnStatus::UpstreamError {
                status: Some(429),
                ..
            }
        ));
    }
}
