//! One task per call: the call's logic. It receives the caller's RTP (jitter buffer, decoding,
//! RFC 4733 and in-band DTMF via `rtp::inbound`), drives the call's `flow::Call`, tells the
//! call's outgoing `Stream` what to play (the pacing threads in `outgoing` send it), sends RTCP,
//! and asks the SIP task to hang up. Buffers are owned by the task and reused: no allocation
//! per packet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use super::Shared;
use super::bridge::{self, AgentEvent, Bridge, BridgeConfig, LegMedia, Step};
use super::call_asr::CallAsr;
use super::metrics::Metrics;
use super::outgoing::{Stream, StreamEvent};
use super::store::{CallRecord, now_rfc3339};
use super::tty_session::{TtyAction, TtySession, TtyWatch};
use crate::audio::dtmf::{DtmfConfig, DtmfDetector};
use crate::flow::tty::{TtyOutput, TtyPrompts};
use crate::flow::{self, Action, FlowConfig};
use crate::nlu::Nlu;
use crate::pii::Pii;
use crate::rtp::codec::FRAME_SAMPLES_16K;
use crate::rtp::inbound::{Inbound, InboundConfig, Playout};
use crate::rtp::packet::is_rtcp;
use crate::rtp::rtcp;
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
    /// Our side ended the dialog (our BYE done, ACK never came).
    Ended(&'static str),
    /// Shutdown drain deadline passed: hang up now.
    Drain,
    /// Progress of our REFER (its response, then each NOTIFY's sipfrag status).
    Transfer { status: u16, done: bool },
    /// News of the agent leg placed when the trunk refused the REFER (B2BUA bridge).
    Agent(AgentEvent),
}

/// What a call asks of the SIP task.
#[derive(Debug)]
pub enum SipCommand {
    Hangup(CallKey),
    /// Blind transfer: REFER the caller to `uri`, with the call's context for the agent.
    Refer {
        call: CallKey,
        uri: String,
        context: String,
    },
    /// The call task is gone; forget its handle.
    Finished(CallKey),
    /// The trunk refused REFER: call the queue ourselves (`codec`: the caller's, offered first).
    Bridge {
        call: CallKey,
        uri: String,
        context: String,
        codec: Codec,
    },
    /// End the agent leg of this call (ring timeout, unrelayable media).
    DropAgent(CallKey),
}

pub struct CallSetup {
    pub key: CallKey,
    pub record: CallRecord,
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
    pub stream: Arc<Stream>,
    pub stream_events: mpsc::Receiver<StreamEvent>,
    pub media: Negotiated,
    pub prompts: Arc<PromptSet>,
    pub flow: FlowConfig,
    pub rtp_timeout: Duration,
    pub ptime_ms: u32,
    /// The call came in on the TTY line: a text conversation from the start.
    pub tty: bool,
    pub nlu: Arc<Nlu>,
    /// The caller's number, offered for text messages.
    pub caller_id: Option<Pii<String>>,
    /// TTY callers: the intents the policy transfers right now, and the TTY agent queue.
    pub tty_transfers: Arc<std::collections::HashSet<String>>,
    pub tty_queue_uri: String,
    /// The RFC 4103 text stream, when the caller offered one and its port was bound.
    pub text: Option<super::rtt_session::TextSetup>,
    /// `[transfer]`: bridge when the trunk refuses REFER.
    pub bridge: BridgeConfig,
    /// SRTP: checks and decrypts the caller's packets before anything reads them.
    pub srtp_in: Option<crate::rtp::srtp::Unprotector>,
}

/// Start a TTY conversation in `lang`; None (logged) if the prompts lack the TTY texts.
fn tty_session(setup: &CallSetup, lang: crate::types::Lang) -> Option<TtySession> {
    match TtyPrompts::from_catalog(&setup.prompts.catalog) {
        Ok(prompts) => Some(TtySession::new(
            setup.nlu.clone(),
            Arc::new(prompts),
            lang,
            setup.caller_id.clone(),
            setup.tty_transfers.clone(),
        )),
        Err(missing) => {
            tracing::error!(?missing, "TTY prompts missing: the call stays a voice call");
            None
        }
    }
}

const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// How often at most a call's record is saved while the call goes on.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Datagrams taken from the socket before a playout tick at most (a flood must not starve the
/// task); `Inbound::wants_datagrams` stops it earlier.
const DRAIN_MAX: usize = 48;
/// Digits one wake-up can produce: RFC 4733, in-band over a few catch-up frames, a timeout.
const DIGITS_PER_WAKE: usize = 4;

fn put_digit(digits: &mut [Option<char>], d: char) {
    if let Some(slot) = digits.iter_mut().find(|s| s.is_none()) {
        *slot = Some(d);
    }
}

/// What one datagram from the caller's RTP port meant.
struct Datagram {
    /// Counts as the caller being there (RTP timeout).
    received: bool,
    /// An RFC 4733 key press completed.
    digit: Option<char>,
}

