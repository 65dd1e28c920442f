//! Audio codecs: G.711 µ-law / A-law (ITU-T G.191 reference arithmetic) and Opus (libopus).
//!
//! All encode/decode calls write into caller buffers; nothing allocates after construction.

use std::fmt;

use crate::types::Codec;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES_8K: usize = 160;
/// Samples in one 20 ms frame at 16 kHz.
pub const FRAME_SAMPLES_16K: usize = 320;
/// Largest Opus packet we produce (RFC 6716 allows 1275 bytes per frame).
pub const OPUS_MAX_PACKET: usize = 1275;

/// Codec failures. Input problems are errors, never panics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The output buffer cannot hold the result.
    OutputTooSmall { needed: usize, available: usize },
    /// The payload was empty where the codec needs data.
    EmptyPayload,
    /// libopus refused (bad packet, bad arguments, ...); the text is its reason.
    Opus(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::OutputTooSmall { needed, available } => {
                write!(
                    f,
                    "output buffer too small: need {needed}, have {available}"
                )
            }
            CodecError::EmptyPayload => f.write_str("empty payload"),
            CodecError::Opus(e) => write!(f, "opus: {e}"),
        }
    }
}

impl std::error::Error for CodecError {}

impl From<audiopus::Error> for CodecError {
    fn from(e: audiopus::Error) -> Self {
        // Only built on the error path, so the allocation is not on the steady-state hot path.
        CodecError::Opus(e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// G.711

/// G.191 `ulaw_expand` for one code.
const fn ulaw_expand(code: u8) -> i16 {
    let sign: i32 = if code < 0x80 { -1 } else { 1 };
    let mantissa = !(code as i32);
    let exponent = (mantissa >> 4) & 0x07;
    let segment = exponent + 1;
    let mantissa = mantissa & 0x0F;
    let step = 4 << segment;
    (sign * ((0x80 << exponent) + step * mantissa + step / 2 - 4 * 33)) as i16
}

/// G.191 `alaw_expand` for one code.
const fn alaw_expand(code: u8) -> i16 {
    let ix = ((code ^ 0x55) & 0x7F) as i32;
    let iexp = ix >> 4;
    let mut mant = ix & 0x0F;
    if iexp > 0 {
        mant += 16;
    }
    mant = (mant << 4) + 0x08;
    if iexp > 1 {
        mant <<= iexp - 1;
    }
    (if code > 127 { mant } else { -mant }) as i16
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_expand(i as u8)
        } else {
            ulaw_expand(i as u8)
        };
        i += 1;
    }
    t
}

/// µ-law code → linear 16-bit sample.
pub static ULAW_DECODE: [i16; 256] = build_table(false);
/// A-law code → linear 16-bit sample.
pub static ALAW_DECODE: [i16; 256] = build_table(true);

/// G.191 `ulaw_compress`: one's-complement magnitude on 14 bits, bias 33, segment search.
#[inline]
pub fn ulaw_encode(x: i16) -> u8 {
    // One's complement (not negation) is what the reference does; it keeps -32768 in range.
    let mag = if x < 0 { (!x) >> 2 } else { x >> 2 };
    let absno = (mag as i32 + 33).min(0x1FFF);
    // Segment = position of the highest set bit above bit 5.
    let mut i = absno >> 6;
    let mut segno = 1;
    while i != 0 {
        segno += 1;
        i >>= 1;
    }
    let high = 0x08 - segno;
    let low = 0x0F - ((absno >> segno) & 0x0F);
    let code = ((high << 4) | low) as u8;
    if x >= 0 { code | 0x80 } else { code }
}

/// G.191 `alaw_compress`: one's-complement magnitude on 12 bits, even-bit inversion (0x55).
#[inline]
pub fn alaw_encode(x: i16) -> u8 {
    let mut ix = (if x < 0 { (!x) >> 4 } else { x >> 4 }) as i32;
    if ix > 15 {
        let mut iexp = 1;
        while ix > 16 + 15 {
            ix >>= 1;
            iexp += 1;
        }
        ix -= 16;
        ix += iexp << 4;
    }
    if x >= 0 {
        ix |= 0x80;
    }
    (ix ^ 0x55) as u8
}

#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

/// The G.711 silence code of each law (encodes 0).
const ULAW_SILENCE: u8 = 0xFF;
const ALAW_SILENCE: u8 = 0xD5;

fn check_len(needed: usize, available: usize) -> Result<(), CodecError> {
    if available < needed {
        Err(CodecError::OutputTooSmall { needed, available })
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Unified encoder / decoder

/// An encoder for one negotiated codec. PCM is at `Codec::pcm_rate()`.
pub enum Encoder {
    Pcmu,
    Pcma,
    Opus(Box<audiopus::coder::Encoder>),
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoder::Pcmu => "Encoder::Pcmu",
            Encoder::Pcma => "Encoder::Pcma",
            Encoder::Opus(_) => "Encoder::Opus",
        })
    }
}

