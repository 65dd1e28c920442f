//! The runtime's scheduling lag, and the admission rule built on it.
//!
//! The media threads run at real-time priority and keep their 20 ms grid however busy the box
//! is; everything else — the SIP task, the call tasks, the admin API — runs on tokio's workers
//! at normal priority and gets what is left. On a saturated box (measured: 1,750 keys-only calls
//! on 2 cores with the load tester beside the IVR) what is left is not enough: INVITEs wait
//! seconds for their 200, calls answered late miss their first keys and BYEs go unanswered,
//! while the media of the calls in progress stays perfect. The symptom to act on is how late a
//! task on the runtime runs, so a task asks to wake every [`PERIOD`] and measures how late it
//! woke. When that lag is over `[calls] max_scheduling_lag_ms`, new INVITEs get 503 with
//! Retry-After (a dispatcher in front, such as Kamailio's, tries another node) and the calls in
//! progress keep the CPU. FreeSWITCH's `min-idle-cpu` answers the same problem from the CPU
//! side; the lag measures the harm itself, whatever causes it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::metrics::Metrics;

/// How often the watch task asks to wake.
pub const PERIOD: Duration = Duration::from_millis(50);

/// The lag as admission sees it: the worst recent lateness, decaying by 1/16 per observation
/// (a half-life of about 11 observations, ~0.5 s at [`PERIOD`]), so one late wake-up holds the
/// verdict for a moment and a steady lag holds it for as long as it lasts. Sans-IO: lateness in,
/// lag out.
#[derive(Debug, Default, Clone, Copy)]
pub struct LagMeter {
    lag_us: u64,
}

impl LagMeter {
    /// One wake-up, `late` after it was due.
    pub fn observe(&mut self, late: Duration) {
        let late = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        self.lag_us = late.max(self.lag_us - self.lag_us / 16);
    }

    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us)
    }
}

/// Whether a new call is admitted with the runtime `lag` behind, under a limit of `max_ms`
/// (0: no limit).
pub fn admits(lag: Duration, max_ms: u64) -> bool {
    max_ms == 0 || lag <= Duration::from_millis(max_ms)
}

/// Wake every [`PERIOD`] and publish the lag (`ivr_scheduling_lag_ms`) for admission and
/// `/metrics`.
pub async fn watch(metrics: Arc<Metrics>) {
    let mut meter = LagMeter::default();
    loop {
        let due = Instant::now() + PERIOD;
        tokio::time::sleep_until(due.into()).await;
        meter.observe(Instant::now().saturating_duration_since(due));
        let ms = i64::try_from(meter.lag().as_millis()).unwrap_or(i64::MAX);
        metrics.scheduling_lag_ms.store(ms, Relaxed);
    }
}

/// The published lag.
pub fn current(metrics: &Metrics) -> Duration {
    Duration::from_millis(u64::try_from(metrics.scheduling_lag_ms.load(Relaxed)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_spike_holds_then_decays() {
        let mut m = LagMeter::default();
        m.observe(400 * MS);
        assert_eq!(m.lag(), 400 * MS);
        // On-time wake-ups: the verdict holds for a moment, then fades.
        m.observe(Duration::ZERO);
        assert_eq!(m.lag(), 375 * MS);
        for _ in 0..10 {
            m.observe(Duration::ZERO);
        }
        assert!(m.lag() > 190 * MS && m.lag() < 210 * MS, "{:?}", m.lag());
        for _ in 0..80 {
            m.observe(Duration::ZERO);
        }
        assert!(m.lag() < 2 * MS, "{:?}", m.lag());
    }

    #[test]
    fn a_steady_lag_is_the_lag() {
        let mut m = LagMeter::default();
        for _ in 0..100 {
            m.observe(300 * MS);
        }
        assert_eq!(m.lag(), 300 * MS);
        // A larger one takes over at once.
        m.observe(900 * MS);
        assert_eq!(m.lag(), 900 * MS);
    }

    #[test]
    fn admission_by_lag() {
        assert!(admits(10 * MS, 500));
        assert!(admits(500 * MS, 500));
        assert!(!admits(501 * MS, 500));
        // 0: no limit.
        assert!(admits(Duration::from_secs(60), 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn watch_publishes_a_blocked_runtime() {
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(watch(metrics.clone()));
        tokio::time::sleep(3 * PERIOD).await;
        assert!(current(&metrics) < 200 * MS, "{:?}", current(&metrics));
        // The one worker blocked for 600 ms: the watch task wakes at least 550 ms late.
        std::thread::sleep(600 * MS);
        tokio::time::sleep(PERIOD / 2).await;
        let lag = current(&metrics);
        assert!(lag >= 500 * MS, "{lag:?}");
        task.abort();
    }
}
