//! PocketSphinx backend: a small FFI to the Debian `libpocketsphinx` (5prealpha API) and
//! `pocketsphinx-en-us`, the English recognizer of the embedded default.
//!
//! The engine holds the pronunciations of the domain's words and the bigram LM generated from
//! the domain's phrases (see [`super::lm`]); PocketSphinx only loads LMs and dictionaries from
//! files, so the engine writes both into its own directory at load (the one place this module
//! touches files, like the C library itself reading the acoustic model). Each recognizer is its
//! own decoder: a decoder is not thread-safe, but may move between threads.

use std::collections::HashSet;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Once;

/// Utterance posterior at or above which a PocketSphinx transcript may be answered without
/// confirmation: calibrated on spoken questions at 8 kHz (BENCHMARKING.md, "Understanding").
pub const ANSWER_FLOOR: f32 = 0.01;
use std::sync::atomic::{AtomicU64, Ordering};

use super::lm::{self, Lexicon};
use super::{AsrError, Mode, Partial, Recognizer, Transcript};
use crate::types::Lang;

/// The acoustic model's rate: narrowband callers are upsampled before they reach the decoder.
pub const SAMPLE_RATE_HZ: u32 = 16_000;

/// Where Debian's `pocketsphinx-en-us` installs the model.
pub const DEFAULT_MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";

#[repr(C)]
struct PsDecoder {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn ps_args() -> *const c_void;
    fn cmd_ln_init(inout: *mut c_void, defn: *const c_void, strict: i32, ...) -> *mut c_void;
    fn cmd_ln_free_r(cmdln: *mut c_void) -> c_int;
    fn ps_init(config: *mut c_void) -> *mut PsDecoder;
    fn ps_free(ps: *mut PsDecoder) -> c_int;
    fn ps_start_utt(ps: *mut PsDecoder) -> c_int;
    fn ps_process_raw(
        ps: *mut PsDecoder,
        data: *const i16,
        n_samples: usize,
        no_search: c_int,
        full_utt: c_int,
    ) -> c_int;
    fn ps_end_utt(ps: *mut PsDecoder) -> c_int;
    fn ps_get_hyp(ps: *mut PsDecoder, out_best_score: *mut i32) -> *const c_char;
    fn ps_get_prob(ps: *mut PsDecoder) -> i32;
    fn ps_get_logmath(ps: *mut PsDecoder) -> *mut c_void;
    fn logmath_exp(lmath: *mut c_void, logb_p: c_int) -> f64;
    fn ps_set_jsgf_string(ps: *mut PsDecoder, name: *const c_char, jsgf: *const c_char) -> c_int;
    fn ps_add_word(
        ps: *mut PsDecoder,
        word: *const c_char,
        phones: *const c_char,
        update: c_int,
    ) -> c_int;
    fn ps_set_search(ps: *mut PsDecoder, name: *const c_char) -> c_int;
    fn err_set_logfp(stream: *mut c_void);
    fn ps_get_feat(ps: *mut PsDecoder) -> *mut FeatPrefix;
    fn cmn_live_get(cmn: *mut CmnPrefix, vec: *mut f32);
    fn cmn_live_set(cmn: *mut CmnPrefix, vec: *const f32);
}

/// The leading fields of SphinxBase's `feat_t` (sphinxbase/feat.h, Debian 0.8+5prealpha), up
/// to the live CMN state. Only `cmn_struct` is read.
#[repr(C)]
struct FeatPrefix {
    refcount: c_int,
    name: *mut c_char,
    cepsize: i32,
    n_stream: i32,
    stream_len: *mut u32,
    window_size: i32,
    n_sv: i32,
    sv_len: *mut u32,
    subvecs: *mut *mut i32,
    sv_buf: *mut f32,
    sv_dim: i32,
    cmn: c_int,
    varnorm: i32,
    agc: c_int,
    compute_feat: *mut c_void,
    cmn_struct: *mut CmnPrefix,
}

/// SphinxBase's `cmn_t` (sphinxbase/cmn.h; `mfcc_t` is `float`, no FIXED_POINT).
#[repr(C)]
struct CmnPrefix {
    cmn_mean: *mut f32,
    cmn_var: *mut f32,
    sum: *mut f32,
    nframe: i32,
    veclen: i32,
}

static QUIET: Once = Once::new();
static ENGINE_SEQ: AtomicU64 = AtomicU64::new(0);

