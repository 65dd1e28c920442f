//! `ivr call FILE.wav`: a recorded caller through the whole speech path offline — the front end
//! (rate conversion, VAD, endpointing), the configured recognizer, the grammars, the call flow
//! and the rendered prompts — on a virtual clock, much faster than real time. The call is the
//! server's `call::CallCore`, fed what the front end heard.
//!
//! The recording is the caller's side from the moment the call is answered: a caller who talks
//! over the greeting interrupts it (barge-in), as on a live call. The run ends when the tape is
//! over and the IVR has finished its reply and waits for the caller (who, being a tape, says no
//! more), or when the flow hangs up or transfers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::call::Args;
use crate::asr::{EndpointEvent, Mode, Pipeline, Recognizer};
use crate::audio::resample::resample;
use crate::call::transfer::BridgeConfig;
use crate::call::{CallConfig, CallCore, CallInput, Effect};
use crate::flow::tty::Channel;
use crate::flow::{self, FlowConfig, Heard};
use crate::rtp::codec::{ulaw_decode, ulaw_encode};
use crate::speech::tts::read_wav;
use crate::types::{Codec, Lang};

const FRAME: Duration = Duration::from_millis(20);
/// A run stops after this much virtual time whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Where the playback is: what plays and when it ends (virtual time).
struct Playing {
    ends_at: Instant,
}

