//! A run: N calls from the manifest's scripts at a concurrency (and optionally a start rate or a
//! duration), the IVR's CPU and memory sampled meanwhile, everything summed up in a [`Report`].
//! `capacity` repeats runs at growing concurrency until an objective breaks.

use std::io::{IsTerminal, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::audio::AudioSet;
use crate::call::{ANSWER_TIMEOUT, CallCtx, CallResult, run_call};
use crate::impair::{ImpairCounts, Impairment};
use crate::manifest::{Manifest, Objectives};
use crate::nodes::{Node, NodeFigures, NodeTimeline, Sampler};
use crate::procfs;
use crate::sender::Sender;
use crate::stats::Dist;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `sip:ivr@host[:port]`.
    pub target: String,
    pub manifest: PathBuf,
    /// Overrides the manifest's `audio_dir`.
    pub audio_dir: Option<PathBuf>,
    /// Total calls; default one per script, or unbounded with `duration`.
    pub calls: Option<usize>,
    pub concurrency: usize,
    /// New calls per second at most.
    pub rate: Option<f64>,
    /// No new call starts after this.
    pub duration: Option<Duration>,
    pub report_dir: Option<PathBuf>,
    /// `http://host:port` of the admin API; default the target's host, port 8080.
    pub admin: Option<String>,
    /// Do not fetch call records (no expectation is checked).
    pub no_check: bool,
    pub ivr_pid: Option<u32>,
    /// The IVR nodes behind the target (a proxy): each one's CPU, memory and calls are read
    /// from its admin API during the run. Empty: one local IVR, measured from /proc.
    pub nodes: Vec<Node>,
    /// Bearer token sent to every admin API (`[admin] token_file` on the IVR).
    pub admin_token: Option<Arc<str>>,
    pub sender_threads: usize,
    /// Objectives from flags; they override the manifest's.
    pub objectives: Objectives,
    /// Redraw a progress line on stderr.
    pub progress: bool,
    pub answer_timeout: Duration,
    /// Network impairment of the callers' RTP (`--impair`), and its seed.
    pub impair: Impairment,
    pub seed: u64,
    /// Keep at most this many pacing samples per call (evenly spread): a soak's hour of calls
    /// would otherwise hold every packet interval of every call until the report.
    pub pacing_samples_per_call: Option<usize>,
}

/// The default `--seed`: runs are reproducible unless asked otherwise.
pub const DEFAULT_SEED: u64 = 1;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            target: "sip:ivr@127.0.0.1:5060".into(),
            manifest: PathBuf::from("loadtest/samples/manifest.toml"),
            audio_dir: None,
            calls: None,
            concurrency: 10,
            rate: None,
            duration: None,
            report_dir: None,
            admin: None,
            no_check: false,
            ivr_pid: None,
            nodes: Vec::new(),
            admin_token: None,
            sender_threads: 2,
            objectives: Objectives::default(),
            progress: true,
            answer_timeout: ANSWER_TIMEOUT,
            impair: Impairment::default(),
            seed: DEFAULT_SEED,
            pacing_samples_per_call: None,
        }
    }
}

