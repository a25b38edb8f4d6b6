//! The archive's one error type. Every message says what happened and, where the user can
//! fix it, what to do next.

use std::path::PathBuf;

/// Everything the archive can fail with.
#[derive(Debug)]
pub enum Error {
    /// An I/O error on a named path.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A Parquet file that cannot be read: truncated, corrupt or not Parquet at all.
    Damaged { path: PathBuf, reason: String },
    /// A file written by another schema version of recipe.
    SchemaVersion { path: PathBuf, found: String },
    /// A value that cannot enter the archive (NaN in a config, an empty name...).
    Invalid(String),
    /// A run reference that matches no run, or several.
    NotFound(String),
    /// Arrow or Parquet refused a batch we built: a bug in recipe, reported as such.
    Format(String),
    /// The git repository could not be inspected.
    Git(String),
}

/// The archive's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Damaged { path, reason } => write!(
                f,
                "{} is damaged ({reason}); the rest of the archive still reads. \
                 HINT: move the file out of the archive, or delete it if it is a leftover of a crash",
                path.display()
            ),
            Error::SchemaVersion { path, found } => write!(
                f,
                "{} has archive schema version {found:?}, but this recipe ({}) reads version {}. \
                 HINT: open it with the recipe version that wrote it (see the file's \
                 recipe.writer metadata), or upgrade recipe",
                path.display(),
                crate::schema::WRITER,
                crate::schema::SCHEMA_VERSION
            ),
            Error::Invalid(msg) | Error::NotFound(msg) | Error::Format(msg) => f.write_str(msg),
            Error::Git(msg) => write!(f, "git: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Format(format!("arrow: {e}"))
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Format(format!("parquet: {e}"))
    }
}

impl From<git2::Error> for Error {
    fn from(e: git2::Error) -> Self {
        Error::Git(e.message().to_string())
    }
}
