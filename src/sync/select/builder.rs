//! `Select`: the function-style front end of `select`, for arms known only
//! at run time (a vector of receivers, say). Each arm is the operation and
//! a closure that gets its outcome; `wait` runs the engine (`mod.rs`) and
//! then the chosen arm's closure. It allocates one box per arm and a vector
//! of them; the `select!` macro, for arms written out in the code, does
//! not allocate.

use std::time::{Duration, Instant};

use super::arms::{Arm, RecvArm, SelectRecv, SelectSend, SendArm};
use super::{ArmRef, Otherwise, run};
use crate::sync::mpsc::{RecvError, SendError};

/// A select built arm by arm (see the module docs of `fibra::sync::select`
/// for how it waits): receives and sends on `mpsc` and `mpmc` channels,
/// each with a closure that gets its outcome, and optionally a default or
/// a timeout. `wait` completes exactly one arm and returns what its closure
/// returned.
///
/// ```
/// use fibra::sync::{mpmc, select::Select};
/// use std::time::Duration;
///
/// let channels: Vec<_> = (0..4).map(|_| mpmc::channel::<usize>()).collect();
/// channels[2].0.send(42).unwrap();
/// let mut select = Select::new();
/// for (i, (_, rx)) in channels.iter().enumerate() {
///     select = select.recv(rx, move |msg| (i, msg.unwrap()));
/// }
/// let got = select
///     .timeout(Duration::from_secs(10), || panic!("nothing arrived"))
///     .wait();
/// assert_eq!(got, (2, 42));
/// ```
pub struct Select<'a, R> {
    arms: Vec<Box<dyn HandledArm<R> + 'a>>,
    otherwise: Option<(Otherwise, Box<dyn FnOnce() -> R + 'a>)>,
}

/// An arm with the closure its outcome goes to.
trait HandledArm<R> {
    fn arm(&mut self) -> ArmRef<'_>;
    /// Calls the closure with the outcome (the arm was chosen).
    fn finish(self: Box<Self>) -> R;
}

struct Recv<'a, T, F> {
    arm: RecvArm<'a, T>,
    handler: F,
}

struct Send<'a, T, F> {
    arm: SendArm<'a, T>,
    handler: F,
}

impl<T, R, F: FnOnce(Result<T, RecvError>) -> R> HandledArm<R> for Recv<'_, T, F> {
    fn arm(&mut self) -> ArmRef<'_> {
        ArmRef(&mut self.arm as &mut dyn Arm)
    }

    fn finish(mut self: Box<Self>) -> R {
        let outcome = self
            .arm
            .take_result()
            .expect("the chosen arm has its outcome");
        (self.handler)(outcome)
    }
}

impl<T, R, F: FnOnce(Result<(), SendError<T>>) -> R> HandledArm<R> for Send<'_, T, F> {
    fn arm(&mut self) -> ArmRef<'_> {
        ArmRef(&mut self.arm as &mut dyn Arm)
    }

    fn finish(mut self: Box<Self>) -> R {
        let outcome = self
            .arm
            .take_result()
            .expect("the chosen arm has its outcome");
        (self.handler)(outcome)
    }
}

// No `Default` impl: `default` names the default arm here.
#[allow(clippy::new_without_default)]
impl<'a, R> Select<'a, R> {
    /// A select with no arms yet.
    pub fn new() -> Select<'a, R> {
        Select {
            arms: Vec::new(),
            otherwise: None,
        }
    }

    /// Adds a receive from `rx`: `handler` gets the value, or `RecvError`
    /// if the channel is empty and every sender is gone.
    pub fn recv<C, F>(mut self, rx: &'a C, handler: F) -> Select<'a, R>
    where
        C: SelectRecv + ?Sized,
        C::Item: 'a,
        F: FnOnce(Result<C::Item, RecvError>) -> R + 'a,
    {
        self.arms.push(Box::new(Recv {
            arm: rx.__recv_arm(),
            handler,
        }));
        self
    }

    /// Adds a send of `value` on `tx`: `handler` gets `Ok(())` once a
    /// receiver or the buffer took it, or the value back in a `SendError`
    /// if every receiver is gone. If another arm is chosen, `value` is
    /// dropped.
    pub fn send<C, F>(mut self, tx: &'a C, value: C::Item, handler: F) -> Select<'a, R>
    where
        C: SelectSend + ?Sized,
        C::Item: 'a,
        F: FnOnce(Result<(), SendError<C::Item>>) -> R + 'a,
    {
        self.arms.push(Box::new(Send {
            arm: tx.__send_arm(value),
            handler,
        }));
        self
    }

    /// Runs `handler` instead of waiting if no arm is ready (Go's
    /// `default`). Replaces a timeout or default given before.
    pub fn default(mut self, handler: impl FnOnce() -> R + 'a) -> Select<'a, R> {
        self.otherwise = Some((Otherwise::Default, Box::new(handler)));
        self
    }

    /// Runs `handler` if no arm completes within `timeout`. Replaces a
    /// timeout or default given before.
    pub fn timeout(mut self, timeout: Duration, handler: impl FnOnce() -> R + 'a) -> Select<'a, R> {
        self.otherwise = Some((Otherwise::timeout(timeout), Box::new(handler)));
        self
    }

    /// Runs `handler` if no arm completes by `deadline`. Replaces a timeout
    /// or default given before.
    pub fn deadline(
        mut self,
        deadline: Instant,
        handler: impl FnOnce() -> R + 'a,
    ) -> Select<'a, R> {
        self.otherwise = Some((Otherwise::Deadline(Some(deadline)), Box::new(handler)));
        self
    }

    /// Completes exactly one arm — parking the calling coroutine (or
    /// blocking the thread) until one can, unless a default or timeout was
    /// given — and returns what its closure returned. With no arms and no
    /// default or timeout it waits forever, as Go's empty `select {}`
    /// (a coroutine can still be cancelled there).
    pub fn wait(mut self) -> R {
        let otherwise = self.otherwise.as_ref().map_or(Otherwise::Block, |o| o.0);
        let chosen = {
            let mut arms: Vec<ArmRef<'_>> = self.arms.iter_mut().map(|arm| arm.arm()).collect();
            run(&mut arms, otherwise)
        };
        match chosen {
            Some(i) => self.arms.swap_remove(i).finish(),
            None => {
                let (_, handler) = self
                    .otherwise
                    .take()
                    .expect("only a default or a deadline ends a select without an arm");
                handler()
            }
        }
    }
}

impl<R> std::fmt::Debug for Select<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("arms", &self.arms.len())
            .field("otherwise", &self.otherwise.as_ref().map(|o| o.0))
            .finish()
    }
}
