//! Errors with context: which file, which line/column/field, what is wrong.
//!
//! Every error a user can cause is a value of [`Error`], never a panic. [`Error::exit_code`] maps
//! them onto the CLI's exit codes: 2 for bad usage or bad input, 1 for failures at run time.

use std::fmt;
use std::path::{Path, PathBuf};

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with enough context for a user to fix it.
#[derive(Debug)]
pub enum Error {
    /// A file could not be opened, read or written.
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// A file's content is malformed or unsuitable. `location` names the line, column, field or
    /// header entry when there is one ("line 3, column 2", "header field 'descr'").
    Input {
        path: PathBuf,
        location: Option<String>,
        message: String,
    },
    /// An option or configuration value is invalid (`--noise masking:1.5`).
    Usage { field: String, message: String },
    /// Training or computation failed at run time (divergence, a backend failure).
    Runtime(String),
    /// The run was stopped on request (Ctrl-C) after saving its state; the message says where.
    Interrupted(String),
}

impl Error {
    /// A malformed-input error for `path`.
    pub fn input(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Input {
            path: path.as_ref().to_path_buf(),
            location: None,
            message: message.into(),
        }
    }

    /// A malformed-input error for `path` at `location` ("line 4, column 2").
    pub fn input_at(
        path: impl AsRef<Path>,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Input {
            path: path.as_ref().to_path_buf(),
            location: Some(location.into()),
            message: message.into(),
        }
    }

    /// An invalid option or configuration value.
    pub fn usage(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Usage {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An I/O failure on `path` while doing `action` ("reading", "writing").
    pub fn io(path: impl AsRef<Path>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            action,
            source,
        }
    }

    /// The process exit code the CLI uses for this error: 2 for bad usage or bad input
    /// (including a missing input file), 1 for failures at run time.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { action, .. } if *action == "reading" || *action == "opening" => 2,
            Error::Io { .. } => 1,
            Error::Input { .. } | Error::Usage { .. } => 2,
            Error::Runtime(_) => 1,
            Error::Interrupted(_) => 130,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                path,
                action,
                source,
            } => {
                use std::io::ErrorKind as K;
                let what = match source.kind() {
                    K::NotFound => "no such file or directory".to_string(),
                    K::UnexpectedEof => "file ends early (truncated)".to_string(),
                    K::PermissionDenied => "permission denied".to_string(),
                    K::IsADirectory => "it is a folder, not a file".to_string(),
                    K::NotADirectory => "a part of the path is a file, not a folder".to_string(),
                    K::AlreadyExists => "it already exists".to_string(),
                    K::StorageFull => "the disk is full".to_string(),
                    K::ReadOnlyFilesystem => "the file system is read-only".to_string(),
                    // A pipe or terminal where a file that can be read twice is needed.
                    K::NotSeekable => "it must be a file, not a pipe".to_string(),
                    _ => source.to_string(),
                };
                write!(f, "{}: {action} failed: {what}", path.display())
            }
            Error::Input {
                path,
                location: Some(loc),
                message,
            } => write!(f, "{}: {loc}: {message}", path.display()),
            Error::Input {
                path,
                location: None,
                message,
            } => write!(f, "{}: {message}", path.display()),
            Error::Usage { field, message } => write!(f, "invalid {field}: {message}"),
            Error::Runtime(message) | Error::Interrupted(message) => f.write_str(message),
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
