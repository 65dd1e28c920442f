//! RTP stream bookkeeping: the sender (seq/timestamp/marker, SR counters, RFC 4733 events out),
//! the receiver statistics of RFC 3550 A.1/A.3/A.8, and the 20 ms pacing clock.

use std::time::{Duration, Instant};

use super::packet::{PacketError, RTP_HEADER_LEN, write_header, write_rtp};

/// SplitMix64: a tiny deterministic mixer so the caller's seed gives unguessable-looking
/// initial values without a RNG dependency (RFC 3550 §5.1 wants random initial seq/ts).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An RFC 4733 event being sent (one key press).
#[derive(Debug, Clone, Copy)]
struct OutEvent {
    event: u8,
    volume: u8,
    start_ts: u32,
    elapsed: u32,
    total: u32,
    step: u32,
    /// Retransmissions of the end packet still to send (RFC 4733 §2.5.1.4 says three in all).
    ends_left: u8,
    /// Packets sent for this event: one per tick, so the media clock must cover them all.
    ticks: u32,
    started: bool,
}

/// The outgoing RTP stream of one call.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    packets_sent: u32,
    octets_sent: u32,
    event: Option<OutEvent>,
}

impl RtpSender {
    /// Initial SSRC, sequence number and timestamp are derived from `seed` (pass something
    /// random per call from the shell; tests pass constants).
    pub fn new(seed: u64) -> Self {
        let mut s = seed;
        let a = splitmix64(&mut s);
        let b = splitmix64(&mut s);
        RtpSender {
            ssrc: a as u32,
            seq: (a >> 32) as u16,
            timestamp: b as u32,
            packets_sent: 0,
            octets_sent: 0,
            event: None,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
    /// Sequence number the next packet will carry.
    pub fn seq(&self) -> u16 {
        self.seq
    }
    /// RTP timestamp of the next frame (the media clock "now").
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }
    /// Packets sent so far (RTCP SR sender's packet count).
    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }
    /// Payload octets sent so far (RTCP SR sender's octet count).
    pub fn octets_sent(&self) -> u32 {
        self.octets_sent
    }

    /// The sender-info section of an RTCP SR at `ntp` (shell-supplied wall-clock time). The RTP
    /// timestamp is that of the next frame, which the pacer sends now.
    pub fn sender_info(&self, ntp: u64) -> super::rtcp::SenderInfo {
        super::rtcp::SenderInfo {
            ntp,
            rtp_timestamp: self.timestamp,
            packet_count: self.packets_sent,
            octet_count: self.octets_sent,
        }
    }

    /// Writes the next audio packet into `out` and advances the stream: seq by one, timestamp by
    /// `samples` (RTP clock ticks the payload covers). `talkspurt_start` sets the marker bit
    /// (RFC 3551 §4.1: first packet after silence).
    pub fn next(
        &mut self,
        payload_type: u8,
        payload: &[u8],
        samples: u32,
        talkspurt_start: bool,
        out: &mut [u8],
    ) -> Result<usize, PacketError> {
        let n = write_rtp(
            out,
            payload_type,
            self.seq,
            self.timestamp,
            self.ssrc,
            talkspurt_start,
            payload,
        )?;
        self.account(payload.len(), samples);
        Ok(n)
    }

    /// Like `next`, but the payload is already at `out[12..12 + payload_len]` (the prompt
    /// cache copies or encodes straight into the send buffer); only the header is written.
    pub fn next_in_place(
        &mut self,
        payload_type: u8,
        payload_len: usize,
        samples: u32,
        talkspurt_start: bool,
        out: &mut [u8],
    ) -> Result<usize, PacketError> {
        let len = RTP_HEADER_LEN + payload_len;
        if out.len() < len {
            return Err(PacketError::BufferTooSmall {
                needed: len,
                available: out.len(),
            });
        }
        write_header(
            out,
            payload_type,
            self.seq,
            self.timestamp,
            self.ssrc,
            talkspurt_start,
        );
        self.account(payload_len, samples);
        Ok(len)
    }