/// One datagram from the caller's RTP socket: relayed to the agent when bridged, else into the
/// receive path. Malformed datagrams and RTCP on the RTP port are ignored.
fn take_datagram(
    data: &[u8],
    now: Instant,
    bridged: Option<&mut Bridge>,
    inbound: Option<&mut Inbound>,
    metrics: &Metrics,
) -> Datagram {
    if let Some(b) = bridged {
        // Bridged: the caller talks to the agent, not to the IVR.
        b.from_caller(data);
        return Datagram {
            received: true,
            digit: None,
        };
    }
    match inbound
        .filter(|_| !is_rtcp(data))
        .map(|inb| inb.handle_datagram(now, data))
    {
        Some(Ok(ev)) => {
            Metrics::inc(&metrics.rtp_packets_in_total);
            Datagram {
                received: true,
                digit: ev.map(|e| e.digit),
            }
        }
        _ => Datagram {
            received: false,
            digit: None,
        },
    }
}

/// Numbers the server's calls for the ASR pool (its utterance keys).
static CALL_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Speech recognition for a voice call whose flow can listen in some language.
fn call_asr(shared: &Shared, setup: &CallSetup) -> Option<CallAsr> {
    let pool = shared.asr.get().cloned()?;
    if setup.tty || setup.flow.speech.is_empty() {
        return None;
    }
    let call = CALL_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(CallAsr::new(
        pool,
        setup.nlu.clone(),
        call,
        setup.media.codec.pcm_rate(),
        shared.config.asr.endpoint(),
    ))
}

async fn recv_asr(asr: Option<&mut CallAsr>) -> Option<super::asr_pool::AsrResult> {
    match asr {
        Some(a) => a.recv().await,
        None => std::future::pending().await,
    }
}

fn inbound_for(media: &Negotiated) -> Option<Inbound> {
    let mut cfg = InboundConfig::for_codec(media.codec);
    cfg.audio_pt = media.payload_type;
    cfg.event_pt = media.telephone_event;
    Inbound::new(cfg).ok()
}

