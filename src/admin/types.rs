//! JSON bodies of the admin API, shared by the server ([`super::http`]) and the client
//! ([`super::client`]). Request bodies reject unknown fields, so a misspelt field is an
//! error rather than silently ignored.

use serde::{Deserialize, Serialize};

/// An error reply: `{"error": "..."}` (every non-2xx status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

/// One entry of `GET /v1/zones`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneInfo {
    pub name: String,
    /// "file" or "store".
    pub managed: String,
    pub serial: u32,
    pub records: u64,
}

/// One record as sent to `POST /v1/zones/{zone}/records`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordInput {
    /// Owner: absolute (`www.example.com.`), relative to the zone (`www`) or `@`.
    pub name: String,
    /// Type mnemonic or `TYPEn`.
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    /// RDATA in zone-file presentation form; names relative to the zone are allowed.
    pub data: String,
    /// `key=value` tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `POST /v1/zones/{zone}/records`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    pub records: Vec<RecordInput>,
    /// Replace the RRsets named (every owner and type in `records`) instead of adding to them.
    #[serde(default)]
    pub replace: bool,
}

/// `DELETE /v1/zones/{zone}/records`: every record at `name`, or of `type` there, or the
/// one record with `data` (which needs `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub rtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// Reply to a change (add or delete): the zone's serial before and after, and how many
/// records the transaction wrote and removed. The SOA, whose serial every change bumps,
/// is not counted unless the request itself added one; a record whose TTL changed because
/// a new record joined its RRset (RFC 2181 §5.2) counts as removed and added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeReply {
    pub old_serial: u32,
    pub new_serial: u32,
    pub added: usize,
    pub removed: usize,
}

/// One record of `GET /v1/zones/{zone}/records`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordOutput {
    /// Absolute owner name.
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    /// RDATA in presentation form (RFC 3597 `\# len hex` for types without one here); it
    /// reads back unchanged as `data` of an add or delete.
    pub data: String,
    pub tags: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub updated: u64,
    /// "file", "api" or "import".
    pub source: String,
}

/// Reply to `GET /v1/zones/{zone}/records`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordList {
    pub zone: String,
    /// The zone's serial in the same read as the records.
    pub serial: u32,
    pub records: Vec<RecordOutput>,
    /// More records matched than `admin.max_list_records`; narrow the filter.
    pub truncated: bool,
}

/// `POST /v1/purges`: delete every record tagged `tag` (`key=value`), in one zone or in
/// every store-managed zone, optionally only of one type or last updated before a time,
/// in batches, as a background job. A dry run only counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    pub tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// Only records of this type (mnemonic or `TYPEn`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub rtype: Option<String>,
    /// Only records last updated before this time (seconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_before: Option<u64>,
}
