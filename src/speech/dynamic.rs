//! Dynamic prompts: text known only during a call (read-backs of a keyed number, an email
//! address) rendered on demand into the same pre-encoded frames as catalog prompts, and kept in a
//! bounded in-memory LRU keyed by (language, voice, text).
//!
//! Rendering blocks (speech synthesis, resampling, Opus encoding: tens of milliseconds), so it
//! must never run on a media task: the shell calls [`DynamicPrompts::cached`] first (a map
//! lookup, fine anywhere) and on a miss [`DynamicPrompts::render`] inside
//! `tokio::task::spawn_blocking`.
//!
//! Synthesis uses libespeak-ng in-process when the shared library can be loaded (`dlopen` of
//! `libespeak-ng.so.1`, which the `espeak-ng` package already installs: no `-dev` package, no
//! link-time dependency, and a machine without it still runs), else the `espeak-ng` program.
//! The library is not thread-safe: one global engine behind a mutex. Rendered text never goes
//! to disk (read-backs hold phone numbers), unlike catalog prompts (see `tts`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, c_char, c_int, c_short, c_uint, c_void};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Deserialize;

use super::cache::{self, EncodedPrompt};
use super::markup;
use super::tts::{Pcm, Voice};
use crate::types::{Codec, Lang};

/// `[tts.dynamic]`: on-demand rendering of read-backs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicConfig {
    /// Bytes of encoded audio the LRU keeps (all codecs counted). Default 32 MiB: about 190
    /// five-second read-backs.
    pub cache_bytes_max: usize,
    /// Longest text accepted, in characters (a read-back is ~100). Default 1000.
    pub text_chars_max: usize,
    /// `auto` (the library if it loads, else the program), `library` or `process`.
    pub engine: EngineChoice,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            cache_bytes_max: 32 << 20,
            text_chars_max: 1000,
            // The espeak-ng program, not the library in-process: libespeak-ng is GPL-3 and this
            // binary is Apache-2.0. Measured 18–20 ms p95 per G.711 read-back either way.
            engine: EngineChoice::Process,
        }
    }
}

/// Which espeak-ng to use.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    #[default]
    Auto,
    Library,
    Process,
}

/// Why a dynamic prompt could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DynamicError {
    /// The text's markup is wrong (a bug in the caller of this module, not caller input).
    Markup(markup::MarkupError),
    /// Longer than `text_chars_max`.
    TooLong { chars: usize, max: usize },
    /// libespeak-ng was asked for and cannot be loaded or initialized.
    EngineUnavailable(String),
    /// Synthesis failed (library error code or the program's failure).
    Synthesis(String),
    /// Encoding into frames failed.
    Encode(String),
}

impl fmt::Display for DynamicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DynamicError::Markup(e) => write!(f, "markup at column {}: {}", e.column, e.message),
            DynamicError::TooLong { chars, max } => {
                write!(f, "text of {chars} characters is longer than {max}")
            }
            DynamicError::EngineUnavailable(e) => write!(f, "libespeak-ng unavailable: {e}"),
            DynamicError::Synthesis(e) => write!(f, "speech synthesis failed: {e}"),
            DynamicError::Encode(e) => write!(f, "encoding failed: {e}"),
        }
    }
}

impl std::error::Error for DynamicError {}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DynamicStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
    pub bytes: usize,
}

/// (language, voice name, words per minute, text).
type Key = (Lang, String, u32, String);

struct Entry {
    prompt: Arc<EncodedPrompt>,
    bytes: usize,
    /// Position in `Lru::order`.
    tick: u64,
}

/// Least recently used first in `order`; a lookup moves the entry to the back.
#[derive(Default)]
struct Lru {
    map: HashMap<Key, Entry>,
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: usize,
    stats: DynamicStats,
}

