//! Prompts already encoded into 20 ms frames per codec. Built once per catalog (start-up and
//! reload) so that playing a prompt on the media path is a copy of a ready frame per packet.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::catalog::{Catalog, Prompt};
use super::tts::{self, Pcm, Voice};
use crate::audio::resample;
use crate::rtp::codec::{Encoder, FRAME_SAMPLES_8K, FRAME_SAMPLES_16K, OPUS_MAX_PACKET};
use crate::types::{Codec, Lang};

/// One prompt, ready to send.
#[derive(Debug)]
pub struct EncodedPrompt {
    pub id: String,
    pub lang: Lang,
    /// What a reader sees (TTY, call records).
    pub display: String,
    pub barge_in: bool,
    /// Where the audio came from: "tts" or the recorded WAV's path.
    pub source: String,
    /// What the audio was made from (voice + SSML, or the recording's path, size and time):
    /// equal stamps mean the audio would be the same, so a reload can reuse it.
    pub stamp: String,
    /// 8 kHz PCM, whole frames (the last one padded with silence).
    pub pcm_8k: Box<[i16]>,
    pcmu: Box<[u8]>,
    pcma: Box<[u8]>,
    opus: Box<[Box<[u8]>]>,
}

impl EncodedPrompt {
    /// Number of 20 ms frames.
    pub fn frames(&self) -> usize {
        self.pcm_8k.len() / FRAME_SAMPLES_8K
    }

    pub fn duration_ms(&self) -> u64 {
        self.frames() as u64 * 20
    }

    /// The encoded payload of frame `index` for `codec`; `None` past the end.
    pub fn frame(&self, codec: Codec, index: usize) -> Option<&[u8]> {
        match codec {
            Codec::Pcmu => self
                .pcmu
                .get(index * FRAME_SAMPLES_8K..(index + 1) * FRAME_SAMPLES_8K),
            Codec::Pcma => self
                .pcma
                .get(index * FRAME_SAMPLES_8K..(index + 1) * FRAME_SAMPLES_8K),
            Codec::Opus => self.opus.get(index).map(|f| &f[..]),
        }
    }
}

/// Every prompt of a catalog, encoded. Immutable: a reload builds a new set and swaps it in;
/// calls keep the set they started with.
#[derive(Debug)]
pub struct PromptSet {
    prompts: HashMap<(Lang, String), Arc<EncodedPrompt>>,
    pub catalog: Catalog,
    /// The catalog's TTY and RTT texts, converted once here for every call of the set (per
    /// call, the Baudot conversion was most of a call's set-up), or the ids missing.
    pub tty: Result<Arc<crate::flow::tty::TtyPrompts>, Vec<String>>,
    /// How many prompts came from where when this set was built: previous set, cache, the
    /// package's seed, rendered now (in [`Origin`] order).
    pub origins: [usize; 4],
}

impl Default for PromptSet {
    fn default() -> Self {
        PromptSet::new(HashMap::new(), Catalog::default(), [0; 4])
    }
}

impl PromptSet {
    fn new(
        prompts: HashMap<(Lang, String), Arc<EncodedPrompt>>,
        catalog: Catalog,
        origins: [usize; 4],
    ) -> PromptSet {
        let tty = crate::flow::tty::TtyPrompts::from_catalog(&catalog).map(Arc::new);
        PromptSet {
            prompts,
            catalog,
            tty,
            origins,
        }
    }

    pub fn get(&self, lang: Lang, id: &str) -> Option<&Arc<EncodedPrompt>> {
        self.prompts.get(&(lang, id.to_string()))
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }
}

/// Voices per language and where rendered speech is cached.
#[derive(Clone, Debug)]
pub struct RenderConfig {
    pub voice_en: Voice,
    pub voice_es: Voice,
    pub cache_dir: std::path::PathBuf,
    /// Read-only prompts rendered at package time (`[paths] tts_seed_dir`): looked up after
    /// `cache_dir`, never written.
    pub seed_dir: Option<std::path::PathBuf>,
}

