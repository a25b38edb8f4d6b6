//! The runtime's side of the kernel: live output, interrupts and cell provenance.
//!
//! The kernel calls [`attach`] once in the process that runs a session's cells. From then on:
//! - whatever cells write to stdout and stderr reaches the notebook as it is written, partial
//!   lines and `\r` included: a forwarding thread turns it into `RECIPE_IO` lines ([`Io`])
//!   on the pipe the kernel reads;
//! - [`display`](crate::show::display) sends a value mid-cell, a [`DisplayHandle`] replaces
//!   it in place, [`clear_output`] clears the cell's output;
//! - SIGINT (the kernel's interrupt) asks every running trainer to stop at its next step;
//! - a panic is reported once, as an [`Io::PanicReport`] (message and where), not as text on
//!   stderr, and a cell whose `?` returned an error is reported as [`Io::Failed`] with that
//!   error's text, so the kernel can answer both as failed cells;
//! - runs record the cell that made them: the kernel names a file in `RECIPE_CELL_FILE`
//!   and rewrites it before each cell ([`current_cell`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::show::Show;
use crate::{Error, Result};

/// The prefix of every line that carries an [`Io`] event to the kernel.
pub const IO_MARKER: &str = "RECIPE_IO ";
/// evcxr's own protocol lines start with this; they pass through untouched.
const EVCXR_MARKER: &str = "EVCXR_";
/// The environment variable naming the kernel's current-cell file.
pub const CELL_FILE_ENV: &str = "RECIPE_CELL_FILE";
/// The environment variable carrying the user's `RUST_BACKTRACE` into the process that runs
/// the cells (evcxr sets `RUST_BACKTRACE=1` there whatever the user asked for).
pub const BACKTRACE_ENV: &str = "RECIPE_BACKTRACE";
/// evcxr's line saying that a `?` in the cell returned early, printed right after the error.
const USER_ERROR_MARKER: &str = "EVCXR_ERROR_OCCURRED";
/// How long stderr text is held back before it is sent: evcxr prints a failed cell's error on
/// stderr just before its [`USER_ERROR_MARKER`], and that text belongs in the error reply,
/// not in the cell's stream as well. Short enough that no person sees the delay.
const STDERR_HOLD: Duration = Duration::from_millis(50);

/// One thing a cell shows, as the kernel receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Io {
    /// Text written to `stdout` or `stderr`, exactly as written.
    Stream { name: String, text: String },
    /// A rich value: MIME type -> content. `update` replaces the output with `display_id`.
    Display {
        data: BTreeMap<String, String>,
        display_id: Option<String>,
        update: bool,
    },
    /// Clear the cell's output (`wait`: when the next output arrives).
    Clear { wait: bool },
    /// The cell panicked (evcxr itself reports a panicking cell as a success).
    Panic,
    /// What the runtime's panic hook saw, sent before [`Io::Panic`]: the panic's message,
    /// where it was raised (`file:line:column`), and the backtrace when the user set
    /// `RUST_BACKTRACE`.
    PanicReport {
        message: String,
        location: Option<String>,
        backtrace: Option<String>,
    },
    /// A `?` in the cell returned this error (its `Display` text, as evcxr printed it).
    Failed { message: String },
}

