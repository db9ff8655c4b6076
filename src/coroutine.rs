//! Raw stackful coroutines: `Coroutine::new`, `resume`, `Yielder::suspend`.
//!
//! This layer knows nothing of schedulers. A `Coroutine` owns a guarded stack
//! (`src/stack.rs`) and runs a closure on it; `resume(input)` switches onto
//! that stack until the closure calls `Yielder::suspend(value)` or returns.
//!
//! # Messages across a switch
//!
//! One machine word crosses each switch (see `arch/`): a pointer to a
//! `MaybeUninit<T>` on the sender's stack, which the receiver moves out with
//! `ptr::read` while the sender is suspended (the sender never touches it
//! again). Nothing is written back into the sender's frame, and for a
//! zero-sized `T` (the common `()`) no memory is touched at all; writing an
//! `Option` back instead cost ≈ 1.5 ns per round trip here. Which `T` the
//! pointer means follows from the protocol:
//!
//! | direction          | word points to                 | how the receiver knows             |
//! |--------------------|--------------------------------|------------------------------------|
//! | resume → coroutine | `MaybeUninit<Input>`           | always; 0 means "unwind now"       |
//! | suspend → resumer  | `MaybeUninit<Yield>`           | the coroutine's new sp is non-null |
//! | finish → resumer   | `MaybeUninit<Finish<Return>>`  | the coroutine's new sp is null     |
//!
//! # Panics and drops
//!
//! The closure runs inside `catch_unwind` in the entry function, so a panic
//! never unwinds through the assembly: it is carried out as `Finish::Panic`
//! and resumed on the caller's side of `resume`. Dropping a coroutine that is
//! suspended part-way resumes it with "unwind now": its `suspend` call raises
//! a private `ForcedUnwind` payload (with `resume_unwind`, so no panic message
//! is printed), every destructor on its stack runs, and the entry function
//! catches the payload and finishes. A coroutine dropped before it started
//! only drops its closure.
//!
//! # Which types cross which boundaries
//!
//! `Coroutine` is neither `Send` nor `Sync`. Once started, its stack may hold
//! `!Send` values (an `Rc`, a `MutexGuard`) across a suspend, and the compiler
//! may have cached the address of a thread-local across the suspend
//! (rust-lang/rust#33368); moving it to another thread would break both.
//! `Yielder` is neither `Send` nor `Sync` and only lives inside the closure.
//! The closure must be `'static`, so it cannot borrow from the resumer's
//! stack, nor smuggle out the `&Yielder` it is given.
//!
//! The floating-point control state is shared by all coroutines of a thread
//! (see `arch/x86_64.rs`).
//!
//! # Sanitizers
//!
//! Built with `--cfg fibra_asan` (and `-Zsanitizer=address`,
//! `scripts/asan.sh`), every switch is announced to AddressSanitizer
//! (`src/asan.rs`): `switch` enters the coroutine's stack, the entry
//! function and `suspend` learn the resumer's stack from each arrival and
//! give it back on the way out, and a finishing coroutine leaves its stack
//! for good. Without the cfg none of this is compiled.

use std::any::Any;
use std::io;
use std::marker::PhantomData;
use std::mem::{MaybeUninit, align_of, size_of};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::arch;
use crate::stack::{self, DEFAULT_STACK_SIZE, Stack};

/// What `Coroutine::resume` hands back.
#[derive(Debug, PartialEq, Eq)]
pub enum CoroutineResult<Yield, Return> {
    /// The coroutine called `Yielder::suspend` with this value.
    Yield(Yield),
    /// The coroutine's closure returned this value; it is now finished.
    Return(Return),
}

impl<Y, R> CoroutineResult<Y, R> {
    /// The yielded value, if any.
    pub fn as_yield(&self) -> Option<&Y> {
        match self {
            CoroutineResult::Yield(y) => Some(y),
            CoroutineResult::Return(_) => None,
        }
    }

    /// The returned value, if any.
    pub fn as_return(&self) -> Option<&R> {
        match self {
            CoroutineResult::Yield(_) => None,
            CoroutineResult::Return(r) => Some(r),
        }
    }
}

/// How a coroutine's closure ended.
enum Finish<R> {
    Return(R),
    Panic(Box<dyn Any + Send>),
    Unwound,
}

