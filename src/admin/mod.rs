//! The admin API: a JSON HTTP/1.1 API to read and change store-managed zones and to start
//! purge jobs, and the client the `muninn records` commands use.
//!
//! - [`AdminConfig`] is `[admin]` in the configuration file (off by default; when on, a
//!   bearer token file is required: the API changes zones and is never served without one).
//! - [`http`] serves the API on the admin runtime (its own normal-priority thread, like
//!   `/metrics`), never on a latency worker. Writes go to the store's writer thread
//!   ([`crate::store::Store::apply`]); store reads run on the heavy-job runtime.
//! - [`types`] holds the JSON request and reply bodies, shared by server and client.
//! - [`client`] is the HTTP client of `muninn records` (the running server holds the store
//!   file's lock, so the CLI cannot open the store itself).
//!
//! Nothing here is on the query path.

pub mod client;
pub mod http;
pub mod records;
pub mod types;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use http::{Api, spawn_admin_server};

/// `[admin]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin API. Default: false.
    pub enabled: bool,
    /// Address of the API. Plain HTTP: keep it on loopback (or a trusted management
    /// network), since the bearer token crosses it in clear text. Default: "127.0.0.1:9154".
    pub listen: SocketAddr,
    /// File holding the bearer token (its content, trimmed; RFC 6750 §2.1 characters).
    /// Required when `enabled`. Read once at start. Default: "" (none).
    pub token_file: PathBuf,
    /// Connections served at once; further ones are closed right after accept. Default: 16.
    pub max_connections: usize,
    /// Largest request body accepted, in bytes. Default: 1048576 (1 MiB).
    pub max_body_size: usize,
    /// Most records one list request returns (the reply says when there were more).
    /// Default: 10000.
    pub max_list_records: usize,
    /// Time allowed for a request head to arrive. Default: 5000 ms.
    pub header_timeout_ms: u64,
    /// Time allowed for a request body to arrive. Default: 10000 ms.
    pub body_timeout_ms: u64,
    /// Lifetime of one connection, keep-alive included. Default: 60000 ms.
    pub connection_timeout_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            enabled: false,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9154)),
            token_file: PathBuf::new(),
            max_connections: 16,
            max_body_size: 1 << 20,
            max_list_records: 10_000,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            connection_timeout_ms: 60_000,
        }
    }
}

impl AdminConfig {
    /// Semantic checks (called from `Config::validate`): messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled && self.token_file.as_os_str().is_empty() {
            return Err("admin.token_file: required when admin.enabled = true \
                        (the admin API changes zones; it is never served without a bearer token)"
                .into());
        }
        for (key, value) in [
            ("admin.max_connections", self.max_connections as u64),
            ("admin.max_body_size", self.max_body_size as u64),
            ("admin.max_list_records", self.max_list_records as u64),
            ("admin.header_timeout_ms", self.header_timeout_ms),
            ("admin.body_timeout_ms", self.body_timeout_ms),
            ("admin.connection_timeout_ms", self.connection_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("{key}: must be greater than 0"));
            }
        }
        Ok(())
    }

    /// Makes `token_file` relative to the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if self.token_file.is_relative() && !self.token_file.as_os_str().is_empty() {
            self.token_file = base.join(&self.token_file);
        }
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    pub fn connection_timeout(&self) -> Duration {
        Duration::from_millis(self.connection_timeout_ms)
    }
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin.token_file {}: cannot read: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin.token_file {}: the token is empty", .0.display())]
    EmptyToken(PathBuf),
    #[error(
        "admin.token_file {}: the token may only hold letters, digits and - . _ ~ + / \
         (then = padding), as in RFC 6750 §2.1",
        .0.display()
    )]
    BadToken(PathBuf),
    #[error("admin API: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The bearer token (never printed).
#[derive(Clone)]
pub struct Token(Box<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Reads the token file: its content, without surrounding whitespace.
    pub fn read(path: &Path) -> Result<Token, AdminError> {
        let text = std::fs::read(path).map_err(|source| AdminError::TokenFile {
            path: path.to_path_buf(),
            source,
        })?;
        Token::new(text.trim_ascii()).map_err(|e| match e {
            TokenError::Empty => AdminError::EmptyToken(path.to_path_buf()),
            TokenError::Chars => AdminError::BadToken(path.to_path_buf()),
        })
    }

    /// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
    pub fn new(bytes: &[u8]) -> Result<Token, TokenError> {
        if bytes.is_empty() {
            return Err(TokenError::Empty);
        }
        let padding = bytes.iter().rev().take_while(|&&b| b == b'=').count();
        let body = bytes
            .get(..bytes.len().saturating_sub(padding))
            .unwrap_or_default();
        if body.is_empty()
            || !body
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        {
            return Err(TokenError::Chars);
        }
        Ok(Token(bytes.into()))
    }

    pub fn as_str(&self) -> &str {
        // Checked to be ASCII in `new`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Compares `presented` with the token in time that depends only on the token's length,
    /// not on where the first difference is (no early exit a client could time).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mut diff = u8::from(presented.len() != self.0.len());
        let mut rest = presented.iter();
        for &b in self.0.iter() {
            diff |= b ^ rest.next().copied().unwrap_or(0);
        }
        std::hint::black_box(diff) == 0
    }
}

/// True when the token file can be read by users other than its owner (group or others
/// have any permission on it): worth a warning, since the token grants write access.
pub fn token_file_exposed(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

/// Why a token is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Empty,
    Chars,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = Token::new(b"s3cr3t-T0ken_x.y~z+/==").unwrap();
        assert!(t.matches(b"s3cr3t-T0ken_x.y~z+/=="));
        assert!(!t.matches(b"s3cr3t-T0ken_x.y~z+/="));
        assert!(!t.matches(b"s3cr3t-T0ken_x.y~z+/==="));
        assert!(!t.matches(b"S3cr3t-T0ken_x.y~z+/=="));
        assert!(!t.matches(b""));
        assert_eq!(Token::new(b"").unwrap_err(), TokenError::Empty);
        assert_eq!(Token::new(b"a b").unwrap_err(), TokenError::Chars);
        assert_eq!(Token::new(b"==").unwrap_err(), TokenError::Chars);
        assert_eq!(Token::new(b"a=b").unwrap_err(), TokenError::Chars);
        assert_eq!(format!("{t:?}"), "Token(..)");
    }

    #[test]
    fn enabled_needs_a_token_file() {
        let mut c = AdminConfig {
            enabled: true,
            ..AdminConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert!(err.starts_with("admin.token_file:"), "{err}");
        c.token_file = "token".into();
        c.validate().unwrap();
        c.resolve_paths(Path::new("/etc/muninn"));
        assert_eq!(c.token_file, PathBuf::from("/etc/muninn/token"));
        c.max_body_size = 0;
        assert!(c.validate().unwrap_err().contains("admin.max_body_size"));
        assert!(AdminConfig::default().validate().is_ok());
    }

    #[test]
    fn token_file_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("muninn-admin-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "  abc123\n").unwrap();
        assert!(Token::read(&f).unwrap().matches(b"abc123"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!token_file_exposed(&f));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(token_file_exposed(&f));
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(Token::read(&f), Err(AdminError::EmptyToken(_))));
        std::fs::write(&f, "a\tb").unwrap();
        assert!(matches!(Token::read(&f), Err(AdminError::BadToken(_))));
        assert!(matches!(
            Token::read(&dir.join("missing")),
            Err(AdminError::TokenFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
