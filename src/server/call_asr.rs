//! A call's speech recognition, as the call task sees it: the per-call front end
//! ([`Pipeline`]: resample, VAD, endpointing) runs on the call task, every frame; recognition
//! runs on the shared [`AsrPool`]. This turns the flow's `Listen` into utterances on the pool and
//! the pool's results into flow events, and notes when each utterance ended (reply latency).
//!
//! Invariant: at most one utterance in flight per call; a new `Listen` (or `stop`) cancels it,
//! and a result for an older utterance is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::asr_pool::{AsrPool, AsrResult, Utterance};
use crate::asr::{EndpointConfig, EndpointEvent, Mode, Pipeline};
use crate::flow::{self, Heard, Listen};
use crate::nlu::Nlu;
use crate::types::Lang;

/// Results waiting for the call task: a final per utterance and a few partials.
const RESULTS_QUEUE: usize = 16;

pub struct CallAsr {
    pool: AsrPool,
    nlu: Arc<Nlu>,
    /// Unique per call on this server (the pool keys utterances by call and number).
    call: u64,
    /// The decoded audio's rate (8 kHz for G.711, 16 kHz for Opus).
    in_hz: u32,
    endpoint: EndpointConfig,
    /// The front end of the language listened in (rebuilt when the model rate changes).
    pipeline: Option<(Lang, u32, Pipeline)>,
    listening: Option<(Lang, Mode)>,
    utt: u64,
    current: Option<Utterance>,
    /// When the endpointer ended the current utterance (for the reply latency).
    ended_at: Option<Instant>,
    /// The closed grammar (choices) per language, built once.
    choices: HashMap<Lang, Mode>,
    results_tx: mpsc::Sender<AsrResult>,
    results: mpsc::Receiver<AsrResult>,
    events: VecDeque<flow::Event>,
    /// Every transcript of the call (for the record).
    pub transcripts: Vec<String>,
    /// A key tone was just heard: what the VAD takes for speech until then is the tone.
    mute_until: Option<Instant>,
    /// The endpointing of the current `listen`, to re-arm after a muted utterance.
    listen_cfg: Option<EndpointConfig>,
}

/// How long after a key tone speech is not listened for: the VAD's hangover over the tone's end.
const DTMF_MUTE: Duration = Duration::from_millis(400);

impl CallAsr {
    pub fn new(
        pool: AsrPool,
        nlu: Arc<Nlu>,
        call: u64,
        in_hz: u32,
        endpoint: EndpointConfig,
    ) -> Self {
        let (results_tx, results) = mpsc::channel(RESULTS_QUEUE);
        CallAsr {
            pool,
            nlu,
            call,
            in_hz,
            endpoint,
            pipeline: None,
            listening: None,
            utt: 0,
            current: None,
            ended_at: None,
            choices: HashMap::new(),
            results_tx,
            results,
            events: VecDeque::new(),
            transcripts: Vec::new(),
            mute_until: None,
            listen_cfg: None,
        }
    }

    /// The codec changed (re-INVITE): the front end follows the new rate.
    pub fn set_input_rate(&mut self, in_hz: u32) {
        if in_hz != self.in_hz {
            self.in_hz = in_hz;
            self.pipeline = None;
            self.stop();
        }
    }

    /// The flow's `Listen`: start (or restart) listening in `lang`.
    pub fn listen(&mut self, now: Instant, lang: Lang, listen: Listen, trailing_silence_ms: u32) {
        self.cancel();
        let Some(model_hz) = self.pool.engines().engine(lang).map(|e| e.sample_rate_hz()) else {
            // No recognizer for this language now (a reload removed it): keys only.
            self.events.push_back(flow::Event::SpeechUnavailable);
            return;
        };
        let mode = match listen {
            Listen::Keys | Listen::Choices => self
                .choices
                .entry(lang)
                .or_insert_with(|| Mode::choices(&self.nlu, lang))
                .clone(),
            other => Mode::for_listen(&self.nlu, lang, other),
        };
        let rebuild = !matches!(&self.pipeline, Some((l, hz, _)) if *l == lang && *hz == model_hz);
        if rebuild {
            self.pipeline = Some((
                lang,
                model_hz,
                Pipeline::new(self.in_hz, model_hz, self.endpoint),
            ));
        }
        // The flow keeps its own no-input timer (it starts when the prompt ends).
        let cfg = crate::asr::endpoint_for(self.endpoint, listen, trailing_silence_ms);
        if let Some((_, _, p)) = self.pipeline.as_mut() {
            p.listen(now, cfg);
        }
        self.listen_cfg = Some(cfg);
        self.listening = Some((lang, mode));
    }

    /// The flow's `StopListening`.
    pub fn stop(&mut self) {
        self.cancel();
        self.listening = None;
        if let Some((_, _, p)) = self.pipeline.as_mut() {
            p.stop();
        }
    }

    fn cancel(&mut self) {
        // Dropping an unfinished utterance cancels it on its worker; a result of it already on
        // its way no longer matches the number.
        self.current = None;
        self.utt += 1;
        self.ended_at = None;
    }