/// The payload of the unwind that dropping a suspended coroutine starts.
/// Code that catches panics inside a coroutine should let it through
/// (`resume_unwind` it) so that the drop can finish.
struct ForcedUnwind;

/// What a `Yielder` says about its types: it takes `Yield`s and gives
/// `Input`s, and the raw pointer makes it `!Send + !Sync`.
type YielderMarker<Input, Yield> = (fn(Yield) -> Input, *const ());

/// As `YielderMarker`, for a `Coroutine`.
type CoroutineMarker<Input, Yield, Return> = (fn(Input) -> (Yield, Return), *const ());

/// The suspending side of a coroutine, passed to its closure.
pub struct Yielder<Input, Yield> {
    parent_slot: *mut *mut u8,
    /// The resumer's stack, for AddressSanitizer (`src/asan.rs`).
    #[cfg(fibra_asan)]
    parent_stack: std::cell::Cell<crate::asan::Bounds>,
    _marker: PhantomData<YielderMarker<Input, Yield>>,
}

impl<Input, Yield> Yielder<Input, Yield> {
    /// Switches back to whoever resumed this coroutine, handing it `value`;
    /// returns the input of the next `resume`.
    ///
    /// If the coroutine is dropped while suspended here, this call does not
    /// return: it unwinds the coroutine's stack so that destructors run.
    #[inline(always)]
    pub fn suspend(&self, value: Yield) -> Input {
        let out = MaybeUninit::new(value);
        #[cfg(fibra_asan)]
        let fake_stack = crate::asan::enter(self.parent_stack.get());
        // SAFETY: we run on this coroutine's stack and its resumer stored its
        // rsp in `parent_slot` before switching to us. The resumer moves
        // `out` away before it resumes us.
        let message = unsafe { arch::switch_out(out.as_ptr() as usize, self.parent_slot) };
        #[cfg(fibra_asan)]
        self.parent_stack.set(crate::asan::arrived(fake_stack));
        if message == 0 {
            resume_unwind(Box::new(ForcedUnwind));
        }
        // SAFETY: a non-zero message points to the resumer's initialised
        // `MaybeUninit<Input>`, read exactly once, here.
        unsafe { ptr::read(message as *const Input) }
    }
}

/// How many copies of a coroutine's closure its stack must have room for.
/// An optimised build keeps the closure where it was written and moves it
/// once to call it (two copies); an unoptimised build moves it through
/// several frames on the way (measured: four to five).
pub(crate) const STACK_COPIES: usize = if cfg!(debug_assertions) { 6 } else { 2 };

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh coroutine id, unique in the process (ids start at 1).
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A stackful coroutine taking `Input` at each resume, yielding `Yield`s and
/// finally returning `Return`.
///
/// ```
/// use fibra::coroutine::{Coroutine, CoroutineResult};
///
/// let mut counter = Coroutine::new(|yielder, start: u32| {
///     let mut n = start;
///     loop {
///         let step: u32 = yielder.suspend(n);
///         if step == 0 {
///             return "done";
///         }
///         n += step;
///     }
/// });
/// assert_eq!(counter.resume(10), CoroutineResult::Yield(10));
/// assert_eq!(counter.resume(5), CoroutineResult::Yield(15));
/// assert_eq!(counter.resume(0), CoroutineResult::Return("done"));
/// ```
pub struct Coroutine<Input, Yield, Return> {
    /// Saved stack pointer: `initial_sp` before the start, null once
    /// finished. Encoding the life cycle here keeps `resume` free of any
    /// other bookkeeping.
    sp: *mut u8,
    initial_sp: *mut u8,
    /// The word in the stack header where `resume` saves its own rsp.
    parent_slot: *mut *mut u8,
    /// The closure's place on the stack and how to drop it unstarted.
    closure: *mut u8,
    drop_closure: unsafe fn(*mut u8),
    stack: Option<Stack>,
    id: u64,
    name: Option<Arc<str>>,
    _marker: PhantomData<CoroutineMarker<Input, Yield, Return>>,
}