impl Encoder {
    pub fn new(codec: Codec) -> Result<Self, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Encoder::Pcmu,
            Codec::Pcma => Encoder::Pcma,
            Codec::Opus => {
                let mut enc = audiopus::coder::Encoder::new(
                    audiopus::SampleRate::Hz16000,
                    audiopus::Channels::Mono,
                    audiopus::Application::Voip,
                )?;
                // Wideband speech: 24 kbit/s is transparent enough for ASR and TTS prompts.
                enc.set_bitrate(audiopus::Bitrate::BitsPerSecond(24_000))?;
                Encoder::Opus(Box::new(enc))
            }
        })
    }

    /// Opus encoder complexity 0–10. Not a reliable CPU knob with this libopus: on a 16 kHz test
    /// signal `benches/media.rs` measured 64 µs/frame at 1, 146 µs at 5 and 71 µs at 10 (the
    /// default), so measure before lowering it. No-op for G.711.
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), CodecError> {
        if let Encoder::Opus(enc) = self {
            enc.set_complexity(complexity.min(10))?;
        }
        Ok(())
    }

    pub fn codec(&self) -> Codec {
        match self {
            Encoder::Pcmu => Codec::Pcmu,
            Encoder::Pcma => Codec::Pcma,
            Encoder::Opus(_) => Codec::Opus,
        }
    }

    /// Encodes one frame of PCM into `out`; returns the payload length.
    /// Opus needs a legal frame size (20 ms = 320 samples at 16 kHz).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        match self {
            Encoder::Pcmu => {
                check_len(pcm.len(), out.len())?;
                for (o, &s) in out.iter_mut().zip(pcm) {
                    *o = ulaw_encode(s);
                }
                Ok(pcm.len())
            }
            Encoder::Pcma => {
                check_len(pcm.len(), out.len())?;
                for (o, &s) in out.iter_mut().zip(pcm) {
                    *o = alaw_encode(s);
                }
                Ok(pcm.len())
            }
            Encoder::Opus(enc) => Ok(enc.encode(pcm, out)?),
        }
    }
}

/// A decoder for one negotiated codec, with packet-loss concealment.
pub enum Decoder {
    Pcmu(G711Plc),
    Pcma(G711Plc),
    Opus(Box<audiopus::coder::Decoder>),
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decoder::Pcmu(_) => "Decoder::Pcmu",
            Decoder::Pcma(_) => "Decoder::Pcma",
            Decoder::Opus(_) => "Decoder::Opus",
        })
    }
}

/// G.711 concealment state: the last good frame is replayed with a fade, then silence.
/// A fixed 20 ms history keeps it allocation-free.
#[derive(Clone)]
pub struct G711Plc {
    last: [i16; FRAME_SAMPLES_8K],
    last_len: usize,
    missing_run: u32,
}

impl G711Plc {
    fn new() -> Self {
        G711Plc {
            last: [0; FRAME_SAMPLES_8K],
            last_len: 0,
            missing_run: 0,
        }
    }

    fn remember(&mut self, pcm: &[i16]) {
        let n = pcm.len().min(FRAME_SAMPLES_8K);
        self.last[..n].copy_from_slice(&pcm[pcm.len() - n..]);
        self.last_len = n;
        self.missing_run = 0;
    }

    fn conceal(&mut self, out: &mut [i16]) -> usize {
        let n = out.len().min(FRAME_SAMPLES_8K);
        self.missing_run = self.missing_run.saturating_add(1);
        // Repeating a frame more than twice sounds robotic; after 40 ms go silent (G.711 App. I
        // attenuates over 60 ms; a cruder halving per frame is enough for an IVR).
        let gain_q8: i32 = match self.missing_run {
            1 => 256,
            2 => 128,
            _ => 0,
        };
        for (i, o) in out[..n].iter_mut().enumerate() {
            *o = if self.last_len == 0 {
                0
            } else {
                ((self.last[i % self.last_len] as i32 * gain_q8) >> 8) as i16
            };
        }
        n
    }
}

