//! The crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {detail}")]
    ResolvConf { path: String, detail: String },
    #[error("forwarding failed: {0}")]
    Upstream(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
