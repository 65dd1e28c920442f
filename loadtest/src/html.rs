//! The HTML report: one self-contained page, plots as inline SVG written here (no plotting
//! crate, no script, opens from a file or a CI artifact).

use std::fmt::Write as _;

use crate::run::{CapacityReport, Report};
use crate::soak::{Sample, SoakReport};
use crate::stats::Dist;

const W: f64 = 560.0;
const H: f64 = 200.0;
const PAD: f64 = 40.0;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn svg_open(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\">",
        escape(title),
        W + PAD * 1.5,
        H + PAD * 1.5,
        W + PAD * 1.5,
        H + PAD * 1.5
    );
    let _ = write!(
        out,
        "<line x1=\"{PAD}\" y1=\"{H}\" x2=\"{}\" y2=\"{H}\" stroke=\"#333\"/>\
         <line x1=\"{PAD}\" y1=\"0\" x2=\"{PAD}\" y2=\"{H}\" stroke=\"#333\"/>",
        PAD + W
    );
}

fn axis_labels(out: &mut String, x_max: f64, y_max: f64, x_unit: &str, y_unit: &str) {
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            PAD + f * W,
            H + 14.0,
            short(f * x_max),
            PAD - 4.0,
            H - f * H + 3.0,
            short(f * y_max)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
         <text x=\"4\" y=\"10\" font-size=\"11\">{}</text>",
        PAD + W / 2.0,
        H + 30.0,
        escape(x_unit),
        escape(y_unit)
    );
}

fn short(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Histogram of `values` (30 bins from 0 to a round maximum), with p50/p99 marked.
pub fn histogram(title: &str, unit: &str, values: &[f64]) -> String {
    let mut out = String::new();
    svg_open(&mut out, title);
    let d = Dist::of(values);
    let x_max = nice_max(d.max);
    let bins = 30usize;
    let mut counts = vec![0usize; bins];
    for v in values.iter().filter(|v| v.is_finite()) {
        let b = ((v / x_max * bins as f64) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let y_max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bw = W / bins as f64;
    for (i, &c) in counts.iter().enumerate() {
        let h = c as f64 / y_max * H;
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a7ebb\"/>",
            PAD + i as f64 * bw + 1.0,
            H - h,
            bw - 2.0,
            h
        );
    }
    for (name, v, color) in [("p50", d.p50, "#2a2"), ("p99", d.p99, "#c22")] {
        if d.count > 0 {
            let x = PAD + v / x_max * W;
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{H}\" stroke=\"{color}\" \
                 stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"12\" font-size=\"10\" \
                 fill=\"{color}\">{name} {}</text>",
                x + 3.0,
                short(v)
            );
        }
    }
    axis_labels(&mut out, x_max, y_max, unit, "calls");
    out.push_str("</svg></figure>");
    out
}

/// A named, coloured series of (x, y) points.
pub type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart of (x, y) series sharing the axes.
pub fn lines(title: &str, x_unit: &str, y_unit: &str, series: &[Series<'_>]) -> String {
    lines_marked(title, x_unit, y_unit, series, &[])
}

/// [`lines`] with dashed vertical lines at the given x, labelled.
pub fn lines_marked(
    title: &str,
    x_unit: &str,
    y_unit: &str,
    series: &[Series<'_>],
    marks: &[(f64, &str)],
) -> String {
    let mut out = String::new();
    svg_open(&mut out, title);
    let x_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.0))
            .fold(0.0, f64::max),
    );
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    for (k, (name, color, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", PAD + x / x_max * W, H - y / y_max * H))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{color}\">{}</text>",
            path.join(" "),
            PAD + W - 150.0,
            14.0 + 13.0 * k as f64,
            escape(name)
        );
    }
    for (x, label) in marks.iter().filter(|m| m.0.is_finite() && m.0 <= x_max) {
        let x = PAD + x / x_max * W;
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{H}\" stroke=\"#888\" \
             stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" \
             fill=\"#888\">{}</text>",
            x + 3.0,
            H - 4.0,
            escape(label)
        );
    }
    axis_labels(&mut out, x_max, y_max, x_unit, y_unit);
    out.push_str("</svg></figure>");
    out
}

