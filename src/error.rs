//! The library's one error type. Every variant reads as a sentence a user can act on.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An impossible configuration or a bad argument.
    #[error("{0}")]
    Config(String),
    /// A file that does not hold what it should (a corrupt or foreign checkpoint, say).
    #[error("{0}")]
    Format(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    pub fn format(message: impl Into<String>) -> Self {
        Error::Format(message.into())
    }

    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
