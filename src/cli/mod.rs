//! Subcommands of the `ivr` binary that are more than a few lines, one module each. Each
//! exposes a clap `Args` struct and `run(args) -> anyhow::Result<std::process::ExitCode>`.

pub mod call;
pub mod check;
pub mod classify;
pub mod outbox;
pub mod route;
