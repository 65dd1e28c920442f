//! One scripted call on its own thread: the product's sans-IO SIP UAC over a UDP socket, the
//! caller's RTP queued on a shared pacing thread, the IVR's RTP received and measured here, then
//! the call record fetched from the admin API and checked against the script's expectation.
//!
//! The thread wakes for SIP at once, but reads the IVR's RTP only every [`WAKE`] (or before an
//! input starts), a few packets at a time, each timed by the kernel's receive stamp
//! ([`crate::stamped`]): 10 wake-ups a call-second instead of one per packet (50), with arrival
//! times that do not include the tester's own scheduling delay.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ivr_proto::rtp::dtmf::digit_event;
use ivr_proto::rtp::packet::{is_rtcp, parse_rtp};
use ivr_proto::sip::sdp::SessionDescription;
use ivr_proto::sip::{CallKey, Endpoint, EndpointConfig, Event, OutgoingCall, Transport};
use serde::Serialize;

use crate::audio::AudioSet;
use crate::impair::{ImpairCounts, Impairment, stream_seed};
use crate::manifest::{Script, Step};
use crate::sender::{Chunk, Sender, Stream};
use crate::stamped::{self, StampedBatch};
use crate::stats::{Dist, RtpStats, SPEECH_RMS, frame_rms, ms};

/// Default wait for the 200: long enough for an IVR under overload, short of Timer B (32 s).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
const HANGUP_TIMEOUT: Duration = Duration::from_secs(5);
const RECORD_TIMEOUT: Duration = Duration::from_secs(10);
const KEY_MS: u64 = 100;
const KEY_GAP_MS: u64 = 100;
/// Pauses inside the IVR's prompts (between menu options) reach ~0.9 s.
const QUIET_MS: u64 = 1500;
const PROMPT_TIMEOUT_MS: u64 = 30_000;
/// How long a caller thread sleeps while no SIP message comes: it then reads the RTP that
/// arrived meanwhile (5 packets of the IVR's stream), and checks its step (a prompt's end, the
/// stream drained). Steps end up to this much later than they could; no time it measures moves.
const WAKE: Duration = Duration::from_millis(100);

/// What every call of a run shares.
pub struct CallCtx {
    /// Request-URI of the IVR, e.g. `sip:ivr@127.0.0.1:5060`.
    pub target_uri: String,
    pub target_addr: SocketAddr,
    /// Admin APIs where the call's record is looked for, in order (the nodes of a cluster
    /// without shared storage each hold their own calls' records); empty: not checked.
    pub admins: Vec<SocketAddr>,
    /// Bearer token for the admin APIs (`[admin] token_file`).
    pub admin_token: Option<Arc<str>>,
    pub sender: Arc<Sender>,
    pub audio: Arc<AudioSet>,
    pub default_caller: String,
    /// How long to wait for the 200 before giving up (CANCEL).
    pub answer_timeout: Duration,
    /// Network impairment of every caller's RTP, and the run's seed for its schedules.
    pub impair: Impairment,
    pub seed: u64,
}

/// One call's measurements and verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallResult {
    pub n: usize,
    pub script: String,
    pub call_id: String,
    /// Seconds from the run's start to the INVITE.
    pub started_s: f64,
    pub duration_s: f64,
    pub connected: bool,
    pub ok: bool,
    pub invite_ms: Option<f64>,
    pub first_audio_ms: Option<f64>,
    /// One per caller input the IVR answered with a new talkspurt.
    pub response_ms: Vec<f64>,
    /// The same answers timed from the input's first packet (an IVR acting on a key's first
    /// packet has a response of 0 but a reaction of its real delay).
    pub reaction_ms: Vec<f64>,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub jitter_ms: f64,
    pub loss_pct: f64,
    pub pacing_error_ms: Dist,
    pub intent: Option<String>,
    pub outcome: Option<String>,
    /// TTY scripts: characters the caller typed, and the edit distance between them and what
    /// the IVR's record says it read (its `speech.caller_lines`).
    pub tty_chars: usize,
    pub tty_char_errors: usize,
    /// What the network impairment did to the caller's packets (`--impair`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impairment: Option<ImpairCounts>,
    pub errors: Vec<String>,
    #[serde(skip)]
    pub pacing_us: Vec<u32>,
}