pub async fn run(
    mut setup: CallSetup,
    mut rx: mpsc::Receiver<CallCommand>,
    sip: mpsc::Sender<SipCommand>,
    shared: Arc<Shared>,
) {
    let metrics: &Metrics = &shared.metrics;
    let frame = Duration::from_millis(u64::from(setup.ptime_ms));
    let start = Instant::now();
    let mut inbound = inbound_for(&setup.media);
    let mut inband = DtmfDetector::new(DtmfConfig::default());
    let mut flow = flow::Call::new(setup.flow.clone());
    let mut generation: u64 = 0;
    let mut inbuf = [0u8; 2048];
    // SRTP: every datagram from the caller is checked and decrypted before anything reads it.
    let mut srtp_in = setup.srtp_in.take();
    let mut pcm = [0i16; FRAME_SAMPLES_16K * 3];
    let mut rtcp_buf = [0u8; 512];
    let mut last_rx = start;
    let mut next_tick = start + frame;
    let mut next_rtcp = start + RTCP_INTERVAL;
    let mut saw_rfc4733 = false;
    let mut end_reason: Option<&'static str> = None;
    let mut hanging_up = false;
    let mut started = false;
    let mut tty: Option<TtySession> = if setup.tty {
        tty_session(&setup, crate::types::Lang::En)
    } else {
        None
    };
    let mut watch = TtyWatch::default();
    let mut asr = call_asr(&shared, &setup);
    let mut reply_latency_ms: Vec<u64> = Vec::new();
    // A frame of silence for playout ticks with no audio: the endpointer's clock is the audio,
    // so a caller who stops sending RTP still ends their utterance.
    let silence = vec![0i16; (setup.media.codec.pcm_rate() * setup.ptime_ms / 1000) as usize];
    let mut rtt = super::rtt_session::RttSession::from_setup(&mut setup);
    let mut transfer = bridge::Transfer::new(setup.bridge.clone(), setup.media.codec);
    let mut bridged: Option<Bridge> = None;
    let mut agent_buf = [0u8; 2048];
    // A TTY hang-up waits for the last line (ending "SK") to be sent.
    let mut hangup_after_playback = false;
    let mut next_progress = start + PROGRESS_INTERVAL;
    let mut last_saved: Option<CallRecord> = None;
    setup.stream.set_media(
        setup.media.remote_rtp,
        setup.media.direction.sends(),
        setup.media.codec,
        setup.media.payload_type,
    );

    loop {
        let flow_at = match &tty {
            Some(t) => t.poll_timeout(),
            // A text call's conversation keeps its own timers; the voice flow is frozen.
            None if rtt.as_ref().is_some_and(|r| r.is_text_call()) => None,
            None => flow.poll_timeout(),
        };
        let digit_at = inbound.as_ref().and_then(Inbound::poll_timeout);
        let transfer_at = transfer.poll_timeout();
        let rtp_deadline = last_rx + setup.rtp_timeout;
        let receiving = setup.media.direction.receives() && setup.media.remote_rtp.is_some();
        let reading = bridged.is_some() || inbound.as_ref().is_none_or(Inbound::wants_datagrams);
        let mut digits: [Option<char>; DIGITS_PER_WAKE] = [None; DIGITS_PER_WAKE];
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let now = Instant::now();
                match cmd {
                    Some(CallCommand::Confirmed) => {
                        started = true;
                        if tty.is_none() {
                            flow.handle_event(now, flow::Event::Start);
                        }
                    }
                    Some(CallCommand::Media(m)) => {
                        if m.codec != setup.media.codec || m.payload_type != setup.media.payload_type {
                            inbound = inbound_for(&m);
                            if let Some(a) = asr.as_mut() {
                                a.set_input_rate(m.codec.pcm_rate());
                            }
                        }
                        if let Some(r) = rtt.as_mut() {
                            r.handle_media(m.text.as_ref());
                        }
                        transfer.handle_caller_codec(m.codec);
                        setup.media = *m;
                        let sends = setup.media.direction.sends() && !hanging_up && bridged.is_none();
                        setup.stream.set_media(setup.media.remote_rtp, sends, setup.media.codec, setup.media.payload_type);
                        // A caller resuming from hold may have been silent a long time.
                        last_rx = now;
                    }
                    Some(CallCommand::RemoteHangup(reason) | CallCommand::Ended(reason)) => {
                        flow.handle_event(now, flow::Event::RemoteHangup);
                        end_reason.get_or_insert(reason);
                        break;
                    }
                    Some(CallCommand::Transfer { status, done }) => {
                        if done {
                            tracing::info!(status, "REFER finished");
                        }
                        let step = transfer.handle_refer_progress(now, status, done);
                        if bridge_step(step, &setup, &mut flow, &sip, &mut end_reason).await {
                            break;
                        }
                    }
                    Some(CallCommand::Agent(ev)) => {
                        let mut step = transfer.handle_agent(&ev);
                        if let (Step::Bridged, AgentEvent::Answered(leg)) = (&step, ev) {
                            match Bridge::new(*leg, LegMedia::of(&setup.media), setup.key.0 ^ 0x6272_6964) {
                                Ok(b) => bridged = Some(b),
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot relay: dropping the agent");
                                    step = transfer.handle_relay_failed();
                                }
                            }
                        }
                        if bridge_step(step, &setup, &mut flow, &sip, &mut end_reason).await {
                            break;
                        }
                    }
                    Some(CallCommand::Drain) => {
                        end_reason.get_or_insert("drain");
                        if !hanging_up {
                            let _ = sip.send(SipCommand::Hangup(setup.key)).await;
                        }
                        break;
                    }
                    None => break,
                }
            }
            ev = setup.stream_events.recv() => {
                // Only the end of the playback the flow asked for last counts: one stopped by
                // barge-in may still report its end.
                if let Some(StreamEvent::PlaybackDone { generation: g }) = ev {
                    if g == generation {
                        match tty.as_mut() {
                            Some(t) => t.handle_sent(Instant::now()),
                            None if rtt.as_ref().is_some_and(|r| r.is_text_call()) => {}
                            None => flow.handle_event(Instant::now(), flow::Event::PlaybackDone),
                        }
                        if hangup_after_playback && !hanging_up {
                            hanging_up = true;
                            let _ = sip.send(SipCommand::Hangup(setup.key)).await;
                        }
                    }
                }
            }
            _ = sleep_until(next_tick.into()) => {
                // Receive side: one playout tick per frame period (pacing precision does not
                // matter here; the outgoing clock lives in the pacing threads).
                let now = Instant::now();
                next_tick += frame;
                if now > next_tick + frame * 5 {
                    next_tick = now + frame;
                }
                // Every datagram that has arrived goes into the jitter buffer before the tick
                // pops: under load the task wakes late with the tick and the caller's packets
                // both due, and (the select being biased) the tick would otherwise pop first,
                // calling a packet waiting in the socket lost, then dropping it as late.
                for _ in 0..DRAIN_MAX {
                    // Past a stall longer than the buffer, leave the rest in the socket until
                    // the pops below made room (a full buffer drops its oldest frame).
                    if inbound.as_ref().is_some_and(|i| !i.wants_datagrams()) {
                        break;
                    }
                    let Ok((len, _)) = setup.rtp.try_recv_from(&mut inbuf) else {
                        break;
                    };
                    let len = unprotect(srtp_in.as_mut(), &mut inbuf[..len]);
                    let got = take_datagram(&inbuf[..len], now, bridged.as_mut(), inbound.as_mut(), metrics);
                    if got.received {
                        last_rx = now;
                    }
                    if let Some(d) = got.digit {
                        saw_rfc4733 = true;
                        put_digit(&mut digits, d);
                    }
                }
                // One frame per tick, and more while the buffer holds more than its target:
                // ticks skipped while the task was not scheduled are caught up on instead of
                // overflowing the buffer (which drops audio that did arrive).
                for popped in 0.. {
                    let Some(inb) = inbound.as_mut() else { break };
                    if !inb.pop_due(popped) {
                        break;
                    }
                    let media = inb.poll_media(now, &mut pcm);
                    let n = match media {
                        Playout::Audio(n) | Playout::Concealed(n) => n,
                        Playout::Empty => 0,
                    };
                    // The DTMF and TTY detectors are tuned for 8 kHz audio (G.711 calls).
                    let narrowband = setup.media.codec != Codec::Opus;
                    match tty.as_mut() {
                        // Baudot is decoded on the sender's timeline: no concealment, no
                        // silence for a late packet (see `TtySession::handle_playout`).
                        Some(t) => t.handle_playout(now, media, &pcm[..n]),
                        // A text call (RFC 4103): the audio is no longer listened to.
                        None if rtt.as_ref().is_some_and(|r| r.is_text_call()) => {}
                        None if n > 0 && narrowband => {
                            // Gateways that send RFC 4733 remove the tones from the audio.
                            if !saw_rfc4733 && let Some(d) = inband.process(&pcm[..n]) {
                                put_digit(&mut digits, d);
                            }
                            if let Some(a) = asr.as_mut() {
                                a.handle_frame(now, &pcm[..n]);
                            }
                            // Concealment is not what the caller sent: it would look like
                            // Baudot tones in the wrong place.
                            let typing = match media {
                                Playout::Audio(_) => watch.handle_pcm(now, &pcm[..n]),
                                _ => watch.handle_gap(now, n),
                            };
                            if typing {
                                // Baudot tones on a voice call: the caller types. Switch to
                                // the text conversation in the language chosen so far.
                                tracing::info!("Baudot tones detected: TTY mode");
                                setup.stream.stop();
                                asr = None;
                                tty = tty_session(&setup, flow.lang());
                                if let Some(t) = tty.as_mut() {
                                    t.replay(watch.take_chars());
                                }
                            }
                        }
                        None if n > 0 => {
                            if let Some(a) = asr.as_mut() {
                                a.handle_frame(now, &pcm[..n]);
                            }
                        }
                        None => {
                            if let Some(a) = asr.as_mut() {
                                a.handle_frame(now, &silence);
                            }
                        }
                    }
                }
                if now >= next_rtcp {
                    next_rtcp = now + RTCP_INTERVAL;
                    if let (Some(sock), Some(remote)) = (setup.rtcp.as_ref(), setup.media.remote_rtp) {
                        let dest = SocketAddr::new(remote.ip(), remote.port().wrapping_add(1));
                        send_report(sock, dest, &setup.stream, inbound.as_mut(), now, &mut rtcp_buf);
                    }
                }
            }
            // With a backlog past what the jitter buffer should hold, packets wait in the socket
            // (the kernel buffers seconds of them) until the ticks catch up: pushing them would
            // overflow the buffer, dropping frames that arrived.
            r = setup.rtp.recv_from(&mut inbuf), if reading => {
                let now = Instant::now();
                // Malformed datagrams and RTCP on the RTP port are ignored.
                let n = match r { Ok((n, _)) => unprotect(srtp_in.as_mut(), &mut inbuf[..n]), Err(_) => 0 };
                let data = &inbuf[..n];
                let is_bridged = bridged.is_some();
                let got = take_datagram(data, now, bridged.as_mut(), inbound.as_mut(), metrics);
                if got.received {
                    last_rx = now;
                }
                if is_bridged {
                    continue;
                }
                if let Some(d) = got.digit {
                    saw_rfc4733 = true;
                    put_digit(&mut digits, d);
                }
            }
            r = recv_asr(asr.as_mut()) => {
                if let (Some(r), Some(a)) = (r, asr.as_mut()) {
                    a.handle_result(r);
                }
            }
            r = recv_rtcp(setup.rtcp.as_ref(), &mut rtcp_buf) => {
                // The caller's sender reports feed the round-trip fields of our reports.
                let r = match (r, srtp_in.as_mut()) {
                    (Some(n), Some(u)) => u.unprotect_rtcp(&mut rtcp_buf[..n]).ok(),
                    (r, None) => r,
                    (None, Some(_)) => None,
                };
                if let (Some(n), Some(inb)) = (r, inbound.as_mut()) {
                    for p in rtcp::parse_compound(&rtcp_buf[..n]).flatten() {
                        if let rtcp::RtcpPacket::SenderReport { info, .. } = p {
                            inb.handle_sender_report(Instant::now(), info.ntp);
                        }
                    }
                }
            }
            _ = sleep_until(flow_at.unwrap_or(start).into()), if flow_at.is_some() => {
                match tty.as_mut() {
                    Some(t) => t.handle_timeout(Instant::now()),
                    None => flow.handle_timeout(Instant::now()),
                }
            }
            r = bridge::recv_agent(bridged.as_ref(), &mut agent_buf) => {
                if let (Some(n), Some(b)) = (r, bridged.as_mut()) {
                    b.to_caller(&agent_buf[..n], &setup.rtp, setup.media.remote_rtp, &setup.stream);
                }
            }
            _ = sleep_until(transfer_at.unwrap_or(start).into()), if transfer_at.is_some() => {
                let step = transfer.handle_timeout(Instant::now());
                if bridge_step(step, &setup, &mut flow, &sip, &mut end_reason).await {
                    break;
                }
            }
            _ = sleep_until(digit_at.unwrap_or(start).into()), if digit_at.is_some() => {
                if let Some(ev) = inbound.as_mut().and_then(|i| i.handle_timeout(Instant::now())) {
                    put_digit(&mut digits, ev.digit);
                }
            }
            wake = super::rtt_session::next_wake(rtt.as_mut()) => {
                // The caller's RTT text or the text stream's timers; typing keeps the call alive.
                if let Some(r) = rtt.as_mut()
                    && r.handle_wake(Instant::now(), wake, flow.lang())
                {
                    last_rx = Instant::now();
                }
            }
            _ = sleep_until(rtp_deadline.into()), if receiving && !hanging_up => {
                // The caller vanished without BYE: end the call and free everything.
                Metrics::inc(&metrics.calls_rtp_timeout_total);
                end_reason.get_or_insert("rtp_timeout");
                flow.handle_event(Instant::now(), flow::Event::RemoteHangup);
                let _ = sip.send(SipCommand::Hangup(setup.key)).await;
                break;
            }
        }
        let text_call = rtt.as_ref().is_some_and(|r| r.is_text_call());
        // A text call's conversation is typed: keys do not restart the voice menus.
        for d in digits.into_iter().flatten().filter(|_| !text_call) {
            Metrics::inc(&metrics.dtmf_digits_total);
            if let Some(a) = asr.as_mut() {
                a.handle_dtmf(Instant::now());
            }
            flow.handle_event(Instant::now(), flow::Event::Digit(d));
        }
        // Speech: barge-in, what was heard, or the fall back to keys.
        while let Some(ev) = asr.as_mut().and_then(CallAsr::poll_event) {
            flow.handle_event(Instant::now(), ev);
        }

        // A TTY conversation's actions: lines become tones played like prompts.
        while let Some(action) = tty
            .as_mut()
            .filter(|_| started)
            .and_then(TtySession::poll_action)
        {
            match action {
                TtyAction::Play(pcm) => {
                    let pcm = crate::speech::tts::Pcm {
                        rate: 8000,
                        samples: pcm,
                    };
                    match crate::speech::cache::encode_pcm(
                        "tty.line".into(),
                        flow.lang(),
                        String::new(),
                        false,
                        "tty".into(),
                        &pcm,
                    ) {
                        Ok(p) => generation = setup.stream.play(vec![Arc::new(p)]),
                        Err(e) => tracing::error!(error = %e, "cannot encode TTY tones"),
                    }
                }
                TtyAction::Output(TtyOutput::SendLink {
                    channel,
                    to,
                    intent,
                    link,
                }) => {
                    tracing::info!(?channel, to = %to, %intent, %link, "link to send (TTY)");
                    let lang = tty.as_ref().map_or(flow.lang(), TtySession::lang);
                    let channel = super::rtt_session::outbox_channel(channel);
                    let stored = send_link(&shared, &setup, &intent, channel, Some(to), lang).await;
                    if let Some(t) = tty.as_mut() {
                        t.handle_link_stored(stored);
                    }
                }
                // The session folds lines into `Play`.
                TtyAction::Output(TtyOutput::Type(_)) => {}
                TtyAction::Output(TtyOutput::Transfer { queue }) => {
                    let (intent, lang) = tty
                        .as_ref()
                        .map(|t| {
                            let r = t.record();
                            (
                                r.intents
                                    .iter()
                                    .rev()
                                    .find_map(|(i, _)| i.clone())
                                    .unwrap_or_default(),
                                t.lang(),
                            )
                        })
                        .unwrap_or((String::new(), flow.lang()));
                    tracing::info!(queue, %intent, "TTY transfer");
                    let context = format!("intent={intent};lang={lang};mode=tty");
                    let uri = setup.tty_queue_uri.clone();
                    transfer.handle_refer_sent(Instant::now(), uri.clone(), context.clone());
                    let _ = sip
                        .send(SipCommand::Refer {
                            call: setup.key,
                            uri,
                            context,
                        })
                        .await;
                }
                TtyAction::Output(TtyOutput::Hangup) => {
                    end_reason.get_or_insert("ivr_hangup");
                    if setup.stream.is_playing() {
                        hangup_after_playback = true;
                    } else if !hanging_up {
                        hanging_up = true;
                        let _ = sip.send(SipCommand::Hangup(setup.key)).await;
                    }
                }
            }
        }

        // A text call's actions (RFC 4103 real-time text).
        while let Some(action) = rtt
            .as_mut()
            .filter(|_| started)
            .and_then(|r| r.poll_action(Instant::now()))
        {
            use super::rtt_session::RttAction;
            match action {
                RttAction::TextCall => {
                    // Typed text wins over voice and Baudot tones: one conversation at a time.
                    setup.stream.stop();
                    tty = None;
                    asr = None;
                }
                RttAction::SendLink {
                    channel,
                    to,
                    intent,
                    lang,
                } => {
                    let stored = send_link(&shared, &setup, &intent, channel, Some(to), lang).await;
                    if let Some(r) = rtt.as_mut() {
                        r.handle_link_stored(stored);
                    }
                }
                RttAction::Transfer { context } => {
                    let uri = setup.tty_queue_uri.clone();
                    let call = setup.key;
                    transfer.handle_refer_sent(Instant::now(), uri.clone(), context.clone());
                    let _ = sip.send(SipCommand::Refer { call, uri, context }).await;
                }
                RttAction::Hangup => {
                    end_reason.get_or_insert("ivr_hangup");
                    if !hanging_up {
                        hanging_up = true;
                        let _ = sip.send(SipCommand::Hangup(setup.key)).await;
                    }
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
                    let mut items: Vec<Arc<EncodedPrompt>> = Vec::with_capacity(prompts.len());
                    for p in &prompts {
                        let found = match &p.text {
                            // Said during the call only (when live help opens next): rendered
                            // once per text and cached, off the runtime.
                            Some(text) => {
                                render_dynamic(&shared, p.lang, text, setup.media.codec).await
                            }
                            None => setup.prompts.get(p.lang, &p.id).cloned(),
                        };
                        match found {
                            Some(f) => items.push(f),
                            None => {
                                tracing::error!(prompt = %p.id, lang = %p.lang, "prompt missing")
                            }
                        }
                    }
                    Metrics::inc(&metrics.prompts_played_total);
                    generation = setup.stream.play(items);
                    if let Some(l) = asr
                        .as_mut()
                        .and_then(|a| a.take_reply_latency(Instant::now()))
                    {
                        shared.reply_latency.observe_us(l.as_micros() as u64);
                        reply_latency_ms.push(l.as_millis() as u64);
                    }
                }
                Action::StopPlayback => setup.stream.stop(),
                Action::Listen {
                    lang,
                    listen,
                    trailing_silence_ms,
                } => {
                    if let Some(a) = asr.as_mut() {
                        a.listen(Instant::now(), lang, listen, trailing_silence_ms);
                    }
                }
                Action::StopListening => {
                    if let Some(a) = asr.as_mut() {
                        a.stop();
                    }
                }
                Action::RecordConsent => {
                    // Stored with call id, time and how (a key) before the transfer goes out.
                    let consent = crate::outbox::Consent {
                        call_id: setup.record.call_id.clone(),
                        kind: "text_ahead".into(),
                        given_at_ms: crate::outbox::store::now_ms(),
                        how: crate::outbox::ConsentHow::Dtmf,
                        phone: setup.caller_id.clone(),
                    };
                    if let Err(e) = shared.outbox.record_consent(consent).await {
                        tracing::error!(error = %e, "text-ahead consent not stored");
                    }
                }
                Action::Transfer {
                    queue_uri,
                    intent,
                    lang,
                    text_ahead,
                } => {
                    // What the agent sees (RFC 7433 User-to-User): no personal data.
                    let consent = match text_ahead {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "none",
                    };
                    let context = format!("intent={intent};lang={lang};consent={consent}");
                    transfer.handle_refer_sent(Instant::now(), queue_uri.clone(), context.clone());
                    let _ = sip
                        .send(SipCommand::Refer {
                            call: setup.key,
                            uri: queue_uri,
                            context,
                        })
                        .await;
                }
                Action::PlayText {
                    lang, text, then, ..
                } => {
                    // Rendered on demand off the runtime (~20 ms); the read-back holds the number.
                    let voice = super::render_config(&shared.config).voice(lang).clone();
                    let codec = setup.media.codec;
                    let dynamic = shared.dynamic.clone();
                    let rendered = match dynamic.cached(lang, &voice, text.expose(), codec) {
                        Some(p) => Ok(p),
                        None => tokio::task::spawn_blocking(move || {
                            dynamic.render(lang, &voice, text.expose(), codec)
                        })
                        .await
                        .unwrap_or_else(|e| {
                            Err(crate::speech::dynamic::DynamicError::Synthesis(
                                e.to_string(),
                            ))
                        }),
                    };
                    match rendered {
                        Ok(p) => {
                            // The confirmation after the value is a catalog prompt, rendered
                            // ahead of time: only the value's sentence was synthesized now.
                            let mut items = Vec::with_capacity(1 + then.len());
                            items.push(p);
                            items.extend(
                                then.iter()
                                    .filter_map(|t| setup.prompts.get(t.lang, &t.id).cloned()),
                            );
                            generation = setup.stream.play(items);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "read-back not rendered");
                            // The flow waits for the read-back's end: let it go on.
                            flow.handle_event(Instant::now(), flow::Event::PlaybackDone);
                        }
                    }
                }
                Action::SendSms { intent, to } => {
                    let to = to.or_else(|| setup.caller_id.clone());
                    let ok = send_link(
                        &shared,
                        &setup,
                        &intent,
                        crate::outbox::Channel::Sms,
                        to,
                        flow.lang(),
                    )
                    .await;
                    flow.handle_event(Instant::now(), flow::Event::LinkQueued(ok));
                }
                Action::SendEmail { intent, to } => {
                    let ok = send_link(
                        &shared,
                        &setup,
                        &intent,
                        crate::outbox::Channel::Email,
                        Some(to),
                        flow.lang(),
                    )
                    .await;
                    flow.handle_event(Instant::now(), flow::Event::LinkQueued(ok));
                }
                Action::Hangup => {
                    end_reason.get_or_insert("ivr_hangup");
                    hanging_up = true;
                    let _ = sip.send(SipCommand::Hangup(setup.key)).await;
                }
            }
        }
        // The record as the call goes (a crash leaves what was known): at most one save per
        // PROGRESS_INTERVAL, only when something changed; the store coalesces further.
        let now = Instant::now();
        if now >= next_progress {
            next_progress = now + PROGRESS_INTERVAL;
            let record = call_record(
                &shared,
                &setup,
                &Progress {
                    flow: &flow,
                    asr: asr.as_ref(),
                    reply_latency_ms: &reply_latency_ms,
                    transfer: &transfer,
                    tty: tty.as_ref(),
                    rtt: rtt.as_ref(),
                    end_reason,
                },
            );
            if last_saved.as_ref() != Some(&record) {
                shared.store.save(record.clone());
                last_saved = Some(record);
            }
        }
        if hanging_up && !setup.stream.is_playing() {
            break;
        }
    }
    setup.stream.close();

    // Final record: what the flow did and why the call ended.
    if let (Some(inb), Some(t)) = (inbound.as_ref(), tty.as_ref()) {
        let j = inb.jitter_stats();
        let (concealed, dry_gaps) = t.playout_counts();
        tracing::info!(
            played = j.played,
            lost = j.lost,
            late = j.late,
            duplicate = j.duplicate,
            overflow = j.overflow,
            resyncs = j.resyncs,
            concealed,
            dry_gaps,
            "TTY receive path"
        );
    }
    if let Some(b) = &bridged {
        let (to_agent, to_caller) = b.packets();
        tracing::info!(to_agent, to_caller, "bridge relayed packets");
    }
    let mut record = call_record(
        &shared,
        &setup,
        &Progress {
            flow: &flow,
            asr: asr.as_ref(),
            reply_latency_ms: &reply_latency_ms,
            transfer: &transfer,
            tty: tty.as_ref(),
            rtt: rtt.as_ref(),
            end_reason,
        },
    );
    record.ended_at = Some(now_rfc3339());
    if let Some(r) = &rtt {
        r.log_stats();
    }
    shared.store.save(record);
    let _ = sip.send(SipCommand::Finished(setup.key)).await;
}

