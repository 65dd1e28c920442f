//! The ASR worker pool: a fixed set of std threads (one per core) that own the recognizers, so
//! recognition never runs on a media task.
//!
//! A media task starts an utterance with [`AsrPool::begin`] when its endpointer reports speech,
//! forwards the endpointer's audio with [`Utterance::feed`] and ends it with
//! [`Utterance::finish`]; partial and final results come back on the call's tokio channel. All
//! jobs of one utterance go to the same worker (its recognizer holds the utterance's state); the
//! least-loaded worker gets each new utterance. Every queue is bounded and every submit is a
//! `try_send`: a full queue answers `Overloaded` at once and the flow falls back to DTMF instead
//! of the caller waiting on a backlog.
//!
//! **Admission by measured speed.** Before an utterance starts, the pool predicts how late its
//! transcript would come: each worker decodes `1 / RTF` seconds of audio per second (the RTF is
//! measured on the workers as they decode, a moving average over about ten seconds of audio),
//! and the callers already talking to it send one second per second each. If the worker's
//! backlog, plus what a typical utterance's time adds to it, would take longer than
//! `Limits::max_lag` to decode, the utterance is refused at its start — before any of its audio
//! is queued — and the caller gets the keypad at once, instead of speaking into a queue that
//! drops them halfway (`Overloaded` while feeding) and slows everyone else's answers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::asr::{Engines, Mode, Recognizer, Transcript};
use crate::types::Lang;

/// Idle recognizers kept per (language, mode) and worker; more are dropped after use.
const IDLE_RECOGNIZERS_MAX: usize = 8;

/// What the pool sends back to a call.
#[derive(Debug, Clone, PartialEq)]
pub enum AsrResult {
    Partial {
        utt: u64,
        text: String,
    },
    Final {
        utt: u64,
        transcript: Transcript,
    },
    /// No recognizer for this utterance (no engine, empty grammar): fall back to DTMF.
    Failed {
        utt: u64,
        error: String,
    },
}

/// The pool is saturated: the caller should not wait for recognition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

impl std::fmt::Display for Overloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("speech recognition overloaded")
    }
}

impl std::error::Error for Overloaded {}

/// Counters for `/metrics`; RTF = `busy_us_total / audio_us_total`.
#[derive(Debug, Default)]
pub struct PoolMetrics {
    pub queue_depth: AtomicI64,
    /// Recognizers held by the workers, busy and idle (bounded by `Limits::recognizers`).
    pub recognizers: AtomicI64,
    /// Utterances waiting for a free recognizer.
    pub waiting: AtomicI64,
    pub overloaded_total: AtomicU64,
    pub utterances_total: AtomicU64,
    pub recognizers_created_total: AtomicU64,
    pub failed_total: AtomicU64,
    /// Audio fed to recognizers, in microseconds of speech.
    pub audio_us_total: AtomicU64,
    /// Worker time spent recognizing.
    pub busy_us_total: AtomicU64,
    /// Utterances refused at their start because their transcript would have come too late.
    pub admission_refused_total: AtomicU64,
    /// The measured real-time factor, a moving average (`f64` bits; 0 = nothing measured yet).
    rtf_estimate: AtomicU64,
}

impl PoolMetrics {
    /// Real-time factor so far (worker time per second of audio); 0 before any audio.
    pub fn rtf(&self) -> f64 {
        let audio = self.audio_us_total.load(Relaxed);
        if audio == 0 {
            return 0.0;
        }
        self.busy_us_total.load(Relaxed) as f64 / audio as f64
    }

    /// The real-time factor admission uses: the moving average of the measured one, or
    /// [`RTF_PRIOR`] before any audio was decoded.
    pub fn rtf_estimate(&self) -> f64 {
        match f64::from_bits(self.rtf_estimate.load(Relaxed)) {
            r if r > 0.0 => r,
            _ => RTF_PRIOR,
        }
    }

    /// One measurement: `busy_us` of decoding for `audio_us` of audio. The average weighs it
    /// by its audio against `RTF_WINDOW_US` (workers race on the update; a lost one is harmless).
    fn observe_rtf(&self, busy_us: u64, audio_us: u64) {
        if audio_us == 0 {
            return;
        }
        let sample = busy_us as f64 / audio_us as f64;
        let old = f64::from_bits(self.rtf_estimate.load(Relaxed));
        let new = if old > 0.0 {
            let w = (audio_us as f64 / RTF_WINDOW_US as f64).min(1.0);
            old + (sample - old) * w
        } else {
            sample
        };
        self.rtf_estimate.store(new.to_bits(), Relaxed);
    }