impl Io {
    /// The line that carries this event, without its newline.
    pub fn line(&self) -> String {
        // Serialising plain strings and maps cannot fail.
        format!(
            "{IO_MARKER}{}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }

    /// The event a line carries, if it is one.
    pub fn parse(line: &str) -> Option<Io> {
        serde_json::from_str(line.strip_prefix(IO_MARKER)?).ok()
    }
}

static ATTACHED: AtomicBool = AtomicBool::new(false);

/// Whether [`attach`] has run in this process.
pub fn attached() -> bool {
    ATTACHED.load(Ordering::SeqCst)
}

/// Route stdout/stderr through the forwarder and make SIGINT a stop request. The kernel
/// calls this once per session; later calls do nothing.
pub fn attach() -> Result<()> {
    if ATTACHED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    crate::process::prepare();
    std::panic::set_hook(Box::new(report_panic));
    let _ = std::io::stdout().flush();
    // SAFETY: plain POSIX calls on descriptors this function owns; the handler only does an
    // atomic add, which is async-signal-safe.
    unsafe {
        let handler: extern "C" fn(libc::c_int) = on_interrupt;
        if libc::signal(libc::SIGINT, handler as libc::sighandler_t) == libc::SIG_ERR {
            return Err(os_error("install the interrupt handler"));
        }
        let kernel = libc::dup(1);
        if kernel < 0 {
            return Err(os_error("duplicate stdout"));
        }
        let out = pipe()?;
        let err = pipe()?;
        if libc::dup2(out[1], 1) < 0 || libc::dup2(err[1], 2) < 0 {
            return Err(os_error("redirect stdout and stderr"));
        }
        libc::close(out[1]);
        libc::close(err[1]);
        let forwarder = Forwarder {
            kernel: File::from_raw_fd(kernel),
            stdout: out[0],
            stderr: err[0],
            held: String::new(),
            held_since: None,
        };
        std::thread::Builder::new()
            .name("recipe-output".into())
            .spawn(move || forwarder.run())
            .map_err(|e| Error::Invalid(format!("start the output thread: {e}")))?;
    }
    Ok(())
}

extern "C" fn on_interrupt(_signal: libc::c_int) {
    crate::train::request_stop();
}

/// The panic hook of a kernel session: one report to the kernel instead of Rust's text on
/// stderr (which, with the `RUST_BACKTRACE=1` evcxr sets, was a backtrace of evcxr's frames).
fn report_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
    let wanted = std::env::var(BACKTRACE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    let backtrace = wanted.then(|| {
        // From the panic's entry into the runtime of std on: the frames before it are this
        // hook's and std's way to it.
        let text = std::backtrace::Backtrace::force_capture().to_string();
        let start = text
            .find("rust_begin_unwind")
            .map_or(0, |at| text[..at].rfind('\n').map_or(0, |line| line + 1));
        text[start..].to_string()
    });
    emit(&Io::PanicReport {
        message,
        location,
        backtrace,
    });
}

fn os_error(what: &str) -> Error {
    Error::Invalid(format!(
        "could not {what}: {}",
        std::io::Error::last_os_error()
    ))
}

/// A pipe whose read end is non-blocking (the forwarder polls it).
unsafe fn pipe() -> Result<[libc::c_int; 2]> {
    let mut fds = [0; 2];
    if libc::pipe(fds.as_mut_ptr()) != 0 {
        return Err(os_error("create a pipe"));
    }
    let flags = libc::fcntl(fds[0], libc::F_GETFL);
    libc::fcntl(fds[0], libc::F_SETFL, flags | libc::O_NONBLOCK);
    Ok(fds)
}

/// Moves what cells write on to the kernel, in order.
struct Forwarder {
    /// The pipe evcxr reads: evcxr's protocol lines and our `RECIPE_IO` lines.
    kernel: File,
    stdout: libc::c_int,
    stderr: libc::c_int,
    /// stderr text read but not sent yet (see [`STDERR_HOLD`]), and since when.
    held: String,
    held_since: Option<Instant>,
}

/// Text read but not yet sent: an unfinished UTF-8 character or a possible marker start.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Inside evcxr's `EVCXR_BEGIN_CONTENT` ... `EVCXR_END_CONTENT` block.
    in_content: bool,
}

impl Forwarder {
    fn run(mut self) {
        let (mut out, mut err) = (Pending::default(), Pending::default());
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.stdout,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.stderr,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let timeout = match self.held_since {
                // Rounded up: a timeout of 0 would spin until the hold ends.
                Some(since) => STDERR_HOLD
                    .saturating_sub(since.elapsed())
                    .as_micros()
                    .div_ceil(1000) as i32,
                None => -1,
            };
            // SAFETY: two valid pollfd entries.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if ready < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            // stderr first: a panic message is written before evcxr's panic line.
            let err_open = self.drain_stderr(&mut err);
            let out_open = self.drain_stdout(&mut out, &mut err);
            if self
                .held_since
                .is_some_and(|since| since.elapsed() >= STDERR_HOLD)
            {
                self.send_held();
            }
            if !(err_open || out_open) {
                self.send_held();
                return;
            }
        }
    }

    /// Read everything available on stderr and hold it; false once the pipe is closed.
    fn drain_stderr(&mut self, err: &mut Pending) -> bool {
        let open = read_available(self.stderr, &mut err.bytes);
        let upto = err.bytes.len();
        let text = take_utf8(&mut err.bytes, upto);
        if !text.is_empty() {
            self.held.push_str(&text);
            self.held_since.get_or_insert_with(Instant::now);
        }
        open
    }

    /// Send the held stderr text.
    fn send_held(&mut self) {
        self.held_since = None;
        if !self.held.is_empty() {
            let io = Io::Stream {
                name: "stderr".into(),
                text: std::mem::take(&mut self.held),
            };
            self.write_line(&io.line());
        }
    }

