//! G.711 golden values: decision levels from the ITU-T G.711 tables, the G.191 reference
//! arithmetic, and agreement with sox (when installed) over every 16-bit input and every code.
//!
//! sox quantises differently at one point only: it first ROUNDS the 16-bit sample to 14 bits
//! (µ-law) or 13 bits (A-law), and its µ-law uses sign-magnitude of that rounded value, where
//! G.191 truncates and uses one's complement. The test maps each input through sox's rounding
//! into the equivalent G.191 input and then demands byte-exact equality on all 65,536 inputs,
//! and reports how many raw codes differ (all at decision boundaries, by one step).

use std::path::PathBuf;
use std::process::Command;

use ivr::rtp::codec::{ALAW_DECODE, ULAW_DECODE, alaw_encode, ulaw_encode};

#[test]
fn itu_decision_levels_and_edges() {
    // µ-law, 14-bit decision values ×4: top segment edge 7903 and maximum 8159.
    assert_eq!(ulaw_encode(0), 0xFF);
    assert_eq!(ulaw_encode(-1), 0x7F);
    assert_eq!(ulaw_encode(3), 0xFF);
    assert_eq!(ulaw_encode(4), 0xFE); // 14-bit 1 is the first decision value
    assert_eq!(ulaw_encode(7902 * 4), 0x81);
    assert_eq!(ulaw_encode(7903 * 4), 0x80);
    assert_eq!(ulaw_encode(8159 * 4), 0x80);
    assert_eq!(ulaw_encode(32767), 0x80);
    assert_eq!(ulaw_encode(-8159 * 4), 0x00);
    assert_eq!(ulaw_encode(-32767), 0x00);
    assert_eq!(ulaw_encode(-32768), 0x00);
    // Segment boundary 31/95 (14-bit): codes 0xF0 | 0xEF.
    assert_eq!(ulaw_encode(30 * 4), 0xF0);
    assert_eq!(ulaw_encode(31 * 4), 0xEF);
    assert_eq!(ULAW_DECODE[0xFF], 0);
    assert_eq!(ULAW_DECODE[0x80], 32124);
    assert_eq!(ULAW_DECODE[0x00], -32124);
    assert_eq!(ULAW_DECODE[0xEF], 132);

    // A-law, 13-bit decision values ×8: top segment edge 3968, even bits inverted (0x55).
    assert_eq!(alaw_encode(0), 0xD5);
    assert_eq!(alaw_encode(-1), 0x55);
    assert_eq!(alaw_encode(3967 * 8 + 7), 0xAB);
    assert_eq!(alaw_encode(3968 * 8), 0xAA);
    assert_eq!(alaw_encode(32767), 0xAA);
    assert_eq!(alaw_encode(-32768), 0x2A);
    assert_eq!(ALAW_DECODE[0xD5], 8);
    assert_eq!(ALAW_DECODE[0x55], -8);
    assert_eq!(ALAW_DECODE[0xAA], 32256);
    assert_eq!(ALAW_DECODE[0x2A], -32256);
    // Bits toggled by the 0x55 mask: the raw (uninverted) code of +0 would be 0x80.
    assert_eq!(alaw_encode(0) ^ 0x55, 0x80);
}

#[test]
fn round_trip_properties_over_all_inputs() {
    for x in i16::MIN..=i16::MAX {
        let u = ulaw_encode(x);
        let a = alaw_encode(x);
        // Sign is kept (zero may go either way).
        if x > 8 {
            assert!(
                ULAW_DECODE[u as usize] > 0 && ALAW_DECODE[a as usize] > 0,
                "{x}"
            );
        }
        if x < -8 {
            assert!(
                ULAW_DECODE[u as usize] < 0 && ALAW_DECODE[a as usize] < 0,
                "{x}"
            );
        }
        // Re-encoding a decoded value is stable.
        assert_eq!(
            ulaw_encode(ULAW_DECODE[u as usize]),
            u | if u == 0x7F { 0x80 } else { 0 }
        );
        assert_eq!(alaw_encode(ALAW_DECODE[a as usize]), a);
    }
}

