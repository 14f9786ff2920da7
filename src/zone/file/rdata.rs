//! Presentation-format RDATA and names (RFC 1035 §5.1, RFC 3597 §5) to hickory `RData`.
//!
//! Names inside RDATA are resolved against the current `$ORIGIN`, which hickory's own
//! `RData::try_from_str` cannot do, so every type that carries a name is parsed here.
//! Types hickory has no struct for (DNAME, KX, RP, AFSDB, SPF, and the DNSSEC types,
//! which need a crate feature we don't enable) become `RData::Unknown` with their wire
//! form: that is exactly what hickory's wire decoder produces for them, so a record read
//! from a zone file and the same record received over AXFR compare equal.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::rdata::{
    A, AAAA, ANAME, CNAME, HINFO, MX, NAPTR, NS, NULL, PTR, SOA, SRV, TXT,
};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, Restrict};
use hickory_proto::serialize::txt::parse_ttl;

use super::lexer::Token;

pub(super) type RResult<T> = Result<T, String>;

/// Record types hickory 0.26 has no mnemonic for.
pub(super) const KX: u16 = 36;
pub(super) const RP: u16 = 17;
pub(super) const AFSDB: u16 = 18;
pub(super) const SPF: u16 = 99;

pub(super) fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decodes one `\X` / `\DDD` escape starting at `bytes[i] == b'\\'`.
/// Returns the byte and the index after the escape.
fn unescape(bytes: &[u8], i: usize) -> RResult<(u8, usize)> {
    match bytes.get(i + 1) {
        Some(d0) if d0.is_ascii_digit() => {
            // RFC 1035 §5.1: \DDD is a *decimal* octet value.
            let (Some(d1), Some(d2)) = (bytes.get(i + 2), bytes.get(i + 3)) else {
                return Err("\\DDD escape needs three digits".into());
            };
            if !d1.is_ascii_digit() || !d2.is_ascii_digit() {
                return Err("\\DDD escape needs three digits".into());
            }
            let v = u32::from(d0 - b'0') * 100 + u32::from(d1 - b'0') * 10 + u32::from(d2 - b'0');
            let v = u8::try_from(v).map_err(|_| format!("\\DDD escape value {v} exceeds 255"))?;
            Ok((v, i + 4))
        }
        Some(&c) => Ok((c, i + 2)),
        None => Err("dangling backslash".into()),
    }
}

/// Appends the wire form of the name `tok` to `out` (uncompressed, case kept).
/// Relative names get `origin_wire` (the current origin in wire form) appended.
pub(super) fn name_wire(tok: &[u8], origin_wire: &[u8], out: &mut Vec<u8>) -> RResult<()> {
    let start = out.len();
    if tok == b"@" {
        out.extend_from_slice(origin_wire);
        return Ok(());
    }
    if tok == b"." {
        out.push(0);
        return Ok(());
    }
    if tok.is_empty() {
        return Err("empty name".into());
    }
    let mut len_at = out.len();
    out.push(0);
    let mut i = 0;
    let mut absolute = false;
    while let Some(&c) = tok.get(i) {
        let b = match c {
            b'.' => {
                let len = out.len() - len_at - 1;
                if len == 0 {
                    return Err(format!("empty label in name '{}'", show(tok)));
                }
                if i + 1 == tok.len() {
                    absolute = true;
                }
                len_at = out.len();
                out.push(0);
                i += 1;
                continue;
            }
            b'\\' => {
                let (b, next) =
                    unescape(tok, i).map_err(|e| format!("name '{}': {e}", show(tok)))?;
                i = next;
                b
            }
            _ => {
                i += 1;
                c
            }
        };
        out.push(b);
        let len = out.len() - len_at - 1;
        if len > 63 {
            return Err(format!(
                "label longer than 63 octets in name '{}'",
                show(tok)
            ));
        }
        if let Some(l) = out.get_mut(len_at) {
            *l = len as u8; // len <= 63 checked above
        }
    }
    if !absolute {
        out.extend_from_slice(origin_wire);
    }
    // RFC 1035 §3.1: at most 255 octets including the root label.
    if out.len() - start > 255 {
        return Err(format!("name '{}' is longer than 255 octets", show(tok)));
    }
    Ok(())
}

