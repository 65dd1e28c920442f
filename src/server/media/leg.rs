//! One call's receive path, sans-IO (as str0m's `Rtc` or quinn-proto's `Connection`): the
//! shell hands it the caller's datagrams (`handle_datagram`), the playout ticks (`handle_tick`)
//! and its timers (`handle_timeout` at `poll_timeout`), and drains `poll_event` after each:
//! the frames for the call core's audio (the TTY modem, the Baudot watch), RTCP reports due,
//! keys (RFC 4733, in-band, a key whose end never came), the speech front end's events and the
//! RTP timeout. What arrives passes, in order: strict source, SRTP unprotect, then the jitter
//! buffer and RFC 4733 (or, on a bridged call, back to the shell to relay to the agent).
//!
//! Frames are popped lazily, one per `poll_event`, so that the shell can feed each to the core
//! (whose mode may change on it: Baudot tones switch a voice call to TTY) before the next one
//! reaches the DTMF detector and the speech front end. Events come out in the order the call
//! task always took them: the frames of the tick, its RTCP report, then the keys, then speech.
//!
//! No allocation per packet: the PCM frame and the silence frame are owned and reused.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audio::dtmf::{DtmfConfig, DtmfDetector};
use crate::call::tty::TtyWatch;
use crate::flow::{self, CallMode, Listen};
use crate::rtp::codec::FRAME_SAMPLES_16K;
use crate::rtp::inbound::{Inbound, InboundConfig, Playout};
use crate::rtp::jitter::JitterStats;
use crate::rtp::packet::is_rtcp;
use crate::rtp::rtcp::{self, ReportBlock};
use crate::rtp::srtp::Unprotector;
use crate::server::asr_pool::AsrResult;
use crate::server::call_asr::CallAsr;
use crate::server::metrics::Metrics;
use crate::sip::sdp::Negotiated;
use crate::types::{Codec, Lang};

/// How often the call reports on what it receives (RTCP RR/SR).
pub const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Keys one input can produce (RFC 4733, in-band over a few catch-up frames, a timeout); more
/// are dropped.
const DIGITS_PER_INPUT: usize = 4;

/// What the receive path needs of the negotiated media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMedia {
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
    /// None while the caller holds.
    pub remote_rtp: Option<SocketAddr>,
    /// Our direction receives (not `sendonly`/`inactive`).
    pub receives: bool,
}

impl RxMedia {
    pub fn of(m: &Negotiated) -> RxMedia {
        RxMedia {
            codec: m.codec,
            payload_type: m.payload_type,
            telephone_event: m.telephone_event,
            remote_rtp: m.remote_rtp,
            receives: m.direction.receives(),
        }
    }
}

/// What a leg starts with.
pub struct LegSetup {
    pub media: RxMedia,
    pub ptime_ms: u32,
    /// The caller is gone after this long without RTP (or RTT text).
    pub rtp_timeout: Duration,
    /// SRTP: checks and decrypts the caller's packets before anything reads them.
    pub srtp_in: Option<Unprotector>,
    /// The speech front end (a voice call whose flow can listen).
    pub asr: Option<CallAsr>,
}

/// What the leg tells the shell (`poll_event`).
#[derive(Debug)]
pub enum MediaEvent {
    /// The caller sent nothing for the configured time (and is not on hold): end the call.
    RtpTimeout,
    /// A frame out of the jitter buffer for the call core; its PCM is `MediaLeg::frame()`
    /// until the next `poll_event`.
    Frame { at: Instant, media: Playout },
    /// An RTCP report is due (its block: `MediaLeg::report_block`, taken when it is sent).
    ReportDue { at: Instant },
    /// A key (RFC 4733, in-band, or an event whose end packets were lost).
    Digit(char),
    /// Baudot tones on a voice call (narrowband): the caller types on a TTY. What the watch
    /// decoded so far, for `CallInput::BaudotHeard`. From here on the leg is in TTY mode: the
    /// frames are the TTY modem's, popped by the call task's ticks (`ticks_on_task`).
    Baudot(Vec<(Instant, char)>),
    /// The speech front end: barge-in, what was heard, or the fall back to keys.
    Speech(flow::Event),
}

/// What became of one datagram (`handle_datagram`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rx {
    /// Not from the caller's address and port (strict source): counted and dropped.
    Stray,
    /// Failed SRTP authentication or replay (or plain on an SRTP leg): counted and dropped.
    Refused,
    /// RTCP on the RTP port, malformed, or no receive path: ignored.
    Ignored,
    /// Into the jitter buffer (or RFC 4733).
    Taken,
    /// Bridged: the caller talks to the agent; the first `n` bytes of the buffer (unprotected)
    /// are for the shell to relay.
    Relay(usize),
}