impl<Input, Yield, Return> Coroutine<Input, Yield, Return> {
    /// Creates a coroutine on a default-sized stack (from this thread's pool).
    ///
    /// # Panics
    /// If no stack can be mapped; the message names the limit that was hit.
    /// `try_new` and `Builder::build` return that error instead.
    pub fn new<F>(f: F) -> Self
    where
        F: FnOnce(&Yielder<Input, Yield>, Input) -> Return + 'static,
    {
        match Self::try_new(f) {
            Ok(co) => co,
            Err(e) => panic!("fibra: cannot create a coroutine: {e}"),
        }
    }

    /// Creates a coroutine on a default-sized stack, or says why it cannot.
    pub fn try_new<F>(f: F) -> io::Result<Self>
    where
        F: FnOnce(&Yielder<Input, Yield>, Input) -> Return + 'static,
    {
        let stack = stack::acquire(DEFAULT_STACK_SIZE)?;
        stack::ensure_signal_stack();
        Self::with_stack(stack, next_id(), None, f).map_err(|(_, e)| e)
    }

    /// Builds a coroutine on `stack`. Gives the stack back with the error if
    /// the closure does not fit on it. The calling thread must have an
    /// alternate signal stack (`stack::ensure_signal_stack`; a worker makes
    /// sure of it once, when it starts), or an overflow is a plain SIGSEGV.
    pub(crate) fn with_stack<F>(
        stack: Stack,
        id: u64,
        name: Option<Arc<str>>,
        f: F,
    ) -> Result<Self, (Stack, io::Error)>
    where
        F: FnOnce(&Yielder<Input, Yield>, Input) -> Return + 'static,
    {
        let top = stack.usable_top() as usize;
        let align = align_of::<F>().max(arch::STACK_ALIGN);
        // The closure sits at the top of the stack and `entry` moves it
        // into its own frame to call it (STACK_COPIES), with at least 4 KiB
        // below for the coroutine's frames.
        let room = stack.size().saturating_sub(4096 + arch::INIT_FRAME_BYTES);
        let need = size_of::<F>()
            .saturating_mul(STACK_COPIES)
            .saturating_add(align);
        if need > room {
            let message = format!(
                "the coroutine's closure takes {} bytes and is moved through its stack, which \
                 needs about {} bytes: too many for a {}-byte stack",
                size_of::<F>(),
                need.saturating_add(4096 + arch::INIT_FRAME_BYTES),
                stack.size()
            );
            return Err((stack, io::Error::new(io::ErrorKind::InvalidInput, message)));
        }
        let closure = ((top - size_of::<F>()) & !(align - 1)) as *mut u8;
        // SAFETY: `closure` is aligned for F and lies inside the stack, below
        // the header; the initial frame goes below it, still inside the stack
        // (checked against `room` above).
        let sp = unsafe {
            closure.cast::<F>().write(f);
            arch::init_stack(closure, entry::<F, Input, Yield, Return>, closure)
        };
        stack.set_owner(id, name.as_deref());
        #[cfg(fibra_asan)]
        crate::asan::unpoison(stack.bottom(), stack.size());
        Ok(Coroutine {
            sp,
            initial_sp: sp,
            parent_slot: stack.header().parent_sp.get(),
            closure,
            drop_closure: drop_in_place_as::<F>,
            stack: Some(stack),
            id,
            name,
            _marker: PhantomData,
        })
    }

    /// Starts a `Builder` for a named coroutine or one with another stack size.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Runs the coroutine until it suspends or finishes.
    ///
    /// The first call passes `input` as the closure's second argument; later
    /// calls make it the return value of the pending `Yielder::suspend`.
    ///
    /// # Panics
    /// If the closure panics, the panic continues here, on the caller's side,
    /// and the coroutine is finished. Resuming a finished coroutine panics.
    #[inline(always)]
    pub fn resume(&mut self, input: Input) -> CoroutineResult<Yield, Return> {
        assert!(
            !self.sp.is_null(),
            "fibra: resumed a coroutine that has already finished"
        );
        let message = MaybeUninit::new(input);
        // SAFETY: the coroutine is not finished, so `sp` is a saved frame;
        // it moves `message` out before it switches back.
        let (reply, new_sp) = unsafe { self.switch(message.as_ptr() as usize) };
        if new_sp.is_null() {
            // SAFETY: a null sp marks a final switch.
            return CoroutineResult::Return(unsafe { self.finished(reply) });
        }
        // SAFETY: a suspend passes a pointer to its initialised Yield.
        CoroutineResult::Yield(unsafe { ptr::read(reply as *const Yield) })
    }