impl RenderConfig {
    pub fn voice(&self, lang: Lang) -> &Voice {
        match lang {
            Lang::En => &self.voice_en,
            Lang::Es => &self.voice_es,
        }
    }
}

/// Render (or load from the caches) and encode every prompt. A recorded WAV at
/// `<prompts_dir>/<lang>/audio/<id>.wav` replaces the synthetic voice. Uses `threads` workers:
/// espeak-ng runs as a process per uncached prompt.
pub fn build(
    catalog: Catalog,
    prompts_dir: &Path,
    render: &RenderConfig,
    threads: usize,
    previous: Option<&PromptSet>,
) -> Result<PromptSet, String> {
    let mut prompts = HashMap::new();
    let mut origins = [0usize; 4];
    let mut list: Vec<&Prompt> = Vec::new();
    // `tty.*` and `rtt.*` texts are typed (Baudot, real-time text), never spoken: no audio is
    // made for them.
    for p in catalog
        .iter()
        .filter(|p| !p.id.starts_with("tty.") && !p.id.starts_with("rtt."))
    {
        let reusable = previous
            .and_then(|prev| prev.get(p.lang, &p.id))
            .filter(|old| {
                old.stamp == stamp_of(p, prompts_dir, render)
                    && old.barge_in == p.barge_in
                    && old.display == p.rendered.display
            });
        match reusable {
            Some(old) => {
                prompts.insert((p.lang, p.id.clone()), old.clone());
                origins[Origin::Previous as usize] += 1;
            }
            None => list.push(p),
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Encoded> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(p) = list.get(i) else { break };
                        out.push((i, encode_prompt(p, prompts_dir, render)));
                    }
                    out
                })
            })
            .collect();
        let mut all: Vec<(usize, Encoded)> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, r)| r).collect()
    });
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok((p, origin)) => {
                prompts.insert((p.lang, p.id.clone()), Arc::new(p));
                origins[origin as usize] += 1;
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    Ok(PromptSet::new(prompts, catalog, origins))
}

/// A prompt's recording: a file under the prompts directory, or one built into the binary
/// (used only when the prompts directory does not exist, as the catalog then is the built-in one).
enum Recording {
    File(std::path::PathBuf, std::fs::Metadata),
    Builtin(std::path::PathBuf, &'static [u8]),
}

impl Recording {
    fn find(p: &Prompt, prompts_dir: &Path) -> Option<Recording> {
        if crate::assets::use_embedded(prompts_dir) {
            return crate::assets::prompt_audio(p.lang, &p.id)
                .map(|(path, bytes)| Recording::Builtin(path, bytes));
        }
        let path = prompts_dir
            .join(p.lang.code())
            .join("audio")
            .join(format!("{}.wav", p.id));
        let meta = std::fs::metadata(&path).ok()?;
        Some(Recording::File(path, meta))
    }

    fn path(&self) -> &Path {
        match self {
            Recording::File(p, _) | Recording::Builtin(p, _) => p,
        }
    }

    fn stamp(&self) -> String {
        match self {
            Recording::File(path, m) => {
                format!("wav:{}:{}:{:?}", path.display(), m.len(), m.modified().ok())
            }
            Recording::Builtin(path, bytes) => {
                format!(
                    "wav:{}:{}:{:016x}",
                    path.display(),
                    bytes.len(),
                    fnv1a(bytes)
                )
            }
        }
    }

