//! recipe's runtime: what a notebook gets with `use recipe::prelude::*;`.
//!
//! The types a reader needs first:
//! - [`Dataset`]: examples, their [`Target`] (classes, values to regress, or the next tokens
//!   of text windows: the [`Task`], which decides the loss and metrics), splits, loaders, fingerprint and the "become one
//!   with the data" views (summary, duplicates, corrupt examples, ranking, image grids).
//! - [`TrainConfig`] and [`Seeds`]: how to train, every default in one place, one seed per
//!   source of randomness.
//! - [`fit`] -> [`Trained`]: the trainer, archiving every run as it goes; [`track::track`]
//!   archives a loop of one's own the same way.
//! - [`checks`]: the recipe's checks as a registry, each recorded on runs.
//!
//! Every public function returns [`Result`]; nothing a user can trigger panics.

pub mod analysis;
pub mod batches;
mod checkpoint;
pub mod checks;
pub mod config;
pub mod custom;
pub mod data;
mod error;
pub mod gpt;
mod lanes;
pub mod model_summary;
pub mod models;
pub mod notebook;
pub mod ops;
pub mod optim;
pub mod params;
pub mod process;
mod progress;
pub mod reports;
pub mod rng;
pub mod sample;
pub mod seq_ops;
pub mod show;
pub mod task;
pub mod track;
pub mod train;
pub mod tune;
pub mod verify;

pub use config::{Seeds, TrainConfig};
pub use data::{DataSpec, Dataset, Target};
pub use error::{Error, Result};
pub use models::{Model, ModelSpec};
pub use rng::Rng;
pub use task::Task;
pub use train::{fit, request_stop, resume, RunOptions, Trained};

/// Everything a notebook needs, in one `use`, and nothing that shadows a name a cell would
/// expect to be std's.
pub mod prelude {
    pub use crate::analysis::{
        ask_labels, batch_preview, ensemble, ensemble_runs, human_baseline, load_run,
        prediction_dynamics, predictions_of_run, Outcome, Predictions,
    };
    pub use crate::checks::{registry, run_all, CheckContext, Finding, RecipeCheck};
    pub use crate::custom::ModelIo;
    pub use crate::data::inspect::ImageGrid;
    pub use crate::data::{DataSpec, Dataset, Target};
    pub use crate::model_summary::ModelSummary;
    pub use crate::models::{Dropout, Model, ModelSpec};
    pub use crate::notebook::{clear_output, input, DisplayHandle};
    pub use crate::optim::Schedule;
    pub use crate::params::Params;
    pub use crate::reports::{
        checklist, curves, diff, results, run_report, Checklist, Curves, Runs,
    };
    pub use crate::sample::{sample, Sample, Samples};
    pub use crate::show::{display, DebugResult, Html, Show};
    pub use crate::task::Task;
    pub use crate::track::{track, track_loop, Tracker};
    pub use crate::train::{fit, request_stop, resume, RunOptions, Trained};
    pub use crate::tune::{random_search, Search, SearchSpace, Sweep};
    pub use crate::verify::{verify, Verification};
    // Not `Error` and `Result`: a cell's own `Result<T, E>` and `Error` mean std's and its
    // own; the runtime's are `recipe::Result` and `recipe::Error`.
    pub use crate::{Rng, Seeds, TrainConfig};
    pub use recipe_archive::{Archive, RunRecord, Status};
    pub use serde_json::json;
}
