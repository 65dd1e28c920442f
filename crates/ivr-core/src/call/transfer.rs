//! A call's transfer, sans-IO: REFER first, and when the trunk refuses REFER (or never answers
//! it) the IVR calls the agent queue itself and relays media between the caller and the agent
//! (B2BUA fallback).
//!
//! The decisions are a state machine ([`Transfer`]: REFER progress, agent-leg events and timers
//! in, [`Step`]s out) and the packet work is a pure function ([`Relay::relay`]: one datagram in,
//! one datagram out in a caller-owned buffer). The shell owns the agent leg's socket and its
//! SRTP sessions (`server::bridge`) and forwards packets as they arrive.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::rtp::codec::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
use crate::rtp::packet::{RTP_HEADER_LEN, is_rtcp, parse_rtp, write_header};
use crate::rtp::srtp::{CryptoAttr, KeySalt, Suite};
use crate::sip::sdp::{self, LocalMedia, Negotiated, SessionDescription, SrtpKeys, SrtpMode};
use crate::types::Codec;

/// `[transfer]` in the config. The defaults suit a trunk and an agent queue on a LAN: a REFER
/// is answered within a second or two, agents pick up within half a minute.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// Bridge when the trunk refuses REFER; false: only apologize (the flow's fallback).
    pub bridge: bool,
    /// Where bridged INVITEs go ("host:port", an IP address: there is no DNS in the core).
    /// Empty: the queue URI's own host and port (5060 when absent).
    pub proxy: String,
    /// Ring time of the agent leg before CANCEL.
    pub ring_timeout_s: u64,
    /// No final response and no NOTIFY to our REFER within this time: the trunk is taken to
    /// ignore REFER, and the IVR bridges.
    pub refer_timeout_s: u64,
    /// REFER refusals that mean "this trunk does not do REFER": bridge. Any other failure
    /// (e.g. a NOTIFY saying the queue was busy) is a failed transfer.
    pub bridge_on: Vec<u16>,
    /// SRTP (SDES) on the agent leg, with keys of its own: "off" offers plain RTP/AVP;
    /// "optional" offers RTP/AVP with an a=crypto line (best effort: a plain agent answers
    /// plain); "required" offers RTP/SAVP and a plain answer fails the transfer (BYE).
    pub srtp: SrtpMode,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            bridge: true,
            proxy: String::new(),
            ring_timeout_s: 30,
            refer_timeout_s: 8,
            // 408: our REFER's Timer F fired (no response at all).
            bridge_on: vec![403, 405, 408, 420, 501, 603],
            srtp: crate::sip::sdp::SrtpMode::Off,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeError {
    /// `proxy` is not an `ip:port`.
    BadProxy(String),
    /// The queue URI names no IP address and no proxy is configured.
    NoDestination,
    /// The relay only converts between G.711 laws; an Opus leg would need a transcoder.
    UnsupportedCodec(Codec),
    /// The agent's SDP answer has no usable audio (no common codec, no address), or no usable
    /// key when SRTP is required on the agent leg.
    BadAnswer,
    /// libsrtp2 refused to create the agent leg's SRTP session.
    Srtp,
}

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeError::BadProxy(p) => write!(f, "transfer.proxy {p:?} is not ip:port"),
            BridgeError::NoDestination => {
                f.write_str("the queue URI has no IP address and transfer.proxy is empty")
            }
            BridgeError::UnsupportedCodec(c) => write!(f, "cannot relay {c}"),
            BridgeError::BadAnswer => f.write_str("the agent's SDP answer has no usable audio"),
            BridgeError::Srtp => f.write_str("the agent leg's SRTP session was not created"),
        }
    }
}

impl std::error::Error for BridgeError {}

impl BridgeConfig {
    /// Where to send the INVITE for `uri`: the proxy, else the URI's `ip[:port]`.
    pub fn destination(&self, uri: &str) -> Result<SocketAddr, BridgeError> {
        let proxy = self.proxy.trim();
        if !proxy.is_empty() {
            return proxy
                .parse()
                .map_err(|_| BridgeError::BadProxy(proxy.to_string()));
        }
        uri_host_port(uri).ok_or(BridgeError::NoDestination)
    }

    pub fn ring_timeout(&self) -> Duration {
        Duration::from_secs(self.ring_timeout_s)
    }

    pub fn refer_timeout(&self) -> Duration {
        Duration::from_secs(self.refer_timeout_s)
    }
}

/// `sip:user@192.0.2.1:5070;transport=udp` → 192.0.2.1:5070. Host names (DNS) are not resolved.
fn uri_host_port(uri: &str) -> Option<SocketAddr> {
    let rest = uri
        .trim()
        .trim_start_matches('<')
        .strip_prefix("sip:")
        .or_else(|| uri.trim().strip_prefix("sips:"))?;
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split([';', '?', '>']).next()?;
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip: IpAddr = host_port.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(ip, 5060))
}