    fn drain_stdout(&mut self, out: &mut Pending, err: &mut Pending) -> bool {
        let open = read_available(self.stdout, &mut out.bytes);
        while let Some(end) = out.bytes.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = out.bytes.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.line(&line, out, err);
        }
        if !out.in_content {
            let keep = marker_start(&out.bytes);
            let text = take_utf8(&mut out.bytes, keep);
            self.send_stream("stdout", &text);
        }
        open
    }

    /// One complete stdout line.
    fn line(&mut self, line: &str, out: &mut Pending, err: &mut Pending) {
        if out.in_content {
            out.in_content = line != "EVCXR_END_CONTENT";
            self.pass(line);
            return;
        }
        let start = [EVCXR_MARKER, IO_MARKER]
            .iter()
            .filter_map(|m| line.find(m))
            .min();
        let Some(start) = start else {
            self.send_stream("stdout", &format!("{line}\n"));
            return;
        };
        self.send_stream("stdout", &line[..start]);
        let marker = &line[start..];
        if marker.starts_with("EVCXR_BEGIN_CONTENT") {
            out.in_content = true;
        } else if marker.starts_with(EVCXR_MARKER) {
            // The end of a cell, a panic or an error: what the cell wrote to stderr comes
            // first; for an error, what was held is the error's text.
            self.drain_stderr(err);
            if marker == USER_ERROR_MARKER {
                self.held_since = None;
                let message = std::mem::take(&mut self.held);
                self.pass(&Io::Failed { message }.line());
            } else if marker == "EVCXR_PANIC_NOTIFICATION" {
                self.pass(&Io::Panic.line());
            }
        }
        self.pass(marker);
    }

    fn send_stream(&mut self, name: &str, text: &str) {
        if !text.is_empty() {
            let io = Io::Stream {
                name: name.into(),
                text: text.into(),
            };
            self.pass(&io.line());
        }
    }

    /// Send a line on to the kernel, after the stderr text held before it.
    fn pass(&mut self, line: &str) {
        self.send_held();
        self.write_line(line);
    }

    fn write_line(&mut self, line: &str) {
        let _ = self.kernel.write_all(format!("{line}\n").as_bytes());
    }
}

/// Append whatever `fd` has now; false once it is closed.
fn read_available(fd: libc::c_int, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 65536];
    loop {
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            into.extend_from_slice(&buf[..n as usize]);
        } else if n == 0 {
            return false;
        } else {
            match std::io::Error::last_os_error().kind() {
                std::io::ErrorKind::Interrupted => continue,
                kind => return kind == std::io::ErrorKind::WouldBlock,
            }
        }
    }
}

/// Where a marker may begin in unfinished text: its first occurrence, or a tail that could
/// still grow into one. Text before it can be sent now.
fn marker_start(bytes: &[u8]) -> usize {
    let markers = [EVCXR_MARKER.as_bytes(), IO_MARKER.as_bytes()];
    let found = markers
        .iter()
        .filter_map(|m| bytes.windows(m.len()).position(|w| w == *m))
        .min();
    if let Some(at) = found {
        return at;
    }
    (0..bytes.len())
        .find(|&at| markers.iter().any(|m| m.starts_with(&bytes[at..])))
        .unwrap_or(bytes.len())
}

/// Take the longest valid UTF-8 text from `bytes[..upto]`, leaving an unfinished character
/// (and everything from `upto` on) for later. Invalid bytes become U+FFFD.
fn take_utf8(bytes: &mut Vec<u8>, upto: usize) -> String {
    let cut = match std::str::from_utf8(&bytes[..upto]) {
        Ok(_) => upto,
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => upto,
    };
    let taken: Vec<u8> = bytes.drain(..cut).collect();
    String::from_utf8_lossy(&taken).into_owned()
}

/// Write one event line to stdout, where the forwarder passes it to the kernel.
fn emit(io: &Io) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", io.line());
    let _ = out.flush();
}

/// A value's MIME bundle: HTML for the notebook, text for everything else.
fn bundle(value: &dyn Show) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("text/html".to_string(), value.html()),
        ("text/plain".to_string(), value.text()),
    ])
}

/// Send `value` now as display_data (the kernel's side of [`crate::show::display`]).
pub(crate) fn display_now(value: &dyn Show) {
    emit(&Io::Display {
        data: bundle(value),
        display_id: None,
        update: false,
    });
}

/// An output that can be replaced in place: a live progress line, a plot that grows.
#[derive(Debug)]
pub struct DisplayHandle {
    id: String,
}