    /// Prometheus text, to append to the server's own metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, i128); 10] = [
            (
                "asr_queue_depth",
                "gauge",
                "ASR jobs waiting for a worker.",
                self.queue_depth.load(Relaxed) as i128,
            ),
            (
                "asr_recognizers",
                "gauge",
                "Recognizers held by the ASR workers, busy and idle.",
                self.recognizers.load(Relaxed) as i128,
            ),
            (
                "asr_waiting_utterances",
                "gauge",
                "Utterances waiting for a free recognizer.",
                self.waiting.load(Relaxed) as i128,
            ),
            (
                "asr_overloaded_total",
                "counter",
                "Utterances or frames refused: the ASR queue was full, or no recognizer was free in time.",
                self.overloaded_total.load(Relaxed) as i128,
            ),
            (
                "asr_utterances_total",
                "counter",
                "Utterances recognized.",
                self.utterances_total.load(Relaxed) as i128,
            ),
            (
                "asr_recognizers_created_total",
                "counter",
                "Recognizers created (reuse keeps this low).",
                self.recognizers_created_total.load(Relaxed) as i128,
            ),
            (
                "asr_failed_total",
                "counter",
                "Utterances with no recognizer (no engine, empty grammar).",
                self.failed_total.load(Relaxed) as i128,
            ),
            (
                "asr_audio_us_total",
                "counter",
                "Microseconds of audio fed to recognizers.",
                self.audio_us_total.load(Relaxed) as i128,
            ),
            (
                "asr_busy_us_total",
                "counter",
                "Microseconds the ASR workers spent recognizing.",
                self.busy_us_total.load(Relaxed) as i128,
            ),
            (
                "asr_admission_refused_total",
                "counter",
                "Utterances refused at their start: at the measured speed their transcript would have come too late.",
                self.admission_refused_total.load(Relaxed) as i128,
            ),
        ];
        for (name, kind, help, v) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP ivr_{name} {help}\n# TYPE ivr_{name} {kind}\nivr_{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ivr_asr_rtf_estimate Real-time factor the ASR admission uses (measured moving average).\n\
             # TYPE ivr_asr_rtf_estimate gauge\nivr_asr_rtf_estimate {:.4}",
            self.rtf_estimate()
        );
        out
    }
}

type Key = (u64, u64);

/// The real-time factor assumed before any audio was decoded (PocketSphinx on an idle core
/// measures ~0.06; a guess on the slow side).
pub const RTF_PRIOR: f64 = 0.1;
/// Audio over which the measured RTF is averaged, in microseconds.
const RTF_WINDOW_US: u64 = 10_000_000;
/// How long admission expects an utterance to last (a short spoken question or answer).
const TYPICAL_UTTERANCE_S: f64 = 2.0;

/// How late (seconds) the transcript of a new utterance would come on a worker with
/// `backlog_s` seconds of audio queued and `talking` callers already speaking to it, at `rtf`:
/// the worker decodes `1/rtf` seconds of audio per second while `talking + 1` callers send one
/// each, for a typical utterance's time; what is left then takes `rtf` per second to decode.
pub fn predicted_lag_s(backlog_s: f64, talking: usize, rtf: f64) -> f64 {
    let inflow = (talking + 1) as f64;
    let left = backlog_s + TYPICAL_UTTERANCE_S * (inflow - 1.0 / rtf.max(1e-6));
    left.max(0.0) * rtf
}

enum Job {
    Begin {
        key: Key,
        lang: Lang,
        mode: Mode,
        engines: Arc<Engines>,
        generation: u64,
        results: mpsc::Sender<AsrResult>,
        cancelled: Arc<AtomicBool>,
    },
    Audio {
        key: Key,
        pcm: Vec<i16>,
        /// Its duration, added to the worker's backlog when queued and taken off when handled.
        us: u64,
    },
    Finish {
        key: Key,
    },
    Cancel {
        key: Key,
    },
}

struct Worker {
    tx: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    /// Utterances begun on this worker and not yet finished or cancelled: callers talking now.
    talking: Arc<AtomicUsize>,
    /// Audio queued to this worker and not yet handled, in microseconds.
    backlog_us: Arc<AtomicU64>,
}

struct Inner {
    workers: Vec<Worker>,
    metrics: Arc<PoolMetrics>,
    engines: RwLock<(u64, Arc<Engines>)>,
    /// Admission's bound on a transcript's predicted lateness (zero: admission off).
    max_lag: std::time::Duration,
}

impl Inner {
    fn submit(&self, worker: usize, job: Job) -> Result<(), Overloaded> {
        let w = &self.workers[worker];
        match w.tx.try_send(job) {
            Ok(()) => {
                w.depth.fetch_add(1, Relaxed);
                self.metrics.queue_depth.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.overloaded_total.fetch_add(1, Relaxed);
                Err(Overloaded)
            }
        }
    }
}

/// Cloning shares the pool.
#[derive(Clone)]
pub struct AsrPool {
    inner: Arc<Inner>,
}