impl Lru {
    fn touch(&mut self, key: &Key) -> Option<Arc<EncodedPrompt>> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.map.get_mut(key)?;
        self.order.remove(&entry.tick);
        entry.tick = tick;
        self.order.insert(tick, key.clone());
        Some(entry.prompt.clone())
    }

    fn insert(&mut self, key: Key, prompt: Arc<EncodedPrompt>, bytes_max: usize) {
        let bytes = prompt_bytes(&prompt);
        // Bigger than the whole cache: serve it, keep nothing.
        if bytes > bytes_max {
            return;
        }
        // Two renders of the same text raced: keep the newer, account once.
        if let Some(old) = self.map.remove(&key) {
            self.order.remove(&old.tick);
            self.bytes -= old.bytes;
        }
        while self.bytes + bytes > bytes_max {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(old) = self.map.remove(&oldest) {
                self.bytes -= old.bytes;
                self.stats.evictions += 1;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(
            key,
            Entry {
                prompt,
                bytes,
                tick: self.tick,
            },
        );
        self.bytes += bytes;
    }
}

/// Memory an encoded prompt holds: 8 kHz PCM, µ-law, A-law and the Opus frames.
fn prompt_bytes(p: &EncodedPrompt) -> usize {
    let opus: usize = (0..p.frames())
        .filter_map(|i| p.frame(Codec::Opus, i))
        .map(<[u8]>::len)
        .sum();
    // i16 PCM (2 bytes a sample) plus one byte a sample for each G.711 law.
    p.pcm_8k.len() * 4 + opus + p.display.len() + 64
}

/// Renders dynamic text and caches the result. Share one per process (`Arc`).
pub struct DynamicPrompts {
    config: DynamicConfig,
    lru: Mutex<Lru>,
}

impl DynamicPrompts {
    pub fn new(config: DynamicConfig) -> DynamicPrompts {
        DynamicPrompts {
            config,
            lru: Mutex::new(Lru::default()),
        }
    }

    /// The prompt if it is cached with frames for `codec` (counts a hit or a miss). Cheap:
    /// safe on a media task.
    pub fn cached(
        &self,
        lang: Lang,
        voice: &Voice,
        text: &str,
        codec: Codec,
    ) -> Option<Arc<EncodedPrompt>> {
        let key = (lang, voice.name.clone(), voice.speed, text.to_string());
        let mut lru = lock(&self.lru);
        let hit = lru.touch(&key).filter(|p| has_codec(p, codec));
        if hit.is_some() {
            lru.stats.hits += 1;
        } else {
            lru.stats.misses += 1;
        }
        hit
    }

    /// The prompt for `text` (prompt markup, see `markup`) with frames for `codec`, from the
    /// cache or rendered now. Blocks for ~10–20 ms (G.711) or ~30–60 ms (Opus, whose encoder is
    /// most of it) on a miss: call it from `spawn_blocking`, never from a media task. G.711
    /// renders carry no Opus frames; an Opus call's request renders again with them and the
    /// complete prompt replaces the cached one. The prompt's `id` is `dynamic`; its `display` is
    /// the text as a reader sees it (it may hold personal data: do not log it).
    pub fn render(
        &self,
        lang: Lang,
        voice: &Voice,
        text: &str,
        codec: Codec,
    ) -> Result<Arc<EncodedPrompt>, DynamicError> {
        if let Some(p) = self.cached(lang, voice, text, codec) {
            return Ok(p);
        }
        let chars = text.chars().count();
        if chars > self.config.text_chars_max {
            return Err(DynamicError::TooLong {
                chars,
                max: self.config.text_chars_max,
            });
        }
        let rendered = markup::render(text, lang).map_err(DynamicError::Markup)?;
        // Rendering happens outside the cache lock: lookups by other calls go on meanwhile.
        let pcm = synthesize(self.config.engine, &rendered.ssml, voice)?;
        let pcm_8k = resample_fast(&pcm.samples, pcm.rate, 8000);
        let pcm_16k = (codec == Codec::Opus).then(|| resample_fast(&pcm.samples, pcm.rate, 16000));
        let mut prompt = cache::encode_frames(
            "dynamic".into(),
            lang,
            rendered.display,
            true,
            "tts".into(),
            pcm_8k,
            pcm_16k,
        )
        .map_err(DynamicError::Encode)?;
        // A stamp that names neither the text nor the number in it.
        prompt.stamp = format!("dynamic:{:016x}", fnv1a(text.as_bytes()));
        let prompt = Arc::new(prompt);
        let key = (lang, voice.name.clone(), voice.speed, text.to_string());
        lock(&self.lru).insert(key, prompt.clone(), self.config.cache_bytes_max);
        Ok(prompt)
    }

    pub fn stats(&self) -> DynamicStats {
        let lru = lock(&self.lru);
        DynamicStats {
            entries: lru.map.len(),
            bytes: lru.bytes,
            ..lru.stats
        }
    }
}

fn has_codec(p: &EncodedPrompt, codec: Codec) -> bool {
    codec != Codec::Opus || p.frame(Codec::Opus, 0).is_some()
}

/// Windowed-sinc resampling (8 zero crossings, Blackman window, f32, no bounds checks in the
/// inner loop). `audio::resample` (16 zero crossings, f64) is built for load time and costs
/// ~15 ms per 5 s of speech per rate; this costs ~1 ms, well within telephone quality.
fn resample_fast(input: &[i16], from_hz: u32, to_hz: u32) -> Vec<i16> {
    if from_hz == to_hz {
        return input.to_vec();
    }
    if from_hz == 0 || to_hz == 0 || input.is_empty() {
        return Vec::new();
    }
    let g = gcd(u64::from(from_hz), u64::from(to_hz));
    let (num, den) = (u64::from(from_hz) / g, u64::from(to_hz) / g);
    // An odd rate pair would need a huge phase table: the general resampler handles it.
    if den > 4096 {
        return crate::audio::resample::resample(input, from_hz, to_hz);
    }
    // Cutoff in cycles per input sample, a little below the lower Nyquist rate.
    let cutoff = 0.5 * (f64::from(to_hz) / f64::from(from_hz)).min(1.0) * 0.95;
    const ZEROS: f64 = 8.0;
    let half_width = ZEROS / (2.0 * cutoff);
    let reach = half_width.ceil() as usize;
    let width = 2 * reach + 1;
    let phases = den as usize;
    let mut table = vec![0f32; phases * width];
    for (p, taps) in table.chunks_exact_mut(width).enumerate() {
        let frac = p as f64 / den as f64;
        let mut row = vec![0f64; width];
        for (j, tap) in row.iter_mut().enumerate() {
            let d = j as f64 - reach as f64 - frac;
            if d.abs() >= half_width {
                continue;
            }
            let x = 2.0 * cutoff * d;
            let sinc = if x.abs() < 1e-12 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            };
            let w = 0.42
                + 0.5 * (std::f64::consts::PI * d / half_width).cos()
                + 0.08 * (2.0 * std::f64::consts::PI * d / half_width).cos();
            *tap = sinc * w;
        }
        // Unity DC gain per phase: no ripple at the output rate.
        let sum: f64 = row.iter().sum();
        for (t, r) in taps.iter_mut().zip(&row) {
            *t = (r / sum) as f32;
        }
    }
    // Zeros either side so every window is in bounds.
    let mut padded = vec![0f32; input.len() + 2 * width];
    for (d, &s) in padded[reach..].iter_mut().zip(input) {
        *d = f32::from(s);
    }
    let out_len = (input.len() as u64 * den / num) as usize;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len as u64 {
        let pos = n * num;
        let base = (pos / den) as usize;
        let phase = (pos % den) as usize;
        let taps = &table[phase * width..(phase + 1) * width];
        let window = &padded[base..base + width];
        let acc: f32 = taps.iter().zip(window).map(|(h, x)| h * x).sum();
        out.push(acc.round().clamp(-32768.0, 32767.0) as i16);
    }
    out
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A poisoned lock only means another thread panicked mid-update of plain counters and maps
/// that stay consistent between statements: keep serving.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Which engine `auto` resolved to, for logs and the bench.
pub fn engine_name(choice: EngineChoice) -> &'static str {
    match choice {
        EngineChoice::Process => "process",
        EngineChoice::Library => "library",
        EngineChoice::Auto if library().is_ok() => "library",
        EngineChoice::Auto => "process",
    }
}

