//! One kernel session: evcxr compiling cells against the shared runtime library, live output,
//! interrupts that keep the session, and every cell recorded in the archive.
//!
//! Both faces of the kernel use it: the Jupyter server ([`crate::jupyter`]) and the headless
//! notebook runner ([`crate::exec`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use evcxr::{CommandContext, CompilationError, EvalContext};
use recipe::notebook::{CellContext, Io, BACKTRACE_ENV, CELL_FILE_ENV, NO_INPUT};
use recipe_archive::{Archive, CellRecord};

use crate::runtime_lib::RuntimeLib;

/// How long code that ignores an interrupt may keep running before its process is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// Where a session's output goes: the Jupyter iopub channel or a notebook's outputs.
pub type Sink = Arc<dyn Fn(Io) + Send + Sync>;

/// Asks the person at the notebook for a line of text (the prompt, whether it is a
/// password); `None` when nobody can answer (a headless run, a client that sent
/// `allow_stdin: false`, an interrupt while waiting).
pub type InputReader = Box<dyn Fn(&str, bool) -> Option<String> + Send>;

/// The result of one cell.
#[derive(Debug)]
pub enum Outcome {
    /// The cell ran; `data` is its final value by MIME type (empty when there is none).
    Ok { data: BTreeMap<String, String> },
    /// Compilation failed, the cell panicked or returned an error, or its process died.
    Error {
        ename: String,
        evalue: String,
        traceback: Vec<String>,
    },
}

/// A running session.
pub struct Session {
    ctx: CommandContext,
    pub id: String,
    /// The count of the last cell executed with `store_history`.
    pub execution_count: i64,
    code_hashes: Vec<blake3::Hash>,
    archive: Option<Archive>,
    cell_file: PathBuf,
    interrupter: Interrupter,
    /// How the running cell failed, as its process reported it.
    failure: Arc<Mutex<Failure>>,
    pumps: Vec<Pump>,
    needs_init: bool,
    /// The session's own folder (evcxr's crate, the current-cell file); removed at the end.
    dir: PathBuf,
    /// Answers a cell's `recipe::input` (the runtime's [`recipe::notebook::input`]).
    input: InputReader,
}

/// What the cell process said of the running cell's failure.
#[derive(Default)]
struct Failure {
    /// evcxr's notice that the cell panicked.
    panicked: bool,
    /// The runtime's panic hook's last report: message, location, backtrace.
    panic: Option<(String, Option<String>, Option<String>)>,
    /// The error a `?` returned, as printed.
    error: Option<String>,
    /// What the cell wrote to stderr since its last other output (an error's text when the
    /// forwarder could not hold it back).
    stderr: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The code every session runs first, hidden: the prelude, the runtime's crates under their
/// own names, and the output forwarder. Its `?` makes evcxr allow `?` in every cell from the
/// start (it learns that from the first cell that uses one, and displays that cell's value
/// as Debug text).
///
/// The `use ... as` lines put `candle_core`, `candle_nn`, `serde_json`, `arrow` and
/// `parquet` at the root of every cell's crate: `use candle_core::Tensor;` as candle's
/// examples write it resolves to the runtime's one copy, and the analyzer can write the
/// type of a variable holding such a value (`let t = Tensor::zeros(..)?;` persists).
const INIT: &str = "use recipe::prelude::*;\n\
use recipe::{arrow, candle as candle_core, candle_nn, parquet, serde_json};\n\
recipe::notebook::attach()?;";

/// Crates the runtime contains, by the name a `:dep` line gives them: a cell has them
/// already, and a `:dep` would build a second copy whose types the runtime's functions
/// refuse ("mismatched types" a few cells later).
const RUNTIME_CRATES: [(&str, &str); 6] = [
    ("candle-core", "candle_core"),
    ("candle-nn", "candle_nn"),
    ("serde_json", "serde_json"),
    ("arrow", "arrow"),
    ("parquet", "parquet"),
    ("recipe", "recipe"),
];

/// The answer to a `:dep` line that asks for a crate the runtime contains.
fn contained_dep(code: &str) -> Option<String> {
    code.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(":dep")?;
        let name = rest
            .trim()
            .split(|c: char| c == '=' || c.is_whitespace())
            .next()?;
        let (_, path) = RUNTIME_CRATES
            .iter()
            .find(|(dep, path)| name == *dep || name == *path || name.replace('_', "-") == *dep)?;
        Some(format!(
            "{name} is part of the recipe runtime, and every cell has it already: write \
             `use {path}::...;` (no :dep line). A :dep would build a second copy of it, \
             whose types the runtime's functions refuse."
        ))
    })
}

