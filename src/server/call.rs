//! One task per call: the call's IO shell. The caller's RTP is read and processed by the
//! call's media thread (`outgoing`) in the call's `media::MediaLeg` (the sans-IO receive path:
//! strict source, SRTP, jitter buffer, decoding, RFC 4733 and in-band DTMF, the Baudot watch,
//! the speech front end, the RTP timeout); the task gets the leg's events (keys, speech, Baudot
//! heard, the RTP timeout), feeds them, text and the SIP task's news to the call's `CallCore`
//! (the sans-IO state machine in `ivr_core::call`: modes, dialogs, links, transfer) and carries
//! out what the core asks (`carry_out`): prompts and tones to the call's `Stream` (the media
//! threads send it), links to the outbox, REFER, the agent leg and the hang-up to the SIP task.
//! Per packet or frame the task works only while the call is bridged (it relays the caller's
//! packets to the agent) or in TTY mode (it ticks the playout: every frame is the Baudot
//! modem's). Buffers are owned and reused: no allocation per packet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use super::Shared;
use super::asr_pool::AsrResult;
use super::bridge::{self, AgentEvent, Bridge, BridgeConfig, LegMedia};
use super::call_asr::CallAsr;
use super::media::{LegSetup, MediaEvent, MediaLeg, Rx, RxMedia, SharedLeg, lock_leg};
use super::metrics::Metrics;
use super::outgoing::{Receive, Stream, StreamEvent};
use super::rtt_session::TextPort;
use super::store::{CallRecord, now_rfc3339};
use crate::call::{CallConfig, CallCore, CallInput, Effect};
use crate::flow::{self, CallMode, FlowConfig};
use crate::nlu::Nlu;
use crate::pii::Pii;
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
    /// With the SRTP sessions the new media needs (re-keyed, started or stopped).
    Media(Box<Negotiated>, Box<crate::sip::sdp::SrtpRekey>),
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
    /// Non-blocking, read by the media thread; not registered with tokio (`CallTask::bridge`
    /// registers a clone while the task relays).
    pub rtp: std::net::UdpSocket,
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
    /// `[tty]`: the TTY conversation's timing (a voice call switched to TTY uses it too).
    pub tty_config: crate::flow::tty::TtyConfig,
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

/// The call core's setup from the SIP task's (`text`: the text stream's, taken by the shell).
fn core_config(setup: &CallSetup, text: Option<crate::call::TextConfig>) -> CallConfig {
    CallConfig {
        flow: setup.flow.clone(),
        tty: setup.tty,
        tty_config: setup.tty_config.clone(),
        tty_prompts: setup.prompts.tty.clone(),
        nlu: setup.nlu.clone(),
        caller_id: setup.caller_id.clone(),
        tty_transfers: setup.tty_transfers.clone(),
        tty_queue_uri: setup.tty_queue_uri.clone(),
        bridge: setup.bridge.clone(),
        codec: setup.media.codec,
        text,
    }
}

/// How often at most a call's record is saved while the call goes on.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Events of the media thread waiting for the task (keys, speech, RTCP due, the RTP timeout):
/// a few per second on a busy call; more than this means the task is wedged.
const MEDIA_EVENTS: usize = 64;

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

