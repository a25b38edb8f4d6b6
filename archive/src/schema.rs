//! The archive's three tables as Arrow schemas, built once, and the key-value metadata every
//! file carries so that a reader can tell an old, new or foreign file before it trusts it.
//!
//! A change to any schema bumps [`SCHEMA_VERSION`]; readers refuse other versions by name.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, OnceLock};

/// The layout version of every table; stored as `recipe.schema_version` in each file.
pub const SCHEMA_VERSION: &str = "1";
/// Metadata key naming the version.
pub const KEY_VERSION: &str = "recipe.schema_version";
/// Metadata key naming the table a file belongs to.
pub const KEY_TABLE: &str = "recipe.table";
/// Metadata key naming the software that wrote a file.
pub const KEY_WRITER: &str = "recipe.writer";
/// This writer, e.g. `recipe-archive 0.1.0`.
pub const WRITER: &str = concat!("recipe-archive ", env!("CARGO_PKG_VERSION"));

/// The tables of an archive; each is a folder of Parquet files, Hive-partitioned by day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    /// One row per run attempt.
    Runs,
    /// Long format: one row per (run, step, metric).
    Metrics,
    /// One row per executed notebook cell.
    Cells,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Runs, Table::Metrics, Table::Cells];

    /// The folder name, which is also the `recipe.table` metadata value.
    pub fn name(self) -> &'static str {
        match self {
            Table::Runs => "runs",
            Table::Metrics => "metrics",
            Table::Cells => "cells",
        }
    }

    /// The table's Arrow schema (built once per process).
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<[SchemaRef; 3]> = OnceLock::new();
        let all = SCHEMAS.get_or_init(|| [runs_schema(), metrics_schema(), cells_schema()]);
        all[self as usize].clone()
    }

    /// The schema a reader asks for: the stored one, except that columns with few distinct
    /// values come back as dictionaries (the files store them dictionary-encoded): the
    /// identity components of `runs`, their hashes and group, so a sweep's shared config,
    /// data, code and environment text is decoded and parsed once, and the run id and metric
    /// names of `metrics`.
    pub fn read_schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<[SchemaRef; 3]> = OnceLock::new();
        let all = SCHEMAS.get_or_init(|| {
            let dictionaries = |schema: SchemaRef, names: &[&str]| {
                let fields = schema.fields().iter().map(|field| {
                    match names.contains(&field.name().as_str()) {
                        true => Arc::new(field.as_ref().clone().with_data_type(dictionary())),
                        false => field.clone(),
                    }
                });
                Arc::new(Schema::new(fields.collect::<Vec<_>>()))
            };
            [
                dictionaries(runs_schema(), &SHARED_RUN_COLUMNS),
                dictionaries(metrics_schema(), &["run_id", "name"]),
                cells_schema(),
            ]
        });
        all[self as usize].clone()
    }
}

/// The columns of `runs` read as dictionaries: the identity components, their hashes and the
/// group (what a sweep's runs share).
const SHARED_RUN_COLUMNS: [&str; 11] = [
    "config",
    "seeds",
    "data",
    "code",
    "env",
    "config_hash",
    "seeds_hash",
    "data_hash",
    "code_hash",
    "env_hash",
    "group_id",
];

pub(crate) fn dictionary() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("run_id", false),
        Field::new("attempt", DataType::UInt32, false),
        text("name", false),
        text("recipe_step", true),
        text("parent_run", true),
        text("sweep", true),
        text("status", false),
        Field::new("started_at", utc(), false),
        Field::new("ended_at", utc(), true),
        Field::new("updated_at", utc(), false),
        Field::new("last_step", DataType::Int64, true),
        text("group_id", false),
        text("config_hash", false),
        text("seeds_hash", false),
        text("data_hash", false),
        text("code_hash", false),
        text("env_hash", false),
        // The components themselves, as canonical JSON, so SQL engines can query them.
        text("config", false),
        text("seeds", false),
        text("data", false),
        text("code", false),
        text("env", false),
        // Final value of each metric, and the recipe checks, as JSON.
        text("summary", false),
        text("checks", false),
        // Named blobs of the run (checkpoints, prediction snapshots): name -> blake3.
        text("artifacts", false),
        text("error", true),
        // For replicates: did the metrics match the first attempt bit for bit?
        Field::new("reproduced", DataType::Boolean, true),
        Field::new("diverged_step", DataType::Int64, true),
        // Provenance from the kernel: which session and cell started the run.
        text("session_id", true),
        Field::new("cell_execution", DataType::Int64, true),
        text("cell_history_hash", true),
    ]))
}

fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("run_id", false),
        Field::new("attempt", DataType::UInt32, false),
        Field::new("step", DataType::Int64, false),
        text("name", false),
        Field::new("value", DataType::Float64, false),
        Field::new("wall_time", utc(), false),
    ]))
}

fn cells_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("session_id", false),
        Field::new("execution_count", DataType::Int64, false),
        text("code", false),
        text("code_hash", false),
        text("history_hash", false),
        text("status", false),
        Field::new("started_at", utc(), false),
        Field::new("ended_at", utc(), false),
        text("error", true),
    ]))
}

/// `batch` with each column cast to the type `schema` gives it, column by column: rows of a
/// table between its stored schema and its read schema (dictionaries or plain text).
pub(crate) fn cast_columns(batch: &RecordBatch, schema: SchemaRef) -> crate::Result<RecordBatch> {
    let columns = (batch.columns().iter().zip(schema.fields()))
        .map(
            |(column, field)| match column.data_type() == field.data_type() {
                true => Ok(column.clone()),
                false => arrow::compute::cast(column, field.data_type()),
            },
        )
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}
