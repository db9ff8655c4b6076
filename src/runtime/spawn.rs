//! Spawning: `Builder`, `spawn`, and the body every task runs.
//!
//! # A task's life, and where each part runs
//!
//! `spawn` allocates only the task record, which ends with its body (the
//! user's closure and the cell its `JoinHandle` reads: one allocation, see
//! task.rs); no stack. The stack is bound when a worker first runs the task
//! (`Worker::start_task`), from that worker's pool, so a fan-out of a
//! million coroutines needs only as many
//! stacks as are started and alive, and stealing moves no stack. Then the
//! body runs on the task's own stack:
//!
//! 1. the prologue records the yielder (parking is defined from here on);
//! 2. the user's closure runs inside `catch_unwind` — or, if the task was
//!    cancelled before it started, the closure is dropped there instead;
//! 3. the epilogue delivers the outcome to the `JoinHandle`. When the handle
//!    was dropped (a detached coroutine), the result is dropped right here.
//!
//! All three run as the coroutine with its yielder set: a destructor in the
//! epilogue may park, sleep or call `fibra::blocking::unblock` like any
//! other code of the task. A panic that escapes the epilogue (a detached
//! result whose `Drop` panics, or `Cancelled` raised by a park in such a
//! `Drop`) is caught there, reported on stderr (a `Cancelled` silently), and
//! the worker carries on: std aborts the process on a thread result that
//! panics on drop; a runtime of many coroutines should not lose all of them
//! to one destructor. Nothing of the task runs after its body returns but the
//! switch back to the worker, so no panic can unwind a worker loop.
//!
//! Two paths drop a body without running it, on whatever thread holds it:
//! a runtime shutting down before the task started, and a stack that
//! cannot be mapped when the task would start. There, a capture's `Drop`
//! runs as on a plain thread (a `fibra::sleep` blocks that thread); a panic
//! in it is caught and reported.
//!
//! # Borrowing closures
//!
//! `spawn_unchecked` erases the closure's lifetime, for `Runtime::block_on`
//! and scoped spawns. Its callers wait for the result without a
//! cancellation point (`JoinCell::wait(true)`), and the body drops the
//! closure before it delivers to the result cell, on every path (run,
//! cancelled, never run, no stack): so the waiter cannot return while a
//! borrow of the closure is still in use.
//!
//! # How much of the stack a closure needs
//!
//! The closure lives in the heap until the task starts; the body then moves
//! it onto the coroutine's stack to call it, and its result passes through
//! the stack on its way to the `JoinHandle`. An optimised build makes one
//! copy of the closure there; an unoptimised one moves it through every
//! frame on the way (measured: five copies of a 60 KiB capture). So
//! `check_fits` counts `crate::coroutine::STACK_COPIES` copies of closure
//! and result, plus 4 KiB for frames, and refuses at spawn a closure that
//! cannot fit rather than let it overflow when it starts.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::io;
use std::mem::{ManuallyDrop, align_of, size_of};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::coroutine::{STACK_COPIES, next_id};
use crate::stack;

use super::join::{JoinCell, JoinHandle, deliver};
use super::task::{BodyVTable, Cancelled, Task, TaskRef};
use super::{Runtime, Shared, current_shared, placement};

/// Configures a coroutine before spawning it (mirrors `std::thread::Builder`).
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder with the defaults: no name, the runtime's stack size.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the coroutine (shown by `Coroutine::name`, panic messages and
    /// stack-overflow reports). Takes a `String`, as `std::thread::Builder`
    /// does, so `.name("w".into())` compiles unchanged.
    pub fn name(mut self, name: String) -> Builder {
        self.name = Some(name);
        self
    }

    /// Usable stack bytes (rounded up to whole pages). Only touched pages
    /// cost memory.
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns on the calling coroutine's runtime, or the default runtime.
    ///
    /// Fails if the stack size is absurd or the closure cannot fit on the
    /// stack (`InvalidInput`). The stack itself is mapped when the
    /// coroutine first runs; if the kernel refuses it then, `join` returns
    /// `Err` with a `std::io::Error` payload that names the limit hit.
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // SAFETY: F and T are 'static, so no borrow can end too early.
        unsafe { spawn_unchecked(current_shared(), self, f) }
    }

    /// Spawns on `runtime`.
    pub fn spawn_on<F, T>(self, runtime: &Runtime, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // SAFETY: F and T are 'static, so no borrow can end too early.
        unsafe { spawn_unchecked(Arc::clone(&runtime.shared), self, f) }
    }
}

