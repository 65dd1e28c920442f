//! Process-wide counters and gauges, rendered in the Prometheus text format on `/metrics`.
//! Plain atomics: the media path bumps them without locks or allocation.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::sip::guard::DropReason;

macro_rules! metrics {
    ($( $kind:ident $name:ident : $help:literal ),* $(,)?) => {
        #[derive(Default)]
        pub struct Metrics {
            $( pub $name: metrics!(@ty $kind), )*
        }

        impl Metrics {
            /// The Prometheus text exposition of every metric.
            pub fn render(&self) -> String {
                let mut out = String::with_capacity(4096);
                $(
                    let _ = writeln!(out, "# HELP ivr_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE ivr_{} {}", stringify!($name), metrics!(@kind $kind));
                    let _ = writeln!(out, "ivr_{} {}", stringify!($name), self.$name.load(Relaxed));
                )*
                out
            }
        }
    };
    (@ty counter) => { AtomicU64 };
    (@ty gauge) => { AtomicI64 };
    (@kind counter) => { "counter" };
    (@kind gauge) => { "gauge" };
}

metrics! {
    counter calls_total: "INVITEs that created a call.",
    counter calls_rejected_total: "INVITEs answered with 503 (over the call limit, draining, or the runtime lagging).",
    counter calls_shed_total: "INVITEs answered with 503 because the runtime lagged more than calls.max_scheduling_lag_ms (also in calls_rejected_total).",
    gauge scheduling_lag_ms: "How late a task on the runtime (where SIP and the call tasks run) wakes: the worst recent lateness, decaying over ~0.5 s.",
    counter calls_failed_total: "INVITEs refused for another reason (488 no common codec, no RTP port).",
    counter calls_completed_total: "Calls that ended.",
    counter calls_rtp_timeout_total: "Calls ended because the caller's RTP stopped.",
    gauge calls_active: "Calls in progress.",
    counter sip_messages_in_total: "SIP datagrams and TCP messages received.",
    counter sip_messages_out_total: "SIP messages sent.",
    counter rtp_packets_in_total: "RTP packets received.",
    counter rtp_stray_packets_total: "RTP packets dropped: not from the address and port the call's media came from first (strict source).",
    counter rtp_packets_out_total: "RTP packets sent.",
    counter srtp_refused_total: "SRTP packets dropped: authentication or replay check failed, or plain RTP on an SRTP leg (caller legs as they arrive, agent legs at the call's end).",
    counter rtp_late_ticks_total: "Send ticks that woke more than 2 ms late.",
    counter rtp_skipped_frames_total: "Outgoing frames skipped after a stall (pacing catch-up limit).",
    gauge rtp_sockets_watched: "Calls' RTP sockets the media threads watch with epoll (quiet: on hold, silence suppression, not sending yet); the others are read at every tick without asking.",
    gauge rtp_threads_io_uring: "Media threads sending their calls' RTP through io_uring, one submission per tick (the others send with sendto: io_uring refused, or [media] io_uring = false).",
    counter rtp_send_errors_total: "Outgoing RTP packets the kernel refused (socket buffer full, no route); they are not resent.",
    counter rtp_watch_changes_total: "RTP sockets moved into or out of a media thread's epoll set (quiet for 5 ticks, or busy again for 5).",
    counter media_events_dropped_total: "Events of a media thread for a call task (keys, speech, RTP timeout) dropped: the task's queue was full.",
    counter dtmf_digits_total: "DTMF digits received (RFC 4733 and in-band).",
    counter prompts_played_total: "Prompt playbacks started.",
    counter prompt_reloads_total: "Successful prompt reloads.",
    counter prompt_reload_failures_total: "Rejected prompt reloads (the previous prompts kept serving).",
    counter grammar_reloads_total: "Successful grammar reloads.",
    counter grammar_reload_failures_total: "Rejected grammar reloads (the previous grammars kept serving).",
    gauge draining: "1 while the server drains for shutdown.",
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Everything on `/metrics`: the counters and gauges, then the histograms.
    pub fn render_all(&self, send_lateness: &Histogram) -> String {
        let mut out = self.render();
        send_lateness.render_into(
            &mut out,
            "ivr_rtp_send_lateness_seconds",
            "How late each outgoing RTP packet left, relative to its 20 ms deadline.",
        );
        out
    }
}