/// How a transfer ended, as the call record stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The trunk took the call by REFER.
    Referred,
    /// The IVR bridged the caller to an agent who answered.
    Bridged,
    /// The REFER or the agent leg failed with this status.
    Failed(u16),
    /// The agent leg rang out (CANCEL on ring timeout).
    NoAnswer,
}

impl Outcome {
    /// `referred|bridged|failed:<status>|no_answer`.
    pub fn as_record(self) -> String {
        match self {
            Outcome::Referred => "referred".into(),
            Outcome::Bridged => "bridged".into(),
            Outcome::Failed(s) => format!("failed:{s}"),
            Outcome::NoAnswer => "no_answer".into(),
        }
    }
}

/// What the call task does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Wait,
    /// The REFER worked: tell the flow (success) and leave the call.
    Referred,
    /// Place the bridged call to `uri` with `context` for the agent.
    PlaceCall {
        uri: String,
        context: String,
    },
    /// The agent answered: tell the flow (success), stop the IVR's prompts, relay media.
    Bridged,
    /// The transfer failed: tell the flow (it apologizes and offers the menu again).
    Failed,
    /// Drop the agent leg (CANCEL while it rings: ring timeout; BYE when up: the media cannot
    /// be relayed) and tell the flow the transfer failed.
    CancelAgent,
    /// The agent hung up a bridged call: end the caller's leg too.
    AgentGone,
    /// The trunk took the REFER after all, while our own call to the agent still rings: drop
    /// that call (CANCEL) and let the trunk's transfer go on; the flow hears nothing yet.
    WithdrawAgent,
    /// The trunk's transfer succeeded while our call to the agent still rang: drop ours and
    /// tell the flow the transfer worked.
    ReferredWithdrawAgent,
}

/// Agent-leg news from the SIP task. `L`: what the shell keeps of an answered leg (its socket
/// and keys); the state machine only looks at the kind.
#[derive(Debug)]
pub enum AgentEvent<L = ()> {
    Answered(L),
    /// The INVITE failed (final status; 408 on timeout; 0 when it could not be sent).
    Failed(u16),
    /// The established agent leg ended (the agent's BYE, or ours completed).
    Hangup,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// Our REFER is out. `deadline`: None once a response or NOTIFY came (the trunk does
    /// REFER; its final NOTIFY decides).
    Referring {
        uri: String,
        context: String,
        deadline: Option<Instant>,
    },
    Dialing {
        deadline: Instant,
        /// The REFER this call replaced (a late acceptance of it takes over again).
        uri: String,
        context: String,
    },
    Bridged,
    /// This transfer attempt is over; a later one starts again from `Idle`.
    Done,
}

/// The transfer of one call: REFER first, bridge when the trunk will not.
#[derive(Debug)]
pub struct Transfer {
    config: BridgeConfig,
    state: State,
    outcome: Option<Outcome>,
    /// The caller's codec can be relayed (G.711).
    relayable: bool,
    /// Our call to the agent was withdrawn for the trunk's late acceptance: if the trunk then
    /// fails, the transfer fails (no second call to the agent).
    withdrawn: bool,
}

impl Transfer {
    pub fn new(config: BridgeConfig, caller_codec: Codec) -> Transfer {
        Transfer {
            config,
            state: State::Idle,
            outcome: None,
            relayable: caller_codec != Codec::Opus,
            withdrawn: false,
        }
    }

    /// The caller's codec changed (re-INVITE).
    pub fn handle_caller_codec(&mut self, codec: Codec) {
        self.relayable = codec != Codec::Opus;
    }

    /// The flow asked for a transfer and the REFER went out.
    pub fn handle_refer_sent(&mut self, now: Instant, uri: String, context: String) {
        self.withdrawn = false;
        self.state = State::Referring {
            uri,
            context,
            deadline: Some(now + self.config.refer_timeout()),
        };
    }

    /// Our REFER's final response, then each NOTIFY's sipfrag status (`done` on the last).
    pub fn handle_refer_progress(&mut self, now: Instant, status: u16, done: bool) -> Step {
        let accepted = status < 300;
        match &self.state {
            // The REFER timed out and we called the agent ourselves, but the trunk took the
            // REFER after all: two calls would reach the queue. Ours is still ringing, so it
            // goes; the trunk's transfer carries on (its NOTIFY decides, as usual).
            State::Dialing { uri, context, .. } if accepted => {
                let (uri, context) = (uri.clone(), context.clone());
                self.withdrawn = true;
                if done {
                    self.finish(Outcome::Referred);
                    return Step::ReferredWithdrawAgent;
                }
                self.state = State::Referring {
                    uri,
                    context,
                    deadline: None,
                };
                return Step::WithdrawAgent;
            }
            State::Bridged if accepted => {
                // Too late to withdraw an agent who is talking; the trunk may still move the
                // caller. Nothing to undo a REFER with (RFC 3515): say so for the operator.
                tracing::warn!(
                    status,
                    "the trunk accepted the REFER after the call was bridged"
                );
                return Step::Wait;
            }
            _ => {}
        }
        let State::Referring { uri, context, .. } = &self.state else {
            // Late failures after a timeout or a bridge: the trunk's word no longer counts.
            return Step::Wait;
        };
        if !done {
            // Accepted or progressing: the trunk does REFER, its NOTIFY says how it ends.
            let (uri, context) = (uri.clone(), context.clone());
            self.state = State::Referring {
                uri,
                context,
                deadline: None,
            };
            return Step::Wait;
        }
        if (200..300).contains(&status) {
            self.finish(Outcome::Referred);
            return Step::Referred;
        }
        if self.config.bridge && self.config.bridge_on.contains(&status) && !self.withdrawn {
            return self.place_call(now);
        }
        self.finish(Outcome::Failed(status));
        Step::Failed
    }