    /// A key was pressed (RFC 4733 or in-band): the tone is not speech. Whatever the VAD took for
    /// speech is dropped, and speech is not listened for until the tone's echo in the VAD is over.
    pub fn handle_dtmf(&mut self, now: Instant) {
        self.cancel();
        self.mute_until = Some(now + DTMF_MUTE);
    }

    fn muted(&self, now: Instant) -> bool {
        self.mute_until.is_some_and(|t| now < t)
    }

    /// One decoded 20 ms frame from the caller (every frame, listening or not: the VAD keeps
    /// tracking the noise floor).
    pub fn handle_frame(&mut self, now: Instant, pcm: &[i16]) {
        let Some((_, _, p)) = self.pipeline.as_mut() else {
            return;
        };
        p.handle_frame(now, pcm);
        self.drain_pipeline(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pipeline
            .as_ref()
            .and_then(|(_, _, p)| p.poll_timeout())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, _, p)) = self.pipeline.as_mut() {
            p.handle_timeout(now);
            self.drain_pipeline(now);
        }
    }

    fn drain_pipeline(&mut self, now: Instant) {
        loop {
            let Some((_, _, p)) = self.pipeline.as_mut() else {
                return;
            };
            let Some(ev) = p.poll_event() else { return };
            match ev {
                EndpointEvent::SpeechStart => {
                    let Some((lang, mode)) = self.listening.clone() else {
                        continue;
                    };
                    if self.muted(now) {
                        // The tail of a key tone: no utterance (its audio and end are ignored).
                        continue;
                    }
                    self.utt += 1;
                    match self
                        .pool
                        .begin(self.call, self.utt, lang, mode, self.results_tx.clone())
                    {
                        Ok(u) => {
                            self.current = Some(u);
                            self.events.push_back(flow::Event::SpeechStart);
                        }
                        Err(_) => self.unavailable("ASR pool overloaded at utterance start"),
                    }
                }
                EndpointEvent::Audio(pcm) => {
                    if let Some(u) = self.current.as_mut()
                        && u.feed(pcm).is_err()
                    {
                        self.unavailable("ASR pool overloaded while feeding");
                    }
                }
                EndpointEvent::EndOfUtterance { reason } => {
                    if let Some(u) = self.current.take() {
                        tracing::debug!(?reason, "end of utterance");
                        self.ended_at = Some(now);
                        if u.finish().is_err() {
                            self.unavailable("ASR pool overloaded at utterance end");
                        }
                    } else if self.listening.is_some()
                        && let (Some(cfg), Some((_, _, p))) =
                            (self.listen_cfg, self.pipeline.as_mut())
                    {
                        // A tone or a cancelled utterance ended: keep listening for speech.
                        p.listen(now, cfg);
                    }
                }
                // The flow times no-input itself.
                EndpointEvent::NoInput => {}
            }
        }
    }

    fn unavailable(&mut self, why: &str) {
        tracing::warn!("{why}: the caller is moved to the keypad");
        self.stop();
        self.events.push_back(flow::Event::SpeechUnavailable);
    }

    /// The next result from the pool (a select arm of the call task).
    pub async fn recv(&mut self) -> Option<AsrResult> {
        self.results.recv().await
    }

    /// A result from the pool: a final transcript becomes `Heard`, understood with the grammars
    /// of the language listened in.
    pub fn handle_result(&mut self, result: AsrResult) {
        match result {
            AsrResult::Final { utt, transcript } if utt == self.utt => {
                let lang = self.listening.as_ref().map(|(l, _)| *l).unwrap_or(Lang::En);
                // The transcript is the caller's words: it may hold personal data, so it is
                // logged only at debug level and never with numbers in clear.
                tracing::debug!(
                    chars = transcript.text.len(),
                    confidence = transcript.confidence,
                    "heard"
                );
                let spelled = matches!(self.listening, Some((_, Mode::Sequence { .. })));
                if !transcript.text.is_empty() {
                    // A spelled address or a number said digit by digit is personal data from
                    // the first word to the last: the record keeps only that it was given.
                    self.transcripts.push(if spelled {
                        "[spelled]".to_string()
                    } else {
                        transcript.text.clone()
                    });
                }
                let heard = Heard::understand_spoken(
                    &self.nlu,
                    lang,
                    &transcript.text,
                    transcript.evidence(),
                );
                self.events.push_back(flow::Event::Heard(heard));
            }
            AsrResult::Failed { utt, error } if utt == self.utt => {
                tracing::warn!(%error, "recognition failed");
                self.unavailable("no recognizer");
            }
            // Partials and results of cancelled utterances.
            _ => {}
        }
    }

    /// Time since the end of the utterance just answered (taken once).
    pub fn take_reply_latency(&mut self, now: Instant) -> Option<Duration> {
        self.ended_at
            .take()
            .map(|t| now.saturating_duration_since(t))
    }

    pub fn poll_event(&mut self) -> Option<flow::Event> {
        self.events.pop_front()
    }
}
