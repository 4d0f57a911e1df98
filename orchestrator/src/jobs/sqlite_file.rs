//! Opening the SQLite databases the orchestrator keeps (the job store, the cost history):
//! the file's directory made when missing, the caller's settings and schema applied, and a
//! failure that names the file and what to check.

use std::path::Path;

use rusqlite::Connection;

/// An SQLite database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SqliteOpenError {
    /// The directory for the file could not be made.
    #[error("cannot create the directory {path} for {what}: {source}")]
    Directory {
        /// What the database holds.
        what: &'static str,
        /// The directory.
        path: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused to open it or to apply the schema.
    #[error("{what} at {path} cannot be opened: {source}; check that the file is writable and the disk is not full")]
    Database {
        /// What the database holds.
        what: &'static str,
        /// The file.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
}

/// How a database's location is shown in messages: its path, or `memory`.
pub fn shown(path: Option<&Path>) -> String {
    path.map_or_else(|| "memory".to_string(), |p| p.display().to_string())
}

/// Opens (creating when needed) the database at `path`, in memory when `None`, and runs
/// `setup` (settings and schema) on it; `what` names it in errors.
pub fn open(
    path: Option<&Path>,
    what: &'static str,
    setup: &str,
) -> Result<Connection, SqliteOpenError> {
    let failed = |source| SqliteOpenError::Database {
        what,
        path: shown(path),
        source,
    };
    let connection = match path {
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| SqliteOpenError::Directory {
                    what,
                    path: parent.display().to_string(),
                    source,
                })?;
            }
            Connection::open(path).map_err(failed)?
        }
        None => Connection::open_in_memory().map_err(failed)?,
    };
    connection.execute_batch(setup).map_err(failed)?;
    Ok(connection)
}
