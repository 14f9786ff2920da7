//! Semantic checks on parsed records, before the zone is built (the line numbers are
//! only known here). Each problem names the record index it is reported on.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use hickory_proto::rr::{Name, Record, RecordType};

/// FxHash-style hasher: the keys are zone-file names, not attacker-chosen query input,
/// and SipHash would cost more than the rest of the check on a million-name zone.
#[derive(Default)]
pub(super) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(chunk) {
                *d = *s;
            }
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

const NONE: u32 = u32::MAX;

/// What one owner name holds, as indices of the first record of each kind.
#[derive(Clone, Copy)]
struct NodeInfo {
    cname: u32,
    other: u32,
    ns: u32,
    dname: u32,
    soa: u32,
}

impl Default for NodeInfo {
    fn default() -> Self {
        NodeInfo {
            cname: NONE,
            other: NONE,
            ns: NONE,
            dname: NONE,
            soa: NONE,
        }
    }
}

/// DNSSEC metadata may sit beside a CNAME (RFC 4035 §2.5; RFC 2181 §10.1).
fn cname_compatible(t: RecordType) -> bool {
    matches!(t, RecordType::CNAME | RecordType::RRSIG | RecordType::NSEC)
}

/// The parent of a lower-cased wire-form name (None for the root).
fn parent(name: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*name.first()?);
    if len == 0 {
        return None;
    }
    name.get(1 + len..)
}

fn wire_lower(name: &Name) -> Vec<u8> {
    let mut w = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        w.push(label.len() as u8); // labels are <= 63 octets
        w.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    w.push(0);
    w
}

/// Problems found, as (record index or None for the whole zone, message), in record order.
/// `keys[i]` is the lower-cased wire form of `records[i]`'s owner.
pub(super) fn validate(
    origin: &Name,
    records: &[Record],
    keys: &[&[u8]],
) -> Vec<(Option<usize>, String)> {
    let mut errors: Vec<(Option<usize>, String)> = Vec::new();
    let apex_key = wire_lower(origin);
    let apex: &[u8] = &apex_key;
    let mut nodes: FxMap<&[u8], NodeInfo> = FxMap::default();
    nodes.reserve(records.len());
    for (i, (r, &key)) in records.iter().zip(keys).enumerate() {
        let idx = u32::try_from(i).unwrap_or(NONE - 1);
        let is_apex = key == apex;
        let node = nodes.entry(key).or_default();
        let rtype = r.record_type();
        match rtype {
            RecordType::CNAME => {
                // RFC 2181 §10.1: one CNAME per name, and no other data beside it.
                if node.cname != NONE {
                    let first = records.get(node.cname as usize).map(|f| &f.data);
                    if first != Some(&r.data) {
                        errors.push((Some(i), format!("more than one CNAME record at {}", r.name)));
                    }
                } else {
                    node.cname = idx;
                    if node.other != NONE {
                        errors.push((Some(i), format!("CNAME and other data at {}", r.name)));
                    }
                }
            }
            t if cname_compatible(t) => {}
            _ => {
                if node.other == NONE {
                    node.other = idx;
                    if node.cname != NONE {
                        errors.push((Some(i), format!("CNAME and other data at {}", r.name)));
                    }
                }
            }
        }
        match rtype {
            RecordType::SOA => {
                if !is_apex {
                    errors.push((
                        Some(i),
                        format!("SOA record at {} is not at the zone apex {origin}", r.name),
                    ));
                } else if node.soa != NONE {
                    errors.push((Some(i), "more than one SOA record at the zone apex".into()));
                } else {
                    node.soa = idx;
                }
            }
            RecordType::NS if node.ns == NONE => node.ns = idx,
            RecordType::DNAME => {
                if node.dname != NONE {
                    // RFC 6672 §2.4: at most one DNAME per owner.
                    errors.push((Some(i), format!("more than one DNAME record at {}", r.name)));
                } else {
                    node.dname = idx;
                }
            }
            _ => {}
        }
    }

    match nodes.get(&apex) {
        Some(n) if n.soa != NONE => {
            if n.ns == NONE {
                // RFC 1034 §4.2.1: the apex must carry the zone's NS RRset.
                errors.push((
                    Some(n.soa as usize),
                    format!("no NS records at the zone apex {origin}"),
                ));
            }
        }
        _ => errors.push((None, format!("no SOA record at the zone apex {origin}"))),
    }

    // Zone cuts (NS below the apex) and DNAME owners: what lies beneath them.
    // Value: true for a delegation, false for a DNAME.
    let mut cuts: FxMap<&[u8], bool> = FxMap::default();
    for (&name, n) in &nodes {
        if name != apex && n.ns != NONE {
            cuts.insert(name, true);
        } else if n.dname != NONE {
            cuts.insert(name, false);
        }
    }
    if !cuts.is_empty() {
        for (i, (r, &key)) in records.iter().zip(keys).enumerate() {
            let rtype = r.record_type();
            let glue = matches!(rtype, RecordType::A | RecordType::AAAA);
            if cuts.get(key) == Some(&true)
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
                        r.name
                    ),
                ));
            }
            if key == apex {
                continue;
            }
            let mut ancestor = key;
            let mut depth = 0usize;
            while let Some(p) = parent(ancestor) {
                ancestor = p;
                depth += 1;
                match cuts.get(ancestor) {
                    Some(true) => {
                        if !glue {
                            errors.push((
                                Some(i),
                                format!(
                                    "{rtype} record {} is below delegation point {} (only glue A/AAAA allowed)",
                                    r.name,
                                    r.name.trim_to(r.name.num_labels().saturating_sub(depth as u8) as usize)
                                ),
                            ));
                        }
                        break;
                    }
                    Some(false) => {
                        // RFC 6672 §2.4: a DNAME owner must not have descendants.
                        errors.push((
                            Some(i),
                            format!(
                                "{rtype} record {} is below the DNAME at {}",
                                r.name,
                                r.name.trim_to(
                                    r.name.num_labels().saturating_sub(depth as u8) as usize
                                )
                            ),
                        ));
                        break;
                    }
                    None => {}
                }
                if ancestor == apex {
                    break;
                }
            }
        }
    }
    errors.sort_by_key(|(i, _)| i.unwrap_or(usize::MAX));
    errors
}