/// Horizontal bars: p50, p90, p99, max of each distribution.
pub fn percentiles(title: &str, rows: &[(&str, &Dist)]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<h3>{}</h3><table><tr><th>figure</th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th></th></tr>",
        escape(title)
    );
    for (name, d) in rows {
        let scale = nice_max(d.max);
        let bar = |v: f64, color: &str| {
            format!(
                "<rect x=\"0\" y=\"0\" width=\"{:.1}\" height=\"12\" fill=\"{color}\"/>",
                v / scale * 200.0
            )
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td>\
             <td><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"200\" height=\"12\">{}{}{}</svg></td></tr>",
            escape(name),
            d.count,
            d.p50,
            d.p90,
            d.p99,
            d.max,
            bar(d.max, "#ddd"),
            bar(d.p99, "#c66"),
            bar(d.p50, "#4a7ebb"),
        );
    }
    out.push_str("</table>");
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1000px}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;\
text-align:right}th{background:#eee}td:first-child{text-align:left}.ok{color:#161}\
.bad{color:#b11;font-weight:bold}figure{display:inline-block;margin:0.5em}";

pub fn render(r: &Report) -> String {
    let verdict = if r.passed {
        "<span class=ok>PASSED</span>"
    } else {
        "<span class=bad>FAILED</span>"
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadtest report</title>\
         <style>{STYLE}</style></head><body><h1>Load test: {verdict}</h1>{}</body></html>\n",
        run_sections(r)
    )
}

/// The run's part of a page: settings, objectives, percentiles, plots, correctness.
fn run_sections(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<p>{} → {} · manifest {} · {} calls ({} connected, {} passed, {} failed) · concurrency {} · \
         {:.1} s · {}</p>",
        escape(&r.tool),
        escape(&r.target),
        escape(&r.manifest),
        r.calls.total,
        r.calls.connected,
        r.calls.passed,
        r.calls.failed,
        r.settings.concurrency,
        r.wall_s,
        if r.settings.expectations_checked {
            "expectations checked against the call records"
        } else {
            "expectations NOT checked (--no-check)"
        }
    );
    if let Some(i) = &r.figures.impairment {
        let _ = write!(
            h,
            "<h2>Network impairment</h2><p>The callers' RTP went out impaired: <code>{}</code>, seed {}.</p>\
             <table><tr><th>packets</th><th>dropped</th><th>delayed</th><th>reordered</th><th>duplicated</th>\
             <th>SSRC changes</th><th>timestamp jumps</th><th>sent undelayed (hold full)</th></tr>\
             <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            escape(&r.settings.impair),
            r.settings.seed,
            i.generated,
            i.dropped,
            i.delayed,
            i.reordered,
            i.duplicated,
            i.ssrc_changes,
            i.ts_jumps,
            i.hold_overflow
        );
    }
    if let Some(cer) = r.figures.tty_cer_pct {
        let _ = write!(
            h,
            "<p>TTY: {} characters typed, character error rate {cer:.2} %.</p>",
            r.figures.tty_chars
        );
    }
    h.push_str("<h2>Objectives</h2><table><tr><th>objective</th><th>limit</th><th>measured</th><th></th></tr>");
    for o in &r.objectives {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.2}</td><td>{:.2}</td><td class={}>{}</td></tr>",
            escape(&o.name),
            o.limit,
            o.value,
            if o.ok { "ok" } else { "bad" },
            if o.ok { "met" } else { "MISSED" }
        );
    }
    h.push_str("</table>");
    let f = &r.figures;
    h.push_str(&percentiles(
        "Percentiles",
        &[
            ("INVITE → 200 (ms)", &f.invite_ms),
            ("time to first audio (ms)", &f.first_audio_ms),
            ("response latency, from input end (ms)", &f.response_ms),
            ("reaction, from input start (ms)", &f.reaction_ms),
            ("RFC 3550 jitter (ms)", &f.jitter_ms),
            ("loss (%)", &f.loss_pct),
            ("IVR pacing error |Δt − 20 ms| (ms)", &f.pacing_error_ms),
        ],
    ));
    h.push_str("<h2>Latency</h2>");
    let per = |g: &dyn Fn(&crate::call::CallResult) -> Vec<f64>| -> Vec<f64> {
        r.per_call.iter().flat_map(g).collect()
    };
    h.push_str(&histogram(
        "Response latency (end of caller input → IVR speaks)",
        "ms",
        &per(&|c| c.response_ms.clone()),
    ));
    h.push_str(&histogram(
        "Reaction (start of caller input → IVR speaks)",
        "ms",
        &per(&|c| c.reaction_ms.clone()),
    ));
    h.push_str(&histogram(
        "INVITE → 200 OK",
        "ms",
        &per(&|c| c.invite_ms.into_iter().collect()),
    ));
    h.push_str(&histogram(
        "Time to first audio (200 OK → first speech packet)",
        "ms",
        &per(&|c| c.first_audio_ms.into_iter().collect()),
    ));
    h.push_str(&histogram(
        "RFC 3550 jitter of the IVR's stream, per call",
        "ms",
        &per(&|c| vec![c.jitter_ms]),
    ));
    h.push_str("<h2>Over time</h2>");
    let tl = |g: &dyn Fn(&crate::run::TimelinePoint) -> Option<f64>| -> Vec<(f64, f64)> {
        r.timeline
            .iter()
            .filter_map(|p| g(p).map(|v| (p.t_s, v)))
            .collect()
    };
    h.push_str(&lines(
        "Concurrent calls",
        "s",
        "calls",
        &[("active", "#4a7ebb", tl(&|p| Some(p.active_calls as f64)))],
    ));
    if !r.nodes.is_empty() {
        h.push_str("<h2>Nodes behind the proxy (each node's admin API)</h2>");
        h.push_str(&node_table(&r.nodes));
        const COLORS: [&str; 6] = ["#c22", "#2a2", "#4a7ebb", "#b8860b", "#8a2be2", "#555"];
        let series = |g: &dyn Fn(&crate::nodes::NodePoint) -> Option<f64>| -> Vec<Series<'_>> {
            r.node_timeline
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        t.name.as_str(),
                        COLORS[i % COLORS.len()],
                        t.points
                            .iter()
                            .filter_map(|p| g(p).map(|v| (p.t_s, v)))
                            .collect(),
                    )
                })
                .collect()
        };
        h.push_str(&lines(
            "CPU per node (% of one core)",
            "s",
            "%",
            &series(&|p| p.cpu_pct),
        ));
        h.push_str(&lines(
            "Resident memory per node",
            "s",
            "MiB",
            &series(&|p| Some(p.rss_mib)),
        ));
        h.push_str(&lines(
            "Calls in progress per node",
            "s",
            "calls",
            &series(&|p| Some(p.calls_active)),
        ));
    }
    match &r.ivr {
        Some(ivr) => {
            h.push_str(&lines(
                "IVR CPU (% of one core)",
                "s",
                "%",
                &[("cpu", "#c22", tl(&|p| p.ivr_cpu_pct))],
            ));
            h.push_str(&lines(
                "IVR resident memory",
                "s",
                "MiB",
                &[("rss", "#2a2", tl(&|p| p.ivr_rss_mib))],
            ));
            let _ = write!(
                h,
                "<p>IVR pid {}: CPU mean {:.1} %, max {:.1} % of one core; RSS {:.1} → {:.1} MiB.</p>",
                ivr.pid, ivr.cpu_pct_mean, ivr.cpu_pct_max, ivr.rss_mib_start, ivr.rss_mib_max
            );
        }
        None if !r.nodes.is_empty() => {}
        None => h.push_str("<p>IVR CPU and memory: not measured (the IVR is not on this machine; pass --ivr-pid).</p>"),
    }
    let s = &r.sender;
    let _ = write!(
        h,
        "<h2>The tool's own pacing</h2><p>{} pacing thread(s), {} ticks, {} packets: tick lateness \
         p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {:.2} % of ticks later than 2 ms; {} resyncs. \
         The tester itself used {:.1} % of a core (mean over the run) and at most {:.0} MiB.</p>",
        s.threads,
        s.ticks,
        s.packets_sent,
        s.lateness_p50_ms,
        s.lateness_p99_ms,
        s.lateness_max_ms,
        s.late_over_2ms_pct,
        s.resyncs,
        s.tester_cpu_pct,
        s.tester_rss_mib
    );
    h.push_str("<h2>Correctness</h2><table><tr><th>script</th><th>calls</th><th>passed</th><th>failed</th><th>response p50 (ms)</th></tr>");
    for sc in &r.scripts {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class={}>{}</td><td>{}</td></tr>",
            escape(&sc.name),
            sc.calls,
            sc.passed,
            if sc.failed == 0 { "ok" } else { "bad" },
            sc.failed,
            sc.response_p50_ms.map_or("–".into(), |v| format!("{v:.0}"))
        );
    }
    h.push_str("</table>");
    if !r.failures.is_empty() {
        h.push_str("<h3>Failed calls</h3><table><tr><th>call</th><th>script</th><th>Call-ID</th><th>why</th></tr>");
        for f in &r.failures {
            let _ = write!(
                h,
                "<tr><td>#{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                f.call,
                escape(&f.script),
                escape(&f.call_id),
                escape(&f.errors.join("; "))
            );
        }
        h.push_str("</table>");
    }
    h
}

