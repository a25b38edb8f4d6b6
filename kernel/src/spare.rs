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
//! `RECIPE_SPARE=0` turns spares off. The spare writes what it reports to `KEY.log` next to
//! its socket.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::jupyter::Started;

/// The notebook's path, which Jupyter sets for each kernel it starts. Left out of the match,
/// so that a spare serves any notebook of the folder; the spare's own process keeps the value
/// of the kernel that started it.
const PER_NOTEBOOK: &str = "JPY_SESSION_NAME";

/// How long a spare waits to be claimed before it ends.
pub const IDLE: Duration = Duration::from_secs(15 * 60);

/// How long after its session is up a kernel waits before starting a spare, so that the
/// user's first cells do not share the CPU with it.
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

/// The folder of this user's spares (mode 0700), and this launch's socket in it.
fn socket_path() -> anyhow::Result<PathBuf> {
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("recipe-spares-{uid}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir.join(format!("{}.sock", key()?)))
}

/// A spare serving this launch.
pub struct Handover {
    stream: UnixStream,
}

impl Handover {
    /// Block until the spare stops serving (shutdown, crash); the exit code for this process.
    pub fn wait(mut self) -> i32 {
        let _ = self.stream.set_read_timeout(None);
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest);
        0
    }
}

/// Hand `connection_file` to a waiting spare of this launch; None when there is none (or it
/// does not answer), and the caller starts its own session.
pub fn claim(connection_file: &Path) -> Option<Handover> {
    if !enabled() {
        return None;
    }
    let path = socket_path().ok()?;
    let mut stream = UnixStream::connect(&path).ok()?;
    let absolute = std::path::absolute(connection_file).ok()?;
    let request = serde_json::json!({ "connection_file": absolute });
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    writeln!(stream, "{request}").ok()?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).ok()?;
    (answer.trim() == "serving").then_some(Handover { stream })
}

