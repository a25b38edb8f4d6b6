//! The Jupyter face of the kernel: the five sockets of a connection file, messages signed and
//! verified by the protocol crates, and one [`Session`] running cells on its own thread.
//!
//! Shell requests that need the session (execute, inspect, complete when idle) queue for the
//! session thread in arrival order. Requests that do not (kernel_info, is_complete, history,
//! comm_info, and complete while a cell runs) are answered at once, so a busy kernel still
//! answers them. Control requests (interrupt, shutdown) never wait.
//!
//! The sockets answer before the session is up: kernel_info comes back within milliseconds of
//! the launch while evcxr, the analyzer and the runtime library start on the session thread
//! (seconds), and cells sent meanwhile wait in the queue, as they would behind a running cell.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use jupyter_protocol::{
    ClearOutput, CommInfoReply, CompleteReply, CompleteRequest, ConnectionInfo, DisplayData,
    ErrorOutput, ExecuteInput, ExecuteReply, ExecuteRequest, ExecuteResult, ExecutionCount,
    HelpLink, HistoryEntry, HistoryReply, HistoryRequest, InspectReply, InterruptReply,
    IsCompleteReply, IsCompleteReplyStatus, JupyterMessage, JupyterMessageContent, KernelInfoReply,
    LanguageInfo, Media, ReplyError, ReplyStatus, ShutdownReply, Status, Stdio, StreamContent,
    Transient, UpdateDisplayData,
};
use jupyter_zmq_client::{
    connection::{Connection, RawMessage},
    create_kernel_control_connection, create_kernel_heartbeat_connection,
    create_kernel_iopub_connection, create_kernel_shell_connection, create_kernel_stdin_connection,
};
use recipe::notebook::Io;
use recipe_archive::Archive;
use tokio::sync::mpsc;
use zeromq::{SocketRecv, SocketSend};

use crate::is_complete::{is_complete, Completeness};
use crate::session::{Interrupter, Outcome, Session, Sink};

/// Serve the kernel described by `connection_file` until a shutdown request. A warm spare
/// started for this launch (same binary, folder and environment) serves it when
/// there is one; otherwise this process starts its own session.
pub fn serve(connection_file: &Path) -> anyhow::Result<()> {
    crate::spare::remember_launch_env();
    crate::session::check_runtime()?;
    let info = read_connection_file(connection_file)?;
    if let Some(handover) = crate::spare::claim(connection_file) {
        // The spare serves the sockets; this process stays what Jupyter manages and lives
        // exactly as long as the spare serves it.
        std::process::exit(handover.wait());
    }
    let started = Started::begin(false)?;
    crate::spare::spawn_after_start(&started);
    started.serve(info)
}

pub fn read_connection_file(path: &Path) -> anyhow::Result<ConnectionInfo> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the connection file {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("parse the connection file {}", path.display()))
}

/// A kernel whose session is starting (or started) on its own thread, not yet bound to the
/// sockets of a connection file.
pub struct Started {
    kernel: Arc<Kernel>,
    iopub: mpsc::UnboundedReceiver<JupyterMessage>,
    shell: mpsc::UnboundedReceiver<JupyterMessage>,
    work: std_mpsc::Sender<JupyterMessage>,
}

impl Started {
    /// Start the session thread; a `spare` also warms the analyzer before it says it is ready.
    pub fn begin(spare: bool) -> anyhow::Result<Started> {
        let (iopub_tx, iopub) = mpsc::unbounded_channel::<JupyterMessage>();
        let (shell_tx, shell) = mpsc::unbounded_channel::<JupyterMessage>();
        let kernel = Arc::new(Kernel {
            iopub: iopub_tx,
            shell: shell_tx,
            parent: Mutex::new(None),
            history: Mutex::new(Vec::new()),
            variables: Mutex::new(Vec::new()),
            interrupter: OnceLock::new(),
            interrupted_while_starting: AtomicBool::new(false),
        });
        let (work, work_rx) = std_mpsc::channel::<JupyterMessage>();
        {
            let kernel = kernel.clone();
            std::thread::Builder::new()
                .name("recipe-session".into())
                .spawn(move || session_thread(kernel, work_rx, spare))?;
        }
        Ok(Started {
            kernel,
            iopub,
            shell,
            work,
        })
    }