impl AsrPool {
    /// Start `workers` threads, each with a queue of `queue_jobs_max` jobs and `limits`.
    pub fn start(
        engines: Arc<Engines>,
        workers: usize,
        queue_jobs_max: usize,
        limits: Limits,
    ) -> AsrPool {
        let metrics = Arc::new(PoolMetrics::default());
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = sync_channel(queue_jobs_max.max(1));
            let depth = Arc::new(AtomicUsize::new(0));
            let backlog_us = Arc::new(AtomicU64::new(0));
            let gauges = WorkerGauges {
                depth: depth.clone(),
                backlog_us: backlog_us.clone(),
            };
            let m = metrics.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("asr-{i}"))
                .spawn(move || run_worker(rx, gauges, m, limits));
            if let Err(e) = spawned {
                // The pool works with fewer threads; with none every begin is Overloaded.
                tracing::error!(error = %e, "cannot start ASR worker");
                continue;
            }
            handles.push(Worker {
                tx,
                depth,
                talking: Arc::new(AtomicUsize::new(0)),
                backlog_us,
            });
        }
        AsrPool {
            inner: Arc::new(Inner {
                workers: handles,
                metrics,
                engines: RwLock::new((0, engines)),
                max_lag: limits.max_lag,
            }),
        }
    }

    /// Swap in engines rebuilt from reloaded grammars; utterances already started finish on the
    /// old ones.
    pub fn set_engines(&self, engines: Arc<Engines>) {
        let mut g = self
            .inner
            .engines
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *g = (g.0 + 1, engines);
    }

    pub fn metrics(&self) -> &Arc<PoolMetrics> {
        &self.inner.metrics
    }

    /// The engines serving now (languages, backends, sample rates).
    pub fn engines(&self) -> Arc<Engines> {
        self.inner
            .engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Start recognizing utterance `utt` of call `call` (ids unique per call) in `mode`.
    pub fn begin(
        &self,
        call: u64,
        utt: u64,
        lang: Lang,
        mode: Mode,
        results: mpsc::Sender<AsrResult>,
    ) -> Result<Utterance, Overloaded> {
        let metrics = &self.inner.metrics;
        // The worker whose transcript would come first.
        let rtf = metrics.rtf_estimate();
        let lag_on = |w: &Worker| {
            let backlog_s = w.backlog_us.load(Relaxed) as f64 / 1e6;
            predicted_lag_s(backlog_s, w.talking.load(Relaxed), rtf)
        };
        let (worker, lag) = self
            .inner
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| (i, lag_on(w)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or_else(|| {
                metrics.overloaded_total.fetch_add(1, Relaxed);
                Overloaded
            })?;
        let max_lag = self.inner.max_lag.as_secs_f64();
        if max_lag > 0.0 && lag > max_lag {
            metrics.overloaded_total.fetch_add(1, Relaxed);
            metrics.admission_refused_total.fetch_add(1, Relaxed);
            return Err(Overloaded);
        }
        let (generation, engines) = self
            .inner
            .engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let rate_hz = engines.engine(lang).map_or(16_000, |e| e.sample_rate_hz());
        let cancelled = Arc::new(AtomicBool::new(false));
        self.inner.submit(
            worker,
            Job::Begin {
                key: (call, utt),
                lang,
                mode,
                engines,
                generation,
                results,
                cancelled: cancelled.clone(),
            },
        )?;
        self.inner.workers[worker].talking.fetch_add(1, Relaxed);
        Ok(Utterance {
            inner: self.inner.clone(),
            worker,
            key: (call, utt),
            cancelled,
            done: false,
            rate_hz: rate_hz.max(1),
        })
    }
}

/// A started utterance. Dropping it without `finish` cancels it.
pub struct Utterance {
    inner: Arc<Inner>,
    worker: usize,
    key: Key,
    cancelled: Arc<AtomicBool>,
    done: bool,
    /// The engine's sample rate (the audio's duration counts in the worker's backlog).
    rate_hz: u32,
}

impl Utterance {
    /// Audio from the endpointer, at the engine's rate. `Overloaded` loses the utterance: drop it
    /// and fall back.
    pub fn feed(&mut self, pcm: Vec<i16>) -> Result<(), Overloaded> {
        let us = pcm.len() as u64 * 1_000_000 / u64::from(self.rate_hz);
        let backlog = &self.inner.workers[self.worker].backlog_us;
        backlog.fetch_add(us, Relaxed);
        let r = self.inner.submit(
            self.worker,
            Job::Audio {
                key: self.key,
                pcm,
                us,
            },
        );
        if r.is_err() {
            backlog.fetch_sub(us, Relaxed);
        }
        r
    }

    /// End of utterance: the final transcript arrives on the results channel.
    pub fn finish(mut self) -> Result<(), Overloaded> {
        self.done = true;
        let r = self
            .inner
            .submit(self.worker, Job::Finish { key: self.key });
        if r.is_err() {
            self.cancelled.store(true, Relaxed);
        }
        r
    }
}

impl Drop for Utterance {
    fn drop(&mut self) {
        // Finished or cancelled, the caller no longer talks to this worker.
        self.inner.workers[self.worker]
            .talking
            .fetch_sub(1, Relaxed);
        if !self.done {
            // The flag frees the recognizer even when the Cancel cannot be queued.
            self.cancelled.store(true, Relaxed);
            let _ = self
                .inner
                .submit(self.worker, Job::Cancel { key: self.key });
        }
    }
}

struct Session {
    rec: Box<dyn Recognizer>,
    cache_key: (Lang, Mode),
    generation: u64,
    utt: u64,
    results: mpsc::Sender<AsrResult>,
    cancelled: Arc<AtomicBool>,
    last_partial: String,
}

#[derive(Default)]
struct Cache {
    generation: u64,
    idle: HashMap<(Lang, Mode), Vec<Box<dyn Recognizer>>>,
}

impl Cache {
    fn put(&mut self, s: Session) {
        if s.generation != self.generation {
            return;
        }
        let v = self.idle.entry(s.cache_key).or_default();
        if v.len() < IDLE_RECOGNIZERS_MAX {
            v.push(s.rec);
        }
    }

    fn idle_count(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    /// Drop one idle recognizer (of the mode with the most), to make room for another mode's.
    fn evict_one(&mut self) -> bool {
        let Some(v) = self.idle.values_mut().max_by_key(|v| v.len()) else {
            return false;
        };
        v.pop().is_some()
    }
}

/// Bounds on one worker: the recognizers it holds (their memory does not grow with the number
/// of callers talking) and the utterances that wait for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Recognizers, busy and idle, a worker holds at most.
    pub recognizers: usize,
    /// Utterances waiting for a recognizer; one more is refused (the caller gets the keypad).
    pub waiting: usize,
    /// Audio samples a waiting utterance buffers at most (beyond: refused).
    pub wait_samples: usize,
    /// How long an utterance that has ended may still wait for a recognizer before it is
    /// refused: the caller should not wait longer for an answer than for the keypad.
    pub wait_after_end: std::time::Duration,
    /// Admission: an utterance whose transcript is predicted later than this (at the measured
    /// RTF, [`predicted_lag_s`]) is refused at its start. Zero turns admission off.
    pub max_lag: std::time::Duration,
}

impl Default for Limits {
    /// 8 recognizers (PocketSphinx ≈ 5 MB each; RTF ≈ 0.06, so 8 live streams take about half
    /// a core), 8 waiting with up to 10 s of 16 kHz audio each, 3 s of grace after the end of
    /// an utterance. More waiting only floods the queue with audio that cannot be decoded in
    /// time (`manifest-talkers.toml`, BENCHMARKING.md).
    fn default() -> Self {
        Limits {
            recognizers: 8,
            waiting: 8,
            wait_samples: 160_000,
            wait_after_end: std::time::Duration::from_secs(3),
            max_lag: std::time::Duration::from_secs(1),
        }
    }
}

/// An utterance that began while every recognizer of its worker was busy: its audio is kept
/// until one is free.
struct Waiting {
    key: Key,
    lang: Lang,
    mode: Mode,
    engines: Arc<Engines>,
    generation: u64,
    results: mpsc::Sender<AsrResult>,
    cancelled: Arc<AtomicBool>,
    audio: Vec<i16>,
    ended_at: Option<Instant>,
}

enum Take {
    Got(Box<dyn Recognizer>),
    Busy,
    Failed(String),
}

/// One worker's recognizers and utterances. Plain data, driven by `handle_job`, `admit` and
/// `expire`, so the bounds are unit-tested without threads.
struct WorkerState {
    limits: Limits,
    sessions: HashMap<Key, Session>,
    waiting: std::collections::VecDeque<Waiting>,
    cache: Cache,
    /// Recognizers and waiting utterances last added to the pool's gauges.
    reported: (i64, i64),
}

impl WorkerState {
    fn new(limits: Limits) -> Self {
        WorkerState {
            limits,
            sessions: HashMap::new(),
            waiting: Default::default(),
            cache: Cache::default(),
            reported: (0, 0),
        }
    }

    fn recognizers(&self) -> usize {
        self.sessions.len() + self.cache.idle_count()
    }

    /// A recognizer for `lang`/`mode`: an idle one of this mode, else a new one if the bound
    /// allows (dropping an idle one of another mode if need be), else `Busy`.
    fn take(
        &mut self,
        lang: Lang,
        mode: &Mode,
        engines: &Engines,
        generation: u64,
        metrics: &PoolMetrics,
    ) -> Take {
        if generation == self.cache.generation {
            let key = (lang, mode.clone());
            if let Some(r) = self.cache.idle.get_mut(&key).and_then(Vec::pop) {
                return Take::Got(r);
            }
        }
        let Some(engine) = engines.engine(lang) else {
            return Take::Failed(format!("no speech recognizer for {lang}"));
        };
        if self.recognizers() >= self.limits.recognizers.max(1) && !self.cache.evict_one() {
            return Take::Busy;
        }
        metrics.recognizers_created_total.fetch_add(1, Relaxed);
        match engine.recognizer(mode) {
            Ok(r) => Take::Got(r),
            Err(e) => Take::Failed(e.to_string()),
        }
    }

    fn handle_job(&mut self, job: Job, metrics: &PoolMetrics) {
        match job {
            Job::Begin {
                key,
                lang,
                mode,
                engines,
                generation,
                results,
                cancelled,
            } => {
                if generation > self.cache.generation {
                    // Grammars reloaded: recognizers of the old engines are not reused.
                    self.cache.generation = generation;
                    self.cache.idle.clear();
                }
                // First come, first served: a new utterance never overtakes one that waits.
                let take = if self.waiting.is_empty() {
                    self.take(lang, &mode, &engines, generation, metrics)
                } else {
                    Take::Busy
                };
                match take {
                    Take::Got(rec) => {
                        self.sessions.insert(
                            key,
                            Session {
                                rec,
                                cache_key: (lang, mode),
                                generation,
                                utt: key.1,
                                results,
                                cancelled,
                                last_partial: String::new(),
                            },
                        );
                    }
                    Take::Failed(error) => {
                        metrics.failed_total.fetch_add(1, Relaxed);
                        let _ = results.try_send(AsrResult::Failed { utt: key.1, error });
                    }
                    Take::Busy if self.waiting.len() < self.limits.waiting => {
                        self.waiting.push_back(Waiting {
                            key,
                            lang,
                            mode,
                            engines,
                            generation,
                            results,
                            cancelled,
                            audio: Vec::new(),
                            ended_at: None,
                        });
                    }
                    Take::Busy => refuse(&results, key, metrics),
                }
            }
            Job::Audio { key, pcm, .. } => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    feed(s, &pcm, metrics);
                } else if let Some(i) = self.waiting.iter().position(|w| w.key == key) {
                    let w = &mut self.waiting[i];
                    if w.audio.len() + pcm.len() > self.limits.wait_samples {
                        if let Some(w) = self.waiting.remove(i) {
                            refuse(&w.results, w.key, metrics);
                        }
                    } else {
                        w.audio.extend_from_slice(&pcm);
                    }
                }
            }
            // Only a finished or cancelled session frees a recognizer: only then can a waiting
            // utterance be admitted (not on every 20 ms audio job).
            Job::Finish { key } => {
                if let Some(s) = self.sessions.remove(&key) {
                    self.finish(s, metrics);
                    self.admit(metrics);
                } else if let Some(w) = self.waiting.iter_mut().find(|w| w.key == key) {
                    w.ended_at = Some(Instant::now());
                }
            }
            Job::Cancel { key } => {
                if let Some(mut s) = self.sessions.remove(&key) {
                    s.rec.reset();
                    self.cache.put(s);
                    self.admit(metrics);
                } else {
                    self.waiting.retain(|w| w.key != key);
                }
            }
        }
    }

    fn finish(&mut self, mut s: Session, metrics: &PoolMetrics) {
        let transcript = s.rec.finish();
        metrics.utterances_total.fetch_add(1, Relaxed);
        let _ = s.results.try_send(AsrResult::Final {
            utt: s.utt,
            transcript,
        });
        self.cache.put(s);
    }

    /// Give freed recognizers to the utterances waiting, oldest first: their audio so far is
    /// decoded at once (faster than real time), and one that has ended gets its transcript.
    fn admit(&mut self, metrics: &PoolMetrics) {
        while let Some(w) = self.waiting.front() {
            if w.cancelled.load(Relaxed) {
                self.waiting.pop_front();
                continue;
            }
            let (lang, mode, engines, generation) =
                (w.lang, w.mode.clone(), w.engines.clone(), w.generation);
            let rec = match self.take(lang, &mode, &engines, generation, metrics) {
                Take::Busy => break,
                Take::Got(rec) => rec,
                Take::Failed(error) => {
                    if let Some(w) = self.waiting.pop_front() {
                        metrics.failed_total.fetch_add(1, Relaxed);
                        let _ = w.results.try_send(AsrResult::Failed {
                            utt: w.key.1,
                            error,
                        });
                    }
                    continue;
                }
            };
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            let mut s = Session {
                rec,
                cache_key: (w.lang, w.mode),
                generation: w.generation,
                utt: w.key.1,
                results: w.results,
                cancelled: w.cancelled,
                last_partial: String::new(),
            };
            let frame = (s.rec.sample_rate_hz() / 50).max(1) as usize;
            for chunk in w.audio.chunks(frame) {
                feed(&mut s, chunk, metrics);
            }
            if w.ended_at.is_some() {
                self.finish(s, metrics);
            } else {
                self.sessions.insert(w.key, s);
            }
        }
    }

    /// Add this worker's change in recognizers and waiting utterances to the pool's gauges.
    fn report(&mut self, metrics: &PoolMetrics) {
        let (r, w) = (self.recognizers() as i64, self.waiting.len() as i64);
        metrics.recognizers.fetch_add(r - self.reported.0, Relaxed);
        metrics.waiting.fetch_add(w - self.reported.1, Relaxed);
        self.reported = (r, w);
    }

    /// Refuse the ended utterances that waited longer than `wait_after_end` (keypad instead of
    /// a late answer), and return the recognizers of dropped handles.
    fn expire(&mut self, now: Instant, metrics: &PoolMetrics) {
        let limit = self.limits.wait_after_end;
        let mut i = 0;
        while i < self.waiting.len() {
            let w = &self.waiting[i];
            let late = w
                .ended_at
                .is_some_and(|t| now.saturating_duration_since(t) > limit);
            if late || w.cancelled.load(Relaxed) {
                if let Some(w) = self.waiting.remove(i)
                    && late
                {
                    refuse(&w.results, w.key, metrics);
                }
            } else {
                i += 1;
            }
        }
        let gone: Vec<Key> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.cancelled.load(Relaxed))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(mut s) = self.sessions.remove(&k) {
                s.rec.reset();
                self.cache.put(s);
            }
        }
        self.admit(metrics);
    }
}

