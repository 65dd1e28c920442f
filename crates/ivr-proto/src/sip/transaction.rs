//! RFC 3261 §17 transactions as state machines with timers by their RFC names.
//!
//! Each transaction keeps a small timer table of `Option<Instant>` (quinn-proto style); the
//! endpoint asks `poll_timeout` for the earliest and calls `handle_timeout(now)`, which only acts
//! on timers that are due, so early or duplicate wake-ups are harmless. Over reliable transports
//! the retransmission timers (A/E/G) are never armed and the wait timers (I/J/K) are zero.

use std::time::{Duration, Instant};

use super::message::Message;

/// T1/T2/T4 of RFC 3261 §17.1.1.1.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Timing {
    /// Timers B, F, H, J and the 2xx give-up are all 64*T1.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Server transaction identity (RFC 3261 §17.2.3): branch + sent-by + method, ACK folded into
/// INVITE. Peers without the magic cookie (RFC 2543) are keyed on Call-ID, CSeq number and From
/// tag instead.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TxKey {
    pub branch: String,
    pub sent_by: String,
    pub method: String,
}

impl TxKey {
    pub fn server(msg: &Message) -> Option<TxKey> {
        let method = msg.method()?;
        let via = msg.top_via()?;
        let method = match method.as_str() {
            "ACK" => "INVITE".to_string(),
            m => m.to_string(),
        };
        let branch = match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") && b.len() > 7 => b.to_string(),
            _ => {
                let (num, _) = msg.cseq()?;
                format!(
                    "2543:{}:{}:{}",
                    msg.call_id()?,
                    num,
                    msg.from_tag().unwrap_or_default()
                )
            }
        };
        Some(TxKey {
            branch,
            sent_by: via.sent_by.to_ascii_lowercase(),
            method,
        })
    }

    /// The INVITE transaction a CANCEL targets (same branch, RFC 3261 §9.2).
    pub fn invite_of(&self) -> TxKey {
        TxKey {
            method: "INVITE".into(),
            ..self.clone()
        }
    }
}

/// What a timer firing asks the endpoint to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxAction {
    None,
    Retransmit(Vec<u8>),
    /// Timer H (no ACK for our non-2xx) or Timer F (no answer to our request).
    TimedOut,
    /// The transaction is over; forget it.
    Terminated,
}

/// States of the INVITE server transaction (RFC 3261 Figure 7 with RFC 6026's Accepted), each
/// holding only its own data and timers (rustls-style state structs).
#[derive(Debug)]
enum InviteState {
    /// No final response yet; `last` is the latest provisional, re-sent on retransmissions.
    Proceeding { last: Vec<u8> },
    /// Non-2xx final sent; Timer G retransmits it (unreliable only), Timer H gives up.
    Completed {
        response: Vec<u8>,
        timer_g: Option<Instant>,
        g_interval: Duration,
        timer_h: Instant,
    },
    /// ACK received; absorbs ACK retransmissions until Timer I.
    Confirmed { timer_i: Instant },
    /// 2xx sent: absorbs INVITE retransmissions until Timer L; the UAS core owns the 2xx
    /// retransmissions (RFC 3261 §13.3.1.4).
    Accepted { response: Vec<u8>, timer_l: Instant },
}

/// INVITE server transaction (RFC 3261 §17.2.1, RFC 6026).
#[derive(Debug)]
pub struct InviteServerTx {
    state: InviteState,
    reliable: bool,
}

impl InviteServerTx {
    pub fn new(reliable: bool, first_response: Vec<u8>) -> InviteServerTx {
        InviteServerTx {
            state: InviteState::Proceeding {
                last: first_response,
            },
            reliable,
        }
    }

    pub fn is_proceeding(&self) -> bool {
        matches!(self.state, InviteState::Proceeding { .. })
    }

    pub fn send_provisional(&mut self, bytes: Vec<u8>) {
        if let InviteState::Proceeding { last } = &mut self.state {
            *last = bytes;
        }
    }

