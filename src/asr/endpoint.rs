//! Endpointing (sans-IO): which 20 ms frames a recognizer sees and when an utterance ends.
//!
//! Frames always go through the VAD (so its noise floor keeps tracking while a prompt plays);
//! while listening, the last [`EndpointConfig::preroll_ms`] of audio is kept so the recognizer
//! hears the soft start of the first word that the VAD only confirms a few frames later. Once
//! speech starts every frame is fed, the trailing silence included (the recognizer wants some
//! silence after the last word), until the silence is long enough or the utterance too long.
//!
//! Utterance times are stream times (counted in samples), so a recording gives the same events
//! as a live call; only the no-input timeout is wall time, passed in as `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::audio::vad::{Vad, VadConfig, VadEvent};

/// Per dialog state: a yes/no question can end sooner than an open question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    pub trailing_silence_ms: u32,
    pub max_utterance_ms: u32,
    pub no_input_ms: u32,
    pub preroll_ms: u32,
}

impl Default for EndpointConfig {
    /// 700 ms of silence ends an utterance (natural pauses inside a question are shorter);
    /// 10 s at most; 6 s of no input; 300 ms of pre-roll.
    fn default() -> Self {
        EndpointConfig {
            trailing_silence_ms: 700,
            max_utterance_ms: 10_000,
            no_input_ms: 6_000,
            preroll_ms: 300,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Silence,
    MaxLength,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointEvent {
    /// The caller started talking (barge-in: stop the prompt).
    SpeechStart,
    /// Audio to feed the recognizer, in order.
    Audio(Vec<i16>),
    /// Stop feeding and take the transcript.
    EndOfUtterance { reason: EndReason },
    /// Nobody spoke within the no-input time.
    NoInput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Waiting { since: Instant },
    Speech { start_ms: u64 },
}

/// The VAD's own hangover: shorter than any trailing silence we use, which is timed here.
const VAD_HANGOVER_FRAMES: u32 = 5;

#[derive(Debug, Clone)]
pub struct Endpointer {
    cfg: EndpointConfig,
    rate_hz: u32,
    vad: Vad,
    state: State,
    /// Stream time in samples.
    samples: u64,
    /// Stream time (ms) where speech last ended, while the VAD says silence.
    quiet_since_ms: Option<u64>,
    /// The pre-roll: a ring of the last `preroll_ms` of samples (`preroll_len` of them,
    /// oldest at `preroll_start`). One copy per frame into one buffer, sized when the pre-roll's
    /// length changes, not per frame.
    preroll: Vec<i16>,
    preroll_start: usize,
    preroll_len: usize,
    events: VecDeque<EndpointEvent>,
    /// Emptied frame buffers for reuse (`Audio` events given back through
    /// [`Endpointer::recycle`]): no allocation per frame in steady state.
    spare: Vec<Vec<i16>>,
}

/// Spare buffers kept: `Audio` events in flight between the endpointer and its consumer.
const SPARE_MAX: usize = 32;

impl Endpointer {
    pub fn new(rate_hz: u32, cfg: EndpointConfig) -> Self {
        let vad = VadConfig {
            hangover_frames: VAD_HANGOVER_FRAMES,
            ..VadConfig::default()
        };
        Endpointer {
            cfg,
            rate_hz: rate_hz.max(1),
            vad: Vad::new(rate_hz, vad),
            state: State::Idle,
            samples: 0,
            quiet_since_ms: None,
            preroll: Vec::new(),
            preroll_start: 0,
            preroll_len: 0,
            events: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    /// Start listening for one utterance with this dialog state's timing.
    pub fn listen(&mut self, now: Instant, cfg: EndpointConfig) {
        self.cfg = cfg;
        self.quiet_since_ms = None;
        // Speech already under way (the caller talked over the prompt) starts the utterance.
        self.state = if self.vad.is_speech() {
            self.start_speech();
            State::Speech {
                start_ms: self.ms(self.samples),
            }
        } else {
            State::Waiting { since: now }
        };
    }

    /// Stop listening; pending events are dropped.
    pub fn stop(&mut self) {
        self.state = State::Idle;
        while let Some(ev) = self.events.pop_front() {
            if let EndpointEvent::Audio(buf) = ev {
                self.recycle(buf);
            }
        }
    }

    pub fn is_listening(&self) -> bool {
        self.state != State::Idle
    }

    fn ms(&self, samples: u64) -> u64 {
        samples * 1000 / self.rate_hz as u64
    }

    /// An empty buffer, reused when one is spare.
    pub fn spare_buffer(&mut self) -> Vec<i16> {
        self.spare.pop().unwrap_or_default()
    }

    /// Takes back an emptied buffer (e.g. an `Audio` event's, once its samples are copied).
    pub fn recycle(&mut self, mut buf: Vec<i16>) {
        if self.spare.len() < SPARE_MAX && buf.capacity() > 0 {
            buf.clear();
            self.spare.push(buf);
        }
    }

    fn start_speech(&mut self) {
        self.events.push_back(EndpointEvent::SpeechStart);
        let mut audio = self.spare_buffer();
        let (older, newer) = self.preroll_parts();
        audio.reserve(older.len() + newer.len());
        audio.extend_from_slice(older);
        audio.extend_from_slice(newer);
        self.preroll_start = 0;
        self.preroll_len = 0;
        if audio.is_empty() {
            self.recycle(audio);
        } else {
            self.events.push_back(EndpointEvent::Audio(audio));
        }
    }

    fn end(&mut self, reason: EndReason) {
        self.events
            .push_back(EndpointEvent::EndOfUtterance { reason });
        self.state = State::Idle;
    }

    /// One frame of audio at the rate given to `new` (20 ms recommended).
    pub fn handle_frame(&mut self, now: Instant, frame: &[i16]) {
        if frame.is_empty() {
            return;
        }
        let vad = self.vad.process(frame);
        self.samples += frame.len() as u64;
        let now_ms = self.ms(self.samples);
        match vad {
            Some(VadEvent::SpeechEnd { end_ms }) => self.quiet_since_ms = Some(end_ms),
            Some(VadEvent::SpeechStart { .. }) => self.quiet_since_ms = None,
            None => {}
        }
        match self.state {
            State::Idle => self.keep_preroll(frame),
            State::Waiting { since } => {
                self.keep_preroll(frame);
                if matches!(vad, Some(VadEvent::SpeechStart { .. })) {
                    // The pre-roll already holds this frame.
                    self.start_speech();
                    self.state = State::Speech {
                        start_ms: now_ms.saturating_sub(self.cfg.preroll_ms as u64),
                    };
                } else {
                    self.check_no_input(now, since);
                }
            }
            State::Speech { start_ms } => {
                let mut audio = self.spare_buffer();
                audio.extend_from_slice(frame);
                self.events.push_back(EndpointEvent::Audio(audio));
                if now_ms.saturating_sub(start_ms) >= self.cfg.max_utterance_ms as u64 {
                    self.end(EndReason::MaxLength);
                } else if let Some(q) = self.quiet_since_ms
                    && !self.vad.is_speech()
                    && now_ms.saturating_sub(q) >= self.cfg.trailing_silence_ms as u64
                {
                    self.end(EndReason::Silence);
                }
            }
        }
    }

    fn keep_preroll(&mut self, frame: &[i16]) {
        let max = self.cfg.preroll_ms as usize * self.rate_hz as usize / 1000;
        if self.preroll.len() != max {
            // The pre-roll's length changed (a new dialog state's timing): keep the newest.
            let mut kept: Vec<i16> = {
                let (older, newer) = self.preroll_parts();
                older.iter().chain(newer).copied().collect()
            };
            kept.drain(..kept.len().saturating_sub(max));
            self.preroll_len = kept.len();
            kept.resize(max, 0);
            self.preroll = kept;
            self.preroll_start = 0;
        }
        if max == 0 {
            return;
        }
        let frame = &frame[frame.len().saturating_sub(max)..];
        // Write after the newest sample, wrapping; what is overwritten is the oldest.
        let end = (self.preroll_start + self.preroll_len) % max;
        let first = frame.len().min(max - end);
        self.preroll[end..end + first].copy_from_slice(&frame[..first]);
        self.preroll[..frame.len() - first].copy_from_slice(&frame[first..]);
        let len = self.preroll_len + frame.len();
        if len > max {
            self.preroll_start = (self.preroll_start + len - max) % max;
        }
        self.preroll_len = len.min(max);
    }

    /// The pre-roll's samples, oldest first, as the ring's two parts.
    fn preroll_parts(&self) -> (&[i16], &[i16]) {
        // An empty ring (capacity 0 included) has nothing to give.
        if self.preroll_len == 0 {
            return (&[], &[]);
        }
        let first = self
            .preroll_len
            .min(self.preroll.len() - self.preroll_start);
        (
            &self.preroll[self.preroll_start..self.preroll_start + first],
            &self.preroll[..self.preroll_len - first],
        )
    }

    fn check_no_input(&mut self, now: Instant, since: Instant) {
        if now.saturating_duration_since(since)
            >= Duration::from_millis(self.cfg.no_input_ms as u64)
        {
            self.events.push_back(EndpointEvent::NoInput);
            self.state = State::Idle;
        }
    }

    /// When the no-input timer fires, if it is running (media may stop arriving).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { since } => {
                Some(since + Duration::from_millis(self.cfg.no_input_ms as u64))
            }
            _ => None,
        }
    }

    /// The clock reached a timeout; early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Waiting { since } = self.state {
            self.check_no_input(now, since);
        }
    }

    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;
    const FRAME: usize = 160;