struct Media {
    stream: Arc<Stream>,
    /// Where the IVR said it sends from (its SDP); other sources are not its stream.
    remote: SocketAddr,
    payload_type: u8,
    alaw: bool,
}

/// A caller input (audio, keys, TTY) and what is known of the IVR's response to it.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    /// When its first frame was sent.
    start: Option<Instant>,
    /// When its last frame was sent; unknown while it is being sent.
    end: Option<Instant>,
    /// The IVR began a new talkspurt (marker bit, or speech after a pause) since it started.
    armed: bool,
    /// The first speech packet of that talkspurt.
    answered: Option<Instant>,
}

/// Speech after this much silence starts a new talkspurt even without a marker bit.
const PAUSE: Duration = Duration::from_millis(500);

struct Call<'a> {
    ctx: &'a CallCtx,
    /// The call's number in the run (seeds its impairment).
    n: usize,
    ep: Endpoint,
    sip: UdpSocket,
    rtp: UdpSocket,
    /// The RTP receive batch (taken out while its datagrams are handled).
    rtp_batch: Option<StampedBatch>,
    key: CallKey,
    call_id: String,
    media: Option<Media>,
    stats: RtpStats,
    /// The IVR stream's SSRC, from its first packet.
    ssrc: Option<u32>,
    t_invite: Instant,
    t_answer: Option<Instant>,
    first_audio: Option<Instant>,
    last_speech: Option<Instant>,
    /// The IVR has spoken since the caller's last input (or answered it).
    spoke_since_input: bool,
    /// Since when the IVR's stream has been silent (None while it speaks).
    silent_since: Option<Instant>,
    /// The caller's input whose response is awaited.
    pending: Option<Pending>,
    responses: Vec<f64>,
    reactions: Vec<f64>,
    failed: Option<u16>,
    ended: bool,
    errors: Vec<String>,
}

/// Place the call of `script` and run it to its end. Never panics on what the IVR sends.
pub fn run_call(ctx: &CallCtx, script: &Script, n: usize, run_start: Instant) -> CallResult {
    let started = Instant::now();
    let mut result = CallResult {
        n,
        script: script.name.clone(),
        started_s: started.duration_since(run_start).as_secs_f64(),
        ..CallResult::default()
    };
    match Call::place(ctx, script, n) {
        Ok(mut call) => {
            call.run(script);
            call.finish(&mut result);
        }
        Err(e) => result.errors.push(format!("cannot place the call: {e}")),
    }
    if result.connected && !ctx.admins.is_empty() {
        match fetch_record(&ctx.admins, ctx.admin_token.as_deref(), &result.call_id) {
            Ok(rec) => {
                result.intent = rec["intent"].as_str().map(String::from);
                result.outcome = rec["outcome"].as_str().map(String::from);
                (result.tty_chars, result.tty_char_errors) = tty_char_errors(script, &rec);
                result.errors.extend(script.expect.check(&rec));
            }
            Err(e) => result.errors.push(format!("call record: {e}")),
        }
    }
    result.duration_s = started.elapsed().as_secs_f64();
    result.ok = result.connected && result.errors.is_empty();
    result
}