    fn account(&mut self, payload_len: usize, samples: u32) {
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
    }

    /// Advances the media clock while nothing is sent (silence, hold, pacer skip), so the next
    /// packet's timestamp stays in step with wall-clock time. Seq is untouched (RFC 3550 §5.1).
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Starts sending an RFC 4733 telephone event (0–9 = digits, 10 = `*`, 11 = `#`, 12–15 =
    /// A–D). `total` and `step` are in RTP clock ticks (e.g. 100 ms and 20 ms). Drive it with
    /// `next_event_packet` once per packet tick instead of audio. Replaces any event in flight.
    pub fn start_event(&mut self, event: u8, volume_dbm0_neg: u8, total: u32, step: u32) {
        // The duration field is 16 bits; longer events would need segmenting (§2.5.2.1), which
        // an IVR never needs.
        let total = total.clamp(1, u16::MAX as u32);
        self.event = Some(OutEvent {
            event,
            volume: volume_dbm0_neg.min(63),
            start_ts: self.timestamp,
            elapsed: 0,
            total,
            step: step.max(1),
            ends_left: 0,
            ticks: 0,
            started: false,
        });
    }

    /// True while an event is being sent (audio must pause).
    pub fn event_in_progress(&self) -> bool {
        self.event.is_some()
    }

    /// Writes the next telephone-event packet, or returns `Ok(None)` when no event is in flight.
    /// Sequence: start (marker), updates, then the end packet three times. When done, the media
    /// timestamp resumes at event start + the time the packets took (one `step` per call).
    pub fn next_event_packet(
        &mut self,
        payload_type: u8,
        out: &mut [u8],
    ) -> Result<Option<usize>, PacketError> {
        let Some(mut ev) = self.event else {
            return Ok(None);
        };
        let len = RTP_HEADER_LEN + 4;
        if out.len() < len {
            return Err(PacketError::BufferTooSmall {
                needed: len,
                available: out.len(),
            });
        }
        let marker = !ev.started;
        ev.started = true;
        ev.ticks += 1;
        if ev.elapsed < ev.total {
            ev.elapsed = (ev.elapsed + ev.step).min(ev.total);
            if ev.elapsed == ev.total {
                ev.ends_left = 2;
            }
        } else {
            ev.ends_left = ev.ends_left.saturating_sub(1);
        }
        let end = ev.elapsed == ev.total;
        write_header(out, payload_type, self.seq, ev.start_ts, self.ssrc, marker);
        out[12] = ev.event;
        out[13] = if end { 0x80 } else { 0 } | ev.volume;
        // Clamped to u16::MAX in start_event.
        out[14..16].copy_from_slice(&(ev.elapsed as u16).to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(4);
        if end && ev.ends_left == 0 {
            // Resume audio where wall-clock time is: the end retransmissions took ticks too.
            let span = ev.total.max(ev.ticks.saturating_mul(ev.step));
            self.timestamp = ev.start_ts.wrapping_add(span);
            self.event = None;
        } else {
            self.event = Some(ev);
        }
        Ok(Some(len))
    }
}

// -------------------------------------------------------------------------------------------------
// Receiver statistics (RFC 3550 Appendix A.1, A.3, A.8)

const RTP_SEQ_MOD: u32 = 1 << 16;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
const MIN_SEQUENTIAL: u32 = 2;

/// What the receiver made of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Valid, in sequence (or tolerably reordered): play it.
    Valid,
    /// The source is on probation (new SSRC, not yet `MIN_SEQUENTIAL` packets in a row).
    Probation,
    /// A jump too large to trust; a second packet following it will resync the source.
    Bad,
    /// A new SSRC replaced the previous source after `MIN_SEQUENTIAL` packets in sequence;
    /// stats restarted from this packet (earlier jitter-buffer contents are stale).
    NewSource,
    /// From an SSRC other than the current source, not (yet) taking over: drop it.
    Foreign,
}

/// Statistics the RTCP report block needs, as of one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReceiverStats {
    pub ssrc: u32,
    pub extended_highest_seq: u32,
    pub expected: u32,
    pub received: u32,
    /// Cumulative lost (expected − received); negative with duplicates (RFC 3550 §6.4.1).
    pub cumulative_lost: i64,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    pub jitter_ms: f64,
}

