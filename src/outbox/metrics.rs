//! Outbox counters, in the same Prometheus text form as `server::metrics`; the admin endpoint
//! appends [`OutboxMetrics::render`] to its output.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

#[derive(Default, Debug)]
pub struct OutboxMetrics {
    /// New messages written (a repeated idempotency key is not counted again).
    pub enqueued_total: AtomicU64,
    /// Enqueue requests refused: bad recipient or URL.
    pub rejected_total: AtomicU64,
    pub delivered_total: AtomicU64,
    /// Attempts that failed and were scheduled again.
    pub retries_total: AtomicU64,
    /// Messages that reached `Failed`.
    pub failed_total: AtomicU64,
    /// Messages `Pending` or `Sending` at the worker's last pass.
    pub queued: AtomicI64,
}

impl OutboxMetrics {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        let counters = [
            (
                "outbox_enqueued_total",
                "Messages written to the outbox.",
                &self.enqueued_total,
            ),
            (
                "outbox_rejected_total",
                "Messages refused before queuing (bad recipient or link).",
                &self.rejected_total,
            ),
            (
                "outbox_delivered_total",
                "Messages accepted by the SMTP server or SMS provider.",
                &self.delivered_total,
            ),
            (
                "outbox_retries_total",
                "Failed attempts scheduled for a retry.",
                &self.retries_total,
            ),
            (
                "outbox_failed_total",
                "Messages given up on.",
                &self.failed_total,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP ivr_{name} {help}");
            let _ = writeln!(out, "# TYPE ivr_{name} counter");
            let _ = writeln!(out, "ivr_{name} {}", v.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP ivr_outbox_queued Messages pending or sending.\n# TYPE ivr_outbox_queued gauge\nivr_outbox_queued {}",
            self.queued.load(Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_metric_once() {
        let m = OutboxMetrics::default();
        m.delivered_total.fetch_add(2, Relaxed);
        m.queued.store(5, Relaxed);
        let text = m.render();
        assert!(
            text.contains(
                "# TYPE ivr_outbox_delivered_total counter\nivr_outbox_delivered_total 2\n"
            )
        );
        assert!(text.contains("ivr_outbox_queued 5\n"));
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 6);
    }
}