fn sox_available() -> bool {
    Command::new("sox")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ivr-g711-{}-{name}", std::process::id()))
}

/// Runs sox on raw mono 8 kHz files with dithering off (-D), or None if it fails.
fn sox(
    input: &PathBuf,
    in_enc: &str,
    in_bits: &str,
    output: &PathBuf,
    out_enc: &str,
    out_bits: &str,
) -> Option<Vec<u8>> {
    let st = Command::new("sox")
        .args([
            "-D", "-t", "raw", "-e", in_enc, "-b", in_bits, "-r", "8000", "-c", "1",
        ])
        .arg(input)
        .args(["-t", "raw", "-e", out_enc, "-b", out_bits])
        .arg(output)
        .output()
        .ok()?;
    if !st.status.success() {
        return None;
    }
    std::fs::read(output).ok()
}

/// The G.191 input equivalent to sox's µ-law path: round to 14 bits, then sign-magnitude.
fn sox_ulaw_input(x: i16) -> i16 {
    let p = (x as i32 + 2).div_euclid(4);
    if p >= 0 {
        (x as i32 + 2).min(32767) as i16
    } else {
        (4 * p - 1).max(-32768) as i16
    }
}

/// The G.191 input equivalent to sox's A-law path: round to 13 bits.
fn sox_alaw_input(x: i16) -> i16 {
    (x as i32 + 4).min(32767) as i16
}

#[test]
fn agrees_with_sox() {
    if !sox_available() {
        println!("NOTE: sox not installed; skipping the sox comparison");
        return;
    }
    let sweep: Vec<u8> = (i16::MIN..=i16::MAX)
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let raw = tmp("sweep.raw");
    std::fs::write(&raw, &sweep).expect("temp dir is writable");
    for (enc, law) in [("u-law", 'u'), ("a-law", 'a')] {
        let out = tmp(&format!("sweep.{law}"));
        let codes = sox(&raw, "signed", "16", &out, enc, "8").expect("sox encodes");
        assert_eq!(codes.len(), 65536);
        let mut raw_diffs = 0;
        for (i, x) in (i16::MIN..=i16::MAX).enumerate() {
            let (ours, mapped) = match law {
                'u' => (ulaw_encode(x), ulaw_encode(sox_ulaw_input(x))),
                _ => (alaw_encode(x), alaw_encode(sox_alaw_input(x))),
            };
            assert_eq!(codes[i], mapped, "{enc} input {x}");
            if codes[i] != ours {
                raw_diffs += 1;
                // Only ever the neighbouring level (or the ±0 pair of µ-law); A-law codes are
                // compared with the even-bit inversion undone so neighbours differ by one.
                let unmask = |c: u8| if law == 'a' { c ^ 0x55 } else { c } as i32;
                let d = (unmask(codes[i]) - unmask(ours)).abs();
                assert!(
                    d == 1 || d == 128,
                    "{enc} {x}: sox {:#x} ours {ours:#x}",
                    codes[i]
                );
            }
        }
        println!(
            "{enc}: byte-exact after sox's rounding; {raw_diffs} of 65536 raw codes differ at decision boundaries"
        );
        assert!(raw_diffs <= 1024);
        let _ = std::fs::remove_file(&out);

        // Decoding: every code, byte-exact with no mapping at all.
        let codes_in = tmp(&format!("codes.{law}"));
        std::fs::write(&codes_in, (0..=255u8).collect::<Vec<_>>()).expect("temp dir is writable");
        let dec_out = tmp(&format!("codes.{law}.raw"));
        let pcm = sox(&codes_in, enc, "8", &dec_out, "signed", "16").expect("sox decodes");
        let table = if law == 'u' {
            &ULAW_DECODE
        } else {
            &ALAW_DECODE
        };
        for c in 0..256 {
            let s = i16::from_le_bytes([pcm[2 * c], pcm[2 * c + 1]]);
            assert_eq!(s, table[c], "{enc} code {c:#x}");
        }
        let _ = std::fs::remove_file(&codes_in);
        let _ = std::fs::remove_file(&dec_out);
    }
    let _ = std::fs::remove_file(&raw);
}
