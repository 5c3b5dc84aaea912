//! `cxauth-bench`: measures a release cxauth server against references measured in the same run
//! (a bare hyper server, the server's own `/healthz`, the raw Argon2id rate on the same cores,
//! Keycloak's published refresh rate) and prints one table. See `BENCHMARKS.md`.
//!
//! It never builds anything: the release `cxauth` binary must sit beside this one
//! (`cargo build --release -p cxauth -p cxauth-bench`).

mod load;
mod memory;
mod own_latency;
mod peers;
mod report;
mod scenarios;
mod seed;
mod server;
mod waits;
mod workloads;

use clap::{Parser, Subcommand};

/// Benchmark harness for cxauth.
#[derive(Debug, Parser)]
#[command(name = "cxauth-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every scenario and print the table.
    All(scenarios::Options),
    /// cxauth beside open-source peers (node oidc-provider, Debian's glewlwyd), installed through
    /// their package registries, pinned and interleaved (not part of `all`; takes ~10 min).
    Peers(peers::Options),
    /// The bare hyper server used as the machine's ceiling (started by `all`).
    #[command(hide = true)]
    Hello,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::All(opts) => scenarios::all(&opts),
        Command::Peers(opts) => peers::peers(&opts),
        Command::Hello => server::hello_main(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cxauth-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
