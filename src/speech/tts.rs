//! Text-to-speech with the espeak-ng program (not the library: linking libespeak-ng would make
//! the binary GPL-3). Each distinct (text, voice, speed) is rendered once and kept on disk as a
//! WAV named by a hash of its inputs, so restarts and reloads only render what changed.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to run espeak-ng.
#[derive(Clone, Debug)]
pub struct Voice {
    /// espeak-ng voice name, e.g. `en-us`, `es-419`.
    pub name: String,
    /// Words per minute.
    pub speed: u32,
}

/// Mono 16-bit PCM at its native rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Pcm {
    pub rate: u32,
    pub samples: Vec<i16>,
}

/// Render SSML to PCM, using (and filling) the WAV cache in `cache_dir`.
pub fn render(ssml: &str, voice: &Voice, cache_dir: &Path) -> io::Result<Pcm> {
    let path = cache_path(ssml, voice, cache_dir);
    if let Ok(pcm) = read_wav(&path) {
        return Ok(pcm);
    }
    std::fs::create_dir_all(cache_dir)?;
    // Render to a temporary name and rename: a crash mid-render never leaves a truncated WAV
    // that a later start would trust. (espeak-ng's --stdout WAV header has a wrong length, so
    // it writes a file with -w.)
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let out = Command::new("espeak-ng")
        .arg("-m")
        .arg("-v")
        .arg(&voice.name)
        .arg("-s")
        .arg(voice.speed.to_string())
        .arg("-w")
        .arg(&tmp)
        .arg("--")
        .arg(ssml)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run espeak-ng: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io::Error::other(format!(
            "espeak-ng failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let pcm = read_wav(&tmp)?;
    std::fs::rename(&tmp, &path)?;
    Ok(pcm)
}

/// The cache file for these inputs. The hash is FNV-1a 64: stable across builds and platforms
/// (std's SipHash keys are randomized per process).
pub fn cache_path(ssml: &str, voice: &Voice, cache_dir: &Path) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in voice
        .name
        .bytes()
        .chain([0])
        .chain(voice.speed.to_le_bytes())
        .chain(ssml.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    cache_dir.join(format!("{h:016x}.wav"))
}

/// Read a mono or stereo WAV (8/16/24/32-bit integer or 32-bit float) as mono i16.
pub fn read_wav(path: &Path) -> io::Result<Pcm> {
    let file = std::fs::File::open(path)?;
    read_wav_from(io::BufReader::new(file), path)
}

/// `read_wav` of a WAV held in memory (a recording built into the binary); `name` for errors.
pub fn read_wav_bytes(bytes: &[u8], name: &Path) -> io::Result<Pcm> {
    read_wav_from(io::Cursor::new(bytes), name)
}

fn read_wav_from<R: io::Read>(input: R, path: &Path) -> io::Result<Pcm> {
    let mut reader = hound::WavReader::new(input).map_err(to_io)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let mono: Vec<i16> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => {
            let s: Result<Vec<i16>, _> = reader.samples::<i16>().collect();
            s.map_err(to_io)?
        }
        (hound::SampleFormat::Int, bits) if bits <= 32 => {
            let shift = i32::from(bits) - 16;
            let s: Result<Vec<i32>, _> = reader.samples::<i32>().collect();
            s.map_err(to_io)?
                .into_iter()
                .map(|v| {
                    if shift >= 0 {
                        (v >> shift) as i16
                    } else {
                        (v << -shift) as i16
                    }
                })
                .collect()
        }
        (hound::SampleFormat::Float, 32) => {
            let s: Result<Vec<f32>, _> = reader.samples::<f32>().collect();
            s.map_err(to_io)?
                .into_iter()
                .map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16)
                .collect()
        }
        (fmt, bits) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: unsupported WAV format {fmt:?} {bits}-bit",
                    path.display()
                ),
            ));
        }
    };
    let samples = if channels == 1 {
        mono
    } else {
        mono.chunks(channels)
            .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16)
            .collect()
    };
    Ok(Pcm {
        rate: spec.sample_rate,
        samples,
    })
}

/// Write mono 16-bit PCM as a WAV file.
pub fn write_wav(path: &Path, pcm: &Pcm) -> io::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: pcm.rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(to_io)?;
    for &s in &pcm.samples {
        w.write_sample(s).map_err(to_io)?;
    }
    w.finalize().map_err(to_io)
}

fn to_io(e: hound::Error) -> io::Error {
    match e {
        hound::Error::IoError(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_depend_on_every_input() {
        let d = Path::new("/c");
        let v = Voice {
            name: "en-us".into(),
            speed: 160,
        };
        let a = cache_path("<speak>hi</speak>", &v, d);
        assert_eq!(a, cache_path("<speak>hi</speak>", &v, d));
        assert_ne!(a, cache_path("<speak>ho</speak>", &v, d));
        assert_ne!(
            a,
            cache_path(
                "<speak>hi</speak>",
                &Voice {
                    speed: 170,
                    ..v.clone()
                },
                d
            )
        );
        assert_ne!(
            a,
            cache_path(
                "<speak>hi</speak>",
                &Voice {
                    name: "es-419".into(),
                    ..v
                },
                d
            )
        );
    }

    #[test]
    fn espeak_renders_speech_and_the_cache_serves_it_again() {
        let dir = std::env::temp_dir().join(format!("ivr-tts-{}", std::process::id()));
        let v = Voice {
            name: "en-us".into(),
            speed: 160,
        };
        let pcm =
            render("<speak>Thank you for calling.</speak>", &v, &dir).expect("espeak-ng installed");
        assert_eq!(pcm.rate, 22050);
        let secs = pcm.samples.len() as f64 / f64::from(pcm.rate);
        assert!((0.5..5.0).contains(&secs), "{secs} s");
        let peak = pcm
            .samples
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap_or(0);
        assert!(peak > 3000, "speech should not be silent (peak {peak})");
        assert!(cache_path("<speak>Thank you for calling.</speak>", &v, &dir).exists());
        assert_eq!(
            render("<speak>Thank you for calling.</speak>", &v, &dir).unwrap(),
            pcm
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_wav_in_memory_reads_as_the_same_file_does() {
        let dir = std::env::temp_dir().join(format!("ivr-wav-bytes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.wav");
        let pcm = Pcm {
            rate: 16000,
            samples: (0..1600).map(|i| ((i * 37) % 2000 - 1000) as i16).collect(),
        };
        write_wav(&path, &pcm).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            read_wav_bytes(&bytes, &path).unwrap(),
            read_wav(&path).unwrap()
        );
        assert_eq!(read_wav_bytes(&bytes, &path).unwrap(), pcm);
        // Malformed bytes are an error, not a panic.
        assert!(read_wav_bytes(&bytes[..20], &path).is_err());
        assert!(read_wav_bytes(b"not a wav", &path).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
