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
//! A request that nothing is ahead of is `busy` as soon as it arrives, even while the session
//! starts, and a cell that waits more than a second for the session says so until it runs.
//! (A request queued behind another turns busy when it starts, after the other's idle: one
//! busy and one idle per request, as clients expect.)
//!
//! An interrupt stops the running cell and aborts every request queued behind it, as
//! ipykernel does: Stop in a notebook stops the notebook, not only its current cell.
//!
//! iopub is an XPUB socket that greets each subscriber with `iopub_welcome` (JEP 65); a cell
//! that asks for input (`recipe::input`) sends `input_request` on the stdin socket and waits
//! for the client's `input_reply`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use jupyter_protocol::{
    ClearOutput, CommClose, CommInfoReply, CompleteReply, CompleteRequest, ConnectionInfo,
    DisplayData, ErrorOutput, ExecuteInput, ExecuteReply, ExecuteRequest, ExecuteResult,
    ExecutionCount, InputRequest, InspectReply, InterruptReply, IoPubWelcome, JupyterMessage,
    JupyterMessageContent, Media, ReplyError, ReplyStatus, Status, Stdio, StreamContent, Transient,
    UpdateDisplayData,
};
use jupyter_zmq_client::{
    connection::{Connection, RawMessage, SubscriptionEvent},
    create_kernel_control_connection, create_kernel_heartbeat_connection,
    create_kernel_iopub_xpub_connection, create_kernel_shell_connection,
    create_kernel_stdin_connection,
};
use recipe::notebook::Io;
use recipe_archive::Archive;
use tokio::sync::mpsc;
use zeromq::{SocketRecv, SocketSend};

use crate::replies::{
    byte_to_char, char_to_byte, history_reply, is_complete_reply, kernel_info, shutdown_reply,
    word_completions,
};
use crate::session::{Interrupter, Outcome, Session, Sink};

/// How long a cell waits for the starting session before it says so.
const STARTING_NOTE_AFTER: Duration = Duration::from_secs(1);

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
    stdin: mpsc::UnboundedReceiver<JupyterMessage>,
    work: std_mpsc::Sender<JupyterMessage>,
}