/// The shared part: model paths, the domain lexicon and LM. Cheap to share (`Arc`) among workers.
#[derive(Debug)]
pub struct SphinxEngine {
    hmm: CString,
    dict_path: CString,
    lm_path: CString,
    /// An MLLR mean transform (`-mllr`) for the telephone band, when one is configured.
    mllr: Option<CString>,
    /// The whole dictionary: grammar phrases may use words the domain LM does not.
    lexicon: Lexicon,
    /// The words written to the decoders' dictionary file.
    domain_words: HashSet<String>,
    /// Our generated files, removed on drop; `None` for the stock LM.
    dir: Option<PathBuf>,
    /// Domain phrases that lost a word missing from the dictionary (reported at load).
    dropped_words: Vec<String>,
}

impl SphinxEngine {
    /// Load the dictionary of `model_dir` (`cmudict-en-us.dict` beside the `en-us` acoustic
    /// model), keep the pronunciations of `vocabulary`, and write the domain's dictionary subset
    /// and bigram LM (from `phrases`) under `work_dir`.
    pub fn load(
        model_dir: &Path,
        phrases: &[String],
        vocabulary: &[String],
        work_dir: &Path,
    ) -> Result<SphinxEngine, AsrError> {
        QUIET.call_once(|| {
            // SAFETY: a NULL stream turns the library's global logging off; called once.
            unsafe { err_set_logfp(std::ptr::null_mut()) }
        });
        let hmm = model_dir.join("en-us");
        let dict = model_dir.join("cmudict-en-us.dict");
        if !hmm.join("mdef").exists() {
            return Err(AsrError::ModelMissing(hmm));
        }
        let text = std::fs::read_to_string(&dict).map_err(|e| AsrError::Io(dict.clone(), e))?;
        let mut full = Lexicon::parse_cmudict(&text);
        // Keep every word a phrase set may ask for (vocabulary covers all sets).
        let mut words: Vec<&str> = vocabulary.iter().map(String::as_str).collect();
        // The spelling words join the dictionary with every pronunciation ("a" is both AH and
        // EY, and a spelled "a" is EY); words a grammar adds later get only the first.
        let spelling = crate::nlu::spell::email_tokens(Lang::En);
        words.extend(spelling.iter().flat_map(|t| t.split_whitespace()));
        for p in phrases {
            words.extend(p.split_whitespace());
        }
        // Domain words cmudict lacks ("uscis", "biometrics") are spelled or split, not lost.
        full.add_missing(words.iter().copied());
        let domain = full.subset(words);
        let (sentences, dropped_words) = domain.in_vocabulary(phrases);
        let arpa = lm::bigram_arpa(&sentences);
        let seq = ENGINE_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = work_dir.join(format!("ivr-sphinx-{}-{seq}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| AsrError::Io(dir.clone(), e))?;
        let dict_path = dir.join("domain.dict");
        let lm_path = dir.join("domain.lm");
        std::fs::write(&dict_path, domain.to_dict())
            .map_err(|e| AsrError::Io(dict_path.clone(), e))?;
        std::fs::write(&lm_path, arpa).map_err(|e| AsrError::Io(lm_path.clone(), e))?;
        Ok(SphinxEngine {
            hmm: path_cstring(&hmm)?,
            dict_path: path_cstring(&dict_path)?,
            lm_path: path_cstring(&lm_path)?,
            mllr: None,
            domain_words: domain.entries().keys().cloned().collect(),
            lexicon: full,
            dir: Some(dir),
            dropped_words,
        })
    }

    /// The stock open-vocabulary setup (`en-us.lm.bin`, the whole dictionary) in place of the
    /// domain LM: the baseline the domain LM is measured against, and a recognizer for speech
    /// outside the domain (the WER test on Asterisk's prompts).
    pub fn general(model_dir: &Path) -> Result<SphinxEngine, AsrError> {
        QUIET.call_once(|| {
            // SAFETY: a NULL stream turns the library's global logging off; called once.
            unsafe { err_set_logfp(std::ptr::null_mut()) }
        });
        let hmm = model_dir.join("en-us");
        let dict = model_dir.join("cmudict-en-us.dict");
        let lm = model_dir.join("en-us.lm.bin");
        for p in [&hmm.join("mdef"), &dict, &lm] {
            if !p.exists() {
                return Err(AsrError::ModelMissing(p.to_path_buf()));
            }
        }
        let text = std::fs::read_to_string(&dict).map_err(|e| AsrError::Io(dict.clone(), e))?;
        let lexicon = Lexicon::parse_cmudict(&text);
        Ok(SphinxEngine {
            hmm: path_cstring(&hmm)?,
            dict_path: path_cstring(&dict)?,
            lm_path: path_cstring(&lm)?,
            mllr: None,
            domain_words: lexicon.entries().keys().cloned().collect(),
            lexicon,
            dir: None,
            dropped_words: Vec::new(),
        })
    }

    /// Adapt the acoustic model's means with the MLLR transform at `path` (sphinxtrain's
    /// `mllr_solve` output, `scripts/adapt-8k`) in every recognizer made from now on.
    pub fn with_mllr(mut self, path: &Path) -> Result<SphinxEngine, AsrError> {
        if !path.is_file() {
            return Err(AsrError::ModelMissing(path.to_path_buf()));
        }
        self.mllr = Some(path_cstring(path)?);
        Ok(self)
    }

    /// Words of the domain phrases with no pronunciation even spelled (left out of the LM).
    pub fn dropped_words(&self) -> &[String] {
        &self.dropped_words
    }

    pub fn recognizer(&self, mode: &Mode) -> Result<SphinxRecognizer, AsrError> {
        let null = std::ptr::null::<c_char>();
        let logfn = c"/dev/null";
        // Last in each list: without a transform the pair is NULL, ending the list there (a
        // repeated option is rejected as a bad configuration).
        let (mllr_key, mllr_val) = match &self.mllr {
            Some(m) => (c"-mllr".as_ptr(), m.as_ptr()),
            None => (null, null),
        };
        // SAFETY: every string is NUL-terminated and outlives the call (cmd_ln copies them);
        // the list ends with NULL as the variadic contract requires.
        let config = unsafe {
            match mode {
                Mode::Domain => cmd_ln_init(
                    std::ptr::null_mut(),
                    ps_args(),
                    1,
                    c"-hmm".as_ptr(),
                    self.hmm.as_ptr(),
                    c"-dict".as_ptr(),
                    self.dict_path.as_ptr(),
                    c"-lm".as_ptr(),
                    self.lm_path.as_ptr(),
                    // Measured with `ivr call` on the 20 spoken test questions: the flat-lexicon
                    // second pass cost 80 ms p50 / 160 ms p95 at the end of every utterance
                    // (the reply waits for it); without it and with the lattice best path
                    // and a heavier LM weight (the LM is in-domain), the end costs 1–8 ms and
                    // accuracy went 17→17/20 at 16 kHz and 8→11/20 at 8 kHz.
                    c"-fwdflat".as_ptr(),
                    c"no".as_ptr(),
                    c"-bestpath".as_ptr(),
                    c"yes".as_ptr(),
                    c"-lw".as_ptr(),
                    c"10".as_ptr(),
                    c"-logfn".as_ptr(),
                    logfn.as_ptr(),
                    mllr_key,
                    mllr_val,
                    null,
                ),
                // Tried for spelling (espeak-ng and Asterisk's recorded letters, 8 and 16 kHz):
                // -wip 0.65…1e-10, -silprob 0.005…0.5 and -dither changed insertions into
                // deletions, never to a whole address (BENCHMARKING.md).
                Mode::Grammar(_) | Mode::Sequence { .. } => cmd_ln_init(
                    std::ptr::null_mut(),
                    ps_args(),
                    1,
                    c"-hmm".as_ptr(),
                    self.hmm.as_ptr(),
                    c"-dict".as_ptr(),
                    self.dict_path.as_ptr(),
                    c"-logfn".as_ptr(),
                    logfn.as_ptr(),
                    mllr_key,
                    mllr_val,
                    null,
                ),
            }
        };
        if config.is_null() {
            return Err(AsrError::Backend("pocketsphinx: bad configuration".into()));
        }
        // SAFETY: config is a valid cmd_ln; ps_init retains it, so we release our reference.
        let ps = unsafe {
            let ps = ps_init(config);
            cmd_ln_free_r(config);
            ps
        };
        let ps = NonNull::new(ps)
            .ok_or_else(|| AsrError::Backend("pocketsphinx: decoder init failed".into()))?;
        let rec = SphinxRecognizer {
            ps,
            started: false,
            since_partial: 0,
            scratch: Vec::new(),
            seed: 1,
            cmn_before: Vec::new(),
        };
        if let Mode::Grammar(phrases)
        | Mode::Sequence {
            tokens: phrases, ..
        } = mode
        {
            let (kept, _) = self.lexicon.in_vocabulary(phrases);
            let jsgf = match mode {
                Mode::Sequence { len, .. } => lm::jsgf_sequence(&kept, *len),
                _ => lm::jsgf(&kept),
            }
            .ok_or(AsrError::EmptyGrammar)?;
            let extra: HashSet<&str> = kept
                .iter()
                .flat_map(|p| p.split_whitespace())
                .filter(|w| !self.domain_words.contains(*w))
                .collect();
            for word in extra {
                let Some(phones) = self.lexicon.entries().get(word).and_then(|v| v.first()) else {
                    continue;
                };
                let (Ok(w), Ok(ph)) = (CString::new(word), CString::new(phones.as_str())) else {
                    continue;
                };
                // SAFETY: ps is live; both strings NUL-terminated. Failure only loses the word.
                unsafe { ps_add_word(rec.ps.as_ptr(), w.as_ptr(), ph.as_ptr(), 1) };
            }
            let jsgf = CString::new(jsgf).map_err(|_| AsrError::EmptyGrammar)?;
            // SAFETY: ps is live, both strings NUL-terminated.
            let ok = unsafe {
                ps_set_jsgf_string(rec.ps.as_ptr(), c"grammar".as_ptr(), jsgf.as_ptr()) == 0
                    && ps_set_search(rec.ps.as_ptr(), c"grammar".as_ptr()) == 0
            };
            if !ok {
                return Err(AsrError::Backend("pocketsphinx: grammar rejected".into()));
            }
        }
        Ok(rec)
    }
}

impl Drop for SphinxEngine {
    fn drop(&mut self) {
        // Live decoders have already read both files.
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn path_cstring(p: &Path) -> Result<CString, AsrError> {
    CString::new(p.to_string_lossy().as_bytes()).map_err(|_| AsrError::ModelMissing(p.into()))
}

/// One decoder, reused across utterances.
#[derive(Debug)]
pub struct SphinxRecognizer {
    ps: NonNull<PsDecoder>,
    started: bool,
    /// Samples fed since the last partial result.
    since_partial: usize,
    /// The input plus the noise floor, reused across calls.
    scratch: Vec<i16>,
    seed: u32,
    /// The live cepstral mean when the current utterance started: a cancelled utterance (a
    /// key tone taken for speech) puts it back, so the tone does not skew the next one.
    cmn_before: Vec<f32>,
}

/// Peak amplitude of the white noise floor added to every input sample (about −69 dBFS RMS).
/// Narrowband callers upsampled to 16 kHz leave the 4–8 kHz filterbank channels empty, which the
/// wideband model never saw in training. Measured (tests/asr_pocketsphinx_english.rs, 20
/// espeak-ng questions, domain LM): intent accuracy at 8 kHz 10/20 without, 14/20 with ±8,
/// 16/20 with ±20; at 16 kHz 17, 17, 18/20. On Asterisk's human 8 kHz prompts with the general
/// LM the WER moved the other way, 0.576 → 0.588 → 0.620: small samples; the domain path wins.
const NOISE_FLOOR_AMPLITUDE: u32 = 20;

/// Add the recognizer's white noise floor to `pcm` in place; `seed` carries the generator
/// state across calls (start an utterance at 1). Public so the adaptation data of
/// `scripts/adapt-8k` passes through the same band as a call.
pub fn noise_floor(pcm: &mut [i16], seed: &mut u32) {
    for x in pcm {
        // A fixed LCG: recognition stays reproducible run to run.
        *seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let n =
            ((*seed >> 16) % (2 * NOISE_FLOOR_AMPLITUDE + 1)) as i32 - NOISE_FLOOR_AMPLITUDE as i32;
        *x = (*x as i32 + n).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
    }
}

// SAFETY: the decoder has no thread affinity; `&mut self` on every call keeps access exclusive.
unsafe impl Send for SphinxRecognizer {}

impl SphinxRecognizer {
    /// The decoder's live CMN state, when its layout is the one we know.
    fn cmn(&self) -> Option<(*mut CmnPrefix, usize)> {
        // SAFETY: ps is live; feat_t and cmn_t are read as laid out in the Debian headers,
        // and only after the pointers and the vector length check out.
        unsafe {
            let feat = ps_get_feat(self.ps.as_ptr());
            if feat.is_null() {
                return None;
            }
            let cmn = (*feat).cmn_struct;
            if cmn.is_null() || (*cmn).cmn_mean.is_null() {
                return None;
            }
            let len = (*cmn).veclen;
            ((1..=64).contains(&len) && len == (*feat).cepsize).then_some((cmn, len as usize))
        }
    }

    fn save_cmn(&mut self) {
        let Some((cmn, len)) = self.cmn() else {
            self.cmn_before.clear();
            return;
        };
        self.cmn_before.resize(len, 0.0);
        // SAFETY: cmn is live and the buffer holds veclen floats.
        unsafe { cmn_live_get(cmn, self.cmn_before.as_mut_ptr()) };
    }

    fn restore_cmn(&mut self) {
        let Some((cmn, len)) = self.cmn() else { return };
        if self.cmn_before.len() == len {
            // SAFETY: cmn is live and the buffer holds veclen floats.
            unsafe { cmn_live_set(cmn, self.cmn_before.as_ptr()) };
        }
    }

    fn hyp(&mut self) -> Option<String> {
        let mut score = 0i32;
        // SAFETY: ps is live; the returned string is owned by the decoder, copied at once.
        let p = unsafe { ps_get_hyp(self.ps.as_ptr(), &mut score) };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated by the library.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        Some(s)
    }
}

impl Recognizer for SphinxRecognizer {
    fn sample_rate_hz(&self) -> u32 {
        SAMPLE_RATE_HZ
    }

    fn accept(&mut self, pcm: &[i16]) -> Option<Partial> {
        if pcm.is_empty() {
            return None;
        }
        if !self.started {
            // The mean before this utterance, in case it is cancelled.
            self.save_cmn();
            // SAFETY: ps is live and no utterance is open.
            if unsafe { ps_start_utt(self.ps.as_ptr()) } < 0 {
                return None;
            }
            self.started = true;
            // Same audio, same noise, same result, whatever came before.
            self.seed = 1;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(pcm);
        noise_floor(&mut self.scratch, &mut self.seed);
        // SAFETY: ps is live and an utterance is open; scratch is a valid slice for its length.
        unsafe {
            if ps_process_raw(
                self.ps.as_ptr(),
                self.scratch.as_ptr(),
                self.scratch.len(),
                0,
                0,
            ) < 0
            {
                return None;
            }
        }
        self.since_partial += pcm.len();
        if self.since_partial < super::PARTIAL_INTERVAL_SAMPLES {
            return None;
        }
        self.since_partial = 0;
        self.hyp()
            .filter(|t| !t.is_empty())
            .map(|text| Partial { text })
    }

    fn finish(&mut self) -> Transcript {
        if !self.started {
            return Transcript::default();
        }
        self.started = false;
        self.since_partial = 0;
        // SAFETY: an utterance is open on a live decoder.
        unsafe { ps_end_utt(self.ps.as_ptr()) };
        let text = self.hyp().unwrap_or_default();
        // SAFETY: ps is live; logmath belongs to it.
        let confidence = unsafe {
            let lmath = ps_get_logmath(self.ps.as_ptr());
            if lmath.is_null() {
                0.0
            } else {
                logmath_exp(lmath, ps_get_prob(self.ps.as_ptr())) as f32
            }
        };
        Transcript {
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
            confidence: if confidence.is_finite() {
                confidence.clamp(0.0, 1.0)
            } else {
                0.0
            },
            words: Vec::new(),
            answer_floor: ANSWER_FLOOR,
        }
    }

    fn reset(&mut self) {
        if self.started {
            // SAFETY: an utterance is open on a live decoder; its result is discarded.
            unsafe { ps_end_utt(self.ps.as_ptr()) };
            self.started = false;
            // Measured: four cancelled key-tone fragments (20–220 ms each) left the next
            // utterance's "yes please" recognized as nothing; with the mean put back it is heard.
            self.restore_cmn();
        }
        self.since_partial = 0;
    }
}

impl Drop for SphinxRecognizer {
    fn drop(&mut self) {
        // SAFETY: we own the only reference to the decoder.
        unsafe { ps_free(self.ps.as_ptr()) };
    }
}
