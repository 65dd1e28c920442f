//! `ivr call --tty FILE.wav`: runs a recorded TTY caller through the call core a TTY-line call
//! runs in the server (`call::CallCore`: the Baudot demodulator, the conversation (`flow::tty`)
//! and the modulator) offline, on a virtual clock,
//! much faster than real time, and prints one JSON object with the decoded caller text, the
//! intent and what the IVR typed and did.
//!
//! The recording is the caller's side only, so the run models a polite caller: the tape is
//! paused while the IVR types (and for the echo guard after), as a caller reads the reply before
//! typing on. Its silences are kept, so a line without "GA" still ends by the pause rule.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::audio::resample::resample;
use crate::audio::tty::SAMPLE_RATE_HZ;
use crate::call::transfer::BridgeConfig;
use crate::call::{CallConfig, CallCore, CallInput, Effect};
use crate::flow::FlowConfig;
use crate::flow::tty::{TtyConfig, TtyPrompts};
use crate::nlu::Nlu;
use crate::pii::Pii;
use crate::rtp::codec::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
use crate::rtp::inbound::Playout;
use crate::speech::tts::{Pcm, read_wav, write_wav};
use crate::types::{Codec, Lang};

/// 20 ms at 8 kHz: the RTP frame the server feeds the demodulator.
const FRAME_SAMPLES: usize = 160;
/// A run stops after this much virtual time whatever happens (a caller who never stops).
const RUN_LIMIT: Duration = Duration::from_secs(30 * 60);

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The recorded caller: a WAV file (any rate, mono or stereo).
    pub file: PathBuf,
    /// The caller is a Baudot TTY (typed text as tones), not a talker.
    #[arg(long)]
    pub tty: bool,
    /// Language of the conversation: en or es. Speech: skips the language menu (without it the
    /// call starts at the greeting, as a live call does). TTY: default en.
    #[arg(long)]
    pub lang: Option<String>,
    /// Speech: the rate the caller's audio reaches the recognizer front end, 8000 (PSTN, G.711)
    /// or 16000 (wideband, as Opus callers arrive). Default: 16000 for recordings at 16 kHz or
    /// more, else 8000.
    #[arg(long)]
    pub rate: Option<u32>,
    /// The configuration (recognizers, voices, TTS cache); default as `ivr serve`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write what the IVR transmitted (its TTY tones, silence between turns) as 8 kHz WAV.
    #[arg(long)]
    pub out_wav: Option<PathBuf>,
    /// The line's codec round trip for the caller's audio: pcmu, pcma or none.
    #[arg(long, default_value = "pcmu")]
    pub g711: String,
    /// The caller ID the IVR offers for the text message.
    #[arg(long)]
    pub caller_id: Option<String>,
    /// Feed the IVR's own transmission back to its receiver this many dB down (a hybrid's
    /// echo), to exercise echo suppression. Default: no echo.
    #[arg(long, allow_hyphen_values = true)]
    pub echo_db: Option<f64>,
    /// Show phone numbers and email addresses in clear (redacted by default).
    #[arg(long)]
    pub clear: bool,
    #[arg(long, default_value = "prompts")]
    pub prompts: PathBuf,
    #[arg(long, default_value = "grammars")]
    pub grammars: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = if args.tty {
        run_tty(&args)?
    } else {
        super::call_voice::run_voice(&args)?
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Reads `grammars/<lang>/*.txt` and trains the classifier.
pub fn load_nlu(dir: &Path) -> anyhow::Result<Nlu> {
    crate::server::load_grammars(dir)
}

/// Reads `prompts/` and takes the TTY texts from it.
pub fn load_tty_prompts(dir: &Path) -> anyhow::Result<TtyPrompts> {
    let catalog = crate::server::load_catalog(dir)?;
    TtyPrompts::from_catalog(&catalog)
        .map_err(|missing| anyhow::anyhow!("TTY prompts missing: {}", missing.join(", ")))
}

/// The offline run; returns the JSON report `run` prints.
pub fn run_tty(args: &Args) -> anyhow::Result<serde_json::Value> {
    let code = args.lang.as_deref().unwrap_or("en");
    let lang =
        Lang::from_code(code).with_context(|| format!("unknown language {code:?} (en or es)"))?;
    let codec: fn(i16) -> i16 = match args.g711.as_str() {
        "pcmu" => |s| ulaw_decode(ulaw_encode(s)),
        "pcma" => |s| alaw_decode(alaw_encode(s)),
        "none" => |s| s,
        other => bail!("unknown --g711 {other:?} (pcmu, pcma or none)"),
    };
    let nlu = Arc::new(load_nlu(&args.grammars)?);
    let prompts = Arc::new(load_tty_prompts(&args.prompts)?);
    let input = read_wav(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let tape: Vec<i16> = resample(&input.samples, input.rate, SAMPLE_RATE_HZ)
        .into_iter()
        .map(codec)
        .collect();

    let echo_gain = args.echo_db.map(|db| 10f64.powf(-db.abs() / 20.0));
    // `[tty]` of the configuration, as `ivr serve` uses it.
    let config: TtyConfig = super::load_config(args.config.as_deref())?.tty_line();
    let resume_after = Duration::from_millis(config.echo_guard_ms + 200);
    let pause = Duration::from_millis(config.pause_ms);
    // The virtual clock's origin; only differences matter.
    let start = Instant::now();
    // The call core a TTY-line call runs in the server, with no text stream and no transfers.
    let mut core = CallCore::new(
        start,
        CallConfig {
            flow: FlowConfig {
                start_lang: Some(lang),
                ..FlowConfig::default()
            },
            tty: true,
            tty_config: config,
            tty_prompts: Ok(prompts),
            nlu,
            caller_id: args.caller_id.clone().map(Pii::new),
            tty_transfers: Arc::new(HashSet::new()),
            tty_queue_uri: String::new(),
            bridge: BridgeConfig::default(),
            codec: Codec::Pcmu,
            text: None,
        },
    );
    core.handle(start, CallInput::Start);
    let frame = Duration::from_millis(20);
    let mut now = start;
    let mut out: Vec<i16> = Vec::new();
    let mut pos = 0usize;
    // The IVR's tones still to transmit, and how far they went.
    let mut tones: Vec<i16> = Vec::new();
    let mut sent = 0usize;
    let mut tape_resume_at = start;
    let mut tape_done_at: Option<Instant> = None;
    let mut ended = false;
    let mut buf = [0i16; FRAME_SAMPLES];

    while now - start < RUN_LIMIT {
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        while let Some(effect) = core.poll_effect() {
            match effect {
                Effect::PlayTones(pcm) => (tones, sent) = (pcm, 0),
                // The record lists them; an offline run delivers nothing, as if stored.
                Effect::StoreLink { .. } => core.handle(now, CallInput::LinkStored { ok: true }),
                Effect::Refer { .. } | Effect::Hangup { .. } | Effect::End { .. } => ended = true,
                _ => {}
            }
        }
        let transmitting = sent < tones.len();
        if ended && !transmitting {
            break;
        }
        if transmitting {
            let n = (tones.len() - sent).min(FRAME_SAMPLES);
            buf[..n].copy_from_slice(&tones[sent..sent + n]);
            buf[n..].fill(0);
            sent += n;
            out.extend_from_slice(&buf);
            if let Some(gain) = echo_gain {
                let echo: Vec<i16> = buf
                    .iter()
                    .map(|&s| codec((f64::from(s) * gain) as i16))
                    .collect();
                core.handle_audio(now, Playout::Audio(FRAME_SAMPLES), &echo);
            }
            now += frame;
            if sent >= tones.len() {
                core.handle(now, CallInput::PlaybackDone);
                tape_resume_at = now + resume_after;
            }
            continue;
        }
        out.extend(std::iter::repeat_n(0i16, FRAME_SAMPLES));
        if now >= tape_resume_at {
            let end = (pos + FRAME_SAMPLES).min(tape.len());
            let chunk = &tape[pos..end];
            buf[..chunk.len()].copy_from_slice(chunk);
            buf[chunk.len()..].fill(0);
            pos = end;
            if pos >= tape.len() && tape_done_at.is_none() {
                tape_done_at = Some(now);
            }
            core.handle_audio(now, Playout::Audio(FRAME_SAMPLES), &buf);
        } else if echo_gain.is_some() {
            // The line is live between turns: the receiver hears the echo's end.
            core.handle_audio(now, Playout::Audio(FRAME_SAMPLES), &[0; FRAME_SAMPLES]);
        }
        now += frame;
        // The tape is over and the IVR has had its say (a last line without "GA" ends by the
        // pause rule, so wait that long).
        if let Some(done) = tape_done_at
            && now >= done + pause + Duration::from_secs(1)
            && sent >= tones.len()
        {
            break;
        }
    }

    if let Some(path) = &args.out_wav {
        write_wav(
            path,
            &Pcm {
                rate: SAMPLE_RATE_HZ,
                samples: out,
            },
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    let record = core
        .tty()
        .context("the TTY conversation did not start")?
        .record();
    let mut report = record.to_json(args.clear);
    if let Some(map) = report.as_object_mut() {
        map.insert(
            "virtual_s".into(),
            serde_json::json!((now - start).as_secs_f64()),
        );
    }
    Ok(report)
}
