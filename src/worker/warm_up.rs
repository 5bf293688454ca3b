//! Warming a new CLI process up before it serves anyone. A new CLI is slow on its first few
//! turns (measured with 2.1.327: its first text delta comes 60–150 ms later on each of its first
//! three turns than on later ones, with the same request), so a new worker runs throwaway turns
//! whose upstream requests the relay answers itself (`WorkerToken::warming`), then rewinds them
//! as a reset does. Nothing of them reaches the upstream, and the next conversation's requests
//! are the same as a never-used CLI's (measured: byte for byte, but for the user's text).

use super::{Worker, WorkerError};
use crate::domain::ContentBlock;

/// The user text of a warm-up turn. Only the relay's canned answer ever sees it.
const TEXT: &str = "ccpool warm-up";

impl Worker {
    /// Runs `turns` throwaway turns, then rewinds them. Only behind the relay (it answers
    /// them); without one (unit tests on the fake runtime) nothing is done.
    pub(super) async fn warm_up(&mut self, turns: usize) -> Result<(), WorkerError> {
        if turns == 0 {
            return Ok(());
        }
        let Some(token) = self.token.take() else {
            return Ok(());
        };
        let warmed = async {
            let _warming = token.warming();
            for _ in 0..turns {
                self.warm_up_turn().await?;
            }
            Ok::<_, WorkerError>(())
        }
        .await;
        self.token = Some(token);
        warmed.inspect_err(|e| self.mark_broken(format!("warming up: {e}")))?;
        self.reset(self.settings.start_timeout).await
    }

    /// One throwaway turn: its user line, then the CLI's output up to its `result`, whatever
    /// that says (with a JSON schema the canned text is not the object it wants, and the CLI
    /// gives up on it after a second request).
    async fn warm_up_turn(&mut self) -> Result<(), WorkerError> {
        let line = self.user_line(vec![ContentBlock::Text(TEXT.into())]);
        self.write_line(&line).await?;
        self.skip_to_result(self.settings.start_timeout).await
    }
}
