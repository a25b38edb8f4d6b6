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

/// The crates inside the runtime, for code of your own. Every session also names them as
/// their own crates (`use candle_core::Tensor;` works in a cell), so a cell never needs a
/// `:dep` on them: a second copy would be a second `Tensor` type that the runtime's
/// functions refuse.
///
/// Each is a module that re-exports the crate's items rather than an alias of the crate
/// (`pub use candle_core as candle;`): the analyzer that infers a cell variable's type
/// writes a type's path through re-exported items, not through an aliased crate, and a
/// variable whose type it cannot write is not kept.
pub mod candle {
    pub use ::candle_core::*;
}
pub mod candle_nn {
    pub use ::candle_nn::*;
}
pub mod serde_json {
    pub use ::serde_json::*;
}
pub mod arrow {
    pub use ::arrow::*;
}
pub mod parquet {
    pub use ::parquet::*;
}
/// The archive crate, for tables and queries beyond the prelude.
pub use recipe_archive as archive;
