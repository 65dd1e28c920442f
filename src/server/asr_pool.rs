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
    pub overloaded_total: AtomicU64,
    pub utterances_total: AtomicU64,
    pub recognizers_created_total: AtomicU64,
    pub failed_total: AtomicU64,
    /// Audio fed to recognizers, in microseconds of speech.
    pub audio_us_total: AtomicU64,
    /// Worker time spent recognizing.
    pub busy_us_total: AtomicU64,
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

    /// Prometheus text, to append to the server's own metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, i128); 7] = [
            (
                "asr_queue_depth",
                "gauge",
                "ASR jobs waiting for a worker.",
                self.queue_depth.load(Relaxed) as i128,
            ),
            (
                "asr_overloaded_total",
                "counter",
                "Utterances or frames refused because the ASR queue was full.",
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
        ];
        for (name, kind, help, v) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP ivr_{name} {help}\n# TYPE ivr_{name} {kind}\nivr_{name} {v}"
            );
        }
        out
    }
}

type Key = (u64, u64);

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
}

struct Inner {
    workers: Vec<Worker>,
    metrics: Arc<PoolMetrics>,
    engines: RwLock<(u64, Arc<Engines>)>,
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
    /// Start `workers` threads, each with a queue of `queue_jobs_max` jobs.
    pub fn start(engines: Arc<Engines>, workers: usize, queue_jobs_max: usize) -> AsrPool {
        let metrics = Arc::new(PoolMetrics::default());
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = sync_channel(queue_jobs_max.max(1));
            let depth = Arc::new(AtomicUsize::new(0));
            let (m, d) = (metrics.clone(), depth.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("asr-{i}"))
                .spawn(move || run_worker(rx, d, m));
            if let Err(e) = spawned {
                // The pool works with fewer threads; with none every begin is Overloaded.
                tracing::error!(error = %e, "cannot start ASR worker");
                continue;
            }
            handles.push(Worker { tx, depth });
        }
        AsrPool {
            inner: Arc::new(Inner {
                workers: handles,
                metrics,
                engines: RwLock::new((0, engines)),
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
        let worker = self
            .inner
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.depth.load(Relaxed))
            .map(|(i, _)| i)
            .ok_or_else(|| {
                self.inner.metrics.overloaded_total.fetch_add(1, Relaxed);
                Overloaded
            })?;
        let (generation, engines) = self
            .inner
            .engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
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
        Ok(Utterance {
            inner: self.inner.clone(),
            worker,
            key: (call, utt),
            cancelled,
            done: false,
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
}

impl Utterance {
    /// Audio from the endpointer, at the engine's rate. `Overloaded` loses the utterance: drop it
    /// and fall back.
    pub fn feed(&mut self, pcm: Vec<i16>) -> Result<(), Overloaded> {
        self.inner
            .submit(self.worker, Job::Audio { key: self.key, pcm })
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
}

fn run_worker(rx: Receiver<Job>, depth: Arc<AtomicUsize>, metrics: Arc<PoolMetrics>) {
    let mut sessions: HashMap<Key, Session> = HashMap::new();
    let mut cache = Cache::default();
    loop {
        let job = match rx.try_recv() {
            Ok(j) => j,
            Err(TryRecvError::Empty) => {
                sweep(&mut sessions, &mut cache);
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => return,
        };
        depth.fetch_sub(1, Relaxed);
        metrics.queue_depth.fetch_sub(1, Relaxed);
        let started = Instant::now();
        handle_job(job, &mut sessions, &mut cache, &metrics);
        metrics
            .busy_us_total
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    }
}

/// Return the recognizers of utterances whose handle was dropped.
fn sweep(sessions: &mut HashMap<Key, Session>, cache: &mut Cache) {
    let gone: Vec<Key> = sessions
        .iter()
        .filter(|(_, s)| s.cancelled.load(Relaxed))
        .map(|(k, _)| *k)
        .collect();
    for k in gone {
        if let Some(mut s) = sessions.remove(&k) {
            s.rec.reset();
            cache.put(s);
        }
    }
}

fn handle_job(
    job: Job,
    sessions: &mut HashMap<Key, Session>,
    cache: &mut Cache,
    metrics: &PoolMetrics,
) {
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
            if generation != cache.generation {
                // Grammars reloaded: recognizers of the old engines are not reused.
                cache.generation = generation;
                cache.idle.clear();
            }
            let cache_key = (lang, mode);
            let pooled = cache.idle.get_mut(&cache_key).and_then(Vec::pop);
            let rec = match pooled {
                Some(r) => Ok(r),
                None => match engines.engine(lang) {
                    Some(e) => {
                        metrics.recognizers_created_total.fetch_add(1, Relaxed);
                        e.recognizer(&cache_key.1).map_err(|e| e.to_string())
                    }
                    None => Err(format!("no speech recognizer for {lang}")),
                },
            };
            match rec {
                Ok(rec) => {
                    sessions.insert(
                        key,
                        Session {
                            rec,
                            cache_key,
                            generation,
                            utt: key.1,
                            results,
                            cancelled,
                            last_partial: String::new(),
                        },
                    );
                }
                Err(error) => {
                    metrics.failed_total.fetch_add(1, Relaxed);
                    let _ = results.try_send(AsrResult::Failed { utt: key.1, error });
                }
            }
        }
        Job::Audio { key, pcm } => {
            let Some(s) = sessions.get_mut(&key) else {
                return;
            };
            let rate = s.rec.sample_rate_hz().max(1) as u64;
            metrics
                .audio_us_total
                .fetch_add(pcm.len() as u64 * 1_000_000 / rate, Relaxed);
            if let Some(p) = s.rec.accept(&pcm)
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
        Job::Finish { key } => {
            let Some(mut s) = sessions.remove(&key) else {
                return;
            };
            let transcript = s.rec.finish();
            metrics.utterances_total.fetch_add(1, Relaxed);
            let _ = s.results.try_send(AsrResult::Final {
                utt: s.utt,
                transcript,
            });
            cache.put(s);
        }
        Job::Cancel { key } => {
            if let Some(mut s) = sessions.remove(&key) {
                s.rec.reset();
                cache.put(s);
            }
        }
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
        let pool = AsrPool::start(Arc::new(Engines::default()), 1, 2);
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

    #[test]
    fn a_full_queue_answers_overloaded_at_once() {
        // A worker that never drains: its queue of 2 fills and the third submit is refused.
        let (tx, _rx) = sync_channel(2);
        let inner = Arc::new(Inner {
            workers: vec![Worker {
                tx,
                depth: Arc::new(AtomicUsize::new(0)),
            }],
            metrics: Arc::new(PoolMetrics::default()),
            engines: RwLock::new((0, Arc::new(Engines::default()))),
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

    /// The real path: PocketSphinx on a worker thread, results on a tokio channel, and the
    /// recognizer reused by the next utterance of the same mode.
    #[test]
    fn utterances_are_recognized_on_workers_with_reused_recognizers() {
        let dir = std::env::temp_dir().join(format!("ivr-pool-{}", std::process::id()));
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
        let pool = AsrPool::start(Arc::new(engines), 2, 64);
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
}
