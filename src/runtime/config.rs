//! The default runtime's settings from the environment, read once, when the
//! first `fibra::spawn` (or other call that needs it) starts the runtime —
//! as Go reads `GOMAXPROCS`:
//!
//! | variable | meaning | accepted |
//! |---|---|---|
//! | `FIBRA_WORKERS` | worker threads | a whole number, 1 to 4096 |
//! | `FIBRA_STACK_SIZE` | default usable stack bytes | bytes, or with `K`/`KiB`, `M`/`MiB`, `G`/`GiB` (powers of 1024), e.g. `512K` |
//! | `FIBRA_STALL_THRESHOLD` | the watchdog's threshold | `off`, or a duration: `250ms`, `2s`, or a bare number of milliseconds |
//! | `FIBRA_DUMP_SIGNAL` | print a dump on this signal | `USR1`, `SIGUSR2`, `QUIT`, ... or a number |
//!
//! An empty value counts as unset. A value that cannot be used is an
//! error naming the variable, the value and what was expected; the
//! default runtime then does not start, and the call that needed it
//! panics with that message (there is no caller to return it to).

use std::io;
use std::time::Duration;

use super::{Runtime, RuntimeBuilder};
use crate::stack::{MAX_STACK_SIZE, MIN_STACK_SIZE};

/// The most workers `FIBRA_WORKERS` may ask for (a guard against typos).
const MAX_WORKERS: usize = 4096;

/// The builder of the default runtime: the defaults, changed by the
/// environment variables that are set.
pub(super) fn builder_from_env() -> io::Result<RuntimeBuilder> {
    builder_from(|name| std::env::var(name).ok())
}

/// As `builder_from_env`, reading variables through `var`.
fn builder_from(var: impl Fn(&str) -> Option<String>) -> io::Result<RuntimeBuilder> {
    let mut builder = Runtime::builder();
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if let Some(value) = set("FIBRA_WORKERS") {
        builder = builder
            .workers(parse_workers(&value).map_err(|why| bad("FIBRA_WORKERS", &value, &why))?);
    }
    if let Some(value) = set("FIBRA_STACK_SIZE") {
        builder = builder
            .stack_size(parse_bytes(&value).map_err(|why| bad("FIBRA_STACK_SIZE", &value, &why))?);
    }
    if let Some(value) = set("FIBRA_STALL_THRESHOLD") {
        builder = builder.stall_threshold(
            parse_threshold(&value).map_err(|why| bad("FIBRA_STALL_THRESHOLD", &value, &why))?,
        );
    }
    if let Some(value) = set("FIBRA_DUMP_SIGNAL") {
        builder = builder.dump_signal(
            parse_signal(&value).map_err(|why| bad("FIBRA_DUMP_SIGNAL", &value, &why))?,
        );
    }
    Ok(builder)
}

fn bad(name: &str, value: &str, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{name}={value:?} cannot be used: {why}"),
    )
}

fn parse_workers(value: &str) -> Result<usize, String> {
    let expected = format!("expected a whole number of worker threads from 1 to {MAX_WORKERS}");
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(expected),
    }
}

fn parse_bytes(value: &str) -> Result<usize, String> {
    let expected = format!(
        "expected a stack size in bytes from {MIN_STACK_SIZE} to {MAX_STACK_SIZE}, optionally \
         with a K, KiB, M, MiB, G or GiB suffix (powers of 1024), e.g. 512K"
    );
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let scale: usize = match unit.trim() {
        "" => 1,
        "K" | "k" | "KiB" | "KB" | "kB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        _ => return Err(expected),
    };
    match digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(bytes) if (MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&bytes) => Ok(bytes),
        _ => Err(expected),
    }
}

fn parse_threshold(value: &str) -> Result<Option<Duration>, String> {
    let expected =
        "expected `off` or a duration above zero such as 250ms, 2s or 100 (milliseconds)";
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let (number, scale_ms) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1000)
    } else {
        (value, 1)
    };
    match number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale_ms))
    {
        Some(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
        _ => Err(expected.into()),
    }
}

fn parse_signal(value: &str) -> Result<i32, String> {
    let name = value.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let signal = match name {
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "QUIT" => libc::SIGQUIT,
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "TERM" => libc::SIGTERM,
        "PWR" => libc::SIGPWR,
        "WINCH" => libc::SIGWINCH,
        number => number.parse::<i32>().map_err(|_| {
            "expected a signal name such as USR1, SIGUSR2 or QUIT, or a signal number".to_string()
        })?,
    };
    Ok(signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("512K"), Ok(512 << 10));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert!(parse_bytes("1000").is_err(), "below the smallest stack");
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("99999999999G").is_err());
    }

    #[test]
    fn thresholds_take_units_or_off() {
        assert_eq!(parse_threshold("off"), Ok(None));
        assert_eq!(
            parse_threshold("250ms"),
            Ok(Some(Duration::from_millis(250)))
        );
        assert_eq!(parse_threshold("2s"), Ok(Some(Duration::from_secs(2))));
        assert_eq!(parse_threshold("40"), Ok(Some(Duration::from_millis(40))));
        assert!(parse_threshold("0").is_err());
        assert!(parse_threshold("soon").is_err());
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("USR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("sigusr2"), Ok(libc::SIGUSR2));
        assert_eq!(parse_signal("3"), Ok(3));
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn an_empty_variable_counts_as_unset_and_a_bad_one_is_named() {
        let empty = builder_from(|_| Some(String::new())).expect("empty values are unset");
        assert_eq!(empty.workers, None);
        let error = builder_from(|name| (name == "FIBRA_WORKERS").then(|| "zero".to_string()))
            .expect_err("a bad worker count");
        let text = error.to_string();
        assert!(text.contains("FIBRA_WORKERS=\"zero\""), "{text}");
        assert!(text.contains("from 1 to 4096"), "{text}");
    }
}