    /// Says whether the session can run cells yet (the process exits if it cannot start).
    pub fn ready_probe(&self) -> impl Fn() -> bool + Send + 'static {
        let kernel = self.kernel.clone();
        move || kernel.interrupter.get().is_some()
    }

    /// Says whether the session is up with no cell running.
    pub fn idle_probe(&self) -> impl Fn() -> bool + Send + 'static {
        let kernel = self.kernel.clone();
        move || kernel.interrupter.get().is_some_and(|i| !i.busy())
    }

    /// Bind the sockets of `info` and serve until a shutdown request.
    pub fn serve(self, info: ConnectionInfo) -> anyhow::Result<()> {
        self.serve_then(info, || {})
    }

    /// [`Started::serve`], calling `bound` once every socket is bound.
    pub fn serve_then(self, info: ConnectionInfo, bound: impl FnOnce()) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(run(info, self, bound))
    }
}

/// What the socket tasks and the session thread share.
pub struct Kernel {
    iopub: mpsc::UnboundedSender<JupyterMessage>,
    shell: mpsc::UnboundedSender<JupyterMessage>,
    /// The request whose cell is running: iopub output is its child.
    parent: Mutex<Option<JupyterMessage>>,
    /// (execution count, code, text of its result) of cells stored in history.
    history: Mutex<Vec<(i64, String, String)>>,
    variables: Mutex<Vec<String>>,
    /// Set once the session has started.
    interrupter: OnceLock<Interrupter>,
    /// An interrupt came while the session was starting: the cells queued until it is up do
    /// not run.
    interrupted_while_starting: AtomicBool,
}

impl Kernel {
    fn publish(&self, content: impl Into<JupyterMessageContent>, parent: &JupyterMessage) {
        let mut message = JupyterMessage::new(content, Some(parent));
        message.zmq_identities = Vec::new();
        let _ = self.iopub.send(message);
    }

    fn reply(&self, content: impl Into<JupyterMessageContent>, parent: &JupyterMessage) {
        let _ = self.shell.send(JupyterMessage::new(content, Some(parent)));
    }

    /// Answer a request at once, with busy and idle around it.
    fn answer(&self, content: impl Into<JupyterMessageContent>, request: &JupyterMessage) {
        self.publish(Status::busy(), request);
        self.reply(content, request);
        self.publish(Status::idle(), request);
    }

    /// A cell runs, or the session is still starting.
    fn busy(&self) -> bool {
        self.interrupter.get().is_none_or(Interrupter::busy)
    }
}