    fn tone(n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * 200.0 * i as f64 / RATE as f64).sin()) as i16
            })
            .collect()
    }

    fn silence(n: usize) -> Vec<i16> {
        // A faint deterministic noise, like a real line, so the floor is learnt.
        (0..n).map(|i| ((i * 7919 % 13) as i16) - 6).collect()
    }

    /// Feeds `audio` in 20 ms frames from `t0`, returning events with the frame index.
    fn run(
        ep: &mut Endpointer,
        t0: Instant,
        audio: &[i16],
        first: usize,
    ) -> Vec<(usize, EndpointEvent)> {
        let mut out = Vec::new();
        for (i, f) in audio.chunks(FRAME).enumerate() {
            let idx = first + i;
            ep.handle_frame(t0 + Duration::from_millis(20 * idx as u64), f);
            while let Some(e) = ep.poll_event() {
                out.push((idx, e));
            }
        }
        out
    }

    fn audio_samples(ev: &[(usize, EndpointEvent)]) -> usize {
        ev.iter()
            .map(|(_, e)| match e {
                EndpointEvent::Audio(a) => a.len(),
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn speech_is_padded_and_ends_after_trailing_silence() {
        let t0 = Instant::now();
        let mut ep = Endpointer::new(RATE, EndpointConfig::default());
        ep.listen(t0, EndpointConfig::default());
        let mut audio = silence(RATE as usize); // 1 s
        audio.extend(tone(RATE as usize, 8000.0)); // 1 s of "speech"
        audio.extend(silence(2 * RATE as usize));
        let ev = run(&mut ep, t0, &audio, 0);
        let starts: Vec<usize> = ev
            .iter()
            .filter(|(_, e)| *e == EndpointEvent::SpeechStart)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(starts.len(), 1);
        assert!((50..=53).contains(&starts[0]), "{starts:?}");
        let end = ev
            .iter()
            .find(|(_, e)| matches!(e, EndpointEvent::EndOfUtterance { .. }))
            .unwrap();
        assert_eq!(
            end.1,
            EndpointEvent::EndOfUtterance {
                reason: EndReason::Silence
            }
        );
        // Speech ends at frame 100; 700 ms of silence is 35 frames later.
        assert!((134..=137).contains(&end.0), "ended at frame {}", end.0);
        // 300 ms pre-roll + 1 s speech + 700 ms silence.
        let fed = audio_samples(&ev) as f64 / RATE as f64;
        assert!((1.9..=2.1).contains(&fed), "fed {fed} s");
        // Nothing after the end: the endpointer waits for the next `listen`.
        assert!(ev.last().unwrap().0 == end.0);
        assert!(!ep.is_listening());
    }

    #[test]
    fn no_input_and_max_length() {
        let t0 = Instant::now();
        let cfg = EndpointConfig {
            no_input_ms: 1000,
            max_utterance_ms: 2000,
            ..EndpointConfig::default()
        };
        let mut ep = Endpointer::new(RATE, cfg);
        ep.listen(t0, cfg);
        assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        ep.handle_timeout(t0 + Duration::from_millis(999));
        assert_eq!(ep.poll_event(), None);
        // Media stopped: the timer alone reports no input, once.
        ep.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(ep.poll_event(), Some(EndpointEvent::NoInput));
        ep.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(ep.poll_event(), None);

        ep.listen(t0, cfg);
        let mut audio = silence(RATE as usize / 2);
        audio.extend(tone(5 * RATE as usize, 8000.0));
        let ev = run(&mut ep, t0, &audio, 0);
        let end = ev
            .iter()
            .find(|(_, e)| matches!(e, EndpointEvent::EndOfUtterance { .. }))
            .unwrap();
        assert_eq!(
            end.1,
            EndpointEvent::EndOfUtterance {
                reason: EndReason::MaxLength
            }
        );
        let fed = audio_samples(&ev) as f64 / RATE as f64;
        assert!((1.9..=2.1).contains(&fed), "fed {fed} s");
    }

    #[test]
    fn idle_endpointer_emits_nothing_and_survives_odd_frames() {
        let t0 = Instant::now();
        let mut ep = Endpointer::new(RATE, EndpointConfig::default());
        let mut audio = tone(RATE as usize, 30000.0);
        audio.extend([i16::MIN, i16::MAX, 0, 1, 2]);
        assert!(run(&mut ep, t0, &audio, 0).is_empty());
        ep.handle_frame(t0, &[]);
        ep.handle_frame(t0, &[i16::MAX; 7]);
        assert_eq!(ep.poll_event(), None);
        // Listening while the caller is already talking starts at once (barge-in).
        let mut ep = Endpointer::new(RATE, EndpointConfig::default());
        let mut audio = silence(RATE as usize / 2);
        audio.extend(tone(3 * FRAME, 8000.0));
        assert!(run(&mut ep, t0, &audio, 0).is_empty());
        ep.listen(t0, EndpointConfig::default());
        assert_eq!(ep.poll_event(), Some(EndpointEvent::SpeechStart));
        assert!(matches!(ep.poll_event(), Some(EndpointEvent::Audio(_))));
    }

    #[test]
    fn the_preroll_is_the_newest_samples_across_wraps_and_length_changes() {
        // Samples numbered by their position in the stream: the pre-roll must be a run of
        // consecutive numbers ending at the newest.
        let mut ep = Endpointer::new(RATE, EndpointConfig::default());
        let max = 300 * RATE as usize / 1000;
        let mut next = 0u32;
        let feed = |ep: &mut Endpointer, next: &mut u32, n: usize| {
            let frame: Vec<i16> = (0..n)
                .map(|i| ((*next as usize + i) % 30_000) as i16)
                .collect();
            *next += n as u32;
            ep.keep_preroll(&frame);
        };
        let check = |ep: &Endpointer, fed: u32, want: usize| {
            let (a, b) = ep.preroll_parts();
            let got: Vec<i16> = a.iter().chain(b).copied().collect();
            assert_eq!(got.len(), want, "after {fed} samples");
            for (k, &x) in got.iter().enumerate() {
                let pos = fed as usize - want + k;
                assert_eq!(x, (pos % 30_000) as i16, "sample {k} of {want} after {fed}");
            }
        };
        feed(&mut ep, &mut next, FRAME);
        check(&ep, next, FRAME);
        for n in [FRAME, 7, 333, FRAME, max - 1, 1, FRAME * 40, 5] {
            feed(&mut ep, &mut next, n);
            check(&ep, next, max.min(next as usize));
        }
        // A frame longer than the whole pre-roll leaves only its own newest samples.
        feed(&mut ep, &mut next, max + 123);
        check(&ep, next, max);
        // A shorter pre-roll keeps the newest; a longer one keeps all it had and grows.
        let short = EndpointConfig {
            preroll_ms: 100,
            ..EndpointConfig::default()
        };
        ep.listen(Instant::now(), short);
        feed(&mut ep, &mut next, 3);
        check(&ep, next, 100 * RATE as usize / 1000);
        ep.listen(Instant::now(), EndpointConfig::default());
        feed(&mut ep, &mut next, FRAME);
        check(&ep, next, 100 * RATE as usize / 1000 + FRAME);
        // Speech takes the pre-roll out, oldest first, and empties it.
        ep.start_speech();
        assert_eq!(ep.poll_event(), Some(EndpointEvent::SpeechStart));
        let Some(EndpointEvent::Audio(a)) = ep.poll_event() else {
            panic!("no audio")
        };
        assert_eq!(a.len(), 100 * RATE as usize / 1000 + FRAME);
        assert_eq!(*a.last().unwrap(), ((next - 1) % 30_000) as i16);
        assert!(a.windows(2).all(|w| w[1] == (w[0] + 1) % 30_000));
        assert_eq!(ep.preroll_parts(), (&[][..], &[][..]));
    }
}