    fn place_call(&mut self, now: Instant) -> Step {
        let State::Referring { uri, context, .. } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return Step::Wait;
        };
        if !self.relayable {
            tracing::warn!("cannot bridge an Opus caller: transfer failed");
            self.finish(Outcome::Failed(488));
            return Step::Failed;
        }
        self.state = State::Dialing {
            deadline: now + self.config.ring_timeout(),
            uri: uri.clone(),
            context: context.clone(),
        };
        Step::PlaceCall { uri, context }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.state = State::Done;
        self.outcome = Some(outcome);
    }

    pub fn handle_agent<L>(&mut self, event: &AgentEvent<L>) -> Step {
        match (&self.state, event) {
            (State::Dialing { .. }, AgentEvent::Answered(_)) => {
                self.state = State::Bridged;
                self.outcome = Some(Outcome::Bridged);
                Step::Bridged
            }
            (State::Dialing { .. }, AgentEvent::Failed(status)) => {
                self.finish(Outcome::Failed(*status));
                Step::Failed
            }
            (State::Bridged, AgentEvent::Hangup) => {
                self.state = State::Done;
                Step::AgentGone
            }
            // Answers after a ring timeout are hung up by the endpoint (our CANCEL won or a
            // BYE follows); anything else is stale.
            _ => Step::Wait,
        }
    }

    /// The agent answered but the media cannot be relayed (the caller switched to Opus while
    /// it rang): drop the agent, the caller hears the failure.
    pub fn handle_relay_failed(&mut self) -> Step {
        self.finish(Outcome::Failed(488));
        Step::CancelAgent
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Referring { deadline, .. } => *deadline,
            State::Dialing { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Early or stale timeouts are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) -> Step {
        match &self.state {
            State::Referring {
                deadline: Some(d), ..
            } if *d <= now => {
                if self.config.bridge {
                    self.place_call(now)
                } else {
                    self.finish(Outcome::Failed(408));
                    Step::Failed
                }
            }
            State::Dialing { deadline, .. } if *deadline <= now => {
                self.finish(Outcome::NoAnswer);
                Step::CancelAgent
            }
            _ => Step::Wait,
        }
    }

    pub fn is_bridged(&self) -> bool {
        self.state == State::Bridged
    }

    /// An agent leg is ringing or up: it must end with the caller's leg.
    pub fn has_agent(&self) -> bool {
        matches!(self.state, State::Dialing { .. } | State::Bridged)
    }

    /// The last transfer's outcome, if one was tried.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }
}

/// One side's RTP format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegMedia {
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
}

impl LegMedia {
    pub fn of(n: &Negotiated) -> LegMedia {
        LegMedia {
            codec: n.codec,
            payload_type: n.payload_type,
            telephone_event: n.telephone_event,
        }
    }
}

/// One direction of the bridge: packets from one leg re-sent toward the other with our own
/// SSRC, sequence numbers and timestamps (RFC 3550 §7: a translator that changes the payload
/// must not reuse the source's SSRC), G.711 law converted when the legs differ, RFC 4733 events
/// passed through under the other leg's payload type.
#[derive(Debug)]
pub struct Relay {
    from: LegMedia,
    to: LegMedia,
    ssrc: u32,
    seq: u16,
    /// The source SSRC whose timestamps are being mapped, and the mapping's bases.
    source: Option<u32>,
    in_base: u32,
    out_base: u32,
    last_out_ts: u32,
    packets: u64,
    /// Law conversion by lookup (built once per bridge: a table read per byte is ten times
    /// cheaper than decode + encode); `None` when both legs use the same law.
    convert: Option<[u8; 256]>,
}

/// Samples per 20 ms G.711 frame: the gap left between two sources' timestamp ranges.
const FRAME_TICKS: u32 = 160;