/// Spawns a coroutine on the calling coroutine's runtime, or on the default
/// runtime (started on first use with one worker per CPU).
///
/// # Panics
/// If the closure cannot fit on a default-sized stack; `Builder::spawn`
/// returns that error instead.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new()
        .spawn(f)
        .unwrap_or_else(|e| panic!("fibra: cannot spawn a coroutine: {e}"))
}

/// Spawns `f` on `shared`, whose closure and result may borrow from the
/// caller.
///
/// # Safety
/// Every borrow held by `f` or by its result must outlive the coroutine:
/// the caller must not return or unwind before the handle's cell is DONE,
/// i.e. it waits with `JoinCell::wait(true)` (no cancellation point) on
/// every path, or `F` and `T` are `'static`. The body drops `f` before it
/// reports (module docs), so DONE means `f` is gone.
pub(crate) unsafe fn spawn_unchecked<'a, F, T>(
    shared: Arc<Shared>,
    builder: Builder,
    f: F,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'a,
    T: Send + 'a,
{
    // The runtime's size was checked when it was built.
    let stack_size = match builder.stack_size {
        None => shared.stack_size,
        Some(requested) => stack::checked_usable_size(requested)?,
    };
    check_fits(
        size_of::<F>() + size_of::<T>(),
        align_of::<F>().max(align_of::<T>()),
        stack_size,
    )?;
    if shared.shutdown.load(Ordering::Acquire) {
        // A forked child's copy of a parent's runtime is shut down too, but
        // refuses with an explanation (fork.rs).
        super::fork::refuse_if_inherited(&shared)?;
    }
    let id = next_id();
    let name: Option<Arc<str>> = builder.name.map(Arc::from);
    // One allocation holds the task record, the closure and the cell its
    // result goes to (task.rs, "One allocation per task"). Written in
    // place, field by field: a `Box::new` of a record this size builds it
    // on the stack and copies it (a `memcpy` call, ~35 instructions), and
    // an unoptimised build copies a large closure once more per wrapper it
    // passes through, on the spawning thread's stack.
    let slot = Box::into_raw(Box::<TaskCell<F, T>>::new_uninit()).cast::<TaskCell<F, T>>();
    // SAFETY: `slot` is the new allocation, uninitialised; every field is
    // written once here. `UnsafeCell` and `ManuallyDrop` are
    // `repr(transparent)`: `f` is written as a plain F. From here on the
    // allocation is freed only by the last `TaskRef` (`TaskCell::destroy`,
    // made for this very type).
    let (task, cell) = unsafe {
        let this = slot.cast::<Task>();
        let header = Task::new(this, TaskCell::<F, T>::VTABLE, id, name, shared, stack_size);
        (&raw mut (*slot).task).write(header);
        let packet = &raw mut (*slot).packet;
        (&raw mut (*packet).cell).write(JoinCell::new());
        (&raw mut (*packet).f_taken).write(Cell::new(false));
        (&raw mut (*packet).f).cast::<F>().write(f);
        // The header's count of one is this reference.
        let task = TaskRef::from_raw(this);
        (task, NonNull::new_unchecked(&raw mut (*packet).cell))
    };
    let handle = JoinHandle {
        task: task.clone(),
        cell,
    };
    if task.shared.shutdown.load(Ordering::Acquire) {
        // Never runs: delivers `Cancelled`. Not an error, so that a
        // destructor unwinding during shutdown may spawn.
        drop_unrun(&task, None);
        return Ok(handle);
    }
    placement::submit_fresh(&handle.task.shared, task);
    Ok(handle)
}

/// Refuses a closure that cannot fit on a stack of `stack_size` usable
/// bytes: `STACK_COPIES` copies of the closure and its result, plus
/// alignment and 4 KiB for frames (module docs). Inlined: for a given
/// closure, `need` is a constant and the check one comparison.
#[inline(always)]
fn check_fits(both: usize, align: usize, stack_size: usize) -> io::Result<()> {
    let need = both
        .saturating_mul(STACK_COPIES)
        .saturating_add(align)
        .saturating_add(4096);
    if need > stack_size {
        return Err(does_not_fit(both, need, stack_size));
    }
    Ok(())
}

#[cold]
fn does_not_fit(both: usize, need: usize, stack_size: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "the coroutine's closure and result take {both} bytes and are moved through its \
             stack, which needs about {need} bytes: too many for a {stack_size}-byte stack \
             (give it a larger one with Builder::stack_size, or box the large data)"
        ),
    )
}

