//! `wolfctl`: operator CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wolfscale::config::{self, Severity};
use wolfscale::wal::inspect;

#[derive(Parser)]
#[command(name = "wolfctl", version, about = "Operate a WolfScale cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect a node's write-ahead log (read-only; safe on a stopped node's files).
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Check a config file; exits non-zero when it has errors.
    CheckConfig {
        /// The file (default: $WOLFSCALE_CONFIG, then ./wolfscale.toml).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Print entries: index, term, size.
    Dump {
        /// The node's data_dir (or its wal/ directory).
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = u64::MAX)]
        to: u64,
    },
    /// Verify every checksum; exit 1 on corruption, naming the file and offset.
    Check {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn wal(cmd: WalCommand) -> ExitCode {
    let result = match cmd {
        WalCommand::Dump { data_dir, from, to } => {
            println!("{:>20} {:>10} {:>10}", "index", "term", "bytes");
            inspect::dump(&inspect::wal_dir(&data_dir), from, to, |e| {
                println!("{:>20} {:>10} {:>10}", e.index, e.term, e.payload.len())
            })
        }
        WalCommand::Check { data_dir } => {
            inspect::check(&inspect::wal_dir(&data_dir)).map(|reports| {
                for r in &reports {
                    let last = r.last_index.map_or("-".into(), |l| l.to_string());
                    println!(
                        "{}: entries {}..={} ({} entries, {} batches, {} bytes) ok",
                        r.path.display(),
                        r.first_index,
                        last,
                        r.entries,
                        r.batches,
                        r.bytes
                    );
                    if let Some(t) = &r.torn_tail {
                        println!(
                            "  torn tail at offset {} ({}): the next open cuts it",
                            t.offset, t.error
                        );
                    }
                }
                println!("{} segment(s) verified", reports.len());
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Wal { command } => wal(command),
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
