//! `ivr outbox list|show|deliver|consents`: what was sent, to whom (redacted), its delivery
//! state; and a standalone delivery worker for ops.
//!
//! The data directory is the one `ivr serve` uses: `--data-dir`, else `[paths] data_dir` of the
//! config file (`--config`, else `sip-configs/ivr.toml` when present), else `data`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::outbox::{OutboxConfig, State, Store, worker};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Messages, newest first, recipients redacted.
    List {
        #[command(flatten)]
        common: Common,
        /// Only messages in this state: pending, sending, delivered, failed.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One message as JSON, recipient redacted.
    Show {
        id: i64,
        #[command(flatten)]
        common: Common,
    },
    /// Run the delivery worker until SIGINT/SIGTERM (or, with --once, until nothing is due).
    Deliver {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        once: bool,
    },
    /// Stored text-ahead consents as JSON lines.
    Consents {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        call_id: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct Common {
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The server config (its `[paths]` and `[outbox]` sections are read).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The parts of the server config this command needs, read leniently so the command works
/// whatever else the file holds.
fn load(common: &Common) -> anyhow::Result<(PathBuf, OutboxConfig)> {
    let default_file = Path::new("sip-configs/ivr.toml");
    let file = match &common.config {
        Some(p) => Some(p.as_path()),
        None if default_file.exists() => Some(default_file),
        None => None,
    };
    let mut data_dir = crate::config::Config::default().paths.data_dir;
    let mut outbox = OutboxConfig::default();
    if let Some(p) = file {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let doc: toml::Table =
            toml::from_str(&text).with_context(|| format!("in {}", p.display()))?;
        if let Some(dir) = doc
            .get("paths")
            .and_then(|v| v.get("data_dir"))
            .and_then(|v| v.as_str())
        {
            data_dir = dir.into();
        }
        if let Some(section) = doc.get("outbox") {
            outbox = section
                .clone()
                .try_into()
                .with_context(|| format!("[outbox] in {}", p.display()))?;
        }
    }
    if let Some(d) = &common.data_dir {
        data_dir = d.clone();
    }
    Ok((data_dir, outbox))
}

fn open(data_dir: &Path) -> anyhow::Result<Store> {
    Store::open(data_dir).with_context(|| format!("opening the outbox in {}", data_dir.display()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::List {
            common,
            state,
            limit,
            json,
        } => {
            let state = match state.as_deref() {
                Some(s) => Some(State::parse(s).ok_or_else(|| {
                    anyhow::anyhow!("unknown state {s:?}: pending, sending, delivered or failed")
                })?),
                None => None,
            };
            let (dir, _) = load(&common)?;
            let store = open(&dir)?;
            let messages = store.list(state, limit)?;
            if json {
                for m in &messages {
                    println!("{}", m.to_json());
                }
            } else {
                println!(
                    "{:>6}  {:<9}  {:<5}  {:<16}  {:<4}  {:>3}  {:<18}  LAST ERROR",
                    "ID", "STATE", "CHAN", "TO", "LANG", "TRY", "LINK"
                );
                for m in &messages {
                    println!(
                        "{:>6}  {:<9}  {:<5}  {:<16}  {:<4}  {:>3}  {:<18}  {}",
                        m.id,
                        m.state,
                        m.channel,
                        m.to.redacted(),
                        m.lang,
                        m.attempts,
                        m.link_id,
                        m.last_error.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, common } => {
            let (dir, _) = load(&common)?;
            match open(&dir)?.show(id)? {
                Some(m) => {
                    println!("{}", serde_json::to_string_pretty(&m.to_json())?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("ivr outbox: no message {id}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Consents { common, call_id } => {
            let (dir, _) = load(&common)?;
            for c in open(&dir)?.consents(call_id.as_deref())? {
                println!("{}", serde_json::to_string(&c)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Deliver { common, once } => {
            let (dir, config) = load(&common)?;
            config.validate().map_err(anyhow::Error::msg)?;
            let store = Arc::new(open(&dir)?);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .thread_name("ivr-outbox")
                .build()?;
            rt.block_on(async move {
                if once {
                    let n = worker::deliver_once(store, config).await?;
                    println!("delivered {n}");
                    return Ok(ExitCode::SUCCESS);
                }
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    stop_signal().await;
                    let _ = tx.send(true);
                });
                worker::run_worker(store, config, rx).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_gives_data_dir_and_outbox_section() {
        let dir = std::env::temp_dir().join(format!("ivr-cli-outbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ivr.toml");
        std::fs::write(
            &file,
            "[sip]\nlisten = \"0.0.0.0:5060\"\n[paths]\ndata_dir = \"/srv/ivr\"\n\
             [outbox]\nmax_attempts = 3\n[outbox.smtp]\nport = 2525\n",
        )
        .unwrap();
        let mut common = Common {
            data_dir: None,
            config: Some(file.clone()),
        };
        let (d, c) = load(&common).unwrap();
        assert_eq!(d, PathBuf::from("/srv/ivr"));
        assert_eq!((c.max_attempts, c.smtp.port), (3, 2525));
        common.data_dir = Some("/tmp/x".into());
        assert_eq!(load(&common).unwrap().0, PathBuf::from("/tmp/x"));
        std::fs::write(&file, "[outbox]\nbogus = 1\n").unwrap();
        assert!(load(&common).is_err(), "unknown outbox keys are refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
