//! HTTP/1.1 client of the admin API, for the `muninn records` commands (the running server
//! holds the store file's lock, so the CLI goes through the API). One connection per call;
//! every call is bounded by the client's timeout. Error replies become
//! [`ClientError::Status`] carrying the server's `{"error": ...}` message.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::Token;
use super::types::{
    AddRequest, ChangeReply, DeleteRequest, ErrorReply, PurgeRequest, RecordList, ZoneInfo,
};
use crate::jobs::JobStatus;

/// Largest reply body read (a list is bounded by the server's `admin.max_list_records`).
const MAX_REPLY_BYTES: usize = 256 << 20;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad admin API URL {0:?}: {1}")]
    BadUrl(String, String),
    #[error(
        "cannot connect to the admin API at {addr}: {source} (is `muninn serve` running with [admin] enabled?)"
    )]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("admin API at {addr}: {source}")]
    Http {
        addr: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("admin API at {addr} did not reply within {} s", .timeout.as_secs_f64())]
    Timeout { addr: String, timeout: Duration },
    /// The server refused the request; `message` is its reason.
    #[error("{message} (HTTP {status})")]
    Status { status: u16, message: String },
    #[error("unexpected reply from the admin API: {0}")]
    Reply(String),
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port` to connect to (and the Host header).
    authority: String,
    /// Path prefix of the server URL, without a trailing slash.
    base: String,
    token: Token,
    timeout: Duration,
}

impl Client {
    /// `server` is `http://host:port[/prefix]` (the scheme may be left out).
    pub fn new(server: &str, token: Token, timeout: Duration) -> Result<Client, ClientError> {
        let bad = |why: &str| ClientError::BadUrl(server.to_string(), why.to_string());
        let uri: Uri = server
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            None | Some("http") => {}
            Some(other) => return Err(bad(&format!("scheme {other} is not supported (use http)"))),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host:port"))?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Client {
            authority: format!("{}:{port}", authority.host()),
            base: uri.path().trim_end_matches('/').to_string(),
            token,
            timeout,
        })
    }

    /// One request; returns the status and the body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let addr = self.authority.clone();
        let exchange = async {
            let http = |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Http {
                addr: addr.clone(),
                source,
            };
            let stream = TcpStream::connect(&self.authority)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| http(e.into()))?;
            let driver = tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(format!("{}{path}", self.base))
                .header(HOST, &self.authority)
                .header(AUTHORIZATION, format!("Bearer {}", self.token.as_str()));
            if body.is_some() {
                req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| http(e.into()))?;
            let resp = sender.send_request(req).await.map_err(|e| http(e.into()))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(http)?
                .to_bytes();
            driver.abort();
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.authority.clone(),
                timeout: self.timeout,
            })?
    }

    /// One request with an optional JSON body; a 2xx reply is parsed as `T`, any other
    /// becomes [`ClientError::Status`] with the server's message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Reply(e.to_string()))?;
        let (status, bytes) = self.send(method, path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorReply>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
            return Err(ClientError::Status {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Reply(e.to_string()))
    }

    pub async fn zones(&self) -> Result<Vec<ZoneInfo>, ClientError> {
        self.call(Method::GET, "/v1/zones", None::<&()>).await
    }

    /// Records of `zone`, optionally only those at `name`, of `rtype`, tagged `tag`.
    pub async fn list(
        &self,
        zone: &str,
        name: Option<&str>,
        rtype: Option<&str>,
        tag: Option<&str>,
    ) -> Result<RecordList, ClientError> {
        let mut path = records_path(zone);
        let mut sep = '?';
        for (key, value) in [("name", name), ("type", rtype), ("tag", tag)] {
            if let Some(v) = value {
                path.push(sep);
                path.push_str(key);
                path.push('=');
                path.push_str(&encode(v));
                sep = '&';
            }
        }
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn add(&self, zone: &str, req: &AddRequest) -> Result<ChangeReply, ClientError> {
        self.call(Method::POST, &records_path(zone), Some(req))
            .await
    }

    pub async fn delete(
        &self,
        zone: &str,
        req: &DeleteRequest,
    ) -> Result<ChangeReply, ClientError> {
        self.call(Method::DELETE, &records_path(zone), Some(req))
            .await
    }
}

impl Client {
    /// Starts a purge job; returns its first status.
    pub async fn purge(&self, req: &PurgeRequest) -> Result<JobStatus, ClientError> {
        self.call(Method::POST, "/v1/purges", Some(req)).await
    }

    pub async fn job(&self, id: u64) -> Result<JobStatus, ClientError> {
        self.call(Method::GET, &format!("/v1/jobs/{id}"), None::<&()>)
            .await
    }

    pub async fn jobs(&self) -> Result<Vec<JobStatus>, ClientError> {
        self.call(Method::GET, "/v1/jobs", None::<&()>).await
    }
}

fn records_path(zone: &str) -> String {
    format!("/v1/zones/{}/records", encode(zone))
}

/// Percent-encodes everything but RFC 3986 §2.3 unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token::new(b"t").unwrap()
    }

    #[test]
    fn urls() {
        let t = Duration::from_secs(1);
        let c = Client::new("http://127.0.0.1:9154", token(), t).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.base.as_str()),
            ("127.0.0.1:9154", "")
        );
        let c = Client::new("127.0.0.1:9154", token(), t).unwrap();
        assert_eq!(c.authority, "127.0.0.1:9154");
        let c = Client::new("http://[::1]:80/admin/", token(), t).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.base.as_str()),
            ("[::1]:80", "/admin")
        );
        assert!(Client::new("https://127.0.0.1:9154", token(), t).is_err());
        assert!(Client::new("http://", token(), t).is_err());
        assert_eq!(encode("env=prod a/é"), "env%3Dprod%20a%2F%C3%A9");
        assert_eq!(
            records_path("example.test."),
            "/v1/zones/example.test./records"
        );
    }
}
