//! The metrics endpoint: a small HTTP/1.1 server with `/metrics` and `/health`.
//!
//! It runs on the runtime it is given (the admin runtime: one thread of its own), never on
//! the latency workers: a scrape walks every counter block, the zone set and /proc. Connections are
//! few and bounded; each must send its request head promptly and finish within a time
//! limit, so a slow or idle client cannot hold a slot for long.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Metrics;
use crate::httpd;

/// prometheus-client writes OpenMetrics 1.0 text (ending in `# EOF`); Prometheus asks for
/// it in its `Accept` header and gets it.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Other clients (curl, promtool, older scrapers) get the classic Prometheus text format.
pub const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once; further ones are closed right after accept.
const MAX_CONNECTIONS: usize = 8;
/// Time allowed for a request head to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of one connection (keep-alive included).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// `[metrics]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` and `/health`. Default: false (so that several servers on one
    /// host, e.g. tests, do not compete for the port).
    pub enabled: bool,
    /// Address of the HTTP endpoint. Default: "127.0.0.1:9153".
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9153)),
        }
    }
}

/// Binds `listen` and serves `/metrics` and `/health` on `rt` until `token` is cancelled.
/// Binding happens before anything is spawned, so an error leaves nothing running.
/// Returns the bound address (useful when port 0 was asked).
pub fn spawn_metrics_server(
    rt: &Handle,
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<SocketAddr> {
    let listener = httpd::bind(rt, listen)?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(metrics.registry());
    let handler = move |req: Request<Incoming>| {
        let response = respond(&req, &metrics, &registry);
        async move { response }
    };
    let limits = httpd::Limits {
        max_connections: MAX_CONNECTIONS,
        header_timeout: HEADER_TIMEOUT,
        connection_timeout: CONNECTION_TIMEOUT,
    };
    httpd::spawn(
        rt,
        listener,
        limits,
        handler,
        "metrics endpoint",
        token,
        tracker,
    );
    Ok(bound)
}

fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    registry: &Registry,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/health" {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/health" {
        return if metrics.is_ready() {
            plain(StatusCode::OK, "ok\n")
        } else {
            plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        };
    }
    let mut body = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n");
    }
    let openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = if openmetrics {
        (body, CONTENT_TYPE_OPENMETRICS)
    } else {
        (to_prometheus_text(&body), CONTENT_TYPE_PROMETHEUS)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Rewrites the OpenMetrics text prometheus-client produces into the classic Prometheus
/// text format (0.0.4): a counter family is named with its `_total` suffix in `# HELP`
/// and `# TYPE` (OpenMetrics names the family without it), and `# UNIT` and `# EOF` go.
/// Samples are the same in both formats for the types used here (counter, gauge,
/// histogram, no exemplars).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // `# HELP` precedes `# TYPE` but its name depends on the type: hold it back one line.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = help.take() {
                push_help(&mut out, name, "", text);
            }
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some((help_name, text)) = help.take() {
                let help_suffix = if help_name == name { suffix } else { "" };
                push_help(&mut out, help_name, help_suffix, text);
            }
            let kind = if kind == "unknown" { "untyped" } else { kind };
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str(suffix);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        if let Some((name, text)) = help.take() {
            push_help(&mut out, name, "", text);
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some((name, text)) = help {
        push_help(&mut out, name, "", text);
    }
    out
}

fn push_help(out: &mut String, name: &str, suffix: &str, text: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push_str(suffix);
    out.push(' ');
    out.push_str(text);
    out.push('\n');
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_with_total() {
        let om = "# HELP a_seconds Latency.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
                  a_seconds_sum 0.5\na_seconds_count 1\na_seconds_bucket{le=\"+Inf\"} 1\n\
                  # HELP q Queries.\n# TYPE q counter\nq_total{t=\"udp\"} 3\n\
                  # HELP g A gauge.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_seconds Latency.\n# TYPE a_seconds histogram\n\
             a_seconds_sum 0.5\na_seconds_count 1\na_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP q_total Queries.\n# TYPE q_total counter\nq_total{t=\"udp\"} 3\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 2\n"
        );
    }
}
