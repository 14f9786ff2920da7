//! Wire format: strict request parsing and size-aware response encoding.
//!
//! Everything here works on caller-owned buffers; nothing is shared between requests.

pub mod request;
pub mod response;
pub mod writer;
