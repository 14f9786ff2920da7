//! The admin API's HTTP/1.1 server: bearer-token authentication, routing, JSON in and out.
//!
//! It runs on the runtime it is given (the admin runtime), like `/metrics`: connections are
//! bounded (`admin.max_connections`), each must send its request head within
//! `admin.header_timeout_ms`, its body within `admin.body_timeout_ms` and may live at most
//! `admin.connection_timeout_ms`. Store reads are sent to the heavy-job runtime; changes go
//! to the store's writer thread. Every error reply is `{"error": "..."}` naming the problem.
//!
//! Endpoints (all under `/v1`, all need `Authorization: Bearer <token>`):
//!
//! | method and path | |
//! |---|---|
//! | `GET /v1/zones` | served zones: name, managed, serial, records |
//! | `GET /v1/zones/{zone}/records[?name=&type=&tag=k=v]` | records with TTL, data, tags, times, source |
//! | `POST /v1/zones/{zone}/records` | add (or replace RRsets) in one transaction |
//! | `DELETE /v1/zones/{zone}/records` | delete by name, name+type or one record |
//! | `POST /v1/purges` | start a purge job (records tagged `k=v`): 202 and its status |
//! | `GET /v1/jobs`, `GET /v1/jobs/{id}` | job statuses with progress |

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hickory_proto::rr::{LowerName, Name, RecordType};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::records::{self, BadRequest, ListFilter};
use super::types::{AddRequest, DeleteRequest, ErrorReply, PurgeRequest, RecordList};
use super::{AdminConfig, AdminError, Token};
use crate::config::parse_zone_name;
use crate::httpd;
use crate::jobs::{JobError, Jobs, PurgeSpec};
use crate::store::{Change, Store, StoreError, parse_owner, schema};
use crate::zone::ZoneSet;