    /// Records a final response; `code` decides Completed (non-2xx) or Accepted (2xx). Only a
    /// proceeding transaction can take a final response; later calls are ignored.
    pub fn send_final(&mut self, now: Instant, timing: &Timing, code: u16, bytes: Vec<u8>) {
        if !self.is_proceeding() {
            return;
        }
        self.state = if (200..300).contains(&code) {
            InviteState::Accepted {
                response: bytes,
                timer_l: now + timing.timeout(),
            }
        } else {
            InviteState::Completed {
                response: bytes,
                timer_g: (!self.reliable).then(|| now + timing.t1),
                g_interval: timing.t1,
                timer_h: now + timing.timeout(),
            }
        };
    }

    /// A retransmitted INVITE: re-send the last response (RFC 3261 §17.2.1).
    pub fn handle_retransmission(&self) -> Option<&[u8]> {
        match &self.state {
            InviteState::Proceeding { last } if !last.is_empty() => Some(last),
            InviteState::Completed { response, .. } | InviteState::Accepted { response, .. } => {
                Some(response)
            }
            _ => None,
        }
    }

    /// ACK for our non-2xx final. Returns true if it was absorbed by this transaction.
    pub fn handle_ack(&mut self, now: Instant, timing: &Timing) -> bool {
        match self.state {
            InviteState::Completed { .. } => {
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    timing.t4
                };
                self.state = InviteState::Confirmed {
                    timer_i: now + wait,
                };
                true
            }
            InviteState::Confirmed { .. } => true,
            _ => false,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            InviteState::Proceeding { .. } => None,
            InviteState::Completed {
                timer_g, timer_h, ..
            } => Some(timer_g.map_or(*timer_h, |g| g.min(*timer_h))),
            InviteState::Confirmed { timer_i } => Some(*timer_i),
            InviteState::Accepted { timer_l, .. } => Some(*timer_l),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant, timing: &Timing) -> TxAction {
        match &mut self.state {
            InviteState::Proceeding { .. } => TxAction::None,
            InviteState::Completed { timer_h, .. } if *timer_h <= now => TxAction::TimedOut,
            InviteState::Completed {
                response,
                timer_g: Some(g),
                g_interval,
                ..
            } if *g <= now => {
                *g_interval = (*g_interval * 2).min(timing.t2);
                *g = now + *g_interval;
                TxAction::Retransmit(response.clone())
            }
            InviteState::Confirmed { timer_i: t } | InviteState::Accepted { timer_l: t, .. }
                if *t <= now =>
            {
                TxAction::Terminated
            }
            _ => TxAction::None,
        }
    }
}

/// Non-INVITE server transaction (RFC 3261 §17.2.2): keeps the final response for Timer J.
#[derive(Debug)]
pub struct NonInviteServerTx {
    pub last_response: Vec<u8>,
    timer_j: Instant,
}

impl NonInviteServerTx {
    pub fn completed(
        now: Instant,
        timing: &Timing,
        reliable: bool,
        response: Vec<u8>,
    ) -> NonInviteServerTx {
        let wait = if reliable {
            Duration::ZERO
        } else {
            timing.timeout()
        };
        NonInviteServerTx {
            last_response: response,
            timer_j: now + wait,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.timer_j)
    }