fn feed(s: &mut Session, pcm: &[i16], metrics: &PoolMetrics) {
    let rate = s.rec.sample_rate_hz().max(1) as u64;
    let audio_us = pcm.len() as u64 * 1_000_000 / rate;
    metrics.audio_us_total.fetch_add(audio_us, Relaxed);
    let started = Instant::now();
    let partial = s.rec.accept(pcm);
    metrics.observe_rtf(started.elapsed().as_micros() as u64, audio_us);
    if let Some(p) = partial
        && p.text != s.last_partial
    {
        s.last_partial = p.text.clone();
        // A full results channel only loses a partial; the final comes later.
        let _ = s.results.try_send(AsrResult::Partial {
            utt: s.utt,
            text: p.text,
        });
    }
}

/// No recognizer in time: the call moves the caller to the keypad.
fn refuse(results: &mpsc::Sender<AsrResult>, key: Key, metrics: &PoolMetrics) {
    metrics.overloaded_total.fetch_add(1, Relaxed);
    let _ = results.try_send(AsrResult::Failed {
        utt: key.1,
        error: Overloaded.to_string(),
    });
}

/// What a worker takes off its pool-side gauges as it handles jobs.
struct WorkerGauges {
    depth: Arc<AtomicUsize>,
    backlog_us: Arc<AtomicU64>,
}

