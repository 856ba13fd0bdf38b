//! A small HTTP/1 client for the agent's local API over its unix socket.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use socketplane_api::rest::ApiError;

pub struct Client {
    socket: PathBuf,
}

/// An error the agent answered with (its message is for the user).
#[derive(Debug)]
pub struct AgentError {
    pub message: String,
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AgentError {}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(
                "cannot reach the SocketPlane agent at {} ({e}). Is it running? Start it with `socketplane agent start`, or point --socket / SOCKETPLANE_SOCKET at it.",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to the agent")?;
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
            .context("building the request")?;
        let resp = sender
            .send_request(req)
            .await
            .context("talking to the agent")?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the agent's answer")?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let (status, bytes) = self.call(method, path, body).await?;
        if status >= 400 {
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(AgentError { message }.into());
        }
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .with_context(|| format!("unexpected answer from the agent to {method} {path}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.request("GET", path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let body = serde_json::to_vec(body).context("encoding the request")?;
        self.request("POST", path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
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
