//! Muninn: a high-throughput authoritative and caching DNS server.
//!
//! Data flows one way:
//! `server` (UDP/TCP listeners, owned per-request buffers)
//!   -> `handler` (parse, classify, dispatch)
//!   -> `auth` (plain function of request and zone snapshot)
//!   -> `wire::response` (encode into the request's own buffer)
//!   -> back to the listener.
//!
//! Heavy work (zone parsing, validation, snapshot building) runs on the heavy-job runtime
//! (`runtime`), never on a latency worker.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod handler;
pub mod httpd;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod pace;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod store;
pub mod sys;
pub mod wire;
pub mod zone;
