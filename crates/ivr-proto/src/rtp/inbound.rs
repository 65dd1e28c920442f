//! The receive side of one call's media, assembled: parse → RFC 3550 stats → jitter buffer →
//! decoder (with concealment), plus RFC 4733 digits. The shell feeds datagrams as they arrive
//! and pulls one frame of PCM per 20 ms playout tick. No allocation after `new`.

use std::time::Instant;

use super::codec::{CodecError, Decoder, frame_samples};
use super::dtmf::{DigitEvent, TelephoneEventReceiver};
use super::jitter::{JitterBuffer, JitterConfig, JitterStats, Pop};
use super::packet::{PacketError, parse_rtp};
use super::rtcp::ReportBlock;
use super::session::{Accept, ReceiverStats, RtpReceiver};
use crate::types::Codec;

/// What the negotiated SDP says about the incoming stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundConfig {
    pub codec: Codec,
    /// Payload type of the audio codec (0 PCMU, 8 PCMA, dynamic for Opus).
    pub audio_pt: u8,
    /// Payload type of telephone-event, if negotiated.
    pub event_pt: Option<u8>,
    pub jitter: JitterConfig,
}

impl InboundConfig {
    /// Defaults for a codec: static PTs for G.711, 111 for Opus, telephone-event at 101, jitter
    /// slots sized for the codec's payloads and clock.
    pub fn for_codec(codec: Codec) -> Self {
        let (audio_pt, max_payload) = match codec {
            Codec::Pcmu => (0, 320),
            Codec::Pcma => (8, 320),
            Codec::Opus => (111, super::codec::OPUS_MAX_PACKET),
        };
        InboundConfig {
            codec,
            audio_pt,
            event_pt: Some(101),
            jitter: JitterConfig {
                capacity: CAPACITY,
                max_payload,
                clock_rate: codec.rtp_clock(),
                ..JitterConfig::default()
            },
        }
    }
}

/// Jitter buffer slots of a call: 1.28 s of 20 ms frames. The playout target stays 40–100 ms;
/// the room is for a call task that was not scheduled for a while on a saturated machine
/// (seen: several hundred ms) and then reads every packet that waited: with 16 slots the
/// buffer overflowed, dropping frames that had arrived (issue #19: 35–43 per TTY call at 150
/// concurrent calls, each one a Baudot character lost).
const CAPACITY: usize = 64;
/// Catch-up: frames beyond the playout target tolerated before a tick pops more than one (a
/// little, or ordinary jitter would make ticks pop twice), pops per tick at most, and the
/// backlog at which the shell stops reading datagrams before popping (with the target of 2–5
/// frames it stays well inside the buffer).
const BACKLOG_SLACK: usize = 2;
const POPS_PER_TICK_MAX: usize = 16;
const DRAIN_BACKLOG_MAX: usize = 40;

/// What one playout tick produced (see [`Inbound::poll_media`]); the count is PCM samples
/// written to the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout {
    Audio(usize),
    Concealed(usize),
    Empty,
}

#[derive(Debug)]
pub struct Inbound {
    cfg: InboundConfig,
    rx: RtpReceiver,
    jitter: JitterBuffer,
    decoder: Decoder,
    events: TelephoneEventReceiver,
    /// Packets with a payload type we did not negotiate (comfort noise, stray streams).
    ignored: u64,
    /// Added to arriving sequence numbers before the jitter buffer: a new SSRC continues the
    /// old stream's sequence space there (see `handle_datagram`).
    seq_offset: u16,
    /// The last packet of another SSRC (the receiver takes a new source over on its second
    /// packet in sequence: this is its first, which would be lost). Payload in `candidate_buf`.
    candidate: Option<Candidate>,
    candidate_buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    is_event: bool,
    len: usize,
}