/// SSML to PCM with the chosen engine.
pub fn synthesize(choice: EngineChoice, ssml: &str, voice: &Voice) -> Result<Pcm, DynamicError> {
    match choice {
        EngineChoice::Process => synthesize_process(ssml, voice),
        EngineChoice::Library => synthesize_library(ssml, voice),
        EngineChoice::Auto => match library() {
            Ok(_) => synthesize_library(ssml, voice),
            Err(_) => synthesize_process(ssml, voice),
        },
    }
}

// ---- the espeak-ng program -------------------------------------------------------------------

fn synthesize_process(ssml: &str, voice: &Voice) -> Result<Pcm, DynamicError> {
    // --stdout, not -w: no file holding the text's audio is ever written.
    let out = std::process::Command::new("espeak-ng")
        .arg("-m")
        .arg("-v")
        .arg(&voice.name)
        .arg("-s")
        .arg(voice.speed.to_string())
        .arg("--stdout")
        .arg("--")
        .arg(ssml)
        .output()
        .map_err(|e| DynamicError::Synthesis(format!("cannot run espeak-ng: {e}")))?;
    if !out.status.success() {
        return Err(DynamicError::Synthesis(format!(
            "espeak-ng exited with {}",
            out.status
        )));
    }
    parse_stream_wav(&out.stdout)
        .ok_or_else(|| DynamicError::Synthesis("espeak-ng wrote no readable WAV on stdout".into()))
}

