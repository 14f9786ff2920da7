//! Encoding answers into a caller-owned buffer, truncating by whole RRsets.

use crate::auth::Answer;
use crate::wire::request::{Rejection, Request};

/// Encodes the answer to `req` into `out` (cleared first), keeping the message within
/// `max_size` bytes. Returns the encoded length.
pub fn encode(req: &Request, answer: &Answer<'_>, max_size: u16, out: &mut Vec<u8>) -> usize {
    let _ = (req, answer, max_size, out);
    todo!("RRset-level truncation encoder")
}

/// Encodes an error response (FORMERR, NOTIMP, REFUSED, ...) for a rejected packet.
pub fn encode_error(rejection: &Rejection, out: &mut Vec<u8>) -> usize {
    let _ = (rejection, out);
    todo!("error responses")
}
