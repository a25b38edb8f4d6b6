//! The runtime as cells see it: one shared library, loaded once per kernel session.
//!
//! Each notebook cell is compiled to its own shared object. Were the runtime linked into
//! every one of them, each cell would get its own copy of every static: its own thread pool,
//! its own stop flag, its own counters. Built as a Rust `dylib`, the runtime (and candle,
//! arrow, parquet inside it) is loaded once, and every cell links against that one copy.
//!
//! The kernel passes this library to rustc under the name `recipe`, so a cell writes
//! `recipe::Dataset` or `use recipe::prelude::*;` as it would with the `recipe` crate.

pub use recipe::*;

/// candle, for tensors and layers of your own.
pub use candle_core as candle;
pub use candle_nn;
/// The archive crate, for tables and queries beyond the prelude.
pub use recipe_archive as archive;
