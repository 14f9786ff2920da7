//! Command line: `muninn serve`, `muninn check-zone`, `muninn check-config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides, origin_from_file_name, parse_zone_name};
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
    }
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
