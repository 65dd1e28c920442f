//! A TTY call, sans-IO: the Baudot modem on the call's decoded audio, the
//! `flow::tty::TtyConversation` behind it, and the IVR's replies rendered to tones (8 kHz PCM)
//! that the shell plays like any prompt. [`TtyWatch`] listens for Baudot tones on a voice call.

use std::sync::Arc;
use std::time::Instant;

use super::text_step::TextStep;
use crate::audio::tty::{TtyDemodulator, TtyEvent, TtyModulator, TtyRxConfig, TtyTxConfig};
use crate::flow::CallMode;
use crate::flow::tty::{TtyConfig, TtyConversation, TtyDetector, TtyOutput, TtyPrompts, TtyRecord};
use crate::nlu::Nlu;
use crate::pii::Pii;
use crate::rtp::inbound::Playout;
use crate::types::Lang;

/// What the call task must do for the conversation.
#[derive(Debug)]
pub enum TtyAction {
    /// Transmit these tones (8 kHz PCM); call `handle_sent` when they have been played.
    Play(Vec<i16>),
    /// What the conversation asks of the call (a `Transfer` or `Hangup` after the tones of
    /// the `Play` before it have been played).
    Step(TextStep),
}

pub struct TtySession {
    conv: TtyConversation,
    rx: TtyDemodulator,
    tx: TtyModulator,
    /// A step that followed a line in one poll: returned after the line's `Play`.
    pending: Option<TextStep>,
    /// Playout ticks in a row with nothing to play.
    dry_ticks: u32,
    /// Frames concealed (fed as erasures) and dry ticks fed as silence, for the call's log.
    concealed: u64,
    dry_gaps: u64,
}

/// Ticks with nothing to play after which the sender is taken to be silent rather than late:
/// longer than the jitter buffer's deepest re-buffering (100 ms).
const DRY_TICKS_AS_SILENCE: u32 = 10;
/// Samples of one 20 ms tick at 8 kHz.
const GAP_SAMPLES: usize = 160;

impl TtySession {
    /// `transferable`: the intents the routing policy sends to the TTY agent queue right now.
    pub fn new(
        nlu: Arc<Nlu>,
        prompts: Arc<TtyPrompts>,
        config: TtyConfig,
        lang: Lang,
        caller_id: Option<Pii<String>>,
        transferable: Arc<std::collections::HashSet<String>>,
    ) -> TtySession {
        let policy = move |intent: &str, _now: Instant| transferable.contains(intent);
        TtySession {
            conv: TtyConversation::new(nlu, prompts, config, lang, caller_id)
                .with_transfer_policy(Arc::new(policy)),
            rx: TtyDemodulator::new(TtyRxConfig::default()),
            tx: TtyModulator::new(TtyTxConfig::default()),
            pending: None,
            dry_ticks: 0,
            concealed: 0,
            dry_gaps: 0,
        }
    }

    /// Replay what a voice call's detector heard before the switch, so no word is lost.
    pub fn replay(&mut self, chars: Vec<(Instant, char)>) {
        for (at, c) in chars {
            self.conv.handle_char(at, c);
        }
    }

    /// One frame of the caller's audio (8 kHz).
    pub fn handle_pcm(&mut self, now: Instant, pcm: &[i16]) {
        self.rx.handle_pcm(now, pcm);
        self.drain_events(now);
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(event) = self.rx.poll_event() {
            match event {
                TtyEvent::CarrierOn => self.conv.handle_carrier(now, true),
                TtyEvent::CarrierOff => self.conv.handle_carrier(now, false),
                TtyEvent::Char(c) => self.conv.handle_char(now, c),
            }
        }
    }

    /// A frame that never arrived (lost, or too late for its tick): `samples` of the sender's
    /// timeline the modem must count as erased.
    pub fn handle_gap(&mut self, now: Instant, samples: usize) {
        self.rx.handle_gap(now, samples);
        self.drain_events(now);
    }

