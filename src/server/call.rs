//! One task per call: the media loop. It owns the call's RTP/RTCP sockets, the outgoing packet
//! clock, the jitter buffer and decoder, DTMF detection, and the call's `flow::Call`; it turns
//! flow actions into playback and asks the SIP task to hang up.
//!
//! The hot path (one outgoing packet per 20 ms tick, one incoming packet per 20 ms) does not
//! allocate: buffers are owned by the task and reused; prompt frames are already encoded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use super::Shared;
use super::metrics::Metrics;
use super::store::{CallRecord, now_rfc3339};
use crate::audio::dtmf::{DtmfConfig, DtmfDetector};
use crate::flow::{self, Action, FlowConfig};
use crate::rtp::codec::{Decoder, FRAME_SAMPLES_16K, g711_silence};
use crate::rtp::dtmf::TelephoneEventReceiver;
use crate::rtp::jitter::{JitterBuffer, JitterConfig, Pop};
use crate::rtp::packet::{is_rtcp, parse_rtp};
use crate::rtp::rtcp;
use crate::rtp::session::{Pacer, RtpReceiver, RtpSender};
use crate::sip::CallKey;
use crate::sip::sdp::Negotiated;
use crate::speech::cache::{EncodedPrompt, PromptSet};
use crate::types::Codec;