async fn run(info: ConnectionInfo, started: Started, bound: impl FnOnce()) -> anyhow::Result<()> {
    let Started {
        kernel,
        iopub: mut iopub_rx,
        shell: mut shell_rx,
        work: work_tx,
    } = started;
    let session_id = crate::session::fresh_id();
    let mut iopub = create_kernel_iopub_connection(&info, &session_id).await?;
    let shell = create_kernel_shell_connection(&info, &session_id).await?;
    let mut control = create_kernel_control_connection(&info, &session_id).await?;
    let _stdin = create_kernel_stdin_connection(&info, &session_id).await?;
    let mut heartbeat = create_kernel_heartbeat_connection(&info).await?;
    bound();

    tokio::spawn(async move {
        while let Some(message) = iopub_rx.recv().await {
            if let Err(e) = iopub.send(message).await {
                eprintln!("recipe kernel: iopub send failed: {e}");
            }
        }
    });
    let _ = kernel
        .iopub
        .send(JupyterMessage::new(Status::starting(), None));
    tokio::spawn(async move {
        loop {
            let Ok(ping) = heartbeat.socket.recv().await else {
                return;
            };
            if heartbeat.socket.send(ping).await.is_err() {
                return;
            }
        }
    });

    let (mut shell_send, mut shell_recv) = shell.split();
    tokio::spawn(async move {
        while let Some(message) = shell_rx.recv().await {
            if let Err(e) = shell_send.send(message).await {
                eprintln!("recipe kernel: shell send failed: {e}");
            }
        }
    });

    // Shell: answer what needs no session, queue the rest.
    {
        let kernel = kernel.clone();
        tokio::spawn(async move {
            // Answered from the first moment: the session (evcxr, the analyzer, the runtime
            // library) starts on its own thread meanwhile, and cells sent before it is up
            // wait for it in the queue.
            loop {
                let request = match read_request(&mut shell_recv).await {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("recipe kernel: dropped a shell message: {e:#}");
                        continue;
                    }
                };
                match &request.content {
                    JupyterMessageContent::KernelInfoRequest(_) => {
                        kernel.answer(kernel_info(), &request)
                    }
                    JupyterMessageContent::IsCompleteRequest(r) => {
                        kernel.answer(is_complete_reply(&r.code), &request)
                    }
                    JupyterMessageContent::CommInfoRequest(_) => {
                        kernel.answer(CommInfoReply::default(), &request)
                    }
                    JupyterMessageContent::HistoryRequest(r) => {
                        let history = kernel.history.lock().unwrap().clone();
                        kernel.answer(history_reply(r, &history), &request)
                    }
                    JupyterMessageContent::CompleteRequest(r) if kernel.busy() => {
                        let names = kernel.variables.lock().unwrap().clone();
                        kernel.answer(word_completions(r, &names), &request)
                    }
                    JupyterMessageContent::ShutdownRequest(r) => {
                        kernel.answer(shutdown_reply(r.restart), &request);
                        shutdown().await;
                    }
                    JupyterMessageContent::ExecuteRequest(_)
                    | JupyterMessageContent::InspectRequest(_)
                    | JupyterMessageContent::CompleteRequest(_) => {
                        let _ = work_tx.send(request);
                    }
                    JupyterMessageContent::CommOpen(_)
                    | JupyterMessageContent::CommMsg(_)
                    | JupyterMessageContent::CommClose(_) => {}
                    other => {
                        eprintln!(
                            "recipe kernel: no handler for shell message {}",
                            other.message_type()
                        );
                    }
                }
            }
        });
    }

    // Control: interrupt and shutdown, never behind a running cell.
    loop {
        let request = match read_request(&mut control).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("recipe kernel: dropped a control message: {e:#}");
                continue;
            }
        };
        let reply: JupyterMessageContent = match &request.content {
            JupyterMessageContent::InterruptRequest(_) => {
                match kernel.interrupter.get() {
                    Some(i) => i.interrupt(),
                    // Nothing runs yet: the cells queued until the session is up will not.
                    None => {
                        kernel
                            .interrupted_while_starting
                            .store(true, Ordering::SeqCst);
                        // The session may have come up since we looked: interrupt its cell.
                        if let Some(i) = kernel.interrupter.get() {
                            i.interrupt();
                        }
                    }
                }
                InterruptReply::new().into()
            }
            JupyterMessageContent::ShutdownRequest(r) => shutdown_reply(r.restart).into(),
            JupyterMessageContent::KernelInfoRequest(_) => kernel_info().into(),
            other => {
                eprintln!(
                    "recipe kernel: no handler for control message {}",
                    other.message_type()
                );
                continue;
            }
        };
        let shutting_down = matches!(reply, JupyterMessageContent::ShutdownReply(_));
        kernel.publish(Status::busy(), &request);
        control
            .send(JupyterMessage::new(reply, Some(&request)))
            .await?;
        kernel.publish(Status::idle(), &request);
        if shutting_down {
            shutdown().await;
        }
    }
}

/// Read one request: signature verified by the protocol crate (a message with a bad or
/// missing signature is an error, never a request), then parsed. Optional fields that the
/// protocol crate's types require are filled in first (jupyter_client leaves out `n` and
/// `unique` of a history search, for one).
async fn read_request<S: SocketRecv>(
    connection: &mut Connection<S>,
) -> anyhow::Result<JupyterMessage> {
    let frames = connection.socket.recv().await?;
    let raw = RawMessage::from_multipart(frames, &connection.mac)
        .context("signature or framing rejected")?;
    let header: jupyter_protocol::Header =
        serde_json::from_slice(&raw.jparts[0]).context("bad header")?;
    let mut content: serde_json::Value =
        serde_json::from_slice(&raw.jparts[3]).context("bad content")?;
    if header.msg_type == "history_request" {
        let defaults = serde_json::json!({
            "output": false, "raw": true, "unique": false, "n": i32::MAX,
            "start": 0, "stop": 0, "session": null, "pattern": "*",
        });
        if let (Some(content), Some(defaults)) = (content.as_object_mut(), defaults.as_object()) {
            for (key, value) in defaults {
                if content.get(key).is_none_or(serde_json::Value::is_null) && key != "session" {
                    content.insert(key.clone(), value.clone());
                }
            }
        }
    }
    let content = JupyterMessageContent::from_type_and_content(&header.msg_type, content)
        .with_context(|| format!("unreadable {}", header.msg_type))?;
    Ok(JupyterMessage {
        zmq_identities: raw.zmq_identities,
        parent_header: serde_json::from_slice(&raw.jparts[1]).ok(),
        metadata: serde_json::from_slice(&raw.jparts[2]).unwrap_or_default(),
        buffers: raw.jparts[4..].to_vec(),
        header,
        content,
        channel: None,
    })
}

