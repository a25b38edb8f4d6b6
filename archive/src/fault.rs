//! Fault injection for crash tests, from the environment variable `RECIPE_FAULT`:
//!
//! - `replace:STEP` aborts the process at that step of a file replacement (the steps are
//!   named in `replace`), as a `kill -9` or a power cut would stop it there;
//! - `full:TABLE` writes the files of `TABLE` (`runs`, `metrics`, `cells`) to `/dev/full`,
//!   so they fail as they would on a full disk.
//!
//! Outside tests the variable is unset, and each check is one environment lookup.

/// The environment variable that names a fault.
pub const FAULT_ENV: &str = "RECIPE_FAULT";

/// The fault of this kind asked for, if any: `replace:pending` -> `pending` for `replace`.
fn asked(kind: &str) -> Option<String> {
    let fault = std::env::var(FAULT_ENV).ok()?;
    Some(fault.strip_prefix(kind)?.strip_prefix(':')?.to_string())
}

/// Abort here if `RECIPE_FAULT=replace:STEP` names this step.
pub(crate) fn crash_at(step: &str) {
    if asked("replace").is_some_and(|s| s == step) {
        eprintln!("{FAULT_ENV}: aborting at replace step {step:?}");
        std::process::abort();
    }
}

/// Whether `RECIPE_FAULT=full:TABLE` asks for this table's files to meet a full disk.
pub(crate) fn disk_full(table: &str) -> bool {
    asked("full").is_some_and(|t| t == table)
}