/// The soak's page: verdict, checks, the sampled series over time, then the run's sections.
pub fn render_soak(r: &SoakReport) -> String {
    let s = &r.soak;
    let mut h = String::new();
    let verdict = if s.passed {
        "<span class=ok>PASSED</span>"
    } else {
        "<span class=bad>FAILED</span>"
    };
    let st = &s.settings;
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>soak report</title>\
         <style>{STYLE}</style></head><body><h1>Soak: {verdict}</h1>\
         <p>{:.0} s of call starts at {} concurrent{} (peak {}), warm-up {:.0} s (dashed line), \
         a sample every {:.0} s; {} calls, {} failed.</p>\
         <h2>Growth checks</h2><table><tr><th>check</th><th>measured</th><th>limit</th><th></th><th>how</th></tr>",
        st.duration_s,
        st.concurrency,
        st.capacity
            .map_or(String::new(), |c| format!(" (80 % of capacity {c})")),
        s.summary.peak_active,
        st.warmup_s,
        st.interval_s,
        s.summary.calls,
        s.summary.failed,
    );
    for c in &s.checks {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} {}</td><td class={}>{}</td><td style=\"text-align:left\">{}</td></tr>",
            escape(&c.name),
            c.measured.map_or("–".into(), |v| format!("{v:.2}")),
            c.limit,
            escape(&c.unit),
            if c.flagged { "bad" } else { "ok" },
            if c.flagged { "FLAGGED" } else { "ok" },
            escape(&c.note)
        );
    }
    h.push_str("</table><h2>The IVR over time</h2>");
    let warm = [(st.warmup_s, "warm-up")];
    let pts = |g: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        s.samples
            .iter()
            .filter_map(|p| g(p).map(|v| (p.t_s, v)))
            .collect()
    };
    h.push_str(&lines_marked(
        "Resident memory",
        "s",
        "MiB",
        &[("rss", "#2a2", pts(&|p| p.rss_mib))],
        &warm,
    ));
    h.push_str(&lines_marked(
        "Open files and threads",
        "s",
        "count",
        &[
            ("open files", "#4a7ebb", pts(&|p| p.fds.map(|v| v as f64))),
            ("threads", "#a4a", pts(&|p| p.threads.map(|v| v as f64))),
        ],
        &warm,
    ));
    h.push_str(&lines_marked(
        "CPU (% of one core, per interval)",
        "s",
        "%",
        &[("cpu", "#c22", pts(&|p| p.cpu_pct))],
        &warm,
    ));
    h.push_str(&lines_marked(
        "Queues",
        "s",
        "items",
        &[
            ("ASR waiting utterances", "#c22", pts(&|p| p.asr_waiting)),
            ("ASR jobs queued", "#e90", pts(&|p| p.asr_queue_depth)),
            ("outbox backlog", "#4a7ebb", pts(&|p| p.outbox_queued)),
            ("call records unwritten", "#2a2", pts(&|p| p.store_backlog)),
        ],
        &warm,
    ));
    h.push_str(&lines_marked(
        "IVR RTP send lateness per interval",
        "s",
        "ms",
        &[
            ("mean", "#4a7ebb", pts(&|p| p.pacing_lateness_mean_ms)),
            (
                "p99 (bucket bound)",
                "#c22",
                pts(&|p| p.pacing_lateness_p99_ms),
            ),
        ],
        &warm,
    ));
    h.push_str(&lines_marked(
        "Calls",
        "s",
        "calls",
        &[
            (
                "in progress",
                "#4a7ebb",
                pts(&|p| Some(p.active_calls as f64)),
            ),
            (
                "failed (total)",
                "#c22",
                pts(&|p| Some(p.calls_failed as f64)),
            ),
        ],
        &warm,
    ));
    h.push_str(&lines_marked(
        "Calls finished (total)",
        "s",
        "calls",
        &[("done", "#2a2", pts(&|p| Some(p.calls_done as f64)))],
        &warm,
    ));
    h.push_str("<h2>The run</h2>");
    h.push_str(&run_sections(&r.run));
    h.push_str("</body></html>\n");
    h
}

