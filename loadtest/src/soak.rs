//! `loadtest soak`: the full mix at a steady concurrency for a long time (an hour, say), the IVR
//! sampled every interval — resident memory, open files, threads, CPU from `/proc`; ASR waiting
//! utterances, outbox and call-record backlogs, pacing lateness from its `/metrics` — and the
//! series checked for growth after a warm-up. It answers "does the server stay flat?", not "how
//! fast is it?" (that is `capacity`): the manifest's latency objectives are not checked unless
//! given as flags; any failed call is.
//!
//! Growth checks, over the samples between the end of the warm-up and the end of the call
//! starts (the steady part; the drain after it is left out):
//! - RSS: the least-squares slope, flagged when above `rss_slope_mib_per_h` *and* the fitted rise
//!   over the window above `rss_rise_min_mib` (allocator noise on a short soak is not a leak);
//! - open files, threads, ASR waiting utterances, outbox backlog, call-record backlog: the floor
//!   (minimum) of the window's last third against that of its first third — a leak raises the
//!   floor, calls coming and going do not;
//! - open files after the drain against before the first call (every call's sockets closed);
//! - any failed call.
//!
//! A check that could not be measured (no IVR process on this machine, too few samples) is
//! flagged too: a soak that measured nothing has not passed.

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::call::http_get;
use crate::procfs;
use crate::run::{self, Report, RunError, RunOptions, Tick};
use crate::stats::Dist;

/// Limits of the growth checks (see the module documentation).
#[derive(Debug, Clone, Serialize)]
pub struct Bounds {
    pub rss_slope_mib_per_h: f64,
    pub rss_rise_min_mib: f64,
    pub fds: f64,
    pub threads: f64,
    pub queue: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            rss_slope_mib_per_h: 16.0,
            rss_rise_min_mib: 16.0,
            fds: 16.0,
            threads: 8.0,
            queue: 20.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The run: its `duration` is the soak's, its `concurrency` the steady level.
    pub run: RunOptions,
    /// The capacity figure the concurrency was derived from, if one was given.
    pub capacity: Option<usize>,
    pub interval: Duration,
    pub warmup: Duration,
    /// After the last call has ended: wait this long before the idle sample.
    pub settle: Duration,
    pub bounds: Bounds,
}

/// The concurrency of a soak at 80 % of a measured capacity.
pub fn eighty_percent(capacity: usize) -> usize {
    ((capacity as f64 * 0.8).round() as usize).max(1)
}

/// The default warm-up: a third of the soak, at most 10 minutes.
pub fn default_warmup(duration: Duration) -> Duration {
    (duration / 3).min(Duration::from_secs(600))
}

/// One look at the IVR. `None`: not measured (no process here, or `/metrics` unreachable).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub t_s: f64,
    /// The tester's calls: in progress, finished, finished failed.
    pub active_calls: usize,
    pub calls_done: usize,
    pub calls_failed: usize,
    pub rss_mib: Option<f64>,
    pub fds: Option<usize>,
    pub threads: Option<u64>,
    /// Since the previous sample, % of one core.
    pub cpu_pct: Option<f64>,
    /// `/metrics`: calls the IVR has in progress, utterances waiting for a recognizer, ASR jobs
    /// queued, links pending or sending, call records not yet written.
    pub ivr_calls_active: Option<f64>,
    pub asr_waiting: Option<f64>,
    pub asr_queue_depth: Option<f64>,
    pub outbox_queued: Option<f64>,
    pub store_backlog: Option<f64>,
    /// The IVR's RTP send lateness since the previous sample: mean, and the histogram bucket
    /// bound at or below which 99 % fell (50 ms means "50 ms or more").
    pub pacing_lateness_mean_ms: Option<f64>,
    pub pacing_lateness_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    /// The measured figure (slope, rise, count), `None` when it could not be measured.
    pub measured: Option<f64>,
    pub limit: f64,
    pub unit: String,
    pub flagged: bool,
    pub note: String,
}

