//! Command line: `muninn serve`, `muninn check-zone`, `muninn check-config`, `muninn db`,
//! `muninn records` (a client of the running server's admin API).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::Write as _;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::admin::Token;
use crate::admin::client::Client;
use crate::admin::types::{
    AddRequest, ChangeReply, DeleteRequest, PurgeRequest, RecordInput, RecordList,
};

use crate::config::{Config, Overrides, origin_from_file_name, parse_zone_name};
use crate::store::{Import, Managed, Source, Store, StoreOptions};
use crate::zone::file::{check_zone, load_zone};

/// Muninn: a high-throughput authoritative DNS server.
#[derive(Debug, Parser)]
#[command(name = "muninn", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGTERM or SIGINT; SIGHUP reloads the zones.
    Serve(ServeArgs),
    /// Check a zone file and print each problem as `file:line: message`.
    ///
    /// Exits 0 when the zone is valid, 1 when it has errors.
    CheckZone(CheckZoneArgs),
    /// Check a configuration file: print OK, or the error (unknown keys included).
    ///
    /// Exits 0 when the file is valid, 1 otherwise.
    CheckConfig(CheckConfigArgs),
    /// Inspect and maintain the zone store (DATA_DIR/muninn.redb).
    ///
    /// These commands open the store file directly. The file is locked while a process has
    /// it open, so they fail with a clear message while `muninn serve` is running on the
    /// same data directory: stop the server first.
    Db(DbArgs),
    /// List, add and delete records of a running server's zones, and purge records by tag,
    /// through its admin API (`[admin]` in the server's config).
    ///
    /// The server and token default to the `[admin]` section of the config file given with
    /// --config. Exits 1 with the server's message when a request is refused.
    Records(RecordsArgs),
}

#[derive(Debug, Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Verify the store: no orphaned or missing index entries, exactly one SOA per zone
    /// whose serial matches its journal head, well-formed RRsets, exact record counts.
    ///
    /// Prints a report; exits 0 when the store is sound, 1 on any problem.
    Check(DbLocation),
    /// Write a stored zone as a zone file that re-imports to an identical zone.
    Export(DbExportArgs),
    /// Load a zone file into the store as a store-managed zone (replacing the zone's
    /// records if it is already there).
    Import(DbImportArgs),
    /// Delete every record tagged KEY=VALUE (optionally only in one zone, of one type or
    /// last updated before a time) in atomic batches of `[store] purge_batch_size`.
    ///
    /// Progress goes to standard error, the final counts to standard output. The SOA and
    /// an apex NS RRset the purge would empty are kept (counted as skipped); file-managed
    /// zones are refused. Interrupted, it leaves the store consistent: run it again to
    /// finish. While `muninn serve` runs, use the server's purge API instead.
    Purge(DbPurgeArgs),
    /// Benchmark helper: adds COUNT A records `f<i>` tagged TAG to a store-managed zone, in
    /// change transactions of BATCH records.
    #[command(hide = true)]
    Fill(DbFillArgs),
    /// Test helper: applies ROUNDS change transactions to a store-managed zone, printing
    /// `committed SERIAL RECORDS` after each (used by the crash test).
    #[command(hide = true)]
    Stress(DbStressArgs),
}

/// Where the store is.
#[derive(Debug, Clone, Args)]
pub struct DbLocation {
    /// Data directory holding muninn.redb. Default: the config file's `data_dir`, else ./data.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Configuration file to read `data_dir` from.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DbExportArgs {
    /// The zone to export.
    #[arg(value_name = "ZONE")]
    pub zone: String,
    /// Output file (default: standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub location: DbLocation,
}

#[derive(Debug, Args)]
pub struct DbImportArgs {
    /// The zone file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The zone's origin; defaults to NAME for a file named NAME.zone.
    #[arg(long, value_name = "NAME")]
    pub origin: Option<String>,
    #[command(flatten)]
    pub location: DbLocation,
}

#[derive(Debug, Args)]
pub struct DbPurgeArgs {
    /// The tag whose records to delete.
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: String,
    /// Only this zone (it must be store-managed).
    #[arg(long, value_name = "NAME")]
    pub zone: Option<String>,
    /// Only records of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub rtype: Option<String>,
    /// Only records last updated before this time (seconds since the Unix epoch).
    #[arg(long, value_name = "UNIX_TIME")]
    pub updated_before: Option<u64>,
    /// Count what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Records per write transaction (default: `[store] purge_batch_size`).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    #[command(flatten)]
    pub location: DbLocation,
}

