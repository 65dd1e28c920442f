//! Pass 8 kHz 16-bit mono WAVs through the band the English recognizer sees on a call: G.711
//! µ-law round trip, the media path's 2x upsampler (20 ms frames), and the recognizer's noise
//! floor; writes headerless 16 kHz little-endian PCM (`.raw`) for sphinxtrain's `sphinx_fe`.
//! Used by `scripts/adapt-8k`.
//!
//! `cargo run --example phone_band -- OUT_DIR IN.wav...`

use std::path::Path;

use ivr::asr::sphinx::noise_floor;
use ivr::audio::resample::Upsampler2x;
use ivr::rtp::codec::{ulaw_decode, ulaw_encode};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out_dir, inputs)) = args.split_first() else {
        eprintln!("usage: phone_band OUT_DIR IN.wav...");
        std::process::exit(2);
    };
    for input in inputs {
        let mut r = match hound::WavReader::open(input) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{input}: {e}");
                std::process::exit(1);
            }
        };
        let spec = r.spec();
        if spec.sample_rate != 8000 || spec.channels != 1 || spec.bits_per_sample != 16 {
            eprintln!("{input}: not 8 kHz 16-bit mono, skipped");
            continue;
        }
        let pcm: Vec<i16> = r
            .samples::<i16>()
            .map(|s| ulaw_decode(ulaw_encode(s.unwrap_or(0))))
            .collect();
        let mut up = Upsampler2x::new();
        let mut buf = vec![0i16; 320];
        let mut wide = Vec::with_capacity(pcm.len() * 2);
        for frame in pcm.chunks(160) {
            let n = up.process(frame, &mut buf);
            wide.extend_from_slice(&buf[..n]);
        }
        noise_floor(&mut wide, &mut 1);
        let stem = Path::new(input)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes: Vec<u8> = wide.iter().flat_map(|s| s.to_le_bytes()).collect();
        let out = Path::new(out_dir).join(format!("{stem}.raw"));
        if let Err(e) = std::fs::write(&out, bytes) {
            eprintln!("{}: {e}", out.display());
            std::process::exit(1);
        }
    }
}
