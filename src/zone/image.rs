//! Zone images: a built [`Zone`]'s tables written to a file as they are in memory, and
//! read back without building, so that a restart costs a sequential read instead of a
//! rebuild from records (see `store` for where images live and what they are tied to).
//!
//! # Format (version 1; integers little-endian)
//!
//! | part | content |
//! |---|---|
//! | header | magic `MUNZIMG\0`, version u32, hash probe u32, tie (u32 length + bytes), origin (u16 length + wire form, case kept), serial u32, record count u64, negative SOA set, index length u64, then the length of each table (u64 each) |
//! | header CRC | CRC-32 of the header |
//! | tables | names, nodes (16 B each), index slots (8 B), sets (18 B), rdata, related (8 B), refs (8 B) |
//! | body CRC | CRC-32 of the tables |
//!
//! The *tie* is an opaque byte string from the caller (the store writes its zone metadata
//! there): an image is used only when its tie equals the caller's, so an image never
//! outlives the store state it was made from. The *hash probe* is the name hash of a fixed
//! name: the index is stored as built, so an image made by a build whose name hash differs
//! is refused rather than served with every lookup missing.
//!
//! A damaged image is refused, never served and never a panic: both checksums are
//! verified, table lengths must add up to the file length, and the structure the query path
//! relies on to terminate (parents before children, a free slot in the index) is checked.
//! Everything else is bounds-checked by the zone's accessors.
//!
//! What must not live here: where images are kept and when they are written (`store`,
//! `reload`).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::rr::LowerName;

use super::{
    Index, NONE, Node, RdataSet, Related, SetRef, Slot, Tables, Zone, case_wire, hash_name,
};

const MAGIC: &[u8; 8] = b"MUNZIMG\0";
const VERSION: u32 = 1;
/// The name whose hash is stored as the probe.
const PROBE_NAME: &[u8] = b"\x05probe\x07example\x00";
/// Largest tie accepted (the store's zone metadata is a few hundred octets).
const MAX_TIE: usize = 1 << 16;
/// Bytes read or written per chunk while (de)coding a table.
const CHUNK: usize = 64 * 1024;
/// A chunk is tens of microseconds of encoding or decoding: pacing steps (see `pace`).
const CHUNK_TICKS: u32 = 8;

const NODE_SIZE: usize = 16;
const SLOT_SIZE: usize = 8;
const SET_SIZE: usize = 18;
const RELATED_SIZE: usize = 8;
const REF_SIZE: usize = 8;

/// Why an image was not used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no image")]
    Missing,
    #[error("image I/O: {0}")]
    Io(#[from] io::Error),
    /// Not an image, or one of another format version or name hash.
    #[error("not a zone image of this version")]
    Format,
    /// A valid image, made from another state of the zone.
    #[error("image made from another state of the zone")]
    Stale,
    #[error("image damaged: {0}")]
    Damaged(&'static str),
}

impl ImageError {
    /// Short label for logs and counters: missing, stale or damaged.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::Missing => "missing",
            ImageError::Stale | ImageError::Format => "stale",
            ImageError::Io(_) | ImageError::Damaged(_) => "damaged",
        }
    }
}

/// True when `zone` can be written as an image: freshly built (or compacted), nothing
/// patched onto it. A patched zone's changes live in its extension, which an image does
/// not hold.
pub fn writable(zone: &Zone) -> bool {
    zone.ext.is_none()
}

