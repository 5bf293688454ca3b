//! `ResponseStore`: the responses kept for `GET /v1/responses/{id}` and `previous_response_id`,
//! each with the conversation it answered. Bounded in count and bytes, forgotten after a TTL,
//! oldest first, and per owner: a response is only ever found by the owner that created it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::OwnerKey;

use super::wire::{InputItem, Response};

/// How much the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_responses: usize,
    /// The total size of the kept responses and conversations, as JSON.
    pub max_bytes: usize,
    pub ttl: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_responses: 10_000,
            max_bytes: 256 * 1024 * 1024,
            ttl: Duration::from_secs(6 * 3600),
        }
    }
}

/// A kept response and the conversation items it answered (its input, after those of the
/// responses it continues).
#[derive(Debug, PartialEq)]
pub struct Stored {
    pub owner: OwnerKey,
    pub response: Response,
    pub context: Vec<InputItem>,
    at: Instant,
    bytes: usize,
}

/// The kept responses; clones share them.
#[derive(Clone, Debug, Default)]
pub struct ResponseStore {
    limits: StoreLimits,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Arc<Stored>>,
    /// Ids, oldest first (ids of deleted responses linger until they reach the front).
    order: VecDeque<String>,
    bytes: usize,
}

impl ResponseStore {
    pub fn new(limits: StoreLimits) -> Self {
        ResponseStore {
            limits,
            inner: Arc::default(),
        }
    }

    /// Keeps a response; the oldest ones go when a limit is reached. Returns false when the
    /// response alone is larger than the byte limit (it is then not kept).
    pub fn put(&self, owner: OwnerKey, response: Response, context: Vec<InputItem>) -> bool {
        self.put_at(owner, response, context, Instant::now())
    }

    fn put_at(
        &self,
        owner: OwnerKey,
        response: Response,
        context: Vec<InputItem>,
        now: Instant,
    ) -> bool {
        let bytes = size(&response) + context.iter().map(size).sum::<usize>();
        if bytes > self.limits.max_bytes {
            return false;
        }
        let id = response.id.clone();
        let stored = Arc::new(Stored {
            owner,
            response,
            context,
            at: now,
            bytes,
        });
        let mut inner = self.inner.lock().expect("the store lock is never poisoned");
        if let Some(old) = inner.by_id.insert(id.clone(), stored) {
            inner.bytes -= old.bytes;
        }
        inner.order.push_back(id);
        inner.bytes += bytes;
        while let Some(front) = inner.order.front().cloned() {
            let expired = inner
                .by_id
                .get(&front)
                .is_none_or(|s| now.duration_since(s.at) > self.limits.ttl);
            let over = inner.by_id.len() > self.limits.max_responses
                || inner.bytes > self.limits.max_bytes;
            if !expired && !over {
                break;
            }
            inner.order.pop_front();
            if let Some(old) = inner.by_id.remove(&front) {
                inner.bytes -= old.bytes;
            }
        }
        true
    }

    /// The owner's response `id`, if it is kept and not expired. Another owner's is `None`.
    pub fn get(&self, owner: &OwnerKey, id: &str) -> Option<Arc<Stored>> {
        self.get_at(owner, id, Instant::now())
    }

    fn get_at(&self, owner: &OwnerKey, id: &str, now: Instant) -> Option<Arc<Stored>> {
        let inner = self.inner.lock().expect("the store lock is never poisoned");
        inner
            .by_id
            .get(id)
            .filter(|s| &s.owner == owner && now.duration_since(s.at) <= self.limits.ttl)
            .cloned()
    }

    /// Forgets the owner's response `id`; false when there is none to forget.
    pub fn delete(&self, owner: &OwnerKey, id: &str) -> bool {
        let mut inner = self.inner.lock().expect("the store lock is never poisoned");
        let found = inner
            .by_id
            .get(id)
            .is_some_and(|s| &s.owner == owner && s.at.elapsed() <= self.limits.ttl);
        if found {
            if let Some(old) = inner.by_id.remove(id) {
                inner.bytes -= old.bytes;
            }
        }
        found
    }

