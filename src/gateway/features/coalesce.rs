//! Identical in-flight requests share one origin call (per isolate). While a deterministic
//! request (one with a cache key) is on its way to the origin, identical ones wait for its
//! answer instead of calling the origin again; each of them is answered and accounted as its
//! own request. The wait is bounded (the origin timeout); a leader that ends without an answer
//! to share (an error, a stream) lets its followers go to the origin themselves.
//!
//! Per isolate only: on Spin every request is a fresh instance, so nothing is ever in flight
//! there; on Cloudflare an isolate serves many concurrent requests of its location.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::gateway::features::cache::Entry;
use crate::gateway::ports::Clock;

/// How often a waiting request looks for the leader's answer.
const WAIT_STEP_MS: u64 = 5;

/// The requests in flight in this isolate, by cache key.
#[derive(Default)]
pub struct InFlight {
    flights: RefCell<HashMap<String, Rc<Flight>>>,
}

/// One origin call that others may wait for.
#[derive(Default)]
pub struct Flight {
    answer: RefCell<Option<Rc<Entry>>>,
    done: Cell<bool>,
}

/// What a request is to a flight: the one that calls the origin, or one that waits.
pub enum Joined {
    Lead(Leader),
    Follow(Rc<Flight>),
}

/// The request that calls the origin. Dropping it (answered or not) ends the flight.
pub struct Leader {
    key: String,
    flight: Rc<Flight>,
    set: Rc<InFlight>,
}

impl InFlight {
    /// Joins the flight for `key`, or starts one led by the caller.
    pub fn join(set: &Rc<InFlight>, key: &str) -> Joined {
        if let Some(flight) = set.flights.borrow().get(key) {
            return Joined::Follow(flight.clone());
        }
        let flight = Rc::new(Flight::default());
        set.flights.borrow_mut().insert(key.to_string(), flight.clone());
        Joined::Lead(Leader { key: key.to_string(), flight, set: set.clone() })
    }

    pub fn len(&self) -> usize {
        self.flights.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Leader {
    /// The answer to share with the followers (what the cache stores).
    pub fn publish(&self, entry: Rc<Entry>) {
        *self.flight.answer.borrow_mut() = Some(entry);
        self.flight.done.set(true);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.flight.done.set(true);
        let mut flights = self.set.flights.borrow_mut();
        if flights.get(&self.key).is_some_and(|f| Rc::ptr_eq(f, &self.flight)) {
            flights.remove(&self.key);
        }
    }
}

impl Flight {
    /// Waits (at most `max_ms`) for the leader: its answer, or `None` when it had none to
    /// share or took too long.
    pub async fn wait<C: Clock>(&self, clock: &C, max_ms: u64) -> Option<Rc<Entry>> {
        let deadline = clock.now_ms().saturating_add(max_ms);
        while !self.done.get() && clock.now_ms() < deadline {
            clock.sleep(WAIT_STEP_MS).await;
        }
        self.answer.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::types::Operation;

    fn entry() -> Entry {
        Entry {
            created_ms: 0,
            ttl_secs: 60,
            endpoint: "chat".into(),
            op: Operation::Chat,
            body: b"{}".to_vec(),
            usage: None,
        }
    }

    #[test]
    fn followers_get_the_leaders_answer_and_the_flight_ends_with_the_leader() {
        let host = MemoryHost::new(|_| Err(crate::gateway::ports::UpstreamError::Timeout));
        let set = Rc::new(InFlight::default());
        let Joined::Lead(leader) = InFlight::join(&set, "k") else { panic!("the first leads") };
        let Joined::Follow(flight) = InFlight::join(&set, "k") else { panic!("the second follows") };
        assert!(matches!(InFlight::join(&set, "other"), Joined::Lead(_)), "another key is another flight");
        leader.publish(Rc::new(entry()));
        assert_eq!(block_on(flight.wait(&host, 1_000)).unwrap().body, b"{}");
        drop(leader);
        assert!(set.is_empty());

        // A leader without an answer releases its followers at once.
        let Joined::Lead(leader) = InFlight::join(&set, "k") else { panic!() };
        let Joined::Follow(flight) = InFlight::join(&set, "k") else { panic!() };
        drop(leader);
        let before = host.now_ms.get();
        assert!(block_on(flight.wait(&host, 1_000)).is_none());
        assert_eq!(host.now_ms.get(), before, "no waiting for a flight that ended");
        // A leader that never answers: the follower gives up after its bound.
        let Joined::Lead(_leader) = InFlight::join(&set, "slow") else { panic!() };
        let Joined::Follow(flight) = InFlight::join(&set, "slow") else { panic!() };
        assert!(block_on(flight.wait(&host, 100)).is_none());
        assert!(host.now_ms.get() >= before + 100);
    }
}