    fn read(&self) -> std::io::Result<tts::Pcm> {
        match self {
            Recording::File(path, _) => tts::read_wav(path),
            Recording::Builtin(path, bytes) => tts::read_wav_bytes(bytes, path),
        }
    }
}

fn stamp_of(p: &Prompt, prompts_dir: &Path, render: &RenderConfig) -> String {
    stamp_with(p, Recording::find(p, prompts_dir).as_ref(), render)
}

fn stamp_with(p: &Prompt, recorded: Option<&Recording>, render: &RenderConfig) -> String {
    match recorded {
        Some(r) => r.stamp(),
        None => {
            let v = render.voice(p.lang);
            format!("tts:{}:{}:{}", v.name, v.speed, p.rendered.ssml)
        }
    }
}

/// One prompt encoded, and where its frames came from; `Err` names the file and line.
type Encoded = Result<(EncodedPrompt, Origin), String>;

fn encode_prompt(p: &Prompt, prompts_dir: &Path, render: &RenderConfig) -> Encoded {
    let recorded = Recording::find(p, prompts_dir);
    let stamp = stamp_with(p, recorded.as_ref(), render);
    let where_ = |e: String| format!("{}:{}: prompt {:?}: {e}", p.path.display(), p.line, p.id);
    let source = match &recorded {
        Some(r) => r.path().display().to_string(),
        None => "tts".to_string(),
    };
    let name = format!("enc-{:016x}.bin", fnv1a(stamp.as_bytes()));
    let frames_path = render.cache_dir.join(&name);
    let seeded = render.seed_dir.as_ref().map(|d| d.join(&name));
    for (path, origin) in [
        (Some(&frames_path), Origin::Cache),
        (seeded.as_ref(), Origin::Seed),
    ] {
        let Some(frames) = path
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|b| Frames::decode(&b))
        else {
            continue;
        };
        let prompt = frames.into_prompt(
            p.id.clone(),
            p.lang,
            p.rendered.display.clone(),
            p.barge_in,
            source,
            stamp,
        );
        return Ok((prompt, origin));
    }
    let (pcm, source) = if let Some(r) = &recorded {
        let pcm = r
            .read()
            .map_err(|e| where_(format!("{}: {e}", r.path().display())))?;
        (pcm, source)
    } else {
        let pcm = tts::render(&p.rendered.ssml, render.voice(p.lang), &render.cache_dir)
            .map_err(|e| where_(e.to_string()))?;
        (pcm, "tts".to_string())
    };
    let mut encoded = encode_pcm(
        p.id.clone(),
        p.lang,
        p.rendered.display.clone(),
        p.barge_in,
        source,
        &pcm,
    )
    .map_err(where_)?;
    encoded.stamp = stamp;
    // Best effort: a missing cache file only costs the encoding again at the next start.
    let tmp = frames_path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, Frames::encode(&encoded)).is_ok() {
        let _ = std::fs::rename(&tmp, &frames_path);
    }
    Ok((encoded, Origin::Rendered))
}

/// Where a prompt's frames came from at start-up or reload (counted in the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Kept from the previous set (unchanged since).
    Previous,
    /// The data dir's cache (`tts_cache_dir`).
    Cache,
    /// The package's read-only seed (`tts_seed_dir`).
    Seed,
    /// Synthesized or read from a recording and encoded now.
    Rendered,
}

/// Opus effort for prompts rendered at start-up. At the default (10) Opus was ~2/3 of a cold
/// start (176 prompts: 21 s on 2 cores, `perf record` of `ivr serve` on a fresh data dir).
pub const PROMPT_OPUS_COMPLEXITY: u8 = 0;

