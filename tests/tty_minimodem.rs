//! Interop with minimodem, an independent Baudot TTY implementation: what it sends we decode
//! exactly after G.711 µ-law coding, and what we send it decodes exactly.
//!
//! minimodem must be on PATH (CI installs it: `apt-get install minimodem`); without it these
//! tests fail rather than pass silently.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ivr::audio::tty::{BAUD_50, TtyDemodulator, TtyModulator, TtyRxConfig, TtyTxConfig};

/// Letters, figures and every punctuation mark both sides encode the same way ('+' is left out:
/// minimodem sends it as ')' ).
const TEXTS: &[&str] = &[
    "WHAT IS MY CASE STATUS Q GA",
    "MY RECEIPT IS IOE1234567890 OK GA",
    "CALL 555-0199, $5.00 (A/B) #7 & 'X' \"Y\": Z; 1/2 -! WHY? GA",
];

fn minimodem() -> &'static str {
    let found = Command::new("minimodem")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "minimodem is not on PATH: install it (apt-get install minimodem) to run the TTY interop tests"
    );
    "minimodem"
}

fn temp_wav(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ivr-tty-{}-{name}.wav", std::process::id()))
}

/// G.711 µ-law encode (ITU-T G.711 with the G.191 reference bias), sign-magnitude in 8 bits.
fn ulaw_encode(pcm: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let sign = if pcm < 0 { 0x80 } else { 0 };
    let magnitude = (i32::from(pcm).abs().min(CLIP)) + BIAS;
    let exponent = (7 - (magnitude.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

fn ulaw_decode(code: u8) -> i16 {
    let code = !code;
    let exponent = i32::from((code >> 4) & 0x07);
    let mantissa = i32::from(code & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if code & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }) as i16
}

fn read_wav_8k(path: &PathBuf) -> Vec<i16> {
    let mut reader = hound::WavReader::open(path).expect("minimodem wrote a readable WAV");
    let spec = reader.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels),
        (8000, 1),
        "minimodem -R 8000 writes 8 kHz mono"
    );
    match spec.sample_format {
        hound::SampleFormat::Int => reader
            .samples::<i16>()
            .map(|s| s.expect("valid sample"))
            .collect(),
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| (s.expect("valid sample") * 32767.0) as i16)
            .collect(),
    }
}

fn decode(pcm: &[i16]) -> String {
    let mut rx = TtyDemodulator::new(TtyRxConfig::default());
    let start = Instant::now();
    let mut text = String::new();
    let silence = [0i16; 160];
    let frames = pcm.chunks(160).chain(std::iter::repeat_n(&silence[..], 50));
    for (k, frame) in frames.enumerate() {
        let coded: Vec<i16> = frame.iter().map(|&s| ulaw_decode(ulaw_encode(s))).collect();
        rx.handle_pcm(start + Duration::from_millis(20 * k as u64), &coded);
        while let Some(c) = rx.poll_char() {
            text.push(c);
        }
    }
    text
}

fn minimodem_send(text: &str, mode_args: &[&str], volume: &str, name: &str) -> Vec<i16> {
    let path = temp_wav(name);
    let mut child = Command::new(minimodem())
        .arg("--tx")
        .args(mode_args)
        .args(["-R", "8000", "-v", volume, "-f"])
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("minimodem starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin
            .write_all(text.as_bytes())
            .expect("minimodem reads its input");
    }
    assert!(
        child.wait().expect("minimodem runs").success(),
        "minimodem --tx failed"
    );
    let pcm = read_wav_8k(&path);
    let _ = std::fs::remove_file(&path);
    pcm
}

#[test]
fn we_decode_minimodem_tdd_exactly_after_ulaw() {
    for (k, text) in TEXTS.iter().enumerate() {
        // Full scale and about −30 dBm0 (minimodem's amplitude is relative to full scale).
        for volume in ["1.0", "0.022"] {
            let pcm = minimodem_send(text, &["tdd"], volume, &format!("tx{k}-{volume}"));
            assert_eq!(decode(&pcm), *text, "minimodem tdd at volume {volume}");
        }
    }
}

#[test]
fn we_decode_minimodem_with_1_5_stop_bits() {
    // What TIA-825-A TTYs send: characters 7.5 bits apart.
    let text = TEXTS[2];
    let pcm = minimodem_send(text, &["tdd", "--stopbits", "1.5"], "0.3", "tx15");
    assert_eq!(decode(&pcm), text);
}

#[test]
fn we_decode_minimodem_50_baud_exactly() {
    let text = "FIFTY BAUD 50 1.5 STOP GA";
    let args = [
        "50",
        "--baudot",
        "-M",
        "1400",
        "-S",
        "1800",
        "--stopbits",
        "1.5",
    ];
    let pcm = minimodem_send(text, &args, "0.5", "tx50");
    assert_eq!(decode(&pcm), text);
}

fn our_wav(text: &str, config: TtyTxConfig, name: &str) -> PathBuf {
    let mut tx = TtyModulator::new(config);
    tx.push_text(text).expect("test text fits the queue");
    let path = temp_wav(name);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&path, spec).expect("temp dir is writable");
    let mut frame = [0i16; 160];
    loop {
        let n = tx.fill(&mut frame);
        for &s in &frame[..n] {
            writer
                .write_sample(ulaw_decode(ulaw_encode(s)))
                .expect("write sample");
        }
        if n < frame.len() {
            break;
        }
    }
    writer.finalize().expect("finalize WAV");
    path
}

fn minimodem_receive(path: &PathBuf, mode_args: &[&str]) -> String {
    let out = Command::new(minimodem())
        .args(["--rx", "-q"])
        .args(mode_args)
        .arg("-f")
        .arg(path)
        .output()
        .expect("minimodem runs");
    assert!(
        out.status.success(),
        "minimodem --rx failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn minimodem_decodes_our_tdd_exactly() {
    for (k, text) in TEXTS.iter().enumerate() {
        for stop_bits in [1.5, 2.0] {
            for level_dbm0 in [-10.0, -30.0] {
                let config = TtyTxConfig {
                    stop_bits,
                    level_dbm0,
                    ..TtyTxConfig::default()
                };
                let path = our_wav(text, config, &format!("rx{k}-{stop_bits}-{level_dbm0}"));
                // minimodem's tdd receiver frames exactly 2 stop bits; tell it about 1.5.
                let stop = format!("{stop_bits:.1}");
                let got = minimodem_receive(&path, &["tdd", "--stopbits", &stop]);
                let _ = std::fs::remove_file(&path);
                assert_eq!(got, *text, "{stop_bits} stop bits at {level_dbm0} dBm0");
            }
        }
    }
}

#[test]
fn minimodem_decodes_our_50_baud_exactly() {
    let text = "FIFTY BAUD 50 1.5 STOP GA";
    let config = TtyTxConfig {
        baud: BAUD_50,
        stop_bits: 1.5,
        ..TtyTxConfig::default()
    };
    let path = our_wav(text, config, "rx50");
    let got = minimodem_receive(
        &path,
        &[
            "50",
            "--baudot",
            "-M",
            "1400",
            "-S",
            "1800",
            "--stopbits",
            "1.5",
        ],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(got, text);
}

#[test]
fn lowercase_and_newlines_reach_minimodem_as_tty_text() {
    let path = our_wav("case 42 ok?\nthanks ga", TtyTxConfig::default(), "rxlower");
    let got = minimodem_receive(&path, &["tdd"]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(got, "CASE 42 OK?\r\nTHANKS GA");
}
