//! The per-call front end the media task runs (sans-IO, cheap): decoded PCM at the codec's rate
//! → [`Endpointer`] (VAD and endpointing at the codec's rate: 8 kHz for G.711) → only the audio
//! that leaves it as utterance audio (pre-roll included) is converted to the model's rate. So
//! silence costs only the VAD; the rate converter runs inside utterances, its filter state reset
//! at each utterance start and seamless across the utterance's chunks. Its `Audio` events are
//! what the worker pool feeds the recognizer; the media task itself never recognizes.

use std::time::Instant;

use super::endpoint::{EndpointConfig, EndpointEvent, Endpointer};
use crate::audio::resample::{Downsampler2x, Upsampler2x, resample};

#[derive(Debug, Clone)]
enum Converter {
    Same,
    Up(Upsampler2x),
    Down(Downsampler2x),
    /// Any other pair: one-shot per chunk (chunk edges are not seamless; no codec we carry
    /// needs it).
    Other {
        from_hz: u32,
        to_hz: u32,
    },
}

impl Converter {
    fn new(in_hz: u32, model_hz: u32) -> Self {
        match (in_hz, model_hz) {
            (a, b) if a == b => Converter::Same,
            (a, b) if b == 2 * a => Converter::Up(Upsampler2x::new()),
            (a, b) if a == 2 * b => Converter::Down(Downsampler2x::new()),
            (from_hz, to_hz) => Converter::Other { from_hz, to_hz },
        }
    }

    /// A fresh filter history: an utterance does not start with the tail of the previous one.
    fn reset(&mut self) {
        match self {
            Converter::Up(up) => *up = Upsampler2x::new(),
            Converter::Down(down) => *down = Downsampler2x::new(),
            Converter::Same | Converter::Other { .. } => {}
        }
    }

    /// Converts `pcm` into `out` (cleared first).
    fn convert(&mut self, pcm: &[i16], out: &mut Vec<i16>) {
        out.clear();
        match self {
            Converter::Same => out.extend_from_slice(pcm),
            Converter::Up(up) => {
                out.resize(pcm.len() * 2, 0);
                let n = up.process(pcm, out);
                out.truncate(n);
            }
            Converter::Down(down) => {
                out.resize(pcm.len() / 2 + 1, 0);
                let n = down.process(pcm, out);
                out.truncate(n);
            }
            Converter::Other { from_hz, to_hz } => {
                out.extend_from_slice(&resample(pcm, *from_hz, *to_hz));
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    conv: Converter,
    endpointer: Endpointer,
    /// Input samples converted to the model's rate since this pipeline was made (for tests and
    /// benches: silence must convert nothing).
    converted_samples: u64,
}

impl Pipeline {
    /// `in_hz`: the decoded audio's rate (8000 for G.711, 16000 for Opus here); `model_hz`:
    /// the recognizer's. The endpointer runs at `in_hz`.
    pub fn new(in_hz: u32, model_hz: u32, cfg: EndpointConfig) -> Self {
        Pipeline {
            conv: Converter::new(in_hz, model_hz),
            endpointer: Endpointer::new(in_hz, cfg),
            converted_samples: 0,
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

    /// One decoded frame (20 ms) from the call, at the codec's rate.
    pub fn handle_frame(&mut self, now: Instant, pcm: &[i16]) {
        self.endpointer.handle_frame(now, pcm);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpointer.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpointer.handle_timeout(now);
    }

    /// The endpointer's next event; `Audio` is at the model's rate.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        let ev = self.endpointer.poll_event()?;
        Some(match ev {
            EndpointEvent::SpeechStart => {
                self.conv.reset();
                EndpointEvent::SpeechStart
            }
            EndpointEvent::Audio(pcm) if matches!(self.conv, Converter::Same) => {
                EndpointEvent::Audio(pcm)
            }
            EndpointEvent::Audio(pcm) => {
                self.converted_samples += pcm.len() as u64;
                let mut out = self.endpointer.spare_buffer();
                self.conv.convert(&pcm, &mut out);
                self.endpointer.recycle(pcm);
                EndpointEvent::Audio(out)
            }
            other => other,
        })
    }

    /// Gives back the buffer of an `Audio` event once its samples are copied out, so steady
    /// state allocates nothing per frame (optional: a dropped buffer is only an allocation).
    pub fn recycle(&mut self, buf: Vec<i16>) {
        self.endpointer.recycle(buf);
    }

    /// Input samples converted to the model's rate so far (0 when the rates match).
    pub fn converted_samples(&self) -> u64 {
        self.converted_samples
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

    fn line_noise(n: usize) -> Vec<i16> {
        (0..n).map(|i| ((i * 7919 % 13) as i16) - 6).collect()
    }

    #[test]
    fn silence_costs_only_the_vad_and_utterances_are_converted_seamlessly() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(8000, 16000, EndpointConfig::default());
        p.listen(t0, EndpointConfig::default());
        let speech: Vec<i16> = (0..8000)
            .map(|i| (8000.0 * (i as f64 * 0.157).sin()) as i16)
            .collect();
        let mut audio = line_noise(16000); // 2 s of silence, listening
        audio.extend(&speech);
        audio.extend(line_noise(16000));
        let mut wide = Vec::new();
        let mut converted_before_speech = None;
        for (i, f) in audio.chunks(160).enumerate() {
            p.handle_frame(t0 + Duration::from_millis(20 * i as u64), f);
            if i == 99 {
                converted_before_speech = Some(p.converted_samples());
            }
            while let Some(e) = p.poll_event() {
                if let EndpointEvent::Audio(a) = e {
                    wide.extend_from_slice(&a);
                    p.recycle(a);
                }
            }
        }
        // 2 s of listening to silence: the converter never ran.
        assert_eq!(converted_before_speech, Some(0));
        // Then only the utterance (0.3 s pre-roll + 1 s + 0.7 s) was converted, at 8 kHz.
        let converted = p.converted_samples() as usize;
        assert!((15_000..=17_000).contains(&converted), "{converted}");
        assert_eq!(wide.len(), 2 * converted);
        // Chunk edges are seamless: the same as converting the utterance's audio (found by its
        // frame-aligned start) in one go with a fresh filter.
        let mut once = vec![0i16; 2 * converted];
        let start = (0..audio.len() - converted).step_by(160).find(|&s| {
            Upsampler2x::new().process(&audio[s..s + converted], &mut once);
            once == wide
        });
        assert!(
            start.is_some_and(|s| (13_000..=16_000).contains(&s)),
            "utterance audio is not the one-shot conversion of the input ({start:?})"
        );

        // Opus: the model's rate already, nothing converted.
        let mut o = Pipeline::new(16000, 16000, EndpointConfig::default());
        o.listen(t0, EndpointConfig::default());
        for (i, f) in audio.chunks(320).enumerate() {
            o.handle_frame(t0 + Duration::from_millis(20 * i as u64), f);
            while o.poll_event().is_some() {}
        }
        assert_eq!(o.converted_samples(), 0);
    }
}
