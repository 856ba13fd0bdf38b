//! The crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid --http {given:?}: want ADDR:PORT or `off`")]
    InvalidAddr { given: String },
    #[error("binding the HTTP server to {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid --log-format {0:?}: want `text` or `json`")]
    InvalidLogFormat(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
