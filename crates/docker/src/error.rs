//! Errors of the Docker front end.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Docker sent something SocketPlane cannot do; the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Cluster(#[from] socketplane_cluster::Error),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// The message with its causes, for Docker to show.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        out
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