    /// One playout tick of the caller's audio (8 kHz). The modem decodes on the sender's
    /// timeline, which the jitter buffer's playout clock is not:
    /// - concealment (the last frame repeated) is not signal: the frame is an erasure;
    /// - a tick with nothing to play (the buffer ran dry and is re-buffering) is audio that is
    ///   late, not lost: it will be played, so nothing is inserted. Silence in its place (what
    ///   this did until issue #19) shifted the rest of a character by 20 ms, nearly a whole
    ///   22 ms bit, and under load turned questions into garbage. Only a sender silent for
    ///   longer than any re-buffering (`DRY_TICKS_AS_SILENCE`) moves the modem's clock on, so
    ///   a carrier that stopped with its packets is still seen to drop.
    pub fn handle_playout(&mut self, now: Instant, media: Playout, pcm: &[i16]) {
        match media {
            Playout::Audio(_) => {
                self.dry_ticks = 0;
                self.handle_pcm(now, pcm);
            }
            Playout::Concealed(n) => {
                self.dry_ticks = 0;
                self.concealed += 1;
                self.handle_gap(now, n);
            }
            Playout::Empty => {
                self.dry_ticks = self.dry_ticks.saturating_add(1);
                if self.dry_ticks > DRY_TICKS_AS_SILENCE {
                    self.dry_gaps += 1;
                    self.handle_gap(now, GAP_SAMPLES);
                }
            }
        }
    }

    /// (frames concealed, dry ticks fed as silence) so far.
    pub fn playout_counts(&self) -> (u64, u64) {
        (self.concealed, self.dry_gaps)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conv.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.conv.handle_timeout(now);
    }

    /// The tones of the last `Play` have been sent.
    pub fn handle_sent(&mut self, now: Instant) {
        self.conv.handle_sent(now);
    }

    /// Whether the link of the last `SendLink` was stored (see `TtyConversation`).
    pub fn handle_link_stored(&mut self, stored: bool) {
        self.conv.handle_link_stored(stored);
    }

    /// How the transfer of the last `Transfer` ended (see `TtyConversation`).
    pub fn handle_transfer_result(&mut self, now: Instant, ok: bool) {
        self.conv.handle_transfer_result(now, ok);
    }

    pub fn poll_action(&mut self) -> Option<TtyAction> {
        let mut text = String::new();
        // Consecutive lines go out as one transmission (one carrier burst).
        while let Some(out) = self.conv.poll_output() {
            match out {
                TtyOutput::Type(t) => text.push_str(&t),
                other => {
                    let Some(step) = TextStep::of(other, &self.conv, CallMode::Tty) else {
                        continue;
                    };
                    if text.is_empty() {
                        return Some(TtyAction::Step(step));
                    }
                    // Keep the order: the line first, the step at the next poll.
                    let pcm = self.render(&text);
                    self.pending = Some(step);
                    return Some(TtyAction::Play(pcm));
                }
            }
        }
        if let Some(step) = self.pending.take() {
            return Some(TtyAction::Step(step));
        }
        (!text.is_empty()).then(|| TtyAction::Play(self.render(&text)))
    }

    fn render(&mut self, text: &str) -> Vec<i16> {
        if let Err(e) = self.tx.push_text(text) {
            tracing::warn!(error = %e, "TTY reply truncated");
        }
        let mut pcm = Vec::new();
        let mut frame = [0i16; 160];
        loop {
            let n = self.tx.fill(&mut frame);
            pcm.extend_from_slice(&frame[..n]);
            if n < frame.len() {
                break;
            }
        }
        pcm
    }

    pub fn record(&self) -> &TtyRecord {
        self.conv.record()
    }

    pub fn is_ended(&self) -> bool {
        self.conv.is_ended()
    }

    pub fn lang(&self) -> Lang {
        self.conv.lang()
    }
}

