//! The retry schedule and the state transitions of a message, pure and in virtual time (unix
//! milliseconds passed in). The store applies what these functions decide.

use super::State;

/// When to try again, and when to give up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the 1st, 2nd, … failed attempt; the last entry repeats.
    pub backoff_ms: Vec<u64>,
    /// Attempts before `Failed` (a transient error on the last one is final).
    pub max_attempts: u32,
    /// How long a claimed message stays `Sending` before another worker may assume its worker
    /// died. Longer than the longest send (SMTP and HTTP timeouts) so a slow send is not
    /// duplicated by a second worker.
    pub lease_ms: u64,
}

impl Default for RetryPolicy {
    /// 5 s, 30 s, 2 min, 10 min, then hourly; 8 attempts (about 5 hours); 2-minute lease.
    fn default() -> Self {
        RetryPolicy {
            backoff_ms: vec![5_000, 30_000, 120_000, 600_000, 3_600_000],
            max_attempts: 8,
            lease_ms: 120_000,
        }
    }
}

/// What an attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted the message.
    Delivered,
    /// Worth retrying: connection refused, timeout, 4xx SMTP, HTTP 5xx/429.
    Transient(String),
    /// Will never succeed: 5xx SMTP on the recipient, HTTP 4xx.
    Permanent(String),
}