impl Relay {
    pub fn new(from: LegMedia, to: LegMedia, seed: u64) -> Result<Relay, BridgeError> {
        for leg in [from, to] {
            if leg.codec == Codec::Opus {
                return Err(BridgeError::UnsupportedCodec(leg.codec));
            }
        }
        // splitmix64: distinct SSRC and initial sequence per direction from one seed.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let convert = (from.codec != to.codec).then(|| {
            let mut t = [0u8; 256];
            for (i, o) in t.iter_mut().enumerate() {
                let b = i as u8;
                *o = match from.codec {
                    Codec::Pcmu => alaw_encode(ulaw_decode(b)),
                    _ => ulaw_encode(alaw_decode(b)),
                };
            }
            t
        });
        Ok(Relay {
            convert,
            from,
            to,
            ssrc: z as u32,
            seq: (z >> 32) as u16,
            source: None,
            in_base: 0,
            out_base: (z >> 48) as u32,
            last_out_ts: (z >> 48) as u32,
            packets: 0,
        })
    }

    /// Packets relayed so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Rewrite one datagram from the `from` leg into `out`; `None` when there is nothing to
    /// send (RTCP, malformed, a payload type we do not carry, `out` too small).
    pub fn relay(&mut self, datagram: &[u8], out: &mut [u8]) -> Option<usize> {
        if is_rtcp(datagram) {
            return None;
        }
        let p = parse_rtp(datagram).ok()?;
        let event = Some(p.payload_type) == self.from.telephone_event;
        let (pt, audio) = if p.payload_type == self.from.payload_type {
            (self.to.payload_type, true)
        } else if event {
            // The other leg cannot take events: it hears nothing rather than noise.
            (self.to.telephone_event?, false)
        } else {
            return None;
        };
        let len = RTP_HEADER_LEN + p.payload.len();
        if out.len() < len {
            return None;
        }
        let mut marker = p.marker;
        if self.source != Some(p.ssrc) {
            // A new source (or the first packet): continue our timeline one frame after the
            // last packet, as a new talkspurt.
            self.source = Some(p.ssrc);
            self.in_base = p.timestamp;
            self.out_base = if self.packets == 0 {
                self.out_base
            } else {
                self.last_out_ts.wrapping_add(FRAME_TICKS)
            };
            marker = true;
        }
        let ts = self
            .out_base
            .wrapping_add(p.timestamp.wrapping_sub(self.in_base));
        write_header(out, pt, self.seq, ts, self.ssrc, marker);
        let payload = &mut out[RTP_HEADER_LEN..len];
        if let (true, Some(table)) = (audio, self.convert.as_ref()) {
            for (o, &i) in payload.iter_mut().zip(p.payload) {
                *o = table[usize::from(i)];
            }
        } else {
            payload.copy_from_slice(p.payload);
        }
        self.seq = self.seq.wrapping_add(1);
        self.last_out_ts = ts;
        self.packets += 1;
        Some(len)
    }
}

/// The suite we offer the agent (every SDES phone has it).
const AGENT_SUITE: Suite = Suite::AesCm128HmacSha1_80;

/// Our SDP offer to the agent: the caller's G.711 law first (no conversion if the agent takes
/// it), the other law second, and telephone-event so that keys pass through. With SRTP
/// (`[transfer] srtp`), our own key for this leg (`key`, never the caller leg's) in an
/// a=crypto line: on RTP/SAVP when required, on RTP/AVP (best effort) when optional.
pub fn offer(
    addr: IpAddr,
    port: u16,
    caller_codec: Codec,
    session_id: u64,
    srtp: SrtpMode,
    key: &KeySalt,
) -> Result<SessionDescription, BridgeError> {
    let (first, second) = match caller_codec {
        Codec::Pcmu => (0, 8),
        Codec::Pcma => (8, 0),
        Codec::Opus => return Err(BridgeError::UnsupportedCodec(Codec::Opus)),
    };
    let ip = match addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let proto = match srtp {
        SrtpMode::Required => "RTP/SAVP",
        SrtpMode::Off | SrtpMode::Optional => "RTP/AVP",
    };
    let mut text = format!(
        "v=0\r\no=ivr {session_id} 1 IN {ip} {addr}\r\ns=ivr\r\nc=IN {ip} {addr}\r\nt=0 0\r\n\
         m=audio {port} {proto} {first} {second} 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
         a=ptime:20\r\na=sendrecv\r\n"
    );
    if srtp != SrtpMode::Off {
        let crypto = CryptoAttr {
            tag: 1,
            suite: AGENT_SUITE,
            key: key.clone(),
        };
        text.push_str(&format!("a=crypto:{}\r\n", crypto.value()));
    }
    // Our own text from numbers and an IP address: a parse failure would be a bug here, but it
    // is reported rather than unwrapped.
    SessionDescription::parse(text.as_bytes()).map_err(|_| BridgeError::BadAnswer)
}

