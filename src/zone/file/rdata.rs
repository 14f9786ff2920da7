//! Presentation-format RDATA and names (RFC 1035 §5.1, RFC 3597 §5) to uncompressed wire
//! form, the zone's storage format (see `zone::rdata`).
//!
//! Names inside RDATA are resolved against the current `$ORIGIN`, which hickory's own
//! `RData::try_from_str` cannot do, so every type that carries a name is parsed here, as
//! are the common types (straight to wire form, no intermediate `RData`). The few types
//! left to hickory's parser (CAA, SSHFP, TLSA, SVCB, ...) and RFC 3597 generic data of
//! known types go through `RData` and are emitted uncompressed, names with their case.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder, NameEncoding, Restrict,
};
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
#[cfg(test)]
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

/// Parses the RDATA tokens of one record and appends its uncompressed wire form (names
/// with the case they were written in) to `out`.
pub(super) fn parse_rdata(
    rtype: RecordType,
    toks: &[Token<'_>],
    origin_wire: &[u8],
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> RResult<()> {
    // RFC 3597 §5: `\# <length> <hex>` is valid for every type, known or not.
    if let Some(first) = toks.first()
        && !first.quoted
        && first.text == b"\\#"
    {
        let rdata = generic(rtype, toks.get(1..).unwrap_or_default())?;
        return emit(rtype, &rdata, out);
    }
    let name = |i: usize, out: &mut Vec<u8>| -> RResult<()> {
        name_wire(tok(toks, i)?.text, origin_wire, out)
    };
    let u16_field = |i: usize, what: &str, out: &mut Vec<u8>| -> RResult<()> {
        out.extend_from_slice(&num::<u16>(tok(toks, i)?, what)?.to_be_bytes());
        Ok(())
    };
    match rtype {
        RecordType::A => {
            expect_fields(toks, 1, rtype)?;
            let a = parse_addr::<Ipv4Addr>(tok(toks, 0)?, "IPv4 address")?;
            out.extend_from_slice(&a.octets());
        }
        RecordType::AAAA => {
            expect_fields(toks, 1, rtype)?;
            let a = parse_addr::<Ipv6Addr>(tok(toks, 0)?, "IPv6 address")?;
            out.extend_from_slice(&a.octets());
        }
        RecordType::NS
        | RecordType::CNAME
        | RecordType::PTR
        | RecordType::ANAME
        | RecordType::DNAME => {
            expect_fields(toks, 1, rtype)?;
            name(0, out)?;
        }
        RecordType::MX => {
            expect_fields(toks, 2, rtype)?;
            u16_field(0, "MX preference", out)?;
            name(1, out)?;
        }
        RecordType::SRV => {
            expect_fields(toks, 4, rtype)?;
            u16_field(0, "SRV priority", out)?;
            u16_field(1, "SRV weight", out)?;
            u16_field(2, "SRV port", out)?;
            name(3, out)?;
        }
        RecordType::SOA => {
            expect_fields(toks, 7, rtype)?;
            name(0, out)?;
            name(1, out)?;
            out.extend_from_slice(&num::<u32>(tok(toks, 2)?, "SOA serial")?.to_be_bytes());
            for (i, what) in [(3, "refresh"), (4, "retry"), (5, "expire")] {
                let v = period(tok(toks, i)?, what)?;
                if i32::try_from(v).is_err() {
                    return Err(format!("SOA {what} {v} exceeds 2^31-1"));
                }
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(&period(tok(toks, 6)?, "SOA minimum")?.to_be_bytes());
        }
        RecordType::TXT | RecordType::Unknown(SPF) => {
            // RFC 7208 §3: SPF has the TXT format.
            if toks.is_empty() {
                let what = if rtype == RecordType::TXT {
                    "TXT"
                } else {
                    "SPF"
                };
                return Err(format!("{what} record needs at least one string"));
            }
            for t in toks {
                s.a.clear();
                string_bytes(t, &mut s.a)?;
                out.push(s.a.len() as u8); // <= 255 checked by string_bytes
                out.extend_from_slice(&s.a);
            }
        }
        RecordType::HINFO => {
            expect_fields(toks, 2, rtype)?;
            for i in 0..2 {
                s.a.clear();
                string_bytes(tok(toks, i)?, &mut s.a)?;
                out.push(s.a.len() as u8); // <= 255 checked by string_bytes
                out.extend_from_slice(&s.a);
            }
        }
        RecordType::NAPTR => {
            expect_fields(toks, 6, rtype)?;
            u16_field(0, "NAPTR order", out)?;
            u16_field(1, "NAPTR preference", out)?;
            for i in 2..5 {
                s.a.clear();
                string_bytes(tok(toks, i)?, &mut s.a)?;
                out.push(s.a.len() as u8); // <= 255 checked by string_bytes
                out.extend_from_slice(&s.a);
            }
            name(5, out)?;
        }
        RecordType::DS | RecordType::CDS => {
            // RFC 4034 §5.3: key tag, algorithm, digest type, digest (hex, may be split).
            if toks.len() < 4 {
                return Err(format!("{rtype} record needs at least 4 RDATA fields"));
            }
            u16_field(0, "key tag", out)?;
            out.push(num::<u8>(tok(toks, 1)?, "algorithm")?);
            out.push(num::<u8>(tok(toks, 2)?, "digest type")?);
            hex_tokens(toks.get(3..).unwrap_or_default(), out)?;
        }
        RecordType::DNSKEY | RecordType::CDNSKEY | RecordType::KEY => {
            // RFC 4034 §2.2: flags, protocol, algorithm, public key (base64, may be split).
            if toks.len() < 4 {
                return Err(format!("{rtype} record needs at least 4 RDATA fields"));
            }
            u16_field(0, "flags", out)?;
            out.push(num::<u8>(tok(toks, 1)?, "protocol")?);
            out.push(num::<u8>(tok(toks, 2)?, "algorithm")?);
            base64_tokens(toks.get(3..).unwrap_or_default(), out)?;
        }
        RecordType::Unknown(KX) | RecordType::Unknown(AFSDB) => {
            // RFC 2230 §3.1 / RFC 1183 §1: 16-bit number then a name.
            expect_fields(toks, 2, rtype)?;
            u16_field(0, "preference", out)?;
            name(1, out)?;
        }
        RecordType::Unknown(RP) => {
            // RFC 1183 §2.2: mbox-dname txt-dname.
            expect_fields(toks, 2, rtype)?;
            name(0, out)?;
            name(1, out)?;
        }
        t if hickory_parses(t) => {
            let rdata = RData::try_from_str(t, &join_tokens(toks))
                .map_err(|e| format!("invalid {t} RDATA: {e}"))?;
            emit(t, &rdata, out)?;
        }
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
    }
    Ok(())
}

/// Appends hickory RDATA in uncompressed wire form, names with their case.
fn emit(rtype: RecordType, rdata: &RData, out: &mut Vec<u8>) -> RResult<()> {
    // The encoder writes at its offset (it does not append): start at the end.
    let at = u32::try_from(out.len()).map_err(|_| format!("{rtype} RDATA too long"))?;
    let mut enc = BinEncoder::with_offset(out, at);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    rdata
        .emit(&mut enc)
        .map_err(|e| format!("{rtype} RDATA cannot be encoded: {e}"))
}

fn parse_addr<T: FromStr>(t: &Token<'_>, what: &str) -> RResult<T> {
    std::str::from_utf8(t.text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("invalid {what} '{}'", show(t.text)))
}

/// RFC 3597 §5 generic RDATA: `<length> <hex>...`, checked against the type's wire form
/// when hickory knows the type (§5: "the RDATA MUST be interpreted as the type's wire form").
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
