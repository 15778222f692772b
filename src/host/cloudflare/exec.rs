//! A tiny single-threaded executor for the tasks the shim drives. A task is one request (or
//! one Durable Object call); every port call inside it is a command in the out buffer plus an
//! [`Op`] future the task awaits. The shim performs the command (concurrently with others) and
//! hands the outcome back with `egw_resume`, which stores it and polls the task again; the
//! task runs until it waits on another command or finishes ([`Cmd::Done`]).
//!
//! Tasks are independent: several requests run interleaved in one isolate, each with its own
//! op numbering and results. Only a task's own results can wake it, and every result is
//! followed by a poll of that task, so the root future is simply polled again (no wakers: the
//! core awaits port calls one at a time and uses no combinator that needs them).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::abi::{self, Cmd, Field};

/// A command's outcome: a code (meaning per command, see [`Cmd`]) and bytes (`body`: a fetch's
/// body read with its head).
pub struct Outcome {
    pub code: i32,
    pub data: Vec<u8>,
    pub body: Vec<u8>,
}

/// Per task: op numbering, results not yet taken, and the response stream's pump.
#[derive(Default)]
pub struct Shared {
    next_op: Cell<u32>,
    results: RefCell<Vec<(u32, Outcome)>>,
    pub pump: RefCell<Option<crate::gateway::pipeline::stream::StreamPump>>,
}

impl Shared {
    /// Emits a command whose outcome the task will await.
    pub fn call(self: &Rc<Self>, kind: Cmd, fields: &[Field]) -> Op {
        let id = self.next_op.get() + 1;
        self.next_op.set(id);
        abi::command(kind, id, fields);
        Op { shared: self.clone(), id }
    }
}

/// Emits a command nobody waits for.
pub fn notify(kind: Cmd, fields: &[Field]) {
    abi::command(kind, 0, fields);
}

/// The outcome of one command, once the shim reported it.
pub struct Op {
    shared: Rc<Shared>,
    pub id: u32,
}

impl Future for Op {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Outcome> {
        let mut results = self.shared.results.borrow_mut();
        match results.iter().position(|(id, _)| *id == self.id) {
            Some(i) => Poll::Ready(results.swap_remove(i).1),
            None => Poll::Pending,
        }
    }
}

struct Task {
    future: Option<Pin<Box<dyn Future<Output = ()>>>>,
    shared: Rc<Shared>,
}

thread_local! {
    static TASKS: RefCell<HashMap<u32, Task>> = RefCell::new(HashMap::new());
}

/// Starts task `id` (numbered by the shim) and runs it to its first wait.
pub fn spawn<F: Future<Output = ()> + 'static>(id: u32, make: impl FnOnce(Rc<Shared>) -> F) {
    let shared = Rc::new(Shared::default());
    let future = Box::pin(make(shared.clone()));
    TASKS.with(|t| t.borrow_mut().insert(id, Task { future: Some(future), shared }));
    poll(id);
}

/// Hands a command's outcome to task `id` and runs it to its next wait. An unknown task (it
/// finished or was cancelled meanwhile) ignores it.
pub fn resume(id: u32, op: u32, outcome: Outcome) {
    let Some(shared) = TASKS.with(|t| t.borrow().get(&id).map(|t| t.shared.clone())) else { return };
    shared.results.borrow_mut().push((op, outcome));
    poll(id);
}

/// The task's shared state (for the stream exports).
pub fn shared(id: u32) -> Option<Rc<Shared>> {
    TASKS.with(|t| t.borrow().get(&id).map(|t| t.shared.clone()))
}

/// Drops task `id` without finishing it (the shim gave up on it).
pub fn cancel(id: u32) {
    // Dropped outside the borrow: dropping may emit commands (origin bodies to release).
    let task = TASKS.with(|t| t.borrow_mut().remove(&id));
    drop(task);
}

fn poll(id: u32) {
    let Some(mut future) = TASKS.with(|t| t.borrow_mut().get_mut(&id).and_then(|t| t.future.take())) else { return };
    let done = future.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_ready();
    if done {
        drop(future);
        TASKS.with(|t| t.borrow_mut().remove(&id));
        notify(Cmd::Done, &[]);
    } else {
        TASKS.with(|t| {
            if let Some(task) = t.borrow_mut().get_mut(&id) {
                task.future = Some(future);
            }
        });
    }
}