/// Watches a voice call's audio for Baudot tones. The demodulator costs 11–19 µs per frame, a
/// voice call's whole receive path under 1 µs: so a cheap gate (two Goertzel bins, ~0.3 µs) runs
/// on every frame and the demodulator only while the line carries energy at the TTY tones, fed
/// with a short pre-roll so the first character is not lost.
pub struct TtyWatch {
    /// Made when the gate first opens: most voice calls never need one, and its rings are
    /// 64 KiB to allocate and zero at every call's set-up. (Fed nothing before the gate opens,
    /// a demodulator made then is the one made at the start.)
    rx: Option<TtyDemodulator>,
    detector: TtyDetector,
    /// The last frames heard, replayed into the demodulator when the gate opens: a ring
    /// (`preroll_len` samples ending before `preroll_end`), so a closed gate copies each frame
    /// once instead of shifting the whole window.
    preroll: [i16; PREROLL],
    preroll_len: usize,
    preroll_end: usize,
    /// Frames in a row that looked like FSK; the gate opens at `OPEN_AFTER`.
    hits: u32,
    /// The gate stays open until this many frames pass without FSK.
    open_for: u32,
}

const PREROLL: usize = 160 * 4;
const OPEN_AFTER: u32 = 2;
const HOLD_FRAMES: u32 = 100;
/// Share of a frame's energy at 1400 / 1800 Hz above which it looks like Baudot FSK.
const FSK_SHARE: f64 = 0.5;

impl Default for TtyWatch {
    fn default() -> Self {
        TtyWatch {
            rx: None,
            detector: TtyDetector::new(),
            preroll: [0; PREROLL],
            preroll_len: 0,
            preroll_end: 0,
            hits: 0,
            open_for: 0,
        }
    }
}

impl TtyWatch {
    /// True once the caller is typing on a TTY.
    pub fn handle_pcm(&mut self, now: Instant, pcm: &[i16]) -> bool {
        if fsk_share(pcm) >= FSK_SHARE {
            self.hits += 1;
            if self.hits >= OPEN_AFTER {
                if self.open_for == 0 {
                    // Opening: the demodulator first hears what came just before.
                    let mut before = [0i16; PREROLL];
                    let n = self.recall(&mut before);
                    let rx = self.rx.get_or_insert_with(new_demodulator);
                    rx.handle_pcm(now, &before[..n]);
                }
                self.open_for = HOLD_FRAMES;
            }
        } else {
            self.hits = 0;
        }
        if self.open_for > 0 {
            self.open_for -= 1;
            let rx = self.rx.get_or_insert_with(new_demodulator);
            rx.handle_pcm(now, pcm);
            while let Some(event) = rx.poll_event() {
                self.detector.handle_event(now, event);
            }
        } else {
            self.remember(pcm);
        }
        self.detector.is_tty()
    }

    /// A frame that never arrived: an erasure for the demodulator while the gate is open (its
    /// concealment would look like FSK in the wrong place), nothing otherwise.
    pub fn handle_gap(&mut self, now: Instant, samples: usize) -> bool {
        if self.open_for > 0 {
            self.open_for -= 1;
            let rx = self.rx.get_or_insert_with(new_demodulator);
            rx.handle_gap(now, samples);
            while let Some(event) = rx.poll_event() {
                self.detector.handle_event(now, event);
            }
        }
        self.detector.is_tty()
    }

    fn remember(&mut self, pcm: &[i16]) {
        let pcm = &pcm[pcm.len().saturating_sub(PREROLL)..];
        let first = pcm.len().min(PREROLL - self.preroll_end);
        let (head, tail) = pcm.split_at(first);
        self.preroll[self.preroll_end..self.preroll_end + first].copy_from_slice(head);
        self.preroll[..tail.len()].copy_from_slice(tail);
        self.preroll_end = (self.preroll_end + pcm.len()) % PREROLL;
        self.preroll_len = (self.preroll_len + pcm.len()).min(PREROLL);
    }

    /// The remembered samples, oldest first, into `out`: how many.
    fn recall(&self, out: &mut [i16; PREROLL]) -> usize {
        let start = (self.preroll_end + PREROLL - self.preroll_len) % PREROLL;
        let first = self.preroll_len.min(PREROLL - start);
        out[..first].copy_from_slice(&self.preroll[start..start + first]);
        out[first..self.preroll_len].copy_from_slice(&self.preroll[..self.preroll_len - first]);
        self.preroll_len
    }

    pub fn take_chars(&mut self) -> Vec<(Instant, char)> {
        self.detector.take_chars()
    }
}