/// A series summed up for the text and BENCHMARKING: idle before the first call, at the end of
/// the warm-up, at the end of the call starts, idle after the drain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Span {
    pub idle_before: Option<f64>,
    pub after_warmup: Option<f64>,
    pub end: Option<f64>,
    pub idle_after: Option<f64>,
    pub window_min: Option<f64>,
    pub window_max: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakSummary {
    pub calls: usize,
    pub failed: usize,
    pub peak_active: usize,
    pub rss_mib: Span,
    pub rss_slope_mib_per_h: Option<f64>,
    pub fds: Span,
    pub threads: Span,
    /// % of one core over the window's samples.
    pub cpu_pct: Dist,
    pub asr_waiting_max: Option<f64>,
    pub outbox_queued_max: Option<f64>,
    pub store_backlog_max: Option<f64>,
    pub pacing_lateness_p99_max_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakSettings {
    pub duration_s: f64,
    pub concurrency: usize,
    pub capacity: Option<usize>,
    pub rate: Option<f64>,
    pub interval_s: f64,
    pub warmup_s: f64,
    pub settle_s: f64,
    pub bounds: Bounds,
}

#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    pub settings: SoakSettings,
    pub idle_before: Sample,
    pub idle_after: Sample,
    pub samples: Vec<Sample>,
    pub checks: Vec<Check>,
    pub summary: SoakSummary,
    pub passed: bool,
}

/// report.json of a soak: the run's report with the soak's series and checks added.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    #[serde(flatten)]
    pub run: Report,
    pub soak: Soak,
}

/// Samples the IVR: `/proc/<pid>` and the admin API's `/metrics`.
struct Sampler {
    pid: Option<u32>,
    admin: Option<SocketAddr>,
    last_cpu: Option<(Instant, f64)>,
    last_metrics: Option<HashMap<String, f64>>,
}

const LATENESS: &str = "ivr_rtp_send_lateness_seconds";

impl Sampler {
    fn sample(&mut self, t_s: f64, tick: Option<&Tick>) -> Sample {
        let now = Instant::now();
        let mut s = Sample {
            t_s,
            active_calls: tick.map_or(0, |t| t.active),
            calls_done: tick.map_or(0, |t| t.done),
            calls_failed: tick.map_or(0, |t| t.failed),
            ..Sample::default()
        };
        if let Some(pid) = self.pid
            && let Some(p) = procfs::sample(pid)
        {
            s.rss_mib = Some(p.rss_kib as f64 / 1024.0);
            s.threads = Some(p.threads);
            s.fds = procfs::fd_count(pid);
            if let Some((t, c)) = self.last_cpu {
                let dt = now.duration_since(t).as_secs_f64();
                if dt > 0.05 {
                    s.cpu_pct = Some(100.0 * (p.cpu_s - c) / dt);
                }
            }
            self.last_cpu = Some((now, p.cpu_s));
        }
        if let Some(admin) = self.admin
            && let Ok((200, text)) = http_get(admin, "/metrics")
        {
            let m = parse_metrics(&text);
            s.ivr_calls_active = m.get("ivr_calls_active").copied();
            s.asr_waiting = m.get("ivr_asr_waiting_utterances").copied();
            s.asr_queue_depth = m.get("ivr_asr_queue_depth").copied();
            s.outbox_queued = m.get("ivr_outbox_queued").copied();
            s.store_backlog = m.get("ivr_store_backlog_records").copied();
            if let Some(prev) = &self.last_metrics {
                let count = delta(prev, &m, &format!("{LATENESS}_count"));
                let sum = delta(prev, &m, &format!("{LATENESS}_sum"));
                if let (Some(c), Some(sum)) = (count, sum)
                    && c > 0.0
                {
                    s.pacing_lateness_mean_ms = Some(1000.0 * sum / c);
                }
                s.pacing_lateness_p99_ms = interval_quantile(prev, &m, LATENESS, 0.99);
            }
            self.last_metrics = Some(m);
        }
        s
    }
}

/// `name value` and `name{labels} value` lines of a Prometheus text exposition, keyed by
/// everything before the value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.trim().rsplit_once(' ')?;
            Some((k.trim().to_string(), v.parse().ok()?))
        })
        .collect()
}

fn delta(prev: &HashMap<String, f64>, cur: &HashMap<String, f64>, key: &str) -> Option<f64> {
    Some(cur.get(key)? - prev.get(key)?)
}

/// The `q` quantile of what histogram `name` observed between two scrapes, as the upper bound
/// of its bucket in ms (the largest finite bound when it fell above all of them); `None`
/// without observations.
pub fn interval_quantile(
    prev: &HashMap<String, f64>,
    cur: &HashMap<String, f64>,
    name: &str,
    q: f64,
) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = cur
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v - prev.get(k).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().filter(|b| b.0.is_infinite())?.1;
    if total <= 0.0 {
        return None;
    }
    let largest = buckets
        .iter()
        .rev()
        .find(|b| b.0.is_finite())
        .map(|b| b.0)?;
    let le = buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= q * total)
        .map_or(largest, |b| b.0.min(largest));
    Some(le * 1000.0)
}