/// Writes `zone` as an image tied to `tie`.
pub fn write(zone: &Zone, tie: &[u8], out: impl Write) -> io::Result<()> {
    if !writable(zone) {
        return Err(io::Error::other(
            "a patched zone has no image until it is compacted",
        ));
    }
    let mut w = CrcWriter::new(out);
    let mut h = Vec::with_capacity(128 + tie.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&hash_name(PROBE_NAME).to_le_bytes());
    let tie_len = u32::try_from(tie.len())
        .ok()
        .filter(|&l| l as usize <= MAX_TIE)
        .ok_or_else(|| io::Error::other("image tie too long"))?;
    h.extend_from_slice(&tie_len.to_le_bytes());
    h.extend_from_slice(tie);
    let origin = case_wire(&zone.origin);
    h.extend_from_slice(&(origin.len() as u16).to_le_bytes()); // a name is <= 255 octets
    h.extend_from_slice(&origin);
    h.extend_from_slice(&zone.serial.to_le_bytes());
    h.extend_from_slice(&(zone.record_count as u64).to_le_bytes());
    h.extend_from_slice(&set_bytes(&zone.negative_soa));
    h.extend_from_slice(&(zone.t.index.len as u64).to_le_bytes());
    for n in [
        zone.t.names.len(),
        zone.t.nodes.len(),
        zone.t.index.slots.len(),
        zone.t.sets.len(),
        zone.t.rdata.len(),
        zone.t.related.len(),
        zone.t.refs.len(),
    ] {
        h.extend_from_slice(&(n as u64).to_le_bytes());
    }
    w.write_all(&h)?;
    w.finish_section()?;

    w.write_all(&zone.t.names)?;
    put_table(&mut w, &zone.t.nodes, |n, b: &mut [u8; NODE_SIZE]| {
        b[0..4].copy_from_slice(&n.name.to_le_bytes());
        b[4..8].copy_from_slice(&n.parent.to_le_bytes());
        b[8..12].copy_from_slice(&n.sets.to_le_bytes());
        b[12..14].copy_from_slice(&n.nsets.to_le_bytes());
        b[14] = n.name_len;
        b[15] = n.flags;
    })?;
    put_table(&mut w, &zone.t.index.slots, |s, b: &mut [u8; SLOT_SIZE]| {
        b[0..4].copy_from_slice(&s.hash.to_le_bytes());
        b[4..8].copy_from_slice(&s.node.to_le_bytes());
    })?;
    put_table(&mut w, &zone.t.sets, |s, b: &mut [u8; SET_SIZE]| {
        *b = set_bytes(s)
    })?;
    w.write_all(&zone.t.rdata)?;
    put_table(&mut w, &zone.t.related, |r, b: &mut [u8; RELATED_SIZE]| {
        b[0..4].copy_from_slice(&r.refs.to_le_bytes());
        b[4..6].copy_from_slice(&r.len.to_le_bytes());
        b[6..8].copy_from_slice(&r.required.to_le_bytes());
    })?;
    put_table(&mut w, &zone.t.refs, |r, b: &mut [u8; REF_SIZE]| {
        b[0..4].copy_from_slice(&r.set.to_le_bytes());
        b[4..8].copy_from_slice(&r.owner.to_le_bytes());
    })?;
    w.finish_section()?;
    w.inner.flush()
}