    /// The end of `resume` for a coroutine that has just finished: kept out
    /// of line so that the yield path stays straight. It returns the bare
    /// `Return` (not a `CoroutineResult`), so that the compiler need not keep
    /// a path on which the resume loop goes on after it: that path made it
    /// reload `sp` and the parent slot from memory every round trip
    /// (≈ 1.15× corosensei instead of ≈ 1.0×).
    ///
    /// # Safety
    /// `reply` must be the message of a final switch.
    #[cold]
    #[inline(never)]
    unsafe fn finished(&mut self, reply: usize) -> Return {
        // SAFETY: upheld by the caller.
        match unsafe { self.take_finish(reply) } {
            Finish::Return(value) => value,
            Finish::Panic(payload) => resume_unwind(payload),
            Finish::Unwound => unreachable!("a coroutine unwound without being dropped"),
        }
    }

    /// Switches into the coroutine with `message`; records its new state.
    ///
    /// # Safety
    /// The coroutine must not be finished.
    #[inline(always)]
    unsafe fn switch(&mut self, message: usize) -> (usize, *mut u8) {
        #[cfg(fibra_asan)]
        let fake_stack = {
            let stack = self
                .stack
                .as_ref()
                .expect("an unfinished coroutine has its stack");
            crate::asan::enter(crate::asan::Bounds::new(stack.bottom(), stack.size()))
        };
        // SAFETY: upheld by the caller; `parent_slot` is this stack's header.
        let (reply, new_sp) = unsafe { arch::switch_into(message, self.sp, self.parent_slot) };
        #[cfg(fibra_asan)]
        crate::asan::arrived(fake_stack);
        self.sp = new_sp;
        (reply, new_sp)
    }

    /// Takes the `Finish` a finished coroutine sent and retires its stack.
    ///
    /// # Safety
    /// `reply` must be the message of a final switch.
    unsafe fn take_finish(&mut self, reply: usize) -> Finish<Return> {
        // SAFETY: upheld by the caller; the finished stack is still mapped.
        let finish = unsafe { ptr::read(reply as *const Finish<Return>) };
        self.release_stack();
        finish
    }

    fn release_stack(&mut self) {
        if let Some(stack) = self.stack.take() {
            stack.clear_owner();
            stack::release(stack);
        }
    }

    /// Asks the CPU to start loading what the next `resume` reads first —
    /// the saved frame at the stack pointer and the parent slot in the stack
    /// header — so that a scheduler can overlap those cache (and TLB) misses
    /// with other work. A parked coroutine's stack is usually cold: with
    /// thousands of connections, that first touch was the largest user-space
    /// cost of serving a request. Only a hint; never faults.
    #[inline]
    pub(crate) fn prefetch(&self) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetch instructions never fault, whatever the address;
        // `sp` (null once finished) and `parent_slot` are only hints here.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(self.sp as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(self.parent_slot as *const i8);
        }
    }

    /// Whether the closure has been entered.
    pub fn started(&self) -> bool {
        self.sp != self.initial_sp
    }

    /// Whether the closure has returned or panicked.
    pub fn done(&self) -> bool {
        self.sp.is_null()
    }

    /// The coroutine's process-unique id (as shown in overflow reports).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name given with `Builder::name`, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Usable bytes of the coroutine's stack (0 once finished).
    pub fn stack_size(&self) -> usize {
        self.stack.as_ref().map_or(0, Stack::size)
    }

    /// The lowest usable address of the coroutine's stack (None once
    /// finished): what a dump's capture gives back below (runtime/inspect.rs).
    pub(crate) fn stack_bottom(&self) -> Option<usize> {
        self.stack.as_ref().map(|stack| stack.bottom() as usize)
    }
}

