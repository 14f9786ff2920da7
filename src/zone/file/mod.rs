//! RFC 1035 master-file loading with line-numbered errors.
//!
//! [`load_zone`] reads a zone file (BIND syntax: `$ORIGIN`, `$TTL`, `$INCLUDE`, relative
//! names, parentheses, RFC 3597 generic records), checks it and builds a [`Zone`].
//! [`check_zone`] returns every problem found, for `muninn check-zone`.
//!
//! Where RFC 1035 is silent or BIND and Knot differ, this follows Knot DNS: a record
//! without TTL gets `$TTL`, or 3600 s when no `$TTL` was given (not the previous record's
//! TTL and not the SOA minimum), and out-of-zone records are errors rather than warnings.

mod lexer;
mod rdata;
mod validate;

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::txt::parse_ttl;

use self::lexer::{Lexer, Token};
use self::rdata::{Scratch, name_from_wire, name_wire, parse_rdata, show};
use super::{Zone, ZoneBuilder, parent_wire};

/// One problem in a zone file, at `file:line` (line 0: the zone as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Why a zone could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ZoneFileError {
    #[error("cannot read zone file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", ErrorList(.0))]
    Invalid(Vec<ZoneError>),
}

struct ErrorList<'a>(&'a [ZoneError]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Knot's default TTL for records when the file has no `$TTL` (zscanner `DEFAULT_TTL`).
const DEFAULT_TTL: u32 = 3600;
/// RFC 2181 §8: TTLs are 0..=2^31-1.
const MAX_TTL: u32 = i32::MAX as u32;
/// `$INCLUDE` nesting limit (files including files).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Stop recording messages after this many; the count of the rest is still reported.
const MAX_ERRORS: usize = 1000;

