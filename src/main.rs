//! The `ivr` command: the server and the tools prompt authors and ops use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ivr::config::{Config, PortRange};
use ivr::types::Lang;

#[derive(Parser)]
#[command(name = "ivr", version, about = "Speech-enabled telephony IVR backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer calls. With no config file, the embedded default (= sip-configs/ivr.toml).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// SIP listen address (UDP and TCP).
        #[arg(long)]
        sip: Option<std::net::SocketAddr>,
        /// RTP port range LO-HI.
        #[arg(long)]
        rtp_ports: Option<PortRange>,
        /// Admin HTTP listen address.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Most concurrent calls before 503.
        #[arg(long)]
        max_calls: Option<usize>,
    },
    /// Validate prompts/ and grammars/ and run the authors' test cases.
    Check(ivr::cli::check::Args),
    /// The intent of a text (or of each stdin line), as JSON lines.
    Classify(ivr::cli::classify::Args),
    /// Run a recorded caller through the pipeline offline and print what was heard, understood,
    /// said and done, as one JSON object.
    Call(ivr::cli::call::Args),
    /// What the routing policy decides for an intent at an instant, as one JSON object.
    Route {
        #[command(flatten)]
        args: ivr::cli::route::Args,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Render a prompt (or any text) as callers hear it, to a WAV file (8 kHz, through G.711).
    Say {
        #[arg(long, default_value = "en")]
        lang: String,
        /// A prompt id from prompts/<lang>/.
        #[arg(long, conflicts_with = "text")]
        prompt: Option<String>,
        /// Free text (markup allowed).
        #[arg(long)]
        text: Option<String>,
        #[arg(short = 'o', long)]
        output: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Links sent by SMS and email: list, show, deliver, consents.
    Outbox(ivr::cli::outbox::Args),
    /// Render and encode every prompt into DIR, for a package to ship as `[paths] tts_seed_dir`
    /// (a first start then renders nothing). Only the encoded frames are kept.
    CachePrompts {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    ivr::cli::load_config(path)
}

fn parse_lang(s: &str) -> anyhow::Result<Lang> {
    Lang::from_code(s).ok_or_else(|| anyhow::anyhow!("unknown language {s:?}: use en or es"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IVR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ivr: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Outbox(args) => ivr::cli::outbox::run(args),
        Command::Serve {
            config,
            sip,
            rtp_ports,
            admin,
            data_dir,
            max_calls,
        } => {
            let mut cfg = load_config(config.as_deref())?;
            if let Some(v) = sip {
                cfg.sip.listen = v;
            }
            if let Some(v) = rtp_ports {
                cfg.media.rtp_ports = v;
            }
            if let Some(v) = admin {
                cfg.admin.listen = v;
            }
            if let Some(v) = data_dir {
                cfg.paths.data_dir = v;
            }
            if let Some(v) = max_calls {
                cfg.calls.max_concurrent = v;
            }
            cfg.validate()?;
            // The blocking pool (SQLite lookups for /calls, read-back rendering, reloads) is
            // bounded: tokio's default (512) let a few seconds' stall grow it by 9 threads in a
            // soak, and steady use then kept them all alive. Work past the bound waits its turn.
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("ivr")
                .max_blocking_threads(4 * cores)
                .build()?;
            rt.block_on(ivr::server::run(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CachePrompts { out, config } => {
            let mut cfg = load_config(config.as_deref())?;
            cfg.paths.tts_cache_dir = out.clone();
            cfg.paths.tts_seed_dir = PathBuf::new();
            let set = ivr::server::load_prompts(&cfg, None)?;
            // The frames are all a start reads; the synthesized WAVs behind them (the TTS
            // cache's own `<16 hex digits>.wav` files) are not shipped. Nothing else in DIR is
            // touched.
            let mut kept = 0usize;
            for entry in std::fs::read_dir(&out)? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let tts_wav = name
                    .strip_suffix(".wav")
                    .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
                if tts_wav {
                    std::fs::remove_file(&path)?;
                } else if name.starts_with("enc-") && name.ends_with(".bin") {
                    kept += 1;
                }
            }
            println!(
                "ivr: {} prompts cached in {} ({kept} files)",
                set.len(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => ivr::cli::check::run(args),
        Command::Classify(args) => ivr::cli::classify::run(args),
        Command::Call(args) => ivr::cli::call::run(args),
        Command::Route { args, config } => {
            let cfg = load_config(config.as_deref())?;
            ivr::cli::route::run_with(
                args,
                &cfg.routing,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            )
        }
        Command::Say {
            lang,
            prompt,
            text,
            output,
            config,
        } => {
            let cfg = load_config(config.as_deref())?;
            let lang = parse_lang(&lang)?;
            say(&cfg, lang, prompt.as_deref(), text.as_deref(), &output)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn say(
    cfg: &Config,
    lang: Lang,
    prompt: Option<&str>,
    text: Option<&str>,
    output: &Path,
) -> anyhow::Result<()> {
    use ivr::speech::{cache, markup, tts};
    let render = ivr::server::render_config(cfg);
    let (id, rendered, barge) = match (prompt, text) {
        (Some(id), _) => {
            let catalog = ivr::server::load_catalog(&cfg.paths.prompts_dir)?;
            let p = catalog
                .get(lang, id)
                .ok_or_else(|| anyhow::anyhow!("no prompt {id:?} in {lang}"))?;
            (p.id.clone(), p.rendered.clone(), p.barge_in)
        }
        (None, Some(t)) => {
            let r = markup::render(t, lang)
                .map_err(|e| anyhow::anyhow!("column {}: {}", e.column, e.message))?;
            ("text".to_string(), r, true)
        }
        (None, None) => anyhow::bail!("give --prompt ID or --text TEXT"),
    };
    let recorded = cfg
        .paths
        .prompts_dir
        .join(lang.code())
        .join("audio")
        .join(format!("{id}.wav"));
    let builtin = ivr::assets::use_embedded(&cfg.paths.prompts_dir)
        .then(|| ivr::assets::prompt_audio(lang, &id))
        .flatten();
    let pcm = if let (Some(_), Some((name, bytes))) = (prompt, builtin) {
        tts::read_wav_bytes(bytes, &name)?
    } else if prompt.is_some() && recorded.exists() {
        tts::read_wav(&recorded)?
    } else {
        tts::render(&rendered.ssml, render.voice(lang), &render.cache_dir)?
    };
    let encoded = cache::encode_pcm(id, lang, rendered.display, barge, "say".into(), &pcm)
        .map_err(|e| anyhow::anyhow!(e))?;
    // What a G.711 caller hears: the µ-law frames decoded again.
    let mut samples = Vec::with_capacity(encoded.pcm_8k.len());
    for i in 0..encoded.frames() {
        if let Some(f) = encoded.frame(ivr::types::Codec::Pcmu, i) {
            samples.extend(f.iter().map(|&b| ivr::rtp::codec::ulaw_decode(b)));
        }
    }
    tts::write_wav(
        output,
        &tts::Pcm {
            rate: 8000,
            samples,
        },
    )?;
    println!("{}: {} ms", output.display(), encoded.duration_ms());
    Ok(())
}
