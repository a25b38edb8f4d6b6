//! The code component of a run's identity: which commit, whether the work tree was dirty and
//! exactly how (blake3 of the uncommitted diff, untracked files included), which cell ran it
//! and which runtime. Read with git2, so no `git` binary is needed.
//!
//! Outside a git repository this is not an error: the state says so, and the run's identity
//! then rests on the cell source and runtime version alone.

use crate::canonical::Hash;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What the code looked like when a run started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeState {
    /// `HEAD`'s commit id, `None` outside a repository or before the first commit.
    pub commit: Option<String>,
    /// Whether the work tree differed from `HEAD` (tracked changes or untracked files).
    pub dirty: bool,
    /// blake3 of the uncommitted diff as a patch (hex); the patch itself is a blob.
    pub diff_hash: Option<String>,
    /// Why there is no git state, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// blake3 of the notebook cell that started the run (filled by the kernel).
    pub cell_hash: Option<String>,
    /// blake3 over the hashes of the session's cells before that one (filled by the kernel):
    /// what they defined (a net, a loss, a function) decided the run as much as the cell
    /// that trained it did. A run outside a notebook has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_hash: Option<String>,
    /// Versions of the code around the cell: runtime crate version, Cargo.lock hash...
    #[serde(default)]
    pub runtime: BTreeMap<String, String>,
}

impl CodeState {
    /// The state of a directory that is not in a git repository.
    pub fn outside_git() -> CodeState {
        CodeState {
            note: Some("not inside a git repository".into()),
            ..CodeState::default()
        }
    }

    /// Inspect the repository that contains `dir`. Returns the state and the uncommitted diff
    /// as a patch (empty when clean), which the archive keeps as a blob.
    pub fn capture(dir: &Path) -> Result<(CodeState, Vec<u8>)> {
        let repo = match git2::Repository::discover(dir) {
            Ok(repo) => repo,
            Err(_) => return Ok((CodeState::outside_git(), Vec::new())),
        };
        if repo.is_bare() {
            return Ok((CodeState::outside_git(), Vec::new()));
        }
        let head_tree = match repo.head().and_then(|h| h.peel_to_commit()) {
            Ok(commit) => Some((commit.id().to_string(), commit.tree()?)),
            Err(_) => None, // no commit yet: everything is "uncommitted"
        };
        let mut options = git2::DiffOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .show_untracked_content(true)
            .show_binary(true);
        let diff = repo.diff_tree_to_workdir_with_index(
            head_tree.as_ref().map(|(_, tree)| tree),
            Some(&mut options),
        )?;
        let mut patch = Vec::new();
        diff.print(git2::DiffFormat::Patch, |_, _, line| {
            if matches!(line.origin(), '+' | '-' | ' ') {
                patch.push(line.origin() as u8);
            }
            patch.extend_from_slice(line.content());
            true
        })?;
        let dirty = !patch.is_empty();
        let state = CodeState {
            commit: head_tree.map(|(id, _)| id),
            dirty,
            diff_hash: dirty.then(|| Hash::of_bytes(&patch).to_hex()),
            note: None,
            cell_hash: None,
            history_hash: None,
            runtime: BTreeMap::new(),
        };
        Ok((state, patch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn commit_all(repo: &git2::Repository) {
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &parents)
            .unwrap();
    }

    #[test]
    fn an_archive_inside_the_repository_is_not_a_code_change() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        fs::write(dir.path().join("train.rs"), "fn main() {}\n").unwrap();
        commit_all(&repo);
        let archive = crate::Archive::open(dir.path().join("runs")).unwrap();
        archive.put_blob(b"a checkpoint").unwrap();
        let (state, _) = CodeState::capture(dir.path()).unwrap();
        assert!(
            !state.dirty,
            "the archive's own files made the work tree dirty"
        );
    }

    #[test]
    fn outside_a_repository_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (state, patch) = CodeState::capture(dir.path()).unwrap();
        assert_eq!(state.commit, None);
        assert!(state.note.unwrap().contains("not inside a git repository"));
        assert!(patch.is_empty());
    }

    #[test]
    fn clean_dirty_and_untracked() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        fs::write(dir.path().join("a.txt"), "one\n").unwrap();
        fs::write(dir.path().join(".gitignore"), "ignored.txt\n").unwrap();
        commit_all(&repo);

        let (clean, _) = CodeState::capture(dir.path()).unwrap();
        assert!(clean.commit.is_some());
        assert!(!clean.dirty);

        // An ignored file changes nothing.
        fs::write(dir.path().join("ignored.txt"), "x").unwrap();
        assert!(!CodeState::capture(dir.path()).unwrap().0.dirty);

        fs::write(dir.path().join("new.txt"), "untracked\n").unwrap();
        let (untracked, patch) = CodeState::capture(dir.path()).unwrap();
        assert!(untracked.dirty);
        assert!(String::from_utf8_lossy(&patch).contains("+untracked"));

        fs::write(dir.path().join("new.txt"), "untracked, edited\n").unwrap();
        let (edited, _) = CodeState::capture(dir.path()).unwrap();
        assert_ne!(edited.diff_hash, untracked.diff_hash);
        assert_eq!(edited.commit, clean.commit);
    }
}