/// Addresses to prefetch before a call's next receive tick (`MediaLeg::prefetch_hint`).
pub type PrefetchHint = [usize; 3];

pub struct MediaLeg {
    metrics: Arc<Metrics>,
    media: RxMedia,
    inbound: Option<Inbound>,
    inband: DtmfDetector,
    srtp_in: Option<Unprotector>,
    /// Strict source (as rtpengine's option): the address and port the caller's first good
    /// datagram came from; datagrams from anywhere else are counted and dropped. A re-INVITE
    /// that moves the caller's media lets the next good datagram set it again.
    rtp_source: Option<SocketAddr>,
    /// Stray datagrams dropped on this call (logged once, at the first).
    stray: u64,
    /// Gateways that send RFC 4733 remove the tones from the audio: in-band detection stops.
    saw_rfc4733: bool,
    last_rx: Instant,
    rtp_timeout: Duration,
    /// The RTP timeout is watched (not once the call hangs up, nor after it fired).
    rtp_watch: bool,
    timed_out: bool,
    next_rtcp: Instant,
    report_due: Option<Instant>,
    /// A playout tick in progress: its time and the frames popped so far.
    playout: Option<(Instant, usize)>,
    pcm: [i16; FRAME_SAMPLES_16K * 3],
    frame_len: usize,
    /// A frame of silence for playout ticks with no audio: the endpointer's clock is the audio,
    /// so a caller who stops sending RTP still ends their utterance.
    silence: Vec<i16>,
    asr: Option<CallAsr>,
    /// The Baudot watch of a voice call, on every frame (the core's `TtyWatch`, run here).
    watch: TtyWatch,
    mode: CallMode,
    bridged: bool,
    digits: VecDeque<char>,
}

fn inbound_for(media: &RxMedia) -> Option<Inbound> {
    let mut cfg = InboundConfig::for_codec(media.codec);
    cfg.audio_pt = media.payload_type;
    cfg.event_pt = media.telephone_event;
    Inbound::new(cfg).ok()
}

impl MediaLeg {
    pub fn new(now: Instant, setup: LegSetup, metrics: Arc<Metrics>) -> MediaLeg {
        let media = setup.media;
        let silence = vec![0i16; (media.codec.pcm_rate() * setup.ptime_ms / 1000) as usize];
        MediaLeg {
            metrics,
            inbound: inbound_for(&media),
            media,
            inband: DtmfDetector::new(DtmfConfig::default()),
            srtp_in: setup.srtp_in,
            rtp_source: None,
            stray: 0,
            saw_rfc4733: false,
            last_rx: now,
            rtp_timeout: setup.rtp_timeout,
            rtp_watch: true,
            timed_out: false,
            next_rtcp: now + RTCP_INTERVAL,
            report_due: None,
            playout: None,
            pcm: [0i16; FRAME_SAMPLES_16K * 3],
            frame_len: 0,
            silence,
            asr: setup.asr,
            watch: TtyWatch::default(),
            mode: CallMode::Voice,
            bridged: false,
            digits: VecDeque::with_capacity(DIGITS_PER_INPUT),
        }
    }

    /// One datagram from the caller's RTP port, at `now`, from `from`; `buf` is unprotected in
    /// place on an SRTP leg.
    pub fn handle_datagram(&mut self, now: Instant, buf: &mut [u8], from: SocketAddr) -> Rx {
        if self.is_stray(from) {
            return Rx::Stray;
        }
        let len = match self.srtp_in.as_mut() {
            Some(u) => match u.unprotect(buf) {
                Ok(n) => n,
                Err(_) => {
                    Metrics::inc(&self.metrics.srtp_refused_total);
                    return Rx::Refused;
                }
            },
            None => buf.len(),
        };
        if self.bridged {
            self.received(now, from);
            return Rx::Relay(len);
        }
        let data = &buf[..len];
        let Some(inb) = self.inbound.as_mut().filter(|_| !is_rtcp(data)) else {
            return Rx::Ignored;
        };
        match inb.handle_datagram(now, data) {
            Ok(ev) => {
                Metrics::inc(&self.metrics.rtp_packets_in_total);
                self.received(now, from);
                if let Some(e) = ev {
                    self.saw_rfc4733 = true;
                    self.put_digit(e.digit);
                }
                Rx::Taken
            }
            Err(_) => Rx::Ignored,
        }
    }

