//! Semantic checks on the records of a zone file, after parsing (the line numbers are
//! only known here). They run on the zone builder's name tree, so they need no name table
//! of their own: one byte of state per name and one pass (two with zone cuts or DNAMEs)
//! over the records. Each problem names the record index it is reported on.

use hickory_proto::rr::{Name, RecordType};

use super::RecPos;
use crate::zone::ZoneBuilder;

const CNAME: u8 = 1;
const OTHER: u8 = 2;
const NS: u8 = 4;
const DNAME: u8 = 8;
const SOA: u8 = 16;

/// DNSSEC metadata may sit beside a CNAME (RFC 4035 §2.5; RFC 2181 §10.1).
fn cname_compatible(t: RecordType) -> bool {
    matches!(t, RecordType::CNAME | RecordType::RRSIG | RecordType::NSEC)
}

/// Problems found, as (record index or None for the whole zone, message), in record order.
pub(super) fn validate(
    origin: &Name,
    zone: &ZoneBuilder,
    records: &[RecPos],
) -> Vec<(Option<usize>, String)> {
    let mut errors: Vec<(Option<usize>, String)> = Vec::new();
    let mut state = vec![0u8; zone.node_count()];
    let mut apex_soa: Option<usize> = None;
    let name = |node: u32| zone.node_name(node);
    for (i, r) in records.iter().enumerate() {
        crate::pace::tick();
        let Some(st) = state.get_mut(r.node as usize) else {
            continue;
        };
        let rtype = RecordType::from(r.rtype);
        match rtype {
            RecordType::CNAME => {
                // RFC 2181 §10.1: one CNAME per name, and no other data beside it.
                if *st & CNAME != 0 {
                    if !r.duplicate {
                        errors.push((
                            Some(i),
                            format!("more than one CNAME record at {}", name(r.node)),
                        ));
                    }
                } else {
                    *st |= CNAME;
                    if *st & OTHER != 0 {
                        errors.push((Some(i), format!("CNAME and other data at {}", name(r.node))));
                    }
                }
            }
            t if cname_compatible(t) => {}
            _ => {
                if *st & OTHER == 0 {
                    *st |= OTHER;
                    if *st & CNAME != 0 {
                        errors.push((Some(i), format!("CNAME and other data at {}", name(r.node))));
                    }
                }
            }
        }
        match rtype {
            RecordType::SOA => {
                if r.node != 0 {
                    errors.push((
                        Some(i),
                        format!(
                            "SOA record at {} is not at the zone apex {origin}",
                            name(r.node)
                        ),
                    ));
                } else if *st & SOA != 0 {
                    errors.push((Some(i), "more than one SOA record at the zone apex".into()));
                } else {
                    *st |= SOA;
                    apex_soa = Some(i);
                }
            }
            RecordType::NS => *st |= NS,
            RecordType::DNAME => {
                if *st & DNAME != 0 {
                    // RFC 6672 §2.4: at most one DNAME per owner.
                    errors.push((
                        Some(i),
                        format!("more than one DNAME record at {}", name(r.node)),
                    ));
                } else {
                    *st |= DNAME;
                }
            }
            _ => {}
        }
    }

    match (apex_soa, state.first()) {
        (Some(soa), Some(&apex)) => {
            if apex & NS == 0 {
                // RFC 1034 §4.2.1: the apex must carry the zone's NS RRset.
                errors.push((
                    Some(soa),
                    format!("no NS records at the zone apex {origin}"),
                ));
            }
        }
        _ => errors.push((None, format!("no SOA record at the zone apex {origin}"))),
    }

    // Zone cuts (NS below the apex) and DNAME owners: what lies at and beneath them.
    let is_cut = |node: u32| node != 0 && state.get(node as usize).is_some_and(|s| s & NS != 0);
    let is_dname = |node: u32| state.get(node as usize).is_some_and(|s| s & DNAME != 0);
    let any = state
        .iter()
        .enumerate()
        .any(|(i, s)| (i != 0 && s & NS != 0) || s & DNAME != 0);
    if any {
        for (i, r) in records.iter().enumerate() {
            crate::pace::tick();
            let rtype = RecordType::from(r.rtype);
            let glue = matches!(rtype, RecordType::A | RecordType::AAAA);
            if is_cut(r.node)
                // RFC 1034 §4.2.1: at a delegation only NS, DS (RFC 4035 §2.4) and glue.
                && !glue
                && !matches!(
                    rtype,
                    RecordType::NS | RecordType::DS | RecordType::RRSIG | RecordType::NSEC
                )
            {
                errors.push((
                    Some(i),
                    format!(
                        "{rtype} record at delegation point {} (only NS, DS and glue allowed)",
                        name(r.node)
                    ),
                ));
            }
            let mut ancestor = r.node;
            while let Some(p) = zone.node_parent(ancestor) {
                ancestor = p;
                if is_cut(p) {
                    if !glue {
                        errors.push((
                            Some(i),
                            format!(
                                "{rtype} record {} is below delegation point {} (only glue A/AAAA allowed)",
                                name(r.node),
                                name(p)
                            ),
                        ));
                    }
                    break;
                }
                if is_dname(p) {
                    // RFC 6672 §2.4: a DNAME owner must not have descendants.
                    errors.push((
                        Some(i),
                        format!(
                            "{rtype} record {} is below the DNAME at {}",
                            name(r.node),
                            name(p)
                        ),
                    ));
                    break;
                }
            }
        }
    }
    errors.sort_by_key(|(i, _)| i.unwrap_or(usize::MAX));
    errors
}