/// Builds a `Name` from a wire-form buffer written by [`name_wire`].
pub(super) fn name_from_wire(wire: &[u8]) -> RResult<Name> {
    let mut dec = BinDecoder::new(wire);
    let mut name = Name::read(&mut dec).map_err(|e| format!("invalid name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// Parses a name token relative to the origin (given in wire form).
pub(super) fn parse_name(tok: &[u8], origin_wire: &[u8], scratch: &mut Vec<u8>) -> RResult<Name> {
    scratch.clear();
    name_wire(tok, origin_wire, scratch)?;
    name_from_wire(scratch)
}

/// Decodes a <character-string> (escapes resolved) and appends it to `out`.
fn string_bytes(tok: &Token<'_>, out: &mut Vec<u8>) -> RResult<()> {
    let t = tok.text;
    let start = out.len();
    let mut i = 0;
    while let Some(&c) = t.get(i) {
        if c == b'\\' {
            let (b, next) = unescape(t, i)?;
            out.push(b);
            i = next;
        } else {
            out.push(c);
            i += 1;
        }
    }
    // RFC 1035 §3.3: a <character-string> is at most 255 octets.
    if out.len() - start > 255 {
        return Err(format!(
            "character-string longer than 255 octets: \"{}\"",
            show(t)
        ));
    }
    Ok(())
}

fn num<T: FromStr>(tok: &Token<'_>, what: &str) -> RResult<T> {
    std::str::from_utf8(tok.text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("invalid {what} '{}'", show(tok.text)))
}

/// A TTL-like time field (SOA timers): decimal seconds or BIND units (`1h30m`).
fn period(tok: &Token<'_>, what: &str) -> RResult<u32> {
    std::str::from_utf8(tok.text)
        .ok()
        .and_then(|s| parse_ttl(s).ok())
        .ok_or_else(|| format!("invalid {what} '{}'", show(tok.text)))
}

fn expect_fields(toks: &[Token<'_>], n: usize, rtype: RecordType) -> RResult<()> {
    if toks.len() != n {
        return Err(format!(
            "{rtype} record needs {n} RDATA fields, found {}",
            toks.len()
        ));
    }
    Ok(())
}

fn tok<'t, 'a>(toks: &'t [Token<'a>], i: usize) -> RResult<&'t Token<'a>> {
    toks.get(i).ok_or_else(|| "missing RDATA field".to_string())
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Hex digits spread over any number of tokens (RFC 3597 §5 allows whitespace inside).
fn hex_tokens(toks: &[Token<'_>], out: &mut Vec<u8>) -> RResult<()> {
    let mut high: Option<u8> = None;
    for t in toks {
        for &c in t.text {
            let d = hex_digit(c).ok_or_else(|| format!("invalid hex data '{}'", show(t.text)))?;
            match high.take() {
                None => high = Some(d),
                Some(h) => out.push(h << 4 | d),
            }
        }
    }
    if high.is_some() {
        return Err("odd number of hex digits".into());
    }
    Ok(())
}

/// Base64 (RFC 4648 §4) spread over tokens, as in DNSKEY public keys.
fn base64_tokens(toks: &[Token<'_>], out: &mut Vec<u8>) -> RResult<()> {
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut pad = 0usize;
    for t in toks {
        for &c in t.text {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' => {
                    pad += 1;
                    continue;
                }
                _ => return Err(format!("invalid base64 data '{}'", show(t.text))),
            };
            if pad > 0 {
                return Err("base64 data after padding".into());
            }
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
    }
    if pad > 2 || bits >= 6 {
        return Err("invalid base64 length".into());
    }
    Ok(())
}

fn unknown(code: RecordType, wire: Vec<u8>) -> RData {
    let rdata = if wire.is_empty() {
        NULL::new()
    } else {
        NULL::with(wire)
    };
    RData::Unknown { code, rdata }
}

/// Types whose presentation form hickory parses correctly by itself (no names inside).
fn hickory_parses(rtype: RecordType) -> bool {
    matches!(
        rtype,
        RecordType::CAA
            | RecordType::CERT
            | RecordType::CSYNC
            | RecordType::HTTPS
            | RecordType::SVCB
            | RecordType::OPENPGPKEY
            | RecordType::SMIMEA
            | RecordType::SSHFP
            | RecordType::TLSA
    )
}

/// Rebuilds presentation text from tokens for hickory's own parser.
fn join_tokens(toks: &[Token<'_>]) -> String {
    let mut s = String::new();
    for (i, t) in toks.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        if t.quoted {
            s.push('"');
        }
        s.push_str(&String::from_utf8_lossy(t.text));
        if t.quoted {
            s.push('"');
        }
    }
    s
}

/// Scratch buffers reused across records.
#[derive(Default)]
pub(super) struct Scratch {
    pub a: Vec<u8>,
}

/// Parses the RDATA tokens of one record.
pub(super) fn parse_rdata(
    rtype: RecordType,
    toks: &[Token<'_>],
    origin_wire: &[u8],
    s: &mut Scratch,
) -> RResult<RData> {
    // RFC 3597 §5: `\# <length> <hex>` is valid for every type, known or not.
    if let Some(first) = toks.first()
        && !first.quoted
        && first.text == b"\\#"
    {
        return generic(rtype, toks.get(1..).unwrap_or_default());
    }
    let name = |i: usize, s: &mut Vec<u8>| -> RResult<Name> {
        parse_name(tok(toks, i)?.text, origin_wire, s)
    };
    let rdata = match rtype {
        RecordType::A => {
            expect_fields(toks, 1, rtype)?;
            RData::A(A(parse_addr::<Ipv4Addr>(tok(toks, 0)?, "IPv4 address")?))
        }
        RecordType::AAAA => {
            expect_fields(toks, 1, rtype)?;
            RData::AAAA(AAAA(parse_addr::<Ipv6Addr>(tok(toks, 0)?, "IPv6 address")?))
        }
        RecordType::NS => {
            expect_fields(toks, 1, rtype)?;
            RData::NS(NS(name(0, &mut s.a)?))
        }
        RecordType::CNAME => {
            expect_fields(toks, 1, rtype)?;
            RData::CNAME(CNAME(name(0, &mut s.a)?))
        }
        RecordType::PTR => {
            expect_fields(toks, 1, rtype)?;
            RData::PTR(PTR(name(0, &mut s.a)?))
        }
        RecordType::ANAME => {
            expect_fields(toks, 1, rtype)?;
            RData::ANAME(ANAME(name(0, &mut s.a)?))
        }
        RecordType::MX => {
            expect_fields(toks, 2, rtype)?;
            RData::MX(MX::new(
                num(tok(toks, 0)?, "MX preference")?,
                name(1, &mut s.a)?,
            ))
        }
        RecordType::SRV => {
            expect_fields(toks, 4, rtype)?;
            RData::SRV(SRV::new(
                num(tok(toks, 0)?, "SRV priority")?,
                num(tok(toks, 1)?, "SRV weight")?,
                num(tok(toks, 2)?, "SRV port")?,
                name(3, &mut s.a)?,
            ))
        }
        RecordType::SOA => {
            expect_fields(toks, 7, rtype)?;
            let timer = |i: usize, what: &str| -> RResult<i32> {
                let v = period(tok(toks, i)?, what)?;
                i32::try_from(v).map_err(|_| format!("SOA {what} {v} exceeds 2^31-1"))
            };
            RData::SOA(SOA::new(
                name(0, &mut s.a)?,
                name(1, &mut s.a)?,
                num(tok(toks, 2)?, "SOA serial")?,
                timer(3, "refresh")?,
                timer(4, "retry")?,
                timer(5, "expire")?,
                period(tok(toks, 6)?, "SOA minimum")?,
            ))
        }
        RecordType::TXT => RData::TXT(txt(toks, &mut s.a)?),
        RecordType::HINFO => {
            expect_fields(toks, 2, rtype)?;
            s.a.clear();
            string_bytes(tok(toks, 0)?, &mut s.a)?;
            let cpu = s.a.clone().into_boxed_slice();
            s.a.clear();
            string_bytes(tok(toks, 1)?, &mut s.a)?;
            RData::HINFO(HINFO::from_bytes(cpu, s.a.clone().into_boxed_slice()))
        }
        RecordType::NAPTR => {
            expect_fields(toks, 6, rtype)?;
            let mut strs = Vec::with_capacity(3);
            for i in 2..5 {
                s.a.clear();
                string_bytes(tok(toks, i)?, &mut s.a)?;
                strs.push(s.a.clone().into_boxed_slice());
            }
            let [flags, services, regexp]: [Box<[u8]>; 3] =
                strs.try_into().map_err(|_| "NAPTR strings".to_string())?;
            RData::NAPTR(NAPTR::new(
                num(tok(toks, 0)?, "NAPTR order")?,
                num(tok(toks, 1)?, "NAPTR preference")?,
                flags,
                services,
                regexp,
                name(5, &mut s.a)?,
            ))
        }
        RecordType::DNAME => {
            expect_fields(toks, 1, rtype)?;
            let mut wire = Vec::new();
            name_wire(tok(toks, 0)?.text, origin_wire, &mut wire)?;
            unknown(rtype, wire)
        }
        RecordType::DS | RecordType::CDS => {
            // RFC 4034 §5.3: key tag, algorithm, digest type, digest (hex, may be split).
            if toks.len() < 4 {
                return Err(format!("{rtype} record needs at least 4 RDATA fields"));
            }
            let mut wire = Vec::new();
            wire.extend_from_slice(&num::<u16>(tok(toks, 0)?, "key tag")?.to_be_bytes());
            wire.push(num::<u8>(tok(toks, 1)?, "algorithm")?);
            wire.push(num::<u8>(tok(toks, 2)?, "digest type")?);
            hex_tokens(toks.get(3..).unwrap_or_default(), &mut wire)?;
            unknown(rtype, wire)
        }
        RecordType::DNSKEY | RecordType::CDNSKEY | RecordType::KEY => {
            // RFC 4034 §2.2: flags, protocol, algorithm, public key (base64, may be split).
            if toks.len() < 4 {
                return Err(format!("{rtype} record needs at least 4 RDATA fields"));
            }
            let mut wire = Vec::new();
            wire.extend_from_slice(&num::<u16>(tok(toks, 0)?, "flags")?.to_be_bytes());
            wire.push(num::<u8>(tok(toks, 1)?, "protocol")?);
            wire.push(num::<u8>(tok(toks, 2)?, "algorithm")?);
            base64_tokens(toks.get(3..).unwrap_or_default(), &mut wire)?;
            unknown(rtype, wire)
        }
        RecordType::Unknown(KX) | RecordType::Unknown(AFSDB) => {
            // RFC 2230 §3.1 / RFC 1183 §1: 16-bit number then a name.
            expect_fields(toks, 2, rtype)?;
            let mut wire = num::<u16>(tok(toks, 0)?, "preference")?
                .to_be_bytes()
                .to_vec();
            name_wire(tok(toks, 1)?.text, origin_wire, &mut wire)?;
            unknown(rtype, wire)
        }
        RecordType::Unknown(RP) => {
            // RFC 1183 §2.2: mbox-dname txt-dname.
            expect_fields(toks, 2, rtype)?;
            let mut wire = Vec::new();
            name_wire(tok(toks, 0)?.text, origin_wire, &mut wire)?;
            name_wire(tok(toks, 1)?.text, origin_wire, &mut wire)?;
            unknown(rtype, wire)
        }
        RecordType::Unknown(SPF) => {
            // RFC 7208 §3: same format as TXT.
            if toks.is_empty() {
                return Err("SPF record needs at least one string".into());
            }
            let mut wire = Vec::new();
            for t in toks {
                s.a.clear();
                string_bytes(t, &mut s.a)?;
                wire.push(s.a.len() as u8); // <= 255 checked by string_bytes
                wire.extend_from_slice(&s.a);
            }
            unknown(rtype, wire)
        }
        t if hickory_parses(t) => RData::try_from_str(t, &join_tokens(toks))
            .map_err(|e| format!("invalid {t} RDATA: {e}"))?,
        RecordType::OPT
        | RecordType::TSIG
        | RecordType::ANY
        | RecordType::AXFR
        | RecordType::IXFR => return Err(format!("{rtype} is a meta type, not allowed in a zone")),
        t => {
            return Err(format!(
                "no presentation-format parser for type {t}; use the RFC 3597 form (\\# <length> <hex>)"
            ));
        }
    };
    Ok(rdata)
}

fn parse_addr<T: FromStr>(t: &Token<'_>, what: &str) -> RResult<T> {
    std::str::from_utf8(t.text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("invalid {what} '{}'", show(t.text)))
}

fn txt(toks: &[Token<'_>], buf: &mut Vec<u8>) -> RResult<TXT> {
    if toks.is_empty() {
        return Err("TXT record needs at least one string".into());
    }
    buf.clear();
    let mut ends = Vec::with_capacity(toks.len());
    for t in toks {
        string_bytes(t, buf)?;
        ends.push(buf.len());
    }
    let mut parts = Vec::with_capacity(ends.len());
    let mut start = 0;
    for end in ends {
        parts.push(buf.get(start..end).unwrap_or_default());
        start = end;
    }
    Ok(TXT::from_bytes(parts))
}

/// RFC 3597 §5 generic RDATA: `<length> <hex>...`, converted to the typed form when
/// hickory knows the type (§5: "the RDATA MUST be interpreted as the type's wire form").
fn generic(rtype: RecordType, toks: &[Token<'_>]) -> RResult<RData> {
    let len: u16 = num(tok(toks, 0)?, "RFC 3597 RDATA length")?;
    let mut wire = Vec::with_capacity(usize::from(len));
    hex_tokens(toks.get(1..).unwrap_or_default(), &mut wire)?;
    if wire.len() != usize::from(len) {
        return Err(format!(
            "RFC 3597 RDATA length {len} does not match {} octets of data",
            wire.len()
        ));
    }
    if matches!(
        rtype,
        RecordType::OPT | RecordType::TSIG | RecordType::ANY | RecordType::AXFR | RecordType::IXFR
    ) {
        return Err(format!("{rtype} is a meta type, not allowed in a zone"));
    }
    let mut dec = BinDecoder::new(&wire);
    let rdata = RData::read(&mut dec, rtype, Restrict::new(len))
        .map_err(|e| format!("invalid {rtype} RDATA in RFC 3597 form: {e}"))?;
    if dec.index() != wire.len() {
        return Err(format!("trailing data in {rtype} RDATA"));
    }
    Ok(rdata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin_wire() -> Vec<u8> {
        let mut w = Vec::new();
        name_wire(b"example.com.", &[0], &mut w).unwrap();
        w
    }

    #[test]
    fn names() {
        let o = origin_wire();
        let mut s = Vec::new();
        assert_eq!(
            parse_name(b"www", &o, &mut s).unwrap(),
            Name::from_ascii("www.example.com.").unwrap()
        );
        assert_eq!(
            parse_name(b"@", &o, &mut s).unwrap(),
            Name::from_ascii("example.com.").unwrap()
        );
        let n = parse_name(b"a\\.b.c\\065.", &o, &mut s).unwrap();
        assert_eq!(n.iter().collect::<Vec<_>>(), vec![&b"a.b"[..], b"cA"]);
        assert!(parse_name(b"a..b", &o, &mut s).is_err());
        assert!(parse_name(b"a\\256", &o, &mut s).is_err());
        assert!(parse_name(&[b'x'; 64], &o, &mut s).is_err());
    }

    #[test]
    fn base64() {
        let mut out = Vec::new();
        base64_tokens(
            &[
                Token {
                    text: b"aGVs",
                    quoted: false,
                },
                Token {
                    text: b"bG8=",
                    quoted: false,
                },
            ],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"hello");
    }
}
