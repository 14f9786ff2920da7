//! RDATA in uncompressed wire form, as the zone stores it.
//!
//! An RRset's data is its records' RDATA back to back, each preceded by its length as a
//! big-endian `u16` (the same framing as RDLENGTH + RDATA on the wire). Names inside RDATA
//! are stored uncompressed and with the case they were written in (RFC 3597 §4 forbids
//! compressing them for types newer than RFC 1035, and the encoder re-compresses the RFC
//! 1035 ones itself). Everything here reads possibly-malformed bytes defensively.

use hickory_proto::rr::RecordType;

/// One field of an RDATA layout, as far as names are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// This many octets of opaque data.
    Fixed(usize),
    /// An uncompressed domain name.
    Name,
    /// A <character-string>: a length octet and that many octets.
    Text,
}

const NAME: &[Part] = &[Part::Name];
const MX: &[Part] = &[Part::Fixed(2), Part::Name];
const SOA: &[Part] = &[Part::Name, Part::Name, Part::Fixed(20)];
const SRV: &[Part] = &[Part::Fixed(6), Part::Name];
const RP: &[Part] = &[Part::Name, Part::Name];
const NAPTR: &[Part] = &[
    Part::Fixed(4),
    Part::Text,
    Part::Text,
    Part::Text,
    Part::Name,
];

/// Type codes without a hickory constant.
const KX: u16 = 36;
const AFSDB: u16 = 18;
const RP_CODE: u16 = 17;

/// Where the domain names are in RDATA of `rtype`, for the types whose names compare
/// case-insensitively (RFC 4034 §6.2 lists them; RFC 4343 §3); `None` for opaque data.
pub fn layout(rtype: RecordType) -> Option<&'static [Part]> {
    Some(match rtype {
        RecordType::NS
        | RecordType::CNAME
        | RecordType::PTR
        | RecordType::DNAME
        | RecordType::ANAME => NAME,
        RecordType::MX => MX,
        RecordType::SOA => SOA,
        RecordType::SRV => SRV,
        RecordType::NAPTR => NAPTR,
        RecordType::Unknown(KX) | RecordType::Unknown(AFSDB) => MX,
        RecordType::Unknown(RP_CODE) => RP,
        _ => return None,
    })
}

/// The RFC 1035 types whose RDATA names may be compressed in a message (RFC 3597 §4).
pub fn compressible(rtype: RecordType) -> Option<&'static [Part]> {
    match rtype {
        RecordType::NS | RecordType::CNAME | RecordType::PTR | RecordType::MX | RecordType::SOA => {
            layout(rtype)
        }
        _ => None,
    }
}

/// Length of the uncompressed wire name at the start of `wire` (root label included), or
/// `None` when it is malformed (label over 63 octets, pointer, over 255 octets, cut off).
pub fn name_len(wire: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    loop {
        let l = usize::from(*wire.get(pos)?);
        if l > 63 {
            return None;
        }
        pos += 1 + l;
        if pos > 255 || pos > wire.len() {
            return None;
        }
        if l == 0 {
            return Some(pos);
        }
    }
}

/// The labels of a wire-form name (stops at the root label or at malformed data).
#[derive(Debug, Clone)]
pub struct Labels<'a>(&'a [u8]);

impl<'a> Labels<'a> {
    pub fn new(wire: &'a [u8]) -> Self {
        Labels(wire)
    }
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (&l, rest) = self.0.split_first()?;
        let l = usize::from(l);
        if l == 0 || l > 63 {
            self.0 = &[];
            return None;
        }
        let label = rest.get(..l)?;
        self.0 = rest.get(l..).unwrap_or_default();
        Some(label)
    }
}

/// The records of an RRset's data: each record's RDATA.
#[derive(Debug, Clone)]
pub struct Rdatas<'a>(&'a [u8]);

impl<'a> Rdatas<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Rdatas(data)
    }
}

impl<'a> Iterator for Rdatas<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let Some(rdata) = rest.get(..len) else {
            self.0 = &[];
            return None;
        };
        self.0 = rest.get(len..).unwrap_or_default();
        Some(rdata)
    }
}

/// Splits `rdata` by `layout`: calls `field(part, bytes)` for each field in order and
/// returns false when the data does not follow the layout exactly.
pub fn walk<'a>(layout: &[Part], rdata: &'a [u8], mut field: impl FnMut(Part, &'a [u8])) -> bool {
    let mut rest = rdata;
    for &part in layout {
        let len = match part {
            Part::Fixed(n) => n,
            Part::Name => match name_len(rest) {
                Some(n) => n,
                None => return false,
            },
            Part::Text => match rest.first() {
                Some(&n) => 1 + usize::from(n),
                None => return false,
            },
        };
        let Some((bytes, tail)) = rest.split_at_checked(len) else {
            return false;
        };
        field(part, bytes);
        rest = tail;
    }
    rest.is_empty()
}