#[derive(Debug)]
pub enum RunError {
    Setup(String),
    Io(std::io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Setup(e) => f.write_str(e),
            RunError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<std::io::Error> for RunError {
    fn from(e: std::io::Error) -> Self {
        RunError::Io(e)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub calls: Option<usize>,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub duration_s: Option<f64>,
    pub sender_threads: usize,
    pub expectations_checked: bool,
    /// `--impair` as given (normalized; "none" without), its parameters, and `--seed`.
    pub impair: String,
    pub impairment: Impairment,
    pub seed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub total: usize,
    pub connected: usize,
    pub passed: usize,
    pub failed: usize,
}

/// Distributions over the run. Per call: invite, first audio, jitter, loss. Per response:
/// response. Per packet interval of the IVR's streams: pacing error.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub invite_ms: Dist,
    pub first_audio_ms: Dist,
    pub response_ms: Dist,
    pub reaction_ms: Dist,
    pub jitter_ms: Dist,
    pub loss_pct: Dist,
    pub pacing_error_ms: Dist,
    /// TTY scripts: characters typed, and the character error rate (%) of what the IVR read
    /// (edit distance over characters typed; `None` without TTY calls).
    pub tty_chars: usize,
    pub tty_cer_pct: Option<f64>,
    /// What the impairment did to the callers' packets, summed over calls (`None` without).
    pub impairment: Option<ImpairCounts>,
}

/// How well the tool itself kept time: lateness of its pacing ticks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SenderFigures {
    pub threads: usize,
    pub ticks: u64,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
    pub late_over_2ms_pct: f64,
    pub resyncs: u64,
    pub packets_sent: u64,
    /// The tester's own CPU over the run (its process: pacing threads, callers, SIP), % of one
    /// core: on a box it shares with the IVR, what the tester takes from it.
    pub tester_cpu_pct: f64,
    /// The tester's peak resident memory in the run, MiB.
    pub tester_rss_mib: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IvrFigures {
    pub pid: u32,
    pub cpu_pct_mean: f64,
    pub cpu_pct_max: f64,
    pub rss_mib_start: f64,
    pub rss_mib_max: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    pub active_calls: usize,
    pub done_calls: usize,
    pub ivr_cpu_pct: Option<f64>,
    pub ivr_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScriptSummary {
    pub name: String,
    pub calls: usize,
    pub passed: usize,
    pub failed: usize,
    pub response_p50_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectiveResult {
    pub name: String,
    pub limit: f64,
    pub value: f64,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub call: usize,
    pub script: String,
    pub call_id: String,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub target: String,
    pub manifest: String,
    pub started_unix_s: u64,
    pub wall_s: f64,
    pub settings: Settings,
    pub calls: Counts,
    pub figures: Figures,
    pub sender: SenderFigures,
    pub ivr: Option<IvrFigures>,
    /// Each node behind the proxy (`--cluster`, `--node-admin`), from its admin API.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeFigures>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_timeline: Vec<NodeTimeline>,
    pub timeline: Vec<TimelinePoint>,
    pub scripts: Vec<ScriptSummary>,
    pub objectives: Vec<ObjectiveResult>,
    pub failures: Vec<Failure>,
    pub per_call: Vec<CallResult>,
    pub passed: bool,
}

/// What stays the same across the runs of a capacity test.
pub struct Prepared {
    pub manifest: Manifest,
    pub audio: Arc<AudioSet>,
    pub target_addr: SocketAddr,
    /// Where call records are read (in order); empty with `--no-check`.
    pub admins: Vec<SocketAddr>,
    pub ivr_pid: Option<u32>,
    pub nodes: Vec<Node>,
    pub objectives: Objectives,
}

pub fn prepare(opts: &RunOptions) -> Result<Prepared, RunError> {
    let manifest = Manifest::load(&opts.manifest).map_err(|e| RunError::Setup(e.to_string()))?;
    let base = opts.manifest.parent().unwrap_or(Path::new("."));
    let audio_dir = opts.audio_dir.clone().unwrap_or_else(|| {
        base.join(
            manifest
                .audio_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".")),
        )
    });
    let audio = AudioSet::prepare(&manifest, &audio_dir).map_err(|e| {
        RunError::Setup(format!(
            "{e} (generate the sample audio with loadtest/samples/make-samples, or pass --audio-dir)"
        ))
    })?;
    let target_addr = target_addr(&opts.target)?;
    // Through a proxy without --admin, the nodes' own admin APIs hold the records (any node
    // with shared storage, the node that took the call without).
    let admins = if opts.no_check {
        Vec::new()
    } else {
        match &opts.admin {
            Some(a) => vec![admin_addr(a)?],
            None if !opts.nodes.is_empty() => opts.nodes.iter().map(|n| n.admin).collect(),
            None => vec![SocketAddr::new(target_addr.ip(), 8080)],
        }
    };
    // The process holding the target's port is the proxy when there are nodes: not the IVR.
    let ivr_pid = opts.ivr_pid.or_else(|| {
        opts.nodes
            .is_empty()
            .then(|| procfs::pid_by_udp_port(target_addr.port()))
            .flatten()
    });
    let objectives = manifest.objectives.merged(&opts.objectives);
    Ok(Prepared {
        manifest,
        audio: Arc::new(audio),
        target_addr,
        admins,
        ivr_pid,
        nodes: opts.nodes.clone(),
        objectives,
    })
}

/// `sip:user@host[:port][;params]` → the address to send to (5060 by default).
pub fn target_addr(uri: &str) -> Result<SocketAddr, RunError> {
    let bad = || RunError::Setup(format!("target {uri:?}: expected sip:user@host[:port]"));
    let rest = uri.strip_prefix("sip:").ok_or_else(bad)?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split(';').next().unwrap_or(host);
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:5060")
    };
    with_port
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

fn admin_addr(url: &str) -> Result<SocketAddr, RunError> {
    crate::nodes::admin_addr(url).map_err(RunError::Setup)
}

/// One run at `opts.concurrency`.
pub fn run(opts: &RunOptions) -> Result<Report, RunError> {
    let prepared = prepare(opts)?;
    let report = run_prepared(opts, &prepared)?;
    if let Some(dir) = &opts.report_dir {
        write_reports(&report, dir)?;
    }
    Ok(report)
}

pub fn write_reports(report: &Report, dir: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| RunError::Setup(format!("report: {e}")))?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("report.html"), crate::html::render(report))?;
    Ok(())
}