fn run_worker(rx: Receiver<Job>, gauges: WorkerGauges, metrics: Arc<PoolMetrics>, limits: Limits) {
    let mut state = WorkerState::new(limits);
    let tick = std::time::Duration::from_millis(50);
    loop {
        let job = match rx.try_recv() {
            Ok(j) => j,
            Err(TryRecvError::Empty) => {
                state.expire(Instant::now(), &metrics);
                state.report(&metrics);
                // While utterances wait, wake on a tick to enforce their deadline.
                let next = if state.waiting.is_empty() {
                    rx.recv().map_err(|_| ())
                } else {
                    match rx.recv_timeout(tick) {
                        Ok(j) => Ok(j),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(()),
                    }
                };
                match next {
                    Ok(j) => j,
                    Err(()) => return,
                }
            }
            Err(TryRecvError::Disconnected) => return,
        };
        gauges.depth.fetch_sub(1, Relaxed);
        metrics.queue_depth.fetch_sub(1, Relaxed);
        if let Job::Audio { us, .. } = &job {
            gauges.backlog_us.fetch_sub(*us, Relaxed);
        }
        let started = Instant::now();
        state.handle_job(job, &metrics);
        state.report(&metrics);
        metrics
            .busy_us_total
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How long a test waits for a worker.
    const TEST_WAIT: Duration = Duration::from_secs(30);

    #[test]
    fn no_engine_fails_fast() {
        let pool = AsrPool::start(Arc::new(Engines::default()), 1, 2, Limits::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let u = pool
            .begin(1, 7, Lang::Es, Mode::Domain, tx.clone())
            .unwrap();
        let got = rt.block_on(async { tokio::time::timeout(TEST_WAIT, rx.recv()).await });
        assert!(
            matches!(got, Ok(Some(AsrResult::Failed { utt: 7, .. }))),
            "{got:?}"
        );
        drop(u);
    }

    /// The prediction: an idle worker answers at once; callers talking beyond what it decodes
    /// in real time, and audio already queued, make the answer late by what they leave behind.
    #[test]
    fn predicted_lag_grows_with_talkers_past_the_workers_speed_and_with_the_backlog() {
        // RTF 0.1: a worker keeps up with 10 callers talking at once.
        assert_eq!(predicted_lag_s(0.0, 0, 0.1), 0.0);
        assert_eq!(predicted_lag_s(0.0, 9, 0.1), 0.0);
        // 15 talking (14 + the new one) for 2 s leave 10 s of audio: 1 s to decode.
        assert!((predicted_lag_s(0.0, 14, 0.1) - 1.0).abs() < 1e-9);
        // A backlog drains while fewer talk than the worker keeps up with.
        assert_eq!(predicted_lag_s(5.0, 4, 0.1), 0.0);
        assert!((predicted_lag_s(5.0, 9, 0.1) - 0.5).abs() < 1e-9);
        // A slow worker (RTF 0.5, two talkers in real time) is late with the third.
        assert_eq!(predicted_lag_s(0.0, 1, 0.5), 0.0);
        assert!((predicted_lag_s(0.0, 2, 0.5) - 1.0).abs() < 1e-9);
        assert!((predicted_lag_s(0.0, 3, 0.5) - 2.0).abs() < 1e-9);
    }

    /// Admission uses the measured RTF (a moving average, not the prior once audio was decoded)
    /// and the callers talking: past the bound an utterance is refused at its start, counted,
    /// and one more is admitted as soon as a talker finishes.
    #[test]
    fn utterances_are_refused_at_their_start_when_the_measured_speed_cannot_answer_in_time() {
        let pool = AsrPool::start(Arc::new(Engines::default()), 1, 64, Limits::default());
        let m = pool.metrics().clone();
        assert_eq!(m.rtf_estimate(), RTF_PRIOR);
        // Measured: 0.5 s of work per second of audio; then a faster stretch moves the average
        // by its share of the window.
        m.observe_rtf(500_000, 1_000_000);
        assert!((m.rtf_estimate() - 0.5).abs() < 1e-9);
        m.observe_rtf(100_000, 1_000_000);
        assert!(
            (m.rtf_estimate() - 0.46).abs() < 1e-9,
            "{}",
            m.rtf_estimate()
        );
        m.observe_rtf(500_000, 1_000_000);
        let (tx, _rx) = mpsc::channel(64);
        // RTF 0.464: the worker keeps up with 2.16 talkers. Predicted lags 0, 0, 0.78, 1.71 s:
        // the fourth is refused.
        let a = pool
            .begin(1, 1, Lang::En, Mode::Domain, tx.clone())
            .unwrap();
        let b = pool
            .begin(2, 1, Lang::En, Mode::Domain, tx.clone())
            .unwrap();
        let c = pool
            .begin(3, 1, Lang::En, Mode::Domain, tx.clone())
            .unwrap();
        assert_eq!(
            pool.begin(4, 1, Lang::En, Mode::Domain, tx.clone()).err(),
            Some(Overloaded)
        );
        assert_eq!(m.admission_refused_total.load(Relaxed), 1);
        assert!(m.render().contains("ivr_asr_admission_refused_total 1"));
        assert!(m.render().contains("ivr_asr_rtf_estimate 0.4640"));
        // A talker finished: room again.
        b.finish().unwrap();
        let d = pool
            .begin(4, 2, Lang::En, Mode::Domain, tx.clone())
            .unwrap();
        drop((a, c, d));
        // Admission off: nothing is refused for lateness.
        let off = Limits {
            max_lag: std::time::Duration::ZERO,
            ..Limits::default()
        };
        let pool = AsrPool::start(Arc::new(Engines::default()), 1, 64, off);
        pool.metrics().observe_rtf(5_000_000, 1_000_000);
        let held: Vec<Utterance> = (0..5)
            .map(|i| {
                pool.begin(i, 1, Lang::En, Mode::Domain, tx.clone())
                    .unwrap()
            })
            .collect();
        assert_eq!(pool.metrics().admission_refused_total.load(Relaxed), 0);
        drop(held);
    }

    #[test]
    fn a_full_queue_answers_overloaded_at_once() {
        // A worker that never drains: its queue of 2 fills and the third submit is refused.
        let (tx, _rx) = sync_channel(2);
        let inner = Arc::new(Inner {
            workers: vec![Worker {
                tx,
                depth: Arc::new(AtomicUsize::new(0)),
                talking: Arc::new(AtomicUsize::new(0)),
                backlog_us: Arc::new(AtomicU64::new(0)),
            }],
            metrics: Arc::new(PoolMetrics::default()),
            engines: RwLock::new((0, Arc::new(Engines::default()))),
            // Only the queue's bound is tested here.
            max_lag: std::time::Duration::ZERO,
        });
        let pool = AsrPool { inner };
        let (rtx, _rrx) = mpsc::channel(8);
        let mut u = pool
            .begin(1, 1, Lang::En, Mode::Domain, rtx.clone())
            .unwrap();
        assert_eq!(u.feed(vec![0; 320]), Ok(()));
        assert_eq!(u.feed(vec![0; 320]), Err(Overloaded));
        assert!(pool.begin(1, 2, Lang::En, Mode::Domain, rtx).is_err());
        assert_eq!(pool.metrics().overloaded_total.load(Relaxed), 2);
        assert_eq!(pool.metrics().queue_depth.load(Relaxed), 2);
        // Dropping the handle flags the session even though the Cancel cannot be queued.
        let flag = u.cancelled.clone();
        drop(u);
        assert!(flag.load(Relaxed));
        assert!(
            pool.metrics()
                .render()
                .contains("ivr_asr_overloaded_total 3")
        );
    }

    /// PocketSphinx for a yes/no grammar, and "yes please" spoken by espeak-ng at 16 kHz.
    fn sphinx_yes_please(tag: &str) -> (Engines, Vec<String>, Vec<i16>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ivr-pool-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wav = dir.join("yes.wav");
        let ok = std::process::Command::new("espeak-ng")
            .args(["-v", "en-us", "-w"])
            .arg(&wav)
            .arg("yes please")
            .status()
            .expect("espeak-ng installed")
            .success();
        assert!(ok);
        let mut r = hound::WavReader::open(&wav).unwrap();
        let rate = r.spec().sample_rate;
        let pcm: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        let pcm = crate::audio::resample::resample(&pcm, rate, 16_000);
        let phrases: Vec<String> = ["yes please", "no thank you", "yes", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let engine = crate::asr::sphinx::SphinxEngine::load(
            std::path::Path::new(crate::asr::sphinx::DEFAULT_MODEL_DIR),
            &phrases,
            &phrases,
            &dir,
        )
        .expect("pocketsphinx-en-us installed");
        let mut engines = Engines::default();
        engines.insert(Lang::En, crate::asr::Engine::Sphinx(engine));
        (engines, phrases, pcm, dir)
    }

    /// The real path: PocketSphinx on a worker thread, results on a tokio channel, and the
    /// recognizer reused by the next utterance of the same mode.
    #[test]
    fn utterances_are_recognized_on_workers_with_reused_recognizers() {
        let (engines, phrases, pcm, dir) = sphinx_yes_please("workers");
        let pool = AsrPool::start(Arc::new(engines), 2, 64, Limits::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        for utt in 0..2 {
            let mode = Mode::Grammar(phrases.clone());
            let mut u = pool.begin(9, utt, Lang::En, mode, tx.clone()).unwrap();
            for f in pcm.chunks(320) {
                u.feed(f.to_vec()).unwrap();
            }
            u.finish().unwrap();
            let text = rt.block_on(async {
                loop {
                    match tokio::time::timeout(TEST_WAIT, rx.recv()).await {
                        Ok(Some(AsrResult::Final {
                            utt: got,
                            transcript,
                        })) => {
                            assert_eq!(got, utt);
                            break transcript.text;
                        }
                        Ok(Some(AsrResult::Partial { .. })) => continue,
                        other => panic!("{other:?}"),
                    }
                }
            });
            assert_eq!(text, "yes please");
        }
        let m = pool.metrics();
        assert_eq!(m.recognizers_created_total.load(Relaxed), 1);
        assert_eq!(m.utterances_total.load(Relaxed), 2);
        assert!(m.rtf() > 0.0 && m.rtf() < 1.0, "rtf {}", m.rtf());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn begin(
        key: Key,
        engines: &Arc<Engines>,
        mode: &Mode,
        results: &mpsc::Sender<AsrResult>,
    ) -> Job {
        Job::Begin {
            key,
            lang: Lang::En,
            mode: mode.clone(),
            engines: engines.clone(),
            generation: 0,
            results: results.clone(),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// More talkers than recognizers: memory stays at the bound, the utterance that found none
    /// free waits with its audio and is recognized when one is freed, one more than may wait
    /// gets the keypad at once, and one that ended and waited too long gets it too.
    #[test]
    fn recognizers_are_bounded_and_utterances_wait_for_one() {
        let (engines, phrases, pcm, dir) = sphinx_yes_please("bounded");
        let engines = Arc::new(engines);
        let mode = Mode::Grammar(phrases);
        let metrics = PoolMetrics::default();
        let limits = Limits {
            recognizers: 1,
            waiting: 2,
            wait_samples: pcm.len() + 320,
            wait_after_end: std::time::Duration::from_secs(3),
            max_lag: std::time::Duration::ZERO,
        };
        let mut w = WorkerState::new(limits);
        let (tx, mut rx) = mpsc::channel(256);
        for utt in 1..=4 {
            w.handle_job(begin((7, utt), &engines, &mode, &tx), &metrics);
            w.report(&metrics);
        }
        assert_eq!(w.recognizers(), 1, "one recognizer, however many talk");
        assert_eq!(w.waiting.len(), 2, "utterances 2 and 3 wait");
        // Utterance 4 found no room to wait: the keypad, at once.
        assert!(
            matches!(rx.try_recv(), Ok(AsrResult::Failed { utt: 4, .. })),
            "the fourth is refused"
        );
        for utt in 1..=3 {
            for f in pcm.chunks(320) {
                w.handle_job(
                    Job::Audio {
                        key: (7, utt),
                        pcm: f.to_vec(),
                        us: 20_000,
                    },
                    &metrics,
                );
            }
        }
        // 3 ends first, but 2 waited longer: the freed recognizer goes to 2.
        w.handle_job(Job::Finish { key: (7, 3) }, &metrics);
        w.handle_job(Job::Finish { key: (7, 1) }, &metrics);
        assert!(w.sessions.contains_key(&(7, 2)), "2 got the recognizer");
        assert_eq!(w.recognizers(), 1);
        let mut finals = Vec::new();
        while let Ok(r) = rx.try_recv() {
            if let AsrResult::Final { utt, transcript } = r {
                finals.push((utt, transcript.text));
            }
        }
        assert_eq!(finals, vec![(1, "yes please".to_string())]);
        // 3 has ended and waits; past its grace it is refused, not left hanging.
        w.expire(Instant::now() + std::time::Duration::from_secs(4), &metrics);
        assert!(w.waiting.is_empty());
        assert!(matches!(
            rx.try_recv(),
            Ok(AsrResult::Failed { utt: 3, .. })
        ));
        // 2 was decoded from its buffered audio and finishes with the right words.
        w.handle_job(Job::Finish { key: (7, 2) }, &metrics);
        assert!(matches!(
            rx.try_recv(),
            Ok(AsrResult::Final { utt: 2, ref transcript }) if transcript.text == "yes please"
        ));
        w.report(&metrics);
        assert_eq!(metrics.recognizers_created_total.load(Relaxed), 1);
        assert_eq!(
            metrics.recognizers.load(Relaxed),
            1,
            "one idle recognizer kept"
        );
        assert_eq!(metrics.waiting.load(Relaxed), 0);
        assert_eq!(metrics.overloaded_total.load(Relaxed), 2, "4 and 3 refused");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A waiting utterance longer than its buffer is refused rather than growing memory.
    #[test]
    fn a_waiting_utterance_past_its_buffer_is_refused() {
        let (engines, phrases, pcm, dir) = sphinx_yes_please("overflow");
        let engines = Arc::new(engines);
        let mode = Mode::Grammar(phrases);
        let metrics = PoolMetrics::default();
        let limits = Limits {
            recognizers: 1,
            waiting: 4,
            wait_samples: 3_200,
            ..Limits::default()
        };
        let mut w = WorkerState::new(limits);
        let (tx, mut rx) = mpsc::channel(64);
        w.handle_job(begin((1, 1), &engines, &mode, &tx), &metrics);
        w.handle_job(begin((2, 1), &engines, &mode, &tx), &metrics);
        for f in pcm.chunks(320).take(11) {
            w.handle_job(
                Job::Audio {
                    key: (2, 1),
                    pcm: f.to_vec(),
                    us: 20_000,
                },
                &metrics,
            );
        }
        assert!(w.waiting.is_empty(), "refused past 3,200 samples");
        assert!(matches!(
            rx.try_recv(),
            Ok(AsrResult::Failed { utt: 1, .. })
        ));
        assert_eq!(w.recognizers(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