    /// Strict source: whether a datagram from `from` is not the caller's (counted, dropped).
    fn is_stray(&mut self, from: SocketAddr) -> bool {
        if self.rtp_source.is_none_or(|src| src == from) {
            return false;
        }
        Metrics::inc(&self.metrics.rtp_stray_packets_total);
        self.stray += 1;
        if self.stray == 1 {
            tracing::warn!(%from, expected = ?self.rtp_source, "RTP from a stray source dropped");
        }
        true
    }

    /// The caller's media arrived: the call is alive, and its first good datagram sets the
    /// strict source.
    fn received(&mut self, now: Instant, from: SocketAddr) {
        self.last_rx = now;
        self.rtp_source.get_or_insert(from);
    }

    fn put_digit(&mut self, d: char) {
        if self.digits.len() < DIGITS_PER_INPUT {
            self.digits.push_back(d);
        }
    }

    /// How many datagrams the shell may read before the tick (each adds at most one frame):
    /// past a stall longer than the jitter buffer, packets wait in the socket (the kernel
    /// buffers seconds of them) until the ticks made room, instead of overflowing the buffer
    /// (which drops frames that arrived). Unbounded without a receiver.
    pub fn datagram_room(&self) -> usize {
        self.inbound
            .as_ref()
            .map_or(usize::MAX, Inbound::datagram_room)
    }

    /// A playout tick at `now`, after the shell read every datagram that had arrived: the
    /// frames due (one, more while catching up on a backlog) come out of `poll_event`, then the
    /// RTCP report when one is due.
    pub fn handle_tick(&mut self, now: Instant) {
        self.playout = Some((now, 0));
        if now >= self.next_rtcp {
            self.next_rtcp = now + RTCP_INTERVAL;
            self.report_due = Some(now);
        }
    }

