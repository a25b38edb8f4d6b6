//! Warm spares: a session started ahead of time for the next kernel launched the same way.
//!
//! Starting a session costs seconds (evcxr's analyzer reads the standard library, the runtime
//! library is attached and its source analysed), all before the first cell can run. So once a
//! Jupyter kernel's session is up and its first cells had the CPU, the kernel starts one
//! spare: a detached `recipe kernel --spare` that starts a session of its own and waits on a
//! Unix socket. The next launch with the same binary, working folder and environment (a
//! kernel restart, above all) hands its connection file to the spare, which binds the sockets
//! and serves. The launched process stays the process Jupyter manages: it lives exactly as
//! long as the spare serves it, and the spare ends when it ends, however it ends (a shutdown
//! request, SIGTERM, kill -9). A spare nobody claims ends after [`IDLE`].
//!
//! Per launch KEY, the spares folder (`$XDG_RUNTIME_DIR/recipe-spares`, else
//! `$TMPDIR/recipe-spares-UID`, mode 0700 and checked) holds `KEY.lock` (held by the one spare
//! starting or waiting for that launch), `KEY.sock`, `KEY.json` (what `recipe spares` shows)
//! and `KEY-PID.log` (what a spare reports before it is claimed; a claimed spare reports to
//! the claimant's stderr, that is to Jupyter's log). Only processes of the same user may talk
//! to a spare. `RECIPE_SPARE=0` turns spares off.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::jupyter::Started;

/// The notebook's path, which Jupyter sets for each kernel it starts. Left out of the match,
/// so that a spare serves any notebook of the folder; the spare's own process keeps the value
/// of the kernel that started it.
const PER_NOTEBOOK: &str = "JPY_SESSION_NAME";

/// How long a spare waits to be claimed before it ends.
pub const IDLE: Duration = Duration::from_secs(15 * 60);

/// How long a kernel's session must have been up with no cell running before the kernel
/// starts a spare, so that a spare's start (seconds of CPU) does not slow the user's cells.
const SETTLE: Duration = Duration::from_secs(3);

/// The environment this process was launched with, before a session set anything (evcxr's
/// folder): what a spare must match and what it is started with.
static LAUNCH_ENV: std::sync::OnceLock<std::collections::BTreeMap<OsString, OsString>> =
    std::sync::OnceLock::new();

/// Remember the launch environment; call before a session starts.
pub fn remember_launch_env() {
    launch_env();
}

fn launch_env() -> &'static std::collections::BTreeMap<OsString, OsString> {
    LAUNCH_ENV.get_or_init(|| std::env::vars_os().collect())
}

/// Whether spares are on (`RECIPE_SPARE=0` turns them off).
fn enabled() -> bool {
    std::env::var("RECIPE_SPARE").map_or(true, |v| v != "0")
}

/// What a launch must share with a spare for the spare to serve it: the binary (path and
/// modification time, so a reinstall retires old spares), the working folder and every
/// environment variable, sorted, but for [`PER_NOTEBOOK`].
fn key() -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let exe = std::env::current_exe()?;
    let modified = std::fs::metadata(&exe)?.modified()?;
    hasher.update(exe.as_os_str().as_encoded_bytes());
    hasher.update(format!("{modified:?}").as_bytes());
    hasher.update(std::env::current_dir()?.as_os_str().as_encoded_bytes());
    for (name, value) in launch_env() {
        if name == PER_NOTEBOOK {
            continue;
        }
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_encoded_bytes());
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(value.as_encoded_bytes());
    }
    Ok(hasher.finalize().to_hex()[..24].to_string())
}