/// Reads an image of `len` octets (the whole input) tied to `tie`.
pub fn read(input: impl Read, len: u64, tie: &[u8]) -> Result<Zone, ImageError> {
    let mut r = CrcReader::new(input);
    let fixed = MAGIC.len() + 4 + 4 + 4;
    let mut head = vec![0u8; fixed];
    r.read_exact(&mut head).map_err(eof)?;
    let mut p = Parser(&head);
    if p.take(MAGIC.len()) != Some(&MAGIC[..]) || p.u32() != Some(VERSION) {
        return Err(ImageError::Format);
    }
    if p.u32() != Some(hash_name(PROBE_NAME)) {
        return Err(ImageError::Format);
    }
    let tie_len = p.u32().ok_or(ImageError::Damaged("header"))? as usize;
    if tie_len > MAX_TIE {
        return Err(ImageError::Damaged("header"));
    }
    let mut stored_tie = vec![0u8; tie_len];
    r.read_exact(&mut stored_tie).map_err(eof)?;
    let mut origin_len = [0u8; 2];
    r.read_exact(&mut origin_len).map_err(eof)?;
    let origin_len = usize::from(u16::from_le_bytes(origin_len));
    if origin_len > 255 {
        return Err(ImageError::Damaged("header"));
    }
    let rest_len = origin_len + 4 + 8 + SET_SIZE + 8 + 7 * 8;
    let mut rest = vec![0u8; rest_len];
    r.read_exact(&mut rest).map_err(eof)?;
    r.check_section()?;
    if stored_tie != tie {
        return Err(ImageError::Stale);
    }

    let mut p = Parser(&rest);
    let damaged = || ImageError::Damaged("header");
    let origin_case = p.take(origin_len).ok_or_else(damaged)?.to_vec();
    let serial = p.u32().ok_or_else(damaged)?;
    let record_count = usize::try_from(p.u64().ok_or_else(damaged)?).map_err(|_| damaged())?;
    let negative_soa = get_set(p.take(SET_SIZE).ok_or_else(damaged)?).ok_or_else(damaged)?;
    let index_len = p.u64().ok_or_else(damaged)?;
    let mut counts = [0usize; 7];
    for c in &mut counts {
        *c = usize::try_from(p.u64().ok_or_else(damaged)?).map_err(|_| damaged())?;
    }
    let [
        n_names,
        n_nodes,
        n_slots,
        n_sets,
        n_rdata,
        n_related,
        n_refs,
    ] = counts;
    // Every length must be accounted for by the file before anything is allocated.
    let header = (fixed + tie_len + 2 + rest_len + 4) as u64;
    let body = [
        (n_names, 1),
        (n_nodes, NODE_SIZE),
        (n_slots, SLOT_SIZE),
        (n_sets, SET_SIZE),
        (n_rdata, 1),
        (n_related, RELATED_SIZE),
        (n_refs, REF_SIZE),
    ]
    .iter()
    .try_fold(0u64, |acc, &(n, size)| {
        (n as u64)
            .checked_mul(size as u64)
            .and_then(|b| acc.checked_add(b))
    })
    .ok_or_else(damaged)?;
    if header.checked_add(body).and_then(|t| t.checked_add(4)) != Some(len) {
        return Err(ImageError::Damaged("length"));
    }

    let origin = super::name_from_wire(&origin_case).ok_or(ImageError::Damaged("origin"))?;
    let origin_wire = super::lower_wire(&origin).ok_or(ImageError::Damaged("origin"))?;

    let names = read_bytes(&mut r, n_names)?;
    let nodes = get_table(&mut r, n_nodes, |b: &[u8; NODE_SIZE]| Node {
        name: le32(b, 0),
        parent: le32(b, 4),
        sets: le32(b, 8),
        nsets: u16::from_le_bytes([b[12], b[13]]),
        name_len: b[14],
        flags: b[15],
    })?;
    let slots = get_table(&mut r, n_slots, |b: &[u8; SLOT_SIZE]| Slot {
        hash: le32(b, 0),
        node: le32(b, 4),
    })?;
    let sets = get_table(&mut r, n_sets, |b: &[u8; SET_SIZE]| {
        get_set(b).unwrap_or(RdataSet {
            rtype: 0,
            ttl: 0,
            data: 0,
            len: 0,
            related: NONE,
        })
    })?;
    let rdata = read_bytes(&mut r, n_rdata)?;
    let related = get_table(&mut r, n_related, |b: &[u8; RELATED_SIZE]| Related {
        refs: le32(b, 0),
        len: u16::from_le_bytes([b[4], b[5]]),
        required: u16::from_le_bytes([b[6], b[7]]),
    })?;
    let refs = get_table(&mut r, n_refs, |b: &[u8; REF_SIZE]| SetRef {
        set: le32(b, 0),
        owner: le32(b, 4),
    })?;
    r.check_section()?;

    let index = Index {
        mask: slots.len().wrapping_sub(1),
        len: usize::try_from(index_len).map_err(|_| damaged())?,
        slots,
    };
    // Child counts follow from the parent links (as the builder computes them); only
    // patches read them.
    let mut children = vec![0u32; nodes.len()];
    for n in nodes.iter().skip(1) {
        if let Some(c) = children.get_mut(n.parent as usize) {
            *c += 1;
        }
    }
    let zone = Zone {
        origin_lower: LowerName::new(&origin),
        origin,
        origin_wire: origin_wire.into_boxed_slice(),
        serial,
        t: Arc::new(Tables {
            names,
            nodes,
            index,
            sets,
            rdata,
            related,
            refs,
            children: children.into_boxed_slice(),
        }),
        ext: None,
        negative_soa,
        record_count,
    };
    check_structure(&zone)?;
    Ok(zone)
}