/// A reply other than success: status and message (sent as `{"error": message}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// For 405: the methods the path allows (the `Allow` header, RFC 9110 §15.5.6).
    pub allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            allow: None,
        }
    }

    fn not_allowed(method: &Method, allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed; allowed: {allow}"),
            )
        }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> ApiError {
        ApiError::bad(e.0)
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::Store(e) => ApiError::from(e),
            JobError::TooMany { .. } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            JobError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            // A malformed spec (and whatever else the job engine refuses up front).
            e => ApiError::bad(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            // The request itself is wrong; the store changed nothing.
            StoreError::NoSuchZone(_)
            | StoreError::NotStoreManaged(_)
            | StoreError::OutOfZone { .. }
            | StoreError::BadOwner(..)
            | StoreError::BadRecord { .. }
            | StoreError::BadTag(_)
            | StoreError::CnameConflict(_)
            | StoreError::SoaDelete
            | StoreError::NoApexNs(_)
            | StoreError::NoChange => StatusCode::BAD_REQUEST,
            StoreError::WriterGone => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Locked(_)
            | StoreError::Open { .. }
            | StoreError::Dir { .. }
            | StoreError::Db(_)
            | StoreError::Schema { .. }
            | StoreError::Corrupt(..)
            | StoreError::Build(..) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

type Reply = Response<Full<Bytes>>;

/// What the API serves from: the served zone set, the store (set once the initial zone
/// load opened it) and the heavy-job runtime for store reads.
pub struct Api {
    zones: Arc<ArcSwap<ZoneSet>>,
    heavy: Handle,
    token: Token,
    config: AdminConfig,
    store: OnceLock<Store>,
    jobs: OnceLock<Jobs>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("listen", &self.config.listen)
            .field("store", &self.store.get())
            .finish_non_exhaustive()
    }
}

impl Api {
    /// `zones` is the cell queries are answered from; `heavy` runs store reads.
    pub fn new(
        zones: Arc<ArcSwap<ZoneSet>>,
        heavy: Handle,
        token: Token,
        config: &AdminConfig,
    ) -> Arc<Api> {
        Arc::new(Api {
            zones,
            heavy,
            token,
            config: config.clone(),
            store: OnceLock::new(),
            jobs: OnceLock::new(),
        })
    }

    /// Makes the job registry available (until then, job requests get 503).
    pub fn set_jobs(&self, jobs: Jobs) {
        let _ = self.jobs.set(jobs);
    }

    fn jobs(&self) -> Result<&Jobs, ApiError> {
        self.jobs.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "zones are still loading; try again shortly",
            )
        })
    }

    /// Makes the store available (until then, zone requests get 503).
    pub fn set_store(&self, store: Store) {
        let _ = self.store.set(store);
    }

    fn store(&self) -> Result<Store, ApiError> {
        self.store.get().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "zones are still loading; try again shortly",
            )
        })
    }

    /// Runs blocking store reads on the heavy-job runtime.
    async fn on_heavy<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.heavy
            .spawn(async move { job() })
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("store read failed: {e}"),
                )
            })?
            .map_err(ApiError::from)
    }

    /// The served zone named by a path segment, by its configured origin.
    fn served_zone(&self, text: &str) -> Result<Name, ApiError> {
        let name = parse_zone_name(text)
            .map_err(|e| ApiError::bad(format!("bad zone name {text:?}: {e}")))?;
        let zones = self.zones.load();
        zones
            .get(&LowerName::new(&name))
            .map(|z| z.origin().clone())
            .ok_or_else(|| ApiError::bad(format!("zone {name} is not served here")))
    }

    async fn handle(&self, req: Request<Incoming>) -> Reply {
        if let Err(e) = self.authorize(req.headers()) {
            let mut reply = error_reply(&e);
            if e.status == StatusCode::UNAUTHORIZED {
                // RFC 6750 §3: a request without credentials gets the scheme to use.
                reply.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"muninn\""),
                );
            }
            return reply;
        }
        let method = req.method().clone();
        match self.route(req).await {
            Ok(reply) => reply,
            Err(e) => {
                if e.status.is_server_error() {
                    warn!(%method, status = e.status.as_u16(), "admin API: {}", e.message);
                }
                let mut reply = error_reply(&e);
                if let Some(allow) = e.allow {
                    reply
                        .headers_mut()
                        .insert(ALLOW, HeaderValue::from_static(allow));
                }
                reply
            }
        }
    }

    /// RFC 6750 §2.1: `Authorization: Bearer <token>`; the scheme is case-insensitive
    /// (RFC 9110 §11.1). No usable credentials: 401; a wrong token: 403.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let missing = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing credentials: send Authorization: Bearer <token>",
            )
        };
        let value = headers.get(AUTHORIZATION).ok_or_else(missing)?.as_bytes();
        let (scheme, credentials) = value
            .iter()
            .position(|&b| b == b' ')
            .map(|at| value.split_at(at))
            .ok_or_else(missing)?;
        if !scheme.eq_ignore_ascii_case(b"Bearer") {
            return Err(missing());
        }
        if self.token.matches(credentials.trim_ascii()) {
            Ok(())
        } else {
            warn!("admin API: request with a wrong bearer token refused");
            Err(ApiError::new(StatusCode::FORBIDDEN, "invalid bearer token"))
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Reply, ApiError> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no endpoint {path}"));
        let rest = path.strip_prefix("/v1/").ok_or_else(not_found)?;
        let segments: Vec<String> = rest
            .split('/')
            .map(|s| {
                percent_decode(s).ok_or_else(|| ApiError::bad(format!("bad escape in {path}")))
            })
            .collect::<Result<_, _>>()?;
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = req.method().clone();
        match segments.as_slice() {
            ["zones"] => match method {
                Method::GET => self.zones_list().await,
                _ => Err(ApiError::not_allowed(&method, "GET")),
            },
            ["zones", zone, "records"] => {
                let origin = self.served_zone(zone)?;
                match method {
                    Method::GET => self.records_list(origin, &query).await,
                    Method::POST => {
                        let body: AddRequest = self.read_json(req).await?;
                        let added_soa = body
                            .records
                            .iter()
                            .any(|r| records::record_type(&r.rtype) == Ok(RecordType::SOA));
                        let change = records::add_change(&origin, &body.records, body.replace)?;
                        self.apply(origin, change, added_soa, "add").await
                    }
                    Method::DELETE => {
                        let body: DeleteRequest = self.read_json(req).await?;
                        let change = records::delete_change(&origin, &body)?;
                        self.apply(origin, change, false, "delete").await
                    }
                    _ => Err(ApiError::not_allowed(&method, "GET, POST, DELETE")),
                }
            }
            ["purges"] => match method {
                Method::POST => {
                    let body: PurgeRequest = self.read_json(req).await?;
                    self.purge(body)
                }
                _ => Err(ApiError::not_allowed(&method, "POST")),
            },
            ["jobs"] => match method {
                Method::GET => Ok(json(StatusCode::OK, &self.jobs()?.list())),
                _ => Err(ApiError::not_allowed(&method, "GET")),
            },
            ["jobs", id] => match method {
                Method::GET => {
                    let id: u64 = id
                        .parse()
                        .map_err(|_| ApiError::bad(format!("bad job id {id:?}")))?;
                    let status = self.jobs()?.get(id).ok_or_else(|| {
                        ApiError::new(StatusCode::NOT_FOUND, format!("no job {id}"))
                    })?;
                    Ok(json(StatusCode::OK, &status))
                }
                _ => Err(ApiError::not_allowed(&method, "GET")),
            },
            _ => Err(not_found()),
        }
    }

    /// Starts a purge job: 202 with its first status and `Location: /v1/jobs/{id}`.
    fn purge(&self, req: PurgeRequest) -> Result<Reply, ApiError> {
        let jobs = self.jobs()?;
        if let Some(zone) = &req.zone {
            self.served_zone(zone)?;
        }
        // Through JSON: every field the request names must reach the job engine unchanged
        // (a dropped `dry_run` would turn a count into a real purge).
        let wanted = serde_json::to_value(&req)
            .map_err(|e| ApiError::bad(format!("bad purge request: {e}")))?;
        let spec: PurgeSpec = serde_json::from_value(wanted.clone())
            .map_err(|e| ApiError::bad(format!("bad purge request: {e}")))?;
        let got = serde_json::to_value(&spec).unwrap_or_default();
        if let Some(fields) = wanted.as_object() {
            for (key, value) in fields {
                if got.get(key).unwrap_or(&serde_json::Value::Null) != value {
                    return Err(ApiError::bad(format!(
                        "purge field {key:?} is not supported by this server"
                    )));
                }
            }
        }
        let status = jobs.start_purge(spec)?;
        info!(
            job = status.id,
            tag = %req.tag,
            zone = req.zone.as_deref().unwrap_or("*"),
            dry_run = req.dry_run,
            "admin API: purge started"
        );
        let mut reply = json(StatusCode::ACCEPTED, &status);
        if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", status.id)) {
            reply
                .headers_mut()
                .insert(hyper::header::LOCATION, location);
        }
        Ok(reply)
    }

    async fn zones_list(&self) -> Result<Reply, ApiError> {
        let store = self.store()?;
        let mut served: Vec<(Name, u32, u64)> = self
            .zones
            .load()
            .iter()
            .map(|z| (z.origin().clone(), z.serial(), z.record_count() as u64))
            .collect();
        served.sort_by(|a, b| a.0.cmp(&b.0));
        let infos = self
            .on_heavy(move || records::zone_infos(&store, &served))
            .await?;
        Ok(json(StatusCode::OK, &infos))
    }

    async fn records_list(&self, origin: Name, query: &str) -> Result<Reply, ApiError> {
        let mut filter = ListFilter::default();
        for (key, value) in parse_query(query)? {
            match key.as_str() {
                "name" => filter.name = Some(parse_owner(&value, &origin)?),
                "type" => filter.rtype = Some(records::record_type(&value)?),
                "tag" => {
                    if !schema::valid_tag(&value) {
                        return Err(StoreError::BadTag(value).into());
                    }
                    filter.tag = Some(value);
                }
                other => {
                    return Err(ApiError::bad(format!(
                        "unknown query parameter {other:?} (name, type, tag)"
                    )));
                }
            }
        }
        let store = self.store()?;
        let max = self.config.max_list_records;
        let zone = origin.clone();
        let (found, truncated, serial) = self
            .on_heavy(move || records::list(&store, &zone, &filter, max))
            .await?;
        let list = RecordList {
            zone: origin.to_string(),
            serial,
            records: found.iter().map(records::record_output).collect(),
            truncated,
        };
        Ok(json(StatusCode::OK, &list))
    }

    /// One change transaction on the store's writer thread.
    async fn apply(
        &self,
        origin: Name,
        change: Change,
        added_soa: bool,
        what: &str,
    ) -> Result<Reply, ApiError> {
        let store = self.store()?;
        let event = store.apply(&origin, change).await?;
        let reply = records::change_reply(&event, added_soa);
        info!(
            zone = %origin,
            old_serial = reply.old_serial,
            new_serial = reply.new_serial,
            added = reply.added,
            removed = reply.removed,
            "admin API: {what} committed"
        );
        Ok(json(StatusCode::OK, &reply))
    }

    /// Reads the body (bounded in size and time) and parses it as JSON.
    async fn read_json<T: DeserializeOwned>(&self, req: Request<Incoming>) -> Result<T, ApiError> {
        let max = self.config.max_body_size;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than admin.max_body_size ({max} bytes)"),
            )
        };
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let read = Limited::new(req.into_body(), max).collect();
        let bytes = match tokio::time::timeout(self.config.body_timeout(), read).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body not received within admin.body_timeout_ms ({} ms)",
                        self.config.body_timeout_ms
                    ),
                ));
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(too_large());
            }
            Ok(Err(e)) => return Err(ApiError::bad(format!("cannot read the request body: {e}"))),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("bad JSON body: {e}")))
    }
}

