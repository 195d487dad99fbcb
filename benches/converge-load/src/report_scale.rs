//! `converge-load report`: how fast `converge report` answers on a large
//! journal. It builds the database of `database.rs` (a year of processed
//! events), then times `converge report` over the whole year, whole and
//! sliced, and prints the median of three runs of each.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::database::{Database, DatabaseArgs};

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    database: DatabaseArgs,
}

pub fn run(args: ReportArgs, converge: &Path) -> anyhow::Result<()> {
    let database = Database::prepare(&args.database)?;
    let config = &database.config;

    for slice in [
        &[][..],
        &["--by", "owner"],
        &["--by", "week"],
        &["--by", "campaign"],
    ] {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let out = Command::new(converge)
                .args([
                    "report",
                    "--since",
                    "2026-01-01",
                    "--until",
                    "2027-06-01",
                    "--format",
                    "csv",
                ])
                .args(slice)
                .arg("--config")
                .arg(config)
                .output()
                .context("running converge report")?;
            times.push(started.elapsed());
            if !out.status.success() {
                bail!(
                    "converge report failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            rows = out.stdout.iter().filter(|b| **b == b'\n').count() - 1;
        }
        times.sort();
        println!(
            "converge report {:<16} {rows:>5} rows  median {:>6.0} ms (runs: {})",
            slice.join(" "),
            times[1].as_secs_f64() * 1000.0,
            times
                .iter()
                .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