/// Least-squares slope of (x, y) points, per unit of x; `None` under two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx)
}

/// Minimum of the last third of `values` minus the minimum of the first third: how far the
/// floor rose. `None` under three values.
pub fn floor_rise(values: &[f64]) -> Option<f64> {
    if values.len() < 3 {
        return None;
    }
    let k = (values.len() / 3).max(1);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    Some(min(&values[values.len() - k..]) - min(&values[..k]))
}

/// Every check of a soak over its samples (see the module documentation).
#[allow(clippy::too_many_arguments)]
pub fn checks(
    samples: &[Sample],
    idle_before: &Sample,
    idle_after: &Sample,
    warmup_s: f64,
    end_s: f64,
    failed: usize,
    metrics_expected: bool,
    b: &Bounds,
) -> Vec<Check> {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s >= warmup_s && s.t_s <= end_s + 1e-6)
        .collect();
    let mut out = Vec::new();
    let series = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        window
            .iter()
            .filter_map(|s| f(s).map(|v| (s.t_s, v)))
            .collect()
    };
    let few = |n: usize| format!("not measured: {n} samples after the warm-up (3 needed)");

    let rss = series(&|s| s.rss_mib);
    out.push(match slope(&rss).filter(|_| rss.len() >= 3) {
        Some(per_s) => {
            let per_h = per_s * 3600.0;
            let span = rss.last().map_or(0.0, |l| l.0) - rss[0].0;
            let rise = per_s * span;
            Check {
                name: "rss_slope".into(),
                measured: Some(per_h),
                limit: b.rss_slope_mib_per_h,
                unit: "MiB/h".into(),
                flagged: per_h > b.rss_slope_mib_per_h && rise > b.rss_rise_min_mib,
                note: format!(
                    "RSS {:.1} → {:.1} MiB over {:.0} s after the warm-up; fitted rise {rise:+.1} MiB \
                     (flagged above {:.0} MiB/h when the rise exceeds {:.0} MiB)",
                    rss[0].1,
                    rss.last().map_or(0.0, |l| l.1),
                    span,
                    b.rss_slope_mib_per_h,
                    b.rss_rise_min_mib
                ),
            }
        }
        None => Check {
            name: "rss_slope".into(),
            measured: None,
            limit: b.rss_slope_mib_per_h,
            unit: "MiB/h".into(),
            flagged: true,
            note: if idle_before.rss_mib.is_none() {
                "not measured: the IVR process is not on this machine (pass --ivr-pid)".into()
            } else {
                few(rss.len())
            },
        },
    });

    let mut floor =
        |name: &str, unit: &str, limit: f64, values: Vec<f64>, what: &str, required: bool| {
            let rise = floor_rise(&values);
            out.push(Check {
            name: name.into(),
            measured: rise,
            limit,
            unit: unit.into(),
            flagged: match rise {
                Some(r) => r > limit,
                None => required,
            },
            note: match rise {
                Some(r) => format!(
                    "{what}: floor of the last third of the window minus that of the first: {r:+.0}"
                ),
                None if values.is_empty() && !required => {
                    "not measured (no admin API)".to_string()
                }
                None => few(values.len()),
            },
        });
        };
    let vals = |f: &dyn Fn(&Sample) -> Option<f64>| series(f).into_iter().map(|p| p.1).collect();
    floor(
        "fds_growth",
        "fds",
        b.fds,
        vals(&|s| s.fds.map(|v| v as f64)),
        "open files",
        true,
    );
    floor(
        "threads_growth",
        "threads",
        b.threads,
        vals(&|s| s.threads.map(|v| v as f64)),
        "threads",
        true,
    );
    floor(
        "asr_waiting_growth",
        "utterances",
        b.queue,
        vals(&|s| s.asr_waiting),
        "ASR waiting utterances",
        metrics_expected,
    );
    floor(
        "outbox_backlog_growth",
        "messages",
        b.queue,
        vals(&|s| s.outbox_queued),
        "outbox backlog (pending or sending; grows when no SMS/SMTP provider takes them)",
        metrics_expected,
    );
    floor(
        "store_backlog_growth",
        "records",
        b.queue,
        vals(&|s| s.store_backlog),
        "call records not yet written",
        metrics_expected,
    );

    out.push(match (idle_before.fds, idle_after.fds) {
        (Some(before), Some(after)) => {
            let d = after as f64 - before as f64;
            Check {
                name: "fds_after_drain".into(),
                measured: Some(d),
                limit: b.fds,
                unit: "fds".into(),
                flagged: d > b.fds,
                note: format!("open files {before} before the first call, {after} after the last"),
            }
        }
        _ => Check {
            name: "fds_after_drain".into(),
            measured: None,
            limit: b.fds,
            unit: "fds".into(),
            flagged: true,
            note: "not measured: the IVR process is not on this machine (pass --ivr-pid)".into(),
        },
    });
    out.push(Check {
        name: "failed_calls".into(),
        measured: Some(failed as f64),
        limit: 0.0,
        unit: "calls".into(),
        flagged: failed > 0,
        note: "calls that failed or missed their expectation".into(),
    });
    out
}