/// Encode PCM at any rate into every codec's frames.
pub fn encode_pcm(
    id: String,
    lang: Lang,
    display: String,
    barge_in: bool,
    source: String,
    pcm: &Pcm,
) -> Result<EncodedPrompt, String> {
    let mut pcm_8k = resample::resample(&pcm.samples, pcm.rate, 8000);
    let mut pcm_16k = resample::resample(&pcm.samples, pcm.rate, 16000);
    let frames = pcm_8k.len().div_ceil(FRAME_SAMPLES_8K).max(1);
    pcm_8k.resize(frames * FRAME_SAMPLES_8K, 0);
    pcm_16k.resize(frames * FRAME_SAMPLES_16K, 0);

    let mut pcmu = vec![0u8; pcm_8k.len()];
    let mut pcma = vec![0u8; pcm_8k.len()];
    let mut enc_u = Encoder::new(Codec::Pcmu).map_err(|e| format!("{e:?}"))?;
    let mut enc_a = Encoder::new(Codec::Pcma).map_err(|e| format!("{e:?}"))?;
    enc_u
        .encode(&pcm_8k, &mut pcmu)
        .map_err(|e| format!("{e:?}"))?;
    enc_a
        .encode(&pcm_8k, &mut pcma)
        .map_err(|e| format!("{e:?}"))?;

    let mut enc_o = Encoder::new(Codec::Opus).map_err(|e| format!("{e:?}"))?;
    enc_o
        .set_complexity(PROMPT_OPUS_COMPLEXITY)
        .map_err(|e| format!("{e:?}"))?;
    let mut opus = Vec::with_capacity(frames);
    let mut buf = [0u8; OPUS_MAX_PACKET];
    for chunk in pcm_16k.chunks_exact(FRAME_SAMPLES_16K) {
        let n = enc_o
            .encode(chunk, &mut buf)
            .map_err(|e| format!("{e:?}"))?;
        opus.push(buf[..n].to_vec().into_boxed_slice());
    }
    Ok(EncodedPrompt {
        id,
        lang,
        display,
        barge_in,
        source,
        stamp: String::new(),
        pcm_8k: pcm_8k.into_boxed_slice(),
        pcmu: pcmu.into_boxed_slice(),
        pcma: pcma.into_boxed_slice(),
        opus: opus.into_boxed_slice(),
    })
}