impl<Input, Yield, Return> Drop for Coroutine<Input, Yield, Return> {
    fn drop(&mut self) {
        if self.done() {
            return;
        }
        if !self.started() {
            {
                // SAFETY: the closure was written in `with_stack` and never read.
                unsafe { (self.drop_closure)(self.closure) };
                self.release_stack();
            }
            return;
        }
        {
            loop {
                // Message 0 makes the pending `suspend` unwind. If the
                // coroutine catches the unwind and suspends again, repeat.
                // SAFETY: the coroutine is suspended, not finished.
                let (reply, new_sp) = unsafe { self.switch(0) };
                if new_sp.is_null() {
                    // SAFETY: a null sp marks a final switch.
                    drop(unsafe { self.take_finish(reply) });
                    break;
                }
                // SAFETY: a suspend passes a pointer to its initialised Yield.
                drop(unsafe { ptr::read(reply as *const Yield) });
            }
        }
    }
}

impl<Input, Yield, Return> std::fmt::Debug for Coroutine<Input, Yield, Return> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coroutine")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("started", &self.started())
            .field("done", &self.done())
            .finish()
    }
}

/// # Safety
/// `ptr` must point to a live, never-read `F`.
unsafe fn drop_in_place_as<F>(ptr: *mut u8) {
    // SAFETY: upheld by the caller.
    unsafe { ptr::drop_in_place(ptr.cast::<F>()) }
}

/// The first Rust frame on every coroutine stack (called by the trampoline).
///
/// # Safety
/// Called only by `fibra_coroutine_trampoline` with the words `with_stack`
/// and the first `resume` arranged.
unsafe extern "C" fn entry<F, Input, Yield, Return>(
    message: usize,
    closure: *mut u8,
    parent_slot: *mut *mut u8,
) -> !
where
    F: FnOnce(&Yielder<Input, Yield>, Input) -> Return,
{
    #[cfg(fibra_asan)]
    let parent_stack = crate::asan::arrived_first();
    // SAFETY: the first resume passes a pointer to its initialised Input,
    // read once, here.
    let input = unsafe { ptr::read(message as *const Input) };
    let yielder = Yielder {
        parent_slot,
        #[cfg(fibra_asan)]
        parent_stack: std::cell::Cell::new(parent_stack),
        _marker: PhantomData,
    };
    let call = || {
        // SAFETY: the closure was written by `with_stack` and is read once,
        // here. Read inside the catch_unwind closure, which captures only
        // pointers, so it is copied once (into this frame), not once more
        // per wrapper.
        let f = unsafe { ptr::read(closure.cast::<F>()) };
        f(&yielder, input)
    };
    let finish = match catch_unwind(AssertUnwindSafe(call)) {
        Ok(value) => Finish::Return(value),
        Err(payload) if payload.is::<ForcedUnwind>() => Finish::Unwound,
        Err(payload) => Finish::Panic(payload),
    };
    let out = MaybeUninit::new(finish);
    #[cfg(fibra_asan)]
    crate::asan::leave_for_good(yielder.parent_stack.get());
    // SAFETY: `out` stays on this stack, which the resumer keeps mapped until
    // it has moved the value out; nothing runs here afterwards.
    unsafe { arch::switch_out_final(out.as_ptr() as usize, parent_slot) }
}

/// Configures a coroutine's name and stack size. (The scheduler's
/// `fibra::Builder` carries one of these.)
#[derive(Debug, Default, Clone)]
pub struct Builder {
    pub(crate) name: Option<String>,
    pub(crate) stack_size: Option<usize>,
}

impl Builder {
    /// A builder with the defaults: no name, `DEFAULT_STACK_SIZE`.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the coroutine (shown in overflow reports and `Coroutine::name`).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Usable stack bytes (rounded up to whole pages, at least
    /// `stack::MIN_STACK_SIZE`).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Creates the coroutine, or says why its stack cannot be had.
    pub fn build<Input, Yield, Return, F>(self, f: F) -> io::Result<Coroutine<Input, Yield, Return>>
    where
        F: FnOnce(&Yielder<Input, Yield>, Input) -> Return + 'static,
    {
        let size = self.stack_size.unwrap_or(DEFAULT_STACK_SIZE);
        let stack = stack::acquire(size)?;
        stack::ensure_signal_stack();
        let name = self.name.map(Arc::from);
        Coroutine::with_stack(stack, next_id(), name, f).map_err(|(stack, e)| {
            stack::release(stack);
            e
        })
    }
}