/// A mono 16-bit WAV whose RIFF and data lengths may be wrong (espeak-ng writes its stdout
/// header before it knows the length): the samples are everything after the `data` header.
fn parse_stream_wav(b: &[u8]) -> Option<Pcm> {
    if b.get(..4)? != b"RIFF" || b.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12usize;
    let mut rate = None;
    loop {
        let id = b.get(at..at + 4)?;
        let len = u32::from_le_bytes(b.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " {
            let fmt = b.get(body..body + 16)?;
            let format = u16::from_le_bytes([fmt[0], fmt[1]]);
            let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
            let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
            if format != 1 || channels != 1 || bits != 16 {
                return None;
            }
            rate = Some(u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]));
        } else if id == b"data" {
            let samples = b
                .get(body..)?
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return Some(Pcm {
                rate: rate.filter(|r| *r > 0)?,
                samples,
            });
        }
        // Chunks are padded to even sizes.
        at = body.checked_add(len)?.checked_add(len & 1)?;
    }
}

// ---- libespeak-ng in-process ------------------------------------------------------------------

/// `espeak_EVENT` (speak_lib.h). Only `type` is read; the layout is needed to walk the list.
#[repr(C)]
struct EspeakEvent {
    kind: c_int,
    unique_identifier: c_uint,
    text_position: c_int,
    length: c_int,
    audio_position: c_int,
    sample: c_int,
    user_data: *mut c_void,
    id: [u8; 8],
}

type SynthCallback = unsafe extern "C" fn(*mut c_short, c_int, *mut EspeakEvent) -> c_int;
type InitializeFn = unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int;
type SetCallbackFn = unsafe extern "C" fn(Option<SynthCallback>);
type SetVoiceFn = unsafe extern "C" fn(*const c_char) -> c_int;
type SetParameterFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type SynthFn = unsafe extern "C" fn(
    *const c_void,
    usize,
    c_uint,
    c_int,
    c_uint,
    c_uint,
    *mut c_uint,
    *mut c_void,
) -> c_int;

// speak_lib.h constants.
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
const ESPEAK_RATE: c_int = 1;
const POS_CHARACTER: c_int = 1;
const ESPEAK_CHARS_UTF8: c_uint = 1;
const ESPEAK_SSML: c_uint = 0x10;
const ESPEAK_ENDPAUSE: c_uint = 0x1000;
const EE_OK: c_int = 0;