async fn recv_asr(results: Option<&mut mpsc::Receiver<AsrResult>>) -> Option<AsrResult> {
    match results {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Everything one call task owns: the call's sockets and outgoing stream (in `setup`), its
/// receive path and speech front end (the `MediaLeg`, fed from the RTP socket here), its
/// `CallCore`, the agent leg's relay and its record state. `run` waits for the next thing to
/// happen (`wait`), hands it to the core or the leg (`handle`), then takes the leg's events and
/// carries out every effect the core asks for (`after_wake`): one input, then every `poll_*`
/// (CONTRIBUTING.md).
struct CallTask {
    setup: CallSetup,
    rx: mpsc::Receiver<CallCommand>,
    sip: mpsc::Sender<SipCommand>,
    shared: Arc<Shared>,
    frame: Duration,
    /// The receive path (strict source, SRTP, jitter buffer, DTMF, the Baudot watch, speech
    /// front end), run by the call's media thread; the task locks it to set what it listens
    /// for, and ticks it itself in TTY mode.
    leg: SharedLeg,
    /// The leg's events from the media thread (until it lets go of the call).
    media_rx: mpsc::Receiver<MediaEvent>,
    media_open: bool,
    /// Events taken from the leg or its queue, for the core (`media_events`).
    pending: std::collections::VecDeque<MediaEvent>,
    /// The core's mode as the leg last heard it.
    leg_mode: CallMode,
    /// The recognizer pool's results (the front end is in the leg).
    asr_results: Option<mpsc::Receiver<AsrResult>>,
    core: CallCore,
    /// The playback the core asked for last (earlier ones may still report their end).
    generation: u64,
    inbuf: [u8; 2048],
    rtcp_buf: [u8; 512],
    next_tick: Instant,
    end_reason: Option<&'static str>,
    hanging_up: bool,
    /// The core ended our leg (transferred, the agent hung up): the task ends now.
    ended: bool,
    reply_latency_ms: Vec<u64>,
    /// The RFC 4103 text stream's socket (its conversation is the core's).
    text: Option<TextPort>,
    bridged: Option<Bridge>,
    /// The caller's RTP socket registered with tokio, while bridged (the task relays).
    rtp_relay: Option<UdpSocket>,
    /// The relay for an agent who just answered, until the core says whether to bridge.
    answered: Option<Bridge>,
    agent_buf: [u8; 2048],
    /// A TTY hang-up waits for the last line (ending "SK") to be sent.
    hangup_after_playback: bool,
    next_progress: Instant,
    last_saved: Option<CallRecord>,
}

/// What woke the call task.
enum Wake {
    Command(Option<CallCommand>),
    Stream(Option<StreamEvent>),
    Tick,
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Asr(Option<super::asr_pool::AsrResult>),
    Rtcp(Option<usize>),
    /// The core's next timer (dialog, text stream, transfer).
    CoreTimeout,
    AgentMedia(Option<usize>),
    /// An event of the call's leg from its media thread.
    Media(Option<MediaEvent>),
    Text(Option<(usize, SocketAddr)>),
}

/// What the loop does after handling a wake-up.
#[derive(PartialEq, Eq)]
enum Then {
    /// Carry out the core's effects, save progress.
    Drain,
    /// Nothing else to do for this wake-up (a datagram relayed to the agent).
    Skip,
    /// The call task ends now.
    End,
}

pub async fn run(
    setup: CallSetup,
    rx: mpsc::Receiver<CallCommand>,
    sip: mpsc::Sender<SipCommand>,
    shared: Arc<Shared>,
) {
    let mut task = CallTask::new(setup, rx, sip, shared);
    loop {
        let wake = task.wait().await;
        match task.handle(wake).await {
            Then::End => break,
            Then::Skip => continue,
            Then::Drain => {}
        }
        task.after_wake().await;
        if task.ended || (task.hanging_up && !task.setup.stream.is_playing()) {
            break;
        }
    }
    task.finish().await;
}

impl CallTask {
    fn new(
        mut setup: CallSetup,
        rx: mpsc::Receiver<CallCommand>,
        sip: mpsc::Sender<SipCommand>,
        shared: Arc<Shared>,
    ) -> CallTask {
        let frame = Duration::from_millis(u64::from(setup.ptime_ms));
        let start = Instant::now();
        let mut leg = MediaLeg::new(
            start,
            LegSetup {
                media: RxMedia::of(&setup.media),
                ptime_ms: setup.ptime_ms,
                rtp_timeout: setup.rtp_timeout,
                srtp_in: setup.srtp_in.take(),
                asr: call_asr(&shared, &setup),
            },
            shared.metrics.clone(),
        );
        let asr_results = leg.asr_mut().and_then(CallAsr::take_results);
        let (text, text_config) = match TextPort::from_setup(&mut setup) {
            Some((port, config)) => (Some(port), Some(config)),
            None => (None, None),
        };
        let core = CallCore::new(start, core_config(&setup, text_config));
        let leg_mode = core.mode();
        leg.set_mode(leg_mode);
        // From its next tick the call's media thread reads the socket into the leg and ticks it.
        let leg = Arc::new(std::sync::Mutex::new(leg));
        let (media_tx, media_rx) = mpsc::channel(MEDIA_EVENTS);
        setup.stream.attach_receive(Receive {
            leg: leg.clone(),
            events: media_tx,
        });
        setup.stream.set_media(
            setup.media.remote_rtp,
            setup.media.direction.sends(),
            setup.media.codec,
            setup.media.payload_type,
        );
        CallTask {
            leg,
            media_rx,
            media_open: true,
            pending: std::collections::VecDeque::with_capacity(MEDIA_EVENTS),
            leg_mode,
            asr_results,
            core,
            generation: 0,
            inbuf: [0u8; 2048],
            rtcp_buf: [0u8; 512],
            next_tick: start + frame,
            end_reason: None,
            hanging_up: false,
            ended: false,
            reply_latency_ms: Vec::new(),
            text,
            bridged: None,
            rtp_relay: None,
            answered: None,
            agent_buf: [0u8; 2048],
            hangup_after_playback: false,
            next_progress: start + PROGRESS_INTERVAL,
            last_saved: None,
            frame,
            setup,
            rx,
            sip,
            shared,
        }
    }

    /// Waits for the next thing to happen to the call.
    async fn wait(&mut self) -> Wake {
        let core_at = self.core.poll_timeout();
        // The media thread reads the socket and ticks the playout, except in these states:
        // a bridged call's packets are relayed from here, a TTY call's frames are popped here.
        let reading = self.bridged.is_some();
        let ticking = self.leg_mode == CallMode::Tty;
        let now = Instant::now();
        tokio::select! {
            biased;
            cmd = self.rx.recv() => Wake::Command(cmd),
            ev = self.setup.stream_events.recv() => Wake::Stream(ev),
            _ = sleep_until(self.next_tick.into()), if ticking => Wake::Tick,
            r = recv_from_opt(self.rtp_relay.as_ref(), &mut self.inbuf), if reading => {
                Wake::Datagram(r)
            }
            ev = self.media_rx.recv(), if self.media_open => Wake::Media(ev),
            r = recv_asr(self.asr_results.as_mut()) => Wake::Asr(r),
            r = recv_rtcp(self.setup.rtcp.as_ref(), &mut self.rtcp_buf) => Wake::Rtcp(r),
            _ = sleep_until(core_at.unwrap_or(now).into()), if core_at.is_some() => {
                Wake::CoreTimeout
            }
            r = bridge::recv_agent(self.bridged.as_ref(), &mut self.agent_buf) => {
                Wake::AgentMedia(r)
            }
            r = super::rtt_session::recv(self.text.as_mut()) => Wake::Text(r),
        }
    }

    async fn handle(&mut self, wake: Wake) -> Then {
        let now = Instant::now();
        match wake {
            Wake::Command(cmd) => return self.on_command(cmd).await,
            Wake::Stream(ev) => self.on_stream_event(ev).await,
            Wake::Tick => self.on_tick(),
            Wake::Datagram(r) => return self.on_datagram(r),
            Wake::Asr(Some(r)) => self.leg().handle_asr_result(r),
            // No recognizer holds the call's queue any more (speech was dropped).
            Wake::Asr(None) => self.asr_results = None,
            Wake::Rtcp(r) => self.on_rtcp(r),
            Wake::CoreTimeout => self.core.handle_timeout(now),
            Wake::AgentMedia(r) => {
                if let (Some(n), Some(b)) = (r, self.bridged.as_mut()) {
                    let s = &self.setup;
                    let Some(rtp) = self.rtp_relay.as_ref() else {
                        return Then::Skip;
                    };
                    b.to_caller(&mut self.agent_buf[..n], rtp, s.media.remote_rtp, &s.stream);
                }
            }
            // Taken with the others after the wake-up (`after_wake`).
            Wake::Media(Some(ev)) => self.pending.push_back(ev),
            Wake::Media(None) => self.media_open = false,
            Wake::Text(r) => {
                // The caller's RTT text; typing keeps the call alive.
                if let (Some((len, from)), Some(port)) = (r, self.text.as_mut())
                    && self.core.handle_text_datagram(now, port.datagram(len))
                {
                    port.learn_remote(from);
                    self.leg().handle_activity(now);
                }
            }
        }
        Then::Drain
    }

    async fn on_command(&mut self, cmd: Option<CallCommand>) -> Then {
        let now = Instant::now();
        match cmd {
            Some(CallCommand::Confirmed) => self.core.handle(now, CallInput::Start),
            Some(CallCommand::Media(m, rekey)) => {
                // SRTP first: the first datagram after the answer may use the new key.
                if let Some(u) = rekey.inbound {
                    self.leg().set_srtp_in(u);
                }
                if let Some(p) = rekey.outbound {
                    self.setup.stream.set_srtp(p);
                }
                self.on_media(now, *m)
            }
            Some(CallCommand::RemoteHangup(reason) | CallCommand::Ended(reason)) => {
                self.core.handle(now, CallInput::RemoteHangup);
                self.end_reason.get_or_insert(reason);
                return Then::End;
            }
            Some(CallCommand::Transfer { status, done }) => {
                self.core
                    .handle(now, CallInput::ReferProgress { status, done });
            }
            Some(CallCommand::Agent(ev)) => self.on_agent(now, ev),
            Some(CallCommand::Drain) => {
                self.end_reason.get_or_insert("drain");
                if !self.hanging_up {
                    let _ = self.sip.send(SipCommand::Hangup(self.setup.key)).await;
                }
                return Then::End;
            }
            None => return Then::End,
        }
        Then::Drain
    }

    /// Agent-leg news: an answered leg's relay is set up here (the core decides whether to
    /// bridge it, `Effect::Bridge`).
    fn on_agent(&mut self, now: Instant, ev: AgentEvent) {
        let input = match ev {
            AgentEvent::Answered(leg) => {
                let ssrc = self.setup.key.0 ^ 0x6272_6964;
                let relay = Bridge::new(*leg, LegMedia::of(&self.setup.media), ssrc);
                if let Err(e) = &relay {
                    tracing::error!(error = %e, "cannot relay the agent's media");
                }
                self.answered = relay.ok();
                CallInput::AgentAnswered {
                    relayable: self.answered.is_some(),
                }
            }
            AgentEvent::Failed(status) => {
                CallInput::Agent(crate::call::transfer::AgentEvent::Failed(status))
            }
            AgentEvent::Hangup => CallInput::Agent(crate::call::transfer::AgentEvent::Hangup),
        };
        self.core.handle(now, input);
    }

    /// A re-INVITE changed the media (hold, resume, codec, address).
    fn on_media(&mut self, now: Instant, m: Negotiated) {
        // The receive path follows the codec, the caller's address (strict source) and hold;
        // a caller resuming from hold may have been silent a long time.
        self.leg().set_media(now, RxMedia::of(&m));
        if let Some(t) = m.text.as_ref() {
            self.core.handle_text_media(t);
            if let Some(port) = self.text.as_mut() {
                port.handle_media(t);
            }
        }
        self.core.handle(now, CallInput::CallerCodec(m.codec));
        self.setup.media = m;
        let media = &self.setup.media;
        let sends = media.direction.sends() && !self.hanging_up && self.bridged.is_none();
        self.setup
            .stream
            .set_media(media.remote_rtp, sends, media.codec, media.payload_type);
    }

    async fn on_stream_event(&mut self, ev: Option<StreamEvent>) {
        // Only the end of the playback the core asked for last counts: one stopped by
        // barge-in may still report its end.
        let Some(StreamEvent::PlaybackDone { generation }) = ev else {
            return;
        };
        if generation != self.generation {
            return;
        }
        self.core.handle(Instant::now(), CallInput::PlaybackDone);
        if self.hangup_after_playback && !self.hanging_up {
            self.hanging_up = true;
            self.leg().disarm_rtp_timeout();
            let _ = self.sip.send(SipCommand::Hangup(self.setup.key)).await;
        }
    }

    /// The leg, locked (briefly: its media thread waits for it).
    fn leg(&self) -> std::sync::MutexGuard<'_, MediaLeg> {
        lock_leg(&self.leg)
    }

    /// A TTY call's playout tick, one per frame period: every frame to the core's Baudot modem
    /// now (the media thread has read what arrived as it came); the leg's other events wait
    /// for `after_wake`.
    fn on_tick(&mut self) {
        let now = Instant::now();
        self.next_tick += self.frame;
        if now > self.next_tick + self.frame * 5 {
            self.next_tick = now + self.frame;
        }
        let leg = self.leg.clone();
        let mut leg = lock_leg(&leg);
        leg.handle_tick(now);
        while let Some(ev) = leg.poll_event() {
            match ev {
                MediaEvent::Frame { at, media } => self.core.handle_audio(at, media, leg.frame()),
                ev => self.pending.push_back(ev),
            }
        }
    }

    /// A bridged call's datagram from the caller: relayed to the agent.
    fn on_datagram(&mut self, r: std::io::Result<(usize, SocketAddr)>) -> Then {
        let now = Instant::now();
        if let Ok((n, from)) = r {
            let leg = self.leg.clone();
            let rx = lock_leg(&leg).handle_datagram(now, &mut self.inbuf[..n], from);
            if let (Rx::Relay(n), Some(b)) = (rx, self.bridged.as_mut()) {
                // Bridged: the caller talks to the agent, not to the IVR.
                b.from_caller(&self.inbuf[..n]);
            }
        }
        Then::Skip
    }

    fn on_rtcp(&mut self, r: Option<usize>) {
        if let Some(n) = r {
            let leg = self.leg.clone();
            lock_leg(&leg).handle_rtcp(Instant::now(), &mut self.rtcp_buf[..n]);
        }
    }

    /// An RTCP report of what we send and receive, when the caller has an RTCP port.
    fn send_report(&mut self, at: Instant) {
        let s = &self.setup;
        if let (Some(sock), Some(remote)) = (s.rtcp.as_ref(), s.media.remote_rtp) {
            let dest = SocketAddr::new(remote.ip(), remote.port().wrapping_add(1));
            let block = lock_leg(&self.leg).report_block(at);
            send_report(sock, dest, &s.stream, block, &mut self.rtcp_buf);
        }
    }

    /// What the receive path has for the core: what the media thread sent, then what the leg
    /// holds now (a recognizer's result understood, a listen that found no recognizer), in
    /// order: keys, speech, Baudot heard, RTCP due. False when the caller timed out (the call
    /// ends now).
    async fn media_events(&mut self) -> bool {
        while let Ok(ev) = self.media_rx.try_recv() {
            self.pending.push_back(ev);
        }
        {
            let leg = self.leg.clone();
            let mut leg = lock_leg(&leg);
            while let Some(ev) = leg.poll_event() {
                match ev {
                    MediaEvent::Frame { at, media } => {
                        self.core.handle_audio(at, media, leg.frame());
                    }
                    ev => self.pending.push_back(ev),
                }
            }
        }
        while let Some(ev) = self.pending.pop_front() {
            let now = Instant::now();
            match ev {
                MediaEvent::RtpTimeout => {
                    // The caller vanished without BYE: end the call and free everything.
                    Metrics::inc(&self.shared.metrics.calls_rtp_timeout_total);
                    self.end_reason.get_or_insert("rtp_timeout");
                    self.core.handle(now, CallInput::RemoteHangup);
                    let _ = self.sip.send(SipCommand::Hangup(self.setup.key)).await;
                    return false;
                }
                // Taken at the tick (TTY) or by the media thread.
                MediaEvent::Frame { .. } => {}
                MediaEvent::ReportDue { at } => self.send_report(at),
                MediaEvent::Digit(d) => {
                    // A text call's conversation is typed: keys do not count (the core
                    // ignores them outside voice).
                    if self.core.mode() != CallMode::Rtt {
                        Metrics::inc(&self.shared.metrics.dtmf_digits_total);
                        self.leg().handle_dtmf(now);
                        self.core.handle(now, CallInput::Digit(d));
                    }
                }
                // Speech: barge-in, what was heard, or the fall back to keys.
                MediaEvent::Speech(ev) => self.core.handle(now, CallInput::Speech(ev)),
                // The leg's watch heard Baudot (the leg is in TTY mode already; should the
                // core stay in voice, `sync_mode` puts the leg back).
                MediaEvent::Baudot(chars) => {
                    self.leg_mode = CallMode::Tty;
                    self.core.handle(now, CallInput::BaudotHeard(chars));
                }
            }
            self.sync_mode();
        }
        true
    }

    /// The leg follows the core's mode (voice, TTY, RTT) when it changes.
    fn sync_mode(&mut self) {
        let mode = self.core.mode();
        if mode != self.leg_mode {
            self.leg_mode = mode;
            self.leg().set_mode(mode);
        }
    }

    /// After an input: keys and speech to the core, then every effect it asks for, then the
    /// record's progress.
    async fn after_wake(&mut self) {
        if !self.media_events().await {
            self.ended = true;
            return;
        }
        self.drain().await;
        self.sync_mode();
        self.save_progress();
    }

    /// Every effect the core asks for, carried out in order; the text stream's packets go out
    /// between them (a deferred text step waits for them).
    async fn drain(&mut self) {
        loop {
            if let Some(port) = self.text.as_mut() {
                port.flush(&mut self.core, Instant::now());
            }
            let Some(effect) = self.core.poll_effect() else {
                break;
            };
            self.carry_out(effect).await;
            if self.ended {
                break;
            }
        }
        // An answered agent the core did not bridge (a stale answer) is let go.
        self.answered = None;
    }

    /// One effect of the core.
    async fn carry_out(&mut self, effect: Effect) {
        let key = self.setup.key;
        match effect {
            Effect::Play { prompts } => self.play(&prompts).await,
            Effect::PlayText { lang, text, then } => self.play_text(lang, text, &then).await,
            Effect::PlayTones(pcm) => self.play_tones(pcm),
            Effect::StopPlayback => self.setup.stream.stop(),
            Effect::EnterText(_) => {
                self.setup.stream.stop();
                self.leg().drop_asr();
                self.asr_results = None;
                self.sync_mode();
            }
            Effect::Listen {
                lang,
                listen,
                trailing_silence_ms,
            } => {
                self.leg()
                    .listen(Instant::now(), lang, listen, trailing_silence_ms);
            }
            Effect::StopListening => self.leg().stop_listening(),
            Effect::RecordConsent => self.record_consent().await,
            Effect::StoreLink {
                intent,
                channel,
                to,
                lang,
            } => {
                let channel = outbox_channel(channel);
                let ok =
                    send_link(&self.shared, &self.setup, &intent, channel, Some(to), lang).await;
                self.core
                    .handle(Instant::now(), CallInput::LinkStored { ok });
            }
            Effect::Refer { uri, context } => {
                let _ = self
                    .sip
                    .send(SipCommand::Refer {
                        call: key,
                        uri,
                        context,
                    })
                    .await;
            }
            Effect::PlaceAgentCall { uri, context } => {
                let codec = self.setup.media.codec;
                let bridge = SipCommand::Bridge {
                    call: key,
                    uri,
                    context,
                    codec,
                };
                let _ = self.sip.send(bridge).await;
            }
            Effect::Bridge => self.bridge(),
            Effect::DropAgent => {
                let _ = self.sip.send(SipCommand::DropAgent(key)).await;
            }
            Effect::Hangup {
                reason,
                after_playback,
            } => {
                self.end_reason.get_or_insert(reason);
                if after_playback && self.setup.stream.is_playing() {
                    self.hangup_after_playback = true;
                } else {
                    self.hang_up().await;
                }
            }
            Effect::End { reason } => {
                self.end_reason.get_or_insert(reason);
                let _ = self.sip.send(SipCommand::Hangup(key)).await;
                self.ended = true;
            }
        }
    }

    /// The agent answered and the core bridges: the agent talks now, the IVR's own stream
    /// stops for good.
    fn bridge(&mut self) {
        self.bridged = self.answered.take();
        if self.bridged.is_some() {
            self.leg().set_bridged();
            // The task reads and relays the caller's packets from now on.
            let relay = self.setup.rtp.try_clone().and_then(UdpSocket::from_std);
            if let Err(e) = &relay {
                tracing::error!(error = %e, "cannot read the caller's media for the bridge");
            }
            self.rtp_relay = relay.ok();
        }
        let m = &self.setup.media;
        self.setup.stream.stop();
        self.setup
            .stream
            .set_media(m.remote_rtp, false, m.codec, m.payload_type);
    }

    /// TTY tones (8 kHz PCM) encoded for the call's codec and played like a prompt.
    fn play_tones(&mut self, samples: Vec<i16>) {
        let pcm = crate::speech::tts::Pcm {
            rate: 8000,
            samples,
        };
        let lang = self.core.lang();
        let encoded = crate::speech::cache::encode_pcm(
            "tty.line".into(),
            lang,
            String::new(),
            false,
            "tty".into(),
            &pcm,
        );
        match encoded {
            Ok(p) => self.generation = self.setup.stream.play(vec![Arc::new(p)]),
            Err(e) => tracing::error!(error = %e, "cannot encode TTY tones"),
        }
    }

    /// Catalog prompts (and text said during the call only, rendered once and cached).
    async fn play(&mut self, prompts: &[flow::PromptRef]) {
        let mut items: Vec<Arc<EncodedPrompt>> = Vec::with_capacity(prompts.len());
        for p in prompts {
            let found = match &p.text {
                // Said during the call only (when live help opens next): rendered once per
                // text and cached, off the runtime.
                Some(text) => {
                    render_dynamic(&self.shared, p.lang, text, self.setup.media.codec).await
                }
                None => self.setup.prompts.get(p.lang, &p.id).cloned(),
            };
            match found {
                Some(f) => items.push(f),
                None => tracing::error!(prompt = %p.id, lang = %p.lang, "prompt missing"),
            }
        }
        Metrics::inc(&self.shared.metrics.prompts_played_total);
        self.generation = self.setup.stream.play(items);
        let latency = self.leg().take_reply_latency(Instant::now());
        if let Some(l) = latency {
            self.shared.reply_latency.observe_us(l.as_micros() as u64);
            self.reply_latency_ms.push(l.as_millis() as u64);
        }
    }

    /// A read-back: the sentence holding the value rendered now (off the runtime, ~20 ms),
    /// then the catalog prompts `then`.
    async fn play_text(
        &mut self,
        lang: crate::types::Lang,
        text: Pii<String>,
        then: &[flow::PromptRef],
    ) {
        let voice = super::render_config(&self.shared.config)
            .voice(lang)
            .clone();
        let codec = self.setup.media.codec;
        let dynamic = self.shared.dynamic.clone();
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
                // The confirmation after the value is a catalog prompt, rendered ahead of
                // time: only the value's sentence was synthesized now.
                let mut items = Vec::with_capacity(1 + then.len());
                items.push(p);
                let prompts = &self.setup.prompts;
                items.extend(
                    then.iter()
                        .filter_map(|t| prompts.get(t.lang, &t.id).cloned()),
                );
                self.generation = self.setup.stream.play(items);
            }
            Err(e) => {
                tracing::error!(error = %e, "read-back not rendered");
                // The flow waits for the read-back's end: let it go on.
                self.core.handle(Instant::now(), CallInput::PlaybackDone);
            }
        }
    }

    /// Our BYE, once.
    async fn hang_up(&mut self) {
        if !self.hanging_up {
            self.hanging_up = true;
            self.leg().disarm_rtp_timeout();
            let _ = self.sip.send(SipCommand::Hangup(self.setup.key)).await;
        }
    }

    /// Stored with call id, time and how (a key) before the transfer goes out.
    async fn record_consent(&mut self) {
        let consent = crate::outbox::Consent {
            call_id: self.setup.record.call_id.clone(),
            kind: "text_ahead".into(),
            given_at_ms: crate::outbox::store::now_ms(),
            how: crate::outbox::ConsentHow::Dtmf,
            phone: self.setup.caller_id.clone(),
        };
        if let Err(e) = self.shared.outbox.record_consent(consent).await {
            tracing::error!(error = %e, "text-ahead consent not stored");
        }
    }

    /// The record as the call goes (a crash leaves what was known): at most one save per
    /// PROGRESS_INTERVAL, only when something changed; the store coalesces further.
    fn save_progress(&mut self) {
        let now = Instant::now();
        if now < self.next_progress {
            return;
        }
        self.next_progress = now + PROGRESS_INTERVAL;
        let record = self.record();
        if self.last_saved.as_ref() != Some(&record) {
            self.shared.store.save(record.clone());
            self.last_saved = Some(record);
        }
    }

    /// The call's record as of now (`ended_at` unset).
    fn record(&self) -> CallRecord {
        let leg = self.leg();
        call_record(
            &self.shared,
            &self.setup,
            &Progress {
                core: &self.core,
                asr: leg.asr(),
                reply_latency_ms: &self.reply_latency_ms,
                end_reason: self.end_reason,
            },
        )
    }

    /// The call is over: the final record (what the conversation did and why the call ended).
    async fn finish(self) {
        self.setup.stream.close();
        let jitter = self.leg().jitter_stats();
        if let (Some(j), Some(t)) = (jitter, self.core.tty()) {
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
        if let Some(b) = &self.bridged {
            let (to_agent, to_caller) = b.packets();
            let (srtp, refused) = (b.is_srtp(), b.refused());
            tracing::info!(to_agent, to_caller, srtp, refused, "bridge relayed packets");
            self.shared
                .metrics
                .srtp_refused_total
                .fetch_add(refused, std::sync::atomic::Ordering::Relaxed);
        }
        let mut record = self.record();
        record.ended_at = Some(now_rfc3339());
        if let Some(r) = self.core.rtt() {
            r.log_stats();
        }
        self.shared.store.save(record);
        let _ = self.sip.send(SipCommand::Finished(self.setup.key)).await;
    }
}