/// The row after an attempt (or a claim).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state: State,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub delivered_at_ms: Option<i64>,
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts of message `id`, spread by ±20 %: messages
    /// that failed together (a provider outage) come back spread out, not as one burst that
    /// knocks the provider over again. Deterministic per (id, attempts), so virtual-time tests
    /// are reproducible.
    pub fn jittered_backoff_ms(&self, attempts: u32, id: i64) -> u64 {
        let base = self.backoff_after_ms(attempts);
        // splitmix64 of (id, attempts): uniform in [0, 1).
        let mut z = (id as u64) ^ (u64::from(attempts) << 48);
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        (base as f64 * (0.8 + 0.4 * unit)).round() as u64
    }

    /// [`RetryPolicy::after_attempt`] with the retry time spread by
    /// [`RetryPolicy::jittered_backoff_ms`].
    pub fn after_attempt_of(
        &self,
        id: i64,
        attempts: u32,
        outcome: Outcome,
        now_ms: i64,
    ) -> Transition {
        let mut t = self.after_attempt(attempts, outcome, now_ms);
        if t.state == State::Pending {
            t.next_attempt_at_ms =
                now_ms.saturating_add(self.jittered_backoff_ms(attempts, id) as i64);
        }
        t
    }

    /// Wait after `attempts` failed attempts (1-based).
    pub fn backoff_after_ms(&self, attempts: u32) -> u64 {
        let i = (attempts.max(1) - 1) as usize;
        match self.backoff_ms.get(i).or(self.backoff_ms.last()) {
            Some(&ms) => ms,
            // An empty schedule retries at the next worker pass rather than spinning.
            None => 1_000,
        }
    }

    /// Whether a message in `state` may be claimed at `now_ms`: pending and due, or sending
    /// with an expired lease (its worker crashed or hung).
    pub fn due(&self, state: State, next_attempt_at_ms: i64, now_ms: i64) -> bool {
        matches!(state, State::Pending | State::Sending) && next_attempt_at_ms <= now_ms
    }

    /// Claiming a due message: `Sending` until the lease expires, one more attempt counted. A
    /// message whose attempts are used up (its worker died during the last one) fails instead:
    /// whether that attempt reached the provider is unknown, and retrying forever is worse.
    pub fn claim(&self, attempts: u32, now_ms: i64) -> (Transition, u32) {
        if attempts >= self.max_attempts {
            let t = Transition {
                state: State::Failed,
                next_attempt_at_ms: now_ms,
                last_error: Some("worker lost during the last attempt".into()),
                delivered_at_ms: None,
            };
            return (t, attempts);
        }
        let t = Transition {
            state: State::Sending,
            next_attempt_at_ms: now_ms.saturating_add(self.lease_ms as i64),
            last_error: None,
            delivered_at_ms: None,
        };
        (t, attempts + 1)
    }

    /// The row after attempt number `attempts` ended with `outcome` at `now_ms`.
    pub fn after_attempt(&self, attempts: u32, outcome: Outcome, now_ms: i64) -> Transition {
        match outcome {
            Outcome::Delivered => Transition {
                state: State::Delivered,
                next_attempt_at_ms: now_ms,
                last_error: None,
                delivered_at_ms: Some(now_ms),
            },
            Outcome::Permanent(e) => Transition {
                state: State::Failed,
                next_attempt_at_ms: now_ms,
                last_error: Some(e),
                delivered_at_ms: None,
            },
            Outcome::Transient(e) if attempts >= self.max_attempts => Transition {
                state: State::Failed,
                next_attempt_at_ms: now_ms,
                last_error: Some(format!("gave up after {attempts} attempts: {e}")),
                delivered_at_ms: None,
            },
            Outcome::Transient(e) => Transition {
                state: State::Pending,
                next_attempt_at_ms: now_ms.saturating_add(self.backoff_after_ms(attempts) as i64),
                last_error: Some(e),
                delivered_at_ms: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_schedule_then_repeats_last() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=7).map(|n| p.backoff_after_ms(n)).collect();
        assert_eq!(
            waits,
            [
                5_000, 30_000, 120_000, 600_000, 3_600_000, 3_600_000, 3_600_000
            ]
        );
        let empty = RetryPolicy {
            backoff_ms: vec![],
            ..p
        };
        assert_eq!(empty.backoff_after_ms(3), 1_000);
    }

    /// A message whose provider is down for good walks the whole schedule in virtual time and
    /// ends `Failed` after exactly `max_attempts` attempts.
    #[test]
    fn transient_failures_retry_then_fail() {
        let p = RetryPolicy::default();
        let (mut now, mut attempts, mut state, mut next) = (0i64, 0u32, State::Pending, 0i64);
        let mut claims = 0;
        while state != State::Failed {
            now = now.max(next);
            assert!(p.due(state, next, now));
            let (t, a) = p.claim(attempts, now);
            assert_eq!(t.state, State::Sending);
            assert!(!p.due(t.state, t.next_attempt_at_ms, now + 1), "leased");
            attempts = a;
            claims += 1;
            let t = p.after_attempt(attempts, Outcome::Transient("refused".into()), now + 10);
            state = t.state;
            next = t.next_attempt_at_ms;
            if state == State::Pending {
                assert_eq!(next - (now + 10), p.backoff_after_ms(attempts) as i64);
                assert!(!p.due(state, next, next - 1));
            }
        }
        assert_eq!(claims, p.max_attempts);
        assert_eq!(attempts, p.max_attempts);
        // 5 s + 30 s + 2 min + 10 min + 3 × 1 h of waiting, plus 10 ms per attempt.
        assert_eq!(
            now,
            5_000 + 30_000 + 120_000 + 600_000 + 3 * 3_600_000 + 7 * 10
        );
    }

    #[test]
    fn jitter_spreads_retries_within_a_fifth_and_is_reproducible() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (0..1000).map(|id| p.jittered_backoff_ms(2, id)).collect();
        let (lo, hi) = (*waits.iter().min().unwrap(), *waits.iter().max().unwrap());
        assert!(lo >= 24_000 && hi <= 36_000, "{lo}..{hi}");
        assert!(hi - lo > 10_000, "spread over most of ±20 %: {lo}..{hi}");
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 900, "{}", distinct.len());
        assert_eq!(p.jittered_backoff_ms(2, 17), p.jittered_backoff_ms(2, 17));
        let t = p.after_attempt_of(17, 2, Outcome::Transient("down".into()), 1_000);
        assert_eq!(t.state, State::Pending);
        assert_eq!(
            t.next_attempt_at_ms,
            1_000 + p.jittered_backoff_ms(2, 17) as i64
        );
        let t = p.after_attempt_of(17, 2, Outcome::Delivered, 1_000);
        assert_eq!(t.next_attempt_at_ms, 1_000);
    }

    #[test]
    fn delivered_and_permanent_are_final() {
        let p = RetryPolicy::default();
        let t = p.after_attempt(1, Outcome::Delivered, 42);
        assert_eq!((t.state, t.delivered_at_ms), (State::Delivered, Some(42)));
        assert!(!p.due(t.state, t.next_attempt_at_ms, i64::MAX));
        let t = p.after_attempt(1, Outcome::Permanent("550 no such user".into()), 42);
        assert_eq!(t.state, State::Failed);
        assert_eq!(t.last_error.as_deref(), Some("550 no such user"));
        assert!(!p.due(t.state, t.next_attempt_at_ms, i64::MAX));
    }

    /// A worker that dies mid-send leaves `Sending`; after the lease another claims it.
    #[test]
    fn expired_lease_is_reclaimed_but_not_forever() {
        let p = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let (t, a) = p.claim(0, 1_000);
        assert!(!p.due(t.state, t.next_attempt_at_ms, 1_000 + p.lease_ms as i64 - 1));
        assert!(p.due(t.state, t.next_attempt_at_ms, 1_000 + p.lease_ms as i64));
        let (t, a) = p.claim(a, 200_000);
        assert_eq!((t.state, a), (State::Sending, 2));
        let (t, a) = p.claim(a, 400_000);
        assert_eq!((t.state, a), (State::Failed, 2));
    }

    #[test]
    fn huge_times_saturate() {
        let p = RetryPolicy::default();
        let t = p.after_attempt(1, Outcome::Transient("x".into()), i64::MAX - 1);
        assert_eq!(t.next_attempt_at_ms, i64::MAX);
        let (t, _) = p.claim(0, i64::MAX);
        assert_eq!(t.next_attempt_at_ms, i64::MAX);
    }
}