/// Whether two RDATAs of `rtype` are the same record: names compare without regard to
/// ASCII case (RFC 4343 §3), everything else octet by octet (RFC 2181 §5).
pub fn same(rtype: RecordType, a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a == b {
        return true;
    }
    let Some(layout) = layout(rtype) else {
        return false;
    };
    let mut fa: [(Part, &[u8]); 5] = [(Part::Fixed(0), &[]); 5];
    let mut n = 0usize;
    let ok = walk(layout, a, |p, bytes| {
        if let Some(slot) = fa.get_mut(n) {
            *slot = (p, bytes);
        }
        n += 1;
    });
    if !ok {
        return false;
    }
    let mut i = 0usize;
    let mut equal = true;
    let ok = walk(layout, b, |p, bytes| {
        let eq = match fa.get(i) {
            Some(&(Part::Name, other)) => other.eq_ignore_ascii_case(bytes),
            Some(&(_, other)) => other == bytes,
            None => false,
        };
        equal &= eq && matches!(fa.get(i), Some(&(q, _)) if q == p);
        i += 1;
    });
    ok && equal && i == n
}

/// The name whose addresses are additional-section data for a record of `rtype`
/// (RFC 1034 §3.6.2 for NS, RFC 1035 §3.3.9 for MX, RFC 2782 for SRV), and its offset.
pub fn related_target(rtype: RecordType, rdata: &[u8]) -> Option<(usize, &[u8])> {
    let skip = match rtype {
        RecordType::NS => 0,
        RecordType::MX => 2,
        RecordType::SRV => 6,
        _ => return None,
    };
    let name = rdata.get(skip..)?;
    let len = name_len(name)?;
    Some((skip, name.get(..len)?))
}

/// SOA serial and minimum from SOA RDATA (RFC 1035 §3.3.13).
pub fn soa_serial_minimum(rdata: &[u8]) -> Option<(u32, u32)> {
    let m = name_len(rdata)?;
    let r = name_len(rdata.get(m..)?)?;
    let timers = rdata.get(m + r..)?;
    let word = |i: usize| -> Option<u32> {
        let b = timers.get(i..i + 4)?;
        Some(u32::from_be_bytes([
            *b.first()?,
            *b.get(1)?,
            *b.get(2)?,
            *b.get(3)?,
        ]))
    };
    Some((word(0)?, word(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_frames() {
        assert_eq!(name_len(b"\x03www\x07example\x00rest"), Some(13));
        assert_eq!(name_len(b"\x00"), Some(1));
        assert_eq!(name_len(b"\x03ww"), None);
        assert_eq!(name_len(b"\xc0\x0c"), None);
        let labels: Vec<&[u8]> = Labels::new(b"\x01a\x02bc\x00").collect();
        assert_eq!(labels, [&b"a"[..], b"bc"]);
        let rd: Vec<&[u8]> = Rdatas::new(b"\x00\x01a\x00\x00\x00\x02bc").collect();
        assert_eq!(rd, [&b"a"[..], b"", b"bc"]);
        // A frame longer than the data ends the iteration.
        assert_eq!(Rdatas::new(b"\x00\x05ab").count(), 0);
    }

    #[test]
    fn same_ignores_case_in_names_only() {
        let mx = |n: &[u8]| [&[0u8, 10][..], n].concat();
        assert!(same(
            RecordType::MX,
            &mx(b"\x04MAIL\x02ex\x00"),
            &mx(b"\x04mail\x02eX\x00")
        ));
        assert!(!same(
            RecordType::MX,
            &mx(b"\x04mail\x02ex\x00"),
            &mx(b"\x04maiL\x02ey\x00")
        ));
        assert!(!same(RecordType::TXT, b"\x01A", b"\x01a"));
        let soa = |a: &[u8], last: u8| [a, b"\x01h\x00", &[0; 19], &[last]].concat();
        assert!(same(
            RecordType::SOA,
            &soa(b"\x02NS\x00", 5),
            &soa(b"\x02ns\x00", 5)
        ));
        assert!(!same(
            RecordType::SOA,
            &soa(b"\x02NS\x00", 5),
            &soa(b"\x02ns\x00", 6)
        ));
        assert_eq!(
            soa_serial_minimum(
                &[&b"\x00\x00"[..], &[0, 0, 0, 7], &[0; 12], &[0, 0, 1, 0]].concat()
            ),
            Some((7, 256))
        );
    }
}
