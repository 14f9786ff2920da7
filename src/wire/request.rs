//! Parsing and validating a query from its wire bytes.

use hickory_proto::op::{OpCode, Query, ResponseCode};

/// The EDNS(0) parameters of a request (RFC 6891 §6.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestEdns {
    /// Requestor's UDP payload size, already raised to at least 512 (RFC 6891 §6.2.5).
    pub max_payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A well-formed query with exactly one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u16,
    pub opcode: OpCode,
    /// The question exactly as asked (name case preserved, RFC 4343).
    pub query: Query,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    pub edns: Option<RequestEdns>,
}

/// Why a packet is not answered normally.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// Say nothing: responses (QR=1), packets too short to carry a header.
    Drop,
    /// Answer with this rcode; the header fields are echoed, the question only if it parsed.
    Error {
        id: u16,
        opcode: OpCode,
        rcode: ResponseCode,
        query: Option<Query>,
        recursion_desired: bool,
        edns: Option<RequestEdns>,
    },
}

/// Parses and validates `bytes` as a query.
pub fn parse(bytes: &[u8]) -> Result<Request, Rejection> {
    let _ = bytes;
    todo!("strict query parsing")
}