/// What the SIP task tells a call.
#[derive(Debug)]
pub enum CallCommand {
    /// The caller's ACK arrived: start the conversation.
    Confirmed,
    /// A re-INVITE changed the media (hold, resume, codec, address).
    Media(Box<Negotiated>),
    /// The caller hung up (BYE) or cancelled.
    RemoteHangup(&'static str),
    /// Our side ended the dialog (our BYE done, ACK never came, drain).
    Ended(&'static str),
    /// Shutdown drain deadline passed: say nothing more, hang up.
    Drain,
}

/// What a call asks of the SIP task.
#[derive(Debug)]
pub enum SipCommand {
    Hangup(CallKey),
    /// The call task is gone; forget its handle.
    Finished(CallKey),
}

pub struct CallSetup {
    pub key: CallKey,
    pub record: CallRecord,
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
    pub media: Negotiated,
    pub prompts: Arc<PromptSet>,
    pub flow: FlowConfig,
    pub rtp_timeout: Duration,
    pub ptime_ms: u32,
    pub seed: u64,
}

/// Frames of a playback in progress: the prompts of one `Play` action, back to back.
struct Playback {
    items: Vec<Arc<EncodedPrompt>>,
    item: usize,
    frame: usize,
    /// The next packet starts a talkspurt (marker bit).
    first: bool,
}

impl Playback {
    /// The next frame's payload, or None when the playback is over.
    fn next_frame(&mut self, codec: Codec) -> Option<&[u8]> {
        while let Some(p) = self.items.get(self.item) {
            if self.frame < p.frames() {
                self.frame += 1;
                return p.frame(codec, self.frame - 1);
            }
            self.item += 1;
            self.frame = 0;
        }
        None
    }
}

const RTCP_INTERVAL: Duration = Duration::from_secs(5);

pub async fn run(
    mut setup: CallSetup,
    mut rx: mpsc::Receiver<CallCommand>,
    sip: mpsc::Sender<SipCommand>,
    shared: Arc<Shared>,
) {
    let metrics: &Metrics = &shared.metrics;
    let codec = setup.media.codec;
    let pt = setup.media.payload_type;
    let samples_per_frame = codec.rtp_clock() * setup.ptime_ms / 1000;
    let frame_len = Duration::from_millis(u64::from(setup.ptime_ms));
    let start = Instant::now();
    let mut pacer = Pacer::new(start, frame_len, 3);
    let mut sender = RtpSender::new(setup.seed);
    let mut receiver = RtpReceiver::new(codec.rtp_clock());
    let mut jitter = JitterBuffer::new(JitterConfig {
        clock_rate: codec.rtp_clock(),
        max_payload: 1500,
        ..JitterConfig::default()
    });
    let mut decoder = Decoder::new(codec).ok();
    let mut events = TelephoneEventReceiver::new(8000);
    let mut inband = DtmfDetector::new(DtmfConfig::default());
    let mut flow = flow::Call::new(setup.flow.clone());
    let mut playback: Option<Playback> = None;
    let mut silence = [0u8; 160];
    let silence_len = g711_silence(codec, &mut silence);
    let mut out = [0u8; 1500];
    let mut inbuf = [0u8; 2048];
    let mut pcm = [0i16; FRAME_SAMPLES_16K * 3];
    let mut rtcp_buf = [0u8; 512];
    let mut last_rx = Instant::now();
    let mut next_rtcp = start + RTCP_INTERVAL;
    let mut saw_rfc4733 = false;
    let mut end_reason: Option<&'static str> = None;
    let mut hangup_sent = false;
    let rtcp_remote = setup
        .media
        .remote_rtp
        .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)));

    loop {
        let tick = pacer.next_deadline();
        let flow_at = flow.poll_timeout();
        let rtp_deadline = last_rx + setup.rtp_timeout;
        let receiving = setup.media.direction.receives() && setup.media.remote_rtp.is_some();
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let now = Instant::now();
                match cmd {
                    Some(CallCommand::Confirmed) => flow.handle_event(now, flow::Event::Start),
                    Some(CallCommand::Media(m)) => {
                        setup.media = *m;
                        // The peer may resume from hold after a long silence: restart the clock.
                        last_rx = now;
                    }
                    Some(CallCommand::RemoteHangup(reason)) | Some(CallCommand::Ended(reason)) => {
                        flow.handle_event(now, flow::Event::RemoteHangup);
                        end_reason.get_or_insert(reason);
                        break;
                    }
                    Some(CallCommand::Drain) => {
                        end_reason.get_or_insert("drain");
                        if !hangup_sent {
                            let _ = sip.send(SipCommand::Hangup(setup.key)).await;
                        }
                        break;
                    }
                    None => break,
                }
            }
            _ = sleep_until(tick.into()) => {
                let now = Instant::now();
                if now.saturating_duration_since(tick) > Duration::from_millis(2) {
                    Metrics::inc(&metrics.rtp_late_ticks_total);
                }
                let due = pacer.poll_due(now);
                if due.skipped > 0 {
                    metrics.rtp_skipped_frames_total.fetch_add(u64::from(due.skipped), Relaxed);
                    sender.skip(samples_per_frame * due.skipped);
                }
                for _ in 0..due.send {
                    // Receive side: one playout tick per frame period.
                    if let Some(digit) = playout(&mut jitter, now, &mut decoder, &mut pcm, &mut inband, codec, saw_rfc4733) {
                        Metrics::inc(&metrics.dtmf_digits_total);
                        flow.handle_event(now, flow::Event::Digit(digit));
                    }
                    let sends = setup.media.direction.sends() && !hangup_sent;
                    let (payload, marker): (&[u8], bool) = match playback.as_mut() {
                        Some(pb) => {
                            let marker = std::mem::take(&mut pb.first);
                            match pb.next_frame(codec) {
                                Some(f) => (f, marker),
                                None => {
                                    playback = None;
                                    flow.handle_event(now, flow::Event::PlaybackDone);
                                    (&silence[..silence_len], false)
                                }
                            }
                        }
                        None => (&silence[..silence_len], false),
                    };
                    match (sends, setup.media.remote_rtp) {
                        (true, Some(dest)) if !payload.is_empty() => {
                            if let Ok(n) = sender.next(pt, payload, samples_per_frame, marker, &mut out) {
                                if setup.rtp.try_send_to(&out[..n], dest).is_ok() {
                                    Metrics::inc(&metrics.rtp_packets_out_total);
                                }
                            }
                        }
                        _ => sender.skip(samples_per_frame),
                    }
                }
                if now >= next_rtcp {
                    next_rtcp = now + RTCP_INTERVAL;
                    if let (Some(sock), Some(dest)) = (setup.rtcp.as_ref(), rtcp_remote) {
                        send_report(sock, dest, &mut sender, &mut receiver, now, &mut rtcp_buf);
                    }
                }
            }
            r = setup.rtp.recv_from(&mut inbuf) => {
                let now = Instant::now();
                let Ok((n, _from)) = r else { continue };
                let data = &inbuf[..n];
                if is_rtcp(data) {
                    continue;
                }
                let Ok(pkt) = parse_rtp(data) else { continue };
                Metrics::inc(&metrics.rtp_packets_in_total);
                last_rx = now;
                receiver.handle_packet(now, pkt.ssrc, pkt.seq, pkt.timestamp);
                if Some(pkt.payload_type) == setup.media.telephone_event {
                    saw_rfc4733 = true;
                    if let Some(ev) = events.handle(now, pkt.seq, pkt.timestamp, pkt.marker, pkt.payload) {
                        Metrics::inc(&metrics.dtmf_digits_total);
                        flow.handle_event(now, flow::Event::Digit(ev.digit));
                    }
                } else if pkt.payload_type == pt {
                    jitter.push(now, pkt.seq, pkt.timestamp, pkt.payload);
                }
            }
            r = recv_rtcp(setup.rtcp.as_ref(), &mut rtcp_buf) => {
                // Reports from the caller are parsed for their sender info; nothing else acts on them.
                if let Some(n) = r {
                    for p in rtcp::parse_compound(&rtcp_buf[..n]).flatten() {
                        if let rtcp::RtcpPacket::SenderReport { info, .. } = p {
                            receiver.handle_sender_report(Instant::now(), info.ntp);
                        }
                    }
                }
            }
            _ = sleep_until(flow_at.unwrap_or(tick).into()), if flow_at.is_some() => {
                flow.handle_timeout(Instant::now());
            }
            _ = sleep_until(rtp_deadline.into()), if receiving && !hangup_sent => {
                // The caller vanished without BYE: end the call and free everything.
                Metrics::inc(&metrics.calls_rtp_timeout_total);
                end_reason.get_or_insert("rtp_timeout");
                flow.handle_event(Instant::now(), flow::Event::RemoteHangup);
                let _ = sip.send(SipCommand::Hangup(setup.key)).await;
                break;
            }
            _ = sleep_until(events.poll_timeout().unwrap_or(tick).into()), if events.poll_timeout().is_some() => {
                let now = Instant::now();
                if let Some(ev) = events.handle_timeout(now) {
                    Metrics::inc(&metrics.dtmf_digits_total);
                    flow.handle_event(now, flow::Event::Digit(ev.digit));
                }
            }
        }

        // Drain the flow's actions (STYLE.md: every input is followed by draining poll_*).
        while let Some(action) = flow.poll_action() {
            match action {
                Action::Play {
                    prompts,
                    barge_in: _,
                } => {
                    let items: Vec<Arc<EncodedPrompt>> = prompts
                        .iter()
                        .filter_map(|p| {
                            let found = setup.prompts.get(p.lang, &p.id).cloned();
                            if found.is_none() {
                                tracing::error!(prompt = %p.id, lang = %p.lang, "prompt missing from the catalog");
                            }
                            found
                        })
                        .collect();
                    Metrics::inc(&metrics.prompts_played_total);
                    playback = Some(Playback {
                        items,
                        item: 0,
                        frame: 0,
                        first: true,
                    });
                }
                Action::StopPlayback => playback = None,
                Action::Hangup => {
                    end_reason.get_or_insert("ivr_hangup");
                    hangup_sent = true;
                    let _ = sip.send(SipCommand::Hangup(setup.key)).await;
                }
            }
        }
        if hangup_sent && playback.is_none() {
            break;
        }
    }

    // Final record: what the flow did and why the call ended.
    let rec = flow.record();
    let mut record = setup.record;
    record.ended_at = Some(now_rfc3339());
    record.codec = Some(codec.name().to_string());
    record.lang = rec.lang.map(|l| l.code().to_string());
    record.digits = rec.digits.clone();
    record.intents = rec.intents.clone();
    record.intent = rec.intents.last().cloned();
    record.prompts = rec
        .prompts
        .iter()
        .map(|p| format!("{}:{}", p.lang, p.id))
        .collect();
    record.outcome = rec
        .outcome
        .and_then(|o| serde_json::to_value(o).ok())
        .and_then(|v| v.as_str().map(String::from));
    record.end_reason = end_reason.map(String::from);
    shared.store.save(record);
    let _ = sip.send(SipCommand::Finished(setup.key)).await;
}