/// What the edge guard (`sip::guard`) turned away, by reason; rendered with a `reason` label.
#[derive(Default)]
pub struct EdgeMetrics {
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Requests from untrusted sources answered 403 (`untrusted = "reject"`).
    pub rejected_untrusted: AtomicU64,
    /// TCP connections closed at once (untrusted or banned source).
    pub tcp_refused: AtomicU64,
    /// Sources banned for flooding.
    pub bans: AtomicU64,
    /// Sources the guard tracks now (bounded).
    pub sources: AtomicI64,
}

impl EdgeMetrics {
    pub fn dropped(&self, reason: DropReason) {
        self.dropped[Self::index(reason)].fetch_add(1, Relaxed);
    }

    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped[Self::index(reason)].load(Relaxed)
    }

    fn index(reason: DropReason) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default()
    }

    pub fn render_into(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ivr_sip_dropped_total SIP messages dropped without a reply by the edge guard, by reason."
        );
        let _ = writeln!(out, "# TYPE ivr_sip_dropped_total counter");
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "ivr_sip_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.dropped_count(reason)
            );
        }
        for (name, help, value) in [
            (
                "sip_rejected_untrusted_total",
                "Requests from untrusted sources answered 403.",
                self.rejected_untrusted.load(Relaxed),
            ),
            (
                "sip_tcp_refused_total",
                "TCP connections closed at once (untrusted or banned source).",
                self.tcp_refused.load(Relaxed),
            ),
            (
                "sip_bans_total",
                "Sources banned for flooding (rate limit exceeded).",
                self.bans.load(Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP ivr_{name} {help}");
            let _ = writeln!(out, "# TYPE ivr_{name} counter");
            let _ = writeln!(out, "ivr_{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP ivr_sip_guard_sources Source addresses the flood guard tracks."
        );
        let _ = writeln!(out, "# TYPE ivr_sip_guard_sources gauge");
        let _ = writeln!(out, "ivr_sip_guard_sources {}", self.sources.load(Relaxed));
    }
}

/// The process's own resources at one instant, from `/proc/self/stat` (Linux).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStat {
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    pub virtual_bytes: u64,
    /// Resident set, in pages.
    pub rss_pages: u64,
}

impl ProcessStat {
    /// Parse a `/proc/<pid>/stat` line (`proc(5)`): the command name may hold spaces and
    /// parentheses, so fields are counted from the last `)`.
    pub fn parse(stat: &str) -> Option<ProcessStat> {
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] is field 3 (state): field n is f[n - 3].
        let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
        Some(ProcessStat {
            cpu_ticks: field(14)? + field(15)?,
            threads: field(20)?,
            start_ticks: field(22)?,
            virtual_bytes: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

/// Prometheus' standard process metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_threads`, `process_start_time_seconds`) of this process, read
/// from `/proc/self`: what a load tester or Prometheus reads per node. Nothing on a system
/// without `/proc`.
pub fn render_process(out: &mut String) {
    let Some(stat) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ProcessStat::parse(&s))
    else {
        return;
    };
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let page = if page > 0 { page as u64 } else { 4096 };
    // The directory listing holds the descriptor reading it: not counted.
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .ok();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let max_fds = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
        .then_some(limit.rlim_cur);
    let boot_s = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        format!("{}", stat.cpu_ticks as f64 / ticks),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        (stat.rss_pages * page).to_string(),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stat.virtual_bytes.to_string(),
    );
    if let Some(fds) = fds {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.to_string(),
        );
    }
    if let Some(max) = max_fds {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max.to_string(),
        );
    }
    metric(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        stat.threads.to_string(),
    );
    if let Some(boot) = boot_s {
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            format!("{}", boot as f64 + stat.start_ticks as f64 / ticks),
        );
    }
}