/// What a call's record is made of, borrowed from the call task.
struct Progress<'a> {
    flow: &'a flow::Call,
    asr: Option<&'a CallAsr>,
    reply_latency_ms: &'a [u64],
    transfer: &'a bridge::Transfer,
    tty: Option<&'a TtySession>,
    rtt: Option<&'a super::rtt_session::RttSession>,
    end_reason: Option<&'static str>,
}

/// The call's record as of now (`ended_at` unset: the caller sets it at the end).
fn call_record(shared: &Shared, setup: &CallSetup, p: &Progress<'_>) -> CallRecord {
    let rec = p.flow.record();
    let mut record = setup.record.clone();
    record.codec = Some(setup.media.codec.name().to_string());
    record.lang = rec.lang.map(|l| l.code().to_string());
    record.digits = rec.digits.clone();
    record.intents = rec.intents.clone();
    record.intent = rec.intents.last().cloned();
    record.actions = rec.actions.clone();
    record.prompts = rec
        .prompts
        .iter()
        .map(|p| format!("{}:{}", p.lang, p.id))
        .collect();
    record.outcome = rec
        .outcome
        .and_then(|o| serde_json::to_value(o).ok())
        .and_then(|v| v.as_str().map(String::from));
    record.end_reason = p.end_reason.map(String::from);
    if let Some(a) = p.asr
        && (!a.transcripts.is_empty() || !p.reply_latency_ms.is_empty())
    {
        record.speech = Some(serde_json::json!({
            "transcripts": a.transcripts.iter().map(|t| crate::pii::redact_words(t)).collect::<Vec<_>>(),
            "confidence": rec.confidence,
            "understood": rec.understood,
            "reply_latency_ms": p.reply_latency_ms,
        }));
    }
    record.transfer = p.transfer.outcome().map(bridge::Outcome::as_record);
    if let Some(intent) = record.intent.as_deref() {
        let tty = record.mode == "tty";
        let lang = rec.lang.unwrap_or(crate::types::Lang::En);
        let now = jiff::Timestamp::now();
        (record.route, record.route_reason) =
            bridge::route_of(&shared.router, intent, lang, tty, now);
    }
    if let Some(t) = p.tty {
        let r = t.record();
        record.mode = "tty".into();
        record.lang = r.lang.map(|l| l.code().to_string());
        record.intents = r.intents.iter().filter_map(|(i, _)| i.clone()).collect();
        record.intent = record.intents.last().cloned();
        record.actions = r.actions.clone();
        // What the caller's TTY was read as, numbers redacted like spoken transcripts: how
        // well Baudot decodes in the field (and under load) is measured from it.
        record.speech = Some(serde_json::json!({
            "caller_lines": r.caller_lines(false).iter().map(|l| crate::pii::redact_words(l)).collect::<Vec<_>>(),
            "typed_lines": r.typed(false).len(),
        }));
        record.outcome = r
            .outcome
            .and_then(|o| serde_json::to_value(o).ok())
            .and_then(|v| v.as_str().map(String::from));
    }
    if let Some(r) = p.rtt {
        r.fill_record(&mut record);
    }
    record
}

