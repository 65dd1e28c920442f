//! A call's speech recognition, as the call task sees it: the per-call front end
//! ([`Pipeline`]: VAD and endpointing at the codec's rate, resampling of utterance audio only)
//! runs on the call task, every frame; recognition runs on the shared [`AsrPool`]. Utterance
//! audio goes to the pool in [`BATCH_MS`] chunks (and the rest at the end of the utterance), not
//! one job per 20 ms frame, so a slot of the pool's bounded queue holds more audio. Barge-in is
//! the VAD's decision on the call task, so batching does not delay it. This turns the flow's `Listen` into utterances on the pool and
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

/// Utterance audio handed to the pool per job: 5 frames. Bounds how much later than per-frame
/// feeding the recognizer sees audio (and partial results come), and what is left to decode
/// after the end of the utterance.
pub const BATCH_MS: u32 = 100;

/// Accumulates utterance audio into chunks of `chunk` samples. The chunk handed out is a fresh
/// `Vec` (one per chunk, which the pool's worker consumes); nothing is allocated per frame.
#[derive(Debug, Default)]
pub struct AudioBatch {
    buf: Vec<i16>,
    chunk: usize,
}

impl AudioBatch {
    /// `chunk_ms` of audio at `rate_hz` per chunk.
    pub fn new(rate_hz: u32, chunk_ms: u32) -> Self {
        let chunk = (rate_hz as usize * chunk_ms as usize / 1000).max(1);
        AudioBatch {
            buf: Vec::with_capacity(Self::capacity(chunk)),
            chunk,
        }
    }

    /// Room for a chunk plus one frame over it (a 48 kHz frame at most), so a frame that
    /// crosses the chunk size does not grow the buffer.
    fn capacity(chunk: usize) -> usize {
        chunk + 960
    }

    /// Adds audio; returns a full chunk to send (at least `chunk` samples) when there is one.
    pub fn push(&mut self, pcm: &[i16]) -> Option<Vec<i16>> {
        self.buf.extend_from_slice(pcm);
        (self.buf.len() >= self.chunk).then(|| self.take())
    }

    /// What is buffered (at the end of the utterance), if anything.
    pub fn flush(&mut self) -> Option<Vec<i16>> {
        (!self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<i16> {
        std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(Self::capacity(self.chunk)),
        )
    }

    /// Drops what is buffered (a cancelled utterance).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

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
    /// The current utterance's audio not yet handed to the pool.
    batch: AudioBatch,
    /// When the endpointer ended the current utterance (for the reply latency).
    ended_at: Option<Instant>,
    /// The closed grammar (choices) per language, built once.
    choices: HashMap<Lang, Mode>,
    results_tx: mpsc::Sender<AsrResult>,
    /// Until the shell takes it (`take_results`) to wait on it apart from the front end.
    results: Option<mpsc::Receiver<AsrResult>>,
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
            batch: AudioBatch::default(),
            ended_at: None,
            choices: HashMap::new(),
            results_tx,
            results: Some(results),
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
            self.batch = AudioBatch::new(model_hz, BATCH_MS);
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
        self.batch.clear();
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
                    self.batch.clear();
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
                    let chunk = match self.current.as_ref() {
                        Some(_) => self.batch.push(&pcm),
                        None => None,
                    };
                    p.recycle(pcm);
                    if let (Some(chunk), Some(u)) = (chunk, self.current.as_mut())
                        && u.feed(chunk).is_err()
                    {
                        self.unavailable("ASR pool overloaded while feeding");
                    }
                }
                EndpointEvent::EndOfUtterance { reason } => {
                    if let Some(mut u) = self.current.take() {
                        tracing::debug!(?reason, "end of utterance");
                        self.ended_at = Some(now);
                        if let Some(rest) = self.batch.flush()
                            && u.feed(rest).is_err()
                        {
                            self.unavailable("ASR pool overloaded while feeding");
                        } else if u.finish().is_err() {
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
        match self.results.as_mut() {
            Some(r) => r.recv().await,
            None => std::future::pending().await,
        }
    }

    /// The pool's results, for a shell that waits for them where the front end is not (the
    /// front end runs in a media thread; the call task waits for the results and hands each
    /// to `handle_result`).
    pub fn take_results(&mut self) -> Option<mpsc::Receiver<AsrResult>> {
        self.results.take()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utterance_audio_goes_to_the_pool_in_chunks_not_frames() {
        // 2.3 s of 16 kHz audio in 20 ms frames (the pre-roll arrives as one 300 ms piece).
        let mut b = AudioBatch::new(16_000, BATCH_MS);
        let mut chunks = Vec::new();
        chunks.extend(b.push(&[1; 4800]));
        let cap = b.buf.capacity();
        for i in 0..100 {
            chunks.extend(b.push(&[i as i16; 320]));
            // Steady state: the buffer is never regrown.
            assert_eq!(b.buf.capacity(), cap);
        }
        assert_eq!(b.buffered(), 0);
        assert_eq!(b.flush(), None);
        chunks.extend(b.push(&[7; 320]));
        chunks.extend(b.flush());
        // 1 pre-roll chunk + 20 of 100 ms + the 20 ms rest: 22 jobs instead of 102.
        assert_eq!(chunks.len(), 22);
        assert_eq!(chunks[0].len(), 4800);
        assert!(chunks[1..21].iter().all(|c| c.len() == 1600));
        assert_eq!(chunks[21], vec![7; 320]);
        // In order, nothing lost or duplicated.
        let all: Vec<i16> = chunks.concat();
        assert_eq!(all.len(), 4800 + 100 * 320 + 320);
        assert_eq!(&all[4800..4800 + 320], &[0; 320][..]);
        assert_eq!(&all[4800 + 99 * 320..4800 + 100 * 320], &[99; 320][..]);
        // A cancelled utterance leaves nothing behind for the next.
        assert!(b.push(&[5; 100]).is_none());
        b.clear();
        assert_eq!(b.flush(), None);
    }
}