impl DisplayHandle {
    /// Show `value` as a new output that [`DisplayHandle::update`] can replace. Outside a
    /// notebook it prints the text.
    pub fn new(value: &dyn Show) -> DisplayHandle {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "recipe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let handle = DisplayHandle { id };
        handle.send(value, false);
        handle
    }

    /// Replace the output with `value`.
    pub fn update(&self, value: &dyn Show) {
        self.send(value, true);
    }

    /// The display id the kernel sees.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn send(&self, value: &dyn Show, update: bool) {
        if attached() {
            emit(&Io::Display {
                data: bundle(value),
                display_id: Some(self.id.clone()),
                update,
            });
        } else if !update {
            println!("{}", value.text());
        }
    }
}

/// Clear the cell's output; with `wait`, only once the next output arrives (no flicker).
pub fn clear_output(wait: bool) {
    if attached() {
        emit(&Io::Clear { wait });
    }
}

/// The line a kernel sends to a cell's [`input`] when nobody can answer it.
pub const NO_INPUT: &str = "\u{18}recipe: no input";

/// Ask the person at the notebook for one line of text, without the whitespace around it.
///
/// In Jupyter the client shows an input box under the cell (an `input_request` on the stdin
/// channel) and the cell waits for the answer; outside a kernel the prompt goes to stderr
/// and the line is read from stdin. Fails when nobody can answer: a headless run
/// (`recipe exec`, nbclient), a client that sent `allow_stdin: false`, or an interrupt while
/// the box was open. The prompt travels to the kernel as one line of evcxr's own protocol,
/// which cuts it at a `:`, so a colon in `prompt` is shown as `∶` and a line break as a
/// space.
pub fn input(prompt: &str) -> Result<String> {
    if !attached() {
        eprint!("{prompt}");
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Error::Invalid(format!("read an answer to {prompt:?}: {e}")))?;
        return Ok(line.trim().to_string());
    }
    let line = evcxr_input::get_string(&prompt.replace(':', "∶").replace(['\n', '\r'], " "));
    if line == NO_INPUT {
        return Err(Error::Invalid(format!(
            "nobody can answer {prompt:?}: the notebook runs headless, its client does not \
             accept input (allow_stdin is false), or the cell was interrupted. HINT: run the \
             cell in JupyterLab, or give the value in code"
        )));
    }
    Ok(line)
}

/// The cell being executed, as the kernel described it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CellContext {
    pub session_id: String,
    pub execution_count: i64,
    /// blake3 of the cell's source.
    pub code_hash: String,
    /// blake3 over the hashes of the session's cells before this one.
    pub history_hash: String,
}

/// The cell running now, when the code runs inside the kernel.
pub fn current_cell() -> Option<CellContext> {
    let path = std::env::var_os(CELL_FILE_ENV)?;
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_lines_round_trip() {
        let events = [
            Io::Stream {
                name: "stdout".into(),
                text: "step 3/10\r".into(),
            },
            Io::Display {
                data: BTreeMap::from([("text/html".into(), "<b>x</b>\nmore".into())]),
                display_id: Some("recipe-1-0".into()),
                update: true,
            },
            Io::Clear { wait: true },
            Io::PanicReport {
                message: "index out of bounds\nsecond line".into(),
                location: Some("src/lib.rs:12:5".into()),
                backtrace: None,
            },
            Io::Failed {
                message: "invalid digit found in string\n".into(),
            },
        ];
        for io in events {
            let line = io.line();
            assert!(!line.contains('\n'), "one line per event: {line}");
            assert_eq!(Io::parse(&line), Some(io));
        }
        assert_eq!(Io::parse("plain text"), None);
    }

    #[test]
    fn marker_start_keeps_possible_markers() {
        assert_eq!(marker_start(b"progress 10%\r"), 13);
        assert_eq!(marker_start(b"abcEVCXR_EXECUTION_COMPLETE"), 3);
        assert_eq!(marker_start(b"abcEVC"), 3);
        assert_eq!(marker_start(b"xRECIPE_I"), 1);
        assert_eq!(marker_start(b""), 0);
    }

    #[test]
    fn take_utf8_leaves_an_unfinished_character() {
        let mut bytes = "é".as_bytes()[..1].to_vec();
        bytes.splice(0..0, b"ab".iter().copied());
        assert_eq!(take_utf8(&mut bytes, 3), "ab");
        assert_eq!(bytes.len(), 1);
        bytes.push("é".as_bytes()[1]);
        assert_eq!(take_utf8(&mut bytes, 2), "é");
    }
}