/// Once the session of `started` is up and has had [`SETTLE`] to itself, start a spare for
/// the next launch, unless one is already waiting.
pub fn spawn_after_start(started: &Started) {
    if !enabled() {
        return;
    }
    let ready = started.ready_probe();
    let _ = std::thread::Builder::new()
        .name("recipe-spare".into())
        .spawn(move || {
            while !ready() {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(SETTLE);
            if let Err(e) = spawn() {
                eprintln!("recipe kernel: no warm spare for the next start: {e:#}");
            }
        });
}

fn spawn() -> anyhow::Result<()> {
    let path = socket_path()?;
    if waiting(&path) {
        return Ok(());
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path.with_extension("log"))?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args(["kernel", "--spare"])
        .env_clear()
        .envs(launch_env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
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

/// `recipe kernel --spare`: start a session, wait to be claimed, then serve the claimant's
/// connection file for as long as the claimant lives.
pub fn run_spare() -> anyhow::Result<()> {
    remember_launch_env();
    crate::session::check_runtime()?;
    let started = Started::begin(true)?;
    let ready = started.ready_probe();
    while !ready() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let path = socket_path()?;
    let Some(listener) = bind(&path)? else {
        return Ok(()); // another spare of this launch is waiting
    };
    listener.set_nonblocking(true)?;
    let since = Instant::now();
    write_card(&path)?;
    let (stream, connection_file) = loop {
        match listener.accept() {
            Ok((stream, _)) => match read_request(&stream) {
                Some(Request::Probe) => {
                    let _ = (&stream).write_all(b"waiting\n");
                }
                Some(Request::Claim(file)) => break (stream, file),
                None => {}
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if since.elapsed() > IDLE {
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(path.with_extension("json"));
                    leave(&path);
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).context("accept a claim"),
        }
    };
    // Claimed: nobody else may connect, and it is no longer waiting.
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("json"));
    drop(listener);
    let info = crate::jupyter::read_connection_file(&connection_file)?;
    (&stream).write_all(b"serving\n")?;

    // The claimant's end closing (however it ended) ends this kernel.
    let watched = stream.try_clone()?;
    let log_of = path.clone();
    std::thread::Builder::new()
        .name("recipe-claimant".into())
        .spawn(move || {
            let _ = watched.set_read_timeout(None);
            let mut rest = Vec::new();
            let _ = (&watched).read_to_end(&mut rest);
            leave(&log_of);
            std::process::exit(0);
        })?;
    spawn_after_start(&started);
    let served = started.serve(info);
    drop(stream);
    served
}

/// What `recipe spares` shows of a waiting spare: `KEY.json` next to its socket.
#[derive(serde::Serialize, serde::Deserialize)]
struct Card {
    pid: u32,
    folder: PathBuf,
    waiting_since: chrono::DateTime<chrono::Utc>,
}

fn write_card(socket: &Path) -> anyhow::Result<()> {
    let card = Card {
        pid: std::process::id(),
        folder: std::env::current_dir()?,
        waiting_since: chrono::Utc::now(),
    };
    let path = socket.with_extension("json");
    std::fs::write(&path, serde_json::to_vec(&card)?)
        .with_context(|| format!("write {}", path.display()))
}

/// `recipe spares [--stop]`: list this user's waiting spares, or end them.
pub fn manage(stop: bool) -> anyhow::Result<()> {
    let dir = socket_path()?
        .parent()
        .map(Path::to_path_buf)
        .context("the spares folder")?;
    let mut cards: Vec<(PathBuf, Card)> = Vec::new();
    for entry in std::fs::read_dir(&dir)?.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(card) = serde_json::from_slice::<Card>(&std::fs::read(&path)?) else {
            continue;
        };
        if Path::new(&format!("/proc/{}", card.pid)).exists() {
            cards.push((path, card));
        } else {
            // Its spare is gone (killed): nothing waits there.
            let _ = std::fs::remove_file(path.with_extension("sock"));
            let _ = std::fs::remove_file(&path);
        }
    }
    cards.sort_by_key(|(_, card)| card.waiting_since);
    if cards.is_empty() {
        println!("no spare is waiting");
        return Ok(());
    }
    for (path, card) in &cards {
        let minutes = (chrono::Utc::now() - card.waiting_since).num_minutes();
        if stop {
            // SIGTERM ends the spare; its cell process ends with it.
            unsafe { libc::kill(card.pid as i32, libc::SIGTERM) };
            let _ = std::fs::remove_file(path.with_extension("sock"));
            let _ = std::fs::remove_file(path);
            let log = path.with_extension("log");
            if std::fs::metadata(&log).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(log);
            }
            println!("stopped spare {} for {}", card.pid, card.folder.display());
        } else {
            println!(
                "spare {} for {}, waiting {minutes} min, {} MiB",
                card.pid,
                card.folder.display(),
                resident_mib(card.pid)
            );
        }
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

/// Before a spare ends: its session folder goes, and its log when nothing was written to it.
fn leave(socket: &Path) {
    crate::session::remove_own_sessions();
    let log = socket.with_extension("log");
    if std::fs::metadata(&log).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(log);
    }
}

/// What a process connecting to a spare asks: whether it waits, or to serve a connection file.
enum Request {
    Probe,
    Claim(PathBuf),
}

/// One request line: `{"probe": true}` or `{"connection_file": PATH}`; None for anything else.
fn read_request(stream: &UnixStream) -> Option<Request> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    let request: serde_json::Value = serde_json::from_str(&line).ok()?;
    if request["probe"] == true {
        return Some(Request::Probe);
    }
    request["connection_file"]
        .as_str()
        .map(|file| Request::Claim(PathBuf::from(file)))
}

/// Whether a spare waits at `path` (asking does not claim it).
fn waiting(path: &Path) -> bool {
    let ask = || -> std::io::Result<bool> {
        let mut stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        writeln!(stream, "{}", serde_json::json!({ "probe": true }))?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer)?;
        Ok(answer.trim() == "waiting")
    };
    ask().unwrap_or(false)
}

/// Listen at `path`; None when a live spare already listens there. A socket left by a spare
/// that died is replaced.
fn bind(path: &Path) -> anyhow::Result<Option<UnixListener>> {
    match UnixListener::bind(path) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if waiting(path) {
                return Ok(None);
            }
            std::fs::remove_file(path)?;
            Ok(Some(UnixListener::bind(path)?))
        }
        Err(e) => Err(e).with_context(|| format!("listen at {}", path.display())),
    }
}
