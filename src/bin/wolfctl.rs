//! `wolfctl`: operator CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wolfscale::config::{self, Severity};

#[derive(Parser)]
#[command(name = "wolfctl", version, about = "Operate a WolfScale cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config file; exits non-zero when it has errors.
    CheckConfig {
        /// The file (default: $WOLFSCALE_CONFIG, then ./wolfscale.toml).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { file } => {
            let path = config::resolve_path(file.as_deref());
            let diags = config::check_file(&path);
            for d in &diags {
                eprintln!("{d}");
            }
            if diags.iter().any(|d| d.severity == Severity::Error) {
                ExitCode::from(1)
            } else {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
        }
    }
}