/// Per-source receive statistics of the incoming stream.
#[derive(Debug, Clone)]
pub struct RtpReceiver {
    clock_rate: u32,
    ssrc: Option<u32>,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Arrival clock origin: the first packet's arrival time.
    epoch: Option<Instant>,
    transit: Option<i64>,
    /// Jitter estimate scaled by 16, as in RFC 3550 A.8.
    jitter_q4: u64,
    last_sr: Option<(u32, Instant)>,
    /// Another SSRC seen recently: (ssrc, last seq, packets in sequence).
    candidate: Option<(u32, u16, u32)>,
}

impl RtpReceiver {
    pub fn new(clock_rate: u32) -> Self {
        RtpReceiver {
            clock_rate: clock_rate.max(1),
            ssrc: None,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            epoch: None,
            transit: None,
            jitter_q4: 0,
            last_sr: None,
            candidate: None,
        }
    }

    /// SSRC of the source being tracked.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = seq as u32;
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    fn start_source(&mut self, ssrc: u32, seq: u16) {
        self.ssrc = Some(ssrc);
        self.init_seq(seq);
        self.max_seq = seq.wrapping_sub(1);
        self.probation = MIN_SEQUENTIAL;
        self.transit = None;
        self.epoch = None;
        self.jitter_q4 = 0;
        self.last_sr = None;
    }

    /// RFC 3550 A.1 `update_seq`. Returns whether the packet counts.
    fn update_seq(&mut self, seq: u16) -> Accept {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return Accept::Valid;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return Accept::Probation;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                // Wrapped: count another 64K cycle.
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if udelta as u32 <= RTP_SEQ_MOD - MAX_MISORDER as u32 {
            // A very large jump.
            if seq as u32 == self.bad_seq {
                // Two sequential packets: the other side restarted without telling us.
                self.init_seq(seq);
            } else {
                self.bad_seq = (seq as u32 + 1) & (RTP_SEQ_MOD - 1);
                return Accept::Bad;
            }
        }
        // Else: duplicate or reordered packet; counted.
        self.received = self.received.wrapping_add(1);
        Accept::Valid
    }

    /// Feeds one arriving packet's header fields. `now` is its arrival time.
    pub fn handle_packet(&mut self, now: Instant, ssrc: u32, seq: u16, timestamp: u32) -> Accept {
        let Some(current) = self.ssrc else {
            self.start_source(ssrc, seq);
            return self.accept_current(now, seq, timestamp);
        };
        if ssrc == current {
            return self.accept_current(now, seq, timestamp);
        }
        // Another SSRC. A single stray packet must not wreck the call's stream, so the newcomer
        // takes over only after MIN_SEQUENTIAL packets in sequence (the old source went away:
        // re-INVITE, transfer, a media server switching streams).
        let count = match self.candidate {
            Some((c, last, n)) if c == ssrc && seq == last.wrapping_add(1) => n + 1,
            _ => 1,
        };
        if count < MIN_SEQUENTIAL {
            self.candidate = Some((ssrc, seq, count));
            return Accept::Foreign;
        }
        self.candidate = None;
        self.start_source(ssrc, seq);
        // It already proved itself: skip probation.
        self.probation = 0;
        self.init_seq(seq);
        self.received = 1;
        self.update_jitter(now, timestamp);
        Accept::NewSource
    }