/// What the agent's answer says: where to send, in which format, and (SRTP) the keys of the
/// agent leg: `key` is ours from the offer, the answer's a=crypto the agent's. Under
/// `srtp = "required"` an answer without a usable key (or with another suite than the one we
/// offered) is refused: the transfer fails rather than carry plain audio.
pub fn agent_media(
    answer: &SessionDescription,
    srtp: SrtpMode,
    key: &KeySalt,
) -> Result<(SocketAddr, LegMedia, Option<SrtpKeys>), BridgeError> {
    // Reading an answer is answering it as an offer: the same codec match and address rules.
    let local = LocalMedia {
        addr: IpAddr::from([127, 0, 0, 1]),
        port: 9,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        ptime_ms: 20,
        session_id: 0,
        session_version: 0,
        srtp,
        srtp_key: key.clone(),
    };
    let n = sdp::negotiate(answer, &local).map_err(|_| BridgeError::BadAnswer)?;
    let remote = n.remote_rtp.ok_or(BridgeError::BadAnswer)?;
    if n.srtp.as_ref().is_some_and(|k| k.suite != AGENT_SUITE) {
        return Err(BridgeError::BadAnswer);
    }
    Ok((remote, LegMedia::of(&n), n.srtp.clone()))
}

/// The call record's route and reason for `intent`: what the policy decides at `now`.
pub fn route_of(
    router: &crate::routing::Router,
    intent: &str,
    lang: crate::types::Lang,
    tty: bool,
    now: jiff::Timestamp,
) -> (Option<String>, Option<String>) {
    let facts = crate::routing::Facts::new(lang).tty(tty);
    match router.decide(intent, &facts, now) {
        Ok(d) => (Some(d.route.name().to_string()), Some(d.reason)),
        Err(_) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::packet::write_rtp;
    use crate::rtp::srtp::KeySalt;

    const PCMU: LegMedia = LegMedia {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
    };
    const PCMA: LegMedia = LegMedia {
        codec: Codec::Pcma,
        payload_type: 8,
        telephone_event: Some(96),
    };

    fn transfer() -> (Transfer, Instant) {
        let now = Instant::now();
        let mut t = Transfer::new(BridgeConfig::default(), Codec::Pcmu);
        t.handle_refer_sent(now, "sip:tier1@10.0.0.9".into(), "intent=x".into());
        (t, now)
    }

    fn answered() -> AgentEvent {
        AgentEvent::Answered(())
    }

    #[test]
    fn refusals_that_mean_no_refer_bridge_and_others_fail() {
        for status in [403, 405, 408, 420, 501, 603] {
            let (mut t, now) = transfer();
            assert_eq!(
                t.handle_refer_progress(now, status, true),
                Step::PlaceCall {
                    uri: "sip:tier1@10.0.0.9".into(),
                    context: "intent=x".into()
                },
                "{status}"
            );
            assert!(t.has_agent());
        }
        // The trunk tried and the queue was busy: bridging would reach the same busy queue.
        let (mut t, now) = transfer();
        assert_eq!(t.handle_refer_progress(now, 202, false), Step::Wait);
        assert_eq!(t.handle_refer_progress(now, 486, true), Step::Failed);
        assert_eq!(t.outcome(), Some(Outcome::Failed(486)));
        let (mut t, now) = transfer();
        assert_eq!(t.handle_refer_progress(now, 200, true), Step::Referred);
        assert_eq!(
            t.outcome().map(Outcome::as_record).as_deref(),
            Some("referred")
        );
        // Bridging switched off: the refusal is a failure.
        let mut t = Transfer::new(
            BridgeConfig {
                bridge: false,
                ..BridgeConfig::default()
            },
            Codec::Pcmu,
        );
        t.handle_refer_sent(now, "sip:q@10.0.0.1".into(), String::new());
        assert_eq!(t.handle_refer_progress(now, 405, true), Step::Failed);
        // An Opus caller cannot be relayed.
        let mut t = Transfer::new(BridgeConfig::default(), Codec::Opus);
        t.handle_refer_sent(now, "sip:q@10.0.0.1".into(), String::new());
        assert_eq!(t.handle_refer_progress(now, 405, true), Step::Failed);
        assert_eq!(t.outcome(), Some(Outcome::Failed(488)));
    }

    #[test]
    fn a_late_acceptance_withdraws_our_ringing_call_and_never_calls_twice() {
        // REFER timed out, our call rings; then the trunk's 202 and NOTIFYs arrive.
        let (mut t, _) = transfer();
        let at = t.poll_timeout().unwrap();
        assert!(matches!(t.handle_timeout(at), Step::PlaceCall { .. }));
        assert_eq!(t.handle_refer_progress(at, 202, false), Step::WithdrawAgent);
        assert!(!t.has_agent());
        assert_eq!(t.poll_timeout(), None, "the trunk's NOTIFY decides now");
        // The trunk then fails with a status that would normally mean "bridge": no second call.
        assert_eq!(t.handle_refer_progress(at, 405, true), Step::Failed);
        assert_eq!(t.outcome(), Some(Outcome::Failed(405)));

        // A final 200 NOTIFY straight away while ours rings: referred, ours withdrawn.
        let (mut t, now) = transfer();
        let at = t.poll_timeout().unwrap();
        assert!(matches!(t.handle_timeout(at), Step::PlaceCall { .. }));
        assert_eq!(
            t.handle_refer_progress(now, 200, true),
            Step::ReferredWithdrawAgent
        );
        assert_eq!(t.outcome(), Some(Outcome::Referred));
        // Once bridged, a late acceptance changes nothing here (it is logged).
        let (mut t, _) = transfer();
        let at = t.poll_timeout().unwrap();
        assert!(matches!(t.handle_timeout(at), Step::PlaceCall { .. }));
        assert_eq!(t.handle_agent(&answered()), Step::Bridged);
        assert_eq!(t.handle_refer_progress(at, 202, false), Step::Wait);
        assert!(t.is_bridged());
    }

    #[test]
    fn silence_after_refer_bridges_but_a_progressing_refer_waits() {
        let (mut t, now) = transfer();
        let at = t.poll_timeout().unwrap();
        assert_eq!(at, now + Duration::from_secs(8));
        assert_eq!(t.handle_timeout(at - Duration::from_millis(1)), Step::Wait);
        assert!(matches!(t.handle_timeout(at), Step::PlaceCall { .. }));
        // The REFER's late 408 after we bridged changes nothing.
        assert_eq!(t.handle_refer_progress(at, 408, true), Step::Wait);
        assert!(t.has_agent());

        let (mut t, now) = transfer();
        assert_eq!(t.handle_refer_progress(now, 202, false), Step::Wait);
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(t.handle_timeout(now + Duration::from_secs(60)), Step::Wait);
    }

    #[test]
    fn the_agent_leg_rings_out_answers_or_hangs_up() {
        // Ring timeout: CANCEL, the caller is told; a late failure or answer is stale.
        let (mut t, now) = transfer();
        t.handle_refer_progress(now, 405, true);
        let ring = t.poll_timeout().unwrap();
        assert_eq!(ring, now + Duration::from_secs(30));
        assert_eq!(t.handle_timeout(ring), Step::CancelAgent);
        assert_eq!(t.outcome(), Some(Outcome::NoAnswer));
        assert_eq!(t.handle_agent(&AgentEvent::<()>::Failed(487)), Step::Wait);
        assert!(!t.has_agent());
        assert_eq!(t.poll_timeout(), None);

        // Busy.
        let (mut t, now) = transfer();
        t.handle_refer_progress(now, 501, true);
        assert_eq!(t.handle_agent(&AgentEvent::<()>::Failed(486)), Step::Failed);
        assert_eq!(
            t.outcome().map(Outcome::as_record).as_deref(),
            Some("failed:486")
        );

        // Answered, then the agent hangs up: the caller's leg ends too.
        let (mut t, now) = transfer();
        t.handle_refer_progress(now, 603, true);
        assert_eq!(t.handle_agent(&answered()), Step::Bridged);
        assert!(t.is_bridged() && t.has_agent());
        assert_eq!(t.poll_timeout(), None, "no ring timer once answered");
        assert_eq!(t.handle_agent(&AgentEvent::<()>::Hangup), Step::AgentGone);
        assert_eq!(t.outcome(), Some(Outcome::Bridged));
        // Answered but not relayable: the agent is dropped and a later hang-up is stale.
        let (mut t, now) = transfer();
        t.handle_refer_progress(now, 405, true);
        t.handle_agent(&answered());
        assert_eq!(t.handle_relay_failed(), Step::CancelAgent);
        assert_eq!(t.handle_agent(&AgentEvent::<()>::Hangup), Step::Wait);
        assert_eq!(t.outcome(), Some(Outcome::Failed(488)));
        // Agent news without a transfer in progress is ignored.
        let mut idle = Transfer::new(BridgeConfig::default(), Codec::Pcmu);
        assert_eq!(idle.handle_agent(&AgentEvent::<()>::Hangup), Step::Wait);
        assert_eq!(idle.handle_refer_progress(now, 405, true), Step::Wait);
    }

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 12 + payload.len()];
        let n = write_rtp(&mut b, pt, seq, ts, ssrc, marker, payload).unwrap();
        b.truncate(n);
        b
    }

    #[test]
    fn relay_converts_laws_and_rewrites_the_header() {
        let mut r = Relay::new(PCMU, PCMA, 7).unwrap();
        let mut out = [0u8; 1500];
        let samples: Vec<i16> = (0..160).map(|i| (i * 200 - 16000) as i16).collect();
        let ulaw: Vec<u8> = samples.iter().map(|&s| ulaw_encode(s)).collect();
        let n = r
            .relay(&packet(0, 500, 80_000, 0xdead, false, &ulaw), &mut out)
            .unwrap();
        let p = parse_rtp(&out[..n]).unwrap();
        assert_eq!(p.payload_type, 8);
        assert_ne!(p.ssrc, 0xdead, "our SSRC toward the other leg");
        assert!(p.marker, "a new source starts a talkspurt");
        for (&a, &s) in p.payload.iter().zip(&samples) {
            let back = i32::from(alaw_decode(a));
            // Two G.711 quantizations: within a few percent plus the small-signal step.
            assert!((back - i32::from(s)).abs() <= 40 + i32::from(s).abs() / 10);
        }
        let (seq0, ts0, ssrc) = (p.seq, p.timestamp, p.ssrc);
        // The next packet: sequence +1, timestamp advances as the source's did.
        let n = r
            .relay(&packet(0, 501, 80_160, 0xdead, false, &ulaw), &mut out)
            .unwrap();
        let p = parse_rtp(&out[..n]).unwrap();
        assert_eq!(
            (p.seq, p.timestamp, p.ssrc, p.marker),
            (seq0.wrapping_add(1), ts0.wrapping_add(160), ssrc, false)
        );
        // A new source (e.g. the caller's gateway restarted) keeps our timeline continuous.
        let n = r
            .relay(&packet(0, 9, 1, 0xbeef, false, &ulaw), &mut out)
            .unwrap();
        let p = parse_rtp(&out[..n]).unwrap();
        assert_eq!(p.timestamp, ts0.wrapping_add(320));
        assert_eq!(p.seq, seq0.wrapping_add(2));
        assert!(p.marker);
        assert_eq!(r.packets(), 3);
    }

    #[test]
    fn relay_passes_events_through_and_drops_the_rest() {
        let mut r = Relay::new(PCMU, PCMA, 1).unwrap();
        let mut out = [0u8; 1500];
        // RFC 4733 key 5, end bit: the payload is untouched, the PT becomes the agent's.
        let ev = [5u8, 0x8a, 0x03, 0x20];
        let n = r
            .relay(&packet(101, 1, 160, 1, true, &ev), &mut out)
            .unwrap();
        let p = parse_rtp(&out[..n]).unwrap();
        assert_eq!((p.payload_type, p.payload), (96, &ev[..]));
        // Unknown payload types, RTCP, garbage and a too-small buffer: nothing sent.
        assert_eq!(
            r.relay(&packet(18, 2, 320, 1, false, &[1; 20]), &mut out),
            None
        );
        assert_eq!(r.relay(&[0x80, 200, 0, 1, 0, 0, 0, 0], &mut out), None);
        assert_eq!(r.relay(&[0xff; 3], &mut out), None);
        assert_eq!(
            r.relay(&packet(0, 3, 480, 1, false, &[0xff; 160]), &mut [0u8; 100]),
            None
        );
        // Same law both sides: bytes pass unchanged.
        let mut same = Relay::new(PCMA, PCMA, 2).unwrap();
        let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let n = same
            .relay(&packet(8, 1, 0, 3, false, &payload), &mut out)
            .unwrap();
        assert_eq!(parse_rtp(&out[..n]).unwrap().payload, &payload[..]);
        // A leg without telephone-event gets no events.
        let no_events = LegMedia {
            telephone_event: None,
            ..PCMA
        };
        let mut r = Relay::new(PCMU, no_events, 3).unwrap();
        assert_eq!(r.relay(&packet(101, 1, 0, 1, true, &ev), &mut out), None);
        assert!(
            Relay::new(
                LegMedia {
                    codec: Codec::Opus,
                    payload_type: 111,
                    telephone_event: None
                },
                PCMA,
                0
            )
            .is_err()
        );
    }

    #[test]
    fn relay_never_panics_on_random_datagrams() {
        let mut r = Relay::new(PCMU, PCMA, 9).unwrap();
        let mut out = [0u8; 1500];
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 300) as usize;
            let mut d: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
            if let Some(b) = d.get_mut(0) {
                *b = 0x80 | (*b & 0x3f);
            }
            if let Some(b) = d.get_mut(1) {
                *b = [0u8, 8, 101, 0x80][(x % 4) as usize];
            }
            let _ = r.relay(&d, &mut out);
        }
    }

    #[test]
    fn offer_and_answer() {
        let k = KeySalt([5; 30]);
        let o = offer(
            IpAddr::from([10, 0, 0, 5]),
            20_000,
            Codec::Pcma,
            42,
            SrtpMode::Off,
            &k,
        )
        .unwrap();
        let text = o.to_string();
        assert!(text.contains("m=audio 20000 RTP/AVP 8 0 101"), "{text}");
        assert!(text.contains("c=IN IP4 10.0.0.5"), "{text}");
        assert!(!text.contains("crypto"), "{text}");
        assert!(
            offer(
                IpAddr::from([10, 0, 0, 5]),
                1,
                Codec::Opus,
                1,
                SrtpMode::Off,
                &k
            )
            .is_err()
        );

        let answer = SessionDescription::parse(
            b"v=0\r\no=a 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n\
              m=audio 16000 RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\n",
        )
        .unwrap();
        let (remote, media, srtp) = agent_media(&answer, SrtpMode::Off, &k).unwrap();
        assert!(srtp.is_none());
        assert_eq!(remote, "192.0.2.7:16000".parse().unwrap());
        assert_eq!(media, PCMA);
        let held = SessionDescription::parse(
            b"v=0\r\no=a 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\n",
        )
        .unwrap();
        assert_eq!(
            agent_media(&held, SrtpMode::Off, &k),
            Err(BridgeError::BadAnswer)
        );
        let g729 = SessionDescription::parse(
            b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\n",
        )
        .unwrap();
        assert_eq!(
            agent_media(&g729, SrtpMode::Off, &k),
            Err(BridgeError::BadAnswer)
        );
    }

    const AGENT_SRTP_ANSWER: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\n\
        t=0 0\r\nm=audio 16000 RTP/SAVP 8 96\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:96 telephone-event/8000\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";

    /// `[transfer] srtp`: "required" offers RTP/SAVP with our leg's key, "optional" RTP/AVP
    /// with the key (best effort); the agent's answered key keys what it sends us. Under
    /// "required" a plain answer, or one with a suite we did not offer, fails the transfer;
    /// under "optional" a plain answer is a plain leg.
    #[test]
    fn agent_leg_srtp_offer_and_answer() {
        let k = KeySalt([5; 30]);
        let ip = IpAddr::from([10, 0, 0, 5]);
        let req = offer(ip, 20_000, Codec::Pcmu, 1, SrtpMode::Required, &k)
            .unwrap()
            .to_string();
        assert!(req.contains("m=audio 20000 RTP/SAVP 0 8 101"), "{req}");
        let line = format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            k.to_base64()
        );
        assert!(req.contains(&line), "{req}");
        let opt = offer(ip, 20_000, Codec::Pcmu, 1, SrtpMode::Optional, &k)
            .unwrap()
            .to_string();
        assert!(
            opt.contains("m=audio 20000 RTP/AVP 0 8 101") && opt.contains(&line),
            "{opt}"
        );

        let answer = SessionDescription::parse(AGENT_SRTP_ANSWER.as_bytes()).unwrap();
        for mode in [SrtpMode::Required, SrtpMode::Optional] {
            let (_, media, keys) = agent_media(&answer, mode, &k).unwrap();
            assert_eq!(media, PCMA);
            let keys = keys.expect("an SRTP agent leg");
            assert_eq!(keys.suite, Suite::AesCm128HmacSha1_80);
            assert_eq!(keys.local, k);
            assert_eq!(
                keys.remote,
                KeySalt::from_base64("QS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR").unwrap()
            );
        }
        let plain = SessionDescription::parse(
            AGENT_SRTP_ANSWER
                .replace("RTP/SAVP", "RTP/AVP")
                .split("a=crypto")
                .next()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            agent_media(&plain, SrtpMode::Required, &k),
            Err(BridgeError::BadAnswer)
        );
        assert!(
            agent_media(&plain, SrtpMode::Optional, &k)
                .unwrap()
                .2
                .is_none()
        );
        let other_suite =
            SessionDescription::parse(AGENT_SRTP_ANSWER.replace("_80", "_32").as_bytes()).unwrap();
        assert_eq!(
            agent_media(&other_suite, SrtpMode::Required, &k),
            Err(BridgeError::BadAnswer)
        );
    }

    #[test]
    fn destination_is_the_proxy_or_the_uri_address() {
        let c = BridgeConfig::default();
        assert_eq!(
            c.destination("sip:tier1@127.0.0.1:5999").unwrap(),
            "127.0.0.1:5999".parse().unwrap()
        );
        assert_eq!(
            c.destination("<sip:q@10.1.2.3;transport=udp>").unwrap(),
            "10.1.2.3:5060".parse().unwrap()
        );
        assert_eq!(
            c.destination("sip:q@[::1]:5070").unwrap(),
            "[::1]:5070".parse().unwrap()
        );
        assert_eq!(
            c.destination("sip:tier1@agents.example.com"),
            Err(BridgeError::NoDestination)
        );
        assert_eq!(
            c.destination("tel:+18005551234"),
            Err(BridgeError::NoDestination)
        );
        let p = BridgeConfig {
            proxy: "192.0.2.1:5070".into(),
            ..c.clone()
        };
        assert_eq!(
            p.destination("sip:tier1@agents.example.com").unwrap(),
            "192.0.2.1:5070".parse().unwrap()
        );
        let bad = BridgeConfig {
            proxy: "agents:5070".into(),
            ..c
        };
        assert!(matches!(
            bad.destination("sip:q@1.2.3.4"),
            Err(BridgeError::BadProxy(_))
        ));
    }

    #[test]
    fn config_section_parses_with_documented_defaults() {
        let c: BridgeConfig =
            toml::from_str("proxy = \"127.0.0.1:5070\"\nring_timeout_s = 20\n").unwrap();
        assert_eq!(c.proxy, "127.0.0.1:5070");
        assert_eq!(c.ring_timeout(), Duration::from_secs(20));
        assert_eq!(c.refer_timeout(), Duration::from_secs(8));
        assert!(c.bridge && c.bridge_on.contains(&405));
        assert!(toml::from_str::<BridgeConfig>("ring_timeout = 3\n").is_err());
    }
}
