//! Standard output and standard error that never panic. `println!` and `eprintln!` panic when
//! the stream is a closed pipe (`dae evaluate … | head -3`, `dae train … 2>&1 | head -1`) or a
//! full disk. Here the first failure on stdout stops all further output there and the command
//! carries on, as its real results are files; at the end, a closed pipe passes quietly (the
//! reader had what it wanted) and any other failure is an error. A message that cannot go to
//! stderr is dropped: there is nowhere else to say it.

use std::io::{ErrorKind, Write};
use std::sync::Mutex;

/// The first failure to write, if any.
static FAILED: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Writes `args` (and a newline when `newline`) to standard output, unless an earlier write
/// failed.
pub fn write(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    if failed.is_some() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = r {
        *failed = Some(e);
    }
}

/// Flushes standard output; the error of the first failed write, unless the reader had closed
/// the pipe.
pub fn finish() -> Option<std::io::Error> {
    let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    if failed.is_none() {
        if let Err(e) = std::io::stdout().lock().flush() {
            *failed = Some(e);
        }
    }
    failed.take().filter(|e| e.kind() != ErrorKind::BrokenPipe)
}

/// `println!` to standard output, without the panic.
macro_rules! outln {
    () => { $crate::stdout::write(format_args!(""), true) };
    ($($t:tt)*) => { $crate::stdout::write(format_args!($($t)*), true) };
}

/// `print!` to standard output, without the panic.
macro_rules! out {
    ($($t:tt)*) => { $crate::stdout::write(format_args!($($t)*), false) };
}

/// Writes `args` (and a newline when `newline`) to standard error, if it can.
pub fn write_err(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| if newline { err.write_all(b"\n") } else { Ok(()) });
}

/// `eprintln!` without the panic.
macro_rules! errln {
    () => { $crate::stdout::write_err(format_args!(""), true) };
    ($($t:tt)*) => { $crate::stdout::write_err(format_args!($($t)*), true) };
}

/// `eprint!` without the panic.
macro_rules! err {
    ($($t:tt)*) => { $crate::stdout::write_err(format_args!($($t)*), false) };
}