/// Reply latency buckets: 5 ms to 2 s.
pub const LATENCY_BOUNDS_US: [u64; 10] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 150_000, 250_000, 500_000, 1_000_000, 2_000_000,
];

/// A fixed-bucket histogram of durations (Prometheus `histogram`), lock-free.
pub struct Histogram {
    bounds_us: &'static [u64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn new(bounds_us: &'static [u64]) -> Self {
        Histogram {
            bounds_us,
            buckets: bounds_us.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Pacing buckets: 0.25, 0.5, 1, 2, 5, 10, 20, 50 ms.
    pub fn pacing() -> Self {
        Histogram::new(&[250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000])
    }

    pub fn observe_us(&self, us: u64) {
        // Buckets are cumulative at render time; here each observation lands in its first bucket.
        if let Some(i) = self.bounds_us.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Observations above `us` (an upper bound of the tail: counted by bucket).
    pub fn above_us(&self, us: u64) -> u64 {
        let within: u64 = self
            .bounds_us
            .iter()
            .zip(&self.buckets)
            .filter(|(b, _)| **b <= us)
            .map(|(_, c)| c.load(Relaxed))
            .sum();
        self.count().saturating_sub(within)
    }

    pub fn render_into(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds_us.iter().zip(&self.buckets) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *b as f64 / 1e6
            );
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count());
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stat_parses_odd_command_names() {
        let stat = "1234 (ivr (x) y) S 1 1234 1234 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 9 0 \
                    100 1000000 3000 18446744073709551615";
        let s = ProcessStat::parse(stat).unwrap();
        assert_eq!(s.cpu_ticks, 300);
        assert_eq!(s.threads, 9);
        assert_eq!(s.start_ticks, 100);
        assert_eq!(s.virtual_bytes, 1_000_000);
        assert_eq!(s.rss_pages, 3000);
        assert!(ProcessStat::parse("garbage").is_none());
        assert!(ProcessStat::parse("1 (x) S 1 2").is_none());
        assert!(ProcessStat::parse("").is_none());
    }

    #[test]
    fn own_process_metrics_are_read_from_proc() {
        let mut out = String::new();
        render_process(&mut out);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6, "{out}");
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_start_time_seconds") > 1.6e9);
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::inc(&m.calls_total);
        m.calls_active.store(3, Relaxed);
        let text = m.render();
        assert!(
            text.contains("# TYPE ivr_calls_total counter\nivr_calls_total 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE ivr_calls_active gauge\nivr_calls_active 3\n"));
        let h = Histogram::pacing();
        h.observe_us(300);
        h.observe_us(3_000);
        h.observe_us(90_000);
        assert_eq!(h.above_us(2_000), 2);
        let mut text = text;
        h.render_into(&mut text, "ivr_x_seconds", "x");
        assert!(
            text.contains("ivr_x_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("ivr_x_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("ivr_x_seconds_bucket{le=\"+Inf\"} 3\n"));
        let edge = EdgeMetrics::default();
        edge.dropped(DropReason::Scanner);
        edge.dropped(DropReason::Scanner);
        edge.dropped(DropReason::Banned);
        Metrics::inc(&edge.bans);
        edge.render_into(&mut text);
        assert!(
            text.contains("ivr_sip_dropped_total{reason=\"scanner\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("ivr_sip_dropped_total{reason=\"banned\"} 1\n"));
        assert!(text.contains("ivr_sip_dropped_total{reason=\"untrusted\"} 0\n"));
        assert!(text.contains("ivr_sip_bans_total 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("ivr_"), "{line}");
            value.parse::<f64>().unwrap();
        }
    }
}
