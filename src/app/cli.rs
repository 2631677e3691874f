//! `icephone` command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "icephone",
    version,
    about = "A SIP softphone with its own ICE, STUN and TURN stack"
)]
pub struct Cli {
    /// Log filter (tracing syntax), e.g. `debug` or `icephone::ice=trace`.
    /// Logs go to stderr. Overrides RUST_LOG.
    #[arg(long, global = true)]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Two ICE agents connect over loopback; prints candidates, checks and the selected pair.
    Demo {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Report your public address and, with an RFC 5780 server, your NAT's behaviour.
    NatCheck {
        /// STUN server: stun:HOST[:PORT], HOST[:PORT] or [IPv6]:PORT (port 3478 by default).
        #[arg(long)]
        stun: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Seconds the whole check may take before giving up.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(command) = cli.command else {
        use clap::CommandFactory;
        let _ = Cli::command().print_help();
        return ExitCode::SUCCESS;
    };
    runtime.block_on(async move {
        match command {
            Command::Demo { timeout } => super::demo::run(Duration::from_secs(timeout)).await,
            Command::NatCheck {
                stun,
                json,
                timeout,
            } => super::nat_check::run(&stun, json, Duration::from_secs(timeout)).await,
        }
    })
}

fn init_logging(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
