//! Errors of the test kit.

/// Everything that can go wrong building or driving test hosts.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// An external command could not run or exited non-zero.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status and standard error, or why it could not run.
        detail: String,
    },
    /// A program that is needed is not installed.
    #[error("`{program}` is not installed: install the Debian package {package}")]
    Missing {
        /// The program (or file) looked for.
        program: String,
        /// The Debian package that has it.
        package: String,
    },
    /// A command's output is not what it promises (e.g. `ip -j` not JSON).
    #[error("`{cmd}` printed something unreadable: {detail}")]
    Output {
        /// The command line.
        cmd: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A file system or system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`KitError`].
pub type Result<T> = std::result::Result<T, KitError>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> KitError {
    let context = context.into();
    move |source| KitError::Io { context, source }
}