#[derive(Debug, Args)]
pub struct DbFillArgs {
    #[arg(value_name = "ZONE")]
    pub zone: String,
    #[arg(long)]
    pub count: u32,
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: String,
    #[arg(long, default_value_t = 10_000)]
    pub batch: u32,
    #[command(flatten)]
    pub location: DbLocation,
}

#[derive(Debug, Args)]
pub struct DbStressArgs {
    #[arg(value_name = "ZONE")]
    pub zone: String,
    #[arg(long, default_value_t = 1000)]
    pub rounds: u64,
    #[arg(long, default_value_t = 20)]
    pub batch: u32,
    #[command(flatten)]
    pub location: DbLocation,
}

#[derive(Debug, Args)]
pub struct RecordsArgs {
    #[command(subcommand)]
    pub command: RecordsCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How to reach the admin API.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Admin API URL, e.g. http://127.0.0.1:9154. Default: the config's [admin] listen.
    #[arg(long, value_name = "URL", global = true)]
    pub server: Option<String>,
    /// File holding the bearer token. Default: the config's admin.token_file.
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The server's configuration file, for the defaults of --server and --token-file.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Seconds to wait for each reply of the server.
    #[arg(long, value_name = "SECS", default_value_t = 60, global = true)]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Add a record (one transaction; the zone's SOA serial goes up by one).
    ///
    /// Example: muninn records add example.test. www 300 A 192.0.2.1 --tag env=prod
    Add(RecordsAddArgs),
    /// Delete every record at NAME, or those of TYPE there, or the one record with DATA.
    ///
    /// Example: muninn records delete example.test. www A 192.0.2.1
    Delete(RecordsDeleteArgs),
    /// List a zone's records (as zone-file lines, tags in a comment).
    List(RecordsListArgs),
    /// Delete every record tagged KEY=VALUE (in one zone or all store-managed zones) as a
    /// background job on the server, showing its progress until it ends.
    ///
    /// Records the purge must keep (a zone's SOA, the apex NS RRset it would empty) are
    /// counted as kept. Exits 1 if the job fails or is cancelled.
    Purge(RecordsPurgeArgs),
}

#[derive(Debug, Args)]
pub struct RecordsPurgeArgs {
    /// The tag whose records go.
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: String,
    /// Only in this zone.
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    /// Only records of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub rtype: Option<String>,
    /// Count what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RecordsAddArgs {
    /// The zone (a store-managed zone the server serves).
    #[arg(value_name = "ZONE")]
    pub zone: String,
    /// Owner: relative to the zone (www), absolute (www.example.test.) or @.
    #[arg(value_name = "NAME")]
    pub name: String,
    #[arg(value_name = "TTL")]
    pub ttl: u32,
    /// Record type (A, AAAA, MX, TXT, ..., or TYPEn).
    #[arg(value_name = "TYPE")]
    pub rtype: String,
    /// RDATA as in a zone file (names relative to the zone are allowed; quote TXT strings).
    #[arg(value_name = "DATA", required = true, num_args = 1..)]
    pub data: Vec<String>,
    /// A key=value tag; repeat for several.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Replace the RRset (NAME, TYPE) instead of adding to it.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Args)]
pub struct RecordsDeleteArgs {
    #[arg(value_name = "ZONE")]
    pub zone: String,
    #[arg(value_name = "NAME")]
    pub name: String,
    #[arg(value_name = "TYPE")]
    pub rtype: Option<String>,
    /// RDATA of the one record to delete (needs TYPE).
    #[arg(value_name = "DATA", requires = "rtype")]
    pub data: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RecordsListArgs {
    #[arg(value_name = "ZONE")]
    pub zone: String,
    /// Only records at this owner name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Only records of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub rtype: Option<String>,
    /// Only records with this key=value tag.
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: Option<String>,
    /// Print the server's JSON reply instead of zone-file lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without it, built-in defaults are used (see config.toml).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to answer on, UDP and TCP; repeat for several. Replaces `server.listen`.
    #[arg(short, long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Serve every NAME.zone in DIR as zone NAME. (and only those). Replaces `[zones]`.
    #[arg(short, long, value_name = "DIR")]
    pub zones: Option<PathBuf>,
    /// Directory for persistent state. Replaces `data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Query-answering threads (0: one per core). Replaces `runtime.workers`.
    #[arg(short, long, value_name = "N")]
    pub workers: Option<usize>,
}

#[derive(Debug, Args)]
pub struct CheckZoneArgs {
    /// The zone file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The zone's origin; defaults to NAME for a file named NAME.zone.
    #[arg(short, long, value_name = "NAME")]
    pub origin: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The configuration file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            zones_dir: self.zones.clone(),
            data_dir: self.data_dir.clone(),
            workers: self.workers,
        }
    }
}