impl Session {
    /// Start a session whose output goes to `sink`. `archive` records every cell (None: the
    /// cells are not recorded).
    pub fn start(sink: Sink, archive: Option<Archive>) -> anyhow::Result<Session> {
        let clock = std::time::Instant::now();
        let runtime = RuntimeLib::locate()?;
        let id = fresh_id();
        remove_abandoned_sessions();
        let dir = std::env::temp_dir().join(format!("recipe-session-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let cell_file = dir.join("cell.json");

        // evcxr's crate lives in the session folder, with the runtime's lock file.
        let crate_dir = dir.join("evcxr");
        std::fs::create_dir_all(&crate_dir)?;
        std::fs::copy(runtime.lock_file(), crate_dir.join("Cargo.lock"))
            .context("copy the runtime's Cargo.lock: run `recipe install` again")?;
        std::env::set_var("EVCXR_TMPDIR", &crate_dir);
        // The analyzer reads the install's copy of std (without the x86 intrinsics).
        if let Some(std_source) = runtime.std_source() {
            std::env::set_var("RUST_SRC_PATH", std_source);
        }

        let mut runner = std::process::Command::new(std::env::current_exe()?);
        runner.env(CELL_FILE_ENV, &cell_file);
        // evcxr sets RUST_BACKTRACE=1 for the cells; a panic's backtrace is shown only when
        // the user asked for it.
        match std::env::var_os("RUST_BACKTRACE") {
            Some(value) => runner.env(BACKTRACE_ENV, value),
            None => runner.env_remove(BACKTRACE_ENV),
        };
        // The cell process ends with the thread that starts it (this session's), however the
        // kernel ends: a kernel that a warm spare serves is outside the process group that
        // Jupyter signals, and a running cell never reads the end of its input.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut runner, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let (mut eval, outputs) = EvalContext::with_subprocess_command(runner)
            .map_err(|e| anyhow::anyhow!("start the cell runner: {e}"))?;
        timing(|| format!("evcxr started at {:.3} s", clock.elapsed().as_secs_f64()));
        // Link the runtime library, show its source to the analyzer, and run the hidden first
        // cell, in one compile. The build env and the dependency stay in evcxr's state, so a
        // replaced cell process needs only the first cell again (`init`).
        let mut state = eval.state();
        state.set_build_env("CARGO_ENCODED_RUSTFLAGS", &runtime.rustflags());
        let (name, config) = runtime.analyzer_dependency();
        state
            .add_dep(&name, &config)
            .map_err(|e| anyhow::anyhow!("show the runtime's source to the analyzer: {e}"))?;
        let attached = eval
            .eval_with_state(INIT, state)
            .map_err(|e| anyhow::anyhow!("load the recipe runtime into the session: {e}"))?;
        for phase in &attached.phases {
            timing(|| {
                format!(
                    "start: {} {:.3} s",
                    phase.name,
                    phase.duration.as_secs_f64()
                )
            });
        }
        let ctx = CommandContext::with_eval_context(eval);

        let failure = Arc::new(Mutex::new(Failure::default()));
        let route: Sink = {
            let failure = failure.clone();
            Arc::new(move |io: Io| {
                let mut failure = failure.lock().unwrap();
                match io {
                    Io::Panic => failure.panicked = true,
                    Io::PanicReport {
                        message,
                        location,
                        backtrace,
                    } => failure.panic = Some((message, location, backtrace)),
                    Io::Failed { message } => failure.error = Some(message),
                    Io::Stream { name, text } if name == "stderr" => {
                        keep_tail(&mut failure.stderr, &text);
                        drop(failure);
                        sink(Io::Stream { name, text });
                    }
                    io => {
                        failure.stderr.clear();
                        drop(failure);
                        sink(io);
                    }
                }
            })
        };
        let pumps = vec![
            Pump::start(outputs.stdout, "stdout", route.clone()),
            Pump::start(outputs.stderr, "stderr", route),
        ];
        let pid = ctx.process_handle().lock().unwrap().id() as i32;
        let session = Session {
            ctx,
            id,
            execution_count: 0,
            code_hashes: Vec::new(),
            archive,
            cell_file,
            interrupter: Interrupter::new(pid),
            failure,
            pumps,
            needs_init: false,
            dir,
            input: Box::new(|_, _| None),
        };
        session.drain();
        timing(|| format!("runtime attached at {:.3} s", clock.elapsed().as_secs_f64()));
        Ok(session)
    }

    /// Run the hidden first cell (again after the cell process was replaced).
    fn init(&mut self) -> anyhow::Result<()> {
        self.ctx
            .execute(INIT)
            .map_err(|e| anyhow::anyhow!("load the recipe runtime into the session: {e}"))?;
        self.drain();
        self.interrupter.pid.store(
            self.ctx.process_handle().lock().unwrap().id() as i32,
            Ordering::SeqCst,
        );
        self.needs_init = false;
        Ok(())
    }

    /// Who answers a cell that asks for input; nobody until this is called.
    pub fn set_input_reader(&mut self, input: InputReader) {
        self.input = input;
    }

    /// A handle that interrupts the running cell from another thread.
    pub fn interrupter(&self) -> Interrupter {
        self.interrupter.clone()
    }

    /// Execute one cell. `store_history` counts it and keeps it in the history.
    pub fn execute(&mut self, code: &str, store_history: bool) -> Outcome {
        if store_history {
            self.execution_count += 1;
        }
        let started = recipe_archive::records::now();
        let code_hash = blake3::hash(code.as_bytes());
        let history_hash = self.history_hash();
        let outcome = self.run(code, &code_hash, &history_hash);
        self.code_hashes.push(code_hash);
        let status = match &outcome {
            Outcome::Ok { .. } => "ok",
            Outcome::Error { .. } => "failed",
        };
        let error = match &outcome {
            Outcome::Error { ename, evalue, .. } => Some(format!("{ename}: {evalue}")),
            Outcome::Ok { .. } => None,
        };
        let clock = std::time::Instant::now();
        self.record(code, code_hash, history_hash, status, started, error);
        timing(|| format!("cell recorded in {:.3} s", clock.elapsed().as_secs_f64()));
        outcome
    }

    /// Record a cell that was not run: an earlier one failed (stop_on_error) or was
    /// interrupted.
    pub fn record_aborted(&mut self, code: &str) {
        let now = recipe_archive::records::now();
        let code_hash = blake3::hash(code.as_bytes());
        let history_hash = self.history_hash();
        self.record(code, code_hash, history_hash, "aborted", now, None);
    }

    fn run(&mut self, code: &str, code_hash: &blake3::Hash, history_hash: &str) -> Outcome {
        if self.needs_init {
            if let Err(e) = self.init() {
                return error_outcome("SessionError", &format!("{e:#}"), Vec::new());
            }
        }
        let cell = CellContext {
            session_id: self.id.clone(),
            execution_count: self.execution_count,
            code_hash: code_hash.to_hex().to_string(),
            history_hash: history_hash.to_string(),
        };
        if let Err(e) = write_cell_file(&self.cell_file, &cell) {
            return error_outcome("SessionError", &format!("{e:#}"), Vec::new());
        }
        if let Some(answer) = contained_dep(code) {
            return error_outcome("DepError", &answer, Vec::new());
        }
        *self.failure.lock().unwrap() = Failure::default();
        let killed_before = self.interrupter.killed.load(Ordering::SeqCst);
        self.interrupter.begin();
        let clock = std::time::Instant::now();
        let input = &self.input;
        let result = self.ctx.execute_with_callbacks(
            code,
            &mut evcxr::EvalCallbacks {
                // The answer travels to the cell process as one line.
                input_reader: &|request| {
                    input(&request.prompt, request.is_password).map_or_else(
                        || NO_INPUT.to_string(),
                        |line| line.replace(['\n', '\r'], " "),
                    )
                },
            },
        );
        let ran = clock.elapsed();
        self.interrupter.end();
        self.drain();
        timing(|| {
            format!(
                "evcxr {:.3} s, output drained {:.3} s",
                ran.as_secs_f64(),
                clock.elapsed().as_secs_f64()
            )
        });
        let failure = std::mem::take(&mut *self.failure.lock().unwrap());
        match result {
            Ok(_) if failure.panicked => self.panic_outcome(code, failure),
            Ok(_) if failure.error.is_some() => user_error(failure),
            Ok(outputs) => {
                for phase in &outputs.phases {
                    timing(|| format!("{} {:.3} s", phase.name, phase.duration.as_secs_f64()));
                }
                let mut data = outputs
                    .content_by_mime_type
                    .into_iter()
                    .collect::<BTreeMap<_, _>>();
                // A cell that ends in a statement-like expression (a `for` loop, a call
                // returning `()`) has nothing to show, as in Rust's own REPLs.
                if data.len() == 1 && data.get("text/plain").is_some_and(|t| t.trim() == "()") {
                    data.clear();
                }
                Outcome::Ok { data }
            }
            Err(evcxr::Error::CompilationErrors(errors)) => compile_error(code, &errors),
            Err(evcxr::Error::SubprocessTerminated(message)) => {
                self.needs_init = true;
                let killed = self.interrupter.killed.load(Ordering::SeqCst) != killed_before;
                let evalue = if killed {
                    format!(
                        "the cell ignored the interrupt for {} s, so its process was killed. \
                         Every variable of this session is gone: re-run the cells you need.",
                        INTERRUPT_GRACE.as_secs()
                    )
                } else {
                    format!(
                        "the process running the cells died ({}). Every variable of this \
                         session is gone: re-run the cells you need.",
                        message.trim()
                    )
                };
                error_outcome("SessionLost", &evalue, Vec::new())
            }
            // A cell's `?` returned an error, or evcxr refused the cell.
            Err(e) => {
                let text = e.to_string();
                error_outcome(
                    "Error",
                    text.trim(),
                    text.lines().map(String::from).collect(),
                )
            }
        }
    }

    /// A panicked cell as one concise error: the message, the cell line it came from, and the
    /// backtrace only when the user set `RUST_BACKTRACE`.
    fn panic_outcome(&self, code: &str, failure: Failure) -> Outcome {
        let Some((message, location, backtrace)) = failure.panic else {
            // The cell replaced the runtime's panic hook: what it printed is all there is.
            let text = failure.stderr.trim();
            let evalue = if text.is_empty() {
                "the cell panicked"
            } else {
                text
            };
            return error_outcome("panic", evalue, Vec::new());
        };
        let mut traceback = vec![format!("\x1b[1;31mpanic\x1b[0m: {message}")];
        if let Some(location) = &location {
            traceback.push(format!("  --> {}", self.locate(code, location)));
        }
        if let Some(backtrace) = backtrace {
            traceback.push("backtrace (RUST_BACKTRACE is set):".into());
            traceback.extend(backtrace.lines().map(String::from));
        }
        error_outcome("panic", &message, traceback)
    }

    /// Where a panic's `file:line:column` is for the user: a line of the cell, a line of an
    /// earlier cell's code, or a file of the runtime or a crate.
    fn locate(&self, code: &str, location: &str) -> String {
        let mut parts = location.rsplitn(3, ':');
        let (column, line, file) = (parts.next(), parts.next(), parts.next());
        let line: Option<usize> = line.and_then(|l| l.parse().ok());
        let (Some(file), Some(line)) = (file, line) else {
            return location.to_string();
        };
        if file != "src/lib.rs" {
            return format!("{location} (in the runtime or a crate it uses)");
        }
        // evcxr compiles the cell (with the items of earlier cells) as this crate's lib.rs.
        let generated = std::fs::read_to_string(self.dir.join("evcxr").join("src").join("lib.rs"))
            .unwrap_or_default();
        match cell_line(&generated, line, code) {
            Some(n) => format!("cell line {n}, column {}", column.unwrap_or("?")),
            None => match generated.lines().nth(line.wrapping_sub(1)) {
                Some(text) => format!("code from an earlier cell: {}", text.trim()),
                None => location.to_string(),
            },
        }
    }

    /// Wait until every output line of the finished cell has reached the sink.
    fn drain(&self) {
        for pump in &self.pumps {
            pump.drain();
        }
    }

    /// blake3 over the hashes of the session's cells so far.
    fn history_hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        for c in &self.code_hashes {
            h.update(c.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    fn record(
        &self,
        code: &str,
        code_hash: blake3::Hash,
        history_hash: String,
        status: &str,
        started: chrono::DateTime<chrono::Utc>,
        error: Option<String>,
    ) {
        let Some(archive) = &self.archive else { return };
        let cell = CellRecord {
            session_id: self.id.clone(),
            execution_count: self.execution_count,
            code: code.to_string(),
            code_hash: code_hash.to_hex().to_string(),
            history_hash,
            status: status.into(),
            started_at: started,
            ended_at: recipe_archive::records::now(),
            error,
        };
        if let Err(e) = archive.record_cell(&cell) {
            eprintln!("recipe: could not record the cell in the archive: {e}");
        }
    }

    /// Completions at byte `position` of `code`: (start, end, matches).
    pub fn complete(&mut self, code: &str, position: usize) -> (usize, usize, Vec<String>) {
        match self.ctx.completions(code, position) {
            Ok(c) => {
                let mut matches: Vec<String> = c.completions.into_iter().map(|c| c.code).collect();
                matches.dedup();
                (c.start_offset, c.end_offset, matches)
            }
            Err(_) => (position, position, Vec::new()),
        }
    }

    /// Have the analyzer do now what a first cell would wait for: infer a runtime type behind
    /// `?` (the runtime crate's items and the standard library's traits, about a second).
    /// Spares do this before they wait, kernels when no cell is queued once they are up.
    pub fn warm_analyzer(&mut self) {
        let code = "let d = Dataset::digits()?;\nd.";
        let _ = self.complete(code, code.len());
    }

    /// What is known about the name at byte `position`: (plain text, HTML).
    pub fn inspect(&mut self, code: &str, position: usize) -> Option<(String, String)> {
        let position = position.min(code.len());
        let (plain, html) = self.ctx.hover_at(code, position).ok()?;
        (!plain.trim().is_empty()).then_some((plain, html))
    }

    /// Names of the session's variables, for completion while a cell runs.
    pub fn variable_names(&self) -> Vec<String> {
        self.ctx
            .variables_and_types()
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

/// Remove the folders of sessions whose kernel process is gone (killed, or exited without
/// unwinding): each holds evcxr's build of its cells, tens of MiB.
fn remove_abandoned_sessions() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("recipe-session-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Remove this process's session folders (on shutdown, where no destructor runs).
pub fn remove_own_sessions() {
    let prefix = format!("recipe-session-{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn write_cell_file(path: &Path, cell: &CellContext) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(cell)?)?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
}

/// A new id, unique across processes and time: 16 hex digits.
pub fn fresh_id() -> String {
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        std::thread::current().id()
    );
    blake3::hash(seed.as_bytes()).to_hex()[..16].to_string()
}

/// With `RECIPE_TIMING` set, say where a cell's (or the start's) time went, on stderr.
pub fn timing(what: impl FnOnce() -> String) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("RECIPE_TIMING").is_some()) {
        eprintln!("recipe timing: {}", what());
    }
}

fn error_outcome(ename: &str, evalue: &str, mut traceback: Vec<String>) -> Outcome {
    if traceback.is_empty() {
        traceback.push(format!("{ename}: {evalue}"));
    }
    Outcome::Error {
        ename: ename.into(),
        evalue: evalue.into(),
        traceback,
    }
}

/// A cell whose `?` returned an error: the error's text (with the sources its `Display`
/// names) as the value, its lines as the traceback.
fn user_error(failure: Failure) -> Outcome {
    let printed = failure.error.unwrap_or_default();
    let text = match printed.trim() {
        "" => failure.stderr.trim().to_string(),
        text => text.to_string(),
    };
    let text = if text.is_empty() {
        "the cell returned an error".to_string()
    } else {
        text
    };
    let mut lines = text.lines();
    let mut traceback = vec![format!(
        "\x1b[1;31merror\x1b[0m: {}",
        lines.next().unwrap_or_default()
    )];
    traceback.extend(lines.map(|l| format!("  {l}")));
    error_outcome("Error", &text, traceback)
}

/// Keep the last 16 KiB of a cell's stderr.
fn keep_tail(tail: &mut String, text: &str) {
    tail.push_str(text);
    let cut = tail.len().saturating_sub(16_384);
    let cut = (cut..tail.len()).find(|&i| tail.is_char_boundary(i));
    tail.drain(..cut.unwrap_or(0));
}

/// The line of `cell` (1-based) that line `line` of evcxr's generated `lib.rs` holds: the
/// cell line with the same text whose neighbours match best (a cell may repeat a line).
fn cell_line(generated: &str, line: usize, cell: &str) -> Option<usize> {
    let generated: Vec<&str> = generated.lines().map(str::trim).collect();
    let cell: Vec<&str> = cell.lines().map(str::trim).collect();
    let at = line.checked_sub(1)?;
    let text = *generated.get(at)?;
    if text.is_empty() {
        return None;
    }
    let agree = |i: usize| {
        (1..=3)
            .filter(|&k| {
                let before = i >= k && at >= k && cell[i - k] == generated[at - k];
                let after = cell
                    .get(i + k)
                    .is_some_and(|c| generated.get(at + k) == Some(c));
                before || after
            })
            .count()
    };
    (0..cell.len())
        .filter(|&i| cell[i] == text)
        .max_by_key(|&i| (agree(i), std::cmp::Reverse(i)))
        .map(|i| i + 1)
}

/// rustc's errors, each pointing at the cell's own lines.
fn compile_error(code: &str, errors: &[CompilationError]) -> Outcome {
    let source: Vec<&str> = code.lines().collect();
    let mut traceback = Vec::new();
    for error in errors {
        let head = match error.code() {
            Some(c) => format!("\x1b[1;31merror[{c}]\x1b[0m: {}", error.message()),
            None => format!("\x1b[1;31merror\x1b[0m: {}", error.message()),
        };
        traceback.push(head);
        for spanned in error.spanned_messages() {
            let Some(span) = &spanned.span else {
                if !spanned.label.is_empty() {
                    traceback.push(format!("  = {}", spanned.label));
                }
                continue;
            };
            let line = source.get(span.start_line - 1).copied().unwrap_or("");
            let width = if span.end_line == span.start_line {
                span.end_column.saturating_sub(span.start_column).max(1)
            } else {
                line.chars()
                    .count()
                    .saturating_sub(span.start_column - 1)
                    .max(1)
            };
            traceback.push(format!(
                "  --> cell line {}, column {}",
                span.start_line, span.start_column
            ));
            traceback.push(format!("{:>4} | {line}", span.start_line));
            traceback.push(format!(
                "     | {}\x1b[1;31m{}\x1b[0m {}",
                " ".repeat(span.start_column.saturating_sub(1)),
                "^".repeat(width),
                spanned.label
            ));
        }
        for help in error.help() {
            traceback.push(format!("  = help: {help}"));
        }
    }
    let evalue = errors
        .first()
        .map(|e| e.message())
        .unwrap_or_else(|| "compilation failed".into());
    error_outcome("CompilationError", &evalue, traceback)
}

/// Interrupts the running cell: SIGINT to the cell process (the runtime stops at its next
/// step), then SIGKILL if the cell has not finished after [`INTERRUPT_GRACE`].
#[derive(Clone)]
pub struct Interrupter {
    pid: Arc<AtomicI32>,
    /// The number of the running cell; 0 when none runs.
    running: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
    killed: Arc<AtomicU64>,
}

impl Interrupter {
    fn new(pid: i32) -> Interrupter {
        Interrupter {
            pid: Arc::new(AtomicI32::new(pid)),
            running: Arc::new(AtomicU64::new(0)),
            next: Arc::new(AtomicU64::new(1)),
            killed: Arc::new(AtomicU64::new(0)),
        }
    }

    fn begin(&self) {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        self.running.store(n, Ordering::SeqCst);
    }

    fn end(&self) {
        self.running.store(0, Ordering::SeqCst);
    }

    /// Whether a cell is running now.
    pub fn busy(&self) -> bool {
        self.running.load(Ordering::SeqCst) != 0
    }

    /// Interrupt the running cell, if any; whether one was running.
    pub fn interrupt(&self) -> bool {
        let cell = self.running.load(Ordering::SeqCst);
        if cell == 0 {
            return false;
        }
        let pid = self.pid.load(Ordering::SeqCst);
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let this = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(INTERRUPT_GRACE);
            if this.running.load(Ordering::SeqCst) == cell {
                this.killed.fetch_add(1, Ordering::SeqCst);
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        true
    }
}

/// Moves one of evcxr's output channels to the sink on its own thread.
struct Pump {
    /// Drain requests: the pump handles every line it has, then answers on the sender given.
    drains: crossbeam_channel::Sender<crossbeam_channel::Sender<()>>,
}

impl Pump {
    fn start(lines: crossbeam_channel::Receiver<String>, name: &'static str, sink: Sink) -> Pump {
        let (drains, requests) = crossbeam_channel::unbounded::<crossbeam_channel::Sender<()>>();
        let handle = move |line: String| {
            sink(Io::parse(&line).unwrap_or(Io::Stream {
                name: name.into(),
                text: format!("{line}\n"),
            }))
        };
        std::thread::spawn(move || loop {
            crossbeam_channel::select! {
                recv(lines) -> line => match line {
                    Ok(line) => handle(line),
                    Err(_) => return,
                },
                recv(requests) -> done => {
                    // Lines can be waiting too (select picks either): handle them first.
                    while let Ok(line) = lines.try_recv() {
                        handle(line);
                    }
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                }
            }
        });
        Pump { drains }
    }

    /// Wait until every line sent so far has been handled.
    fn drain(&self) {
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.drains.send(done).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// Fail early with a message naming what to run, before any Jupyter socket is opened.
pub fn check_runtime() -> anyhow::Result<()> {
    RuntimeLib::locate().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_28_a_dep_on_a_crate_of_the_runtime_is_answered_with_its_name_in_a_cell() {
        let answer = contained_dep(":dep candle-core = \"=0.11.1\"\nlet x = 1;").unwrap();
        assert!(answer.contains("use candle_core::...;"), "{answer}");
        assert!(contained_dep(":dep candle_nn = { version = \"0.11\" }")
            .unwrap()
            .contains("use candle_nn::...;"));
        assert!(contained_dep(":dep serde_json").is_some());
        // Other crates are evcxr's to fetch; a line that merely mentions one is code.
        assert_eq!(contained_dep(":dep rand = \"0.8\""), None);
        assert_eq!(contained_dep("let s = \":dep candle-core\";"), None);
    }

    #[test]
    fn cell_line_finds_the_generated_line_in_the_cell() {
        let cell = "let a = 1;\n\nlet v: Vec<i32> = Vec::new();\nlet x = v[a];";
        let generated = "mod evcxr_internal_runtime {}\nfn run() {\nlet a = 1;\n\n\
                         let v: Vec<i32> = Vec::new();\nlet x = v[a];\nstore(a);\n}";
        assert_eq!(cell_line(generated, 6, cell), Some(4));
        assert_eq!(cell_line(generated, 3, cell), Some(1));
        // A generated line, a blank line, or a line past the end is not the cell's.
        assert_eq!(cell_line(generated, 7, cell), None);
        assert_eq!(cell_line(generated, 4, cell), None);
        assert_eq!(cell_line(generated, 99, cell), None);
    }

    #[test]
    fn cell_line_tells_repeated_lines_apart_by_their_neighbours() {
        let cell = "x.step();\nlet a = 1;\nx.step();\nlet b = 2;";
        let generated = "fn run() {\nx.step();\nlet a = 1;\nx.step();\nlet b = 2;\n}";
        assert_eq!(cell_line(generated, 2, cell), Some(1));
        assert_eq!(cell_line(generated, 4, cell), Some(3));
    }

    #[test]
    fn a_user_error_is_its_printed_text() {
        let failure = Failure {
            error: Some("config: lr must be > 0\nHINT: set lr\n".into()),
            ..Failure::default()
        };
        let Outcome::Error {
            ename,
            evalue,
            traceback,
        } = user_error(failure)
        else {
            panic!("not an error");
        };
        assert_eq!(ename, "Error");
        assert_eq!(evalue, "config: lr must be > 0\nHINT: set lr");
        assert_eq!(traceback.len(), 2);
        // Text the forwarder could not hold back is taken from the cell's stderr.
        let failure = Failure {
            error: Some(String::new()),
            stderr: "invalid digit found in string\n".into(),
            ..Failure::default()
        };
        let Outcome::Error { evalue, .. } = user_error(failure) else {
            panic!("not an error");
        };
        assert_eq!(evalue, "invalid digit found in string");
    }
}