pub fn run_voice(args: &Args) -> anyhow::Result<serde_json::Value> {
    let wall = Instant::now();
    let mut config = super::load_config(args.config.as_deref())?;
    config.paths.prompts_dir = args.prompts.clone();
    config.paths.grammars_dir = args.grammars.clone();
    let start_lang = match args.lang.as_deref() {
        Some(code) => Some(
            Lang::from_code(code)
                .with_context(|| format!("unknown language {code:?} (en or es)"))?,
        ),
        None => None,
    };
    let input = read_wav(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let rate = args
        .rate
        .unwrap_or(if input.rate >= 16000 { 16000 } else { 8000 });
    if rate != 8000 && rate != 16000 {
        bail!("--rate must be 8000 or 16000");
    }
    let mut tape = resample(&input.samples, input.rate, rate);
    if rate == 8000 && args.g711 != "none" {
        // The PSTN path: band-limited and through the codec.
        for s in &mut tape {
            *s = ulaw_decode(ulaw_encode(*s));
        }
    }

    // Where the caller starts each stretch of speech (first frame above -40 dBFS after 300 ms
    // of quiet), to time barge-in from the caller's side.
    let onsets: Vec<u64> = {
        let n = (rate / 50) as usize;
        let mut out = Vec::new();
        let mut quiet = 15usize;
        for (i, f) in tape.chunks(n).enumerate() {
            let rms =
                (f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / f.len() as f64).sqrt();
            if rms > 330.0 {
                if quiet >= 15 {
                    out.push(i as u64 * 20);
                }
                quiet = 0;
            } else {
                quiet += 1;
            }
        }
        out
    };
    let nlu = Arc::new(crate::server::load_grammars(&config.paths.grammars_dir)?);
    let t = Instant::now();
    let engines = crate::server::load_engines(&config, &nlu)?;
    let load_ms = t.elapsed().as_millis() as u64;
    let prompts = crate::server::load_prompts(&config, None)?;

    let speech: std::collections::HashSet<Lang> = engines.languages();
    if speech.is_empty() {
        bail!("no speech recognizer is configured ([asr]); nothing can be heard");
    }
    let flow_config = FlowConfig {
        speech,
        start_lang,
        question_silence_ms: config.asr.trailing_silence_ms,
        choice_silence_ms: config.asr.trailing_silence_ms.min(500),
        no_input_timeout: Duration::from_secs(config.calls.no_input_timeout_secs),
        max_retries: config.calls.max_retries,
        ..FlowConfig::default()
    };
    let origin = Instant::now();
    // The call core a voice call runs in the server (no TTY texts: it stays a voice call).
    let mut call = CallCore::new(
        origin,
        CallConfig {
            flow: flow_config,
            tty: false,
            tty_config: Default::default(),
            tty_prompts: Err(Vec::new()),
            nlu: nlu.clone(),
            caller_id: None,
            tty_transfers: Arc::new(HashSet::new()),
            tty_queue_uri: String::new(),
            bridge: BridgeConfig::default(),
            codec: if rate == 8000 {
                Codec::Pcmu
            } else {
                Codec::Opus
            },
            text: None,
        },
    );
    let mut now = origin;
    let frame_samples = (rate / 50) as usize;
    let mut pipeline: Option<(Lang, Pipeline)> = None;
    let mut listening: Option<(Lang, Mode)> = None;
    let mut recognizers: HashMap<(Lang, Mode), Box<dyn Recognizer>> = HashMap::new();
    let mut active: Option<(Lang, Mode)> = None;
    let mut playing: Option<Playing> = None;
    let mut pos = 0usize;
    let mut tape_done = false;
    let mut ended = false;
    let mut utterances: Vec<serde_json::Value> = Vec::new();
    let mut speech_started_at: Option<Duration> = None;
    let mut barge_ins: Vec<u64> = Vec::new();
    let mut recognize_wall_ms: Vec<f64> = Vec::new();
    let mut audio_fed_ms = 0u64;
    let mut actions_done: Vec<String> = Vec::new();
    let mut heard_last: Option<Heard> = None;

    call.handle(now, CallInput::Start);
    while now - origin < RUN_LIMIT && !ended {
        // The flow's actions.
        while let Some(effect) = call.poll_effect() {
            match effect {
                Effect::Play { prompts: refs } => {
                    let ms: u64 = refs
                        .iter()
                        .map(|p| match &p.text {
                            // Rendered during live calls only: about 15 characters a second.
                            Some(t) => t.len() as u64 * 1000 / 15,
                            None => prompts.get(p.lang, &p.id).map_or(0, |e| e.duration_ms()),
                        })
                        .sum();
                    playing = Some(Playing {
                        ends_at: now + Duration::from_millis(ms),
                    });
                }
                Effect::StopPlayback => {
                    let stopped = playing.take().is_some();
                    if stopped && speech_started_at.is_some() {
                        // Barge-in: from the caller's first audible frame of this utterance to
                        // the prompt stopping.
                        let at = (now - origin).as_millis() as u64;
                        let onset = onsets
                            .iter()
                            .rev()
                            .find(|o| **o <= at)
                            .copied()
                            .unwrap_or(at);
                        barge_ins.push(at - onset);
                    }
                }
                Effect::Listen {
                    lang,
                    listen,
                    trailing_silence_ms,
                } => {
                    let Some(engine) = engines.engine(lang) else {
                        call.handle(now, CallInput::Speech(flow::Event::SpeechUnavailable));
                        continue;
                    };
                    let model_hz = engine.sample_rate_hz();
                    if !matches!(&pipeline, Some((l, _)) if *l == lang) {
                        pipeline =
                            Some((lang, Pipeline::new(rate, model_hz, config.asr.endpoint())));
                    }
                    let mode = Mode::for_listen(&nlu, lang, listen);
                    if let Some((_, p)) = pipeline.as_mut() {
                        p.listen(
                            now,
                            crate::asr::endpoint_for(
                                config.asr.endpoint(),
                                listen,
                                trailing_silence_ms,
                            ),
                        );
                    }
                    if let Some(key) = active.take()
                        && let Some(r) = recognizers.get_mut(&key)
                    {
                        r.reset();
                    }
                    listening = Some((lang, mode));
                }
                Effect::StopListening => {
                    listening = None;
                    if let Some((_, p)) = pipeline.as_mut() {
                        p.stop();
                    }
                }
                Effect::Hangup { .. } => {
                    actions_done.push("hangup".into());
                    ended = true;
                }
                Effect::PlayText { text, then, .. } => {
                    // A read-back, rendered during live calls only: about 15 characters a second;
                    // then its catalog confirmation.
                    let ms = text.expose().len() as u64 * 1000 / 15
                        + then
                            .iter()
                            .map(|p| prompts.get(p.lang, &p.id).map_or(0, |e| e.duration_ms()))
                            .sum::<u64>();
                    playing = Some(Playing {
                        ends_at: now + Duration::from_millis(ms),
                    });
                }
                Effect::StoreLink {
                    intent, channel, ..
                } => {
                    // Offline: nothing is stored or sent; the flow hears it was.
                    let how = match channel {
                        Channel::Sms => "sms",
                        Channel::Email => "email",
                    };
                    actions_done.push(format!("send_link:{how}:{intent}"));
                    call.handle(now, CallInput::LinkStored { ok: true });
                }
                Effect::Refer { context, .. } => {
                    let intent = context
                        .split(';')
                        .find_map(|kv| kv.strip_prefix("intent="))
                        .unwrap_or_default();
                    actions_done.push(format!("transfer:{intent}"));
                    ended = true;
                }
                Effect::RecordConsent => actions_done.push("consent:text_ahead".into()),
                // A voice call without TTY texts or a trunk: nothing else comes.
                _ => {}
            }
        }
        if ended {
            break;
        }
        if playing.as_ref().is_some_and(|p| p.ends_at <= now) {
            playing = None;
            call.handle(now, CallInput::PlaybackDone);
            continue;
        }
        if call.poll_timeout().is_some_and(|t| t <= now) {
            call.handle_timeout(now);
            continue;
        }
        // The tape is over, the IVR has answered and waits: the caller hangs up.
        let waiting = playing.is_none() && call.poll_timeout().is_some();
        if tape_done && waiting && active.is_none() {
            call.handle(now, CallInput::RemoteHangup);
            break;
        }

        // One frame of the caller.
        let mut frame = vec![0i16; frame_samples];
        if pos < tape.len() {
            let end = (pos + frame_samples).min(tape.len());
            frame[..end - pos].copy_from_slice(&tape[pos..end]);
            pos = end;
        } else {
            tape_done = true;
        }
        if let Some((_, p)) = pipeline.as_mut() {
            p.handle_frame(now, &frame);
            while let Some(ev) = p.poll_event() {
                match ev {
                    EndpointEvent::SpeechStart => {
                        let Some(key) = listening.clone() else {
                            continue;
                        };
                        if !recognizers.contains_key(&key) {
                            let engine = engines
                                .engine(key.0)
                                .context("the recognizer's language vanished")?;
                            let r = engine
                                .recognizer(&key.1)
                                .map_err(|e| anyhow::anyhow!("recognizer: {e}"))?;
                            recognizers.insert(key.clone(), r);
                        }
                        active = Some(key);
                        speech_started_at = Some(now - origin);
                        call.handle(now, CallInput::Speech(flow::Event::SpeechStart));
                    }
                    EndpointEvent::Audio(pcm) => {
                        if let Some(r) = active.as_ref().and_then(|k| recognizers.get_mut(k)) {
                            audio_fed_ms += pcm.len() as u64 * 1000 / r.sample_rate_hz() as u64;
                            let t = Instant::now();
                            r.accept(&pcm);
                            recognize_wall_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    EndpointEvent::EndOfUtterance { reason } => {
                        let Some(key) = active.take() else { continue };
                        let Some(r) = recognizers.get_mut(&key) else {
                            continue;
                        };
                        let t = Instant::now();
                        let transcript = r.finish();
                        let finish_ms = t.elapsed().as_secs_f64() * 1000.0;
                        let heard = Heard::understand_spoken(
                            &nlu,
                            key.0,
                            &transcript.text,
                            transcript.evidence(),
                        );
                        utterances.push(serde_json::json!({
                            "text": transcript.text,
                            "lang": key.0,
                            "mode": match key.1 { Mode::Domain => "question", Mode::Grammar(_) => "choices", Mode::Sequence { .. } => "sequence" },
                            "start_ms": speech_started_at.map(|d| d.as_millis() as u64),
                            "end_ms": (now - origin).as_millis() as u64,
                            "end": format!("{reason:?}").to_lowercase(),
                            "finish_ms": (finish_ms * 10.0).round() / 10.0,
                            "act": heard.act,
                            "digit": heard.digit.map(String::from),
                            "intent": heard.intent,
                            "confidence": heard.confidence,
                            "nlu_confidence": heard.confidence,
                            "asr_confidence": transcript.confidence,
                            "decision": heard.decision,
                        }));
                        heard_last = Some(heard.clone());
                        call.handle(now, CallInput::Speech(flow::Event::Heard(heard)));
                    }
                    EndpointEvent::NoInput => {}
                }
            }
        }
        now += FRAME;
    }

    let record = call.flow().record();
    let said: Vec<serde_json::Value> = record
        .prompts
        .iter()
        .map(|p| {
            let text = prompts
                .get(p.lang, &p.id)
                .map(|e| e.display.clone())
                .unwrap_or_default();
            serde_json::json!({"id": p.id, "lang": p.lang, "text": text})
        })
        .collect();
    let mut actions = record.actions.clone();
    for a in actions_done {
        if !actions.contains(&a) {
            actions.push(a);
        }
    }
    let virtual_ms = (now - origin).as_millis() as u64;
    let wall_ms = wall.elapsed().as_millis() as u64;
    let recognize_ms: f64 = recognize_wall_ms.iter().sum();
    let backends: serde_json::Map<String, serde_json::Value> = engines
        .backends()
        .into_iter()
        .map(|(l, b)| (l.code().to_string(), b.to_string().into()))
        .collect();
    Ok(serde_json::json!({
        "file": args.file.display().to_string(),
        "rate": rate,
        "backends": backends,
        "transcripts": record.transcripts,
        "intent": record.intents.last(),
        "intents": record.intents,
        "confidence": record.confidence.or(heard_last.as_ref().map(|h| h.confidence)),
        "understood": record.understood,
        "nlu_confidence": record.understood.last().map(|u| u.nlu_confidence),
        "asr_confidence": record.understood.last().and_then(|u| u.asr_confidence),
        "decision": record.understood.last().map(|u| u.decision),
        "lang": record.lang,
        "prompts": said,
        "actions": actions,
        "outcome": record.outcome,
        "utterances": utterances,
        "timings": {
            "audio_ms": (tape.len() as u64) * 1000 / u64::from(rate),
            "virtual_ms": virtual_ms,
            "wall_ms": wall_ms,
            "recognizer_load_ms": load_ms,
            "speech_fed_ms": audio_fed_ms,
            "recognize_ms": (recognize_ms * 10.0).round() / 10.0,
            "rtf": if audio_fed_ms > 0 { recognize_ms / audio_fed_ms as f64 } else { 0.0 },
            "barge_in_ms": barge_ins,
            "trailing_silence_ms": config.asr.trailing_silence_ms,
        },
    }))
}