/// What the query path needs to terminate and to find the apex: node 0 is the origin,
/// every parent precedes its child (parent walks end), and the index is a power-of-two
/// table with a free slot (probes end) whose occupied slots name real nodes.
fn check_structure(zone: &Zone) -> Result<(), ImageError> {
    let apex = zone.t.nodes.first().ok_or(ImageError::Damaged("no apex"))?;
    if apex.parent != NONE || !zone.owner(apex).eq_ignore_ascii_case(&zone.origin_wire) {
        return Err(ImageError::Damaged("apex"));
    }
    for (i, n) in zone.t.nodes.iter().enumerate().skip(1) {
        if n.parent as usize >= i {
            return Err(ImageError::Damaged("node order"));
        }
    }
    let slots = &zone.t.index.slots;
    if !slots.len().is_power_of_two() || zone.t.index.len >= slots.len() {
        return Err(ImageError::Damaged("index size"));
    }
    let mut used = 0usize;
    for s in slots.iter().filter(|s| s.node != NONE) {
        if s.node as usize >= zone.t.nodes.len() {
            return Err(ImageError::Damaged("index entry"));
        }
        used += 1;
    }
    if used != zone.t.index.len {
        return Err(ImageError::Damaged("index count"));
    }
    Ok(())
}

/// Writes `zone`'s image to `path` atomically: a temporary file in the same directory,
/// synced, then renamed over `path` (and the directory synced), so a crash leaves either
/// the old image or the new one. Returns the image size.
pub fn save(path: &Path, zone: &Zone, tie: &[u8]) -> io::Result<u64> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::other("image path has no file name"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut out = BufWriter::with_capacity(CHUNK * 4, file);
        write(zone, tie, &mut out)?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        let size = file.metadata()?.len();
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(size)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the image at `path` tied to `tie`.
pub fn load(path: &Path, tie: &[u8]) -> Result<Zone, ImageError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImageError::Missing),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    read(BufReader::with_capacity(CHUNK, file), len, tie)
}

fn set_bytes(s: &RdataSet) -> [u8; SET_SIZE] {
    let mut b = [0u8; SET_SIZE];
    b[0..2].copy_from_slice(&s.rtype.to_le_bytes());
    b[2..6].copy_from_slice(&s.ttl.to_le_bytes());
    b[6..10].copy_from_slice(&s.data.to_le_bytes());
    b[10..14].copy_from_slice(&s.len.to_le_bytes());
    b[14..18].copy_from_slice(&s.related.to_le_bytes());
    b
}

fn get_set(b: &[u8]) -> Option<RdataSet> {
    let mut p = Parser(b);
    Some(RdataSet {
        rtype: u16::from_le_bytes(*p.take(2)?.first_chunk()?),
        ttl: p.u32()?,
        data: p.u32()?,
        len: p.u32()?,
        related: p.u32()?,
    })
}

fn le32<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.first_chunk::<4>())
        .map_or(0, |s| u32::from_le_bytes(*s))
}

/// Encodes `items` with `put` in fixed-size records, a chunk at a time.
fn put_table<T, const N: usize>(
    w: &mut impl Write,
    items: &[T],
    put: impl Fn(&T, &mut [u8; N]),
) -> io::Result<()> {
    let mut buf = vec![0u8; (CHUNK / N) * N];
    for group in items.chunks(CHUNK / N) {
        crate::pace::tick_many(CHUNK_TICKS);
        let mut used = 0;
        for (item, slot) in group.iter().zip(buf.chunks_exact_mut(N)) {
            if let Some(slot) = slot.first_chunk_mut::<N>() {
                put(item, slot);
                used += N;
            }
        }
        w.write_all(buf.get(..used).unwrap_or_default())?;
    }
    Ok(())
}

