//! Process-wide counters and gauges, rendered in the Prometheus text format on `/metrics`.
//! Plain atomics: the media path bumps them without locks or allocation.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

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
    counter calls_rejected_total: "INVITEs answered with 503 (over the call limit or draining).",
    counter calls_failed_total: "INVITEs refused for another reason (488 no common codec, no RTP port).",
    counter calls_completed_total: "Calls that ended.",
    counter calls_rtp_timeout_total: "Calls ended because the caller's RTP stopped.",
    gauge calls_active: "Calls in progress.",
    counter sip_messages_in_total: "SIP datagrams and TCP messages received.",
    counter sip_messages_out_total: "SIP messages sent.",
    counter rtp_packets_in_total: "RTP packets received.",
    counter rtp_packets_out_total: "RTP packets sent.",
    counter rtp_late_ticks_total: "Send ticks that woke more than 2 ms late.",
    counter rtp_skipped_frames_total: "Outgoing frames skipped after a stall (pacing catch-up limit).",
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.starts_with("ivr_"));
            value.parse::<i64>().unwrap();
        }
    }
}