/// One playout tick of the receive side: decode the frame due (or conceal a lost one) and run
/// in-band DTMF detection on it — unless the caller sends RFC 4733 events, which gateways send
/// instead of tones.
fn playout(
    jitter: &mut JitterBuffer,
    now: Instant,
    decoder: &mut Option<Decoder>,
    pcm: &mut [i16],
    inband: &mut DtmfDetector,
    codec: Codec,
    saw_rfc4733: bool,
) -> Option<char> {
    let dec = decoder.as_mut()?;
    let n = match jitter.pop(now) {
        Pop::Frame { payload, .. } => dec.decode(payload, pcm).unwrap_or(0),
        Pop::Missing { .. } => dec.decode_missing(pcm),
        Pop::Empty => 0,
    };
    if n == 0 || saw_rfc4733 || codec == Codec::Opus {
        return None;
    }
    inband.process(&pcm[..n])
}

async fn recv_rtcp(sock: Option<&UdpSocket>, buf: &mut [u8]) -> Option<usize> {
    match sock {
        Some(s) => s.recv_from(buf).await.ok().map(|(n, _)| n),
        None => std::future::pending().await,
    }
}

fn send_report(
    sock: &UdpSocket,
    dest: SocketAddr,
    sender: &mut RtpSender,
    receiver: &mut RtpReceiver,
    now: Instant,
    buf: &mut [u8],
) {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let info = rtcp::SenderInfo {
        ntp: rtcp::ntp_from_unix(wall.as_secs(), wall.subsec_nanos()),
        rtp_timestamp: sender.timestamp(),
        packet_count: sender.packets_sent(),
        octet_count: sender.octets_sent(),
    };
    let blocks: Vec<rtcp::ReportBlock> = receiver.report_block(now).into_iter().collect();
    if let Ok(n) = rtcp::write_report(buf, sender.ssrc(), Some(&info), &blocks, "ivr") {
        let _ = sock.try_send_to(&buf[..n], dest);
    }
}