impl<'a> Call<'a> {
    fn place(ctx: &'a CallCtx, script: &Script, n: usize) -> std::io::Result<Call<'a>> {
        let local_ip = local_ip_for(ctx.target_addr)?;
        let sip = UdpSocket::bind((local_ip, 0))?;
        let rtp = UdpSocket::bind((local_ip, 0))?;
        sip.set_nonblocking(true)?;
        rtp.set_nonblocking(true)?;
        stamped::enable(&rtp)?;
        let alaw = script.codec.as_deref() == Some("pcma");
        let mut ep = Endpoint::new(EndpointConfig {
            local_addr: sip.local_addr()?,
            user_agent: "ivr-loadtest/0.1".into(),
            ..EndpointConfig::default()
        });
        let formats = if alaw { "8 0 101" } else { "0 8 101" };
        let sdp = format!(
            "v=0\r\no=loadtest 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {formats}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
            ip = local_ip,
            port = rtp.local_addr()?.port(),
        );
        let offer = SessionDescription::parse(sdp.as_bytes()).map_err(invalid)?;
        let target = match &script.dialed {
            Some(user) => retarget(&ctx.target_uri, user),
            None => ctx.target_uri.clone(),
        };
        let from_user = script
            .caller
            .clone()
            .unwrap_or_else(|| ctx.default_caller.clone());
        let now = Instant::now();
        let key = ep
            .invite(
                now,
                OutgoingCall {
                    target,
                    from_user,
                    destination: ctx.target_addr,
                    transport: Transport::Udp,
                    offer,
                    headers: Vec::new(),
                },
            )
            .map_err(invalid)?;
        let mut call = Call {
            ctx,
            n,
            ep,
            sip,
            rtp,
            rtp_batch: Some(StampedBatch::new()),
            key,
            call_id: String::new(),
            media: None,
            stats: RtpStats::default(),
            ssrc: None,
            t_invite: now,
            t_answer: None,
            first_audio: None,
            last_speech: None,
            spoke_since_input: false,
            silent_since: None,
            pending: None,
            responses: Vec::new(),
            reactions: Vec::new(),
            failed: None,
            ended: false,
            errors: Vec::new(),
        };
        call.flush();
        Ok(call)
    }

    fn run(&mut self, script: &Script) {
        let deadline = self.t_invite + self.ctx.answer_timeout;
        while self.t_answer.is_none() && !self.ended {
            if Instant::now() > deadline {
                self.errors
                    .push(format!("no answer within {:?}", self.ctx.answer_timeout));
                let _ = self.ep.cancel(Instant::now(), self.key);
                self.flush();
                return;
            }
            self.io(WAKE);
        }
        if let Some(status) = self.failed {
            self.errors.push(format!("INVITE failed: {status}"));
            return;
        }
        for (i, step) in script.steps.iter().enumerate() {
            if self.ended {
                break;
            }
            self.step(i, step);
        }
        if !self.ended {
            let _ = self.ep.hangup(Instant::now(), self.key);
            self.flush();
            let until = Instant::now() + HANGUP_TIMEOUT;
            while !self.ended && Instant::now() < until {
                self.io(WAKE);
            }
            if !self.ended {
                self.errors.push("BYE not answered".into());
            }
        }
        if let Some(m) = &self.media {
            m.stream.close();
        }
    }

    fn step(&mut self, i: usize, step: &Step) {
        let Some(m) = &self.media else { return };
        let stream = m.stream.clone();
        let alaw = m.alaw;
        match step {
            Step::Audio { .. } | Step::Tty { .. } => match self.ctx.audio.clip(step, m.alaw) {
                Some(clip) => {
                    let frames = clip.len() / 160;
                    self.begin_input();
                    stream.push(Chunk::audio(clip));
                    self.drain(&stream, frames, true);
                }
                None => self.errors.push(format!("step {i}: audio not prepared")),
            },
            Step::Dtmf {
                digits,
                wait_ms,
                key_ms,
                gap_ms,
                inband,
            } => {
                let key_ms = key_ms.unwrap_or(KEY_MS).clamp(40, 2000);
                let gap_ms = gap_ms.unwrap_or(KEY_GAP_MS).min(10_000);
                let mut frames = 0;
                self.begin_input();
                if *inband {
                    // The tones in the audio (the product's generator, −6 dBm0), rendered per
                    // step on this call's thread, never on the pacing threads.
                    let clip = inband_keys(digits, key_ms, gap_ms, alaw);
                    frames = (clip.len() / 160) as u64;
                    stream.push(Chunk::audio(clip));
                }
                for (k, d) in digits
                    .chars()
                    .filter_map(digit_event)
                    .enumerate()
                    .filter(|_| !inband)
                {
                    if k > 0 {
                        stream.push(Chunk::silence_ms(gap_ms));
                    }
                    stream.push(Chunk::key(d, key_ms));
                    frames += (key_ms + gap_ms) / 20 + 3;
                }
                self.drain(&stream, frames as usize, true);
                if let Some(w) = wait_ms {
                    stream.push(Chunk::silence_ms(*w));
                    self.drain(&stream, (*w / 20) as usize, false);
                }
            }
            Step::Silence { ms } | Step::Wait { ms } => {
                stream.push(Chunk::silence_ms(*ms));
                self.drain(&stream, (*ms / 20) as usize, false);
            }
            Step::WaitPrompt {
                quiet_ms,
                timeout_ms,
                optional,
            } => {
                let quiet = Duration::from_millis(quiet_ms.unwrap_or(QUIET_MS));
                let until =
                    Instant::now() + Duration::from_millis(timeout_ms.unwrap_or(PROMPT_TIMEOUT_MS));
                loop {
                    let now = Instant::now();
                    let quiet_now = self
                        .last_speech
                        .is_some_and(|t| now.duration_since(t) >= quiet);
                    if self.spoke_since_input && quiet_now {
                        break;
                    }
                    if now >= until {
                        if !optional {
                            self.errors.push(format!(
                                "step {i}: the IVR did not finish a prompt within {} ms",
                                timeout_ms.unwrap_or(PROMPT_TIMEOUT_MS)
                            ));
                        }
                        break;
                    }
                    if self.ended {
                        break;
                    }
                    self.io(WAKE);
                }
            }
            Step::Hangup => {
                let _ = self.ep.hangup(Instant::now(), self.key);
                self.flush();
                let until = Instant::now() + HANGUP_TIMEOUT;
                while !self.ended && Instant::now() < until {
                    self.io(WAKE);
                }
                if !self.ended {
                    self.errors.push("BYE not answered".into());
                }
            }
        }
    }

    /// Run the call until the stream has sent everything queued (bounded by its length).
    fn drain(&mut self, stream: &Stream, frames: usize, input: bool) {
        let limit = Instant::now() + Duration::from_millis(20 * frames as u64 + 5_000);
        loop {
            if let Some(at) = stream.drained_at() {
                if input && let Some(p) = self.pending.as_mut() {
                    p.end = Some(at);
                    p.start = stream.started_at();
                    self.resolve();
                }
                return;
            }
            if self.ended {
                return;
            }
            if Instant::now() > limit {
                self.errors
                    .push("the pacing thread fell behind (audio not sent in time)".into());
                return;
            }
            self.io(WAKE);
        }
    }

    /// Wait for a SIP message up to `max_wait` (or the next SIP timer), then handle every SIP
    /// message and RTP packet that arrived and any SIP timer that expired.
    fn io(&mut self, max_wait: Duration) {
        let now = Instant::now();
        let mut wait = max_wait;
        if let Some(t) = self.ep.poll_timeout() {
            wait = wait.min(t.saturating_duration_since(now));
        }
        // Only SIP wakes the thread; the RTP waits in its socket, stamped.
        let mut fd = libc::pollfd {
            fd: self.sip.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = wait.as_millis().min(1000) as i32;
        // SAFETY: `fd` is a valid pollfd for the duration of the call.
        unsafe { libc::poll(&raw mut fd, 1, timeout_ms) };
        let mut buf = [0u8; 65_536];
        while let Ok((n, from)) = self.sip.recv_from(&mut buf) {
            self.ep
                .handle_input(Instant::now(), from, Transport::Udp, &buf[..n]);
        }
        self.read_rtp();
        let now = Instant::now();
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        self.flush();
    }

    /// Handle every RTP packet waiting in the socket, each at its kernel arrival time.
    fn read_rtp(&mut self) {
        let Some(mut batch) = self.rtp_batch.take() else {
            return;
        };
        while let Ok(n) = batch.recv(&self.rtp) {
            for i in 0..n {
                let d = batch.datagram(i);
                if let Some(from) = d.from {
                    self.handle_rtp(d.arrival, from, d.data);
                }
            }
            if n < stamped::BATCH {
                break;
            }
        }
        self.rtp_batch = Some(batch);
    }

    fn handle_rtp(&mut self, arrival: Instant, from: SocketAddr, data: &[u8]) {
        let Some(m) = &self.media else { return };
        // A port this call reuses may still get a stream of an earlier call (the IVR sends
        // until its RTP timeout): only the answer's address and the first SSRC count.
        if is_rtcp(data) || from != m.remote {
            return;
        }
        let Ok(p) = parse_rtp(data) else { return };
        if p.payload_type != m.payload_type || *self.ssrc.get_or_insert(p.ssrc) != p.ssrc {
            return;
        }
        self.stats.handle(arrival, p.seq, p.timestamp);
        let speech = frame_rms(p.payload, m.alaw) > SPEECH_RMS;
        let after_pause = self
            .silent_since
            .is_some_and(|t| arrival.duration_since(t) >= PAUSE);
        if let Some(pend) = self.pending.as_mut()
            && pend.answered.is_none()
        {
            pend.armed |= p.marker || (speech && after_pause);
            if pend.armed && speech {
                pend.answered = Some(arrival);
            }
        }
        if speech {
            self.first_audio.get_or_insert(arrival);
            self.last_speech = Some(arrival);
            self.silent_since = None;
            // Speech of a prompt that was playing before the input and goes on (no barge-in)
            // is not the answer to it.
            if self.pending.is_none_or(|p| p.answered.is_some()) {
                self.spoke_since_input = true;
            }
            self.resolve();
        } else if self.silent_since.is_none() {
            self.silent_since = Some(arrival);
        }
    }

    /// A caller input starts: its response is awaited from now on (what the IVR sent before
    /// is read first, as what came before it).
    fn begin_input(&mut self) {
        self.read_rtp();
        self.pending = Some(Pending::default());
        self.spoke_since_input = false;
    }

    /// Record the response time once both the input's end and the answer are known. An IVR
    /// that acts on a key's first packet answers before the key ends: that counts as 0.
    fn resolve(&mut self) {
        if let Some(Pending {
            start,
            end: Some(end),
            answered: Some(at),
            ..
        }) = self.pending
        {
            self.responses.push(ms(at.saturating_duration_since(end)));
            if let Some(start) = start {
                self.reactions.push(ms(at.saturating_duration_since(start)));
            }
            self.pending = None;
        }
    }

    /// Send what the endpoint wants sent and act on its events.
    fn flush(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            if self.call_id.is_empty() {
                self.call_id = header(&t.payload, "Call-ID").unwrap_or_default();
            }
            let _ = self.sip.send_to(&t.payload, t.destination);
        }
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                Event::Answered { call, answer } if call == self.key => {
                    let now = Instant::now();
                    self.t_answer = Some(now);
                    self.last_speech = None;
                    match answer.as_ref().and_then(|a| self.start_media(a)) {
                        Some(m) => self.media = Some(m),
                        None => {
                            self.errors.push("no usable SDP answer".into());
                            let _ = self.ep.hangup(now, self.key);
                        }
                    }
                }
                Event::Failed { call, status } if call == self.key => {
                    self.failed = Some(status);
                    self.ended = true;
                }
                Event::RemoteHangup { call } | Event::Terminated { call, .. }
                    if call == self.key =>
                {
                    self.ended = true;
                }
                _ => {}
            }
        }
        // Answering a BYE or an ACK may have queued more.
        while let Some(t) = self.ep.poll_transmit() {
            let _ = self.sip.send_to(&t.payload, t.destination);
        }
    }

    fn start_media(&self, answer: &SessionDescription) -> Option<Media> {
        let audio = answer
            .media
            .iter()
            .find(|m| m.kind == "audio" && m.port != 0)?;
        let ip = audio
            .connection
            .as_ref()
            .or(answer.connection.as_ref())
            .and_then(|c| c.ip)?;
        let payload_type = audio
            .formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .find(|&pt| pt == 0 || pt == 8)?;
        let event_type = audio
            .rtpmaps()
            .find(|(_, name, rate, _)| {
                name.eq_ignore_ascii_case("telephone-event") && *rate == 8000
            })
            .map_or(101, |(pt, ..)| pt);
        let alaw = payload_type == 8;
        let socket = self.rtp.try_clone().ok()?;
        let stream = Arc::new(
            Stream::new(
                socket,
                payload_type,
                event_type,
                if alaw { 0xD5 } else { 0xFF },
                seed(&self.call_id),
            )
            .impair(self.ctx.impair, stream_seed(self.ctx.seed, self.n)),
        );
        stream.set_dest(SocketAddr::new(ip, audio.port));
        self.ctx.sender.add(stream.clone());
        Some(Media {
            stream,
            remote: SocketAddr::new(ip, audio.port),
            payload_type,
            alaw,
        })
    }

    fn finish(mut self, r: &mut CallResult) {
        r.call_id = std::mem::take(&mut self.call_id);
        r.connected = self.t_answer.is_some() && self.media.is_some();
        r.invite_ms = self.t_answer.map(|t| ms(t - self.t_invite));
        r.first_audio_ms = match (self.t_answer, self.first_audio) {
            (Some(a), Some(f)) => Some(ms(f.saturating_duration_since(a))),
            _ => None,
        };
        if r.connected && self.first_audio.is_none() {
            self.errors.push("the IVR never spoke".into());
        }
        r.response_ms = std::mem::take(&mut self.responses);
        r.reaction_ms = std::mem::take(&mut self.reactions);
        r.packets_received = self.stats.received;
        r.packets_sent = self.media.as_ref().map_or(0, |m| m.stream.packets());
        r.impairment = self.media.as_ref().and_then(|m| m.stream.impair_counts());
        r.jitter_ms = self.stats.jitter_ms();
        r.loss_pct = self.stats.loss_pct();
        r.pacing_us = std::mem::take(&mut self.stats.pacing_us);
        let p: Vec<f64> = r.pacing_us.iter().map(|&u| f64::from(u) / 1000.0).collect();
        r.pacing_error_ms = Dist::of(&p);
        r.errors.append(&mut self.errors);
    }
}