    pub fn handle_timeout(&mut self, now: Instant) -> TxAction {
        if self.timer_j <= now {
            TxAction::Terminated
        } else {
            TxAction::None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    Trying,
    Proceeding,
    Completed,
}

/// Non-INVITE client transaction (RFC 3261 §17.1.2), used for BYE and later REFER/INFO.
#[derive(Debug)]
pub struct NonInviteClientTx {
    pub state: ClientState,
    pub request: Vec<u8>,
    pub reliable: bool,
    timer_e: Option<Instant>,
    e_interval: Duration,
    timer_f: Option<Instant>,
    timer_k: Option<Instant>,
}

impl NonInviteClientTx {
    pub fn new(
        now: Instant,
        timing: &Timing,
        reliable: bool,
        request: Vec<u8>,
    ) -> NonInviteClientTx {
        NonInviteClientTx {
            state: ClientState::Trying,
            request,
            reliable,
            timer_e: (!reliable).then(|| now + timing.t1),
            e_interval: timing.t1,
            timer_f: Some(now + timing.timeout()),
            timer_k: None,
        }
    }

    /// A response arrived. Returns the final status code the first time a final arrives.
    pub fn handle_response(&mut self, now: Instant, timing: &Timing, code: u16) -> Option<u16> {
        match self.state {
            ClientState::Completed => None,
            _ if code < 200 => {
                self.state = ClientState::Proceeding;
                None
            }
            _ => {
                self.state = ClientState::Completed;
                self.timer_e = None;
                self.timer_f = None;
                self.timer_k = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        timing.t4
                    },
                );
                Some(code)
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.timer_e, self.timer_f, self.timer_k]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant, timing: &Timing) -> TxAction {
        if self.timer_f.is_some_and(|t| t <= now) {
            self.timer_f = None;
            self.timer_e = None;
            return TxAction::TimedOut;
        }
        if self.timer_k.is_some_and(|t| t <= now) {
            return TxAction::Terminated;
        }
        if let Some(e) = self.timer_e
            && e <= now
        {
            // In Proceeding the interval jumps to T2 (RFC 3261 §17.1.2.2).
            self.e_interval = match self.state {
                ClientState::Proceeding => timing.t2,
                _ => (self.e_interval * 2).min(timing.t2),
            };
            self.timer_e = Some(now + self.e_interval);
            return TxAction::Retransmit(self.request.clone());
        }
        TxAction::None
    }
}

/// States of the INVITE client transaction (RFC 3261 Figure 5 with RFC 6026's Accepted), each
/// holding only its own timers.
#[derive(Debug)]
enum InviteClientState {
    /// INVITE sent, nothing heard: Timer A retransmits (unreliable only), Timer B gives up.
    Calling {
        timer_a: Option<Instant>,
        a_interval: Duration,
        timer_b: Instant,
    },
    /// A provisional arrived: no more retransmissions. `give_up` is armed by a CANCEL
    /// (RFC 3261 §9.1: no final 64*T1 after CANCEL ends the transaction).
    Proceeding { give_up: Option<Instant> },
    /// Non-2xx final received and ACKed: Timer D absorbs retransmissions of that final.
    Completed { ack: Vec<u8>, timer_d: Instant },
    /// 2xx received: Timer M keeps the branch alive so that 2xx retransmissions and forked 2xx
    /// still reach the TU, which ACKs them (RFC 6026 §8.4).
    Accepted { timer_m: Instant },
}

/// What a response means for the INVITE client transaction's user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InviteResponse {
    /// 1xx while no final has arrived.
    Provisional,
    /// A 2xx (first, retransmitted or forked): the TU decides, by To tag.
    Success,
    /// First non-2xx final: the TU builds the ACK (it needs the response's To tag) and hands it
    /// to [`InviteClientTx::store_ack`].
    Rejected,
    /// Retransmitted non-2xx final: re-send this ACK.
    ResendAck(Vec<u8>),
    /// Nothing to do (late 1xx, non-2xx after a 2xx).
    Ignore,
}

/// INVITE client transaction (RFC 3261 §17.1.1, RFC 6026).
#[derive(Debug)]
pub struct InviteClientTx {
    state: InviteClientState,
    pub request: Vec<u8>,
    reliable: bool,
}

impl InviteClientTx {
    pub fn new(now: Instant, timing: &Timing, reliable: bool, request: Vec<u8>) -> InviteClientTx {
        InviteClientTx {
            state: InviteClientState::Calling {
                timer_a: (!reliable).then(|| now + timing.t1),
                a_interval: timing.t1,
                timer_b: now + timing.timeout(),
            },
            request,
            reliable,
        }
    }

    /// True before any response: CANCEL must wait for a provisional (RFC 3261 §9.1).
    pub fn is_calling(&self) -> bool {
        matches!(self.state, InviteClientState::Calling { .. })
    }

    /// True while no final response has arrived.
    pub fn is_unanswered(&self) -> bool {
        matches!(
            self.state,
            InviteClientState::Calling { .. } | InviteClientState::Proceeding { .. }
        )
    }

