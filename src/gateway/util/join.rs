//! Two futures awaited together: a request's independent KV reads go out at once (on hosts
//! whose I/O is asynchronous), so the request waits for the slower one, not for both in turn.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

/// Both outputs, once both futures are done. Each is polled until it is ready, then no more.
pub async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut done_a, mut done_b) = (None, None);
    poll_fn(move |cx| {
        if done_a.is_none() {
            if let Poll::Ready(out) = a.as_mut().poll(cx) {
                done_a = Some(out);
            }
        }
        if done_b.is_none() {
            if let Poll::Ready(out) = b.as_mut().poll(cx) {
                done_b = Some(out);
            }
        }
        match (done_a.take(), done_b.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                (done_a, done_b) = (a, b);
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::task::{Context, Waker};

    use super::*;

    /// Pending `times` times, noting each poll in `log`, then `value`.
    async fn after(times: usize, name: &'static str, value: u32, log: &RefCell<Vec<&'static str>>) -> u32 {
        let mut left = times;
        poll_fn(|_| {
            log.borrow_mut().push(name);
            if left == 0 {
                Poll::Ready(())
            } else {
                left -= 1;
                Poll::Pending
            }
        })
        .await;
        value
    }

    #[test]
    fn both_start_at_once_and_a_finished_one_is_not_polled_again() {
        let log = RefCell::new(Vec::new());
        let mut joined = pin!(join(after(0, "a", 1, &log), after(2, "b", 2, &log)));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(joined.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(*log.borrow(), ["a", "b"], "the first poll starts both");
        assert_eq!(joined.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(joined.as_mut().poll(&mut cx), Poll::Ready((1, 2)));
        assert_eq!(*log.borrow(), ["a", "b", "b", "b"], "a, ready at once, is not polled again");
    }
}