fn span(
    samples: &[Sample],
    before: &Sample,
    after: &Sample,
    warmup_s: f64,
    end_s: f64,
    f: &dyn Fn(&Sample) -> Option<f64>,
) -> Span {
    let window: Vec<f64> = samples
        .iter()
        .filter(|s| s.t_s >= warmup_s && s.t_s <= end_s + 1e-6)
        .filter_map(f)
        .collect();
    Span {
        idle_before: f(before),
        after_warmup: window.first().copied(),
        end: window.last().copied(),
        idle_after: f(after),
        window_min: window.iter().copied().reduce(f64::min),
        window_max: window.iter().copied().reduce(f64::max),
    }
}

/// The soak: an idle sample, the run with a sample every interval, the drain, an idle sample
/// after it, the checks.
pub fn soak(o: &SoakOptions) -> Result<SoakReport, RunError> {
    let mut prepared = run::prepare(&o.run)?;
    // Latency objectives are capacity's question; only those given as flags are checked.
    prepared.objectives = o.run.objectives.clone();
    // A soak watches one IVR: the first admin API given (call records are read from all).
    let admin = prepared.admins.first().copied();
    let mut sampler = Sampler {
        pid: prepared.ivr_pid,
        admin,
        last_cpu: None,
        last_metrics: None,
    };
    let idle_before = sampler.sample(0.0, None);
    let mut samples = Vec::new();
    let mut next_due = Duration::ZERO;
    let progress = o.run.progress;
    let interval = o.interval.max(Duration::from_millis(200));
    let mut run_opts = o.run.clone();
    run_opts.progress = false;
    run_opts.pacing_samples_per_call.get_or_insert(500);
    let report = run::run_prepared_with(&run_opts, &prepared, &mut |tick| {
        if tick.elapsed < next_due {
            return;
        }
        next_due = tick.elapsed + interval;
        let s = sampler.sample(tick.elapsed.as_secs_f64(), Some(tick));
        if progress {
            print_progress(&s);
        }
        samples.push(s);
    })?;
    // Drain: the IVR's own calls end a little after the tester's (BYE, record written).
    let drain_start = Instant::now();
    while let Some(admin) = admin {
        let active = http_get(admin, "/metrics")
            .ok()
            .and_then(|(_, t)| parse_metrics(&t).get("ivr_calls_active").copied());
        if active.is_none_or(|a| a <= 0.0) || drain_start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(o.settle);
    let idle_after = sampler.sample(
        report.wall_s + drain_start.elapsed().as_secs_f64(),
        Some(&Tick {
            elapsed: Duration::ZERO,
            active: 0,
            done: report.calls.total,
            failed: report.calls.failed,
        }),
    );
    let warmup_s = o.warmup.as_secs_f64();
    let end_s = o
        .run
        .duration
        .map_or(report.wall_s, |d| d.as_secs_f64().min(report.wall_s));
    let checks = checks(
        &samples,
        &idle_before,
        &idle_after,
        warmup_s,
        end_s,
        report.calls.failed,
        admin.is_some(),
        &o.bounds,
    );
    let sp = |f: &dyn Fn(&Sample) -> Option<f64>| {
        span(&samples, &idle_before, &idle_after, warmup_s, end_s, f)
    };
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s >= warmup_s && s.t_s <= end_s + 1e-6)
        .collect();
    let wmax =
        |f: &dyn Fn(&Sample) -> Option<f64>| window.iter().filter_map(|s| f(s)).reduce(f64::max);
    let summary = SoakSummary {
        calls: report.calls.total,
        failed: report.calls.failed,
        peak_active: report
            .timeline
            .iter()
            .map(|t| t.active_calls)
            .chain(samples.iter().map(|s| s.active_calls))
            .max()
            .unwrap_or(0),
        rss_mib: sp(&|s| s.rss_mib),
        rss_slope_mib_per_h: checks
            .iter()
            .find(|c| c.name == "rss_slope")
            .and_then(|c| c.measured),
        fds: sp(&|s| s.fds.map(|v| v as f64)),
        threads: sp(&|s| s.threads.map(|v| v as f64)),
        cpu_pct: Dist::of(&window.iter().filter_map(|s| s.cpu_pct).collect::<Vec<_>>()),
        asr_waiting_max: wmax(&|s| s.asr_waiting),
        outbox_queued_max: wmax(&|s| s.outbox_queued),
        store_backlog_max: wmax(&|s| s.store_backlog),
        pacing_lateness_p99_max_ms: wmax(&|s| s.pacing_lateness_p99_ms),
    };
    let passed = report.passed && checks.iter().all(|c| !c.flagged);
    let soak = Soak {
        settings: SoakSettings {
            duration_s: o.run.duration.map_or(0.0, |d| d.as_secs_f64()),
            concurrency: o.run.concurrency,
            capacity: o.capacity,
            rate: o.run.rate,
            interval_s: interval.as_secs_f64(),
            warmup_s,
            settle_s: o.settle.as_secs_f64(),
            bounds: o.bounds.clone(),
        },
        idle_before,
        idle_after,
        samples,
        checks,
        summary,
        passed,
    };
    let out = SoakReport { run: report, soak };
    if let Some(dir) = &o.run.report_dir {
        write_reports(&out, dir)?;
    }
    Ok(out)
}