    pub fn handle_response(&mut self, now: Instant, timing: &Timing, code: u16) -> InviteResponse {
        let calling = self.is_calling();
        match &mut self.state {
            InviteClientState::Calling { .. } | InviteClientState::Proceeding { .. } => {
                if code < 200 {
                    if calling {
                        self.state = InviteClientState::Proceeding { give_up: None };
                    }
                    InviteResponse::Provisional
                } else if code < 300 {
                    self.state = InviteClientState::Accepted {
                        timer_m: now + timing.timeout(),
                    };
                    InviteResponse::Success
                } else {
                    // Timer D: at least 32 s over UDP to absorb final retransmissions, zero
                    // over TCP (RFC 3261 §17.1.1.2).
                    let wait = if self.reliable {
                        Duration::ZERO
                    } else {
                        timing.timeout().max(Duration::from_secs(32))
                    };
                    self.state = InviteClientState::Completed {
                        ack: Vec::new(),
                        timer_d: now + wait,
                    };
                    InviteResponse::Rejected
                }
            }
            InviteClientState::Completed { ack, .. } if code >= 300 => {
                InviteResponse::ResendAck(ack.clone())
            }
            InviteClientState::Accepted { .. } if (200..300).contains(&code) => {
                InviteResponse::Success
            }
            _ => InviteResponse::Ignore,
        }
    }

    /// The ACK for our non-2xx, kept to answer retransmissions of that final.
    pub fn store_ack(&mut self, bytes: Vec<u8>) {
        if let InviteClientState::Completed { ack, .. } = &mut self.state {
            *ack = bytes;
        }
    }

