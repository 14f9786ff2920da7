//! A small message writer with name compression that does not allocate.
//!
//! hickory's `BinEncoder` allocates for every name it stores as a compression candidate
//! and for every name it writes; on the answer path that costs more than the rest of the
//! response. This writer appends straight to the caller's buffer and remembers up to
//! [`MAX_TARGETS`] label offsets in a fixed array. Candidates are compared against the
//! bytes already written (case-insensitively, RFC 4343 §3), the way Knot does it.
//!
//! Names inside RDATA are compressed only for the RFC 1035 types (NS, CNAME, PTR, MX,
//! SOA), as RFC 3597 §4 requires; every other RDATA is copied (zone data, already in
//! uncompressed wire form) or written by hickory, uncompressed (records).

use hickory_proto::op::Query;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use crate::zone::rdata::{Labels, Part, compressible, walk};

/// How many label offsets are kept as compression targets (hickory and Unbound use 64).
pub const MAX_TARGETS: usize = 64;

/// Offsets at or above this cannot be the target of a 14-bit compression pointer.
const POINTER_LIMIT: usize = 0x3FFF;

/// Most labels a 255-octet name can have: bounds pointer chains when matching.
const MAX_LABELS: usize = 128;

/// The record (or name) could not be written: rdata hickory refuses to encode.
#[derive(Debug)]
pub struct Unencodable;

/// Appends DNS message parts to a buffer that starts with the message header.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    targets: [u16; MAX_TARGETS],
    target_count: usize,
}

