//! RFC 4733 telephone-event receiver: turns the packet train of each key press (start, updates,
//! three redundant ends) into exactly one `DigitEvent`.

use std::time::{Duration, Instant};

/// One key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitEvent {
    /// '0'–'9', '*', '#', 'A'–'D'.
    pub digit: char,
    pub duration_ms: u32,
}

/// RFC 4733 §3.2 event code → key. Flash (16) and other events are not digits.
pub fn event_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// Key → RFC 4733 event code (for sending).
pub fn digit_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    digit: char,
    duration: u32,
    last_seen: Instant,
    emitted: bool,
}

/// How long after the last packet of an unfinished event we give up waiting for its end
/// (all end packets lost). RFC 4733 senders refresh every 50 ms at most.
const END_TIMEOUT: Duration = Duration::from_millis(300);

/// Timestamps of earlier events remembered, so their late packets are known as such.
const RECENT_EVENTS: usize = 4;

#[derive(Debug, Clone)]
pub struct TelephoneEventReceiver {
    clock_rate: u32,
    current: Option<Current>,
    /// An event completed in the same call that started another; handed out next.
    pending: Option<DigitEvent>,
    /// Timestamps of the events before `current`, newest first.
    recent: [Option<u32>; RECENT_EVENTS],
    /// When `pending` was set by `reset` (its timer is due at once).
    pending_since: Option<Instant>,
}

impl TelephoneEventReceiver {
    /// `clock_rate`: the telephone-event RTP clock (8000, or 48000 beside Opus).
    pub fn new(clock_rate: u32) -> Self {
        TelephoneEventReceiver {
            clock_rate: clock_rate.max(1),
            current: None,
            pending: None,
            recent: [None; RECENT_EVENTS],
            pending_since: None,
        }
    }

    /// The stream was replaced (a new SSRC: its timestamps start anywhere). An event the old
    /// stream left unfinished is handed out next (by `handle` or `handle_timeout`, which
    /// `poll_timeout` asks for at once); the new stream's events are all new.
    pub fn reset(&mut self, now: Instant) {
        if let Some(c) = self.current.take().filter(|c| !c.emitted) {
            // One key already waiting and another unfinished at the same switch: the second
            // is lost (two undelivered keys within one packet interval do not happen).
            self.pending
                .get_or_insert(Self::finish(self.clock_rate, &c));
            self.pending_since = Some(now);
        }
        self.recent = [None; RECENT_EVENTS];
    }

    fn finish(clock_rate: u32, c: &Current) -> DigitEvent {
        DigitEvent {
            digit: c.digit,
            duration_ms: (c.duration as u64 * 1000 / clock_rate as u64) as u32,
        }
    }

    /// Feeds one telephone-event packet. Returns a digit once per key press, when its end is
    /// seen (or when a newer event proves the previous one's end was lost).
    pub fn handle(
        &mut self,
        now: Instant,
        _seq: u16,
        timestamp: u32,
        _marker: bool,
        payload: &[u8],
    ) -> Option<DigitEvent> {
        if payload.len() < 4 {
            return self.pending.take();
        }
        let end = payload[1] & 0x80 != 0;
        let duration = u16::from_be_bytes([payload[2], payload[3]]) as u32;
        let Some(digit) = event_digit(payload[0]) else {
            return self.pending.take();
        };
        let rate = self.clock_rate;
        let mut out = self.pending.take();
        match self.current.as_mut() {
            Some(c) if c.timestamp == timestamp => {
                c.last_seen = now;
                c.duration = c.duration.max(duration);
                if end && !c.emitted {
                    c.emitted = true;
                    let ev = Self::finish(rate, c);
                    return Self::queue(&mut self.pending, out, ev);
                }
                return out;
            }
            // A packet of an earlier event (reordered, or a late end retransmission): it
            // carries that event's timestamp. Any other timestamp is a new key press, even one
            // "before" the current: the sender's timestamps may jump backwards (RFC 3550
            // allows a restart of the clock base; seen from media servers switching sources).
            Some(_) if self.recent.contains(&Some(timestamp)) => return out,
            // New event while the previous never ended (its end packets were lost): report it.
            Some(c) if !c.emitted => {
                let prev = Self::finish(rate, c);
                out = Self::queue(&mut self.pending, out, prev);
            }
            Some(_) | None => {}
        }
        // New timestamp = new key press, even without the marker (start packet lost).
        let mut c = Current {
            timestamp,
            digit,
            duration,
            last_seen: now,
            emitted: false,
        };
        if end {
            c.emitted = true;
            let ev = Self::finish(rate, &c);
            out = Self::queue(&mut self.pending, out, ev);
        }
        if let Some(prev) = self.current.replace(c) {
            self.recent.rotate_right(1);
            self.recent[0] = Some(prev.timestamp);
        }
        out
    }