    /// Timers: an RFC 4733 key whose end packets were lost, and the RTP timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(inb) = self.inbound.as_mut()
            && inb.poll_timeout().is_some_and(|t| t <= now)
            && let Some(ev) = inb.handle_timeout(now)
        {
            self.put_digit(ev.digit);
        }
        if self.rtp_deadline().is_some_and(|t| t <= now) {
            self.rtp_watch = false;
            self.timed_out = true;
        }
    }

    /// When `handle_timeout` is next needed (the playout ticks are the shell's clock).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let digit = self.inbound.as_ref().and_then(Inbound::poll_timeout);
        match (digit, self.rtp_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn rtp_deadline(&self) -> Option<Instant> {
        let receiving = self.media.receives && self.media.remote_rtp.is_some();
        (self.rtp_watch && receiving).then(|| self.last_rx + self.rtp_timeout)
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        if std::mem::take(&mut self.timed_out) {
            return Some(MediaEvent::RtpTimeout);
        }
        if let Some(frame) = self.next_frame() {
            return Some(frame);
        }
        if let Some(at) = self.report_due.take() {
            return Some(MediaEvent::ReportDue { at });
        }
        if let Some(d) = self.digits.pop_front() {
            return Some(MediaEvent::Digit(d));
        }
        self.asr
            .as_mut()
            .and_then(CallAsr::poll_event)
            .map(MediaEvent::Speech)
    }

    /// The tick's next frame, if one is due: on a voice call to the in-band DTMF detector and
    /// the speech front end, then out for the core.
    fn next_frame(&mut self) -> Option<MediaEvent> {
        let (now, popped) = self.playout?;
        let Some(inb) = self.inbound.as_mut().filter(|i| i.pop_due(popped)) else {
            self.playout = None;
            return None;
        };
        let media = inb.poll_media(now, &mut self.pcm);
        self.playout = Some((now, popped + 1));
        let n = match media {
            Playout::Audio(n) | Playout::Concealed(n) => n,
            Playout::Empty => 0,
        };
        self.frame_len = n;
        if self.mode == CallMode::Voice {
            let pcm = &self.pcm[..n];
            // The DTMF detector is tuned for 8 kHz audio (G.711 calls); gateways that send
            // RFC 4733 remove the tones from the audio.
            let narrowband = self.media.codec != Codec::Opus;
            if n > 0
                && narrowband
                && !self.saw_rfc4733
                && let Some(d) = self.inband.process(pcm)
                && self.digits.len() < DIGITS_PER_INPUT
            {
                // `put_digit`, inline: `pcm` borrows the frame buffer.
                self.digits.push_back(d);
            }
            if let Some(a) = self.asr.as_mut() {
                a.handle_frame(now, if n > 0 { pcm } else { &self.silence });
            }
            // The TTY detectors are tuned for 8 kHz audio (G.711 calls). Concealment is not
            // what the caller sent: it would look like Baudot tones in the wrong place.
            if n > 0 && narrowband {
                let typing = match media {
                    Playout::Audio(_) => self.watch.handle_pcm(now, pcm),
                    _ => self.watch.handle_gap(now, pcm.len()),
                };
                if typing {
                    tracing::debug!("Baudot tones on a voice call");
                    // The next frames are the TTY modem's: they wait in the jitter buffer for
                    // the call task's ticks.
                    self.mode = CallMode::Tty;
                    self.playout = None;
                    return Some(MediaEvent::Baudot(self.watch.take_chars()));
                }
            }
        }
        Some(MediaEvent::Frame { at: now, media })
    }

    /// The PCM of the last `MediaEvent::Frame`.
    pub fn frame(&self) -> &[i16] {
        &self.pcm[..self.frame_len]
    }

    /// The caller's RTCP (from the RTCP port): its sender reports feed our reports' round trip.
    pub fn handle_rtcp(&mut self, now: Instant, buf: &mut [u8]) {
        let n = match self.srtp_in.as_mut() {
            Some(u) => match u.unprotect_rtcp(buf) {
                Ok(n) => n,
                Err(_) => return,
            },
            None => buf.len(),
        };
        if let Some(inb) = self.inbound.as_mut() {
            for p in rtcp::parse_compound(&buf[..n]).flatten() {
                if let rtcp::RtcpPacket::SenderReport { info, .. } = p {
                    inb.handle_sender_report(now, info.ntp);
                }
            }
        }
    }

    /// The report block of the RTCP report being sent (once per report).
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        self.inbound.as_mut().and_then(|i| i.report_block(now))
    }

    /// Something else showed the caller is there (RFC 4103 text).
    pub fn handle_activity(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// A re-INVITE changed the media (hold, resume, codec, address).
    pub fn set_media(&mut self, now: Instant, media: RxMedia) {
        if media.codec != self.media.codec || media.payload_type != self.media.payload_type {
            self.inbound = inbound_for(&media);
            if let Some(a) = self.asr.as_mut() {
                a.set_input_rate(media.codec.pcm_rate());
            }
        }
        if media.remote_rtp != self.media.remote_rtp {
            // The caller's media moved: its next good datagram sets the strict source again.
            self.rtp_source = None;
        }
        self.media = media;
        // A caller resuming from hold may have been silent a long time.
        self.last_rx = now;
    }

    /// SRTP re-keyed (or started, or stopped) by a re-INVITE.
    pub fn set_srtp_in(&mut self, srtp_in: Option<Unprotector>) {
        self.srtp_in = srtp_in;
    }

    /// The call's mode (the core's), when it changes: in-band DTMF, speech and Baudot are
    /// listened for in voice only.
    pub fn set_mode(&mut self, mode: CallMode) {
        self.mode = mode;
    }

    /// TTY mode: every frame is the TTY modem's (Baudot is decoded on the sender's timeline),
    /// so the call task ticks the playout and takes the frames (`MediaEvent::Frame`); in voice
    /// and RTT the media thread does and keeps them.
    pub fn ticks_on_task(&self) -> bool {
        self.mode == CallMode::Tty
    }

    /// A tick's frames are still to be polled (by whoever ticked).
    pub fn tick_in_progress(&self) -> bool {
        self.playout.is_some()
    }

    /// Addresses the next packet's handling touches first (see `Inbound::prefetch_hint`), as
    /// numbers: a media thread keeps them between ticks and prefetches them a few calls ahead
    /// (a prefetch never faults, so a stale one costs nothing but the wasted fetch).
    ///
    /// Only the jitter buffer's: its slot is read at every packet, a miss that showed in
    /// `perf annotate`. The frame's other first touches are writes (the decoded frame, the
    /// pre-roll rings), and hints for them measured no gain (BENCHMARKING.md).
    pub fn prefetch_hint(&self) -> PrefetchHint {
        match &self.inbound {
            Some(i) => i.prefetch_hint().map(|p| p as usize),
            None => [0; 3],
        }
    }

    pub fn is_bridged(&self) -> bool {
        self.bridged
    }

    /// Bridged to an agent: the caller's media is relayed from now on (`Rx::Relay`).
    pub fn set_bridged(&mut self) {
        self.bridged = true;
    }

    /// Our side hangs up: the RTP timeout no longer matters.
    pub fn disarm_rtp_timeout(&mut self) {
        self.rtp_watch = false;
    }

    pub fn jitter_stats(&self) -> Option<JitterStats> {
        self.inbound.as_ref().map(Inbound::jitter_stats)
    }

    pub fn asr(&self) -> Option<&CallAsr> {
        self.asr.as_ref()
    }

    /// For the shell's wait on the pool's results.
    pub fn asr_mut(&mut self) -> Option<&mut CallAsr> {
        self.asr.as_mut()
    }

    /// The call left voice for text: no more speech recognition.
    pub fn drop_asr(&mut self) {
        self.asr = None;
    }

    /// The flow's `Listen`.
    pub fn listen(&mut self, now: Instant, lang: Lang, listen: Listen, trailing_silence_ms: u32) {
        if let Some(a) = self.asr.as_mut() {
            a.listen(now, lang, listen, trailing_silence_ms);
        }
    }

    /// The flow's `StopListening`.
    pub fn stop_listening(&mut self) {
        if let Some(a) = self.asr.as_mut() {
            a.stop();
        }
    }

    /// A result from the recognizer pool (its events come out of `poll_event`).
    pub fn handle_asr_result(&mut self, r: AsrResult) {
        if let Some(a) = self.asr.as_mut() {
            a.handle_result(r);
        }
    }

    /// A key the call took: the tone is not speech.
    pub fn handle_dtmf(&mut self, now: Instant) {
        if let Some(a) = self.asr.as_mut() {
            a.handle_dtmf(now);
        }
    }

    /// Time since the end of the utterance just answered (taken once).
    pub fn take_reply_latency(&mut self, now: Instant) -> Option<Duration> {
        self.asr.as_mut().and_then(|a| a.take_reply_latency(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::codec::Encoder;
    use crate::rtp::packet::write_rtp;
    use crate::rtp::session::RtpSender;
    use crate::rtp::srtp::{KeySalt, Protector, Suite};
    use std::sync::atomic::Ordering::Relaxed;

    const CALLER: &str = "192.0.2.10:4000";
    const STRANGER: &str = "198.51.100.7:4000";

    fn pcmu() -> RxMedia {
        RxMedia {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            remote_rtp: Some(CALLER.parse().unwrap()),
            receives: true,
        }
    }

    fn leg(t0: Instant, srtp_in: Option<Unprotector>) -> (MediaLeg, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let setup = LegSetup {
            media: pcmu(),
            ptime_ms: 20,
            rtp_timeout: Duration::from_secs(5),
            srtp_in,
            asr: None,
        };
        (MediaLeg::new(t0, setup, metrics.clone()), metrics)
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// A 20 ms PCMU packet of a 400 Hz tone.
    fn audio_packet(seq: u16) -> Vec<u8> {
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i as f32 * 0.314).sin() * 8000.0) as i16)
            .collect();
        pcmu_packet(&mut Encoder::new(Codec::Pcmu).unwrap(), seq, &pcm)
    }

    /// One 20 ms frame (160 samples) as PCMU packet number `seq`.
    fn pcmu_packet(enc: &mut Encoder, seq: u16, frame: &[i16]) -> Vec<u8> {
        let mut payload = [0u8; 160];
        enc.encode(frame, &mut payload).unwrap();
        let mut buf = vec![0u8; 12 + 160];
        let n = write_rtp(
            &mut buf,
            0,
            seq,
            160 * u32::from(seq),
            0x1234,
            false,
            &payload,
        )
        .unwrap();
        buf.truncate(n);
        buf
    }

    fn events(leg: &mut MediaLeg) -> Vec<MediaEvent> {
        std::iter::from_fn(|| leg.poll_event()).collect()
    }

    fn digits(evs: &[MediaEvent]) -> String {
        evs.iter()
            .filter_map(|e| match e {
                MediaEvent::Digit(d) => Some(*d),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn strict_source_drops_a_stray() {
        let t0 = Instant::now();
        let (mut leg, metrics) = leg(t0, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let stranger: SocketAddr = STRANGER.parse().unwrap();
        assert_eq!(
            leg.handle_datagram(t0, &mut audio_packet(1), caller),
            Rx::Taken
        );
        // Someone else sends to the call's port, even a well-formed RFC 4733 key.
        let mut tx = RtpSender::new(7);
        let mut buf = [0u8; 64];
        tx.start_event(9, 10, 800, 160);
        let mut strays = 0;
        while let Some(n) = tx.next_event_packet(101, &mut buf).unwrap() {
            assert_eq!(
                leg.handle_datagram(at(t0, 5), &mut buf[..n], stranger),
                Rx::Stray
            );
            strays += 1;
        }
        assert_eq!(
            metrics.rtp_stray_packets_total.load(Relaxed),
            strays,
            "every stray counted"
        );
        assert_eq!(metrics.rtp_packets_in_total.load(Relaxed), 1);
        assert_eq!(digits(&events(&mut leg)), "", "the stray key was not taken");
        // The caller's media goes on.
        assert_eq!(
            leg.handle_datagram(at(t0, 20), &mut audio_packet(2), caller),
            Rx::Taken
        );
        // A re-INVITE moving the caller's media lets the next good datagram set the source.
        let mut moved = pcmu();
        moved.remote_rtp = Some(stranger);
        leg.set_media(at(t0, 30), moved);
        assert_eq!(
            leg.handle_datagram(at(t0, 40), &mut audio_packet(3), stranger),
            Rx::Taken
        );
        assert_eq!(
            leg.handle_datagram(at(t0, 60), &mut audio_packet(4), caller),
            Rx::Stray
        );
    }

    #[test]
    fn an_rfc4733_key_yields_one_digit() {
        let t0 = Instant::now();
        let (mut leg, _) = leg(t0, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut tx = RtpSender::new(11);
        let mut buf = [0u8; 64];
        // An 100 ms key 5, with its three end packets.
        tx.start_event(5, 10, 800, 160);
        let mut got = String::new();
        let mut ms = 0;
        while let Some(n) = tx.next_event_packet(101, &mut buf).unwrap() {
            assert_eq!(
                leg.handle_datagram(at(t0, ms), &mut buf[..n], caller),
                Rx::Taken
            );
            leg.handle_tick(at(t0, ms));
            got.push_str(&digits(&events(&mut leg)));
            ms += 20;
        }
        // Nothing more later (the end packets' repeats are not new keys).
        leg.handle_timeout(at(t0, ms + 1000));
        got.push_str(&digits(&events(&mut leg)));
        assert_eq!(got, "5");
    }

    #[test]
    fn a_key_whose_end_was_lost_comes_at_its_timeout() {
        let t0 = Instant::now();
        let (mut leg, _) = leg(t0, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut tx = RtpSender::new(12);
        let mut buf = [0u8; 64];
        tx.start_event(7, 10, 800, 160);
        // The first packet only: no end.
        let n = tx.next_event_packet(101, &mut buf).unwrap().unwrap();
        leg.handle_datagram(t0, &mut buf[..n], caller);
        assert_eq!(digits(&events(&mut leg)), "");
        let due = leg.poll_timeout().unwrap();
        assert!(due < at(t0, 5000), "the key's timer, not the RTP timeout");
        // Early: nothing.
        leg.handle_timeout(t0);
        assert_eq!(digits(&events(&mut leg)), "");
        leg.handle_timeout(due);
        assert_eq!(digits(&events(&mut leg)), "7");
    }

    #[test]
    fn the_jitter_buffer_plays_a_packet_at_its_tick() {
        let t0 = Instant::now();
        let (mut leg, _) = leg(t0, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut frames = Vec::new();
        // Ten packets, one per 20 ms, and a tick after each; then two ticks with nothing new.
        for tick in 0..12u16 {
            let now = at(t0, 20 * u64::from(tick));
            if tick < 10 {
                leg.handle_datagram(now, &mut audio_packet(tick), caller);
            }
            leg.handle_tick(now);
            while let Some(ev) = leg.poll_event() {
                if let MediaEvent::Frame { at, media } = ev {
                    assert_eq!(at, now, "a frame is played at its tick");
                    let loud = leg.frame().iter().any(|&s| s.abs() > 1000);
                    frames.push((media, loud));
                }
            }
        }
        // One frame per tick. The first tick fills the buffer to its target (one frame); then
        // each packet plays at the tick after it arrived, as audio, all ten of them.
        assert_eq!(frames.len(), 12);
        assert_eq!(frames[0], (Playout::Empty, false));
        assert!(
            frames[1..11]
                .iter()
                .all(|&(m, loud)| m == Playout::Audio(160) && loud),
            "{frames:?}"
        );
        assert!(!matches!(frames[11].0, Playout::Audio(_)), "{frames:?}");
        // No tick, no frame: the shell's clock drives playout.
        assert!(leg.poll_event().is_none());
    }

    /// PCMU packets of 80 ms of key 2 (697 + 1336 Hz) after 40 ms of silence, then 100 ms of
    /// silence, from `seq` on.
    fn key_two_packets(seq: u16) -> Vec<Vec<u8>> {
        let pcm: Vec<i16> = (0..8 * 220)
            .map(|i| {
                if !(320..960).contains(&i) {
                    return 0;
                }
                let t = i as f32 / 8000.0;
                let w = std::f32::consts::TAU;
                ((w * 697.0 * t).sin() * 6000.0 + (w * 1336.0 * t).sin() * 6000.0) as i16
            })
            .collect();
        let mut enc = Encoder::new(Codec::Pcmu).unwrap();
        pcm.chunks(160)
            .zip(seq..)
            .map(|(frame, seq)| pcmu_packet(&mut enc, seq, frame))
            .collect()
    }

    /// Plays `packets` one per tick in `mode`; the keys heard.
    fn play(leg: &mut MediaLeg, t0: Instant, packets: Vec<Vec<u8>>, mode: CallMode) -> String {
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut got = String::new();
        for (i, mut p) in packets.into_iter().enumerate() {
            let now = at(t0, 20 * i as u64);
            leg.handle_datagram(now, &mut p, caller);
            leg.handle_tick(now);
            leg.set_mode(mode);
            got.push_str(&digits(&events(leg)));
        }
        got
    }

    #[test]
    fn an_in_band_key_is_heard_on_a_voice_call_only() {
        let t0 = Instant::now();
        let (mut voice, _) = leg(t0, None);
        assert_eq!(
            play(&mut voice, t0, key_two_packets(0), CallMode::Voice),
            "2"
        );
        // In text mode the audio is the modem's (or nobody's): no keys from it.
        let (mut tty, _) = leg(t0, None);
        assert_eq!(play(&mut tty, t0, key_two_packets(0), CallMode::Tty), "");
        // A caller whose gateway sends RFC 4733 has the tones removed from the audio: what
        // looks like one in the audio is not taken.
        let (mut rfc, _) = leg(t0, None);
        let mut tx = RtpSender::new(11);
        let mut buf = [0u8; 64];
        tx.start_event(5, 10, 160, 160);
        let mut first = Vec::new();
        while let Some(n) = tx.next_event_packet(101, &mut buf).unwrap() {
            first.push(buf[..n].to_vec());
        }
        let keys = play(&mut rfc, t0, first, CallMode::Voice);
        assert_eq!(keys, "5");
        assert_eq!(
            play(
                &mut rfc,
                at(t0, 1000),
                key_two_packets(100),
                CallMode::Voice
            ),
            ""
        );
    }

    #[test]
    fn baudot_on_a_voice_call_is_heard_and_its_frames_wait_for_the_task() {
        use crate::audio::tty::{TtyModulator, TtyTxConfig};
        let t0 = Instant::now();
        let (mut leg, _) = leg(t0, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut modem = TtyModulator::new(TtyTxConfig::default());
        modem.push_text("HELLO HELLO GA").unwrap();
        let mut enc = Encoder::new(Codec::Pcmu).unwrap();
        let mut packet = |seq: u16| {
            let mut pcm = [0i16; 160];
            modem.fill(&mut pcm);
            let mut payload = [0u8; 160];
            enc.encode(&pcm, &mut payload).unwrap();
            let mut buf = vec![0u8; 12 + 160];
            let n = write_rtp(
                &mut buf,
                0,
                seq,
                160 * u32::from(seq),
                0x1234,
                false,
                &payload,
            )
            .unwrap();
            buf.truncate(n);
            buf
        };
        // As the media thread drives a voice call: a packet, a tick, the events.
        let mut heard = None;
        let mut seq = 0u16;
        while heard.is_none() && seq < 200 {
            let now = at(t0, 20 * u64::from(seq));
            leg.handle_datagram(now, &mut packet(seq), caller);
            leg.handle_tick(now);
            while let Some(ev) = leg.poll_event() {
                if let MediaEvent::Baudot(chars) = ev {
                    heard = Some(chars);
                }
            }
            seq += 1;
        }
        let chars = heard.expect("Baudot heard on the voice call");
        let text: String = chars.iter().map(|&(_, c)| c).collect();
        assert!(!text.trim().is_empty(), "what the watch decoded: {text:?}");
        assert!(text.chars().all(|c| "HELO GA".contains(c)), "{text:?}");
        // From here the frames are the TTY modem's: the task ticks and takes every one.
        assert!(leg.ticks_on_task());
        assert!(!leg.tick_in_progress());
        let now = at(t0, 20 * u64::from(seq));
        leg.handle_datagram(now, &mut packet(seq), caller);
        leg.handle_tick(now);
        let frames = events(&mut leg)
            .iter()
            .filter(|e| matches!(e, MediaEvent::Frame { .. }))
            .count();
        assert!(frames >= 1, "the task's tick pops the frames");
    }

    #[test]
    fn the_rtp_timeout_fires_after_the_configured_silence() {
        let t0 = Instant::now();
        let (mut leg, _) = leg(t0, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        assert_eq!(leg.poll_timeout(), Some(at(t0, 5000)));
        leg.handle_datagram(at(t0, 1000), &mut audio_packet(1), caller);
        assert_eq!(leg.poll_timeout(), Some(at(t0, 6000)));
        // A stray is not the caller: it keeps nothing alive.
        leg.handle_datagram(
            at(t0, 2000),
            &mut audio_packet(2),
            STRANGER.parse().unwrap(),
        );
        assert_eq!(leg.poll_timeout(), Some(at(t0, 6000)));
        leg.handle_timeout(at(t0, 5999));
        assert!(leg.poll_event().is_none());
        leg.handle_timeout(at(t0, 6000));
        assert!(matches!(leg.poll_event(), Some(MediaEvent::RtpTimeout)));
        // Once.
        leg.handle_timeout(at(t0, 7000));
        assert!(leg.poll_event().is_none());
        assert_eq!(leg.poll_timeout(), None);

        // On hold (no remote address) the caller may be silent as long as they like.
        let (mut held, _) = self::leg(t0, None);
        let mut hold = pcmu();
        hold.remote_rtp = None;
        held.set_media(t0, hold);
        assert_eq!(held.poll_timeout(), None);
        held.handle_timeout(at(t0, 60_000));
        assert!(held.poll_event().is_none());
        // Nor once our side hangs up.
        let (mut ending, _) = self::leg(t0, None);
        ending.disarm_rtp_timeout();
        ending.handle_timeout(at(t0, 60_000));
        assert!(ending.poll_event().is_none());
    }

    #[test]
    fn srtp_garbage_is_dropped() {
        let t0 = Instant::now();
        let key = KeySalt([7; 30]);
        let suite = Suite::AesCm128HmacSha1_80;
        let (mut leg, metrics) = leg(t0, Some(Unprotector::new(suite, &key).unwrap()));
        let mut protector = Protector::new(suite, &key).unwrap();
        let caller: SocketAddr = CALLER.parse().unwrap();
        let stranger: SocketAddr = STRANGER.parse().unwrap();
        // Plain RTP and noise from someone else on an SRTP leg: refused, and they do not take
        // the strict source.
        assert_eq!(
            leg.handle_datagram(t0, &mut audio_packet(1), stranger),
            Rx::Refused
        );
        assert_eq!(
            leg.handle_datagram(t0, &mut [0x80, 0, 1, 2, 3, 4, 5], stranger),
            Rx::Refused
        );
        assert_eq!(metrics.srtp_refused_total.load(Relaxed), 2);
        assert_eq!(metrics.rtp_packets_in_total.load(Relaxed), 0);
        // The caller's authenticated packet is taken (and sets the source).
        let mut buf = audio_packet(2);
        let n = buf.len();
        buf.resize(n + crate::rtp::srtp::MAX_TRAILER, 0);
        let n = protector.protect(&mut buf, n).unwrap();
        assert_eq!(leg.handle_datagram(t0, &mut buf[..n], caller), Rx::Taken);
        // Replayed: refused.
        let mut replay = audio_packet(2);
        let m = replay.len();
        replay.resize(m + crate::rtp::srtp::MAX_TRAILER, 0);
        let mut p2 = Protector::new(suite, &key).unwrap();
        let m = p2.protect(&mut replay, m).unwrap();
        assert_eq!(
            leg.handle_datagram(t0, &mut replay[..m], caller),
            Rx::Refused
        );
        assert_eq!(metrics.srtp_refused_total.load(Relaxed), 3);
        assert_eq!(metrics.rtp_packets_in_total.load(Relaxed), 1);
    }

    #[test]
    fn a_bridged_call_relays_what_the_caller_sends() {
        let t0 = Instant::now();
        let (mut leg, metrics) = leg(t0, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        leg.handle_datagram(t0, &mut audio_packet(1), caller);
        leg.set_bridged();
        let mut p = audio_packet(2);
        let n = p.len();
        assert_eq!(
            leg.handle_datagram(at(t0, 20), &mut p, caller),
            Rx::Relay(n)
        );
        // Not into the IVR's receive path, but the caller is alive.
        assert_eq!(metrics.rtp_packets_in_total.load(Relaxed), 1);
        assert_eq!(leg.poll_timeout(), Some(at(t0, 5020)));
        assert_eq!(
            leg.handle_datagram(at(t0, 40), &mut audio_packet(3), STRANGER.parse().unwrap()),
            Rx::Stray
        );
    }
}