/// `%XX` escapes decoded (RFC 3986 §2.1); None for a malformed escape or non-UTF-8 result.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if c == b'%' {
            let hex = |at: usize| bytes.get(at).and_then(|&h| char::from(h).to_digit(16));
            let (hi, lo) = (hex(i + 1)?, hex(i + 2)?);
            out.push((hi * 16 + lo) as u8); // two hex digits: < 256
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `a=1&b=2` as decoded pairs (a pair without `=` has an empty value).
fn parse_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (percent_decode(k), percent_decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(ApiError::bad(format!(
                    "bad escape in query parameter {pair:?}"
                ))),
            }
        })
        .collect()
}

fn json_body<T: Serialize>(value: &T) -> Full<Bytes> {
    // Serializing these plain structs cannot fail; an empty object is the fallback.
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    Full::new(Bytes::from(body))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let mut r = Response::new(json_body(value));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_reply(e: &ApiError) -> Reply {
    json(
        e.status,
        &ErrorReply {
            error: e.message.clone(),
        },
    )
}

/// Binds `config.listen` and serves the API on `rt` until `token` is cancelled. Binding
/// happens before anything is spawned, so an error leaves nothing running. Returns the
/// bound address (useful when port 0 was asked).
pub fn spawn_admin_server(
    rt: &Handle,
    api: Arc<Api>,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> Result<SocketAddr, AdminError> {
    let addr = api.config.listen;
    let listen_err = |source| AdminError::Listen { addr, source };
    let listener = httpd::bind(rt, addr).map_err(listen_err)?;
    let bound = listener.local_addr().map_err(listen_err)?;
    if !bound.ip().is_loopback() {
        warn!(%bound, "admin API on a non-loopback address: the bearer token crosses the network in clear text");
    }
    let limits = httpd::Limits {
        max_connections: api.config.max_connections,
        header_timeout: api.config.header_timeout(),
        connection_timeout: api.config.connection_timeout(),
    };
    let handler = move |req: Request<Incoming>| {
        let api = Arc::clone(&api);
        async move { api.handle(req).await }
    };
    httpd::spawn(rt, listener, limits, handler, "admin API", token, tracker);
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes() {
        assert_eq!(percent_decode("a%2Eb%3d").as_deref(), Some("a.b="));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%g1"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%ff"), None); // not UTF-8
        let q = parse_query("name=www&tag=env=prod&type=A&x").unwrap();
        assert_eq!(
            q,
            [
                ("name".into(), "www".into()),
                ("tag".into(), "env=prod".into()),
                ("type".into(), "A".into()),
                ("x".into(), String::new())
            ]
        );
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let s = |e: StoreError| ApiError::from(e).status;
        assert_eq!(s(StoreError::NoChange), StatusCode::BAD_REQUEST);
        assert_eq!(
            s(StoreError::NotStoreManaged("a.".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(s(StoreError::WriterGone), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            s(StoreError::Corrupt("a.".into(), "x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
