//! Worker tokens: the only credential a worker holds. Each worker gets a random token of its
//! own when it starts; the relay accepts a request only with a live one (compared in constant
//! time), and a worker's token is revoked the moment the worker is dropped. While a worker
//! warms its new CLI up (`WorkerToken::warming`), the relay answers its requests itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use subtle::ConstantTimeEq;

use crate::credentials::Secret;

/// Every token starts with this, then the worker's id, a dot, and the random part.
const PREFIX: &str = "ccpool-w-";

/// The live worker tokens of one ccpool instance. Cheap to clone.
#[derive(Clone, Default)]
pub struct WorkerTokens {
    live: Arc<Mutex<HashMap<String, Live>>>,
}

/// A live token, by its worker's id.
struct Live {
    /// The random part of the token.
    random: Secret,
    /// The worker is warming its CLI up: its requests are answered by the relay itself.
    warming: bool,
}

/// A worker a presented token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub worker: String,
    /// Its CLI is warming up: the request must not reach the upstream.
    pub warming: bool,
}

impl std::fmt::Debug for WorkerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkerTokens({} live)", self.live_count())
    }
}

/// One worker's token. Dropping it revokes it.
pub struct WorkerToken {
    worker: String,
    token: Secret,
    tokens: WorkerTokens,
}

impl std::fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkerToken({}, ***)", self.worker)
    }
}

impl WorkerToken {
    /// The token itself: only for handing it to the worker's CLI.
    pub fn secret(&self) -> &Secret {
        &self.token
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Until the guard is dropped, the relay answers this worker's requests itself (a canned
    /// answer, see `warm_up`) and forwards none of them.
    pub fn warming(&self) -> Warming<'_> {
        self.tokens.set_warming(&self.worker, true);
        Warming(self)
    }
}

/// A worker warming its CLI up; see `WorkerToken::warming`.
pub struct Warming<'a>(&'a WorkerToken);

impl Drop for Warming<'_> {
    fn drop(&mut self) {
        self.0.tokens.set_warming(&self.0.worker, false);
    }
}

impl Drop for WorkerToken {
    fn drop(&mut self) {
        self.tokens.revoke(&self.worker);
    }
}

fn random_part() -> String {
    // Two v4 UUIDs: 244 bits from the operating system's random source.
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl WorkerTokens {
    /// A new token for `worker` (replacing any earlier one it had).
    pub fn issue(&self, worker: &str) -> WorkerToken {
        let random = random_part();
        self.lock().insert(
            worker.to_string(),
            Live {
                random: Secret::new(random.clone()),
                warming: false,
            },
        );
        WorkerToken {
            worker: worker.to_string(),
            token: Secret::new(format!("{PREFIX}{worker}.{random}")),
            tokens: self.clone(),
        }
    }

    /// The worker a presented token belongs to, if it is live. The random part is compared
    /// in constant time; the worker id is not secret.
    pub fn check(&self, presented: &str) -> Option<Checked> {
        let (worker, random) = presented.strip_prefix(PREFIX)?.split_once('.')?;
        let live = self.lock();
        let expected = live.get(worker)?;
        bool::from(expected.random.expose().as_bytes().ct_eq(random.as_bytes())).then(|| Checked {
            worker: worker.to_string(),
            warming: expected.warming,
        })
    }

    fn set_warming(&self, worker: &str, warming: bool) {
        if let Some(live) = self.lock().get_mut(worker) {
            live.warming = warming;
        }
    }

    /// Revokes a worker's token at once.
    pub fn revoke(&self, worker: &str) {
        self.lock().remove(worker);
    }

    pub fn live_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_until_its_worker_is_dropped() {
        let tokens = WorkerTokens::default();
        let a = tokens.issue("w1");
        let b = tokens.issue("w2");
        let shown_a = a.secret().expose().to_string();
        let worker = |shown: &str| tokens.check(shown).map(|c| c.worker);
        assert_eq!(worker(&shown_a).as_deref(), Some("w1"));
        assert_eq!(worker(b.secret().expose()).as_deref(), Some("w2"));
        assert_ne!(shown_a, b.secret().expose());
        // Another worker's id with this random part, a truncated token, garbage: refused.
        let forged = shown_a.replace("w1.", "w2.");
        assert_eq!(tokens.check(&forged), None);
        assert_eq!(tokens.check(&shown_a[..shown_a.len() - 1]), None);
        assert_eq!(tokens.check("sk-ant-anything"), None);
        assert_eq!(tokens.check(""), None);
        drop(a);
        assert_eq!(tokens.check(&shown_a), None, "revoked at once");
        assert_eq!(tokens.live_count(), 1);
        assert!(!format!("{b:?} {tokens:?}").contains(&b.secret().expose()[12..]));
    }

    #[test]
    fn a_token_is_warming_while_its_guard_lives() {
        let tokens = WorkerTokens::default();
        let (a, b) = (tokens.issue("w1"), tokens.issue("w2"));
        let warming = |t: &WorkerToken| tokens.check(t.secret().expose()).unwrap().warming;
        assert!(!warming(&a));
        {
            let _guard = a.warming();
            assert!(warming(&a));
            assert!(!warming(&b), "only its own worker's");
        }
        assert!(!warming(&a));
    }
}