/// Where a run stands, handed to [`run_prepared_with`]'s observer about every 100 ms.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// Since the run started.
    pub elapsed: Duration,
    /// Calls in progress, finished, and finished failed.
    pub active: usize,
    pub done: usize,
    pub failed: usize,
}

pub fn run_prepared(opts: &RunOptions, p: &Prepared) -> Result<Report, RunError> {
    run_prepared_with(opts, p, &mut |_| {})
}

/// [`run_prepared`], calling `observe` from the run's own thread while the calls go on (the
/// soak samples the IVR from it).
pub fn run_prepared_with(
    opts: &RunOptions,
    p: &Prepared,
    observe: &mut dyn FnMut(&Tick),
) -> Result<Report, RunError> {
    let total = opts
        .calls
        .or(if opts.duration.is_some() {
            None
        } else {
            Some(p.manifest.scripts.len())
        })
        .map(|c| c.max(1));
    let concurrency = opts.concurrency.clamp(1, 5000);
    let sender = Arc::new(Sender::start(opts.sender_threads)?);
    let ctx = Arc::new(CallCtx {
        target_uri: opts.target.clone(),
        target_addr: p.target_addr,
        admins: p.admins.clone(),
        admin_token: opts.admin_token.clone(),
        sender: sender.clone(),
        audio: p.audio.clone(),
        default_caller: p
            .manifest
            .caller
            .clone()
            .unwrap_or_else(|| "2025550134".into()),
        answer_timeout: opts.answer_timeout,
        impair: opts.impair,
        seed: opts.seed,
    });
    let manifest = Arc::new(p.manifest.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let active = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<CallResult>>> = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let own_start = procfs::sample(std::process::id());
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let workers = total.map_or(concurrency, |t| t.min(concurrency));
    // The nodes' counters before the first INVITE, then every second.
    let node_sampler = if p.nodes.is_empty() {
        None
    } else {
        Some(Sampler::start(
            &p.nodes,
            opts.admin_token.clone(),
            start,
            Duration::from_secs(1),
        )?)
    };
    let mut handles = Vec::new();
    for w in 0..workers {
        let (ctx, manifest, next, active, failed, results) = (
            ctx.clone(),
            manifest.clone(),
            next.clone(),
            active.clone(),
            failed.clone(),
            results.clone(),
        );
        let (rate, duration, keep) = (opts.rate, opts.duration, opts.pacing_samples_per_call);
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadtest-call-{w}"))
                .spawn(move || {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if total.is_some_and(|t| n >= t) {
                            break;
                        }
                        if let Some(r) = rate.filter(|r| *r > 0.0) {
                            let due = start + Duration::from_secs_f64(n as f64 / r);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        if duration.is_some_and(|d| start.elapsed() >= d) {
                            break;
                        }
                        active.fetch_add(1, Ordering::Relaxed);
                        let mut r = run_call(&ctx, manifest.script_for(n), n, start);
                        if let Some(keep) = keep {
                            thin(&mut r.pacing_us, keep);
                        }
                        if !r.ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        active.fetch_sub(1, Ordering::Relaxed);
                        results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                    }
                })?,
        );
    }

    // Progress and the timeline, until every worker is done.
    let mut timeline = Vec::new();
    let mut last_cpu: Option<(Instant, f64)> = None;
    let mut last_sample = start - Duration::from_secs(1);
    let mut rss_start = None;
    let mut streams_seen = 0;
    let mut last_line = String::new();
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        if now.duration_since(last_sample) >= Duration::from_millis(500) {
            last_sample = now;
            let s = p.ivr_pid.and_then(procfs::sample);
            let cpu = match (s, last_cpu) {
                (Some(s), Some((t, c))) => {
                    Some(100.0 * (s.cpu_s - c) / now.duration_since(t).as_secs_f64().max(1e-3))
                }
                _ => None,
            };
            if let Some(s) = s {
                last_cpu = Some((now, s.cpu_s));
                rss_start.get_or_insert(s.rss_kib);
            }
            let done = lock(&results).len();
            timeline.push(TimelinePoint {
                t_s: now.duration_since(start).as_secs_f64(),
                active_calls: active.load(Ordering::Relaxed),
                done_calls: done,
                ivr_cpu_pct: cpu,
                ivr_rss_mib: s.map(|s| s.rss_kib as f64 / 1024.0),
            });
        }
        streams_seen = streams_seen.max(sender.streams());
        observe(&Tick {
            elapsed: now.duration_since(start),
            active: active.load(Ordering::Relaxed),
            done: lock(&results).len(),
            failed: failed.load(Ordering::Relaxed),
        });
        if opts.progress {
            progress(&results, &active, total, start, &mut last_line);
        }
    }
    for h in handles {
        let _ = h.join();
    }
    if opts.progress {
        progress(&results, &active, total, start, &mut last_line);
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
    // After the last call: the nodes' counters hold every call of the run.
    let (nodes, node_timeline) = node_sampler.map(Sampler::finish).unwrap_or_default();
    let mut calls = std::mem::take(&mut *lock(&results));
    calls.sort_by_key(|c| c.n);
    let wall_s = start.elapsed().as_secs_f64();
    let lateness = sender.lateness();
    let packets_sent = calls.iter().map(|c| c.packets_sent).sum();
    let own_end = procfs::sample(std::process::id());
    let (tester_cpu_pct, tester_rss_mib) = match (own_start, own_end) {
        (Some(a), Some(b)) => (
            100.0 * (b.cpu_s - a.cpu_s) / wall_s.max(1e-3),
            procfs::peak_rss_kib(std::process::id()).unwrap_or(b.rss_kib) as f64 / 1024.0,
        ),
        _ => (0.0, 0.0),
    };
    let sender_figs = SenderFigures {
        threads: opts.sender_threads.clamp(1, 64),
        ticks: lateness.ticks,
        lateness_p50_ms: lateness.quantile_ms(0.5),
        lateness_p99_ms: lateness.quantile_ms(0.99),
        lateness_max_ms: lateness.max_us as f64 / 1000.0,
        late_over_2ms_pct: lateness.over_pct(2.0),
        resyncs: lateness.resyncs,
        packets_sent,
        tester_cpu_pct,
        tester_rss_mib,
    };
    let _ = streams_seen;
    let ivr = p.ivr_pid.map(|pid| {
        let cpus: Vec<f64> = timeline.iter().filter_map(|t| t.ivr_cpu_pct).collect();
        let rss: Vec<f64> = timeline.iter().filter_map(|t| t.ivr_rss_mib).collect();
        IvrFigures {
            pid,
            cpu_pct_mean: if cpus.is_empty() {
                0.0
            } else {
                cpus.iter().sum::<f64>() / cpus.len() as f64
            },
            cpu_pct_max: cpus.iter().copied().fold(0.0, f64::max),
            rss_mib_start: rss_start.map_or(0.0, |k| k as f64 / 1024.0),
            rss_mib_max: rss.iter().copied().fold(0.0, f64::max),
        }
    });
    let mut report = summarize(
        opts,
        p,
        calls,
        timeline,
        sender_figs,
        ivr,
        started_unix_s,
        wall_s,
    );
    report.nodes = nodes;
    report.node_timeline = node_timeline;
    Ok(report)
}