/// Act on a transfer step; true when the call task must end now.
async fn bridge_step(
    step: Step,
    setup: &CallSetup,
    flow: &mut flow::Call,
    sip: &mpsc::Sender<SipCommand>,
    end_reason: &mut Option<&'static str>,
) -> bool {
    let now = Instant::now();
    match step {
        Step::Wait => false,
        Step::Referred => {
            // The agent has the caller: our leg ends.
            flow.handle_event(now, flow::Event::TransferDone(true));
            end_reason.get_or_insert("transferred");
            let _ = sip.send(SipCommand::Hangup(setup.key)).await;
            true
        }
        Step::PlaceCall { uri, context } => {
            tracing::info!("the trunk will not transfer: bridging");
            let codec = setup.media.codec;
            let call = setup.key;
            let _ = sip
                .send(SipCommand::Bridge {
                    call,
                    uri,
                    context,
                    codec,
                })
                .await;
            false
        }
        Step::Bridged => {
            // The agent talks now: the IVR's own stream stops for good.
            setup.stream.stop();
            setup.stream.set_media(
                setup.media.remote_rtp,
                false,
                setup.media.codec,
                setup.media.payload_type,
            );
            flow.handle_event(now, flow::Event::TransferDone(true));
            false
        }
        Step::Failed => {
            flow.handle_event(now, flow::Event::TransferDone(false));
            false
        }
        Step::CancelAgent => {
            let _ = sip.send(SipCommand::DropAgent(setup.key)).await;
            flow.handle_event(now, flow::Event::TransferDone(false));
            false
        }
        Step::WithdrawAgent => {
            let _ = sip.send(SipCommand::DropAgent(setup.key)).await;
            false
        }
        Step::ReferredWithdrawAgent => {
            // As `Referred`, after dropping our own call to the agent.
            let _ = sip.send(SipCommand::DropAgent(setup.key)).await;
            flow.handle_event(now, flow::Event::TransferDone(true));
            end_reason.get_or_insert("transferred");
            let _ = sip.send(SipCommand::Hangup(setup.key)).await;
            true
        }
        Step::AgentGone => {
            end_reason.get_or_insert("agent_bye");
            let _ = sip.send(SipCommand::Hangup(setup.key)).await;
            true
        }
    }
}