    fn accept_current(&mut self, now: Instant, seq: u16, timestamp: u32) -> Accept {
        let verdict = self.update_seq(seq);
        if verdict == Accept::Valid {
            self.update_jitter(now, timestamp);
        }
        verdict
    }

    /// RFC 3550 A.8: D(i-1,i) from arrival (in RTP units) minus timestamp.
    fn update_jitter(&mut self, now: Instant, timestamp: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival_units = (now.saturating_duration_since(epoch).as_nanos()
            * self.clock_rate as u128
            / 1_000_000_000) as i64;
        // Work modulo 2^32 like the timestamps do, then centre on zero.
        let transit = (arrival_units as u32).wrapping_sub(timestamp) as i32 as i64;
        if let Some(prev) = self.transit {
            let d = (transit - prev).unsigned_abs().min(u32::MAX as u64);
            // More than a second off is a jump of the sender's timestamps, not jitter: the
            // next difference is taken from here (see `JitterBuffer`'s estimate).
            if d <= u64::from(self.clock_rate) {
                // J += (|D| - J) / 16, with J kept scaled by 16.
                self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
            }
        }
        self.transit = Some(transit);
    }

    /// Notes an incoming RTCP SR from this source (for LSR/DLSR in our reports).
    pub fn handle_sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    pub fn stats(&self) -> ReceiverStats {
        let ext = self.cycles.wrapping_add(self.max_seq as u32);
        let expected = if self.ssrc.is_some() && self.probation == 0 {
            ext.wrapping_sub(self.base_seq).wrapping_add(1)
        } else {
            0
        };
        let jitter = (self.jitter_q4 >> 4) as u32;
        ReceiverStats {
            ssrc: self.ssrc.unwrap_or(0),
            extended_highest_seq: ext,
            expected,
            received: self.received,
            cumulative_lost: expected as i64 - self.received as i64,
            jitter,
            jitter_ms: jitter as f64 * 1000.0 / self.clock_rate as f64,
        }
    }

    /// The next RTCP report block (RFC 3550 A.3); updates the interval counters, so call it
    /// once per report sent. `None` before any valid packet.
    pub fn report_block(&mut self, now: Instant) -> Option<super::rtcp::ReportBlock> {
        let ssrc = self.ssrc?;
        if self.probation > 0 {
            return None;
        }
        let s = self.stats();
        let expected_interval = s.expected.wrapping_sub(self.expected_prior);
        self.expected_prior = s.expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                // DLSR is in units of 1/65536 s.
                (
                    lsr,
                    ((d.as_nanos() << 16) / 1_000_000_000).min(u32::MAX as u128) as u32,
                )
            }
            None => (0, 0),
        };
        Some(super::rtcp::ReportBlock {
            ssrc,
            fraction_lost,
            // 24-bit signed field: clamp (RFC 3550 §6.4.1).
            cumulative_lost: s.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            extended_highest_seq: s.extended_highest_seq,
            jitter: s.jitter,
            lsr,
            dlsr,
        })
    }
}

// -------------------------------------------------------------------------------------------------
// Pacing

/// What the pacer says is due at a wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Frames to send now (at most the burst limit).
    pub send: u32,
    /// Frames skipped because the shell woke too late; advance the RTP timestamp by these
    /// (`RtpSender::skip`) without sending, so media time stays in step with wall-clock.
    pub skipped: u32,
}

/// A sans-IO 20 ms packet clock. Deadlines are computed from the start instant, not chained
/// from wake-ups, so oversleeping never accumulates drift.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    frame: Duration,
    /// Index of the next frame to send.
    next: u64,
    max_burst: u32,
}

impl Pacer {
    /// `max_burst`: the most frames sent back-to-back after a late wake-up (the far end's jitter
    /// buffer absorbs small bursts; large ones would overflow it).
    pub fn new(start: Instant, frame: Duration, max_burst: u32) -> Self {
        Pacer {
            start,
            frame: frame.max(Duration::from_micros(100)),
            next: 0,
            max_burst: max_burst.max(1),
        }
    }

