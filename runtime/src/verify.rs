//! Verification: re-run an archived run of the trainer from its archived config, seeds and
//! data, and compare every metric bit for bit. When they differ, say at which step and
//! which identity component changed since (code, environment, data).

use crate::config::{Seeds, TrainConfig};
use crate::data::DataSpec;
use crate::show::Show;
use crate::train::{fit_unarchived_from, run_spec, RunOptions};
use crate::{show_in_jupyter, Error, Result};
use recipe_archive::diff::flatten;
use recipe_archive::identity::COMPONENTS;
use recipe_archive::writer::first_divergence;
use recipe_archive::{Archive, MetricPoint, RunRecord};

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
}

impl Show for Verification {
    fn text(&self) -> String {
        let mut out = if self.reproduced {
            format!(
                "run {} reproduced bit for bit: {} metric values identical\n",
                self.run, self.points_compared
            )
        } else {
            format!(
                "run {} did NOT reproduce: first difference at step {}\n",
                self.run,
                self.first_divergence.map_or("?".into(), |s| s.to_string())
            )
        };
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
    let config: TrainConfig = serde_json::from_value(run.config().clone()).map_err(|e| {
        Error::Data(format!(
            "run {} was not made by the built-in trainer, so it cannot be re-run ({e})",
            run.short()
        ))
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
    let archived = archive.metrics(run)?.value;
    let mut identity_changes = Vec::new();
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
    for (i, component) in COMPONENTS.iter().enumerate() {
        let (was, is) = (flatten(&run.components[i]), flatten(&now[i]));
        for key in was
            .keys()
            .chain(is.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            // The cell that ran it is not part of what a re-run can reproduce.
            if was.get(key) != is.get(key) && key != "cell_hash" {
                identity_changes.push(format!("{component}.{key}"));
            }
        }
    }
    let trained = fit_unarchived_from(&data, &config, &seeds, archive)?;
    let mut again: Vec<MetricPoint> = Vec::new();
    for (name, points) in &trained.curves {
        again.extend(points.iter().map(|(step, value)| MetricPoint {
            step: *step,
            name: name.clone(),
            value: *value,
            wall_time: chrono::Utc::now(),
        }));
    }
    let divergence = first_divergence(&archived, &again);
    Ok(Verification {
        run: run.key(),
        reproduced: divergence.is_none() && !archived.is_empty(),
        points_compared: archived.len(),
        first_divergence: divergence,
        identity_changes,
    })
}
