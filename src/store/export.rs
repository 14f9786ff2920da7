//! `muninn db export`: a zone as an RFC 1035 master file that re-imports to the same zone.
//!
//! Owner names keep their case; every name is absolute. Common types are written in their
//! presentation format from the wire form; every other type uses the RFC 3597 §5 generic
//! form (`\# length hex`), which the loader accepts for any type, so nothing depends on a
//! presentation format round-tripping exactly.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::RecordType;

use crate::zone::rdata::{self, Labels};
use crate::zone::{Zone, name_from_wire};

/// Writes `zone` as a master file.
pub fn write_zone(zone: &Zone, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "; zone {} exported from the muninn store, serial {}",
        zone.origin(),
        zone.serial()
    )?;
    writeln!(out, "$ORIGIN {}", zone.origin())?;
    let mut line = String::with_capacity(256);
    for set in zone.rrsets() {
        let owner = name_text(&set.owner);
        for rd in set.rdatas() {
            line.clear();
            let _ = write!(line, "{owner}\t{}\tIN\t{}\t", set.ttl, type_text(set.rtype));
            rdata_text(set.rtype, rd, &mut line);
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
    }
    Ok(())
}

/// A type's mnemonic, or `TYPEn` (RFC 3597 §5) when hickory has none.
pub fn type_text(rtype: RecordType) -> String {
    match rtype {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

/// An absolute name in presentation form: `.` and `\` escaped, other non-printable or
/// special octets as `\DDD` (RFC 1035 §5.1).
pub fn name_text(wire: &[u8]) -> String {
    let mut s = String::with_capacity(wire.len() + 1);
    let mut any = false;
    for label in Labels::new(wire) {
        any = true;
        for &b in label {
            match b {
                b'.' | b'\\' | b'"' | b';' | b'(' | b')' | b'@' | b'$' => {
                    s.push('\\');
                    s.push(char::from(b));
                }
                0x21..=0x7e => s.push(char::from(b)),
                _ => {
                    let _ = write!(s, "\\{b:03}");
                }
            }
        }
        s.push('.');
    }
    if !any {
        s.push('.');
    }
    s
}

fn generic(data: &[u8], out: &mut String) {
    let _ = write!(out, "\\# {}", data.len());
    if !data.is_empty() {
        out.push(' ');
        for b in data {
            let _ = write!(out, "{b:02x}");
        }
    }
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(*data.get(at..at + 2)?.first_chunk()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(*data.get(at..at + 4)?.first_chunk()?))
}

/// A name at the start of `data` and its length.
fn name_at(data: &[u8]) -> Option<(String, usize)> {
    let len = rdata::name_len(data)?;
    name_from_wire(data.get(..len)?)?;
    Some((name_text(data.get(..len)?), len))
}

fn presentation(rtype: RecordType, data: &[u8]) -> Option<String> {
    Some(match rtype {
        RecordType::A => {
            Ipv4Addr::from(*data.first_chunk::<4>().filter(|_| data.len() == 4)?).to_string()
        }
        RecordType::AAAA => {
            Ipv6Addr::from(*data.first_chunk::<16>().filter(|_| data.len() == 16)?).to_string()
        }
        RecordType::NS | RecordType::CNAME | RecordType::PTR | RecordType::DNAME => {
            let (n, len) = name_at(data)?;
            (len == data.len()).then_some(n)?
        }
        RecordType::MX => {
            let (n, len) = name_at(data.get(2..)?)?;
            (len + 2 == data.len()).then(|| format!("{} {n}", u16_at(data, 0).unwrap_or(0)))?
        }
        RecordType::SRV => {
            let (n, len) = name_at(data.get(6..)?)?;
            (len + 6 == data.len()).then(|| {
                format!(
                    "{} {} {} {n}",
                    u16_at(data, 0).unwrap_or(0),
                    u16_at(data, 2).unwrap_or(0),
                    u16_at(data, 4).unwrap_or(0)
                )
            })?
        }
        RecordType::SOA => {
            let (m, ml) = name_at(data)?;
            let (r, rl) = name_at(data.get(ml..)?)?;
            let t = data.get(ml + rl..)?;
            if t.len() != 20 {
                return None;
            }
            format!(
                "{m} {r} {} {} {} {} {}",
                u32_at(t, 0)?,
                u32_at(t, 4)?,
                u32_at(t, 8)?,
                u32_at(t, 12)?,
                u32_at(t, 16)?
            )
        }
        RecordType::TXT => {
            let mut s = String::new();
            let mut rest = data;
            if rest.is_empty() {
                return None;
            }
            while let Some((&n, tail)) = rest.split_first() {
                let (text, tail) = tail.split_at_checked(usize::from(n))?;
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push('"');
                for &b in text {
                    match b {
                        b'"' | b'\\' => {
                            s.push('\\');
                            s.push(char::from(b));
                        }
                        0x20..=0x7e => s.push(char::from(b)),
                        _ => {
                            let _ = write!(s, "\\{b:03}");
                        }
                    }
                }
                s.push('"');
                rest = tail;
            }
            s
        }
        _ => return None,
    })
}

/// Appends RDATA in presentation form, or the RFC 3597 §5 generic form for the types
/// without a presentation writer here; the zone-file parser reads both back.
pub fn rdata_text(rtype: RecordType, data: &[u8], out: &mut String) {
    match presentation(rtype, data) {
        Some(s) => out.push_str(&s),
        None => generic(data, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presentation_forms() {
        assert_eq!(name_text(b"\x03w.w\x02ex\x00"), "w\\.w.ex.");
        assert_eq!(name_text(b"\x00"), ".");
        assert_eq!(name_text(b"\x02a\x01\x00"), "a\\001.");
        let mut s = String::new();
        rdata_text(RecordType::TXT, b"\x03a\"b\x00", &mut s);
        assert_eq!(s, "\"a\\\"b\" \"\"");
        s.clear();
        rdata_text(RecordType::A, &[192, 0, 2, 1], &mut s);
        assert_eq!(s, "192.0.2.1");
        s.clear();
        rdata_text(RecordType::A, &[192, 0, 2], &mut s);
        assert_eq!(s, "\\# 3 c00002");
        s.clear();
        rdata_text(RecordType::Unknown(65000), &[], &mut s);
        assert_eq!(s, "\\# 0");
    }
}