/// One row per node: calls it took, CPU and memory.
fn node_table(nodes: &[crate::nodes::NodeFigures]) -> String {
    let mut h = String::from(
        "<table><tr><th>node</th><th>admin</th><th>calls taken</th><th>rejected (503)</th>\
         <th>CPU mean (% of a core)</th><th>CPU max</th><th>CPU-ms per call</th>\
         <th>RSS start → end (MiB)</th><th>RSS max</th><th>threads max</th><th>samples failed</th></tr>",
    );
    for n in nodes {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td>\
             <td>{:.1} → {:.1}</td><td>{:.1}</td><td>{:.0}</td><td class={}>{}</td></tr>",
            escape(&n.name),
            escape(&n.admin),
            n.calls_taken,
            n.calls_rejected,
            n.cpu_pct_mean,
            n.cpu_pct_max,
            n.cpu_ms_per_call.map_or("–".into(), |v| format!("{v:.0}")),
            n.rss_mib_start,
            n.rss_mib_end,
            n.rss_mib_max,
            n.threads_max,
            if n.failed_samples == 0 { "ok" } else { "bad" },
            n.failed_samples
        );
    }
    h.push_str("</table>");
    h
}

pub fn render_capacity(c: &CapacityReport) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>capacity</title>\
         <style>{STYLE}</style></head><body><h1>Capacity: {} concurrent calls sustained</h1>\
         <p>target {}</p><table><tr><th>concurrency</th><th>peak in progress</th><th>calls</th><th>failed</th>\
         <th>response p99 (ms)</th><th>INVITE p99 (ms)</th><th>loss max (%)</th><th>jitter p99 (ms)</th>\
         <th>IVR CPU max (%)</th><th>tester CPU (%)</th><th>verdict</th></tr>",
        c.sustained_concurrency,
        escape(&c.target)
    );
    for l in &c.levels {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td>\
             <td>{}</td><td>{:.0}</td><td class={}>{}</td></tr>",
            l.concurrency,
            l.peak_active,
            l.calls,
            l.failed_calls,
            l.response_p99_ms,
            l.invite_p99_ms,
            l.loss_max_pct,
            l.jitter_p99_ms,
            l.ivr_cpu_pct_max.map_or("–".into(), |v| format!("{v:.0}")),
            l.tester_cpu_pct,
            if l.passed { "ok" } else { "bad" },
            if l.passed {
                "held".to_string()
            } else {
                escape(&l.broken.join(", "))
            }
        );
    }
    h.push_str("</table>");
    if c.levels.iter().any(|l| !l.nodes.is_empty()) {
        h.push_str("<h2>Per node, per level (each node's admin API)</h2>");
        for l in &c.levels {
            let _ = write!(h, "<h3>concurrency {}</h3>", l.concurrency);
            h.push_str(&node_table(&l.nodes));
        }
    }
    let pts = |g: &dyn Fn(&crate::run::Level) -> f64| -> Vec<(f64, f64)> {
        c.levels
            .iter()
            .map(|l| (l.concurrency as f64, g(l)))
            .collect()
    };
    h.push_str(&lines(
        "Response latency p99 by concurrency",
        "concurrent calls",
        "ms",
        &[("response p99", "#c22", pts(&|l| l.response_p99_ms))],
    ));
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_svg_with_one_rect_per_bin_and_markers() {
        let v: Vec<f64> = (0..100).map(f64::from).collect();
        let svg = histogram("t <x>", "ms", &v);
        assert_eq!(svg.matches("<rect").count(), 30);
        assert!(svg.contains("p50 49") && svg.contains("p99 98"), "{svg}");
        assert!(svg.contains("t &lt;x&gt;"));
        // Empty and non-finite input: still a valid figure, no NaN coordinates.
        let empty = histogram("e", "ms", &[f64::NAN]);
        assert!(!empty.contains("NaN"));
    }

    #[test]
    fn nice_max_rounds_up() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(130.0), 200.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
    }

    #[test]
    fn line_chart_has_a_point_per_sample() {
        let svg = lines(
            "c",
            "s",
            "n",
            &[("a", "#000", vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0)])],
        );
        let pts = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(pts.split(' ').count(), 3);
    }
}
