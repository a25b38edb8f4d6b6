//! The runtime's one error type: what a notebook user sees when something they asked for
//! cannot be done. Messages say what happened and what to do.

/// Everything the runtime can fail with.
#[derive(Debug)]
pub enum Error {
    /// A data file that is missing, unreadable or malformed; the message names it.
    Data(String),
    /// A config or argument that cannot work (shape mismatch, zero batch size...).
    Invalid(String),
    /// candle refused an operation.
    Tensor(candle_core::Error),
    /// The archive refused a write or read.
    Archive(recipe_archive::Error),
    /// An I/O error on a named path.
    Io(std::path::PathBuf, std::io::Error),
}

/// The runtime's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Data(msg) | Error::Invalid(msg) => f.write_str(msg),
            Error::Tensor(e) => write!(f, "tensor: {e}"),
            Error::Archive(e) => write!(f, "archive: {e}"),
            Error::Io(path, e) => write!(f, "{}: {e}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Tensor(e)
    }
}

impl From<recipe_archive::Error> for Error {
    fn from(e: recipe_archive::Error) -> Self {
        Error::Archive(e)
    }
}