/// G.711 audio of DTMF tones: each key `key_ms` long, `gap_ms` of silence between keys.
fn inband_keys(digits: &str, key_ms: u64, gap_ms: u64, alaw: bool) -> Arc<[u8]> {
    let mut pcm = Vec::new();
    for (k, d) in digits
        .chars()
        .filter(|&c| digit_event(c).is_some())
        .enumerate()
    {
        if k > 0 {
            pcm.resize(pcm.len() + (gap_ms * 8) as usize, 0);
        }
        pcm.extend(ivr_proto::audio::dtmf::dtmf_tone(d, key_ms as u32, 8000));
    }
    crate::audio::encode(&pcm, alaw)
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
}

/// The local address the kernel would use towards `target` (no packet is sent).
pub fn local_ip_for(target: SocketAddr) -> std::io::Result<IpAddr> {
    let probe = UdpSocket::bind(if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}

/// `sip:ivr@host:port` with another user part.
fn retarget(uri: &str, user: &str) -> String {
    match uri.split_once(':') {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}:{user}@{host}")
        }
        None => uri.to_string(),
    }
}

fn header(msg: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    text.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn seed(s: &str) -> u32 {
    // FNV-1a: distinct SSRCs and sequence starts per call without a clock or RNG.
    s.bytes().fold(0x811C_9DC5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A minimal HTTP/1.1 GET (the admin API; no client crate needed).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_auth(addr, path, None)
}

/// [`http_get`] with `Authorization: Bearer <token>` when a token is given.
pub fn http_get_auth(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token.map_or(String::new(), |t| {
        format!("Authorization: Bearer {}\r\n", t.trim())
    });
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(16 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The call's record once it has ended (the IVR writes it at the end of the call), from the
/// first admin API that has it.
fn fetch_record(
    admins: &[SocketAddr],
    token: Option<&str>,
    call_id: &str,
) -> Result<serde_json::Value, String> {
    let start = Instant::now();
    let path = format!("/calls/{}", url_escape(call_id));
    let mut last = String::new();
    while start.elapsed() < RECORD_TIMEOUT {
        for &admin in admins {
            match http_get_auth(admin, &path, token) {
                Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                    Ok(v) if !v["ended_at"].is_null() => return Ok(v),
                    Ok(_) => last = "not ended yet".into(),
                    Err(e) => last = format!("bad JSON: {e}"),
                },
                // 404: another node may have it.
                Ok((status, _)) => last = format!("HTTP {status}"),
                Err(e) => last = e.to_string(),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("GET {path}: {last}"))
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// (characters typed, edit distance to what the IVR read) for a script's TTY steps; (0, 0)
/// when it has none. The IVR folds the line's whitespace, so both sides are compared with runs
/// of whitespace as one space.
fn tty_char_errors(script: &Script, rec: &serde_json::Value) -> (usize, usize) {
    let typed: Vec<&str> = script
        .steps
        .iter()
        .filter_map(|s| match s {
            crate::manifest::Step::Tty { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if typed.is_empty() {
        return (0, 0);
    }
    let fold = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let sent: Vec<char> = fold(&typed.join(" ")).chars().collect();
    let read = rec["speech"]["caller_lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let read: Vec<char> = fold(&read).chars().collect();
    (sent.len(), ivr_proto::audio::tty::char_edits(&sent, &read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inband_keys_are_tones_the_ivr_detects() {
        for alaw in [false, true] {
            let clip = inband_keys("12#", 100, 100, alaw);
            assert_eq!(clip.len(), (100 * 3 + 100 * 2) * 8);
            let mut det = ivr_proto::audio::dtmf::DtmfDetector::new(Default::default());
            let mut got = String::new();
            for frame in clip.chunks(160) {
                let pcm: Vec<i16> = frame
                    .iter()
                    .map(|&b| {
                        if alaw {
                            ivr_proto::rtp::codec::alaw_decode(b)
                        } else {
                            ivr_proto::rtp::codec::ulaw_decode(b)
                        }
                    })
                    .collect();
                got.extend(det.process(&pcm));
            }
            let silence = vec![0i16; 160];
            for _ in 0..10 {
                got.extend(det.process(&silence));
            }
            got.extend(det.poll_digit());
            assert_eq!(got, "12#", "alaw {alaw}");
        }
    }

    #[test]
    fn retarget_replaces_the_user_part() {
        assert_eq!(
            retarget("sip:ivr@127.0.0.1:5060", "8007671833"),
            "sip:8007671833@127.0.0.1:5060"
        );
        assert_eq!(retarget("sip:10.0.0.1", "x"), "sip:x@10.0.0.1");
    }

    #[test]
    fn header_and_escape() {
        let msg = b"INVITE sip:a SIP/2.0\r\nVia: x\r\ncall-id: abc@1.2.3.4\r\n\r\n";
        assert_eq!(header(msg, "Call-ID").as_deref(), Some("abc@1.2.3.4"));
        assert_eq!(header(b"\xff\xfe", "Call-ID"), None);
        assert_eq!(url_escape("a b/c@d"), "a%20b%2Fc@d");
    }

    #[test]
    fn admin_requests_carry_the_bearer_token_when_given() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().unwrap();
                // The whole head (the client may write it in pieces).
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    assert!(n > 0, "closed mid-head");
                    head.extend_from_slice(&buf[..n]);
                }
                heads.push(String::from_utf8_lossy(&head).to_string());
                conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
            }
            heads
        });
        assert_eq!(
            http_get_auth(addr, "/metrics", Some("s3cret\n")).unwrap(),
            (200, "ok".to_string())
        );
        assert_eq!(http_get(addr, "/calls/x").unwrap().0, 200);
        let heads = server.join().unwrap();
        assert!(
            heads[0].starts_with("GET /metrics HTTP/1.1\r\n")
                && heads[0].contains("\r\nAuthorization: Bearer s3cret\r\n"),
            "{heads:?}"
        );
        assert!(!heads[1].contains("Authorization"), "{heads:?}");
    }

    #[test]
    fn unreachable_ivr_fails_the_call_without_panicking() {
        // A port nobody listens on: the INVITE gets no answer (or ICMP) and the call fails,
        // named, within the answer timeout.
        let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = dead.local_addr().unwrap();
        drop(dead);
        let ctx = CallCtx {
            target_uri: format!("sip:ivr@{addr}"),
            target_addr: addr,
            admins: Vec::new(),
            admin_token: None,
            sender: Arc::new(Sender::start(1).unwrap()),
            audio: Arc::new(AudioSet::default()),
            default_caller: "2025550134".into(),
            answer_timeout: Duration::from_secs(1),
            impair: Impairment::default(),
            seed: 1,
        };
        let script = Script {
            name: "dead".into(),
            steps: vec![Step::Hangup],
            ..Script::default()
        };
        let t0 = Instant::now();
        let r = run_call(&ctx, &script, 0, t0);
        assert!(!r.ok && !r.connected);
        assert!(!r.errors.is_empty());
        assert!(!r.call_id.is_empty());
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    }
}