impl Decoder {
    pub fn new(codec: Codec) -> Result<Self, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Decoder::Pcmu(G711Plc::new()),
            Codec::Pcma => Decoder::Pcma(G711Plc::new()),
            Codec::Opus => Decoder::Opus(Box::new(audiopus::coder::Decoder::new(
                audiopus::SampleRate::Hz16000,
                audiopus::Channels::Mono,
            )?)),
        })
    }

    pub fn codec(&self) -> Codec {
        match self {
            Decoder::Pcmu(_) => Codec::Pcmu,
            Decoder::Pcma(_) => Codec::Pcma,
            Decoder::Opus(_) => Codec::Opus,
        }
    }

    /// Decodes one payload into `out` (PCM at `Codec::pcm_rate()`); returns samples written.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        match self {
            Decoder::Pcmu(plc) => {
                check_len(payload.len(), out.len())?;
                for (o, &c) in out.iter_mut().zip(payload) {
                    *o = ULAW_DECODE[c as usize];
                }
                plc.remember(&out[..payload.len()]);
                Ok(payload.len())
            }
            Decoder::Pcma(plc) => {
                check_len(payload.len(), out.len())?;
                for (o, &c) in out.iter_mut().zip(payload) {
                    *o = ALAW_DECODE[c as usize];
                }
                plc.remember(&out[..payload.len()]);
                Ok(payload.len())
            }
            Decoder::Opus(dec) => {
                if payload.is_empty() {
                    return Err(CodecError::EmptyPayload);
                }
                Ok(dec.decode(Some(payload), out, false)?)
            }
        }
    }

    /// Fills `out` with a concealment frame for one lost packet (20 ms at most); returns samples.
    pub fn decode_missing(&mut self, out: &mut [i16]) -> usize {
        match self {
            Decoder::Pcmu(plc) | Decoder::Pcma(plc) => plc.conceal(out),
            Decoder::Opus(dec) => {
                let n = out.len().min(FRAME_SAMPLES_16K);
                // Opus PLC wants an exact frame length; on failure fall back to silence.
                match dec.decode(None::<&[u8]>, &mut out[..n], false) {
                    Ok(k) => k,
                    Err(_) => {
                        out[..n].fill(0);
                        n
                    }
                }
            }
        }
    }
}

/// PCM samples in a 20 ms frame of `codec` at its pipeline rate (160 or 320).
pub fn frame_samples(codec: Codec) -> usize {
    codec.pcm_rate() as usize / 50
}

/// RTP timestamp ticks per 20 ms frame of `codec` (160, or 960 for Opus's 48 kHz clock).
pub fn frame_ticks(codec: Codec) -> u32 {
    codec.rtp_clock() / 50
}