fn new_demodulator() -> TtyDemodulator {
    TtyDemodulator::new(TtyRxConfig::default())
}

/// The share of `pcm`'s energy at the Baudot mark and space tones, in 40-sample blocks (200 Hz
/// wide bins, so ±5 % carrier error still counts). A steady FSK tone scores near 1; speech, DTMF
/// and noise spread their energy and score low. Silence scores 0.
fn fsk_share(pcm: &[i16]) -> f64 {
    let blocks = &pcm[..pcm.len() - pcm.len() % BLOCK];
    // The energy first, in integers (exact: 2^30 per sample, far from overflow): below a mean
    // square of 1,000 (about −60 dBFS) there is nothing to detect, and a line that quiet costs
    // no filtering at all.
    let total: i64 = blocks.iter().map(|&x| i64::from(x) * i64::from(x)).sum();
    if (total as f64) < 1e3 * pcm.len() as f64 {
        return 0.0;
    }
    (tone_energy(blocks) / total as f64).min(1.0)
}

/// Goertzel blocks of the gate.
const BLOCK: usize = 40;
/// 2·cos(2π f / 8000) for 1400 and 1800 Hz.
const COEFFS: [f64; 2] = [0.907_980_999_479_093_6, 0.313_836_432_130_542_4];

/// The energy of `blocks` (whole [`BLOCK`]s) at the mark and space tones, summed over blocks.
///
/// Four blocks (a 20 ms frame) at a time, their eight filters stepped together: each filter is
/// a chain of dependent multiply-adds, so one at a time waits on the latency of each step;
/// eight side by side keep the arithmetic units busy. Each filter's arithmetic is exactly what
/// it would be alone.
fn tone_energy(blocks: &[i16]) -> f64 {
    const GROUP: usize = 4;
    let mut tone = 0.0;
    for group in blocks.chunks(BLOCK * GROUP) {
        let n = group.len() / BLOCK;
        let (mut s1, mut s2) = ([0.0f64; 2 * GROUP], [0.0f64; 2 * GROUP]);
        for i in 0..BLOCK {
            for b in 0..n {
                let x = f64::from(group[b * BLOCK + i]);
                for (k, c) in COEFFS.into_iter().enumerate() {
                    let j = 2 * b + k;
                    let s0 = x + c * s1[j] - s2[j];
                    s2[j] = s1[j];
                    s1[j] = s0;
                }
            }
        }
        for b in 0..n {
            for (k, c) in COEFFS.into_iter().enumerate() {
                let (p, q) = (s1[2 * b + k], s2[2 * b + k]);
                // |X(f)|² · 2/N is the energy of a sinusoid at f in this block.
                tone += (p * p + q * q - c * p * q) * 2.0 / BLOCK as f64;
            }
        }
    }
    tone
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::tty::{TtyModulator, TtyTxConfig};

    fn baudot(text: &str) -> Vec<i16> {
        let mut tx = TtyModulator::new(TtyTxConfig::default());
        tx.push_text(text).unwrap();
        let mut out = Vec::new();
        let mut frame = [0i16; 160];
        loop {
            let n = tx.fill(&mut frame);
            out.extend_from_slice(&frame[..n]);
            if n < 160 {
                break;
            }
        }
        out
    }

    /// The gate's filters one block and one tone at a time, as written before they were
    /// stepped side by side: the same arithmetic, so the same bits.
    fn tone_energy_one_at_a_time(blocks: &[i16]) -> f64 {
        let mut tone = 0.0;
        for block in blocks.chunks_exact(BLOCK) {
            for c in COEFFS {
                let (mut s1, mut s2) = (0.0f64, 0.0f64);
                for &x in block {
                    let s0 = f64::from(x) + c * s1 - s2;
                    s2 = s1;
                    s1 = s0;
                }
                tone += (s1 * s1 + s2 * s2 - c * s1 * s2) * 2.0 / BLOCK as f64;
            }
        }
        tone
    }

    #[test]
    fn the_gates_filters_side_by_side_score_exactly_as_one_at_a_time() {
        let fsk = baudot("SIDE BY SIDE 123");
        let mut seed = 7u32;
        let noise: Vec<i16> = (0..4000)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((seed >> 16) as i16) / 64
            })
            .collect();
        // 20 ms frames, and runs of whole blocks that are not whole groups.
        for blocks in [4, 6, 5, 3, 1, 25] {
            for sig in [&fsk, &noise] {
                for f in sig.chunks_exact(blocks * BLOCK) {
                    assert_eq!(
                        tone_energy(f).to_bits(),
                        tone_energy_one_at_a_time(f).to_bits(),
                        "{} samples",
                        f.len()
                    );
                }
            }
        }
        assert_eq!(tone_energy(&[]), 0.0);
    }

    #[test]
    fn the_gate_scores_fsk_high_and_speech_like_sound_low() {
        let fsk = baudot("HELLO WORLD");
        let scores: Vec<f64> = fsk.chunks_exact(160).map(fsk_share).collect();
        let high = scores.iter().filter(|s| **s >= FSK_SHARE).count();
        assert!(
            high * 10 >= scores.len() * 9,
            "FSK frames above the gate: {high}/{}",
            scores.len()
        );
        // A buzz with many harmonics (voiced speech) and white noise.
        let buzz: Vec<i16> = (0..1600)
            .map(|i| {
                (1..30)
                    .map(|h| {
                        (2000.0 / h as f64)
                            * (2.0 * std::f64::consts::PI * 130.0 * h as f64 * i as f64 / 8000.0)
                                .sin()
                    })
                    .sum::<f64>() as i16
            })
            .collect();
        let mut seed = 1u32;
        let noise: Vec<i16> = (0..1600)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((seed >> 16) as i16) / 4
            })
            .collect();
        for (name, sig) in [("buzz", &buzz), ("noise", &noise)] {
            for f in sig.chunks_exact(160) {
                assert!(fsk_share(f) < FSK_SHARE, "{name}: {}", fsk_share(f));
            }
        }
        assert_eq!(fsk_share(&[0; 160]), 0.0);
    }

    #[test]
    fn a_voice_call_that_starts_typing_is_detected_with_its_first_words() {
        let mut watch = TtyWatch::default();
        let t0 = Instant::now();
        let mut audio = vec![0i16; 8000];
        audio.extend(baudot("HELLO THERE GA"));
        let mut detected = false;
        for (i, f) in audio.chunks(160).enumerate() {
            detected |= watch.handle_pcm(t0 + std::time::Duration::from_millis(20 * i as u64), f);
        }
        assert!(detected);
        let text: String = watch.take_chars().into_iter().map(|(_, c)| c).collect();
        assert!(
            text.contains("HELLO"),
            "the first word survives the gate: {text:?}"
        );
    }

    #[test]
    fn the_preroll_keeps_the_last_samples_in_order() {
        let mut watch = TtyWatch::default();
        let mut out = [0i16; PREROLL];
        assert_eq!(watch.recall(&mut out), 0);
        // Frames of odd sizes wrap the ring at every offset; what comes back is always the
        // newest PREROLL samples (fewer at first), oldest first.
        let mut heard: Vec<i16> = Vec::new();
        let mut next = 0i16;
        for len in [100, 160, 7, 300, 160, 1000, 33, 160, 640, 1, 159] {
            let frame: Vec<i16> = (0..len)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            watch.remember(&frame);
            heard.extend(&frame);
            let n = watch.recall(&mut out);
            assert_eq!(&out[..n], &heard[heard.len().saturating_sub(PREROLL)..]);
        }
    }

    #[test]
    fn a_quiet_line_scores_zero_without_filtering() {
        // Noise at about −65 dBFS (uniform ±33) is under the gate's floor; at about −45 dBFS
        // (±330) it is over it and scores low.
        let mut seed = 7u32;
        let mut noise = |amp: i32| -> Vec<i16> {
            (0..160)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((seed >> 16) as i32 % (2 * amp + 1) - amp) as i16
                })
                .collect()
        };
        assert_eq!(fsk_share(&noise(33)), 0.0);
        let louder = fsk_share(&noise(330));
        assert!(louder > 0.0 && louder < FSK_SHARE, "{louder}");
    }
}