/// Keep `keep` of `v`'s values, evenly spread (all of them when there are no more).
fn thin(v: &mut Vec<u32>, keep: usize) {
    if v.len() <= keep {
        return;
    }
    let n = v.len();
    let kept: Vec<u32> = (0..keep).map(|i| v[i * n / keep.max(1)]).collect();
    *v = kept;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// On a terminal, one line redrawn in place; otherwise (CI logs) a line per finished call.
fn progress(
    results: &Mutex<Vec<CallResult>>,
    active: &AtomicUsize,
    total: Option<usize>,
    start: Instant,
    last: &mut String,
) {
    let r = lock(results);
    let failed = r.iter().filter(|c| !c.ok).count();
    let total = total.map_or("?".to_string(), |t| t.to_string());
    let counts = format!(
        "calls {}/{} active {} ok {} failed {}",
        r.len(),
        total,
        active.load(Ordering::Relaxed),
        r.len() - failed,
        failed
    );
    let mut err = std::io::stderr().lock();
    if err.is_terminal() {
        let _ = write!(
            err,
            "\r[{:>6.1}s] {counts}    ",
            start.elapsed().as_secs_f64()
        );
        let _ = err.flush();
    } else if counts != *last {
        let _ = writeln!(err, "[{:>6.1}s] {counts}", start.elapsed().as_secs_f64());
        *last = counts;
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    opts: &RunOptions,
    p: &Prepared,
    calls: Vec<CallResult>,
    timeline: Vec<TimelinePoint>,
    sender: SenderFigures,
    ivr: Option<IvrFigures>,
    started_unix_s: u64,
    wall_s: f64,
) -> Report {
    let connected: Vec<&CallResult> = calls.iter().filter(|c| c.connected).collect();
    let pick = |f: &dyn Fn(&CallResult) -> Option<f64>| -> Vec<f64> {
        connected.iter().filter_map(|c| f(c)).collect()
    };
    let pacing: Vec<f64> = connected
        .iter()
        .flat_map(|c| c.pacing_us.iter().map(|&u| f64::from(u) / 1000.0))
        .collect();
    let tty_chars: usize = calls.iter().map(|c| c.tty_chars).sum();
    let figures = Figures {
        invite_ms: Dist::of(&pick(&|c| c.invite_ms)),
        first_audio_ms: Dist::of(&pick(&|c| c.first_audio_ms)),
        response_ms: Dist::of(
            &connected
                .iter()
                .flat_map(|c| c.response_ms.iter().copied())
                .collect::<Vec<_>>(),
        ),
        reaction_ms: Dist::of(
            &connected
                .iter()
                .flat_map(|c| c.reaction_ms.iter().copied())
                .collect::<Vec<_>>(),
        ),
        jitter_ms: Dist::of(&pick(&|c| Some(c.jitter_ms))),
        loss_pct: Dist::of(&pick(&|c| Some(c.loss_pct))),
        pacing_error_ms: Dist::of(&pacing),
        tty_chars,
        tty_cer_pct: (tty_chars > 0).then(|| {
            100.0 * calls.iter().map(|c| c.tty_char_errors).sum::<usize>() as f64 / tty_chars as f64
        }),
        impairment: (!opts.impair.is_none()).then(|| {
            let mut all = ImpairCounts::default();
            for c in calls.iter().filter_map(|c| c.impairment.as_ref()) {
                all.add(c);
            }
            all
        }),
    };
    let counts = Counts {
        total: calls.len(),
        connected: connected.len(),
        passed: calls.iter().filter(|c| c.ok).count(),
        failed: calls.iter().filter(|c| !c.ok).count(),
    };
    let failed_pct = if counts.total == 0 {
        100.0
    } else {
        100.0 * counts.failed as f64 / counts.total as f64
    };
    let o = &p.objectives;
    let mut objectives = Vec::new();
    let mut check = |name: &str, limit: Option<f64>, value: f64| {
        if let Some(limit) = limit {
            objectives.push(ObjectiveResult {
                name: name.into(),
                limit,
                value,
                ok: value <= limit,
            });
        }
    };
    check("invite_p99_ms", o.invite_p99_ms, figures.invite_ms.p99);
    check(
        "first_audio_p99_ms",
        o.first_audio_p99_ms,
        figures.first_audio_ms.p99,
    );
    check(
        "response_p99_ms",
        o.response_p99_ms,
        figures.response_ms.p99,
    );
    check("jitter_p99_ms", o.jitter_p99_ms, figures.jitter_ms.p99);
    check(
        "pacing_p99_ms",
        o.pacing_p99_ms,
        figures.pacing_error_ms.p99,
    );
    check("loss_max_pct", o.loss_max_pct, figures.loss_pct.max);
    // No call may fail unless the manifest allows some.
    check(
        "failed_max_pct",
        Some(o.failed_max_pct.unwrap_or(0.0)),
        failed_pct,
    );
    let mut scripts: Vec<ScriptSummary> = Vec::new();
    for s in &p.manifest.scripts {
        let mine: Vec<&CallResult> = calls.iter().filter(|c| c.script == s.name).collect();
        let resp: Vec<f64> = mine
            .iter()
            .flat_map(|c| c.response_ms.iter().copied())
            .collect();
        scripts.push(ScriptSummary {
            name: s.name.clone(),
            calls: mine.len(),
            passed: mine.iter().filter(|c| c.ok).count(),
            failed: mine.iter().filter(|c| !c.ok).count(),
            response_p50_ms: (!resp.is_empty()).then(|| Dist::of(&resp).p50),
        });
    }
    let failures = calls
        .iter()
        .filter(|c| !c.ok)
        .map(|c| Failure {
            call: c.n,
            script: c.script.clone(),
            call_id: c.call_id.clone(),
            errors: c.errors.clone(),
        })
        .collect();
    let passed = objectives.iter().all(|o| o.ok) && counts.total > 0;
    Report {
        tool: format!("loadtest {}", env!("CARGO_PKG_VERSION")),
        target: opts.target.clone(),
        manifest: opts.manifest.display().to_string(),
        started_unix_s,
        wall_s,
        settings: Settings {
            calls: opts.calls,
            concurrency: opts.concurrency,
            rate: opts.rate,
            duration_s: opts.duration.map(|d| d.as_secs_f64()),
            sender_threads: sender.threads,
            expectations_checked: !p.admins.is_empty(),
            impair: opts.impair.to_string(),
            impairment: opts.impair,
            seed: opts.seed,
        },
        calls: counts,
        figures,
        sender,
        ivr,
        nodes: Vec::new(),
        node_timeline: Vec::new(),
        timeline,
        scripts,
        objectives,
        failures,
        per_call: calls,
        passed,
    }
}

/// One level of a capacity test.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub concurrency: usize,
    /// Calls in progress at the busiest sample: below `concurrency` when calls end before the
    /// start rate lets the level fill up.
    pub peak_active: usize,
    pub calls: usize,
    pub passed: bool,
    pub failed_calls: usize,
    pub response_p99_ms: f64,
    pub invite_p99_ms: f64,
    pub loss_max_pct: f64,
    pub jitter_p99_ms: f64,
    pub ivr_cpu_pct_max: Option<f64>,
    /// The tester's own CPU at this level (mean, % of a core).
    pub tester_cpu_pct: f64,
    /// Each node behind the proxy during this step (CPU, memory, calls it took).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeFigures>,
    pub broken: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    pub target: String,
    pub objectives: Objectives,
    pub levels: Vec<Level>,
    /// The highest concurrency at which every objective held (0: not even the first).
    pub sustained_concurrency: usize,
}

/// Ramp concurrency over `levels`; each level places `calls_per_level × level` calls. Stops at
/// the first level that misses an objective. Per-level reports go to `DIR/c<level>/`.
pub fn capacity(
    opts: &RunOptions,
    levels: &[usize],
    calls_per_level: usize,
) -> Result<CapacityReport, RunError> {
    let mut prepared = prepare(opts)?;
    let o = &mut prepared.objectives;
    // Without any latency or loss objective a ramp would never stop: use the product's.
    if o.response_p99_ms.is_none() && o.loss_max_pct.is_none() && o.invite_p99_ms.is_none() {
        o.response_p99_ms = Some(2000.0);
        o.loss_max_pct = Some(1.0);
    }
    let mut out = CapacityReport {
        target: opts.target.clone(),
        objectives: prepared.objectives.clone(),
        levels: Vec::new(),
        sustained_concurrency: 0,
    };
    for &level in levels {
        let mut o = opts.clone();
        o.concurrency = level;
        o.calls = Some(level * calls_per_level.max(1));
        o.duration = None;
        let report = run_prepared(&o, &prepared)?;
        if let Some(dir) = &opts.report_dir {
            write_reports(&report, &dir.join(format!("c{level}")))?;
        }
        let broken: Vec<String> = report
            .objectives
            .iter()
            .filter(|r| !r.ok)
            .map(|r| format!("{} {:.1} > {:.1}", r.name, r.value, r.limit))
            .collect();
        out.levels.push(Level {
            concurrency: level,
            peak_active: report
                .timeline
                .iter()
                .map(|t| t.active_calls)
                .max()
                .unwrap_or(0),
            calls: report.calls.total,
            passed: report.passed,
            failed_calls: report.calls.failed,
            response_p99_ms: report.figures.response_ms.p99,
            invite_p99_ms: report.figures.invite_ms.p99,
            loss_max_pct: report.figures.loss_pct.max,
            jitter_p99_ms: report.figures.jitter_ms.p99,
            ivr_cpu_pct_max: report.ivr.as_ref().map(|i| i.cpu_pct_max),
            tester_cpu_pct: report.sender.tester_cpu_pct,
            nodes: report.nodes.clone(),
            broken,
        });
        if !report.passed {
            break;
        }
        out.sustained_concurrency = level;
    }
    if let Some(dir) = &opts.report_dir {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(&out)
            .map_err(|e| RunError::Setup(format!("report: {e}")))?;
        std::fs::write(dir.join("capacity.json"), json)?;
        std::fs::write(
            dir.join("capacity.html"),
            crate::html::render_capacity(&out),
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_and_admin_addresses() {
        assert_eq!(
            target_addr("sip:ivr@127.0.0.1:5070").unwrap(),
            "127.0.0.1:5070".parse().unwrap()
        );
        assert_eq!(
            target_addr("sip:127.0.0.1;transport=udp").unwrap(),
            "127.0.0.1:5060".parse().unwrap()
        );
        assert!(target_addr("http://x").is_err());
        assert!(target_addr("sip:ivr@").is_err());
        assert_eq!(
            admin_addr("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert!(admin_addr("http://nowhere").is_err());
    }

    #[test]
    fn thinning_keeps_an_even_spread() {
        let mut v: Vec<u32> = (0..1000).collect();
        thin(&mut v, 4);
        assert_eq!(v, [0, 250, 500, 750]);
        let mut short = vec![7, 8];
        thin(&mut short, 4);
        assert_eq!(short, [7, 8]);
        thin(&mut short, 0);
        assert!(short.is_empty());
    }
}