/// Give the last messages a moment to leave, then exit (the cell process ends with us).
async fn shutdown() {
    tokio::time::sleep(Duration::from_millis(100)).await;
    crate::session::remove_own_sessions();
    crate::spare::report_exit(0);
    std::process::exit(0);
}

/// The thread that owns the session: starts it, then runs queued requests in order.
fn session_thread(kernel: Arc<Kernel>, work: std_mpsc::Receiver<JupyterMessage>, spare: bool) {
    let sink: Sink = {
        let kernel = kernel.clone();
        Arc::new(move |io: Io| {
            let Some(parent) = kernel.parent.lock().unwrap().clone() else {
                return;
            };
            publish_io(&kernel, io, &parent);
        })
    };
    let archive = match Archive::open(Archive::default_root()) {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!("recipe kernel: cells will not be recorded: {e}");
            None
        }
    };
    let mut session = match Session::start(sink, archive) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("recipe kernel: could not start the session: {e:#}");
            std::process::exit(1);
        }
    };
    if spare {
        session.warm_analyzer();
    }
    let _ = kernel.interrupter.set(session.interrupter());
    if kernel
        .interrupted_while_starting
        .swap(false, Ordering::SeqCst)
    {
        abort_queued(&kernel, &mut session, &work);
    }
    // Nothing queued yet (a person reading the notebook): do the analysis a first `let` needs
    // now. A cell sent meanwhile waits for the rest of it, work it would mostly do anyway.
    let mut waiting = match work.recv_timeout(Duration::from_millis(300)) {
        Ok(request) => Some(request),
        Err(std_mpsc::RecvTimeoutError::Timeout) => {
            if !spare {
                session.warm_analyzer();
            }
            None
        }
        Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
    };

    while let Some(request) = waiting.take().or_else(|| work.recv().ok()) {
        kernel.publish(Status::busy(), &request);
        match &request.content {
            JupyterMessageContent::ExecuteRequest(r) => {
                let failed = execute(&kernel, &mut session, r, &request);
                if failed && r.stop_on_error {
                    abort_queued(&kernel, &mut session, &work);
                }
            }
            JupyterMessageContent::CompleteRequest(r) => {
                let reply = complete(&mut session, r);
                kernel.reply(reply, &request);
            }
            JupyterMessageContent::InspectRequest(r) => {
                let position = char_to_byte(&r.code, r.cursor_pos);
                let reply = match session.inspect(&r.code, position) {
                    Some((plain, html)) => InspectReply {
                        found: true,
                        data: media(&BTreeMap::from([
                            ("text/plain".to_string(), plain),
                            ("text/html".to_string(), html),
                        ])),
                        ..InspectReply::default()
                    },
                    None => InspectReply::default(),
                };
                kernel.reply(reply, &request);
            }
            _ => {}
        }
        kernel.publish(Status::idle(), &request);
    }
}

