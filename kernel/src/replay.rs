//! Verify by replay: a run that a notebook trained with code of its own (a net defined in a
//! cell, a loop archived by `track`) cannot be re-run from its config, because its config
//! names that code without holding it. The archive's `cells` table holds it: every cell the
//! session ran, in order. So the run is verified by replaying those cells, up to and
//! including the one that trained it, in a fresh headless session, and comparing every
//! metric of the run the replay makes with the archived one, bit for bit.
//!
//! 1. Take the session's cells up to the training cell (cells aborted before they ran are
//!    left out, as the session left them out), and check that their hashes give the run's
//!    history hash and cell hash: the archive holds exactly what ran.
//! 2. Replay them in a session whose archive is a scratch folder, so the replay adds nothing
//!    to the user's archive. A cell that succeeded then and fails now stops the replay with
//!    its error: it read something that changed (the clock, the network, a file, the
//!    archive). A cell that failed then may fail again.
//! 3. Find the replay's run with the archived run's identity (else the one of its name, and
//!    say which identity keys differ), and compare the metrics. An interrupted run is
//!    compared up to its last committed step.
//!
//! Zoo runs (a built-in model and a config that re-runs it) keep the direct re-run of
//! `recipe::verify`.

use std::sync::Arc;

use anyhow::{bail, Context};
use recipe::verify::{self, Verification};
use recipe::{ModelSpec, TrainConfig};
use recipe_archive::{Archive, CellRecord, RunRecord};

use crate::session::{Outcome, Session, Sink};

/// Whether `run` must be verified by replaying its session: a loop of a notebook's own
/// trained it, or it names a model defined in a notebook, or its config is not the built-in
/// trainer's.
pub fn needs_replay(run: &RunRecord) -> bool {
    if recipe::track::is_tracked(run) {
        return true;
    }
    match TrainConfig::of_run(run) {
        Ok(config) => matches!(config.model, ModelSpec::Custom(_)),
        Err(_) => true,
    }
}

/// Replay the cells that made `run` and compare (see the module's header).
pub fn verify_by_replay(archive: &Archive, run: &RunRecord) -> anyhow::Result<Verification> {
    // 1. The cells that ran before it, as they ran.
    let (session_id, execution) = match (&run.session_id, run.cell_execution) {
        (Some(session), Some(execution)) => (session.clone(), execution),
        _ => bail!(
            "run {} was made outside a notebook by code other than the built-in trainer: \
             there is nothing to re-run it from",
            run.short()
        ),
    };
    let cells = session_cells(archive, &session_id, execution)?;
    check_history(run, &cells)?;

    // 2. Replay them into a scratch archive.
    let scratch = std::env::temp_dir().join(format!(
        "recipe-replay-{}-{}",
        std::process::id(),
        run.short()
    ));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("create the replay's archive {}", scratch.display()))?;
    let replayed = replay(&cells, &scratch);
    let result = replayed.and_then(|()| compare(archive, run, &Archive::open(&scratch)?));
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The cells of `session` up to execution `last`, in the order they ran, without those
/// aborted before they ran.
fn session_cells(archive: &Archive, session: &str, last: i64) -> anyhow::Result<Vec<CellRecord>> {
    let mut cells: Vec<CellRecord> = (archive.cells()?.warn_damaged().into_iter())
        .filter(|c| c.session_id == session && c.execution_count <= last && c.status != "aborted")
        .collect();
    cells.sort_by_key(|c| (c.started_at, c.execution_count));
    if cells.last().map(|c| c.execution_count) != Some(last) {
        bail!(
            "the archive holds no cell [{last}] of session {session}, the cell that trained \
             the run: it cannot be replayed"
        );
    }
    Ok(cells)
}

/// The cells' hashes must give the run's: its cell hash for the last cell, its history hash
/// for the ones before (the kernel hashes the hashes of the cells before, in order).
fn check_history(run: &RunRecord, cells: &[CellRecord]) -> anyhow::Result<()> {
    let (last, before) = cells.split_last().context("no cells")?;
    let mut history = blake3::Hasher::new();
    for cell in before {
        let hash = blake3::Hash::from_hex(&cell.code_hash)
            .with_context(|| format!("cell [{}] has no valid hash", cell.execution_count))?;
        history.update(hash.as_bytes());
    }
    let history = history.finalize().to_hex().to_string();
    let cell_hash = run.components[3]["cell_hash"].as_str();
    if run.cell_history_hash.as_deref() != Some(history.as_str())
        || cell_hash != Some(last.code_hash.as_str())
    {
        bail!(
            "the archive's cells of session {} do not hash to run {}'s cells (a cell of the \
             session is missing from the archive): it cannot be replayed",
            last.session_id,
            run.short()
        );
    }
    Ok(())
}

/// Run `cells` in a fresh session whose runs and cells go to the archive at `scratch`.
fn replay(cells: &[CellRecord], scratch: &std::path::Path) -> anyhow::Result<()> {
    // The session's cell process reads the default archive from the environment it starts
    // with; nothing else in this process runs meanwhile.
    std::env::set_var(recipe_archive::archive::ARCHIVE_ENV, scratch);
    let sink: Sink = Arc::new(|_| {});
    let mut session = Session::start(sink, Some(Archive::open(scratch)?))?;
    for (i, cell) in cells.iter().enumerate() {
        eprintln!(
            "recipe runs verify: replaying cell [{}] ({}/{})",
            cell.execution_count,
            i + 1,
            cells.len()
        );
        if let Outcome::Error { ename, evalue, .. } = session.execute(&cell.code, true) {
            if cell.status == "ok" {
                bail!(
                    "cell [{}] of session {} ran then and fails in the replay: {ename}: \
                     {evalue}\nIt read something that has changed since (the clock, the \
                     network, a file, the archive), so the run cannot be replayed.",
                    cell.execution_count,
                    cell.session_id
                );
            }
        }
    }
    Ok(())
}

/// Compare `run` with the run of the same identity (else of the same name) in `replayed`.
fn compare(archive: &Archive, run: &RunRecord, replayed: &Archive) -> anyhow::Result<Verification> {
    let runs = replayed.runs()?.warn_damaged();
    let again = (runs.iter().find(|r| r.run_id == run.run_id))
        .or_else(|| runs.iter().rev().find(|r| r.name == run.name))
        .with_context(|| {
            format!(
                "the replay made no run named {:?}: the cell that trained it took another \
                 path this time",
                run.name
            )
        })?;
    let changes = verify::identity_changes(&run.components, &again.components, &[]);
    let archived = verify::archived_metrics(archive, run)?;
    let last_committed = verify::last_committed(run, &archived)?;
    let points = replayed.metrics(again)?.warn_damaged();
    Ok(verify::verdict(
        run,
        &archived,
        points,
        changes,
        last_committed,
    ))
}
