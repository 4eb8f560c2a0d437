//! One module per command.

pub mod apply;
pub mod demo;
pub mod inspect;
pub mod train;

use crate::args::DataOpts;
use dae::{Error, ReadOptions, Result};
use std::path::Path;

/// Reading options from the command line.
pub fn read_options(o: &DataOpts) -> ReadOptions {
    ReadOptions {
        header: o.header.then_some(true),
    }
}

/// Fails early, before any long computation, when `path` cannot be written to: its folder is
/// missing or it names a folder.
pub fn check_output(path: &Path, option: &str) -> Result<()> {
    if path.is_dir() {
        return Err(Error::usage(option, format!("{} is a folder, not a file name", path.display())));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent {
        if !dir.is_dir() {
            return Err(Error::usage(
                option,
                format!("the folder {} does not exist", dir.display()),
            ));
        }
    }
    Ok(())
}
