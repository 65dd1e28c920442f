//! Subcommands of the `ivr` binary that are more than a few lines, one module each. Each
//! exposes a clap `Args` struct and `run(args) -> anyhow::Result<std::process::ExitCode>`.

pub mod call;
pub mod call_voice;
pub mod check;
pub mod classify;
pub mod outbox;
pub mod route;

/// The configuration a subcommand runs with: `path`, else `sip-configs/ivr.toml` when run from
/// a checkout, else the embedded default.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<crate::config::Config> {
    use anyhow::Context;
    let default_file = std::path::Path::new("sip-configs/ivr.toml");
    let path = match path {
        Some(p) => Some(p),
        None if default_file.exists() => Some(default_file),
        None => None,
    };
    match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            crate::config::Config::from_toml(&text).with_context(|| format!("in {}", p.display()))
        }
        None => Ok(crate::config::Config::default()),
    }
}
