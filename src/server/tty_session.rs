//! A TTY call in the server: the Baudot modem on the call's decoded audio, the
//! `flow::tty::TtyConversation` behind it, and the IVR's replies rendered to tones that the
//! call's outgoing stream plays like any prompt.

use std::sync::Arc;
use std::time::Instant;

use crate::audio::tty::{TtyDemodulator, TtyEvent, TtyModulator, TtyRxConfig, TtyTxConfig};
use crate::flow::tty::{TtyConfig, TtyConversation, TtyDetector, TtyOutput, TtyPrompts, TtyRecord};
use crate::nlu::Nlu;
use crate::pii::Pii;
use crate::types::Lang;

/// What the call task must do for the conversation.
pub enum TtyAction {
    /// Transmit these tones (8 kHz PCM); call `handle_sent` when they have been played.
    Play(Vec<i16>),
    Output(TtyOutput),
}

pub struct TtySession {
    conv: TtyConversation,
    rx: TtyDemodulator,
    tx: TtyModulator,
    /// An output that followed a line in one poll: returned after the line's `Play`.
    pending: Option<TtyOutput>,
}

impl TtySession {
    pub fn new(
        nlu: Arc<Nlu>,
        prompts: Arc<TtyPrompts>,
        lang: Lang,
        caller_id: Option<Pii<String>>,
    ) -> TtySession {
        TtySession {
            conv: TtyConversation::new(nlu, prompts, TtyConfig::default(), lang, caller_id),
            rx: TtyDemodulator::new(TtyRxConfig::default()),
            tx: TtyModulator::new(TtyTxConfig::default()),
            pending: None,
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
        while let Some(event) = self.rx.poll_event() {
            match event {
                TtyEvent::CarrierOn => self.conv.handle_carrier(now, true),
                TtyEvent::CarrierOff => self.conv.handle_carrier(now, false),
                TtyEvent::Char(c) => self.conv.handle_char(now, c),
            }
        }
    }

    /// A frame that never arrived (lost or the jitter buffer ran dry).
    pub fn handle_gap(&mut self, now: Instant, samples: usize) {
        self.rx.handle_gap(now, samples);
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

    pub fn poll_action(&mut self) -> Option<TtyAction> {
        let mut text = String::new();
        // Consecutive lines go out as one transmission (one carrier burst).
        while let Some(out) = self.conv.poll_output() {
            match out {
                TtyOutput::Type(t) => text.push_str(&t),
                other => {
                    if text.is_empty() {
                        return Some(TtyAction::Output(other));
                    }
                    // Keep the order: the line first, the action at the next poll.
                    let pcm = self.render(&text);
                    self.pending = Some(other);
                    return Some(TtyAction::Play(pcm));
                }
            }
        }
        if let Some(p) = self.pending.take() {
            return Some(TtyAction::Output(p));
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

/// Watches a voice call's audio for Baudot tones.
pub struct TtyWatch {
    rx: TtyDemodulator,
    detector: TtyDetector,
}

impl Default for TtyWatch {
    fn default() -> Self {
        TtyWatch {
            rx: TtyDemodulator::new(TtyRxConfig::default()),
            detector: TtyDetector::new(),
        }
    }
}

impl TtyWatch {
    /// True once the caller is typing on a TTY.
    pub fn handle_pcm(&mut self, now: Instant, pcm: &[i16]) -> bool {
        self.rx.handle_pcm(now, pcm);
        while let Some(event) = self.rx.poll_event() {
            self.detector.handle_event(now, event);
        }
        self.detector.is_tty()
    }

    pub fn take_chars(&mut self) -> Vec<(Instant, char)> {
        self.detector.take_chars()
    }
}