/// The library's entry points, resolved once.
struct Library {
    set_voice_by_name: SetVoiceFn,
    set_parameter: SetParameterFn,
    synth: SynthFn,
    sample_rate: u32,
    /// The voice and rate last set, so a render in the same voice skips reloading it.
    current: Mutex<Option<(String, u32)>>,
}

/// The loaded library, or why it cannot be used (tried once per process).
fn library() -> Result<&'static Library, &'static str> {
    static LIB: OnceLock<Result<Library, String>> = OnceLock::new();
    LIB.get_or_init(load_library)
        .as_ref()
        .map_err(String::as_str)
}

fn load_library() -> Result<Library, String> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the signature
    // speak_lib.h declares for it, and the handle is never closed so the pointers stay valid.
    unsafe {
        let mut handle = std::ptr::null_mut();
        for name in [c"libespeak-ng.so.1", c"libespeak-ng.so"] {
            handle = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if !handle.is_null() {
                break;
            }
        }
        if handle.is_null() {
            return Err("libespeak-ng.so.1 not found (Debian package libespeak-ng1)".into());
        }
        let sym = |name: &std::ffi::CStr| {
            let p = libc::dlsym(handle, name.as_ptr());
            if p.is_null() {
                Err(format!("symbol {name:?} missing"))
            } else {
                Ok(p)
            }
        };
        let initialize =
            std::mem::transmute::<*mut c_void, InitializeFn>(sym(c"espeak_Initialize")?);
        let set_callback =
            std::mem::transmute::<*mut c_void, SetCallbackFn>(sym(c"espeak_SetSynthCallback")?);
        let lib = Library {
            set_voice_by_name: std::mem::transmute::<*mut c_void, SetVoiceFn>(sym(
                c"espeak_SetVoiceByName",
            )?),
            set_parameter: std::mem::transmute::<*mut c_void, SetParameterFn>(sym(
                c"espeak_SetParameter",
            )?),
            synth: std::mem::transmute::<*mut c_void, SynthFn>(sym(c"espeak_Synth")?),
            sample_rate: 0,
            current: Mutex::new(None),
        };
        // Synchronous: espeak_Synth calls the callback on this thread before it returns. The
        // buffer length (ms) only sets how often the callback runs.
        let rate = initialize(
            AUDIO_OUTPUT_SYNCHRONOUS,
            500,
            std::ptr::null(),
            ESPEAK_INITIALIZE_DONT_EXIT,
        );
        if rate <= 0 {
            return Err(format!("espeak_Initialize returned {rate}"));
        }
        set_callback(Some(collect_samples));
        Ok(Library {
            sample_rate: rate as u32,
            ..lib
        })
    }
}

thread_local! {
    /// Samples of the synthesis running on this thread (the engine lock is held meanwhile).
    static SAMPLES: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
}

unsafe extern "C" fn collect_samples(
    wav: *mut c_short,
    count: c_int,
    _events: *mut EspeakEvent,
) -> c_int {
    if !wav.is_null() && count > 0 {
        // SAFETY: espeak-ng passes `count` valid samples at `wav` for the callback's duration.
        let chunk = unsafe { std::slice::from_raw_parts(wav, count as usize) };
        SAMPLES.with(|s| s.borrow_mut().extend_from_slice(chunk));
    }
    0 // go on
}