impl<'a> Writer<'a> {
    /// Starts a message in `out` (cleared) with a zeroed 12-byte header placeholder.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.clear();
        out.extend_from_slice(&[0; super::request::HEADER_LEN]);
        Self {
            out,
            targets: [0; MAX_TARGETS],
            target_count: 0,
        }
    }

    /// Bytes written so far, header included.
    pub fn offset(&self) -> usize {
        self.out.len()
    }

    /// Cuts the message back to `len` bytes, forgetting compression targets past it.
    pub fn truncate(&mut self, len: usize) {
        self.out.truncate(len);
        while let Some(last) = self.target_count.checked_sub(1) {
            match self.targets.get(last) {
                Some(&t) if usize::from(t) >= len => self.target_count = last,
                _ => break,
            }
        }
    }

    /// Overwrites the 12-byte header placeholder.
    pub fn set_header(&mut self, header: &[u8; super::request::HEADER_LEN]) {
        if let Some(slot) = self.out.get_mut(..header.len()) {
            slot.copy_from_slice(header);
        }
    }

    pub fn put_u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub fn put_u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub fn put_u8(&mut self, v: u8) {
        self.out.push(v);
    }

    /// Writes the question (name case preserved, RFC 4343 §4.1).
    pub fn put_query(&mut self, query: &Query) {
        self.put_name(query.name());
        self.put_u16(u16::from(query.query_type()));
        self.put_u16(u16::from(query.query_class()));
    }

    /// Writes one resource record, compressing its owner name and, for the RFC 1035 types,
    /// names in its RDATA (RFC 1035 §4.1.4).
    pub fn put_record(&mut self, record: &Record) -> Result<(), Unencodable> {
        self.put_name(&record.name);
        self.put_u16(u16::from(record.record_type()));
        self.put_u16(u16::from(record.dns_class));
        self.put_u32(record.ttl);
        let rdlength_at = self.out.len();
        self.put_u16(0);
        let rdata_start = self.out.len();
        match &record.data {
            RData::A(a) => self.out.extend_from_slice(&a.0.octets()),
            RData::AAAA(aaaa) => self.out.extend_from_slice(&aaaa.0.octets()),
            RData::NS(ns) => self.put_name(&ns.0),
            RData::CNAME(cname) => self.put_name(&cname.0),
            RData::PTR(ptr) => self.put_name(&ptr.0),
            RData::MX(mx) => {
                self.put_u16(mx.preference);
                self.put_name(&mx.exchange);
            }
            RData::SOA(soa) => {
                self.put_name(&soa.mname);
                self.put_name(&soa.rname);
                self.put_u32(soa.serial);
                self.put_u32(soa.refresh as u32);
                self.put_u32(soa.retry as u32);
                self.put_u32(soa.expire as u32);
                self.put_u32(soa.minimum);
            }
            other => {
                // Written at the end of the message so offsets stay message-relative.
                let mut enc = BinEncoder::with_offset(self.out, rdata_start as u32);
                enc.set_name_encoding(NameEncoding::Uncompressed);
                other.emit(&mut enc).map_err(|_| Unencodable)?;
            }
        }
        let rdlength = u16::try_from(self.out.len() - rdata_start).map_err(|_| Unencodable)?;
        if let Some(slot) = self.out.get_mut(rdlength_at..rdata_start) {
            slot.copy_from_slice(&rdlength.to_be_bytes());
        }
        Ok(())
    }

    /// Writes one record of a wire-form RRset: owner (compressed), type, class IN, TTL,
    /// and `rdata`, re-emitting its names with compression for the RFC 1035 types (RFC
    /// 3597 §4) and copying it otherwise.
    pub fn put_wire_record(
        &mut self,
        owner: &[u8],
        rtype: RecordType,
        ttl: u32,
        rdata: &[u8],
    ) -> Result<(), Unencodable> {
        self.put_name_wire(owner);
        self.put_u16(u16::from(rtype));
        self.put_u16(u16::from(DNSClass::IN));
        self.put_u32(ttl);
        let rdlength_at = self.out.len();
        self.put_u16(0);
        let rdata_start = self.out.len();
        let compressed = compressible(rtype).is_some_and(|layout| {
            walk(layout, rdata, |part, bytes| match part {
                Part::Name => self.put_name_wire(bytes),
                _ => self.out.extend_from_slice(bytes),
            })
        });
        if !compressed {
            // Opaque data, or (never for zone data) names not in the expected layout.
            self.truncate(rdata_start);
            self.out.extend_from_slice(rdata);
        }
        let rdlength = u16::try_from(self.out.len() - rdata_start).map_err(|_| Unencodable)?;
        if let Some(slot) = self.out.get_mut(rdlength_at..rdata_start) {
            slot.copy_from_slice(&rdlength.to_be_bytes());
        }
        Ok(())
    }

    /// Writes the uncompressed wire name `wire` like [`Writer::put_name`].
    pub fn put_name_wire(&mut self, wire: &[u8]) {
        let mut rest = wire;
        while let Some((&len, tail)) = rest.split_first() {
            if len == 0 {
                break;
            }
            if let Some(target) = self.find_wire(rest) {
                self.put_u16(0xC000 | target);
                return;
            }
            let Some(label) = tail.get(..usize::from(len)) else {
                break;
            };
            self.remember(self.out.len());
            self.out.push(len);
            self.out.extend_from_slice(label);
            rest = tail.get(usize::from(len)..).unwrap_or_default();
        }
        self.out.push(0);
    }

    /// Writes `name`, replacing its longest already-written suffix by a pointer, and
    /// records the offsets of the labels it writes.
    pub fn put_name(&mut self, name: &Name) {
        for (i, label) in name.iter().enumerate() {
            if let Some(target) = self.find(name, i) {
                self.put_u16(0xC000 | target);
                return;
            }
            self.remember(self.out.len());
            // Labels of a valid Name are at most 63 octets.
            self.out.push(label.len() as u8);
            self.out.extend_from_slice(label);
        }
        self.out.push(0);
    }

    fn remember(&mut self, offset: usize) {
        if offset < POINTER_LIMIT
            && let Some(slot) = self.targets.get_mut(self.target_count)
        {
            *slot = offset as u16;
            self.target_count += 1;
        }
    }

    /// The offset of an already-written name equal to `name` without its first `skip`
    /// labels (ignoring ASCII case).
    fn find(&self, name: &Name, skip: usize) -> Option<u16> {
        let targets = self.targets.get(..self.target_count)?;
        targets
            .iter()
            .copied()
            .find(|&t| self.matches(usize::from(t), name.iter().skip(skip)))
    }

    /// The offset of an already-written name equal to the wire name `wire`.
    fn find_wire(&self, wire: &[u8]) -> Option<u16> {
        let targets = self.targets.get(..self.target_count)?;
        targets
            .iter()
            .copied()
            .find(|&t| self.matches(usize::from(t), Labels::new(wire)))
    }

    /// Whether the name written at `pos` (following pointers) is exactly `labels`.
    fn matches<'n>(&self, mut pos: usize, labels: impl Iterator<Item = &'n [u8]>) -> bool {
        let wire = self.out.as_slice();
        // Every pointer we write goes backwards, so a chain ends; the bound is a safety net.
        let mut hops = 0;
        let mut next_len = |pos: &mut usize| -> Option<usize> {
            loop {
                let b = *wire.get(*pos)?;
                if b & 0xC0 != 0xC0 {
                    return Some(usize::from(b));
                }
                hops += 1;
                if hops > MAX_LABELS {
                    return None;
                }
                let lo = *wire.get(*pos + 1)?;
                *pos = usize::from(u16::from_be_bytes([b & 0x3F, lo]));
            }
        };
        for label in labels {
            match next_len(&mut pos) {
                Some(len) if len == label.len() && len > 0 => {}
                _ => return false,
            }
            match wire.get(pos + 1..pos + 1 + label.len()) {
                Some(bytes) if bytes.eq_ignore_ascii_case(label) => pos += 1 + label.len(),
                _ => return false,
            }
        }
        next_len(&mut pos) == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Message;
    use hickory_proto::rr::rdata::{A, MX};
    use std::net::Ipv4Addr;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn rollback_forgets_targets_past_the_cut() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.put_query(&Query::query(name("www.example."), RecordType::A));
        let mark = w.offset();
        let rec = Record::from_rdata(name("a.b.example."), 60, RData::A(A(Ipv4Addr::LOCALHOST)));
        w.put_record(&rec).unwrap();
        w.truncate(mark);
        // The cut region is reused by another record; the message must stay valid and
        // later names must compress only against what is really there.
        let a = |owner: &str| Record::from_rdata(name(owner), 60, RData::A(A(Ipv4Addr::LOCALHOST)));
        w.put_record(&a("x.example.")).unwrap();
        w.put_record(&a("a.b.example.")).unwrap();
        w.set_header(&[0, 1, 0x80, 0, 0, 1, 0, 2, 0, 0, 0, 0]);
        let msg = Message::from_vec(&out).unwrap();
        assert_eq!(msg.answers[0].name, name("x.example."));
        assert_eq!(msg.answers[1].name, name("a.b.example."));
    }

    #[test]
    fn case_insensitive_match_and_rdata_compression() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.put_query(&Query::query(name("ExAmPlE."), RecordType::MX));
        let mx = MX::new(10, name("mail.example."));
        w.put_record(&Record::from_rdata(name("example."), 60, RData::MX(mx)))
            .unwrap();
        let len = w.offset();
        // 12 + 13 question; owner: pointer (2) + 10 fixed; rdata: 2 + "mail" (5) + pointer (2).
        assert_eq!(len, 12 + 13 + 12 + 9);
        assert_eq!(&out[25..27], &[0xc0, 12]);
        assert_eq!(&out[out.len() - 2..], &[0xc0, 12]);
    }
}