/// Parses, validates and builds the zone `origin` from `path`. `$INCLUDE`d files must
/// resolve (after symlinks and `..`) to paths inside `include_root`.
pub fn load_zone(path: &Path, origin: &Name, include_root: &Path) -> Result<Zone, ZoneFileError> {
    let data = crate::pace::read_file(path).map_err(|source| ZoneFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let started = std::time::Instant::now();
    let invalid = |message: String| {
        ZoneFileError::Invalid(vec![ZoneError {
            file: path.to_path_buf(),
            line: 0,
            message,
        }])
    };
    // One record per line is the common case: size the builder's tables once.
    let lines = count_lines(&data);
    let builder = ZoneBuilder::new(origin, lines).map_err(|e| invalid(e.to_string()))?;
    let mut loader = Loader::new(builder, include_root);
    loader.records.reserve(lines);
    loader.run(path, &data);
    drop(data);
    if !loader.errors.is_empty() {
        return Err(ZoneFileError::Invalid(loader.finish_errors()));
    }
    let Loader {
        builder,
        records,
        parse_time,
        ..
    } = loader;
    drop(records);
    let checked = std::time::Instant::now();
    let zone = builder.finish().map_err(|e| invalid(e.to_string()))?;
    tracing::debug!(
        zone = %origin,
        parse_ms = parse_time.as_millis() as u64,
        validate_ms = (checked - started).saturating_sub(parse_time).as_millis() as u64,
        build_ms = checked.elapsed().as_millis() as u64,
        names = zone.name_count(),
        records = zone.record_count(),
        heap_kb = zone.heap_size() / 1024,
        "zone file loaded"
    );
    Ok(zone)
}

/// Newlines in `data`, a paced step per 64 KiB (a 50 MB file is ~10 ms of counting).
fn count_lines(data: &[u8]) -> usize {
    data.chunks(64 << 10)
        .map(|c| {
            crate::pace::tick_many(4);
            c.iter().filter(|&&b| b == b'\n').count()
        })
        .sum()
}

/// Every problem found in the zone file (empty: the zone would load).
pub fn check_zone(path: &Path, origin: &Name, include_root: &Path) -> Vec<ZoneError> {
    match load_zone(path, origin, include_root) {
        Ok(_) => Vec::new(),
        Err(ZoneFileError::Invalid(errors)) => errors,
        Err(ZoneFileError::Io { path, source }) => vec![ZoneError {
            file: path,
            line: 0,
            message: format!("cannot read zone file: {source}"),
        }],
    }
}

/// Parses a record type as a zone file does: a mnemonic (case-insensitive, including KX,
/// RP, AFSDB and SPF, which hickory has no name for) or RFC 3597 §5 `TYPEn`. For callers
/// outside zone files (the admin API); meta types come back too and are refused later.
pub fn parse_record_type(text: &str) -> Option<RecordType> {
    match class_or_type(text.as_bytes()) {
        ClassOrType::Type(t) => Some(t),
        _ => None,
    }
}

/// Parses one record's RDATA in presentation form, as it would follow the type on a zone
/// file line (RFC 1035 §5.1, RFC 3597 §5 `\# len hex`), with names relative to `origin`.
/// Returns the RDATA in uncompressed wire form, names with their case. Used by the admin
/// API so that records added over HTTP read exactly like zone-file records.
pub fn parse_rdata_text(rtype: RecordType, text: &str, origin: &Name) -> Result<Vec<u8>, String> {
    let origin_wire = super::case_wire(origin);
    let mut lexer = Lexer::new(text.as_bytes());
    let mut tokens = Vec::new();
    if let Some(Err(e)) = lexer.next_entry(&mut tokens) {
        return Err(e.message.to_string());
    }
    let mut more = Vec::new();
    if lexer.next_entry(&mut more).is_some() {
        return Err("RDATA must be one line (use parentheses to continue it)".into());
    }
    let mut out = Vec::with_capacity(text.len());
    parse_rdata(
        rtype,
        &tokens,
        &origin_wire,
        &mut Scratch::default(),
        &mut out,
    )?;
    Ok(out)
}

/// Parser state local to one file: `$INCLUDE` never changes the includer's state
/// (RFC 1035 §5.1).
struct FileState {
    origin_wire: Vec<u8>,
    origin: Name,
    /// Last owner (wire form, case kept); `Err` when the last owner was invalid (already
    /// reported), `None` before the first one.
    owner: Option<Result<(), ()>>,
    owner_wire: Vec<u8>,
    default_ttl: u32,
}

/// Where a record came from and what the builder did with it, for the semantic checks.
pub(super) struct RecPos {
    pub node: u32,
    pub file: u32,
    pub line: u32,
    pub rtype: u16,
    /// Same as a record already in its RRset (dropped by the builder).
    pub duplicate: bool,
}

struct Loader {
    zone_origin: Name,
    /// Lowercase wire form of the zone origin.
    origin_lower: Vec<u8>,
    include_root: Result<PathBuf, String>,
    files: Vec<PathBuf>,
    /// Records go straight into the zone's tables as they are parsed.
    builder: ZoneBuilder,
    records: Vec<RecPos>,
    /// (file index, error) pairs; sorted by position at the end.
    errors: Vec<(u32, ZoneError)>,
    dropped_errors: usize,
    /// A syntax error was found: semantic checks would only produce follow-up noise.
    syntax_error: bool,
    scratch: Scratch,
    /// RDATA of the current record, in wire form.
    rdata: Vec<u8>,
    /// Time spent reading and parsing (without the semantic checks).
    parse_time: std::time::Duration,
}

/// True when the wire name `name` is `ancestor` or below it, ignoring ASCII case.
fn in_zone(name: &[u8], ancestor: &[u8]) -> bool {
    let mut cur = name;
    while cur.len() > ancestor.len() {
        match parent_wire(cur) {
            Some(p) => cur = p,
            None => return false,
        }
    }
    cur.eq_ignore_ascii_case(ancestor)
}

enum ClassOrType {
    In,
    OtherClass,
    Type(RecordType),
    Unknown,
}

/// Classifies a class-or-type mnemonic (case-insensitive, RFC 3597 §5 `CLASSn`/`TYPEn`).
fn class_or_type(text: &[u8]) -> ClassOrType {
    let mut buf = [0u8; 16];
    let Some(up) = buf.get_mut(..text.len()) else {
        return ClassOrType::Unknown;
    };
    for (d, s) in up.iter_mut().zip(text) {
        *d = s.to_ascii_uppercase();
    }
    let up: &[u8] = up;
    let numeric = |prefix: &[u8]| -> Option<u16> {
        let digits = up.strip_prefix(prefix)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    match up {
        b"IN" => return ClassOrType::In,
        b"CH" | b"CS" | b"HS" | b"NONE" | b"ANY" => return ClassOrType::OtherClass,
        b"KX" => return ClassOrType::Type(RecordType::Unknown(rdata::KX)),
        b"RP" => return ClassOrType::Type(RecordType::Unknown(rdata::RP)),
        b"AFSDB" => return ClassOrType::Type(RecordType::Unknown(rdata::AFSDB)),
        b"SPF" => return ClassOrType::Type(RecordType::Unknown(rdata::SPF)),
        _ => {}
    }
    if let Some(c) = numeric(b"CLASS") {
        return if DNSClass::from(c) == DNSClass::IN {
            ClassOrType::In
        } else {
            ClassOrType::OtherClass
        };
    }
    if let Some(t) = numeric(b"TYPE") {
        return ClassOrType::Type(RecordType::from(t));
    }
    match std::str::from_utf8(up)
        .ok()
        .and_then(|s| s.parse::<RecordType>().ok())
    {
        Some(t) => ClassOrType::Type(t),
        None => ClassOrType::Unknown,
    }
}

fn parse_ttl_token(t: &Token<'_>) -> Result<u32, String> {
    let ttl = std::str::from_utf8(t.text)
        .ok()
        .and_then(|s| parse_ttl(s).ok())
        .ok_or_else(|| format!("invalid TTL '{}'", show(t.text)))?;
    if ttl > MAX_TTL {
        return Err(format!("TTL {ttl} exceeds 2^31-1 (RFC 2181 §8)"));
    }
    Ok(ttl)
}

impl Loader {
    fn new(builder: ZoneBuilder, include_root: &Path) -> Loader {
        let include_root = include_root
            .canonicalize()
            .map_err(|e| format!("include root {} is not usable: {e}", include_root.display()));
        let zone_origin = builder.origin().clone();
        let origin_lower = crate::zone::lower_wire(&zone_origin).unwrap_or_else(|| vec![0]);
        Loader {
            zone_origin,
            origin_lower,
            include_root,
            files: Vec::new(),
            builder,
            records: Vec::new(),
            errors: Vec::new(),
            dropped_errors: 0,
            syntax_error: false,
            scratch: Scratch::default(),
            rdata: Vec::with_capacity(512),
            parse_time: std::time::Duration::ZERO,
        }
    }

    /// Records a syntax error (stops the semantic checks).
    fn syntax(&mut self, file: u32, line: usize, message: String) {
        self.syntax_error = true;
        self.error(file, line, message);
    }

    fn error(&mut self, file: u32, line: usize, message: String) {
        if self.errors.len() >= MAX_ERRORS {
            self.dropped_errors += 1;
            return;
        }
        let path = self.files.get(file as usize).cloned().unwrap_or_default();
        self.errors.push((
            file,
            ZoneError {
                file: path,
                line,
                message,
            },
        ));
    }

    fn finish_errors(mut self) -> Vec<ZoneError> {
        self.errors.sort_by_key(|(f, e)| (*f, e.line));
        let mut errors: Vec<ZoneError> = self.errors.into_iter().map(|(_, e)| e).collect();
        if self.dropped_errors > 0 {
            let file = self.files.first().cloned().unwrap_or_default();
            errors.push(ZoneError {
                file,
                line: 0,
                message: format!("{} more errors not shown", self.dropped_errors),
            });
        }
        errors
    }

    fn run(&mut self, path: &Path, data: &[u8]) {
        let mut origin_wire = Vec::new();
        for label in self.zone_origin.iter() {
            origin_wire.push(label.len() as u8); // labels are <= 63 octets
            origin_wire.extend_from_slice(label);
        }
        origin_wire.push(0);
        let state = FileState {
            origin_wire,
            origin: self.zone_origin.clone(),
            owner: None,
            owner_wire: Vec::with_capacity(256),
            default_ttl: DEFAULT_TTL,
        };
        let started = std::time::Instant::now();
        self.parse_file(path.to_path_buf(), data, state, 0);
        self.parse_time = started.elapsed();
        // Semantic checks only make sense on a syntactically clean file: a dropped SOA or
        // NS line would produce follow-up errors that are not real.
        if !self.syntax_error {
            let problems = validate::validate(&self.zone_origin, &self.builder, &self.records);
            for (idx, message) in problems {
                let (file, line) = match idx.and_then(|i| self.records.get(i)) {
                    Some(r) => (r.file, r.line as usize),
                    None => (0, 0),
                };
                self.error(file, line, message);
            }
        }
    }

    fn parse_file(&mut self, path: PathBuf, data: &[u8], mut st: FileState, depth: usize) {
        let file = u32::try_from(self.files.len()).unwrap_or(u32::MAX);
        self.files.push(path);
        // One record per line is the common case: reserve once instead of regrowing (the
        // top file's lines were counted to size the builder).
        if depth > 0 {
            self.records.reserve(count_lines(data));
        }
        let mut lexer = Lexer::new(data);
        let mut tokens: Vec<Token<'_>> = Vec::with_capacity(16);
        let mut name_buf: Vec<u8> = Vec::with_capacity(256);
        while let Some(entry) = lexer.next_entry(&mut tokens) {
            crate::pace::tick();
            let head = match entry {
                Ok(h) => h,
                Err(e) => {
                    self.syntax(file, e.line, e.message.to_string());
                    continue;
                }
            };
            let line = head.line;
            let mut rest: &[Token<'_>] = &tokens;
            if !head.blank_owner {
                let Some((first, tail)) = rest.split_first() else {
                    continue;
                };
                rest = tail;
                if !first.quoted && first.text.first() == Some(&b'$') {
                    if let Err(m) = self.directive(file, first.text, rest, &mut st, depth) {
                        self.syntax(file, line, m);
                    }
                    continue;
                }
                name_buf.clear();
                match name_wire(first.text, &st.origin_wire, &mut name_buf) {
                    Ok(()) if !in_zone(&name_buf, &self.origin_lower) => {
                        let n = name_from_wire(&name_buf)
                            .map_or_else(|_| show(first.text), |n| n.to_string());
                        self.error(
                            file,
                            line,
                            format!("out-of-zone data: {n} is not in zone {}", self.zone_origin),
                        );
                        st.owner = Some(Err(()));
                        continue;
                    }
                    Ok(()) => {
                        st.owner = Some(Ok(()));
                        std::mem::swap(&mut st.owner_wire, &mut name_buf);
                    }
                    Err(m) => {
                        self.syntax(file, line, format!("invalid owner name: {m}"));
                        st.owner = Some(Err(()));
                        continue;
                    }
                }
            }
            match &st.owner {
                Some(Ok(())) => {}
                Some(Err(())) => continue, // already reported for this owner
                None => {
                    self.syntax(
                        file,
                        line,
                        "record starts with a blank but there is no previous owner".into(),
                    );
                    continue;
                }
            }
            let added = self.record(rest, &st).and_then(|(rtype, ttl)| {
                self.builder
                    .add(&st.owner_wire, rtype, ttl, &self.rdata)
                    .map(|added| (rtype, added))
                    .map_err(|e| e.to_string())
            });
            match added {
                Ok((rtype, added)) => self.records.push(RecPos {
                    node: added.node,
                    file,
                    line: u32::try_from(line).unwrap_or(u32::MAX),
                    rtype: u16::from(rtype),
                    duplicate: added.duplicate,
                }),
                Err(m) => self.syntax(file, line, m),
            }
        }
    }

    /// `[<TTL>] [<class>] <type> <RDATA>` or `[<class>] [<TTL>] <type> <RDATA>` (RFC 1035
    /// §5.1): returns the type and TTL, and leaves the RDATA in wire form in `self.rdata`.
    fn record(&mut self, toks: &[Token<'_>], st: &FileState) -> Result<(RecordType, u32), String> {
        let mut ttl = None;
        let mut class_seen = false;
        let mut i = 0;
        let rtype = loop {
            let t = toks.get(i).ok_or("missing record type")?;
            i += 1;
            if t.text.first().is_some_and(u8::is_ascii_digit) {
                if ttl.is_some() {
                    return Err(format!("unexpected '{}': TTL given twice", show(t.text)));
                }
                ttl = Some(parse_ttl_token(t)?);
                continue;
            }
            match class_or_type(t.text) {
                ClassOrType::In if !class_seen => class_seen = true,
                ClassOrType::In => return Err("class given twice".into()),
                ClassOrType::OtherClass => {
                    return Err(format!("class {} is not supported (only IN)", show(t.text)));
                }
                ClassOrType::Type(rt) => break rt,
                ClassOrType::Unknown => {
                    return Err(format!("unknown record type '{}'", show(t.text)));
                }
            }
        };
        self.rdata.clear();
        parse_rdata(
            rtype,
            toks.get(i..).unwrap_or_default(),
            &st.origin_wire,
            &mut self.scratch,
            &mut self.rdata,
        )?;
        Ok((rtype, ttl.unwrap_or(st.default_ttl)))
    }

    fn directive(
        &mut self,
        file: u32,
        name: &[u8],
        args: &[Token<'_>],
        st: &mut FileState,
        depth: usize,
    ) -> Result<(), String> {
        let upper = name.to_ascii_uppercase();
        match upper.as_slice() {
            b"$ORIGIN" => {
                let [arg] = args else {
                    return Err("$ORIGIN takes exactly one domain name".into());
                };
                let mut wire = Vec::new();
                name_wire(arg.text, &st.origin_wire, &mut wire)?;
                st.origin = name_from_wire(&wire)?;
                st.origin_wire = wire;
                Ok(())
            }
            b"$TTL" => {
                let [arg] = args else {
                    return Err("$TTL takes exactly one TTL".into());
                };
                st.default_ttl = parse_ttl_token(arg)?;
                Ok(())
            }
            b"$INCLUDE" => {
                let (file_tok, origin_tok) = match args {
                    [f] => (f, None),
                    [f, o] => (f, Some(o)),
                    _ => return Err("$INCLUDE takes a file name and an optional origin".into()),
                };
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(format!(
                        "$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH} levels"
                    ));
                }
                let (origin, origin_wire) = match origin_tok {
                    Some(o) => {
                        let mut wire = Vec::new();
                        name_wire(o.text, &st.origin_wire, &mut wire)?;
                        (name_from_wire(&wire)?, wire)
                    }
                    None => (st.origin.clone(), st.origin_wire.clone()),
                };
                let target = self.resolve_include(file, file_tok.text)?;
                let data = crate::pace::read_file(&target)
                    .map_err(|e| format!("cannot read $INCLUDE file {}: {e}", target.display()))?;
                let child = FileState {
                    origin_wire,
                    origin,
                    owner: None,
                    owner_wire: Vec::with_capacity(256),
                    default_ttl: st.default_ttl,
                };
                self.parse_file(target, &data, child, depth + 1);
                Ok(())
            }
            b"$GENERATE" => Err("$GENERATE is not supported".into()),
            _ => Err(format!("unknown directive {}", show(name))),
        }
    }

    /// Resolves an `$INCLUDE` path relative to the including file's directory and refuses
    /// anything that is not inside the include root once symlinks and `..` are resolved.
    fn resolve_include(&self, file: u32, raw: &[u8]) -> Result<PathBuf, String> {
        let root = self.include_root.as_ref().map_err(Clone::clone)?;
        let rel = Path::new(std::ffi::OsStr::from_bytes(raw));
        let base = self
            .files
            .get(file as usize)
            .and_then(|p| p.parent())
            .unwrap_or_else(|| Path::new("."));
        let joined = base.join(rel);
        let canon = joined
            .canonicalize()
            .map_err(|e| format!("cannot open $INCLUDE file {}: {e}", joined.display()))?;
        if !canon.starts_with(root) {
            return Err(format!(
                "$INCLUDE file {} is outside the include root {}",
                canon.display(),
                root.display()
            ));
        }
        Ok(canon)
    }
}