/// A task's whole allocation: the header every task pointer points to,
/// then the body. `repr(C)`: the header is at offset 0, so a pointer to it
/// is a pointer to the cell.
#[repr(C)]
struct TaskCell<F, T> {
    task: Task,
    packet: Packet<F, T>,
}

impl<F, T> TaskCell<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    /// The body's operations for this closure and result type.
    const VTABLE: &'static BodyVTable = &BodyVTable {
        run: Self::run,
        abandon: Self::abandon,
        destroy: Self::destroy,
    };

    /// # Safety
    /// `task` is the `this` of a live `TaskCell<F, T>`.
    unsafe fn parts<'c>(task: *const Task) -> (&'c Task, &'c Packet<F, T>) {
        // SAFETY: the header is at offset 0 of the cell (`repr(C)`), and
        // `this` reaches the whole cell.
        unsafe {
            let cell = task.cast::<Self>();
            (&(*cell).task, &(*cell).packet)
        }
    }

    /// # Safety
    /// `task` is the `this` of a live `TaskCell<F, T>`; the caller took
    /// its body.
    unsafe fn run(task: *const Task) {
        // SAFETY: the caller's promise.
        let (task, packet) = unsafe { Self::parts(task) };
        packet.run(task)
    }

    /// # Safety
    /// As `run`.
    unsafe fn abandon(task: *const Task, cancelled: bool, error: Option<io::Error>) {
        // SAFETY: the caller's promise.
        let (_, packet) = unsafe { Self::parts(task) };
        packet.abandon(cancelled, error)
    }

    /// Drops the cell and frees it; a body never run nor given up on (the
    /// backstop: every queue that drops tasks gives them up first) is
    /// given up here first, so its `JoinHandle` still hears `Cancelled`.
    ///
    /// # Safety
    /// `task` heads a `TaskCell<F, T>` allocated by `spawn_unchecked`, and
    /// nothing refers to it any more (its last `TaskRef` is going).
    unsafe fn destroy(task: NonNull<Task>) {
        // SAFETY: the caller's promise; the cell was a `Box`.
        let mut cell = unsafe { Box::from_raw(task.as_ptr().cast::<Self>()) };
        drop_unrun(&cell.task, None);
        // The epilogue frees the coroutine-locals; a map still here means
        // the body never reached it, and its values need not be `Send`:
        // they are not dropped on this thread.
        if let Some(locals) = cell.task.locals.get_mut().take() {
            std::mem::forget(locals);
        }
        drop(cell);
    }
}

/// Gives up on a body that will never run (runtime shut down, or no
/// stack), on the calling thread, unless it was taken already (run, or
/// given up on): the closure is dropped first, then `Cancelled` — or
/// `error` — is delivered. Never unwinds: a panic in a capture's `Drop` is
/// reported. True if this call gave the body up. Only the holder of the
/// body may call it (its home worker, or before the first run the owner of
/// its queue entry).
/// Inlined to the check: every task's last reference calls it.
#[inline(always)]
pub(crate) fn drop_unrun(task: &Task, error: Option<io::Error>) -> bool {
    if !task.take_body() {
        return false;
    }
    give_up_body(task, error);
    true
}

#[cold]
#[inline(never)]
fn give_up_body(task: &Task, error: Option<io::Error>) {
    // SAFETY: `drop_unrun` took the body just before, and gives it up once.
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { task.abandon_body(error) }));
    if let Err(payload) = dropped {
        report_escaped_panic(task, &*payload, "while it was dropped unrun");
    }
}

/// A task's closure and its result cell: the body after its header, which
/// the `JoinHandle` keeps alive to read the cell.
struct Packet<F, T> {
    cell: JoinCell<T>,
    f: UnsafeCell<ManuallyDrop<F>>,
    /// Whether `f` has been taken (run or dropped).
    f_taken: Cell<bool>,
}

impl<F, T> Packet<F, T> {
    /// Takes the closure out to run it.
    ///
    /// # Safety
    /// Only the holder of the task's body may call it (see `Task`'s `Sync`, task.rs),
    /// once, and not after `drop_f`.
    unsafe fn take_f(&self) -> F {
        debug_assert!(!self.f_taken.get(), "a task's closure is taken once");
        self.f_taken.set(true);
        // SAFETY: not taken before (the caller's promise), and taken once.
        // Returned as a bare F, not an Option: an unoptimised build copies a
        // value once per wrapper, and the closure may be large.
        unsafe { ManuallyDrop::take(&mut *self.f.get()) }
    }