/// Decodes `count` fixed-size records with `get`, a chunk at a time.
fn get_table<T, const N: usize>(
    r: &mut impl Read,
    count: usize,
    get: impl Fn(&[u8; N]) -> T,
) -> Result<Box<[T]>, ImageError> {
    let mut out = Vec::with_capacity(count);
    let mut buf = vec![0u8; (CHUNK / N) * N];
    let mut left = count;
    while left > 0 {
        crate::pace::tick_many(CHUNK_TICKS);
        let n = left.min(CHUNK / N);
        let chunk = buf.get_mut(..n * N).ok_or(ImageError::Damaged("table"))?;
        r.read_exact(chunk).map_err(eof)?;
        out.extend(
            chunk
                .chunks_exact(N)
                .filter_map(|c| c.first_chunk::<N>())
                .map(&get),
        );
        left -= n;
    }
    Ok(out.into_boxed_slice())
}

fn read_bytes(r: &mut impl Read, n: usize) -> Result<Box<[u8]>, ImageError> {
    let mut out = vec![0u8; n];
    r.read_exact(&mut out).map_err(eof)?;
    Ok(out.into_boxed_slice())
}

fn eof(e: io::Error) -> ImageError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ImageError::Damaged("truncated")
    } else {
        ImageError::Io(e)
    }
}

struct Parser<'a>(&'a [u8]);

impl<'a> Parser<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(*self.take(4)?.first_chunk()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(*self.take(8)?.first_chunk()?))
    }
}

