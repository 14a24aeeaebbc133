//! The change journal (`<data>/oxbow/tune-journal.toml`): every knob `oxbow tune`
//! changed, with the value it had before, written *before* the change is made (so a
//! crash between the two leaves an entry whose revert is harmless). A later run that
//! changes the same knob again keeps the first, original value; `oxbow tune --revert`
//! restores entries newest first and keeps only those it could not restore.

use super::fs::RootKind;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// File name of the journal under `<data>/oxbow/`.
pub const JOURNAL_FILE_NAME: &str = "tune-journal.toml";

/// Where a data directory's journal lives.
pub fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("oxbow").join(JOURNAL_FILE_NAME)
}

/// What an entry undoes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// A value written to a file (`old` absent: the file did not exist).
    Write,
    /// A directory created.
    CreateDir,
}

/// One change, as journaled.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    /// The tuner item that made it.
    pub item: String,
    /// What kind of change.
    pub kind: EntryKind,
    /// Which tree.
    pub root: RootKind,
    /// Path inside the tree.
    pub path: PathBuf,
    /// The value before (writes of files that existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The value written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalFile {
    #[serde(default)]
    change: Vec<JournalEntry>,
}

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Reading or writing the file failed.
    #[error("tune journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a journal.
    #[error("tune journal {path} is damaged: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// The journal of one data directory.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    entries: Vec<JournalEntry>,
}

impl Journal {
    /// Loads the journal at `path` (empty if there is none).
    pub fn load(path: &Path) -> Result<Journal, JournalError> {
        let entries = match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str::<JournalFile>(&text)
                    .map_err(|e| JournalError::Parse {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?
                    .change
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(JournalError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(Journal {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[JournalEntry] {
        &self.entries
    }

    /// Whether a change to this path is already journaled.
    pub fn covers(&self, root: RootKind, path: &Path) -> bool {
        self.entries.iter().any(|e| e.root == root && e.path == path)
    }

    /// Adds an entry.
    pub fn push(&mut self, entry: JournalEntry) {
        self.entries.push(entry);
    }

    /// Removes the newest entry.
    pub fn pop(&mut self) -> Option<JournalEntry> {
        self.entries.pop()
    }

    /// Replaces the entries.
    pub fn set_entries(&mut self, entries: Vec<JournalEntry>) {
        self.entries = entries;
    }

    /// Writes the journal durably (temporary file, `fdatasync`, rename); an empty
    /// journal removes the file.
    pub fn save(&self) -> Result<(), JournalError> {
        let io_error = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        if self.entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(e)),
                _ => Ok(()),
            };
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        let text = toml::to_string(&JournalFile {
            change: self.entries.clone(),
        })
        .map_err(|e| JournalError::Parse {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let tmp = self.path.with_extension("toml.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io_error)?;
        file.write_all(b"# Changes made by `oxbow tune`; `oxbow tune --revert` restores them.\n")
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(io_error)?;
        std::fs::rename(&tmp, &self.path).map_err(io_error)
    }
}
