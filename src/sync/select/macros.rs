//! `select!`: the macro front end of `select`. It parses the arms (a
//! token muncher, `__select_parse`), declares one arm value per operation
//! on the caller's stack (`__select_build`: each recursion level declares
//! its own `__arm`, kept apart by hygiene and passed down as a token), runs
//! the engine once over all of them and dispatches on the arm that holds an
//! outcome. Nothing is allocated.

/// Waits on several channel operations and completes exactly one (Go's
/// `select`), parking the calling coroutine (or blocking the thread) until
/// one can.
///
/// Arms, in any order, separated by commas (optional after a block):
///
/// - `recv(rx) -> pattern => body`: a receive from an `mpsc` or `mpmc`
///   `Receiver` (or anything that dereferences to one: a reference, an
///   `Arc`, a `MutexGuard`); the pattern binds
///   `Result<T, RecvError>` (`Err` once the channel is empty and every
///   sender is gone).
/// - `send(tx, value) -> pattern => body`: a send of `value` on an `mpsc`
///   `Sender`/`SyncSender` or an `mpmc` `Sender`; the pattern binds
///   `Result<(), SendError<T>>` (`Err` with the value if every receiver
///   is gone). If another arm is chosen, `value` is dropped.
/// - at most one of `default => body` (runs if no arm is ready now),
///   `timeout(duration) => body` or `deadline(instant) => body`.
///
/// When several arms are ready, one is chosen at random, so none starves.
/// `rx`, `tx` and `value` are evaluated once, in order, before anything
/// waits; the bodies run after the select has finished, so a body may use
/// the channels again (or `break`/`continue`/`return`).
///
/// ```
/// use fibra::sync::mpmc;
/// use std::time::Duration;
///
/// let (work_tx, work_rx) = mpmc::sync_channel::<u32>(1);
/// let (quit_tx, quit_rx) = mpmc::channel::<()>();
/// let consumer = fibra::spawn(move || {
///     let mut sum = 0;
///     loop {
///         fibra::select! {
///             recv(work_rx) -> job => sum += job.unwrap(),
///             recv(quit_rx) -> _ => return sum,
///         }
///     }
/// });
/// for job in 1..=10 {
///     fibra::select! {
///         send(work_tx, job) -> sent => sent.unwrap(),
///         timeout(Duration::from_secs(10)) => panic!("the consumer is stuck"),
///     }
/// }
/// // The last job may still be buffered; wait until it is taken.
/// while !work_tx.is_empty() {
///     fibra::yield_now();
/// }
/// quit_tx.send(()).unwrap();
/// assert_eq!(consumer.join().unwrap(), 55);
/// ```
#[macro_export]
macro_rules! select {
    ($($tokens:tt)*) => {
        $crate::__select_parse!(@arms [] @otherwise [] @rest [$($tokens)*])
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __select_parse {
    // All parsed.
    (@arms [$($arms:tt)*] @otherwise [$($otherwise:tt)*] @rest []) => {
        $crate::__select_build!(@todo [$($arms)*] @built [] @otherwise [$($otherwise)*])
    };
    // A separating comma.
    (@arms $arms:tt @otherwise $otherwise:tt @rest [, $($rest:tt)*]) => {
        $crate::__select_parse!(@arms $arms @otherwise $otherwise @rest [$($rest)*])
    };
    // recv(rx) -> pat => body
    (@arms [$($arms:tt)*] @otherwise $otherwise:tt
     @rest [recv($rx:expr) -> $p:pat => $body:block $($rest:tt)*]) => {
        $crate::__select_parse!(@arms [$($arms)* (recv ($rx) ($p) ($body))]
            @otherwise $otherwise @rest [$($rest)*])
    };
    (@arms [$($arms:tt)*] @otherwise $otherwise:tt
     @rest [recv($rx:expr) -> $p:pat => $body:expr $(, $($rest:tt)*)?]) => {
        $crate::__select_parse!(@arms [$($arms)* (recv ($rx) ($p) ($body))]
            @otherwise $otherwise @rest [$($($rest)*)?])
    };
    // send(tx, value) -> pat => body
    (@arms [$($arms:tt)*] @otherwise $otherwise:tt
     @rest [send($tx:expr, $value:expr) -> $p:pat => $body:block $($rest:tt)*]) => {
        $crate::__select_parse!(@arms [$($arms)* (send ($tx, $value) ($p) ($body))]
            @otherwise $otherwise @rest [$($rest)*])
    };
    (@arms [$($arms:tt)*] @otherwise $otherwise:tt
     @rest [send($tx:expr, $value:expr) -> $p:pat => $body:expr $(, $($rest:tt)*)?]) => {
        $crate::__select_parse!(@arms [$($arms)* (send ($tx, $value) ($p) ($body))]
            @otherwise $otherwise @rest [$($($rest)*)?])
    };
    // default / timeout(d) / deadline(at), at most one.
    (@arms $arms:tt @otherwise [] @rest [default => $body:block $($rest:tt)*]) => {
        $crate::__select_parse!(@arms $arms
            @otherwise [($crate::sync::select::__private::Otherwise::Default) ($body)]
            @rest [$($rest)*])
    };
    (@arms $arms:tt @otherwise [] @rest [default => $body:expr $(, $($rest:tt)*)?]) => {
        $crate::__select_parse!(@arms $arms
            @otherwise [($crate::sync::select::__private::Otherwise::Default) ($body)]
            @rest [$($($rest)*)?])
    };
    (@arms $arms:tt @otherwise [] @rest [timeout($d:expr) => $body:block $($rest:tt)*]) => {
        $crate::__select_parse!(@arms $arms
            @otherwise [($crate::sync::select::__private::Otherwise::timeout($d)) ($body)]
            @rest [$($rest)*])
    };
    (@arms $arms:tt @otherwise [] @rest [timeout($d:expr) => $body:expr $(, $($rest:tt)*)?]) => {
        $crate::__select_parse!(@arms $arms
            @otherwise [($crate::sync::select::__private::Otherwise::timeout($d)) ($body)]
            @rest [$($($rest)*)?])
    };
    (@arms $arms:tt @otherwise [] @rest [deadline($at:expr) => $body:block $($rest:tt)*]) => {
        $crate::__select_parse!(@arms $arms
            @otherwise [($crate::sync::select::__private::Otherwise::Deadline(Some($at))) ($body)]
            @rest [$($rest)*])
    };
    (@arms $arms:tt @otherwise [] @rest [deadline($at:expr) => $body:expr $(, $($rest:tt)*)?]) => {
        $crate::__select_parse!(@arms $arms
            @otherwise [($crate::sync::select::__private::Otherwise::Deadline(Some($at))) ($body)]
            @rest [$($($rest)*)?])
    };
    (@arms $arms:tt @otherwise [$($otherwise:tt)+]
     @rest [$kind:ident $(($($args:tt)*))? => $($rest:tt)*]) => {
        ::std::compile_error!(
            "select!: at most one of `default`, `timeout(..)` and `deadline(..)`"
        )
    };
    (@arms $arms:tt @otherwise $otherwise:tt @rest [$($rest:tt)*]) => {
        ::std::compile_error!(
            "select!: expected `recv(rx) -> pattern => body`, \
             `send(tx, value) -> pattern => body`, `default => body`, \
             `timeout(duration) => body` or `deadline(instant) => body`"
        )
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __select_build {
    // Declare the next arm, then go on with it as a token.
    (@todo [(recv ($rx:expr) ($p:pat) ($body:tt)) $($todo:tt)*]
     @built [$($built:tt)*] @otherwise $otherwise:tt) => {{
        let mut __arm = {
            // A method call, so that `rx` may be behind any pointer (an
            // `Arc<Receiver>`, a guard).
            use $crate::sync::select::SelectRecv as _;
            (&$rx).__recv_arm()
        };
        $crate::__select_build!(@todo [$($todo)*]
            @built [$($built)* (__arm ($p) ($body))] @otherwise $otherwise)
    }};
    (@todo [(send ($tx:expr, $value:expr) ($p:pat) ($body:tt)) $($todo:tt)*]
     @built [$($built:tt)*] @otherwise $otherwise:tt) => {{
        let mut __arm = {
            use $crate::sync::select::SelectSend as _;
            (&$tx).__send_arm($value)
        };
        $crate::__select_build!(@todo [$($todo)*]
            @built [$($built)* (__arm ($p) ($body))] @otherwise $otherwise)
    }};
    // Every arm declared: run, then dispatch.
    (@todo [] @built [$(($arm:ident ($p:pat) ($body:tt)))*] @otherwise []) => {{
        let _ = $crate::sync::select::__private::run(
            &mut [$($arm.as_arm()),*],
            $crate::sync::select::__private::Otherwise::Block,
        );
        $(
            if let ::std::option::Option::Some(__outcome) = $arm.take_result() {
                match __outcome {
                    $p => $body,
                }
            } else
        )*
        {
            ::std::unreachable!("a select without default or timeout completes an arm")
        }
    }};
    (@todo [] @built [$(($arm:ident ($p:pat) ($body:tt)))*]
     @otherwise [($otherwise:expr) ($otherwise_body:tt)]) => {{
        let _ = $crate::sync::select::__private::run(&mut [$($arm.as_arm()),*], $otherwise);
        $(
            if let ::std::option::Option::Some(__outcome) = $arm.take_result() {
                match __outcome {
                    $p => $body,
                }
            } else
        )*
        {
            $otherwise_body
        }
    }};
}