fn synthesize_library(ssml: &str, voice: &Voice) -> Result<Pcm, DynamicError> {
    let lib = library().map_err(|e| DynamicError::EngineUnavailable(e.to_string()))?;
    let text = CString::new(ssml)
        .map_err(|_| DynamicError::Synthesis("text contains a NUL character".into()))?;
    // The engine's global state (voice, rate, callback) is shared: one synthesis at a time.
    let mut current = lock(&lib.current);
    let wanted = (voice.name.clone(), voice.speed);
    if current.as_ref() != Some(&wanted) {
        let name = CString::new(voice.name.as_str())
            .map_err(|_| DynamicError::Synthesis("voice name contains NUL".into()))?;
        // SAFETY: a NUL-terminated name; the engine lock is held.
        let rc = unsafe { (lib.set_voice_by_name)(name.as_ptr()) };
        if rc != EE_OK {
            *current = None;
            return Err(DynamicError::Synthesis(format!(
                "unknown voice {:?} (error {rc})",
                voice.name
            )));
        }
        // SAFETY: plain integers; the engine lock is held.
        unsafe { (lib.set_parameter)(ESPEAK_RATE, voice.speed as c_int, 0) };
        *current = Some(wanted);
    }
    SAMPLES.with(|s| s.borrow_mut().clear());
    let bytes = text.as_bytes_with_nul();
    // SAFETY: `text` outlives the call; synchronous mode returns only after the last callback;
    // no unique id or user data are asked for.
    let rc = unsafe {
        (lib.synth)(
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            POS_CHARACTER,
            0,
            ESPEAK_CHARS_UTF8 | ESPEAK_SSML | ESPEAK_ENDPAUSE,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    drop(current);
    let samples = SAMPLES.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if rc != EE_OK {
        return Err(DynamicError::Synthesis(format!("espeak_Synth error {rc}")));
    }
    Ok(Pcm {
        rate: lib.sample_rate,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn en() -> Voice {
        Voice {
            name: "en-us".into(),
            speed: 160,
        }
    }

    const READBACK: &str = "You entered {phone 202-555-0123}. Is that right? To confirm, press 1.";

    fn peak(p: &EncodedPrompt) -> u16 {
        p.pcm_8k.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0)
    }

    #[test]
    fn library_and_program_render_the_same_speech() {
        let ssml = markup::render(READBACK, Lang::En).unwrap().ssml;
        let lib = synthesize(EngineChoice::Library, &ssml, &en()).expect("libespeak-ng1 installed");
        let prog = synthesize(EngineChoice::Process, &ssml, &en()).expect("espeak-ng installed");
        assert_eq!(lib.rate, prog.rate);
        let secs = lib.samples.len() as f64 / f64::from(lib.rate);
        assert!((3.0..12.0).contains(&secs), "{secs} s");
        // Same engine, same data: lengths agree to within a few percent.
        let ratio = lib.samples.len() as f64 / prog.samples.len() as f64;
        assert!(
            (0.95..1.05).contains(&ratio),
            "library/program length {ratio}"
        );
        // Spanish voice from the same global engine (voice switching works both ways).
        let es = Voice {
            name: "es-419".into(),
            speed: 160,
        };
        let s = synthesize(
            EngineChoice::Library,
            "<speak>Usted marcó 2 0 2.</speak>",
            &es,
        )
        .unwrap();
        assert!(!s.samples.is_empty());
        let again = synthesize(EngineChoice::Library, &ssml, &en()).unwrap();
        // Not bit-exact (espeak-ng's noise sources are random), but the same speech.
        let ratio = again.samples.len() as f64 / lib.samples.len() as f64;
        assert!(
            (0.99..1.01).contains(&ratio),
            "after a voice switch: {ratio}"
        );
    }

    #[test]
    fn a_render_is_speech_and_a_second_request_is_a_hit() {
        let d = DynamicPrompts::new(DynamicConfig::default());
        assert!(d.cached(Lang::En, &en(), READBACK, Codec::Pcmu).is_none());
        let p = d.render(Lang::En, &en(), READBACK, Codec::Pcmu).unwrap();
        assert_eq!(
            p.display,
            "You entered 202-555-0123. Is that right? To confirm, press 1."
        );
        assert_eq!(p.id, "dynamic");
        assert!(!p.stamp.contains("555"), "no number in the stamp");
        assert!(p.barge_in);
        assert!(peak(&p) > 3000, "speech, not silence");
        assert!(
            (3000..12000).contains(&p.duration_ms()),
            "{}",
            p.duration_ms()
        );
        for codec in [Codec::Pcmu, Codec::Pcma] {
            assert!(p.frame(codec, p.frames() - 1).is_some());
            assert!(p.frame(codec, p.frames()).is_none());
        }
        assert!(
            p.frame(Codec::Opus, 0).is_none(),
            "no Opus for a G.711 call"
        );
        let q = d.render(Lang::En, &en(), READBACK, Codec::Pcma).unwrap();
        assert!(Arc::ptr_eq(&p, &q), "served from the cache");
        let s = d.stats();
        assert_eq!((s.hits, s.misses, s.entries), (1, 2, 1));
        assert_eq!(s.bytes, prompt_bytes(&p));
        // An Opus call: rendered again with Opus frames, which then serve everyone.
        assert!(d.cached(Lang::En, &en(), READBACK, Codec::Opus).is_none());
        let o = d.render(Lang::En, &en(), READBACK, Codec::Opus).unwrap();
        assert!(o.frame(Codec::Opus, o.frames() - 1).is_some());
        assert!(o.frame(Codec::Opus, o.frames()).is_none());
        let u = d.cached(Lang::En, &en(), READBACK, Codec::Pcmu).unwrap();
        assert!(Arc::ptr_eq(&o, &u));
        assert_eq!(d.stats().entries, 1);
        assert_eq!(d.stats().bytes, prompt_bytes(&o));
        assert!(prompt_bytes(&o) > prompt_bytes(&p));
        // Other voice or language: another entry.
        let slow = Voice { speed: 120, ..en() };
        let r = d.render(Lang::En, &slow, READBACK, Codec::Pcmu).unwrap();
        assert!(
            r.duration_ms() > p.duration_ms(),
            "slower voice, longer audio"
        );
        assert_eq!(d.stats().entries, 2);
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used_within_its_bytes() {
        let d = DynamicPrompts::new(DynamicConfig::default());
        let a = d
            .render(Lang::En, &en(), "{digits 1}", Codec::Pcmu)
            .unwrap();
        let one = prompt_bytes(&a);
        // Room for about two prompts of this size.
        let d = DynamicPrompts::new(DynamicConfig {
            cache_bytes_max: one * 5 / 2,
            ..DynamicConfig::default()
        });
        d.render(Lang::En, &en(), "{digits 1}", Codec::Pcmu)
            .unwrap();
        d.render(Lang::En, &en(), "{digits 2}", Codec::Pcmu)
            .unwrap();
        // Touch 1 so that 2 is the oldest.
        assert!(
            d.cached(Lang::En, &en(), "{digits 1}", Codec::Pcmu)
                .is_some()
        );
        d.render(Lang::En, &en(), "{digits 3}", Codec::Pcmu)
            .unwrap();
        assert!(
            d.cached(Lang::En, &en(), "{digits 1}", Codec::Pcmu)
                .is_some()
        );
        assert!(
            d.cached(Lang::En, &en(), "{digits 3}", Codec::Pcmu)
                .is_some()
        );
        assert!(
            d.cached(Lang::En, &en(), "{digits 2}", Codec::Pcmu)
                .is_none()
        );
        let s = d.stats();
        assert_eq!((s.entries, s.evictions), (2, 1));
        assert!(s.bytes <= one * 5 / 2);
    }

    #[test]
    fn a_prompt_larger_than_the_cache_is_served_but_not_kept() {
        let d = DynamicPrompts::new(DynamicConfig {
            cache_bytes_max: 1000,
            ..DynamicConfig::default()
        });
        let p = d
            .render(Lang::En, &en(), "{digits 42}", Codec::Pcmu)
            .unwrap();
        assert!(p.frames() > 0);
        assert_eq!(d.stats().entries, 0);
        assert_eq!(d.stats().bytes, 0);
    }

    #[test]
    fn bad_text_is_an_error_not_a_panic() {
        // The library engine when it loads: the espeak-ng program quietly falls back to its
        // default voice for an unknown one, so only the library can refuse it.
        let d = DynamicPrompts::new(DynamicConfig {
            text_chars_max: 50,
            engine: EngineChoice::Auto,
            ..DynamicConfig::default()
        });
        assert!(matches!(
            d.render(Lang::En, &en(), "{phone 12}", Codec::Pcmu),
            Err(DynamicError::Markup(_))
        ));
        assert!(matches!(
            d.render(Lang::En, &en(), &"a".repeat(51), Codec::Pcmu),
            Err(DynamicError::TooLong { chars: 51, max: 50 })
        ));
        assert!(matches!(
            d.render(Lang::En, &en(), "nul \0 inside", Codec::Pcmu),
            Err(DynamicError::Synthesis(_))
        ));
        let nobody = Voice {
            name: "no-such-voice-xx".into(),
            speed: 160,
        };
        assert!(d.render(Lang::En, &nobody, "hello", Codec::Pcmu).is_err());
        // The engine still works after the failures.
        assert!(d.render(Lang::En, &en(), "hello", Codec::Pcmu).is_ok());
        assert_eq!(d.stats().entries, 1);
    }

    #[test]
    fn markup_characters_in_text_do_not_inject_ssml() {
        // `<`/`&` are escaped by markup: the engine reads them as text, not as tags.
        let d = DynamicPrompts::new(DynamicConfig::default());
        let p = d
            .render(
                Lang::En,
                &en(),
                "a <break time=\"5000ms\"/> & b",
                Codec::Pcma,
            )
            .unwrap();
        // Obeyed, the break would be 5 s of silence; read out, the longest gap is short.
        let mut run = 0usize;
        let mut longest = 0usize;
        for s in p.pcm_8k.iter() {
            run = if s.unsigned_abs() < 100 { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        assert!(
            longest < 8000,
            "{longest} silent samples: the tag was obeyed"
        );
    }

    fn tone(hz: f64, rate: u32, secs: f64) -> Vec<i16> {
        (0..(f64::from(rate) * secs) as usize)
            .map(|i| {
                (10000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    #[test]
    fn fast_resampling_keeps_the_voice_band_and_removes_what_would_alias() {
        for to in [8000, 16000] {
            let input = tone(1000.0, 22050, 1.0);
            let out = resample_fast(&input, 22050, to);
            assert_eq!(out.len(), to as usize);
            // The tone passes at its level and is the same signal the reference resampler makes.
            let mid = &out[200..out.len() - 200];
            let level = rms(mid) / rms(&input);
            assert!((0.97..1.03).contains(&level), "{to}: level {level}");
            let reference = crate::audio::resample::resample(&input, 22050, to);
            let diff: Vec<i16> = mid
                .iter()
                .zip(&reference[200..])
                .map(|(a, b)| a.saturating_sub(*b))
                .collect();
            assert!(
                rms(&diff) < 100.0,
                "{to}: differs from the reference by {}",
                rms(&diff)
            );
        }
        // 6 kHz is above 8 kHz's Nyquist rate: it must not fold back into the band.
        let out = resample_fast(&tone(6000.0, 22050, 1.0), 22050, 8000);
        assert!(rms(&out[200..7800]) < 200.0, "alias {}", rms(&out));
        // Edge cases: no panic, sensible lengths.
        assert!(resample_fast(&[], 22050, 8000).is_empty());
        assert_eq!(resample_fast(&[5; 3], 8000, 8000), vec![5; 3]);
        assert!(resample_fast(&[1, 2, 3], 0, 8000).is_empty());
        assert_eq!(resample_fast(&[i16::MAX; 441], 22050, 8000).len(), 160);
        // An odd rate pair takes the general resampler (791 samples in).
        assert_eq!(
            resample_fast(&tone(300.0, 7919, 0.1), 7919, 16000).len(),
            791 * 16000 / 7919
        );
    }

    #[test]
    fn stream_wav_with_wrong_lengths_is_read() {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&22050u32.to_le_bytes());
        b.extend_from_slice(&44100u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        for s in [1i16, -2, 300] {
            b.extend_from_slice(&s.to_le_bytes());
        }
        let pcm = parse_stream_wav(&b).unwrap();
        assert_eq!((pcm.rate, pcm.samples), (22050, vec![1, -2, 300]));
        // Truncated anywhere: None, never a panic.
        for cut in 0..b.len() - 6 {
            assert!(parse_stream_wav(&b[..cut]).is_none(), "cut {cut}");
        }
        let mut stereo = b.clone();
        stereo[22] = 2;
        assert!(parse_stream_wav(&stereo).is_none());
    }
}