impl Inbound {
    pub fn new(cfg: InboundConfig) -> Result<Self, CodecError> {
        Ok(Inbound {
            cfg,
            rx: RtpReceiver::new(cfg.codec.rtp_clock()),
            jitter: JitterBuffer::new(cfg.jitter),
            decoder: Decoder::new(cfg.codec)?,
            // Telephone-event shares the audio stream's clock (RFC 4733 §2.1).
            events: TelephoneEventReceiver::new(cfg.codec.rtp_clock()),
            ignored: 0,
            seq_offset: 0,
            candidate: None,
            candidate_buf: vec![0; cfg.jitter.max_payload],
        })
    }

    /// Feeds one RTP datagram that arrived at `now`. Returns a digit when an RFC 4733 key press
    /// completes. Malformed datagrams are errors the shell counts and otherwise ignores.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: &[u8],
    ) -> Result<Option<DigitEvent>, PacketError> {
        let p = parse_rtp(datagram)?;
        let is_event = Some(p.payload_type) == self.cfg.event_pt;
        if p.payload_type != self.cfg.audio_pt && !is_event {
            self.ignored += 1;
            return Ok(None);
        }
        match self.rx.handle_packet(now, p.ssrc, p.seq, p.timestamp) {
            // A replaced stream (a media server switching sources, a restarted sender): the
            // caller's audio goes on. What is buffered of the old stream still plays and the
            // new one follows it in the jitter buffer's sequence space, so nothing that arrived
            // is dropped and no re-buffering pause opens: a Baudot character or a key tone
            // spanning the switch stays whole. (It used to flush the buffer: 40–100 ms of
            // audio and the new source's first packet lost.)
            Accept::NewSource => {
                self.events.reset(now);
                let first = p.seq.wrapping_sub(1);
                self.seq_offset = self
                    .jitter
                    .splice_point()
                    .map_or(0, |at| at.wrapping_sub(first));
                if let Some(c) = self.candidate.take()
                    && c.ssrc == p.ssrc
                    && c.seq == first
                {
                    let seq = c.seq.wrapping_add(self.seq_offset);
                    if c.is_event {
                        self.jitter.push_placeholder(seq, c.timestamp);
                    } else {
                        self.jitter
                            .push(now, seq, c.timestamp, &self.candidate_buf[..c.len]);
                    }
                }
            }
            Accept::Foreign => {
                if p.payload.len() <= self.candidate_buf.len() {
                    self.candidate_buf[..p.payload.len()].copy_from_slice(p.payload);
                    self.candidate = Some(Candidate {
                        ssrc: p.ssrc,
                        seq: p.seq,
                        timestamp: p.timestamp,
                        is_event,
                        len: p.payload.len(),
                    });
                }
                return Ok(None);
            }
            Accept::Bad => return Ok(None),
            Accept::Valid | Accept::Probation => {}
        }
        let seq = p.seq.wrapping_add(self.seq_offset);
        if is_event {
            self.jitter.push_placeholder(seq, p.timestamp);
            return Ok(self
                .events
                .handle(now, p.seq, p.timestamp, p.marker, p.payload));
        }
        self.jitter.push(now, seq, p.timestamp, p.payload);
        Ok(None)
    }

    /// One playout tick: writes a frame of PCM at `codec.pcm_rate()` into `out` (decoded,
    /// concealed, or silence while a telephone event plays). Returns 0 when there is nothing to
    /// play (not started, or the far end is silent).
    pub fn poll_audio(&mut self, now: Instant, out: &mut [i16]) -> usize {
        match self.poll_media(now, out) {
            Playout::Audio(n) | Playout::Concealed(n) => n,
            Playout::Empty => 0,
        }
    }

    /// One playout tick, saying what the frame is: audio that arrived, concealment of a frame
    /// that did not (lost, or too late for its tick), or nothing at all (not started, the
    /// buffer ran dry and is re-buffering, or the far end is silent). A receiver that decodes
    /// data from the audio (the Baudot modem) must not take concealment for signal, and must
    /// not take `Empty` for time passing on the sender's clock: the audio is late, not gone.
    pub fn poll_media(&mut self, now: Instant, out: &mut [i16]) -> Playout {
        let frame = frame_samples(self.cfg.codec).min(out.len());
        match self.jitter.pop(now) {
            Pop::Frame { payload: [], .. } => {
                out[..frame].fill(0);
                Playout::Audio(frame)
            }
            Pop::Frame { payload, .. } => match self.decoder.decode(payload, out) {
                Ok(n) => Playout::Audio(n),
                // A corrupt payload plays as a lost one.
                Err(_) => Playout::Concealed(self.decoder.decode_missing(out)),
            },
            Pop::Missing { .. } => Playout::Concealed(self.decoder.decode_missing(out)),
            Pop::Empty => Playout::Empty,
        }
    }

    /// Addresses the next packet's handling writes first (the jitter buffer's state, the
    /// slot and payload of the next packet in sequence), for a cache prefetch by a shell that
    /// handles many calls in turn: see `JitterBuffer::next_store_addrs`.
    pub fn prefetch_hint(&self) -> [*const u8; 3] {
        let [slot, data] = self.jitter.next_store_addrs();
        [std::ptr::from_ref(&self.jitter).cast(), slot, data]
    }

    /// Frames buffered beyond the playout target: the ticks fell behind the sender (the call's
    /// task was not scheduled for a while).
    pub fn backlog(&self) -> usize {
        self.jitter
            .len()
            .saturating_sub(self.jitter.target_frames())
    }

    /// Whether a playout tick that has popped `popped` frames pops another: always the tick's
    /// own frame, then catch-up frames while the backlog exceeds a little slack, so ticks the
    /// shell missed while it was not scheduled are made up for instead of the buffer
    /// overflowing (which drops audio that did arrive). Bounded per tick.
    pub fn pop_due(&self, popped: usize) -> bool {
        popped == 0 || (popped < POPS_PER_TICK_MAX && self.backlog() > BACKLOG_SLACK)
    }

    /// Whether the shell should read more waiting datagrams before this tick's pops: every
    /// packet that has arrived belongs in the buffer before its frame is declared missing, but
    /// after a stall longer than the buffer the rest waits in the socket until pops made room.
    pub fn wants_datagrams(&self) -> bool {
        self.datagram_room() > 0
    }

    /// How many more datagrams the shell may read before this tick's pops (each adds at most
    /// one frame to the buffer): a shell that reads in batches asks for no more than this.
    pub fn datagram_room(&self) -> usize {
        DRAIN_BACKLOG_MAX.saturating_sub(self.backlog())
    }

    /// Timer input for the digit receiver (an event whose end packets were all lost).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<DigitEvent> {
        self.events.handle_timeout(now)
    }

    /// When `handle_timeout` is next needed, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.events.poll_timeout()
    }

    /// The next RTCP report block; call once per report sent.
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        self.rx.report_block(now)
    }

    /// Notes an SR from the peer for LSR/DLSR.
    pub fn handle_sender_report(&mut self, now: Instant, ntp: u64) {
        self.rx.handle_sender_report(now, ntp);
    }

    pub fn stats(&self) -> ReceiverStats {
        self.rx.stats()
    }

    pub fn jitter_stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    pub fn ignored_packets(&self) -> u64 {
        self.ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::codec::{Encoder, frame_ticks};
    use crate::rtp::session::RtpSender;
    use std::time::Duration;

    #[test]
    fn audio_and_digits_through_one_stream() {
        let t0 = Instant::now();
        let mut tx = RtpSender::new(11);
        let mut enc = Encoder::new(Codec::Pcmu).unwrap();
        let mut inb = Inbound::new(InboundConfig::for_codec(Codec::Pcmu)).unwrap();
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i as f32 * 0.2).sin() * 5000.0) as i16)
            .collect();
        let mut payload = [0u8; 160];
        enc.encode(&pcm, &mut payload).unwrap();
        let mut buf = [0u8; 200];
        let mut out = [0i16; 320];
        let mut digits = vec![];
        let mut played = 0;
        let mut silent = 0;
        let mut tick = 0u64;
        let mut step = |inb: &mut Inbound, datagram: &[u8], digits: &mut Vec<char>| {
            let now = t0 + Duration::from_millis(tick * 20);
            tick += 1;
            digits.extend(inb.handle_datagram(now, datagram).unwrap().map(|d| d.digit));
            let n = inb.poll_audio(now, &mut out);
            if n == 160 && out[..160].iter().all(|&s| s == 0) {
                silent += 1;
            } else if n == 160 {
                played += 1;
            }
        };
        for _ in 0..10 {
            let n = tx.next(0, &payload, 160, false, &mut buf).unwrap();
            step(&mut inb, &buf[..n], &mut digits);
        }
        tx.start_event(4, 10, 800, 160);
        while let Some(n) = tx.next_event_packet(101, &mut buf).unwrap() {
            step(&mut inb, &buf[..n], &mut digits);
        }
        for _ in 0..10 {
            let n = tx
                .next(0, &payload, frame_ticks(Codec::Pcmu), false, &mut buf)
                .unwrap();
            step(&mut inb, &buf[..n], &mut digits);
        }
        assert_eq!(digits, vec!['4']);
        // 27 ticks; the first fills the jitter buffer and one audio packet is still held at the
        // end: 7 event packets play as silence, 19 audio frames play, nothing counts as lost.
        assert_eq!(silent, 7);
        assert_eq!(played, 19);
        assert_eq!(inb.jitter_stats().lost, 0);
        assert_eq!(inb.stats().cumulative_lost, 0);
        // Unknown PTs and garbage are ignored / errors.
        let n = crate::rtp::packet::write_rtp(&mut buf, 13, 1, 1, tx.ssrc(), false, &[0]).unwrap();
        assert_eq!(inb.handle_datagram(t0, &buf[..n]), Ok(None));
        assert_eq!(inb.ignored_packets(), 1);
        assert!(inb.handle_datagram(t0, &[1, 2, 3]).is_err());
    }

    #[test]
    fn datagram_room_counts_down_one_per_packet() {
        // A stall: packets arrive with no playout tick. Each takes one place of the room,
        // so a shell reading `datagram_room` at a time never overfills the buffer.
        let t0 = Instant::now();
        let mut tx = RtpSender::new(5);
        let mut inb = Inbound::new(InboundConfig::for_codec(Codec::Pcmu)).unwrap();
        let payload = [0xffu8; 160];
        let mut buf = [0u8; 200];
        let mut rooms = vec![inb.datagram_room()];
        while inb.wants_datagrams() {
            let n = tx.next(0, &payload, 160, false, &mut buf).unwrap();
            inb.handle_datagram(t0, &buf[..n]).unwrap();
            rooms.push(inb.datagram_room());
            assert!(rooms.len() < 200, "room never ran out: {rooms:?}");
        }
        assert_eq!(*rooms.last().unwrap(), 0);
        assert_eq!(inb.backlog(), DRAIN_BACKLOG_MAX);
        // Once past the playout target, one packet takes exactly one place.
        let counted: Vec<_> = rooms
            .iter()
            .copied()
            .filter(|&r| r < DRAIN_BACKLOG_MAX)
            .collect();
        assert!(counted.windows(2).all(|w| w[0] == w[1] + 1), "{rooms:?}");
        assert_eq!(counted.len(), DRAIN_BACKLOG_MAX);
    }

    #[test]
    fn opus_stream_on_the_48k_clock() {
        let t0 = Instant::now();
        let mut tx = RtpSender::new(21);
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        let mut inb = Inbound::new(InboundConfig::for_codec(Codec::Opus)).unwrap();
        let mut payload = [0u8; 400];
        let mut buf = [0u8; 420];
        let mut out = [0i16; 1920];
        let mut got = 0;
        for i in 0..30u64 {
            let pcm: Vec<i16> = (0..320)
                .map(|k| (((i * 320 + k) as f32 * 0.1).sin() * 6000.0) as i16)
                .collect();
            let n = enc.encode(&pcm, &mut payload).unwrap();
            let len = tx
                .next(
                    111,
                    &payload[..n],
                    frame_ticks(Codec::Opus),
                    false,
                    &mut buf,
                )
                .unwrap();
            let now = t0 + Duration::from_millis(i * 20);
            if i != 15 {
                inb.handle_datagram(now, &buf[..len]).unwrap();
            }
            let k = inb.poll_audio(now, &mut out);
            assert!(k == 0 || k == 320, "{k}");
            got += k;
        }
        assert_eq!(got, 29 * 320);
        assert_eq!(inb.jitter_stats().lost, 1);
        // Perfectly paced 960-tick packets: no jitter on the 48 kHz clock.
        assert_eq!(inb.stats().jitter, 0);
    }

    /// A seeded lossy, jittery network: 5 % loss, 0–60 ms uniform extra delay (so reordering).
    #[test]
    fn lossy_jittery_network() {
        let t0 = Instant::now();
        let mut tx = RtpSender::new(31);
        let mut inb = Inbound::new(InboundConfig::for_codec(Codec::Pcmu)).unwrap();
        let mut x: u64 = 42;
        let mut rnd = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let n_packets = 3000u64;
        let mut arrivals = vec![];
        let mut dropped = 0;
        for i in 0..n_packets {
            let mut buf = vec![0u8; 172];
            // Payload byte = low seq bits, to check playout order below.
            let payload = [(i % 251) as u8; 160];
            let len = tx.next(0, &payload, 160, false, &mut buf).unwrap();
            buf.truncate(len);
            if rnd() < 0.05 {
                dropped += 1;
                continue;
            }
            let at_us = i * 20_000 + (rnd() * 60_000.0) as u64;
            arrivals.push((at_us, buf));
        }
        arrivals.sort_by_key(|a| a.0);
        let mut out = [0i16; 160];
        let mut next = 0;
        let mut last_played: Option<i16> = None;
        let mut frames = 0;
        // Playout ticks every 20 ms, offset by 10 ms from the send grid.
        for tick in 0..n_packets + 10 {
            let now_us = tick * 20_000 + 10_000;
            while next < arrivals.len() && arrivals[next].0 <= now_us {
                let at = t0 + Duration::from_micros(arrivals[next].0);
                inb.handle_datagram(at, &arrivals[next].1).unwrap();
                next += 1;
            }
            let now = t0 + Duration::from_micros(now_us);
            if inb.poll_audio(now, &mut out) == 160 {
                frames += 1;
                last_played = Some(out[0]);
            }
        }
        assert!(last_played.is_some());
        let js = inb.jitter_stats();
        let rs = inb.stats();
        // RFC 3550 loss counts exactly what the network dropped (none at the very end here, or
        // the difference is one or two).
        assert!(
            (rs.cumulative_lost - dropped).abs() <= 2,
            "{} vs {dropped}",
            rs.cumulative_lost
        );
        // The adaptive buffer keeps late drops small: missing ≈ network loss + < 2 % late.
        assert!(js.late < n_packets / 50, "late {}", js.late);
        assert!(js.lost <= dropped as u64 + js.late + 2, "{js:?}");
        assert!(inb.jitter_stats().duplicate == 0 && js.resyncs == 0);
        assert!(frames as u64 >= n_packets - 20, "frames {frames}");
        // Uniform 0–60 ms delay: mean |D| is 20 ms; RFC 3550 jitter lands near it.
        assert!(
            (12.0..28.0).contains(&rs.jitter_ms),
            "jitter {}",
            rs.jitter_ms
        );
        let rb = inb.report_block(t0 + Duration::from_secs(61)).unwrap();
        let expect_fraction = (dropped as f64 / n_packets as f64 * 256.0) as i32;
        assert!(
            (rb.fraction_lost as i32 - expect_fraction).abs() <= 2,
            "{rb:?}"
        );
    }

    /// The caller's stream changes SSRC (new sequence numbers and timestamps) mid-talkspurt, on
    /// a perfect network: every frame that arrived plays, in order, with no gap and no
    /// re-buffering pause. Before: the switch flushed the buffer (its 2 frames and the new
    /// source's first packet lost) and playout re-buffered for 2 ticks.
    #[test]
    fn ssrc_change_splices_the_new_source_after_the_old() {
        let t0 = Instant::now();
        let mut tx = RtpSender::new(41);
        let mut tx2 = RtpSender::new(42);
        tx2.skip(123_456);
        let mut inb = Inbound::new(InboundConfig::for_codec(Codec::Pcmu)).unwrap();
        let mut buf = [0u8; 200];
        let mut out = [0i16; 160];
        let mut ticks = vec![];
        for i in 0..60u64 {
            // µ-law byte = frame number: each frame decodes to its own level.
            let payload = [(0x20 + i) as u8; 160];
            let n = if i < 30 {
                tx.next(0, &payload, 160, false, &mut buf).unwrap()
            } else {
                tx2.next(0, &payload, 160, false, &mut buf).unwrap()
            };
            let now = t0 + Duration::from_millis(i * 20);
            inb.handle_datagram(now, &buf[..n]).unwrap();
            ticks.push(match inb.poll_media(now, &mut out) {
                Playout::Audio(_) => Some(out[0]),
                Playout::Concealed(_) => Some(i16::MIN),
                Playout::Empty => None,
            });
        }
        let level = |i: u64| crate::rtp::codec::ulaw_decode((0x20 + i) as u8);
        // One tick to fill the 2-frame target, then frame k at tick k + 1, across the switch.
        assert_eq!(ticks[0], None);
        for (t, got) in ticks.iter().enumerate().skip(1) {
            assert_eq!(*got, Some(level(t as u64 - 1)), "tick {t}: {ticks:?}");
        }
        assert_eq!(inb.jitter_stats().lost, 0);
        assert_eq!(inb.stats().ssrc, tx2.ssrc());
    }

    #[test]
    fn random_datagrams_never_panic() {
        let t0 = Instant::now();
        let mut inb = Inbound::new(InboundConfig::for_codec(Codec::Pcmu)).unwrap();
        let mut x: u64 = 5;
        let mut buf = [0u8; 300];
        let mut out = [0i16; 320];
        for i in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (x >> 33) as usize % buf.len();
            for b in buf[..len].iter_mut() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                *b = (x >> 56) as u8;
            }
            // Often make it look like RTP with our PTs so the deeper paths run.
            if len >= 12 && x & 1 == 0 {
                buf[0] = 0x80;
                buf[1] = [0u8, 101, 0x80 | 101][(x >> 8) as usize % 3];
            }
            let now = t0 + Duration::from_millis(i * 7);
            let _ = inb.handle_datagram(now, &buf[..len]);
            inb.poll_audio(now, &mut out);
            inb.handle_timeout(now);
        }
    }

    #[test]
    fn loss_is_concealed_and_ssrc_change_resets() {
        let t0 = Instant::now();
        let mut tx = RtpSender::new(12);
        let mut inb = Inbound::new(InboundConfig::for_codec(Codec::Pcma)).unwrap();
        let mut buf = [0u8; 200];
        let mut out = [0i16; 160];
        let payload = [0xAAu8; 160]; // loud constant
        let mut not_loud = 0;
        for i in 0..20u64 {
            let n = tx.next(8, &payload, 160, false, &mut buf).unwrap();
            let now = t0 + Duration::from_millis(i * 20);
            if i != 8 {
                inb.handle_datagram(now, &buf[..n]).unwrap();
            }
            let k = inb.poll_audio(now, &mut out);
            // The lost frame is a copy of the previous one (first concealment step).
            if k == 160 && out.iter().any(|&s| s != 32256) {
                not_loud += 1;
            }
        }
        assert_eq!(not_loud, 0, "a single loss is concealed by repetition");
        assert_eq!(inb.jitter_stats().lost, 1);
        assert_eq!(inb.stats().cumulative_lost, 1);
        // New SSRC (two packets in sequence): buffer reset, stats restart.
        let mut tx2 = RtpSender::new(99);
        for _ in 0..2 {
            let n = tx2.next(8, &payload, 160, false, &mut buf).unwrap();
            inb.handle_datagram(t0 + Duration::from_secs(1), &buf[..n])
                .unwrap();
        }
        assert_eq!(inb.stats().ssrc, tx2.ssrc());
        assert_eq!(inb.stats().received, 1);
        assert_eq!(inb.stats().cumulative_lost, 0);
    }
}