/// This user's spares folder, created 0700 if missing; refused unless it is a real folder of
/// this user that nobody else may enter (a folder in a shared `/tmp` could be planted).
fn folder() -> anyhow::Result<PathBuf> {
    let uid = unsafe { libc::getuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(runtime) if runtime.is_absolute() && runtime.is_dir() => runtime.join("recipe-spares"),
        _ => std::env::temp_dir().join(format!("recipe-spares-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    anyhow::ensure!(
        meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0,
        "{} is not a folder of this user closed to others; remove it",
        dir.display()
    );
    Ok(dir)
}

/// This launch's files in the spares folder: `KEY` with an extension.
struct Files {
    dir: PathBuf,
    key: String,
}

impl Files {
    fn of_this_launch() -> anyhow::Result<Files> {
        Ok(Files {
            dir: folder()?,
            key: key()?,
        })
    }

    fn with(&self, extension: &str) -> PathBuf {
        self.dir.join(format!("{}.{extension}", self.key))
    }

    fn log(&self, pid: u32) -> PathBuf {
        self.dir.join(format!("{}-{pid}.log", self.key))
    }
}

/// An exclusive flock on `path` (created if missing), held while the file stays open; None
/// when another process holds it (`KEY.lock`: the one spare starting or waiting for a launch). The kernel drops a lock when its process dies, however.
fn take_lock(path: &Path) -> std::io::Result<Option<File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    // SAFETY: flock on an open descriptor has no memory effects.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    Ok(locked.then_some(file))
}

/// A spare serving this launch.
pub struct Handover {
    /// The spare's answers; the reader that read `serving` may already hold the next line.
    answers: BufReader<UnixStream>,
}

impl Handover {
    /// Block until the spare stops serving; the exit code it reports (1 when it ended without
    /// one: it crashed or was killed).
    pub fn wait(self) -> i32 {
        let _ = self.answers.get_ref().set_read_timeout(None);
        for line in self.answers.lines() {
            match line {
                Ok(line) => {
                    if let Some(code) = line.strip_prefix("exit ").and_then(|c| c.parse().ok()) {
                        return code;
                    }
                }
                Err(_) => break,
            }
        }
        eprintln!("recipe kernel: the spare session serving this kernel ended without a word");
        1
    }
}

/// Hand `connection_file` to a waiting spare of this launch. None when there is none, or it
/// could not bind the sockets (it answers only once it has): the caller starts its own.
pub fn claim(connection_file: &Path) -> Option<Handover> {
    if !enabled() {
        return None;
    }
    let files = Files::of_this_launch().ok()?;
    let mut stream = UnixStream::connect(files.with("sock")).ok()?;
    let request = serde_json::json!({
        "connection_file": std::path::absolute(connection_file).ok()?,
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    writeln!(stream, "{request}").ok()?;
    let mut answers = BufReader::new(stream);
    let mut answer = String::new();
    answers.read_line(&mut answer).ok()?;
    (answer.trim() == "serving").then_some(Handover { answers })
}

/// Once the session of `started` has been idle for [`SETTLE`], start a spare for the next
/// launch, unless one is already starting or waiting.
pub fn spawn_after_start(started: &Started) {
    if !enabled() {
        return;
    }
    let idle = started.idle_probe();
    let _ = std::thread::Builder::new()
        .name("recipe-spare".into())
        .spawn(move || {
            let tick = Duration::from_millis(250);
            let mut idle_for = Duration::ZERO;
            while idle_for < SETTLE {
                std::thread::sleep(tick);
                idle_for = if idle() {
                    idle_for + tick
                } else {
                    Duration::ZERO
                };
            }
            if let Err(e) = spawn() {
                eprintln!("recipe kernel: no warm spare for the next start: {e:#}");
            }
        });
}

fn spawn() -> anyhow::Result<()> {
    let files = Files::of_this_launch()?;
    if take_lock(&files.with("lock"))?.is_none() {
        return Ok(()); // one is starting or waiting
    }
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args(["kernel", "--spare"])
        .env_clear()
        .envs(launch_env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Its own session: Jupyter ending this kernel's process group must not end the spare.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    command.spawn().context("start a spare")?;
    Ok(())
}

/// The claimant of a serving spare: told the exit code before the spare ends.
static CLAIMANT: OnceLock<Mutex<UnixStream>> = OnceLock::new();

/// Tell the process this spare serves how the kernel ended (nothing when not a spare).
pub fn report_exit(code: i32) {
    if let Some(stream) = CLAIMANT.get() {
        if let Ok(mut stream) = stream.lock() {
            let _ = writeln!(stream, "exit {code}");
        }
    }
}

/// `recipe kernel --spare`: start a session, wait to be claimed, then serve the claimant's
/// connection file for as long as the claimant lives.
pub fn run_spare() -> anyhow::Result<()> {
    remember_launch_env();
    let files = Files::of_this_launch()?;
    let Some(lock) = take_lock(&files.with("lock"))? else {
        return Ok(()); // another spare of this launch is starting or waiting
    };
    let log = files.log(std::process::id());
    report_to(&log, false);
    crate::session::check_runtime()?;
    let started = Started::begin(true)?;
    let ready = started.ready_probe();
    while !ready() {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Holding the lock, no other spare owns a socket here: one left behind is stale.
    let socket = files.with("sock");
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("listen at {}", socket.display()))?;
    listener.set_nonblocking(true)?;
    write_card(&files.with("json"))?;
    let leave = || {
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(files.with("json"));
        crate::session::remove_own_sessions();
        remove_if_empty(&log);
    };
    let since = Instant::now();
    let (stream, connection_file, claimant) = loop {
        match listener.accept() {
            Ok((stream, _)) => match read_request(&stream) {
                Some(Request::Stop) => {
                    let _ = (&stream).write_all(b"stopping\n");
                    leave();
                    return Ok(());
                }
                Some(Request::Claim { file, pid }) => break (stream, file, pid),
                None => {}
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if since.elapsed() > IDLE {
                    leave();
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                leave();
                return Err(e).context("accept a claim");
            }
        }
    };
    // Claimed: nobody else may connect, and the next spare of this launch may start.
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(files.with("json"));
    drop(listener);
    drop(lock);
    // From here on, what this kernel reports goes where the claimant's would (Jupyter's log).
    if report_to(Path::new(&format!("/proc/{claimant}/fd/2")), true) {
        remove_if_empty(&log);
    }
    let failed = |e: &anyhow::Error| {
        eprintln!("recipe kernel: a spare session could not serve: {e:#}");
        let _ = (&stream).write_all(b"failed\n");
    };
    let info = match crate::jupyter::read_connection_file(&connection_file) {
        Ok(info) => info,
        Err(e) => {
            failed(&e);
            return Err(e);
        }
    };
    let watched = stream.try_clone()?;
    let told = stream.try_clone()?;
    spawn_after_start(&started);
    let served = started.serve_then(info, move || {
        // Every socket is bound: the claimant may stop trying, and its end closing (however
        // it ends) ends this kernel.
        let _ = (&told).write_all(b"serving\n");
        let _ = CLAIMANT.set(Mutex::new(told));
        let _ = std::thread::Builder::new()
            .name("recipe-claimant".into())
            .spawn(move || {
                let _ = watched.set_read_timeout(None);
                let mut rest = Vec::new();
                let _ = (&watched).read_to_end(&mut rest);
                crate::session::remove_own_sessions();
                std::process::exit(0);
            });
    });
    match &served {
        Err(e) if CLAIMANT.get().is_none() => failed(e),
        Err(_) => report_exit(1),
        Ok(()) => report_exit(0),
    }
    served
}

/// Send this process's stderr to `path` (appending); false when it cannot be opened.
fn report_to(path: &Path, existing: bool) -> bool {
    let file = std::fs::OpenOptions::new()
        .create(!existing)
        .append(true)
        .mode(0o600)
        .open(path);
    match file {
        // SAFETY: dup2 onto the process's own stderr descriptor.
        Ok(file) => unsafe { libc::dup2(file.as_raw_fd(), 2) >= 0 },
        Err(_) => false,
    }
}

fn remove_if_empty(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(path);
    }
}

/// What a process connecting to a spare asks.
enum Request {
    /// End without serving (`recipe spares --stop`).
    Stop,
    /// Serve this connection file for the process `pid` (the one connected).
    Claim { file: PathBuf, pid: u32 },
}

/// One request line from a process of this user: `{"stop": true}` or
/// `{"connection_file": PATH}`; None for anything else.
fn read_request(stream: &UnixStream) -> Option<Request> {
    let (uid, pid) = peer(stream)?;
    if uid != unsafe { libc::getuid() } {
        return None;
    }
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    let request: serde_json::Value = serde_json::from_str(&line).ok()?;
    if request["stop"] == true {
        return Some(Request::Stop);
    }
    Some(Request::Claim {
        file: PathBuf::from(request["connection_file"].as_str()?),
        pid: u32::try_from(pid).ok()?,
    })
}

/// The user and process at the other end of a Unix socket (the kernel vouches for both).
fn peer(stream: &UnixStream) -> Option<(libc::uid_t, libc::pid_t)> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut size = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one ucred into the buffer of the size given.
    let done = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut size,
        )
    };
    (done == 0).then_some((credentials.uid, credentials.pid))
}

/// What `recipe spares` shows of a waiting spare (`KEY.json`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Card {
    pid: u32,
    folder: PathBuf,
    waiting_since: chrono::DateTime<chrono::Utc>,
}

