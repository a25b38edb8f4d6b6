//! Verification: re-run an archived run of the trainer from its archived config, seeds and
//! data, and compare every metric bit for bit. When they differ, say at which step and
//! which identity component changed since (code, environment, data).
//!
//! An interrupted run is re-run up to its last committed step and compared there
//! ([`rerun_config`], [`up_to`]): its missing tail is where it was killed, not a difference.
//! A run whose metrics cannot all be read is not verified at all.

use crate::config::{Seeds, TrainConfig};
use crate::data::DataSpec;
use crate::show::Show;
use crate::train::{fit_unarchived_from, run_spec, RunOptions};
use crate::{show_in_jupyter, Error, Result};
use recipe_archive::diff::flatten;
use recipe_archive::identity::COMPONENTS;
use recipe_archive::writer::first_divergence;
use recipe_archive::{Archive, MetricPoint, RunRecord, Status};

/// The verdict of a verification.
#[derive(Clone, Debug)]
pub struct Verification {
    pub run: String,
    pub reproduced: bool,
    pub points_compared: usize,
    /// First step at which any metric differs.
    pub first_divergence: Option<i64>,
    /// Identity keys that differ between the archived run and now (`env.threads`...).
    pub identity_changes: Vec<String>,
    /// For an interrupted run, its last committed step: the comparison stops there.
    pub compared_up_to: Option<i64>,
    /// A text run's archived samples compared with the re-run's (0 for other runs).
    pub samples_compared: usize,
}

impl Show for Verification {
    fn text(&self) -> String {
        let extent = match self.compared_up_to {
            Some(last) => format!(" up to step {last}, its last committed step (interrupted)"),
            None => String::new(),
        };
        let mut out = if self.reproduced {
            format!(
                "run {} reproduced bit for bit{extent}: {} metric values identical\n",
                self.run, self.points_compared
            )
        } else {
            format!(
                "run {} did NOT reproduce{extent}: first difference at step {}\n",
                self.run,
                self.first_divergence.map_or("?".into(), |s| s.to_string())
            )
        };
        if self.samples_compared > 0 {
            let same = if self.reproduced {
                "identical"
            } else {
                "compared"
            };
            out += &format!("{} archived samples {same}\n", self.samples_compared);
        }
        if !self.identity_changes.is_empty() {
            out += &format!(
                "identity changed since: {}\n",
                self.identity_changes.join(", ")
            );
        }
        out
    }
}

show_in_jupyter!(Verification);

/// Re-run `run` and compare.
pub fn verify(archive: &Archive, run: &RunRecord) -> Result<Verification> {
    if crate::track::is_tracked(run) {
        return Err(Error::Invalid(format!(
            "run {} was trained by a loop of a notebook's own (track), which only its cells \
             can run again: `recipe runs verify {}` replays them",
            run.short(),
            run.short()
        )));
    }
    let config = TrainConfig::of_run(run).map_err(|e| match run.session_id {
        Some(_) => Error::Invalid(format!(
            "{e}; `recipe runs verify {}` replays the notebook's cells to verify it",
            run.short()
        )),
        None => e,
    })?;
    let seeds = Seeds::from_json(&run.components[1]);
    let spec: DataSpec = serde_json::from_value(run.components[2]["details"]["spec"].clone())
        .map_err(|e| {
            Error::Data(format!(
                "run {} does not say how its data was made ({e})",
                run.short()
            ))
        })?;
    let data = spec.load()?;
    let archived = archived_metrics(archive, run)?;
    let last_committed = last_committed(run, &archived)?;
    let now = run_spec(
        &data,
        &config,
        &seeds,
        &RunOptions {
            name: run.name.clone(),
            ..RunOptions::default()
        },
    )?
    .identity
    .component_values()?;
    // The cells that ran it are not part of what a re-run can reproduce.
    let changes = identity_changes(&run.components, &now, &["cell_hash", "history_hash"]);
    let trained = fit_unarchived_from(
        &data,
        &rerun_config(&config, last_committed),
        &seeds,
        archive,
    )?;
    let mut again: Vec<MetricPoint> = Vec::new();
    for (name, points) in &trained.curves {
        again.extend(points.iter().map(|(step, value)| MetricPoint {
            step: *step,
            name: name.clone(),
            value: *value,
            wall_time: chrono::Utc::now(),
        }));
    }
    let mut verification = verdict(run, &archived, again, changes, last_committed);
    // A text run's samples are its predictions: the same text, token for token.
    let samples = crate::sample::Samples::of_run(archive, run)?;
    if !samples.is_empty() && last_committed.is_none() {
        verification.samples_compared = samples.len();
        if samples != trained.samples {
            verification.reproduced = false;
            verification.first_divergence = samples
                .iter()
                .zip(trained.samples.iter())
                .find(|(a, b)| a != b)
                .and_then(|(a, _)| a.step.map(|s| s as i64));
        }
    }
    Ok(verification)
}

/// The metrics archived for `run`; an error when any file of them cannot be read (a run is
/// not verified against part of its metrics).
pub fn archived_metrics(archive: &Archive, run: &RunRecord) -> Result<Vec<MetricPoint>> {
    let loaded = archive.metrics(run)?;
    match loaded.damaged.first() {
        Some(damaged) => Err(Error::Data(format!(
            "run {} cannot be verified: its metrics could not all be read: {damaged}",
            run.short()
        ))),
        None => Ok(loaded.value),
    }
}

/// For an interrupted run, the last step it committed (where a comparison stops); `None`
/// for a run that ended.
pub fn last_committed(run: &RunRecord, archived: &[MetricPoint]) -> Result<Option<i64>> {
    if run.status != Status::Interrupted {
        return Ok(None);
    }
    let last = archived.iter().map(|p| p.step).max().ok_or_else(|| {
        Error::Data(format!(
            "run {} was interrupted before it committed a metric: there is nothing to compare",
            run.short()
        ))
    })?;
    Ok(Some(last))
}

