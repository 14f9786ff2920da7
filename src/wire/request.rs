//! Parsing and validating a query from its wire bytes.
//!
//! [`parse`] decodes only what answering needs: the header, the single question, and the
//! OPT record. Every other record is walked over and checked for well-formedness, so that
//! the whole packet is accounted for (no missing records, no trailing bytes), but nothing
//! is kept. On the common path (one question with a short name, at most an OPT record)
//! this does not allocate.
//!
//! Outcomes, in order of precedence:
//! - fewer than 12 bytes, or QR=1: [`Rejection::Drop`] (never answer a response: that
//!   would let a spoofed response bounce between servers).
//! - opcode other than QUERY: NOTIMP (RFC 8906 §3.1.4: always answer), with the question
//!   if it parsed and an OPT if the whole packet parsed.
//! - malformed packet: FORMERR, with the question if it parsed, without OPT (as Knot).
//! - QDCOUNT 0: FORMERR (OPT echoed when valid); QDCOUNT > 1: FORMERR without question.
//! - EDNS version > 0: BADVERS (RFC 6891 §6.1.3).
//!
//! Records in the answer and authority sections of a QUERY are checked and then ignored,
//! as Knot does (it answers such a query normally).

use hickory_proto::op::{OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Size of the fixed DNS header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;

/// Smallest UDP payload size a requestor may advertise (RFC 6891 §6.2.5).
pub const MIN_EDNS_PAYLOAD: u16 = 512;

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
    /// `edns` is set when the request carried a valid OPT record: the error response then
    /// carries an OPT too (RFC 6891 §7), which is also where BADVERS's upper bits go.
    Error {
        id: u16,
        opcode: OpCode,
        rcode: ResponseCode,
        query: Option<Query>,
        recursion_desired: bool,
        edns: Option<RequestEdns>,
    },
}

/// Which section a record was found in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// The packet is not well-formed DNS.
struct Malformed;

/// Parses and validates `bytes` as a query. Never panics, whatever the input.
pub fn parse(bytes: &[u8]) -> Result<Request, Rejection> {
    let Some(
        &[
            id_hi,
            id_lo,
            flags1,
            flags2,
            qd_hi,
            qd_lo,
            an_hi,
            an_lo,
            ns_hi,
            ns_lo,
            ar_hi,
            ar_lo,
        ],
    ) = bytes.first_chunk::<HEADER_LEN>()
    else {
        return Err(Rejection::Drop);
    };
    // QR=1: a response, never answered (RFC 1035 §4.1.1; answering invites reflection loops).
    if flags1 & 0x80 != 0 {
        return Err(Rejection::Drop);
    }
    let id = u16::from_be_bytes([id_hi, id_lo]);
    let opcode = OpCode::from_u8((flags1 >> 3) & 0x0F);
    let recursion_desired = flags1 & 0x01 != 0;
    let checking_disabled = flags2 & 0x10 != 0;
    let qdcount = u16::from_be_bytes([qd_hi, qd_lo]);
    let counts = [
        (Section::Answer, u16::from_be_bytes([an_hi, an_lo])),
        (Section::Authority, u16::from_be_bytes([ns_hi, ns_lo])),
        (Section::Additional, u16::from_be_bytes([ar_hi, ar_lo])),
    ];
    let is_query = opcode == OpCode::Query;

    let error = |rcode: ResponseCode, query: Option<Query>, edns: Option<RequestEdns>| {
        Err(Rejection::Error {
            id,
            opcode,
            // RFC 8906 §3.1.4: unknown (and, for now, NOTIFY/UPDATE) opcodes get NOTIMP.
            rcode: if is_query {
                rcode
            } else {
                ResponseCode::NotImp
            },
            query,
            recursion_desired,
            edns,
        })
    };

    // More than one question: no server implements it, and we cannot tell which one to
    // echo (RFC 9619 §2 says QDCOUNT must be 1 for QUERY).
    if qdcount > 1 {
        return error(ResponseCode::FormErr, None, None);
    }

    let mut decoder = BinDecoder::new(bytes);
    if decoder.read_slice(HEADER_LEN).is_err() {
        return Err(Rejection::Drop);
    }

    let query = if qdcount == 1 {
        match Query::read(&mut decoder) {
            Ok(query) => Some(query),
            Err(_) => return error(ResponseCode::FormErr, None, None),
        }
    } else {
        None
    };

    let edns = match read_records(&mut decoder, &counts) {
        Ok(edns) => edns,
        Err(Malformed) => return error(ResponseCode::FormErr, query, None),
    };

    let Some(query) = query else {
        return error(ResponseCode::FormErr, None, edns);
    };
    if !is_query {
        return error(ResponseCode::NotImp, Some(query), edns);
    }
    if let Some(edns) = edns {
        // RFC 6891 §6.1.3: a version we do not implement gets BADVERS.
        if edns.version > 0 {
            return error(ResponseCode::BADVERS, Some(query), Some(edns));
        }
    }

    Ok(Request {
        id,
        opcode,
        query,
        recursion_desired,
        checking_disabled,
        edns,
    })
}