/// A writer that checksums what passes through; [`CrcWriter::finish_section`] appends
/// the section's CRC and starts the next.
struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    fn new(inner: W) -> Self {
        CrcWriter {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }

    fn finish_section(&mut self) -> io::Result<()> {
        let crc = std::mem::take(&mut self.crc).finalize();
        self.inner.write_all(&crc.to_le_bytes())
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that checksums what passes through; [`CrcReader::check_section`] reads the
/// stored CRC of the section and compares.
struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> CrcReader<R> {
    fn new(inner: R) -> Self {
        CrcReader {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }

    fn check_section(&mut self) -> Result<(), ImageError> {
        let computed = std::mem::take(&mut self.crc).finalize();
        let mut stored = [0u8; 4];
        self.inner.read_exact(&mut stored).map_err(eof)?;
        if u32::from_le_bytes(stored) != computed {
            return Err(ImageError::Damaged("checksum"));
        }
        Ok(())
    }
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::file::load_zone;
    use hickory_proto::rr::{Name, RecordType};

    const ZONE: &str = "$TTL 300\n\
        @ IN SOA ns1 hostmaster 7 3600 600 86400 120\n\
        @ IN NS ns1\n\
        @ IN MX 10 mail\n\
        ns1 IN A 192.0.2.53\n\
        mail IN A 192.0.2.25\n\
        www IN A 192.0.2.1\n\
        www IN AAAA 2001:db8::1\n\
        *.wild IN A 192.0.2.99\n\
        sub IN NS ns.sub\n\
        ns.sub IN A 192.0.2.54\n\
        a.b.c IN TXT \"deep\"\n";

    fn zone() -> Zone {
        let dir = std::env::temp_dir().join(format!(
            "muninn-image-zone-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("example.com.zone");
        std::fs::write(&file, ZONE).unwrap();
        let zone = load_zone(&file, &Name::from_ascii("Example.COM.").unwrap(), &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        zone
    }

    fn image(zone: &Zone, tie: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write(zone, tie, &mut out).unwrap();
        out
    }

    fn same(a: &Zone, b: &Zone) {
        assert_eq!(a.origin(), b.origin());
        assert_eq!(a.origin_wire(), b.origin_wire());
        assert_eq!(a.serial(), b.serial());
        assert_eq!(a.record_count(), b.record_count());
        assert_eq!(a.name_count(), b.name_count());
        assert_eq!(a.heap_size(), b.heap_size());
        let sets = |z: &Zone| z.rrsets().map(|s| format!("{s:?}")).collect::<Vec<_>>();
        assert_eq!(sets(a), sets(b));
        assert_eq!(a.negative_soa(), b.negative_soa());
        for n in [
            "www.example.com.",
            "a.b.c.example.com.",
            "b.c.example.com.",
            "x.wild.example.com.",
        ] {
            let name = LowerName::new(&Name::from_ascii(n).unwrap());
            assert_eq!(
                a.node(&name).map(|n| (n.flags, n.nsets)),
                b.node(&name).map(|n| (n.flags, n.nsets)),
                "{n}"
            );
        }
        let rel = |z: &Zone| {
            let apex = z.node(&LowerName::new(z.origin())).unwrap();
            let mx = z.set(apex, RecordType::MX).unwrap();
            z.related(apex, mx)
                .0
                .map(|r| format!("{r:?}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(rel(a), rel(b));
        assert_eq!(rel(a).len(), 1);
    }

    #[test]
    fn round_trip_keeps_every_table() {
        let z = zone();
        let bytes = image(&z, b"tie-1");
        let back = read(&bytes[..], bytes.len() as u64, b"tie-1").unwrap();
        same(&z, &back);
        assert_eq!(back.origin().to_string(), "Example.COM.");
    }

    #[test]
    fn another_tie_is_stale() {
        let bytes = image(&zone(), b"tie-1");
        let err = read(&bytes[..], bytes.len() as u64, b"tie-2").unwrap_err();
        assert!(matches!(err, ImageError::Stale), "{err}");
        assert_eq!(err.kind(), "stale");
    }

    #[test]
    fn every_damaged_byte_and_every_truncation_is_refused() {
        let bytes = image(&zone(), b"tie");
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let r = read(&bad[..], bad.len() as u64, b"tie");
                assert!(r.is_err(), "flipping {flip:#x} at {at} went unnoticed");
            }
        }
        for cut in 0..bytes.len() {
            assert!(
                read(&bytes[..cut], cut as u64, b"tie").is_err(),
                "cut at {cut}"
            );
            // A wrong length claim alone is refused too.
            assert!(
                read(&bytes[..], cut as u64, b"tie").is_err(),
                "length {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read(&longer[..], longer.len() as u64, b"tie").is_err());
    }

    #[test]
    fn structure_is_checked_even_with_valid_checksums() {
        let mut z = zone();
        let t = Arc::get_mut(&mut z.t).unwrap();
        let last = t.nodes.len() - 1;
        t.nodes[1].parent = last as u32;
        let bytes = image(&z, b"t");
        let err = read(&bytes[..], bytes.len() as u64, b"t").unwrap_err();
        assert!(matches!(err, ImageError::Damaged("node order")), "{err}");

        let mut z = zone();
        let t = Arc::get_mut(&mut z.t).unwrap();
        for s in t.index.slots.iter_mut() {
            if s.node == NONE {
                s.node = 0;
            }
        }
        t.index.len = t.index.slots.len();
        let bytes = image(&z, b"t");
        let err = read(&bytes[..], bytes.len() as u64, b"t").unwrap_err();
        assert!(matches!(err, ImageError::Damaged("index size")), "{err}");
    }

    #[test]
    fn save_is_atomic_and_load_reads_it_back() {
        let dir = std::env::temp_dir().join(format!("muninn-image-{}", std::process::id()));
        let path = dir.join("sub").join("1.zimg");
        let z = zone();
        assert!(matches!(load(&path, b"x"), Err(ImageError::Missing)));
        let size = save(&path, &z, b"x").unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        same(&z, &load(&path, b"x").unwrap());
        // Overwriting leaves exactly one file (no temporary left behind).
        save(&path, &z, b"y").unwrap();
        let files: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, vec![std::ffi::OsString::from("1.zimg")]);
        assert!(matches!(load(&path, b"x"), Err(ImageError::Stale)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