/// What a call's record is made of, borrowed from the call task.
struct Progress<'a> {
    core: &'a CallCore,
    asr: Option<&'a CallAsr>,
    reply_latency_ms: &'a [u64],
    end_reason: Option<&'static str>,
}

/// The call's record as of now (`ended_at` unset: the caller sets it at the end).
fn call_record(shared: &Shared, setup: &CallSetup, p: &Progress<'_>) -> CallRecord {
    let rec = p.core.flow().record();
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
    record.transfer = p.core.transfer().outcome().map(bridge::Outcome::as_record);
    if let Some(t) = p.core.tty() {
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
    if let Some(r) = p.core.rtt() {
        super::rtt_session::fill_record(r, &mut record);
    }
    // The route of the intent the conversation that holds the call settled on, in its mode:
    // after the TTY/RTT override (a voice call switched to text has its text intent routed as
    // a text call; this was computed from the voice flow's intent before, usually none).
    if let Some(intent) = record.intent.as_deref() {
        let text = record.mode != "voice";
        let lang = record
            .lang
            .as_deref()
            .and_then(crate::types::Lang::from_code)
            .unwrap_or(crate::types::Lang::En);
        let now = jiff::Timestamp::now();
        (record.route, record.route_reason) =
            bridge::route_of(&shared.router, intent, lang, text, now);
    }
    record
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

/// The next datagram on `sock`; never, without one (a bridged call's relay, the RTCP port).
async fn recv_from_opt(
    sock: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn recv_rtcp(sock: Option<&UdpSocket>, buf: &mut [u8]) -> Option<usize> {
    recv_from_opt(sock, buf).await.ok().map(|(n, _)| n)
}

fn send_report(
    sock: &UdpSocket,
    dest: SocketAddr,
    stream: &Stream,
    block: Option<rtcp::ReportBlock>,
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

/// The outbox's channel for a text conversation's `SendLink`.
fn outbox_channel(channel: crate::flow::tty::Channel) -> crate::outbox::Channel {
    match channel {
        crate::flow::tty::Channel::Sms => crate::outbox::Channel::Sms,
        crate::flow::tty::Channel::Email => crate::outbox::Channel::Email,
    }
}