/// Frames from PCM already at 8 kHz, for prompts made during a call (`dynamic`). Opus frames
/// are made only from `pcm_16k` when given: G.711 calls never read them, and Opus encoding is
/// most of a read-back's rendering time. Without them `frame(Codec::Opus, _)` is `None`.
pub fn encode_frames(
    id: String,
    lang: Lang,
    display: String,
    barge_in: bool,
    source: String,
    mut pcm_8k: Vec<i16>,
    pcm_16k: Option<Vec<i16>>,
) -> Result<EncodedPrompt, String> {
    let frames = pcm_8k.len().div_ceil(FRAME_SAMPLES_8K).max(1);
    pcm_8k.resize(frames * FRAME_SAMPLES_8K, 0);
    let mut pcmu = vec![0u8; pcm_8k.len()];
    let mut pcma = vec![0u8; pcm_8k.len()];
    Encoder::new(Codec::Pcmu)
        .and_then(|mut e| e.encode(&pcm_8k, &mut pcmu))
        .map_err(|e| format!("{e:?}"))?;
    Encoder::new(Codec::Pcma)
        .and_then(|mut e| e.encode(&pcm_8k, &mut pcma))
        .map_err(|e| format!("{e:?}"))?;
    let mut opus = Vec::new();
    if let Some(mut pcm_16k) = pcm_16k {
        pcm_16k.resize(frames * FRAME_SAMPLES_16K, 0);
        let mut enc = Encoder::new(Codec::Opus).map_err(|e| format!("{e:?}"))?;
        // Complexity 0: on read-backs (`benches/readback.rs`) it cut a 4 s render from ~140 ms
        // to ~30 ms; at 24 kbit/s synthetic speech stays clear.
        enc.set_complexity(0).map_err(|e| format!("{e:?}"))?;
        let mut buf = [0u8; OPUS_MAX_PACKET];
        opus.reserve(frames);
        for chunk in pcm_16k.chunks_exact(FRAME_SAMPLES_16K) {
            let n = enc.encode(chunk, &mut buf).map_err(|e| format!("{e:?}"))?;
            opus.push(buf[..n].to_vec().into_boxed_slice());
        }
    }
    Ok(EncodedPrompt {
        id,
        lang,
        display,
        barge_in,
        source,
        stamp: String::new(),
        pcm_8k: pcm_8k.into_boxed_slice(),
        pcmu: pcmu.into_boxed_slice(),
        pcma: pcma.into_boxed_slice(),
        opus: opus.into_boxed_slice(),
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The encoded frames of a prompt as stored on disk beside the TTS cache, so a restart does not
/// resample and re-encode (Opus encoding dominates start-up otherwise). Format: magic, frame
/// count, 8 kHz PCM (i16 LE), µ-law, A-law, then each Opus frame as u16 LE length + bytes.
struct Frames {
    pcm_8k: Vec<i16>,
    pcmu: Vec<u8>,
    pcma: Vec<u8>,
    opus: Vec<Box<[u8]>>,
}

const FRAMES_MAGIC: &[u8; 8] = b"IVRENC01";

impl Frames {
    fn encode(p: &EncodedPrompt) -> Vec<u8> {
        let n = p.frames();
        let mut out = Vec::with_capacity(16 + n * (FRAME_SAMPLES_8K * 4 + 100));
        out.extend_from_slice(FRAMES_MAGIC);
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for s in p.pcm_8k.iter() {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&p.pcmu);
        out.extend_from_slice(&p.pcma);
        for f in p.opus.iter() {
            out.extend_from_slice(&(f.len() as u16).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    /// None for anything but a complete, well-formed file.
    fn decode(b: &[u8]) -> Option<Frames> {
        let rest = b.strip_prefix(FRAMES_MAGIC)?;
        let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let samples = n.checked_mul(FRAME_SAMPLES_8K)?;
        let mut at: usize = 4;
        let pcm = rest.get(at..at.checked_add(samples.checked_mul(2)?)?)?;
        let pcm_8k = pcm
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        at += samples * 2;
        let pcmu = rest.get(at..at + samples)?.to_vec();
        at += samples;
        let pcma = rest.get(at..at + samples)?.to_vec();
        at += samples;
        let mut opus = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let len = u16::from_le_bytes(rest.get(at..at + 2)?.try_into().ok()?) as usize;
            at += 2;
            opus.push(rest.get(at..at + len)?.to_vec().into_boxed_slice());
            at += len;
        }
        (at == rest.len()).then_some(Frames {
            pcm_8k,
            pcmu,
            pcma,
            opus,
        })
    }

    fn into_prompt(
        self,
        id: String,
        lang: Lang,
        display: String,
        barge_in: bool,
        source: String,
        stamp: String,
    ) -> EncodedPrompt {
        EncodedPrompt {
            id,
            lang,
            display,
            barge_in,
            source,
            stamp,
            pcm_8k: self.pcm_8k.into_boxed_slice(),
            pcmu: self.pcmu.into_boxed_slice(),
            pcma: self.pcma.into_boxed_slice(),
            opus: self.opus.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_damage() {
        let pcm = Pcm {
            rate: 8000,
            samples: (0..4000).map(|i| ((i * 37) % 2000) as i16 - 1000).collect(),
        };
        let p = encode_pcm("x".into(), Lang::En, "x".into(), true, "tts".into(), &pcm).unwrap();
        let bytes = Frames::encode(&p);
        let back = Frames::decode(&bytes).unwrap().into_prompt(
            "x".into(),
            Lang::En,
            "x".into(),
            true,
            "tts".into(),
            String::new(),
        );
        assert_eq!(back.frames(), p.frames());
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::Opus] {
            for i in 0..p.frames() {
                assert_eq!(back.frame(codec, i), p.frame(codec, i));
            }
        }
        assert_eq!(back.pcm_8k, p.pcm_8k);
        assert!(
            Frames::decode(&bytes[..bytes.len() - 1]).is_none(),
            "truncated"
        );
        assert!(
            Frames::decode(b"IVRENC01\xff\xff\xff\xff").is_none(),
            "absurd count"
        );
        assert!(Frames::decode(b"garbage").is_none());
    }
}
