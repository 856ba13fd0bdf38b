//! A client for the agent's local API: HTTP/1 over its unix socket, JSON
//! bodies (`socketplane_api::rest`), errors as the agent words them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use socketplane_api::rest::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the sentence (and kept in `cause`), so a chain
    // printed by the caller does not repeat it.
    #[error("cannot reach the SocketPlane agent at {} ({cause}). Is it running? Start it with `socketplane agent start`, or point --socket / SOCKETPLANE_SOCKET at it.", socket.display())]
    Unreachable {
        socket: PathBuf,
        cause: std::io::Error,
    },
    #[error("talking to the agent")]
    Http(#[source] hyper::Error),
    #[error("building the request")]
    Request(#[source] hyper::http::Error),
    #[error("encoding the request")]
    Encode(#[source] serde_json::Error),
    #[error("unexpected answer from the agent to {method} {path}")]
    Decode {
        method: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The agent did not answer within the client's deadline.
    #[error("the SocketPlane agent at {} did not answer {method} {path} within {} s; it may be overloaded or stuck (see `socketplane agent logs`)", socket.display(), after.as_secs())]
    Timeout {
        socket: PathBuf,
        method: String,
        path: String,
        after: Duration,
    },
    /// The agent answered with an error; its message is for the user.
    #[error("{message}")]
    Agent { status: u16, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long a call waits for the agent by default: longer than the
/// agent's own deadlines (store, datapath convergence, rollback), so its
/// answer, not this, is what the caller normally sees.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45);

pub struct Client {
    socket: PathBuf,
    timeout: Duration,
    /// Sent as `User-Agent`: the agent counts requests by origin from it.
    origin: String,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
            origin: concat!("socketplane/", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    /// The same client with another deadline per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Names the caller in the `User-Agent`, e.g. `socketplane-cni/0.1.0`
    /// (the agent's metrics count API requests by this origin).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One request: the status and the body, within the client's deadline.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes)> {
        match tokio::time::timeout(self.timeout, self.call_once(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                socket: self.socket.clone(),
                method: method.to_string(),
                path: path.to_string(),
                after: self.timeout,
            }),
        }
    }

    async fn call_once(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes)> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|cause| Error::Unreachable {
                socket: self.socket.clone(),
                cause,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Http)?;
        tokio::spawn(conn);
        let has_body = body.is_some();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "socketplane")
            .header("user-agent", self.origin.as_str());
        if has_body {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(Error::Request)?;
        let resp = sender.send_request(req).await.map_err(Error::Http)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(Error::Http)?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let (status, bytes) = self.call(method, path, body).await?;
        if status >= 400 {
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Error::Agent { status, message });
        }
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
            method: method.to_string(),
            path: path.to_string(),
            source,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.request("GET", path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let body = serde_json::to_vec(body).map_err(Error::Encode)?;
        self.request("POST", path, Some(body)).await
    }

    /// A DELETE whose answer has a body.
    pub async fn delete_for<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.request("DELETE", path, None).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        let _: serde_json::Value = self.request("DELETE", path, None).await?;
        Ok(())
    }
}

/// Percent-encodes a path segment (names are restricted, but be safe).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("web-1.a_b"), "web-1.a_b");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[tokio::test]
    async fn an_absent_agent_is_a_clear_error() {
        let c = Client::new(Path::new("/nonexistent/socketplane.sock"));
        let e = c.get::<serde_json::Value>("/v1/info").await.unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }));
        assert!(e.to_string().contains("Is it running?"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_agent_times_out_with_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("sp-client-timeout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("silent.sock");
        let _ = std::fs::remove_file(&socket);
        // Accepts and never answers.
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let c = Client::new(&socket).with_timeout(Duration::from_millis(200));
        let e = c.get::<serde_json::Value>("/v1/info").await.unwrap_err();
        server.abort();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(e.to_string().contains("did not answer GET /v1/info"), "{e}");
    }
}