    /// A 20 ms pacer allowing bursts of 3.
    pub fn new_20ms(start: Instant) -> Self {
        Self::new(start, Duration::from_millis(20), 3)
    }

    fn deadline_of(&self, index: u64) -> Instant {
        // Saturating: a pathological frame length must not panic (centuries away otherwise).
        let nanos = (self.frame.as_nanos() as u64).saturating_mul(index);
        self.start
            .checked_add(Duration::from_nanos(nanos))
            .unwrap_or(self.start)
    }

    /// When the next frame is due; the shell sleeps until then.
    pub fn next_deadline(&self) -> Instant {
        self.deadline_of(self.next)
    }

    /// Marks one frame as sent.
    pub fn advance(&mut self) {
        self.next += 1;
    }

    /// Frames due at `now`, consuming them: the caller sends `send` frames and skips `skipped`.
    pub fn poll_due(&mut self, now: Instant) -> Due {
        if now < self.next_deadline() {
            return Due {
                send: 0,
                skipped: 0,
            };
        }
        let elapsed = now.duration_since(self.start).as_nanos() / self.frame.as_nanos();
        // Frames with deadline <= now: indices next..=elapsed.
        let due = (elapsed as u64 + 1).saturating_sub(self.next);
        let send = due.min(self.max_burst as u64);
        let skipped = due - send;
        self.next += due;
        Due {
            send: send as u32,
            skipped: skipped.min(u32::MAX as u64) as u32,
        }
    }

    /// Pacing error of a wake-up: how late `now` is relative to the frame just due.
    pub fn lateness(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.next_deadline())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::packet::parse_rtp;

    #[test]
    fn sender_is_continuous_across_prompts_and_silence() {
        let mut s = RtpSender::new(42);
        let (seq0, ts0, ssrc) = (s.seq(), s.timestamp(), s.ssrc());
        let mut buf = [0u8; 200];
        let payload = [0xFFu8; 160];
        let n = s.next(0, &payload, 160, true, &mut buf).unwrap();
        let p = parse_rtp(&buf[..n]).unwrap();
        assert!(p.marker);
        assert_eq!((p.seq, p.timestamp, p.ssrc), (seq0, ts0, ssrc));
        let n = s.next(0, &payload, 160, false, &mut buf).unwrap();
        let p = parse_rtp(&buf[..n]).unwrap();
        assert!(!p.marker);
        assert_eq!(
            (p.seq, p.timestamp),
            (seq0.wrapping_add(1), ts0.wrapping_add(160))
        );
        // 1 s of silence: nothing sent, clock runs.
        s.skip(8000);
        let n = s.next(0, &payload, 160, true, &mut buf).unwrap();
        let p = parse_rtp(&buf[..n]).unwrap();
        assert!(p.marker);
        assert_eq!(
            (p.seq, p.timestamp),
            (seq0.wrapping_add(2), ts0.wrapping_add(8320))
        );
        assert_eq!(s.packets_sent(), 3);
        assert_eq!(s.octets_sent(), 480);
        let si = s.sender_info(77);
        assert_eq!((si.ntp, si.packet_count, si.octet_count), (77, 3, 480));
        assert_eq!(si.rtp_timestamp, ts0.wrapping_add(8480));
        // Different seeds give different streams; the same seed the same.
        assert_ne!(RtpSender::new(43).ssrc(), ssrc);
        assert_eq!(RtpSender::new(42).ssrc(), ssrc);
    }

    #[test]
    fn in_place_header_matches_copying_path() {
        let mut a = RtpSender::new(7);
        let mut b = a.clone();
        let mut buf_a = [0u8; 172];
        let mut buf_b = [0u8; 172];
        let payload = [0x55u8; 160];
        buf_b[12..].copy_from_slice(&payload);
        let na = a.next(8, &payload, 160, false, &mut buf_a).unwrap();
        let nb = b.next_in_place(8, 160, 160, false, &mut buf_b).unwrap();
        assert_eq!(buf_a[..na], buf_b[..nb]);
    }