    /// Drops the closure if it has not been taken.
    ///
    /// # Safety
    /// Only the holder of the task's body may call it (see `Task`'s `Sync`, task.rs).
    unsafe fn drop_f(&self) {
        if !self.f_taken.replace(true) {
            // SAFETY: not taken (the flag), dropped once.
            unsafe { ManuallyDrop::drop(&mut *self.f.get()) };
        }
    }
}

impl<F, T> Drop for Packet<F, T> {
    fn drop(&mut self) {
        // Dropped before `cell` (fields drop after this): a closure never
        // taken goes first.
        if !self.f_taken.replace(true) {
            // SAFETY: not taken (the flag), dropped once; we are the last
            // owner.
            unsafe { ManuallyDrop::drop(self.f.get_mut()) };
        }
    }
}

/// What a task runs: the user's closure and the cell its result goes to,
/// after the task's header. Only the holder of the body
/// (`Task::take_body`) calls these, once.
impl<F, T> Packet<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    /// Runs the closure (or drops it, if the task was cancelled before it
    /// started) and delivers the outcome. Runs on the task's stack with its
    /// yielder set; never unwinds.
    fn run(&self, task: &Task) {
        let packet = self;
        let outcome = if task.cancelled.load(Ordering::Acquire) {
            // Cancelled before it started: drop the closure here, as the
            // coroutine, so that its captures' destructors may park.
            // SAFETY: we hold the task's body.
            let dropped = catch_unwind(AssertUnwindSafe(move || unsafe { packet.drop_f() }));
            if let Err(payload) = dropped {
                report_escaped_panic(task, &*payload, "while it was dropped unrun");
            }
            Err(Box::new(Cancelled) as Box<dyn Any + Send>)
        } else {
            catch_unwind(AssertUnwindSafe(move || {
                // SAFETY: we hold the task's body. Taken inside the
                // catch_unwind closure, which captures only a pointer: the
                // closure is copied onto this stack once, not once more per
                // wrapper.
                let f = unsafe { packet.take_f() };
                f()
            }))
        };
        // The epilogue. Coroutine-locals go first, as the coroutine (their
        // destructors may park), before the result is delivered — as std
        // drops thread-locals before `join` returns.
        end_of_locals(task, false);
        // Delivering drops the result when the handle is gone (a detached
        // coroutine; join.rs), and its destructor may park or panic.
        let delivered = catch_unwind(AssertUnwindSafe(move || deliver(&packet.cell, outcome)));
        if let Err(payload) = delivered {
            report_escaped_panic(task, &*payload, "while its result was dropped");
        }
        // Locals that the result's destructor created, then the map.
        end_of_locals(task, true);
    }

    /// The task will never run: drops the closure, then delivers `Err`
    /// with `error` as the payload (`Cancelled` if none is given or the
    /// task was cancelled). Runs on whatever thread gives up on the task,
    /// outside any coroutine.
    fn abandon(&self, cancelled: bool, error: Option<io::Error>) {
        // SAFETY: we hold the task's body.
        unsafe { self.drop_f() };
        let payload: Box<dyn Any + Send> = match error {
            Some(error) if !cancelled => Box::new(error),
            _ => Box::new(Cancelled),
        };
        deliver(&self.cell, Err(payload));
    }
}

/// Drops the task's coroutine-locals (src/sync/local.rs), and with `free`
/// their map; a destructor's panic is reported. One load when the task
/// used none.
#[inline(always)]
fn end_of_locals(task: &Task, free: bool) {
    // SAFETY: the task's own field, read by the task in its epilogue.
    if unsafe { (*task.locals.get()).is_some() } {
        drop_locals(task, free);
    }
}

#[inline(never)]
fn drop_locals(task: &Task, free: bool) {
    let locals = &task.locals;
    // SAFETY: the coroutine that owns the map, in its epilogue.
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
        crate::sync::local::end_of_coroutine(locals, free)
    }));
    if let Err(payload) = dropped {
        report_escaped_panic(task, &*payload, "while its coroutine-locals were dropped");
    }
}

/// Reports a panic caught after a task's closure had finished. A
/// `Cancelled` is the runtime's own unwind and needs no report.
fn report_escaped_panic(task: &Task, payload: &(dyn Any + Send), when: &str) {
    if payload.is::<Cancelled>() {
        return;
    }
    let who = match &task.name {
        Some(name) => format!("coroutine #{} '{name}'", task.id),
        None => format!("coroutine #{}", task.id),
    };
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("Box<dyn Any>");
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "fibra: {who} panicked {when} ({message}); the panic was caught and the worker carries on"
    );
}