/// Run one execute request; true when it failed.
fn execute(
    kernel: &Kernel,
    session: &mut Session,
    r: &ExecuteRequest,
    request: &JupyterMessage,
) -> bool {
    let store = r.store_history && !r.silent;
    let count = session.execution_count + i64::from(store);
    if !r.silent {
        kernel.publish(
            ExecuteInput {
                code: r.code.clone(),
                execution_count: ExecutionCount::new(count as usize),
            },
            request,
        );
    }
    *kernel.parent.lock().unwrap() = (!r.silent).then(|| request.clone());
    let outcome = session.execute(&r.code, store);
    *kernel.parent.lock().unwrap() = None;
    if store {
        let result = match &outcome {
            Outcome::Ok { data } => data.get("text/plain").cloned().unwrap_or_default(),
            Outcome::Error { .. } => String::new(),
        };
        let entry = (session.execution_count, r.code.clone(), result);
        kernel.history.lock().unwrap().push(entry);
    }
    *kernel.variables.lock().unwrap() = session.variable_names();
    let execution_count = ExecutionCount::new(session.execution_count as usize);
    match outcome {
        Outcome::Ok { data } => {
            if !r.silent && !data.is_empty() {
                let result = ExecuteResult {
                    // An absent transient must be an empty object, not null.
                    transient: Some(Transient { display_id: None }),
                    ..ExecuteResult::new(execution_count, media(&data))
                };
                kernel.publish(result, request);
            }
            kernel.reply(
                ExecuteReply {
                    execution_count,
                    user_expressions: Some(HashMap::new()),
                    ..ExecuteReply::default()
                },
                request,
            );
            false
        }
        Outcome::Error {
            ename,
            evalue,
            traceback,
        } => {
            kernel.publish(
                ErrorOutput {
                    ename: ename.clone(),
                    evalue: evalue.clone(),
                    traceback: traceback.clone(),
                },
                request,
            );
            kernel.reply(
                ExecuteReply {
                    status: ReplyStatus::Error,
                    execution_count,
                    user_expressions: Some(HashMap::new()),
                    error: Some(Box::new(ReplyError {
                        ename,
                        evalue,
                        traceback,
                    })),
                    ..ExecuteReply::default()
                },
                request,
            );
            true
        }
    }
}

/// After a failed cell with stop_on_error, answer the executes already queued as aborted
/// (those sent after the client saw the error are not: it sent them knowing).
fn abort_queued(kernel: &Kernel, session: &mut Session, work: &std_mpsc::Receiver<JupyterMessage>) {
    // Taken all at once before the first reply: a client that sends its next cell as soon as
    // it sees that reply sends it knowing, and the cell must run.
    let queued: Vec<JupyterMessage> = work.try_iter().collect();
    for request in queued {
        kernel.publish(Status::busy(), &request);
        if let JupyterMessageContent::ExecuteRequest(r) = &request.content {
            session.record_aborted(&r.code);
            reply_aborted(kernel, session, &request);
        } else if let JupyterMessageContent::CompleteRequest(r) = &request.content {
            let reply = complete(session, r);
            kernel.reply(reply, &request);
        } else {
            kernel.reply(InspectReply::default(), &request);
        }
        kernel.publish(Status::idle(), &request);
    }
}

fn reply_aborted(kernel: &Kernel, session: &Session, request: &JupyterMessage) {
    kernel.reply(
        ExecuteReply {
            status: ReplyStatus::Aborted,
            execution_count: ExecutionCount::new(session.execution_count as usize),
            ..ExecuteReply::default()
        },
        request,
    );
}

fn publish_io(kernel: &Kernel, io: Io, parent: &JupyterMessage) {
    match io {
        Io::Stream { name, text } => {
            let name = if name == "stderr" {
                Stdio::Stderr
            } else {
                Stdio::Stdout
            };
            kernel.publish(StreamContent { name, text }, parent);
        }
        Io::Display {
            data,
            display_id,
            update,
        } => match (display_id, update) {
            (Some(id), true) => kernel.publish(UpdateDisplayData::new(media(&data), &id), parent),
            (id, _) => kernel.publish(
                DisplayData {
                    data: media(&data),
                    metadata: Default::default(),
                    transient: id.map(|id| Transient {
                        display_id: Some(id),
                    }),
                },
                parent,
            ),
        },
        Io::Clear { wait } => kernel.publish(ClearOutput { wait }, parent),
        Io::Panic | Io::PanicReport { .. } | Io::Failed { .. } => {}
    }
}

/// A MIME bundle in the protocol crate's type.
fn media(data: &BTreeMap<String, String>) -> Media {
    serde_json::to_value(data)
        .and_then(serde_json::from_value)
        .unwrap_or_default()
}

fn kernel_info() -> KernelInfoReply {
    KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: "5.3".into(),
        implementation: "recipe".into(),
        implementation_version: env!("CARGO_PKG_VERSION").into(),
        language_info: LanguageInfo {
            name: "rust".into(),
            version: crate::runtime_lib::rustc_version().unwrap_or_default(),
            mimetype: Some("text/rust".into()),
            file_extension: Some(".rs".into()),
            pygments_lexer: Some("rust".into()),
            codemirror_mode: Some(jupyter_protocol::CodeMirrorMode::Simple("rust".into())),
            nbconvert_exporter: Some("rust".into()),
        },
        banner: format!(
            "recipe {}: Rust with the recipe runtime preloaded (use recipe::prelude::*)",
            env!("CARGO_PKG_VERSION")
        ),
        help_links: vec![HelpLink {
            text: "A Recipe for Training Neural Networks".into(),
            url: "https://karpathy.github.io/2019/04/25/recipe/".into(),
        }],
        debugger: false,
        error: None,
    }
}