    #[test]
    fn dtmf_event_sequence() {
        let mut s = RtpSender::new(1);
        let ts0 = s.timestamp();
        let seq0 = s.seq();
        s.start_event(5, 10, 800, 160);
        let mut buf = [0u8; 32];
        let mut packets = vec![];
        while let Some(n) = s.next_event_packet(101, &mut buf).unwrap() {
            let p = parse_rtp(&buf[..n]).unwrap();
            packets.push((p.marker, p.seq, p.timestamp, p.payload.to_vec()));
        }
        // 5 progress packets (the 5th is the first end) + 2 end retransmissions.
        assert_eq!(packets.len(), 7);
        assert!(packets[0].0 && packets[1..].iter().all(|p| !p.0));
        assert!(packets.iter().all(|p| p.2 == ts0 && p.3[0] == 5));
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(p.1, seq0.wrapping_add(i as u16));
            let dur = u16::from_be_bytes([p.3[2], p.3[3]]);
            let end = p.3[1] & 0x80 != 0;
            assert_eq!(p.3[1] & 0x3F, 10);
            if i < 4 {
                assert!(!end);
                assert_eq!(dur, 160 * (i as u16 + 1));
            } else {
                assert!(end);
                assert_eq!(dur, 800);
            }
        }
        // 7 ticks of 160 went by.
        assert_eq!(s.timestamp(), ts0.wrapping_add(7 * 160));
        assert!(!s.event_in_progress());
    }

    fn receive(r: &mut RtpReceiver, t0: Instant, ms: u64, seq: u16, ts: u32) -> Accept {
        r.handle_packet(t0 + Duration::from_millis(ms), 0xABCD, seq, ts)
    }

    #[test]
    fn receiver_counts_loss_and_wrap() {
        let t0 = Instant::now();
        let mut r = RtpReceiver::new(8000);
        let mut seq: u16 = 65530;
        let mut ts: u32 = u32::MAX - 800;
        assert_eq!(receive(&mut r, t0, 0, seq, ts), Accept::Probation);
        let mut ms = 0;
        for i in 1..40u16 {
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
            ms += 20;
            if i % 10 == 0 {
                continue; // lose every 10th
            }
            let v = receive(&mut r, t0, ms, seq, ts);
            assert!(matches!(v, Accept::Valid), "{i}: {v:?}");
        }
        let s = r.stats();
        // Probation swallowed the first packet; base is the second one.
        assert_eq!(s.expected, 39);
        assert_eq!(s.cumulative_lost, 3);
        assert_eq!(s.extended_highest_seq, 65536 + seq as u32);
        assert_eq!(s.jitter, 0, "perfect timing has no jitter");
        let rb = r.report_block(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(rb.fraction_lost, (3 * 256 / 39) as u8);
        assert_eq!(rb.cumulative_lost, 3);
        // Second report with no new packets: no loss in the interval.
        let rb = r.report_block(t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(rb.fraction_lost, 0);
    }

    #[test]
    fn receiver_jitter_converges() {
        let t0 = Instant::now();
        let mut r = RtpReceiver::new(8000);
        // Alternate arrival offsets of 0 and 10 ms: |D| = 80 units every packet.
        for i in 0..500u32 {
            let ms = i as u64 * 20 + if i % 2 == 1 { 10 } else { 0 };
            receive(&mut r, t0, ms, i as u16, i * 160);
        }
        let s = r.stats();
        assert!((75..=80).contains(&s.jitter), "jitter {}", s.jitter);
        assert!((s.jitter_ms - 10.0).abs() < 1.0);
    }

    /// A perfect stream whose timestamps jump by 100 s mid-call: the reported jitter stays 0
    /// (before: one jump put hours into the estimate, decaying over seconds of RTCP reports).
    #[test]
    fn receiver_jitter_ignores_a_timestamp_jump() {
        let t0 = Instant::now();
        let mut r = RtpReceiver::new(8000);
        for i in 0..100u32 {
            let ts = i * 160 + if i >= 50 { 800_000 } else { 0 };
            receive(&mut r, t0, u64::from(i) * 20, i as u16, ts);
        }
        assert_eq!(r.stats().jitter, 0);
    }

    #[test]
    fn receiver_handles_ssrc_change_and_restart() {
        let t0 = Instant::now();
        let mut r = RtpReceiver::new(8000);
        for i in 0..10u16 {
            receive(&mut r, t0, i as u64 * 20, i, i as u32 * 160);
        }
        assert_eq!(r.stats().expected, 9);
        // One stray packet from elsewhere changes nothing.
        assert_eq!(r.handle_packet(t0, 0x7777, 100, 0), Accept::Foreign);
        assert_eq!(r.handle_packet(t0, 0xABCD, 10, 1600), Accept::Valid);
        assert_eq!(r.ssrc(), Some(0xABCD));
        // A new source in sequence takes over on its second packet.
        assert_eq!(r.handle_packet(t0, 0x9999, 5000, 0), Accept::Foreign);
        assert_eq!(r.handle_packet(t0, 0x9999, 5001, 160), Accept::NewSource);
        assert_eq!(r.ssrc(), Some(0x9999));
        assert_eq!(r.stats().received, 1);
        assert_eq!(r.handle_packet(t0, 0x9999, 5002, 320), Accept::Valid);
        assert_eq!(r.stats().received, 2);
        // A sequence jump without SSRC change: bad once, then resync on the next in line.
        assert_eq!(r.handle_packet(t0, 0x9999, 30000, 320), Accept::Bad);
        assert_eq!(r.handle_packet(t0, 0x9999, 30001, 480), Accept::Valid);
        assert_eq!(r.stats().expected, 1);
    }

    #[test]
    fn receiver_duplicates_make_loss_negative() {
        let t0 = Instant::now();
        let mut r = RtpReceiver::new(8000);
        for i in 0..5u16 {
            receive(&mut r, t0, i as u64 * 20, i, i as u32 * 160);
        }
        receive(&mut r, t0, 100, 4, 640);
        assert_eq!(r.stats().cumulative_lost, -1);
    }

    #[test]
    fn pacer_deadlines_and_catch_up() {
        let t0 = Instant::now();
        let mut p = Pacer::new_20ms(t0);
        assert_eq!(p.next_deadline(), t0);
        assert_eq!(
            p.poll_due(t0),
            Due {
                send: 1,
                skipped: 0
            }
        );
        assert_eq!(p.next_deadline(), t0 + Duration::from_millis(20));
        // Early wake: nothing due.
        assert_eq!(
            p.poll_due(t0 + Duration::from_millis(19)),
            Due {
                send: 0,
                skipped: 0
            }
        );
        // 45 ms late wake: frames at 20 and 40 are due.
        assert_eq!(
            p.poll_due(t0 + Duration::from_millis(45)),
            Due {
                send: 2,
                skipped: 0
            }
        );
        // Woke a second late: send 3, skip the rest, next deadline back on the grid after now.
        let now = t0 + Duration::from_millis(1045);
        let d = p.poll_due(now);
        assert_eq!(d.send, 3);
        assert_eq!(d.send + d.skipped, 50);
        assert_eq!(p.next_deadline(), t0 + Duration::from_millis(1060));
        p.advance();
        assert_eq!(p.next_deadline(), t0 + Duration::from_millis(1080));
        assert_eq!(
            p.lateness(t0 + Duration::from_millis(1081)),
            Duration::from_millis(1)
        );
    }
}
