//! Claims: who took which attempt number of a run, and whether its writer is alive.
//!
//! A run attempt's claim is the name `_claims/<run_id>-a<attempt>`, taken atomically (two
//! processes starting the same identity at once get attempts 1 and 2) and never removed. A
//! process's claims on one archive are hard links to one file, the first claim it took: a
//! claim then costs a directory entry, not a new file (creating a file is most of what a
//! short run costs to log on ext4, which scans the inodes freed in the last half minute for
//! every file it creates). While a run lives, its writer holds a lock on one byte of that
//! file, at an offset hashed from the run id and attempt, through its own open claim (an
//! open-file-description lock, so another handle in the same process sees it too). The lock
//! goes when the run finishes or however its process ends (`kill -9` included), and readers
//! then see the run as over. An empty claim is one of its own from before shared claims,
//! whose writer holds a flock instead (readers ask that); a writer from before shared claims
//! reading an archive that newer writers write to sees their live runs as over.

use crate::archive::Archive;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// A claimed attempt whose writer is alive: its byte stays locked until this is dropped.
/// Closing its file (when the process ends, however it ends) releases the lock.
pub(crate) struct Claim {
    _file: File,
}

/// What a claim file that others link to holds, so readers tell it from the empty, flocked
/// claim files of recipe before shared claims.
const SHARED_MARK: &[u8] = b"claims linked here; one locked byte per live run\n";

/// Per archive folder, the claim this process links its next claims to.
fn link_sources() -> &'static Mutex<BTreeMap<PathBuf, PathBuf>> {
    static SOURCES: OnceLock<Mutex<BTreeMap<PathBuf, PathBuf>>> = OnceLock::new();
    SOURCES.get_or_init(Default::default)
}

impl Archive {
    /// The name that says who took an attempt number of `run_id`.
    pub(crate) fn claim_path(&self, run_id: &str, attempt: u32) -> PathBuf {
        self.path("_claims").join(claim_name(run_id, attempt))
    }

    /// Whether an attempt number of `run_id` was ever taken.
    pub(crate) fn is_claimed(&self, run_id: &str, attempt: u32) -> bool {
        self.claim_path(run_id, attempt).exists()
    }

    /// Whether the writer of this attempt is still alive (in any process).
    pub fn is_live(&self, run_id: &str, attempt: u32) -> bool {
        let Ok(file) = File::open(self.claim_path(run_id, attempt)) else {
            return false;
        };
        if file.metadata().is_ok_and(|m| m.len() == 0) {
            // A claim of its own from before shared claims (or one being created): its
            // writer holds a flock for the run's life.
            return !crate::archive::try_lock(&file, libc::LOCK_SH);
        }
        let mut probe = byte_lock(libc::F_WRLCK as libc::c_short, claim_byte(run_id, attempt));
        // SAFETY: F_OFD_GETLK only fills in `probe`, a valid flock struct.
        let asked = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) };
        // A probe that fails says nothing: taken as live, the safe side (a live run is never
        // settled as interrupted or merged away).
        !(asked == 0 && probe.l_type == libc::F_UNLCK as libc::c_short)
    }

    /// Take the lowest attempt number of `run_id` not yet taken, and lock its byte.
    pub(crate) fn claim_attempt(&self, run_id: &str) -> Result<(u32, Claim)> {
        let dir = self.path("_claims");
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // By absolute path: a relative root means another folder after a change of directory.
        let root = std::path::absolute(self.root()).map_err(|e| Error::io(self.root(), e))?;
        let mut sources = link_sources().lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 1..u32::MAX {
            let path = root.join("_claims").join(claim_name(run_id, attempt));
            let byte = claim_byte(run_id, attempt);
            let linked = match sources.get(&root) {
                Some(source) => match fs::hard_link(source, &path) {
                    Ok(()) => Some(OpenOptions::new().write(true).open(&path).map_err(|e| {
                        let _ = fs::remove_file(&path);
                        Error::io(&path, e)
                    })?),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    // The source is gone, or has as many links as the file system allows
                    // (65,000 on ext4): this claim becomes a file of its own below.
                    Err(_) => None,
                },
                None => None,
            };
            let file = match linked {
                Some(file) => file,
                None => {
                    let Some(file) = new_claim_file(&path)? else {
                        continue;
                    };
                    // The source of this process's next claims.
                    sources.insert(root.clone(), path.clone());
                    file
                }
            };
            let lock = byte_lock(libc::F_WRLCK as libc::c_short, byte);
            // SAFETY: F_OFD_SETLK reads `lock`, a valid flock struct, on an open descriptor.
            if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } != 0 {
                let error = std::io::Error::last_os_error();
                // The name stays taken (another process may already count on it), without
                // a lock: it reads as a run that ended before writing anything.
                return Err(Error::io(&path, error));
            }
            return Ok((attempt, Claim { _file: file }));
        }
        Err(Error::Invalid(format!(
            "run {run_id} has no attempt numbers left"
        )))
    }
}