/// The identity keys (`component.key`) whose values differ between `was` and `is`, the
/// five components of two identities, leaving out the keys named in `ignored`.
pub fn identity_changes<A, B>(was: &[A], is: &[B], ignored: &[&str]) -> Vec<String>
where
    A: std::borrow::Borrow<serde_json::Value>,
    B: std::borrow::Borrow<serde_json::Value>,
{
    let mut changes = Vec::new();
    for (i, component) in COMPONENTS.iter().enumerate() {
        let (was, is) = (flatten(was[i].borrow()), flatten(is[i].borrow()));
        let keys: std::collections::BTreeSet<&String> = was.keys().chain(is.keys()).collect();
        for key in keys {
            if was.get(key) != is.get(key) && !ignored.contains(&key.as_str()) {
                changes.push(format!("{component}.{key}"));
            }
        }
    }
    changes
}

/// The verdict on `run`: the metrics of a re-run (`again`) against the `archived` ones, up
/// to `last_committed` for an interrupted run.
pub fn verdict(
    run: &RunRecord,
    archived: &[MetricPoint],
    again: Vec<MetricPoint>,
    identity_changes: Vec<String>,
    last_committed: Option<i64>,
) -> Verification {
    let again = match last_committed {
        Some(last) => up_to(again, archived, last),
        None => again,
    };
    let divergence = first_divergence(archived, &again);
    Verification {
        run: run.key(),
        reproduced: divergence.is_none() && !archived.is_empty(),
        points_compared: archived.len(),
        first_divergence: divergence,
        identity_changes,
        compared_up_to: last_committed,
        samples_compared: 0,
    }
}

/// The config that re-runs a run up to `last` (its last committed step, for an interrupted
/// run): `steps` cut to `last + 1` when the learning rate of every step up to `last` stays
/// the same bit for bit, else the whole run (a schedule that decays over `steps` would
/// train the cut run differently).
pub fn rerun_config(config: &TrainConfig, last: Option<i64>) -> TrainConfig {
    let Some(steps) = last.map(|l| (l.max(0) as usize + 1).min(config.steps)) else {
        return config.clone();
    };
    let same_rates = (0..steps).all(|step| {
        let lr = |total| config.schedule.lr(config.lr, step, total).to_bits();
        lr(steps) == lr(config.steps)
    });
    let mut cut = config.clone();
    if same_rates {
        cut.steps = steps;
    }
    cut
}

/// The points of a re-run that an interrupted run can be compared with: those up to its
/// last committed step `last`, and at `last` only the metrics it committed there (the
/// evaluation logged after its last chunk, and the one a run cut at `last` makes at its
/// end, were never archived).
pub fn up_to(again: Vec<MetricPoint>, archived: &[MetricPoint], last: i64) -> Vec<MetricPoint> {
    let at_last: std::collections::BTreeSet<&str> = (archived.iter())
        .filter(|p| p.step == last)
        .map(|p| p.name.as_str())
        .collect();
    again
        .into_iter()
        .filter(|p| p.step < last || (p.step == last && at_last.contains(p.name.as_str())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Schedule;

    fn point(step: i64, name: &str) -> MetricPoint {
        MetricPoint {
            step,
            name: name.into(),
            value: step as f64,
            wall_time: chrono::Utc::now(),
        }
    }

    #[test]
    fn an_interrupted_run_is_re_run_to_its_last_step_unless_the_schedule_needs_the_whole() {
        let config = TrainConfig {
            steps: 1000,
            ..TrainConfig::default()
        };
        assert_eq!(rerun_config(&config, None).steps, 1000);
        assert_eq!(rerun_config(&config, Some(41)).steps, 42);
        assert_eq!(rerun_config(&config, Some(5000)).steps, 1000);
        let stepped = TrainConfig {
            schedule: Schedule::Step {
                every: 100,
                factor: 0.5,
            },
            ..config.clone()
        };
        assert_eq!(rerun_config(&stepped, Some(41)).steps, 42);
        // Cosine decays over `steps`: cut short, every rate after warmup would change.
        let cosine = TrainConfig {
            schedule: Schedule::Cosine {
                warmup: 10,
                min_factor: 0.1,
            },
            ..config
        };
        assert_eq!(rerun_config(&cosine, Some(41)).steps, 1000);
        assert_eq!(rerun_config(&cosine, Some(5)).steps, 6);
    }

    #[test]
    fn an_interrupted_run_is_compared_with_what_it_committed() {
        // Archived: losses at 0..=3, an evaluation at 1; killed after committing step 3.
        let archived = vec![
            point(0, "loss"),
            point(1, "loss"),
            point(1, "val_loss"),
            point(2, "loss"),
            point(3, "loss"),
        ];
        // The re-run cut at step 3 also evaluates and tests there, and a whole one goes on.
        let again = vec![
            point(0, "loss"),
            point(1, "loss"),
            point(1, "val_loss"),
            point(2, "loss"),
            point(3, "loss"),
            point(3, "val_loss"),
            point(3, "test_acc"),
            point(4, "loss"),
        ];
        let kept = up_to(again.clone(), &archived, 3);
        assert_eq!(first_divergence(&archived, &kept), None);
        assert_eq!(kept.len(), archived.len());
        // A point missing before the last step is still a difference.
        let missing: Vec<_> = (again.into_iter())
            .filter(|p| !(p.step == 1 && p.name == "val_loss"))
            .collect();
        assert_eq!(
            first_divergence(&archived, &up_to(missing, &archived, 3)),
            Some(1)
        );
    }
}
