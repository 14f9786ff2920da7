//! Authoritative answers: a plain function of (request, zone snapshot).
//!
//! No sockets, no clocks, no locks: tests call [`answer`] directly. The result borrows
//! RRsets from the snapshot where it can and owns only what it synthesizes (wildcard
//! expansions, DNAME-synthesized CNAMEs).

use std::borrow::Cow;

use hickory_proto::op::ResponseCode;

use crate::wire::request::Request;
use crate::zone::{RRset, ZoneSet};

/// What the answer logic decided; `wire::response` turns it into bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<'z> {
    pub rcode: ResponseCode,
    /// AA flag: set when the answer comes from authoritative data (not on referrals).
    pub authoritative: bool,
    pub answers: Vec<Cow<'z, RRset>>,
    pub authorities: Vec<Cow<'z, RRset>>,
    pub additionals: Vec<Cow<'z, RRset>>,
    /// How many leading `additionals` are required glue (RFC 9471): when they do not fit,
    /// the response must be truncated (TC=1) rather than silently shortened.
    pub required_additionals: usize,
}

/// Answers `req` from `zones`, or returns `None` when no served zone contains the name
/// (the caller answers REFUSED, or hands the query to the cache when recursion is allowed).
pub fn answer<'z>(req: &Request, zones: &'z ZoneSet) -> Option<Answer<'z>> {
    let _ = (req, zones);
    todo!("RFC 1034 §4.3.2 lookup")
}
