use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    muninn::cli::run(muninn::cli::Cli::parse())
}