pub fn write_reports(r: &SoakReport, dir: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(dir)?;
    let json =
        serde_json::to_string_pretty(r).map_err(|e| RunError::Setup(format!("report: {e}")))?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("report.html"), crate::html::render_soak(r))?;
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn print_progress(s: &Sample) {
    let mut err = std::io::stderr().lock();
    let line = format!(
        "[{:>7.0}s] calls active {} done {} failed {} · RSS {} MiB fds {} threads {} CPU {} % · \
         ASR waiting {} outbox {} records {} · pacing p99 ≤ {} ms",
        s.t_s,
        s.active_calls,
        s.calls_done,
        s.calls_failed,
        opt(s.rss_mib, 1),
        s.fds.map_or("–".into(), |v| v.to_string()),
        s.threads.map_or("–".into(), |v| v.to_string()),
        opt(s.cpu_pct, 0),
        opt(s.asr_waiting, 0),
        opt(s.outbox_queued, 0),
        opt(s.store_backlog, 0),
        opt(s.pacing_lateness_p99_ms, 2),
    );
    if err.is_terminal() {
        let _ = write!(err, "\r{line}   ");
    } else {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
}

/// The text summary `loadtest soak` prints.
pub fn summary_text(r: &SoakReport) -> String {
    let s = &r.soak.summary;
    let st = &r.soak.settings;
    let span = |name: &str, sp: &Span, digits: usize| {
        format!(
            "{name}: idle {} · after warm-up {} · end {} · after drain {} (window {}–{})",
            opt(sp.idle_before, digits),
            opt(sp.after_warmup, digits),
            opt(sp.end, digits),
            opt(sp.idle_after, digits),
            opt(sp.window_min, digits),
            opt(sp.window_max, digits),
        )
    };
    let mut t = format!(
        "soak: {:.0} s of call starts at {} concurrent{} (peak {}), warm-up {:.0} s, a sample every {:.0} s: \
         {} calls, {} failed\n",
        st.duration_s,
        st.concurrency,
        st.capacity
            .map_or(String::new(), |c| format!(" (80 % of capacity {c})")),
        s.peak_active,
        st.warmup_s,
        st.interval_s,
        s.calls,
        s.failed
    );
    t += &format!(
        "{} · slope {} MiB/h\n",
        span("IVR RSS MiB", &s.rss_mib, 1),
        opt(s.rss_slope_mib_per_h, 2)
    );
    t += &span("open files", &s.fds, 0);
    t.push('\n');
    t += &span("threads", &s.threads, 0);
    t.push('\n');
    t += &format!(
        "CPU % of one core after the warm-up: median {:.0}, p90 {:.0}, max {:.0}\n",
        s.cpu_pct.p50, s.cpu_pct.p90, s.cpu_pct.max
    );
    t += &format!(
        "after the warm-up, at most: ASR waiting utterances {}, outbox backlog {}, call records unwritten {}, \
         pacing lateness p99 ≤ {} ms\n",
        opt(s.asr_waiting_max, 0),
        opt(s.outbox_queued_max, 0),
        opt(s.store_backlog_max, 0),
        opt(s.pacing_lateness_p99_max_ms, 2)
    );
    for c in &r.soak.checks {
        t += &format!(
            "{} {}: {} {} (limit {}) — {}\n",
            if c.flagged { "FLAGGED" } else { "ok" },
            c.name,
            c.measured.map_or("–".into(), |v| format!("{v:.2}")),
            c.unit,
            c.limit,
            c.note
        );
    }
    for f in &r.run.failures {
        t += &format!(
            "FAILED call #{} (script {}, Call-ID {}): {}\n",
            f.call,
            f.script,
            f.call_id,
            f.errors.join("; ")
        );
    }
    for o in r.run.objectives.iter().filter(|o| !o.ok) {
        t += &format!(
            "MISSED objective {}: {:.2} > {:.2}\n",
            o.name, o.value, o.limit
        );
    }
    t += if r.soak.passed {
        "soak PASSED: no failed call, nothing grew"
    } else {
        "soak FAILED"
    };
    t
}

/// `1h`, `30m`, `90s`, `1h30m`, `250ms`, or plain seconds (`180`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs))
            .ok_or_else(|| format!("{s:?}: not a duration"));
    }
    let bad = || format!("{s:?}: expected e.g. 1h, 30m, 90s, 1h30m or seconds");
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            0.001
        } else {
            match c {
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                _ => return Err(bad()),
            }
        };
        let v: f64 = num.parse().map_err(|_| bad())?;
        total += v * unit;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64) -> Sample {
        Sample {
            t_s: t,
            rss_mib: Some(300.0),
            fds: Some(200),
            threads: Some(40),
            asr_waiting: Some(0.0),
            outbox_queued: Some(1.0),
            store_backlog: Some(0.0),
            ..Sample::default()
        }
    }

    fn idle(fds: usize) -> Sample {
        Sample {
            rss_mib: Some(90.0),
            fds: Some(fds),
            threads: Some(30),
            ..Sample::default()
        }
    }

    fn flagged(c: &[Check]) -> Vec<&str> {
        c.iter()
            .filter(|c| c.flagged)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// An hour sampled every 10 s, 10 minutes of warm-up.
    fn hour(f: impl Fn(usize, &mut Sample)) -> Vec<Sample> {
        (0..=360)
            .map(|i| {
                let mut s = at(i as f64 * 10.0);
                f(i, &mut s);
                s
            })
            .collect()
    }

    fn check_hour(samples: &[Sample], after_fds: usize, failed: usize) -> Vec<Check> {
        checks(
            samples,
            &idle(30),
            &idle(after_fds),
            600.0,
            3600.0,
            failed,
            true,
            &Bounds::default(),
        )
    }

    #[test]
    fn a_flat_noisy_server_passes() {
        // Calls come and go: fds and threads swing with them, RSS wobbles by ±6 MiB.
        let s = hour(|i, s| {
            let wave = ((i * 7919) % 13) as f64 - 6.0;
            s.rss_mib = Some(300.0 + wave);
            s.fds = Some((200.0 + 3.0 * wave) as usize);
            s.threads = Some((40.0 + wave / 2.0) as u64);
            s.asr_waiting = Some((wave + 6.0) / 2.0);
        });
        let c = check_hour(&s, 31, 0);
        assert!(flagged(&c).is_empty(), "{c:#?}");
        assert!(c.iter().all(|c| c.measured.is_some()), "{c:#?}");
    }

    #[test]
    fn a_leak_in_each_series_is_flagged() {
        // 40 MiB/h of RSS, an fd every other minute, a thread every 5 minutes, a backlog that
        // only grows: each flagged, and only those.
        let s = hour(|i, s| {
            let t = i as f64 * 10.0;
            s.rss_mib = Some(300.0 + 40.0 * t / 3600.0);
            s.fds = Some(200 + i / 10);
            s.threads = Some(40 + (i / 20) as u64);
            s.outbox_queued = Some(i as f64);
        });
        let c = check_hour(&s, 31, 0);
        assert_eq!(
            flagged(&c),
            [
                "rss_slope",
                "fds_growth",
                "threads_growth",
                "outbox_backlog_growth"
            ],
            "{c:#?}"
        );
        let rss = c.iter().find(|c| c.name == "rss_slope").unwrap();
        assert!((rss.measured.unwrap() - 40.0).abs() < 0.01, "{rss:?}");
    }

    #[test]
    fn a_slow_rise_under_the_noise_floor_is_not_a_leak() {
        // 60 MiB/h but over 2 minutes: 2 MiB, under the 16 MiB floor (a 3-minute soak's
        // allocator noise); the same slope over 50 minutes is flagged above.
        let s: Vec<Sample> = (0..=12)
            .map(|i| {
                let mut s = at(60.0 + 10.0 * i as f64);
                s.rss_mib = Some(300.0 + 60.0 * (10.0 * i as f64) / 3600.0);
                s
            })
            .collect();
        let c = checks(
            &s,
            &idle(30),
            &idle(30),
            60.0,
            180.0,
            0,
            true,
            &Bounds::default(),
        );
        assert!(flagged(&c).is_empty(), "{c:#?}");
    }

    #[test]
    fn leftover_fds_failed_calls_and_unmeasured_series_are_flagged() {
        let s = hour(|_, _| {});
        assert_eq!(flagged(&check_hour(&s, 30 + 17, 0)), ["fds_after_drain"]);
        assert_eq!(flagged(&check_hour(&s, 30, 1)), ["failed_calls"]);
        // No IVR process here: nothing about it measured, so the soak cannot pass.
        let remote: Vec<Sample> = (0..10)
            .map(|i| Sample {
                t_s: 700.0 + i as f64,
                ..Sample::default()
            })
            .collect();
        let c = checks(
            &remote,
            &Sample::default(),
            &Sample::default(),
            600.0,
            3600.0,
            0,
            false,
            &Bounds::default(),
        );
        assert_eq!(
            flagged(&c),
            [
                "rss_slope",
                "fds_growth",
                "threads_growth",
                "fds_after_drain"
            ]
        );
        // A warm-up as long as the soak leaves nothing to judge.
        let c = check_hour(&s[..5], 30, 0);
        assert!(flagged(&c).contains(&"rss_slope"), "{c:#?}");
    }

    #[test]
    fn metrics_text_and_interval_quantile() {
        let before = parse_metrics(
            "# HELP x y\nivr_calls_active 3\nh_bucket{le=\"0.001\"} 10\nh_bucket{le=\"0.005\"} 10\n\
             h_bucket{le=\"+Inf\"} 10\nh_count 10\n",
        );
        assert_eq!(before.get("ivr_calls_active"), Some(&3.0));
        // Since then: 98 packets within 1 ms, 1 within 5 ms, 1 later than every bound.
        let after = parse_metrics(
            "h_bucket{le=\"0.001\"} 108\nh_bucket{le=\"0.005\"} 109\nh_bucket{le=\"+Inf\"} 110\n",
        );
        assert_eq!(interval_quantile(&before, &after, "h", 0.98), Some(1.0));
        assert_eq!(interval_quantile(&before, &after, "h", 0.99), Some(5.0));
        // Above every bound: the largest bound.
        assert_eq!(interval_quantile(&before, &after, "h", 1.0), Some(5.0));
        assert_eq!(interval_quantile(&after, &after, "h", 0.99), None);
        assert_eq!(interval_quantile(&before, &after, "nope", 0.99), None);
    }

    #[test]
    fn slopes_and_floors() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), Some(2.0));
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 3.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(floor_rise(&[5.0, 1.0, 9.0, 9.0, 4.0, 8.0]), Some(3.0));
        assert_eq!(floor_rise(&[1.0, 2.0]), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("180"), Ok(Duration::from_secs(180)));
        for bad in ["", "h", "1x", "5m3", "-1", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(eighty_percent(150), 120);
        assert_eq!(eighty_percent(1), 1);
        assert_eq!(
            default_warmup(Duration::from_secs(3600)),
            Duration::from_secs(600)
        );
        assert_eq!(
            default_warmup(Duration::from_secs(180)),
            Duration::from_secs(60)
        );
    }
}