/// The G.711 code for silence of `codec` (comfort fill: a 20 ms payload is
/// [`FRAME_SAMPLES_8K`] of it; µ-law's for anything not A-law).
pub fn g711_silence_code(codec: Codec) -> u8 {
    match codec {
        Codec::Pcma => ALAW_SILENCE,
        _ => ULAW_SILENCE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_codes() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(32767), 0x80);
        assert_eq!(ulaw_encode(-32768), 0x00);
        assert_eq!(ULAW_DECODE[0xFF], 0);
        assert_eq!(ULAW_DECODE[0x7F], 0);
        assert_eq!(ULAW_DECODE[0x80], 32124);
        assert_eq!(ULAW_DECODE[0x00], -32124);
        // 14-bit clip edge: 8159*4 is the last input below the top decision level.
        assert_eq!(ulaw_encode(8159 * 4), 0x80);
    }

    #[test]
    fn alaw_known_codes() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(32767), 0xAA);
        assert_eq!(alaw_encode(-32768), 0x2A);
        assert_eq!(ALAW_DECODE[0xD5], 8);
        assert_eq!(ALAW_DECODE[0x55], -8);
        assert_eq!(ALAW_DECODE[0xAA], 32256);
        assert_eq!(ALAW_DECODE[0x2A], -32256);
    }

    #[test]
    fn decode_then_encode_is_identity_on_codes() {
        for c in 0..=255u8 {
            let u = ulaw_encode(ULAW_DECODE[c as usize]);
            // 0x7F and 0xFF both decode to 0 ("negative zero"); zero re-encodes as 0xFF.
            if c == 0x7F {
                assert_eq!(u, 0xFF);
            } else {
                assert_eq!(u, c, "ulaw code {c:#x}");
            }
            assert_eq!(alaw_encode(ALAW_DECODE[c as usize]), c, "alaw code {c:#x}");
        }
    }

    #[test]
    fn encoding_is_monotonic_in_value() {
        let mut prev_u = ULAW_DECODE[ulaw_encode(-32768) as usize];
        let mut prev_a = ALAW_DECODE[alaw_encode(-32768) as usize];
        for x in -32768..=32767i32 {
            let u = ULAW_DECODE[ulaw_encode(x as i16) as usize];
            let a = ALAW_DECODE[alaw_encode(x as i16) as usize];
            assert!(u >= prev_u && a >= prev_a, "non-monotonic at {x}");
            prev_u = u;
            prev_a = a;
        }
    }

    #[test]
    fn round_trip_error_is_bounded_by_segment_step() {
        for x in (-32768..=32767i32).step_by(7) {
            let x16 = x as i16;
            let eu = (ULAW_DECODE[ulaw_encode(x16) as usize] as i32 - x).abs();
            let ea = (ALAW_DECODE[alaw_encode(x16) as usize] as i32 - x).abs();
            // Half the largest step (1024 µ-law, 1024 A-law) plus clipping headroom at the top.
            let bound = 512 + if x.abs() > 32000 { 700 } else { 0 };
            assert!(eu <= bound, "ulaw {x} err {eu}");
            assert!(ea <= bound, "alaw {x} err {ea}");
            // Small signals keep fine resolution.
            if x.abs() < 100 {
                assert!(eu <= 5 && ea <= 9, "small {x}: {eu} {ea}");
            }
        }
    }

    #[test]
    fn unified_g711_encode_decode() {
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i as f32 * 0.3).sin() * 8000.0) as i16)
            .collect();
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut enc = Encoder::new(codec).unwrap();
            let mut dec = Decoder::new(codec).unwrap();
            let mut payload = [0u8; 160];
            assert_eq!(enc.encode(&pcm, &mut payload).unwrap(), 160);
            let mut out = [0i16; 160];
            assert_eq!(dec.decode(&payload, &mut out).unwrap(), 160);
            for (a, b) in pcm.iter().zip(out.iter()) {
                assert!((*a as i32 - *b as i32).abs() < 300);
            }
            // Concealment: first a copy, then fading, then silence.
            let mut plc = [0i16; 160];
            assert_eq!(dec.decode_missing(&mut plc), 160);
            assert_eq!(&plc[..], &out[..]);
            dec.decode_missing(&mut plc);
            assert_eq!(plc[10], out[10] / 2);
            dec.decode_missing(&mut plc);
            assert!(plc.iter().all(|&s| s == 0));
            let mut small = [0u8; 10];
            assert!(matches!(
                enc.encode(&pcm, &mut small),
                Err(CodecError::OutputTooSmall { .. })
            ));
        }
    }

    #[test]
    fn opus_round_trip_and_plc() {
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut payload = [0u8; OPUS_MAX_PACKET];
        let mut out = [0i16; 1920];
        let mut energy_in = 0f64;
        let mut energy_out = 0f64;
        for f in 0..20 {
            let pcm: Vec<i16> = (0..320)
                .map(|i| {
                    let t = (f * 320 + i) as f32 / 16000.0;
                    ((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
                })
                .collect();
            let n = enc.encode(&pcm, &mut payload).unwrap();
            assert!(n > 0 && n < 200, "opus size {n}");
            let k = dec.decode(&payload[..n], &mut out).unwrap();
            assert_eq!(k, 320);
            if f >= 5 {
                energy_in += pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
                energy_out += out[..k].iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
            }
        }
        let ratio = energy_out / energy_in;
        assert!(ratio > 0.5 && ratio < 2.0, "energy ratio {ratio}");
        assert_eq!(dec.decode_missing(&mut out), 320);
        assert!(dec.decode(&[], &mut out).is_err());
        // Garbage must be an error or a decode, never a panic.
        let _ = dec.decode(&[0xFF, 0xFF, 0xFF], &mut out);
    }
}
