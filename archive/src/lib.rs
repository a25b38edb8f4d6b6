//! recipe's run archive: every run with everything that decided its result, in Parquet that
//! any engine reads.
//!
//! The types a reader needs first:
//! - [`Archive`]: a directory of tables and blobs; [`Archive::begin_run`] starts a run,
//!   [`Archive::runs`] and [`Archive::metrics`] read them back.
//! - [`Identity`]: config, seeds, data, code and environment, hashed into a `run_id`.
//! - [`RunWriter`]: logs metrics in atomically committed chunks and finishes with a
//!   [`Status`].
//! - [`query`], [`diff`], [`group`], [`export`] and [`compact`] work on what was archived.
//!
//! It knows nothing of candle or Jupyter.

pub mod archive;
mod cache;
pub mod canonical;
pub mod checklist;
mod claims;
pub mod code;
pub mod compact;
pub mod diff;
pub mod env;
mod error;
pub mod export;
mod fault;
pub mod files;
pub mod group;
pub mod identity;
pub mod plot;
pub mod query;
pub mod records;
mod replace;
pub mod report;
pub mod schema;
mod text_hash;
pub mod writer;
mod written_json;

pub use archive::{Archive, Loaded};
pub use code::CodeState;
pub use env::Environment;
pub use error::{Error, Result};
pub use identity::{DataFingerprint, Identity};
pub use records::{CellRecord, Check, MetricPoint, RunRecord, Status};
pub use writer::{FlushPolicy, RunSpec, RunWriter};