fn is_complete_reply(code: &str) -> IsCompleteReply {
    match is_complete(code) {
        Completeness::Complete => {
            IsCompleteReply::new(IsCompleteReplyStatus::Complete, String::new())
        }
        Completeness::Incomplete { indent } => {
            IsCompleteReply::new(IsCompleteReplyStatus::Incomplete, indent)
        }
        Completeness::Invalid => {
            IsCompleteReply::new(IsCompleteReplyStatus::Invalid, String::new())
        }
    }
}

fn history_reply(request: &HistoryRequest, history: &[(i64, String, String)]) -> HistoryReply {
    let with_output = match request {
        HistoryRequest::Tail { output, .. }
        | HistoryRequest::Range { output, .. }
        | HistoryRequest::Search { output, .. } => *output,
    };
    let entry = |(n, code, result): &(i64, String, String)| {
        if with_output {
            HistoryEntry::InputOutput(0, *n as usize, (code.clone(), result.clone()))
        } else {
            HistoryEntry::Input(0, *n as usize, code.clone())
        }
    };
    let entries: Vec<HistoryEntry> = match request {
        HistoryRequest::Tail { n, .. } => {
            let skip = history.len().saturating_sub((*n).max(0) as usize);
            history[skip..].iter().map(entry).collect()
        }
        HistoryRequest::Range { start, stop, .. } => history
            .iter()
            .filter(|(n, ..)| *n >= i64::from(*start) && (*stop <= 0 || *n < i64::from(*stop)))
            .map(entry)
            .collect(),
        HistoryRequest::Search {
            pattern, n, unique, ..
        } => {
            let mut matching: Vec<_> = history
                .iter()
                .filter(|(_, code, _)| glob_match(pattern, code))
                .collect();
            if *unique {
                // The latest entry of each distinct code.
                let mut seen = std::collections::BTreeSet::new();
                matching.reverse();
                matching.retain(|(_, code, _)| seen.insert(code.clone()));
                matching.reverse();
            }
            let skip = matching.len().saturating_sub((*n).max(0) as usize);
            matching[skip..].iter().map(|e| entry(e)).collect()
        }
    };
    HistoryReply::new(entries)
}

/// IPython's history search pattern: `*` any text, `?` one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    go(&p, &t)
}

fn shutdown_reply(restart: bool) -> ShutdownReply {
    ShutdownReply {
        restart,
        status: ReplyStatus::Ok,
        error: None,
    }
}

fn complete(session: &mut Session, r: &CompleteRequest) -> CompleteReply {
    let position = char_to_byte(&r.code, r.cursor_pos);
    let (start, end, matches) = session.complete(&r.code, position);
    CompleteReply {
        matches,
        cursor_start: byte_to_char(&r.code, start),
        cursor_end: byte_to_char(&r.code, end),
        status: ReplyStatus::Ok,
        ..CompleteReply::default()
    }
}

/// While a cell runs: the session's variables, the prelude's names and Rust keywords that
/// start with the word before the cursor.
fn word_completions(r: &CompleteRequest, variables: &[String]) -> CompleteReply {
    let position = char_to_byte(&r.code, r.cursor_pos);
    let before = &r.code[..position];
    let start = before
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let word = &before[start..];
    let mut matches: Vec<String> = variables
        .iter()
        .map(String::as_str)
        .chain(crate::is_complete::KNOWN_NAMES.iter().copied())
        .filter(|name| !word.is_empty() && name.starts_with(word))
        .map(String::from)
        .collect();
    matches.sort();
    matches.dedup();
    CompleteReply {
        matches,
        cursor_start: byte_to_char(&r.code, start),
        cursor_end: r.cursor_pos,
        status: ReplyStatus::Ok,
        ..CompleteReply::default()
    }
}

/// Jupyter counts cursor positions in characters (code points); Rust strings in bytes.
fn char_to_byte(code: &str, chars: usize) -> usize {
    code.char_indices()
        .nth(chars)
        .map_or(code.len(), |(i, _)| i)
}

fn byte_to_char(code: &str, bytes: usize) -> usize {
    code[..bytes.min(code.len())].chars().count()
}
