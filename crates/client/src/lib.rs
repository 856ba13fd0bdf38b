//! A client for the agent's local API: HTTP/1 over its unix socket, JSON
//! bodies (`socketplane_api::rest`), errors as the agent words them.

use std::path::{Path, PathBuf};

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
    /// The agent answered with an error; its message is for the user.
    #[error("{message}")]
    Agent { status: u16, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One request: the status and the body.
    pub async fn call(
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
            .header("host", "socketplane");
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
}