/// Text rendered on demand (cached; a miss renders on a blocking thread, ~20 ms). `None`
/// (logged without the text, which may be a caller's number) when it cannot be.
async fn render_dynamic(
    shared: &Shared,
    lang: crate::types::Lang,
    text: &str,
    codec: Codec,
) -> Option<Arc<EncodedPrompt>> {
    let voice = super::render_config(&shared.config).voice(lang).clone();
    if let Some(p) = shared.dynamic.cached(lang, &voice, text, codec) {
        return Some(p);
    }
    let dynamic = shared.dynamic.clone();
    let text = text.to_string();
    match tokio::task::spawn_blocking(move || dynamic.render(lang, &voice, &text, codec)).await {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "dynamic prompt not rendered");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "dynamic prompt rendering crashed");
            None
        }
    }
}

/// SRTP: the caller's datagram `buf` checked and decrypted in place; the RTP length to read,
/// 0 (dropped) for a forged, replayed or plain packet on an SRTP call. Without SRTP, all of it.
fn unprotect(srtp: Option<&mut crate::rtp::srtp::Unprotector>, buf: &mut [u8]) -> usize {
    match srtp {
        Some(u) => u.unprotect(buf).unwrap_or(0),
        None => buf.len(),
    }
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
    stream: &Stream,
    inbound: Option<&mut Inbound>,
    now: Instant,
    buf: &mut [u8],
) {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let c = stream.counters();
    let info = rtcp::SenderInfo {
        ntp: rtcp::ntp_from_unix(wall.as_secs(), wall.subsec_nanos()),
        rtp_timestamp: c.timestamp,
        packet_count: c.packets,
        octet_count: c.octets,
    };
    let block = inbound.and_then(|i| i.report_block(now));
    let blocks: &[rtcp::ReportBlock] = match &block {
        Some(b) => std::slice::from_ref(b),
        None => &[],
    };
    if let Ok(n) = rtcp::write_report(buf, c.ssrc, Some(&info), blocks, "ivr") {
        // SRTCP on an SRTP call (nothing is sent if it cannot be protected).
        if let Some(n) = stream.protect_rtcp(buf, n) {
            let _ = sock.try_send_to(&buf[..n], dest);
        }
    }
}

/// Store the link of `intent`'s answer for the caller: durable before anything says "sent".
/// False when nothing could be stored (no sendable link, a bad recipient, a disk error).
async fn send_link(
    shared: &Shared,
    setup: &CallSetup,
    intent: &str,
    channel: crate::outbox::Channel,
    to: Option<Pii<String>>,
    lang: crate::types::Lang,
) -> bool {
    let Some(to) = to else { return false };
    let policy = shared.router.policy();
    let Some(link) = policy
        .intent(intent)
        .and_then(|p| p.link.as_deref())
        .and_then(|l| policy.link(l))
    else {
        tracing::warn!(%intent, "no link to send for this intent");
        return false;
    };
    let message = crate::outbox::store::NewMessage {
        call_id: setup.record.call_id.clone(),
        link_id: link.id.clone(),
        url: link.url.clone(),
        channel,
        to,
        lang,
    };
    match shared.outbox.enqueue(&message).await {
        Ok(m) => {
            tracing::info!(id = m.id, %intent, channel = channel.as_str(), "link stored for delivery");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, %intent, "link not stored");
            false
        }
    }
}