/// Runs a parsed command line; the binary's `main` is just this.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => {
            match crate::runtime::serve(args.config.clone(), args.overrides()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("muninn: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckZone(args) => check_zone_command(&args.file, args.origin.as_deref()),
        Command::CheckConfig(args) => check_config_command(&args.file),
        Command::Db(args) => match db_command(args.command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("muninn: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Records(args) => match records_command(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("muninn: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

impl ClientArgs {
    /// The client these flags (and the config file's `[admin]` section) describe.
    fn client(&self) -> Result<Client, String> {
        let config = match &self.config {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        let token_file = match &self.token_file {
            Some(f) => f.clone(),
            None if !config.admin.token_file.as_os_str().is_empty() => {
                config.admin.token_file.clone()
            }
            None => {
                return Err(
                    "no token: pass --token-file FILE, or --config FILE whose [admin] \
                            section names a token_file"
                        .into(),
                );
            }
        };
        let token = Token::read(&token_file).map_err(|e| {
            // The messages name the config key; from the command line it was a flag.
            let text = e.to_string();
            match &self.token_file {
                Some(_) => text.replacen("admin.token_file", "token file", 1),
                None => text,
            }
        })?;
        let server = match &self.server {
            Some(url) => url.clone(),
            None => {
                let mut addr = config.admin.listen;
                // A server listening on every address is reached on loopback.
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr {
                        SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                format!("http://{addr}")
            }
        };
        Client::new(&server, token, Duration::from_secs(self.timeout.max(1)))
            .map_err(|e| e.to_string())
    }
}

fn records_command(args: RecordsArgs) -> Result<ExitCode, String> {
    let client = args.client.client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(async move {
        match args.command {
            RecordsCommand::Add(a) => {
                let req = AddRequest {
                    records: vec![RecordInput {
                        name: a.name,
                        rtype: a.rtype,
                        ttl: a.ttl,
                        data: a.data.join(" "),
                        tags: a.tags,
                    }],
                    replace: a.replace,
                };
                let reply = client.add(&a.zone, &req).await.map_err(|e| e.to_string())?;
                print_change(&a.zone, &reply);
            }
            RecordsCommand::Delete(d) => {
                let req = DeleteRequest {
                    name: d.name,
                    rtype: d.rtype,
                    data: (!d.data.is_empty()).then(|| d.data.join(" ")),
                };
                let reply = client
                    .delete(&d.zone, &req)
                    .await
                    .map_err(|e| e.to_string())?;
                print_change(&d.zone, &reply);
            }
            RecordsCommand::List(l) => {
                let list = client
                    .list(
                        &l.zone,
                        l.name.as_deref(),
                        l.rtype.as_deref(),
                        l.tag.as_deref(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                print_list(&list, l.json)?;
            }
            RecordsCommand::Purge(p) => records_purge(&client, p).await?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Starts a purge job and follows it until it ends: a progress bar redrawn in place on a
/// terminal, else one line per second while it changes; then a summary on stdout.
async fn records_purge(client: &Client, args: RecordsPurgeArgs) -> Result<(), String> {
    use crate::jobs::JobState;
    use std::io::IsTerminal as _;
    let req = PurgeRequest {
        tag: args.tag,
        zone: args.zone,
        dry_run: args.dry_run,
        rtype: args.rtype,
        updated_before: None,
    };
    let first = client.purge(&req).await.map_err(|e| e.to_string())?;
    let id = first.id;
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut printed: Option<(std::time::Instant, String)> = None;
    let mut status = first;
    loop {
        let line = progress_line(&status);
        if tty {
            eprint!("\r{line}\x1b[K");
        } else if printed.as_ref().is_none_or(|(at, last)| {
            *last != line
                && (at.elapsed() >= Duration::from_secs(1) || status.state != JobState::Running)
        }) {
            eprintln!("{line}");
            printed = Some((std::time::Instant::now(), line));
        }
        if status.state != JobState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(if tty { 100 } else { 250 })).await;
        status = client.job(id).await.map_err(|e| e.to_string())?;
    }
    if tty {
        eprintln!();
    }
    let what = match &status.spec.zone {
        Some(z) => format!("tag {} in zone {z}", status.spec.tag),
        None => format!("tag {}", status.spec.tag),
    };
    let elapsed = started.elapsed().as_secs_f64();
    match status.state {
        JobState::Done if status.spec.dry_run => {
            println!(
                "purge job {id} ({what}, dry run): {} would be deleted, {} kept, {} processed, in {elapsed:.1} s{}",
                status.would_delete,
                status.skipped,
                status.processed,
                paused(&status)
            );
            Ok(())
        }
        JobState::Done => {
            println!(
                "purge job {id} ({what}): {} deleted, {} kept, {} processed, in {elapsed:.1} s{}",
                status.deleted,
                status.skipped,
                status.processed,
                paused(&status)
            );
            Ok(())
        }
        state => Err(format!(
            "purge job {id} ({what}) {}: {}; {} deleted so far (committed batches stay deleted)",
            state.as_str(),
            status.error.as_deref().unwrap_or("no reason given"),
            status.deleted
        )),
    }
}

/// `[#######-----] 58% 5800/10000 processed, 5800 deleted, 2900 records/s, ETA 1.4 s`, then
/// `, paused 3 s for queries` once the purge brake has paused it.
fn progress_line(s: &crate::jobs::JobStatus) -> String {
    const WIDTH: usize = 30;
    let done = s.state != crate::jobs::JobState::Running;
    let fraction = match (s.total, done) {
        (0, true) => 1.0,
        (0, false) => 0.0,
        (total, _) => (s.processed as f64 / total as f64).clamp(0.0, 1.0),
    };
    let filled = ((fraction * WIDTH as f64).round() as usize).min(WIDTH);
    let total = if s.total == 0 && !done {
        "?".to_string()
    } else {
        s.total.to_string()
    };
    let (count, label) = if s.spec.dry_run {
        (s.would_delete, "would go")
    } else {
        (s.deleted, "deleted")
    };
    let eta = match s.eta_secs {
        Some(secs) => format!("{secs:.1} s"),
        None => "?".into(),
    };
    let mut line = format!(
        "[{}{}] {:>3.0}% {}/{total} processed, {count} {label}, {:.0} records/s, ETA {eta}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        fraction * 100.0,
        s.processed,
        s.rate
    );
    line.push_str(&paused(s));
    line
}

/// `, paused 3 s for queries` when the purge brake paused the job, else nothing.
fn paused(s: &crate::jobs::JobStatus) -> String {
    if s.braked_secs > 0.0 {
        format!(", paused {:.0} s for queries", s.braked_secs)
    } else {
        String::new()
    }
}

fn print_change(zone: &str, reply: &ChangeReply) {
    println!(
        "zone {zone}: serial {} -> {}, {} added, {} removed",
        reply.old_serial, reply.new_serial, reply.added, reply.removed
    );
}

fn print_list(list: &RecordList, json: bool) -> Result<(), String> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let result = if json {
        serde_json::to_writer_pretty(&mut out, list)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        (|| {
            writeln!(out, "; zone {} serial {}", list.zone, list.serial)?;
            for r in &list.records {
                write!(out, "{}\t{}\tIN\t{}\t{}", r.name, r.ttl, r.rtype, r.data)?;
                if !r.tags.is_empty() {
                    write!(out, "\t; {}", r.tags.join(" "))?;
                }
                writeln!(out)?;
            }
            Ok(())
        })()
    };
    result.map_err(|e| format!("cannot write the list: {e}"))?;
    if list.truncated {
        eprintln!(
            "muninn: only the first {} matching records are shown (admin.max_list_records); \
             narrow the filter with --name, --type or --tag",
            list.records.len()
        );
    }
    Ok(())
}

impl DbLocation {
    fn data_dir(&self) -> Result<PathBuf, String> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        self.config().map(|c| c.data_dir)
    }

    /// The config file's settings, else the defaults.
    fn config(&self) -> Result<Config, String> {
        match &self.config {
            Some(path) => Config::load(path).map_err(|e| e.to_string()),
            None => Ok(Config::default()),
        }
    }

    fn open(&self) -> Result<Store, String> {
        let dir = self.data_dir()?;
        Store::open_dir(&dir, StoreOptions::default()).map_err(|e| e.to_string())
    }
}

fn zone_name(text: &str) -> Result<hickory_proto::rr::Name, String> {
    parse_zone_name(text).map_err(|e| format!("invalid zone name {text:?}: {e}"))
}

fn db_command(command: DbCommand) -> Result<ExitCode, String> {
    match command {
        DbCommand::Check(location) => {
            let store = location.open()?;
            let report = store.check().map_err(|e| e.to_string())?;
            println!("{}: {report}", store.path().display());
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DbCommand::Export(args) => {
            let origin = zone_name(&args.zone)?;
            let store = args.location.open()?;
            let (zone, _) = store.build_zone(&origin).map_err(|e| e.to_string())?;
            let write = |out: &mut dyn std::io::Write| -> std::io::Result<()> {
                let mut out = std::io::BufWriter::new(out);
                crate::store::export::write_zone(&zone, &mut out)?;
                std::io::Write::flush(&mut out)
            };
            match &args.output {
                Some(path) => {
                    let mut file = std::fs::File::create(path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    write(&mut file).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                None => write(&mut std::io::stdout().lock()).map_err(|e| e.to_string())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Import(args) => {
            let origin = match &args.origin {
                Some(text) => zone_name(text)?,
                None => origin_from_file_name(&args.file).ok_or_else(|| {
                    format!(
                        "cannot tell the origin from the file name {} (expected NAME.zone); use --origin",
                        args.file.display()
                    )
                })?,
            };
            let include_root = args
                .file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            // Parse before opening the store: a bad file changes nothing.
            let zone = load_zone(&args.file, &origin, include_root).map_err(|e| e.to_string())?;
            let store = args.location.open()?;
            let (records, serial) = (zone.record_count(), zone.serial());
            store
                .import_blocking(Import {
                    zone: std::sync::Arc::new(zone),
                    managed: Managed::Store,
                    file: Some(args.file.clone()),
                    fingerprint: None,
                    source: Source::Import,
                })
                .map_err(|e| e.to_string())?;
            println!(
                "zone {origin}: imported as store-managed, serial {serial}, {records} records"
            );
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Stress(args) => stress(args),
        DbCommand::Purge(args) => purge(args),
        DbCommand::Fill(args) => fill(args),
    }
}

/// See [`DbCommand::Fill`].
fn fill(args: DbFillArgs) -> Result<ExitCode, String> {
    use crate::store::{Change, NewRecord};
    use hickory_proto::rr::{RData, rdata::A};
    let origin = zone_name(&args.zone)?;
    let store = args.location.open()?;
    let started = std::time::Instant::now();
    let batch = args.batch.max(1);
    let mut next = 0u32;
    while next < args.count {
        let end = next.saturating_add(batch).min(args.count);
        let mut change = Change::default();
        for i in next..end {
            let name = hickory_proto::rr::Name::from_ascii(format!("f{i}"))
                .and_then(|n| n.append_domain(&origin))
                .map_err(|e| e.to_string())?;
            let [_, b, c, d] = i.to_be_bytes();
            change.add.push(NewRecord {
                name,
                ttl: 300,
                data: RData::A(A::new(10, b, c, d)),
                tags: vec![args.tag.clone()],
            });
        }
        store
            .apply_blocking(&origin, change)
            .map_err(|e| e.to_string())?;
        next = end;
    }
    let meta = store.zone_meta(&origin).map_err(|e| e.to_string())?;
    println!(
        "zone {origin}: added {} records tagged {} in {:.1}s; {} records, serial {}",
        args.count,
        args.tag,
        started.elapsed().as_secs_f64(),
        meta.as_ref().map_or(0, |m| m.record_count),
        meta.as_ref().map_or(0, |m| m.serial)
    );
    Ok(ExitCode::SUCCESS)
}

/// `muninn db purge`: the server's purge engine ([`crate::jobs`]) on a store this process
/// holds, on a small runtime of its own.
fn purge(args: DbPurgeArgs) -> Result<ExitCode, String> {
    use crate::jobs::{JobSettings, JobState, Jobs, PurgeSpec};
    use std::time::Duration;
    let config = args.location.config()?;
    let mut settings = JobSettings::from_config(&config.store);
    if let Some(n) = args.batch_size {
        if !(1..=crate::config::MAX_PURGE_BATCH).contains(&n) {
            return Err(format!(
                "--batch-size {n} is outside 1..={}",
                crate::config::MAX_PURGE_BATCH
            ));
        }
        settings.purge_batch_size = n;
    }
    let spec = PurgeSpec {
        tag: args.tag.clone(),
        zone: args.zone.clone(),
        dry_run: args.dry_run,
        rtype: args.rtype.clone(),
        updated_before: args.updated_before,
    };
    // Syntax errors before the store is opened.
    spec.filter().map_err(|e| e.to_string())?;
    let store = args.location.open()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("muninn-purge")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let token = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    let jobs = Jobs::new(
        store,
        rt.handle().clone(),
        token.clone(),
        tracker.clone(),
        settings,
    );
    let started = jobs.start_purge(spec).map_err(|e| e.to_string())?;
    let mut stderr = std::io::stderr().lock();
    let status = loop {
        std::thread::sleep(Duration::from_millis(250));
        let Some(s) = jobs.get(started.id) else {
            return Err("the purge job vanished".into());
        };
        if s.state != JobState::Running {
            break s;
        }
        let pct = if s.total > 0 {
            s.processed as f64 * 100.0 / s.total as f64
        } else {
            0.0
        };
        let eta = s
            .eta_secs
            .map_or_else(|| "?".to_string(), |e| format!("{e:.1}s"));
        let _ = writeln!(
            stderr,
            "purge: {}/{} processed ({pct:.1}%), {} deleted, {} skipped, {:.0} records/s, ETA {eta}",
            s.processed,
            s.total,
            if args.dry_run {
                s.would_delete
            } else {
                s.deleted
            },
            s.skipped,
            s.rate
        );
    };
    drop(stderr);
    tracker.close();
    rt.block_on(tracker.wait());
    rt.shutdown_timeout(Duration::from_secs(1));
    let mut out = std::io::stdout().lock();
    if args.dry_run {
        let _ = writeln!(
            out,
            "dry run, tag {}: {} records would be deleted, {} skipped, {} processed of {}; nothing changed",
            status.spec.tag, status.would_delete, status.skipped, status.processed, status.total
        );
    } else {
        let _ = writeln!(
            out,
            "purged tag {}: {} deleted, {} skipped, {} processed of {}, in {:.1}s ({:.0} records/s)",
            status.spec.tag,
            status.deleted,
            status.skipped,
            status.processed,
            status.total,
            status.elapsed_secs,
            status.rate
        );
    }
    for s in &status.skipped_by {
        let _ = writeln!(out, "skipped {} in {}: {}", s.count, s.zone, s.reason);
    }
    match (status.state, status.error) {
        (JobState::Done, _) => Ok(ExitCode::SUCCESS),
        (_, Some(e)) => Err(format!("purge failed: {e}")),
        (state, None) => Err(format!("purge {}", state.as_str())),
    }
}

/// See [`DbCommand::Stress`]: change k adds `BATCH` A records `s<old serial>-<i>` tagged
/// `batch=<old serial>` and deletes the odd-numbered records of the previous change.
fn stress(args: DbStressArgs) -> Result<ExitCode, String> {
    use crate::store::{Change, NewRecord, RecordFilter};
    use hickory_proto::rr::{RData, rdata::A};
    let origin = zone_name(&args.zone)?;
    let store = args.location.open()?;
    let mut stdout = std::io::stdout().lock();
    for _ in 0..args.rounds {
        let meta = store
            .zone_meta(&origin)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("zone {origin} is not in the store"))?;
        let s = meta.serial;
        let name = |serial: u32, i: u32| -> Result<hickory_proto::rr::Name, String> {
            hickory_proto::rr::Name::from_ascii(format!("s{serial}-{i}"))
                .and_then(|n| n.append_domain(&origin))
                .map_err(|e| e.to_string())
        };
        let mut change = Change::default();
        for i in 0..args.batch {
            change.add.push(NewRecord {
                name: name(s, i)?,
                ttl: 60,
                data: RData::A(A::new(10, (i >> 8) as u8, i as u8, (s % 256) as u8)),
                tags: vec![format!("batch={s}")],
            });
            if i % 2 == 1 {
                change.delete.push(RecordFilter {
                    name: name(s.wrapping_sub(1), i)?,
                    rtype: Some(hickory_proto::rr::RecordType::A),
                    data: None,
                });
            }
        }
        let event = store
            .apply_blocking(&origin, change)
            .map_err(|e| e.to_string())?;
        let meta = store.zone_meta(&origin).map_err(|e| e.to_string())?;
        let _ = writeln!(
            stdout,
            "committed {} {}",
            event.new_serial,
            meta.map_or(0, |m| m.record_count)
        );
        let _ = stdout.flush();
    }
    Ok(ExitCode::SUCCESS)
}

/// Like `kzonecheck`: errors on stdout as `file:line: message`, a summary, exit 1 on error.
fn check_zone_command(file: &Path, origin: Option<&str>) -> ExitCode {
    let origin = match origin {
        Some(text) => match parse_zone_name(text) {
            Ok(name) => name,
            Err(e) => {
                eprintln!("muninn: invalid origin {text:?}: {e}");
                return ExitCode::from(2);
            }
        },
        None => match origin_from_file_name(file) {
            Some(name) => name,
            None => {
                eprintln!(
                    "muninn: cannot tell the origin from the file name {} (expected NAME.zone); use --origin",
                    file.display()
                );
                return ExitCode::from(2);
            }
        },
    };
    let include_root = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let errors = check_zone(file, &origin, include_root);
    if !errors.is_empty() {
        for e in &errors {
            println!("{e}");
        }
        println!(
            "{}: zone {origin}: {} error(s) found",
            file.display(),
            errors.len()
        );
        return ExitCode::FAILURE;
    }
    // No problems found: load it the way the server would, to report what it contains.
    match load_zone(file, &origin, include_root) {
        Ok(zone) => {
            println!(
                "{}: zone {origin}: OK, serial {}, {} records, {} names",
                file.display(),
                zone.serial(),
                zone.record_count(),
                zone.name_count()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config_command(file: &Path) -> ExitCode {
    let result = Config::load(file).and_then(|config| config.zone_sources().map(|z| z.len()));
    match result {
        Ok(zones) => {
            println!("{}: OK ({zones} zones configured)", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn progress_line_shows_counters_and_pauses() {
        let mut s: crate::jobs::JobStatus = serde_json::from_str(
            r#"{"id":1,"kind":"purge","state":"running","spec":{"tag":"a=b","zone":null},
                "processed":5800,"deleted":5800,"total":10000,"rate":2900.0,"eta_secs":1.4,
                "started":1,"finished":null,"error":null}"#,
        )
        .unwrap();
        assert_eq!(
            progress_line(&s),
            format!(
                "[{}{}]  58% 5800/10000 processed, 5800 deleted, 2900 records/s, ETA 1.4 s",
                "#".repeat(17),
                "-".repeat(13)
            )
        );
        s.braked_secs = 3.2;
        assert!(
            progress_line(&s).ends_with("ETA 1.4 s, paused 3 s for queries"),
            "{}",
            progress_line(&s)
        );
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_become_overrides() {
        let cli = Cli::try_parse_from([
            "muninn",
            "serve",
            "--config",
            "c.toml",
            "--listen",
            "127.0.0.1:53",
            "--listen",
            "[::1]:53",
            "--zones",
            "z",
            "--workers",
            "3",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let o = args.overrides();
        assert_eq!(args.config, Some(PathBuf::from("c.toml")));
        assert_eq!(o.listen.len(), 2);
        assert_eq!(o.zones_dir, Some(PathBuf::from("z")));
        assert_eq!(o.workers, Some(3));
        assert!(Cli::try_parse_from(["muninn", "serve", "--listen", "localhost"]).is_err());
    }
}