    /// How many responses and bytes are kept.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("the store lock is never poisoned");
        (inner.by_id.len(), inner.bytes)
    }
}

fn size<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0)
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::responses::render::ResponseWriter;
    use crate::responses::translate::Echo;
    use crate::responses::wire::{ContentPart, MessageItem};

    fn response(id: &str) -> Response {
        ResponseWriter::new(id.into(), 1, &Echo::default()).into_response()
    }

    fn said(text: &str) -> Vec<InputItem> {
        vec![InputItem::Message(MessageItem {
            id: Some("msg_1".into()),
            role: "user".into(),
            content: vec![ContentPart::InputText { text: text.into() }],
            status: None,
        })]
    }

    fn store(max_responses: usize, max_bytes: usize, ttl: Duration) -> ResponseStore {
        ResponseStore::new(StoreLimits {
            max_responses,
            max_bytes,
            ttl,
        })
    }

    #[test]
    fn an_owner_finds_only_its_own_responses() {
        let s = ResponseStore::default();
        let (me, you) = (OwnerKey::new("me"), OwnerKey::new("you"));
        assert!(s.put(me.clone(), response("resp_a"), said("hi")));
        let kept = s.get(&me, "resp_a").expect("kept");
        assert_eq!(kept.response.id, "resp_a");
        assert_eq!(kept.context, said("hi"));
        assert!(
            s.get(&you, "resp_a").is_none(),
            "another owner never reads it"
        );
        assert!(!s.delete(&you, "resp_a"), "nor deletes it");
        assert!(s.get(&me, "resp_b").is_none());
        assert!(s.delete(&me, "resp_a"));
        assert!(s.get(&me, "resp_a").is_none());
        assert!(!s.delete(&me, "resp_a"));
        assert_eq!(s.usage(), (0, 0));
    }

    #[test]
    fn the_oldest_go_first_when_the_count_is_reached() {
        let s = store(2, usize::MAX, Duration::from_secs(60));
        let me = OwnerKey::new("me");
        for id in ["resp_1", "resp_2", "resp_3"] {
            assert!(s.put(me.clone(), response(id), said("x")));
        }
        assert!(s.get(&me, "resp_1").is_none());
        assert!(s.get(&me, "resp_2").is_some() && s.get(&me, "resp_3").is_some());
        assert_eq!(s.usage().0, 2);
    }

    #[test]
    fn the_byte_limit_holds_and_a_response_too_large_is_not_kept() {
        let me = OwnerKey::new("me");
        let one = size(&response("resp_1")) + size(&said("x")[0]);
        let s = store(100, one * 2, Duration::from_secs(60));
        for id in ["resp_1", "resp_2", "resp_3"] {
            assert!(s.put(me.clone(), response(id), said("x")));
        }
        let (count, bytes) = s.usage();
        assert_eq!(count, 2);
        assert!(bytes <= one * 2);
        assert!(s.get(&me, "resp_1").is_none());
        assert!(!s.put(me.clone(), response("resp_big"), said(&"y".repeat(one * 2))));
        assert!(s.get(&me, "resp_big").is_none());
        assert_eq!(s.usage().0, 2, "a refused response evicts nothing");
    }

    #[test]
    fn expired_responses_are_gone() {
        let s = store(100, usize::MAX, Duration::from_secs(60));
        let me = OwnerKey::new("me");
        let t0 = Instant::now();
        assert!(s.put_at(me.clone(), response("resp_1"), said("x"), t0));
        assert!(
            s.get_at(&me, "resp_1", t0 + Duration::from_secs(60))
                .is_some()
        );
        let later = t0 + Duration::from_secs(61);
        assert!(s.get_at(&me, "resp_1", later).is_none());
        assert!(s.put_at(me.clone(), response("resp_2"), said("x"), later));
        assert_eq!(s.usage().0, 1, "an insert sweeps the expired ones");
    }
}