    /// A CANCEL went out: without a final within 64*T1 the transaction ends (RFC 3261 §9.1).
    pub fn handle_cancel_sent(&mut self, now: Instant, timing: &Timing) {
        if let InviteClientState::Proceeding { give_up } = &mut self.state {
            *give_up = Some(now + timing.timeout());
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            InviteClientState::Calling {
                timer_a, timer_b, ..
            } => Some(timer_a.map_or(*timer_b, |a| a.min(*timer_b))),
            InviteClientState::Proceeding { give_up } => *give_up,
            InviteClientState::Completed { timer_d, .. } => Some(*timer_d),
            InviteClientState::Accepted { timer_m } => Some(*timer_m),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> TxAction {
        match &mut self.state {
            InviteClientState::Calling { timer_b, .. } if *timer_b <= now => TxAction::TimedOut,
            InviteClientState::Calling {
                timer_a: Some(a),
                a_interval,
                ..
            } if *a <= now => {
                // Timer A doubles without the T2 cap of non-INVITE (RFC 3261 §17.1.1.2): 7 sends
                // fit in Timer B.
                *a_interval *= 2;
                *a = now + *a_interval;
                TxAction::Retransmit(self.request.clone())
            }
            InviteClientState::Proceeding { give_up: Some(t) } if *t <= now => TxAction::TimedOut,
            InviteClientState::Completed { timer_d: t, .. }
            | InviteClientState::Accepted { timer_m: t }
                if *t <= now =>
            {
                TxAction::Terminated
            }
            _ => TxAction::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }

    #[test]
    fn timer_g_doubles_to_t2_then_h_gives_up() {
        let t = timing();
        let start = Instant::now();
        let mut tx = InviteServerTx::new(false, b"100".to_vec());
        tx.send_final(start, &t, 486, b"486".to_vec());
        let mut now = start;
        let mut gaps = Vec::new();
        loop {
            let next = tx.poll_timeout().unwrap();
            gaps.push((next - now).as_millis());
            now = next;
            match tx.handle_timeout(now, &t) {
                TxAction::Retransmit(b) => assert_eq!(b, b"486"),
                TxAction::TimedOut => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&gaps[..5], &[500, 1000, 2000, 4000, 4000]);
        assert_eq!(now - start, t.timeout());
    }

    #[test]
    fn ack_confirms_and_timer_i_ends() {
        let t = timing();
        let now = Instant::now();
        let mut tx = InviteServerTx::new(false, Vec::new());
        tx.send_final(now, &t, 487, b"487".to_vec());
        assert!(tx.handle_ack(now, &t));
        assert_eq!(tx.poll_timeout(), Some(now + t.t4));
        assert_eq!(tx.handle_timeout(now, &t), TxAction::None);
        assert_eq!(tx.handle_timeout(now + t.t4, &t), TxAction::Terminated);
    }

    #[test]
    fn reliable_has_no_retransmissions() {
        let t = timing();
        let now = Instant::now();
        let mut c = NonInviteClientTx::new(now, &t, true, b"BYE".to_vec());
        assert_eq!(c.poll_timeout(), Some(now + t.timeout()));
        assert_eq!(c.handle_response(now, &t, 200), Some(200));
        assert_eq!(c.handle_response(now, &t, 200), None);
        assert_eq!(c.handle_timeout(now, &t), TxAction::Terminated);
    }

    #[test]
    fn timer_e_goes_to_t2_in_proceeding() {
        let t = timing();
        let now = Instant::now();
        let mut c = NonInviteClientTx::new(now, &t, false, b"BYE".to_vec());
        assert_eq!(
            c.handle_timeout(now + t.t1, &t),
            TxAction::Retransmit(b"BYE".to_vec())
        );
        assert_eq!(c.poll_timeout(), Some(now + t.t1 * 3));
        c.handle_response(now, &t, 100);
        assert!(matches!(
            c.handle_timeout(now + t.t1 * 3, &t),
            TxAction::Retransmit(_)
        ));
        assert_eq!(c.poll_timeout(), Some(now + t.t1 * 3 + t.t2));
        assert_eq!(c.handle_timeout(now + t.timeout(), &t), TxAction::TimedOut);
    }

    #[test]
    fn timer_a_doubles_until_timer_b() {
        let t = timing();
        let start = Instant::now();
        let mut tx = InviteClientTx::new(start, &t, false, b"INVITE".to_vec());
        let mut sends = vec![Duration::ZERO];
        let end = loop {
            let next = tx.poll_timeout().unwrap();
            match tx.handle_timeout(next) {
                TxAction::Retransmit(b) => {
                    assert_eq!(b, b"INVITE");
                    sends.push(next - start);
                }
                TxAction::TimedOut => break next - start,
                other => panic!("unexpected {other:?}"),
            }
        };
        let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(end, t.timeout());
    }

    #[test]
    fn invite_client_final_and_retransmissions() {
        let t = timing();
        let now = Instant::now();
        let mut tx = InviteClientTx::new(now, &t, false, b"INVITE".to_vec());
        assert_eq!(
            tx.handle_response(now, &t, 180),
            InviteResponse::Provisional
        );
        assert_eq!(tx.poll_timeout(), None, "no Timer A/B once proceeding");
        tx.handle_cancel_sent(now, &t);
        assert_eq!(tx.poll_timeout(), Some(now + t.timeout()));
        assert_eq!(tx.handle_response(now, &t, 487), InviteResponse::Rejected);
        tx.store_ack(b"ACK".to_vec());
        assert_eq!(
            tx.handle_response(now, &t, 487),
            InviteResponse::ResendAck(b"ACK".to_vec())
        );
        assert_eq!(tx.handle_response(now, &t, 200), InviteResponse::Ignore);
        assert_eq!(tx.poll_timeout(), Some(now + Duration::from_secs(32)));

        let mut ok = InviteClientTx::new(now, &t, true, b"INVITE".to_vec());
        assert_eq!(
            ok.poll_timeout(),
            Some(now + t.timeout()),
            "TCP: Timer B only"
        );
        assert_eq!(ok.handle_response(now, &t, 200), InviteResponse::Success);
        assert_eq!(ok.handle_response(now, &t, 200), InviteResponse::Success);
        assert_eq!(ok.handle_response(now, &t, 486), InviteResponse::Ignore);
        assert_eq!(ok.handle_timeout(now + t.timeout()), TxAction::Terminated);
    }
}
