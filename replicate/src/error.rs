//! The replication crate's error type.

/// What replication refuses, naming where.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// A rule file that does not parse or does not make sense, with the position of
    /// the offending text (1-based line and column).
    #[error("rules {source_name}:{line}:{column}: {message}")]
    Rules {
        /// The file name (or `<memory>`).
        source_name: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading a rule file failed.
    #[error("rules {path}: {source}")]
    RulesIo {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The replication crate's result type.
pub type Result<T, E = ReplicateError> = std::result::Result<T, E>;