fn write_card(path: &Path) -> anyhow::Result<()> {
    let card = Card {
        pid: std::process::id(),
        folder: std::env::current_dir()?,
        waiting_since: chrono::Utc::now(),
    };
    std::fs::write(path, serde_json::to_vec(&card)?)
        .with_context(|| format!("write {}", path.display()))
}

/// `recipe spares [--stop]`: list this user's waiting spares, or end them (by asking each
/// one, so that a spare claimed meanwhile is never stopped).
pub fn manage(stop: bool) -> anyhow::Result<()> {
    let dir = folder()?;
    let mut cards: Vec<(PathBuf, Card)> = Vec::new();
    for entry in std::fs::read_dir(&dir)?.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(card) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Card>(&bytes).ok())
        else {
            continue; // claimed or ended while we looked
        };
        // A waiting spare holds its lock; a card whose lock is free was left by a spare that
        // was killed.
        if let Ok(Some(_free)) = take_lock(&path.with_extension("lock")) {
            let _ = std::fs::remove_file(path.with_extension("sock"));
            let _ = std::fs::remove_file(&path);
            continue;
        }
        cards.push((path, card));
    }
    cards.sort_by_key(|(_, card)| card.waiting_since);
    let mut shown = 0;
    for (path, card) in &cards {
        if stop {
            let asked = (|| -> std::io::Result<bool> {
                let mut stream = UnixStream::connect(path.with_extension("sock"))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                writeln!(stream, "{}", serde_json::json!({ "stop": true }))?;
                let mut answer = String::new();
                BufReader::new(&stream).read_line(&mut answer)?;
                Ok(answer.trim() == "stopping")
            })();
            if asked.unwrap_or(false) {
                println!("stopped spare {} for {}", card.pid, card.folder.display());
                shown += 1;
            }
        } else {
            let minutes = (chrono::Utc::now() - card.waiting_since).num_minutes();
            println!(
                "spare {} for {}, waiting {minutes} min, {} MiB",
                card.pid,
                card.folder.display(),
                resident_mib(card.pid)
            );
            shown += 1;
        }
    }
    if shown == 0 {
        println!("no spare is waiting");
    }
    Ok(())
}

/// Resident memory of a process and its children (the spare's cell process), in MiB.
fn resident_mib(pid: u32) -> u64 {
    let rss = |pid: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    };
    // The cell process is a child of the session thread, so every thread's children count.
    let children: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let kib = rss(&pid.to_string()) + children.iter().map(|c| rss(c)).sum::<u64>();
    kib / 1024
}