impl Started {
    /// Start the session thread; a `spare` also warms the analyzer before it says it is ready.
    pub fn begin(spare: bool) -> anyhow::Result<Started> {
        let (iopub_tx, iopub) = mpsc::unbounded_channel::<JupyterMessage>();
        let (shell_tx, shell) = mpsc::unbounded_channel::<JupyterMessage>();
        let (stdin_tx, stdin) = mpsc::unbounded_channel::<JupyterMessage>();
        let kernel = Arc::new(Kernel {
            iopub: iopub_tx,
            shell: shell_tx,
            stdin: stdin_tx,
            input_answer: Mutex::new(None),
            interrupted: AtomicBool::new(false),
            behind_interrupt: AtomicUsize::new(0),
            told_starting: Mutex::new(BTreeSet::new()),
            queued: AtomicUsize::new(0),
            busy_on_arrival: Mutex::new(BTreeSet::new()),
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
            stdin,
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
    stdin: mpsc::UnboundedSender<JupyterMessage>,
    /// The `input_request` a cell waits on (its message id) and where its answer goes.
    input_answer: Mutex<Option<(String, std_mpsc::Sender<String>)>>,
    /// An interrupt came while a cell ran: the requests queued behind it are aborted.
    interrupted: AtomicBool,
    /// How many requests were queued behind the running cell when the interrupt came: those
    /// are aborted, and one sent after Stop runs.
    behind_interrupt: AtomicUsize,
    /// Execute requests (by message id) told that the session is still starting.
    told_starting: Mutex<BTreeSet<String>>,
    /// Requests for the session thread that are queued or running.
    queued: AtomicUsize,
    /// Requests (by message id) whose busy was published when they arrived.
    busy_on_arrival: Mutex<BTreeSet<String>>,
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

    /// Hand a request to the session thread; busy at once when nothing is ahead of it.
    fn queue(&self, request: JupyterMessage, work: &std_mpsc::Sender<JupyterMessage>) {
        if self.queued.fetch_add(1, Ordering::SeqCst) == 0 {
            let id = request.header.msg_id.clone();
            self.busy_on_arrival.lock().unwrap().insert(id);
            self.publish(Status::busy(), &request);
        }
        let _ = work.send(request);
    }

    /// The session thread starts `request`: busy, unless it was when it arrived.
    fn begin(&self, request: &JupyterMessage) {
        let early = self
            .busy_on_arrival
            .lock()
            .unwrap()
            .remove(&request.header.msg_id);
        if !early {
            self.publish(Status::busy(), request);
        }
    }

    /// The session thread is done with `request`.
    fn end(&self, request: &JupyterMessage) {
        self.publish(Status::idle(), request);
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    /// Tell a cell that still waits for the session that it is starting.
    fn tell_starting(&self, request: &JupyterMessage) {
        // Under the lock the session thread takes before it runs the cell: the note is
        // either cleared by it or never sent.
        let mut told = self.told_starting.lock().unwrap();
        if self.interrupter.get().is_none() {
            told.insert(request.header.msg_id.clone());
            self.publish(
                StreamContent {
                    name: Stdio::Stdout,
                    text: "starting the Rust session...\n".into(),
                },
                request,
            );
        }
    }

    /// The cell `request` starts: clear the note that it waited for the session, if any.
    fn clear_starting_note(&self, request: &JupyterMessage) {
        if self
            .told_starting
            .lock()
            .unwrap()
            .remove(&request.header.msg_id)
        {
            self.publish(ClearOutput { wait: false }, request);
        }
    }

    /// Ask the client of the running cell for a line (`input_request` on stdin). `None` when
    /// the cell is silent, its client sent `allow_stdin: false`, or an interrupt comes while
    /// it waits.
    fn ask(&self, prompt: &str, password: bool) -> Option<String> {
        let parent = self.parent.lock().unwrap().clone()?;
        let JupyterMessageContent::ExecuteRequest(r) = &parent.content else {
            return None;
        };
        if !r.allow_stdin {
            return None;
        }
        // A reply to the request: it goes to the same client, by its identities.
        let request = JupyterMessage::new(
            InputRequest {
                prompt: prompt.into(),
                password,
            },
            Some(&parent),
        );
        let (answer, answered) = std_mpsc::channel();
        *self.input_answer.lock().unwrap() = Some((request.header.msg_id.clone(), answer));
        let value = match self.stdin.send(request) {
            Ok(()) => loop {
                match answered.recv_timeout(Duration::from_millis(100)) {
                    Ok(value) => break Some(value),
                    Err(std_mpsc::RecvTimeoutError::Timeout)
                        if !self.interrupted.load(Ordering::SeqCst) => {}
                    Err(_) => break None,
                }
            },
            Err(_) => None,
        };
        // An answer that comes later belongs to no one.
        *self.input_answer.lock().unwrap() = None;
        value
    }

    /// Interrupt the running cell; the requests queued behind it are aborted when it ends.
    fn interrupt(&self, interrupter: &Interrupter) {
        // Set before the signal (the cell may end at once), taken back when no cell ran.
        let behind = self.queued.load(Ordering::SeqCst).saturating_sub(1);
        self.behind_interrupt.store(behind, Ordering::SeqCst);
        self.interrupted.store(true, Ordering::SeqCst);
        if !interrupter.interrupt() {
            self.interrupted.store(false, Ordering::SeqCst);
        }
    }
}

async fn run(info: ConnectionInfo, started: Started, bound: impl FnOnce()) -> anyhow::Result<()> {
    let Started {
        kernel,
        iopub: mut iopub_rx,
        shell: mut shell_rx,
        stdin: mut stdin_rx,
        work: work_tx,
    } = started;
    let session_id = crate::session::fresh_id();
    let mut iopub = create_kernel_iopub_xpub_connection(&info, &session_id).await?;
    let shell = create_kernel_shell_connection(&info, &session_id).await?;
    let mut control = create_kernel_control_connection(&info, &session_id).await?;
    let stdin = create_kernel_stdin_connection(&info, &session_id).await?;
    let mut heartbeat = create_kernel_heartbeat_connection(&info).await?;
    bound();

    tokio::spawn(async move {
        loop {
            tokio::select! {
                // A subscriber is greeted before anything else is sent to it.
                biased;
                event = iopub.recv_subscription() => {
                    if let Ok(SubscriptionEvent::Subscribe(topic)) = event {
                        if let Err(e) = iopub.send(IoPubWelcome::new(topic).into()).await {
                            eprintln!("recipe kernel: iopub send failed: {e}");
                        }
                    }
                }
                message = iopub_rx.recv() => {
                    let Some(message) = message else { return };
                    if let Err(e) = iopub.send(message).await {
                        eprintln!("recipe kernel: iopub send failed: {e}");
                    }
                }
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

    let (mut stdin_send, mut stdin_recv) = stdin.split();
    tokio::spawn(async move {
        while let Some(message) = stdin_rx.recv().await {
            if let Err(e) = stdin_send.send(message).await {
                eprintln!("recipe kernel: stdin send failed: {e}");
            }
        }
    });
    {
        let kernel = kernel.clone();
        tokio::spawn(async move {
            loop {
                match read_request(&mut stdin_recv).await {
                    Ok(JupyterMessage {
                        content: JupyterMessageContent::InputReply(reply),
                        parent_header,
                        ..
                    }) => {
                        // The answer to the box the cell waits on: one that names another
                        // request is late (jupyter_client names none, as ipykernel allows).
                        let mut waiting = kernel.input_answer.lock().unwrap();
                        let asked = waiting.as_ref().map(|(id, _)| id.as_str());
                        let answers = parent_header.as_ref().map(|h| h.msg_id.as_str());
                        if answers.is_none_or(|id| Some(id) == asked) {
                            if let Some((_, answer)) = waiting.take() {
                                let _ = answer.send(reply.value);
                            }
                        }
                    }
                    Ok(other) => eprintln!(
                        "recipe kernel: no handler for stdin message {}",
                        other.content.message_type()
                    ),
                    Err(e) => eprintln!("recipe kernel: dropped a stdin message: {e:#}"),
                }
            }
        });
    }

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
                        let execute =
                            matches!(request.content, JupyterMessageContent::ExecuteRequest(_));
                        if execute && kernel.interrupter.get().is_none() {
                            let (kernel, request) = (kernel.clone(), request.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(STARTING_NOTE_AFTER).await;
                                kernel.tell_starting(&request);
                            });
                        }
                        kernel.queue(request, &work_tx);
                    }
                    // recipe opens no comms: an unknown target is closed at once, with the
                    // reason, as ipykernel does.
                    JupyterMessageContent::CommOpen(open) => {
                        let reason = format!("recipe has no comm target {:?}", open.target_name);
                        let close = CommClose {
                            comm_id: open.comm_id.clone(),
                            data: serde_json::Map::from_iter([("reason".into(), reason.into())]),
                        };
                        kernel.publish(Status::busy(), &request);
                        kernel.publish(close, &request);
                        kernel.publish(Status::idle(), &request);
                    }
                    JupyterMessageContent::CommMsg(_) | JupyterMessageContent::CommClose(_) => {}
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
                    Some(i) => kernel.interrupt(i),
                    // Nothing runs yet: the cells queued until the session is up will not.
                    None => {
                        kernel
                            .interrupted_while_starting
                            .store(true, Ordering::SeqCst);
                        // The session may have come up since we looked: interrupt its cell.
                        if let Some(i) = kernel.interrupter.get() {
                            kernel.interrupt(i);
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
    {
        let kernel = kernel.clone();
        session.set_input_reader(Box::new(move |prompt, password| {
            kernel.ask(prompt, password)
        }));
    }
    let _ = kernel.interrupter.set(session.interrupter());
    if kernel
        .interrupted_while_starting
        .swap(false, Ordering::SeqCst)
    {
        abort_queued(&kernel, &mut session, &work, usize::MAX);
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
        kernel.begin(&request);
        match &request.content {
            JupyterMessageContent::ExecuteRequest(r) => {
                // An interrupt meant for an earlier cell is not this one's.
                kernel.interrupted.store(false, Ordering::SeqCst);
                let failed = execute(&kernel, &mut session, r, &request);
                // Stop stops the notebook: whatever the interrupted cell returned, the cells
                // queued behind it do not run.
                if kernel.interrupted.swap(false, Ordering::SeqCst) {
                    let behind = kernel.behind_interrupt.load(Ordering::SeqCst);
                    abort_queued(&kernel, &mut session, &work, behind);
                } else if failed && r.stop_on_error {
                    abort_queued(&kernel, &mut session, &work, usize::MAX);
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
        kernel.end(&request);
    }
}

/// Run one execute request; true when it failed.
fn execute(
    kernel: &Kernel,
    session: &mut Session,
    r: &ExecuteRequest,
    request: &JupyterMessage,
) -> bool {
    kernel.clear_starting_note(request);
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

/// After an interrupted cell, or a failed one with stop_on_error, answer at most `limit` of
/// the executes already queued as aborted (after an interrupt, those queued when it came:
/// a cell sent after Stop, or after the client saw the reply, was sent knowing).
fn abort_queued(
    kernel: &Kernel,
    session: &mut Session,
    work: &std_mpsc::Receiver<JupyterMessage>,
    limit: usize,
) {
    // Taken all at once before the first reply: a client that sends its next cell as soon as
    // it sees that reply sends it knowing, and the cell must run.
    let queued: Vec<JupyterMessage> = work.try_iter().take(limit).collect();
    for request in queued {
        kernel.begin(&request);
        if let JupyterMessageContent::ExecuteRequest(r) = &request.content {
            kernel.clear_starting_note(&request);
            session.record_aborted(&r.code);
            reply_aborted(kernel, session, &request);
        } else if let JupyterMessageContent::CompleteRequest(r) = &request.content {
            let reply = complete(session, r);
            kernel.reply(reply, &request);
        } else {
            kernel.reply(InspectReply::default(), &request);
        }
        kernel.end(&request);
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
