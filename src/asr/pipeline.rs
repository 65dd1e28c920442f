//! The per-call front end the media task runs (sans-IO, cheap): decoded PCM at the codec's rate
//! → the model's rate → [`Endpointer`]. Its `Audio` events are what the worker pool feeds the
//! recognizer; the media task itself never recognizes.

use std::time::Instant;

use super::endpoint::{EndpointConfig, EndpointEvent, Endpointer};
use crate::audio::resample::{Downsampler2x, Upsampler2x, resample};

#[derive(Debug, Clone)]
enum Converter {
    Same,
    Up(Upsampler2x),
    Down(Downsampler2x),
    /// Any other pair: one-shot per frame (frame edges are not seamless; no codec we carry
    /// needs it).
    Other {
        from_hz: u32,
        to_hz: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    conv: Converter,
    buf: Vec<i16>,
    endpointer: Endpointer,
}

impl Pipeline {
    /// `in_hz`: the decoded audio's rate (8000 for G.711, 16000 for Opus here); `model_hz`:
    /// the recognizer's.
    pub fn new(in_hz: u32, model_hz: u32, cfg: EndpointConfig) -> Self {
        let conv = match (in_hz, model_hz) {
            (a, b) if a == b => Converter::Same,
            (a, b) if b == 2 * a => Converter::Up(Upsampler2x::new()),
            (a, b) if a == 2 * b => Converter::Down(Downsampler2x::new()),
            (from_hz, to_hz) => Converter::Other { from_hz, to_hz },
        };
        Pipeline {
            conv,
            buf: Vec::new(),
            endpointer: Endpointer::new(model_hz, cfg),
        }
    }

    pub fn listen(&mut self, now: Instant, cfg: EndpointConfig) {
        self.endpointer.listen(now, cfg);
    }

    pub fn stop(&mut self) {
        self.endpointer.stop();
    }

    pub fn is_listening(&self) -> bool {
        self.endpointer.is_listening()
    }

    /// One decoded frame (20 ms) from the call.
    pub fn handle_frame(&mut self, now: Instant, pcm: &[i16]) {
        match &mut self.conv {
            Converter::Same => self.endpointer.handle_frame(now, pcm),
            Converter::Up(up) => {
                self.buf.resize(pcm.len() * 2, 0);
                let n = up.process(pcm, &mut self.buf);
                self.endpointer.handle_frame(now, &self.buf[..n]);
            }
            Converter::Down(down) => {
                self.buf.resize(pcm.len() / 2 + 1, 0);
                let n = down.process(pcm, &mut self.buf);
                self.endpointer.handle_frame(now, &self.buf[..n]);
            }
            Converter::Other { from_hz, to_hz } => {
                let out = resample(pcm, *from_hz, *to_hz);
                self.endpointer.handle_frame(now, &out);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpointer.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpointer.handle_timeout(now);
    }

    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.endpointer.poll_event()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn narrowband_speech_reaches_the_recognizer_at_16k() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(8000, 16000, EndpointConfig::default());
        p.listen(t0, EndpointConfig::default());
        let mut audio: Vec<i16> = vec![3; 8000];
        audio.extend((0..8000).map(|i| (8000.0 * (i as f64 * 0.157).sin()) as i16));
        audio.extend(vec![3; 16000]);
        let mut fed = 0usize;
        let mut ended = false;
        for (i, f) in audio.chunks(160).enumerate() {
            p.handle_frame(t0 + Duration::from_millis(20 * i as u64), f);
            while let Some(e) = p.poll_event() {
                match e {
                    EndpointEvent::Audio(a) => fed += a.len(),
                    EndpointEvent::EndOfUtterance { .. } => ended = true,
                    _ => {}
                }
            }
        }
        assert!(ended);
        // 0.3 s pre-roll + 1 s + 0.7 s silence, at 16 kHz.
        assert!((30_000..=34_000).contains(&fed), "{fed}");
        // Odd rates and lengths do not panic.
        let mut q = Pipeline::new(11025, 16000, EndpointConfig::default());
        q.handle_frame(t0, &[1, 2, 3]);
        let mut r = Pipeline::new(16000, 8000, EndpointConfig::default());
        r.handle_frame(t0, &[1, 2, 3]);
        assert!(!r.is_listening());
    }
}