    fn queue(
        pending: &mut Option<DigitEvent>,
        out: Option<DigitEvent>,
        ev: DigitEvent,
    ) -> Option<DigitEvent> {
        match out {
            None => Some(ev),
            Some(first) => {
                *pending = Some(ev);
                Some(first)
            }
        }
    }

    /// Timer input: reports an event whose end packets never came, and any queued event.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<DigitEvent> {
        if let Some(p) = self.pending.take() {
            return Some(p);
        }
        let c = self.current.as_mut()?;
        if !c.emitted && now.saturating_duration_since(c.last_seen) >= END_TIMEOUT {
            c.emitted = true;
            let c = *c;
            return Some(Self::finish(self.clock_rate, &c));
        }
        None
    }

    /// When `handle_timeout` should next be called, if an event is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending.is_some()
            && let Some(t) = self.pending_since
        {
            return Some(t);
        }
        match &self.current {
            Some(c) if !c.emitted => Some(c.last_seen + END_TIMEOUT),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::packet::parse_rtp;
    use crate::rtp::session::RtpSender;

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, if end { 0x8A } else { 0x0A }, d[0], d[1]]
    }

    #[test]
    fn one_event_per_press_from_our_own_sender() {
        let t0 = Instant::now();
        let mut tx = RtpSender::new(3);
        let mut rx = TelephoneEventReceiver::new(8000);
        let mut got = vec![];
        let mut buf = [0u8; 32];
        let mut ms = 0;
        for d in ['1', '#', '1', 'D'] {
            tx.start_event(digit_event(d).unwrap(), 10, 800, 160);
            while let Some(n) = tx.next_event_packet(101, &mut buf).unwrap() {
                let p = parse_rtp(&buf[..n]).unwrap();
                ms += 20;
                let now = t0 + Duration::from_millis(ms);
                got.extend(rx.handle(now, p.seq, p.timestamp, p.marker, p.payload));
            }
            tx.skip(800);
        }
        assert_eq!(
            got,
            ['1', '#', '1', 'D']
                .map(|digit| DigitEvent {
                    digit,
                    duration_ms: 100
                })
                .to_vec()
        );
    }

    #[test]
    fn lost_start_and_lost_ends() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        // Start packet lost: first seen is an update.
        assert_eq!(rx.handle(t0, 2, 1000, false, &pkt(7, false, 320)), None);
        // All ends lost; the next press reveals it.
        let e = rx.handle(t0, 10, 5000, true, &pkt(8, false, 160));
        assert_eq!(
            e,
            Some(DigitEvent {
                digit: '7',
                duration_ms: 40
            })
        );
        assert_eq!(rx.poll_timeout(), Some(t0 + END_TIMEOUT));
        // Ends lost again, and nothing follows: the timer reports it.
        assert_eq!(rx.handle_timeout(t0 + Duration::from_millis(100)), None);
        let e = rx.handle_timeout(t0 + Duration::from_millis(400));
        assert_eq!(
            e,
            Some(DigitEvent {
                digit: '8',
                duration_ms: 20
            })
        );
        assert_eq!(rx.handle_timeout(t0 + Duration::from_secs(2)), None);
        // A stray old end retransmission does not re-emit.
        assert_eq!(rx.handle(t0, 11, 5000, false, &pkt(8, true, 160)), None);
        assert_eq!(rx.handle(t0, 9, 1000, false, &pkt(7, true, 320)), None);
    }

    #[test]
    fn only_end_packets_arrive() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        assert_eq!(
            rx.handle(t0, 1, 0, false, &pkt(11, true, 400)),
            Some(DigitEvent {
                digit: '#',
                duration_ms: 50
            })
        );
        assert_eq!(rx.handle(t0, 2, 0, false, &pkt(11, true, 400)), None);
        // Unfinished previous + a new event that is already ended: both reported, in order.
        rx.handle(t0, 3, 800, true, &pkt(1, false, 160));
        assert_eq!(
            rx.handle(t0, 4, 1600, false, &pkt(2, true, 160))
                .map(|e| e.digit),
            Some('1')
        );
        assert_eq!(rx.handle_timeout(t0).map(|e| e.digit), Some('2'));
    }

    /// Keys after the sender's timestamp jumped backwards (the clock base restarted, same
    /// SSRC) are new presses, while late packets of earlier presses are still recognized.
    /// Before: any timestamp "older" than the current event's was taken for a late packet and
    /// every key after such a jump was lost.
    #[test]
    fn keys_after_a_backward_timestamp_jump() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        let mut got = vec![];
        for (ts, ev) in [(900_000u32, 1u8), (901_600, 2)] {
            got.extend(rx.handle(t0, 0, ts, true, &pkt(ev, false, 160)));
            got.extend(rx.handle(t0, 0, ts, false, &pkt(ev, true, 800)));
            got.extend(rx.handle(t0, 0, ts, false, &pkt(ev, true, 800)));
        }
        // The clock jumps back by 100 s; two more presses, one end retransmitted late after
        // the next press began.
        for (ts, ev) in [(100_000u32, 3u8), (101_600, 4)] {
            got.extend(rx.handle(t0, 0, ts, true, &pkt(ev, false, 160)));
            got.extend(rx.handle(t0, 0, ts, false, &pkt(ev, true, 800)));
        }
        got.extend(rx.handle(t0, 0, 100_000, false, &pkt(3, true, 800)));
        got.extend(rx.handle(t0, 0, 901_600, false, &pkt(2, true, 800)));
        got.extend(rx.handle_timeout(t0 + Duration::from_secs(1)));
        let digits: String = got.iter().map(|e| e.digit).collect();
        assert_eq!(digits, "1234");
    }

    /// A new SSRC starts its timestamps anywhere: a key pressed on the old stream and never
    /// ended is reported at the switch, and the new stream's keys are all new.
    #[test]
    fn reset_reports_the_unfinished_key() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        assert_eq!(rx.handle(t0, 0, 5000, true, &pkt(5, false, 160)), None);
        let t1 = t0 + Duration::from_millis(40);
        rx.reset(t1);
        assert_eq!(rx.poll_timeout(), Some(t1));
        assert_eq!(rx.handle_timeout(t1).map(|e| e.digit), Some('5'));
        rx.reset(t1);
        assert_eq!(rx.poll_timeout(), None);
        assert_eq!(
            rx.handle(t0, 0, 5000, true, &pkt(6, true, 160))
                .map(|e| e.digit),
            Some('6')
        );
    }

    #[test]
    fn flash_short_and_garbage_ignored() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        assert_eq!(rx.handle(t0, 1, 0, true, &pkt(16, true, 800)), None);
        assert_eq!(rx.handle(t0, 2, 0, true, &[1, 2]), None);
        assert_eq!(rx.handle(t0, 3, 0, true, &pkt(200, true, 800)), None);
        assert_eq!(event_digit(12), Some('A'));
        assert_eq!(digit_event('*'), Some(10));
        assert_eq!(digit_event('x'), None);
    }
}