/// Create a claim as a file of its own; `None` when the name is already taken.
fn new_claim_file(path: &Path) -> Result<Option<File>> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, SHARED_MARK).map_err(|e| Error::io(path, e))?;
            Ok(Some(file))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn claim_name(run_id: &str, attempt: u32) -> String {
    format!("{run_id}-a{attempt}")
}

/// The byte of a claim file that the writer of `run_id`'s `attempt` holds locked.
fn claim_byte(run_id: &str, attempt: u32) -> i64 {
    let hash = blake3::hash(claim_name(run_id, attempt).as_bytes());
    let first = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
    (first >> 1) as i64
}

fn byte_lock(kind: libc::c_short, byte: i64) -> libc::flock {
    libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        l_pid: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_process_links_its_claims_and_each_is_live_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let (first, claim_1) = archive.claim_attempt("aa").unwrap();
        let (second, claim_2) = archive.claim_attempt("aa").unwrap();
        let (_, claim_3) = archive.claim_attempt("bb").unwrap();
        assert_eq!((first, second), (1, 2));
        // One file, three names: no file was created for the later claims.
        let inode = |run_id: &str, attempt: u32| {
            fs::metadata(archive.claim_path(run_id, attempt))
                .unwrap()
                .ino()
        };
        assert_eq!(inode("aa", 1), inode("aa", 2));
        assert_eq!(inode("aa", 1), inode("bb", 1));
        assert!(archive.is_live("aa", 1) && archive.is_live("aa", 2) && archive.is_live("bb", 1));
        // Each claim says only for its own run whether it lives.
        drop(claim_2);
        assert!(archive.is_live("aa", 1) && !archive.is_live("aa", 2) && archive.is_live("bb", 1));
        drop((claim_1, claim_3));
        assert!(!archive.is_live("aa", 1) && !archive.is_live("bb", 1));
        assert!(!archive.is_live("never", 1));
        // A taken number stays taken.
        let (third, _claim) = archive.claim_attempt("aa").unwrap();
        assert_eq!(third, 3);
    }

    #[test]
    fn a_claim_whose_link_source_is_gone_becomes_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let (_, _first) = archive.claim_attempt("cc").unwrap();
        fs::remove_file(archive.claim_path("cc", 1)).unwrap();
        let (attempt, _second) = archive.claim_attempt("dd").unwrap();
        assert_eq!(attempt, 1);
        assert!(archive.is_live("dd", 1));
        let (_, _third) = archive.claim_attempt("ee").unwrap();
        let inode = |run_id: &str| fs::metadata(archive.claim_path(run_id, 1)).unwrap().ino();
        assert_eq!(inode("dd"), inode("ee"));
    }

    #[test]
    fn a_claim_file_of_its_own_from_before_is_live_while_flocked() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        fs::create_dir_all(archive.path("_claims")).unwrap();
        let file = File::create(archive.claim_path("ff", 1)).unwrap();
        assert!(!archive.is_live("ff", 1));
        assert!(crate::archive::try_lock(&file, libc::LOCK_EX));
        assert!(archive.is_live("ff", 1));
        drop(file);
        assert!(!archive.is_live("ff", 1));
    }
}