/// Walks every record of the three record sections, checking each, and returns the EDNS
/// parameters of the OPT record if there is one. The packet must end exactly after the
/// last record.
fn read_records(
    decoder: &mut BinDecoder<'_>,
    counts: &[(Section, u16); 3],
) -> Result<Option<RequestEdns>, Malformed> {
    let mut edns = None;
    for &(section, count) in counts {
        for _ in 0..count {
            if let Some(found) = read_record(decoder, section)? {
                // RFC 6891 §6.1.1: more than one OPT is a format error.
                if edns.is_some() {
                    return Err(Malformed);
                }
                edns = Some(found);
            }
        }
    }
    // Trailing bytes after the last counted record: the counts lie (RFC 1035 §4.1).
    if !decoder.is_empty() {
        return Err(Malformed);
    }
    Ok(edns)
}

/// Reads one resource record; returns the EDNS parameters if it is an OPT record.
fn read_record(
    decoder: &mut BinDecoder<'_>,
    section: Section,
) -> Result<Option<RequestEdns>, Malformed> {
    let start = decoder.index();
    let owner = Name::read(decoder).map_err(|_| Malformed)?;
    let rtype = read_u16(decoder)?;
    let class = read_u16(decoder)?;
    let ttl = decoder.read_u32().map_err(|_| Malformed)?.unverified();
    let rdlength = read_u16(decoder)?;
    let rdata = decoder
        .read_slice(usize::from(rdlength))
        .map_err(|_| Malformed)?
        .unverified();

    if rtype == u16::from(RecordType::OPT) {
        // RFC 6891 §6.1.1: OPT only in the additional section, owner is the root.
        if section != Section::Additional || !owner.is_root() {
            return Err(Malformed);
        }
        check_options(rdata)?;
        let [_ext_rcode, version, flags_hi, _flags_lo] = ttl.to_be_bytes();
        return Ok(Some(RequestEdns {
            // RFC 6891 §6.2.5: values below 512 are treated as 512.
            max_payload: class.max(MIN_EDNS_PAYLOAD),
            version,
            // RFC 3225 §3: DO is the top bit of the flags.
            dnssec_ok: flags_hi & 0x80 != 0,
        }));
    }

    // Any other record is rare in a query: check its rdata against its type with hickory's
    // full decoder (as Knot checks rdata), then forget it.
    let end = decoder.index();
    let start = u16::try_from(start).map_err(|_| Malformed)?;
    let mut again = decoder.clone(start);
    Record::read(&mut again).map_err(|_| Malformed)?;
    if again.index() != end {
        return Err(Malformed);
    }
    Ok(None)
}

/// Checks that the OPT rdata is a sequence of whole {code, length, data} options
/// (RFC 6891 §6.1.2). Unknown options are ignored (RFC 6891 §6.1.2).
fn check_options(mut rdata: &[u8]) -> Result<(), Malformed> {
    while !rdata.is_empty() {
        let Some((&[_code_hi, _code_lo, len_hi, len_lo], rest)) = rdata.split_first_chunk::<4>()
        else {
            return Err(Malformed);
        };
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        rdata = rest.get(len..).ok_or(Malformed)?;
    }
    Ok(())
}

fn read_u16(decoder: &mut BinDecoder<'_>) -> Result<u16, Malformed> {
    decoder
        .read_u16()
        .map(|v| v.unverified())
        .map_err(|_| Malformed)
}
