//! The product surface: the interactive phone, command line, reports,
//! configuration.
//!
//! Owns: argument parsing, what a person reads on the terminal and in JSON,
//! exit codes. Must not touch: protocol logic (the cores) or socket
//! handling beyond asking `net` for it.

pub mod account;
pub mod bench;
pub mod bench_media;
pub mod bench_quality;
pub mod bench_sip;
pub mod call;
pub mod cli;
pub mod config;
pub mod demo;
pub mod nat_check;
pub mod phone;
pub mod phone_view;
pub mod register;
pub mod report;
pub mod report_html;
pub mod serve;
pub mod server_addr;
pub mod turn_probe;

pub use cli::run;

/// Sleeps until `at`, or forever without one: a `select!` branch for a
/// deadline that may not be set (a hang-up, a restart, a give-up).
pub(crate) async fn sleep_until<T: Into<tokio::time::Instant>>(at: Option<T>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
