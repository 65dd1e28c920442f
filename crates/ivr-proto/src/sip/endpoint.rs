//! The endpoint: routes every input to a transaction, a dialog or a stateless reply, the way
//! quinn-proto's `Endpoint::handle` routes datagrams to connections. It answers calls (UAS,
//! here) and places them, cancels them and transfers calls by REFER (UAC, in `endpoint/uac.rs`).
//!
//! Routing order for a request: framing/syntax (400/413/505, stateless) → retransmission of a
//! known server transaction (re-send the last response) → ACK/CANCEL matching → method (405/501)
//! → header inspection (416/420/406/415) → dialog or new call. Responses only ever drive our own
//! client transactions, found by Via branch and CSeq method (RFC 3261 §17.1.3): INVITE ones in
//! `invite_client_txs`, BYE/REFER/CANCEL in `client_txs`; anything else is a stray and dropped.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dialog::{Dialog, DialogId};
use super::message::{
    self, Header, Limits, Message, Method, NameAddr, StartLine, Via, reason_phrase,
};
use super::sdp::SessionDescription;
use super::transaction::{
    InviteServerTx, NonInviteClientTx, NonInviteServerTx, Timing, TxAction, TxKey,
};

mod uac;
pub use uac::OutgoingCall;
use uac::{InviteClientEntry, Refer, Uac};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS over TCP (RFC 3261 §26.2, RFC 5630): reliable and connection-bound as TCP.
    Tls,
}

impl Transport {
    /// Reliable transports: no retransmissions, timers G/H/I/J/K per RFC 3261 §17.
    pub fn reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
    /// Connection-oriented: a lost connection ends the calls and transactions bound to it.
    pub fn connected(self) -> bool {
        self.reliable()
    }
    fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// Bytes to send; `destination` is always the address a request came from (or the dialog's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub transport: Transport,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// Endpoint-assigned handle of one call (one INVITE dialog). Copy, cheap, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

/// Tuned for a UAS behind a trunk on a LAN/WAN: RFC 3261 default timers, 64 KiB messages.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Advertised in Contact and in the Via of our requests.
    pub local_addr: SocketAddr,
    /// The TLS listener's advertised address (`[sip] tls_listen`, with `public_ip`), for the
    /// Contact and Via of dialogs over TLS; None when TLS is off.
    pub tls_addr: Option<SocketAddr>,
    pub user_agent: String,
    /// Bigger messages get 413 (or are dropped if no Via can be read).
    pub max_message_bytes: usize,
    /// More header lines get 400.
    pub max_headers: usize,
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            local_addr: SocketAddr::from(([127, 0, 0, 1], 5060)),
            tls_addr: None,
            user_agent: "ivr/0.1".into(),
            max_message_bytes: 65_535,
            max_headers: 128,
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// A new call as the app sees it. `Debug` redacts the caller's identity.
#[derive(Clone, PartialEq)]
pub struct IncomingCall {
    pub call_id: String,
    /// Caller's user part: PERSONAL DATA (caller number), raw.
    pub from_user: String,
    pub from_display: Option<String>,
    pub to_user: String,
    pub request_user: String,
    pub remote: SocketAddr,
    pub transport: Transport,
    pub offer: Option<SessionDescription>,
    /// All headers as received (name as sent, value unfolded).
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for IncomingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingCall")
            .field("call_id", &self.call_id)
            .field("from_user", &crate::pii::Pii::new(self.from_user.as_str()))
            .field(
                "from_display",
                &self
                    .from_display
                    .as_ref()
                    .map(|d| crate::pii::Pii::new(d.as_str())),
            )
            .field("to_user", &self.to_user)
            .field("request_user", &self.request_user)
            .field("remote", &self.remote)
            .field("transport", &self.transport)
            .field("offer", &self.offer.is_some())
            .field("headers", &self.headers.len())
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminateReason {
    LocalBye,
    AckTimeout,
    TransportError,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new INVITE (not a re-INVITE). 100 Trying has already been sent.
    Incoming { call: CallKey, info: IncomingCall },
    /// re-INVITE within an established dialog; answer with `answer()` or `reject()`.
    /// `None` = offerless re-INVITE: answer with our SDP as the offer; the peer's answer comes in
    /// the ACK and is reported as another `Reoffer { offer: Some(..) }`.
    Reoffer {
        call: CallKey,
        offer: Option<SessionDescription>,
    },
    /// The ACK for our 2xx arrived: the call is established.
    Confirmed { call: CallKey },
    /// CANCEL arrived before we answered: 200 (CANCEL) and 487 (INVITE) were sent.
    Cancelled { call: CallKey },
    /// The caller hung up (BYE); the endpoint already answered 200.
    RemoteHangup { call: CallKey },
    /// The call is gone for an end the app did not already hear about.
    Terminated {
        call: CallKey,
        reason: TerminateReason,
    },
    /// A provisional response (1xx) to our INVITE.
    Progress { call: CallKey, status: u16 },
    /// Our INVITE got its first 2xx; the endpoint already sent the ACK. The call is established.
    Answered {
        call: CallKey,
        answer: Option<SessionDescription>,
    },
    /// Our INVITE failed: a non-2xx final (the transaction ACKed it) or 408 on timeout. The
    /// call is gone.
    Failed { call: CallKey, status: u16 },
    /// Progress of our REFER: its final response (202 → `status: 202, done: false`; a refusal
    /// → `done: true`), then each NOTIFY's sipfrag status; `done` once that status is final or
    /// the subscription ended.
    TransferProgress {
        call: CallKey,
        status: u16,
        done: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    UnknownCall,
    InvalidState,
    /// The target is not a sip:/sips:/tel: URI, or a header would break the message.
    InvalidTarget,
    /// `MAX_CALLS` reached.
    TooManyCalls,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallError::UnknownCall => "unknown call",
            CallError::InvalidState => "call is not in a state that allows this",
            CallError::InvalidTarget => "invalid target URI or header",
            CallError::TooManyCalls => "too many calls",
        })
    }
}

impl std::error::Error for CallError {}

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY";
/// Calls beyond this get 503: a bound on memory under an INVITE flood.
pub const MAX_CALLS: usize = 10_000;
/// Server transactions beyond this are answered statelessly (retransmissions then re-run the
/// request logic, which is idempotent for the methods we serve statelessly).
pub const MAX_TRANSACTIONS: usize = 200_000;
/// Option tags we implement; any other Require gets 420.
const SUPPORTED: &[&str] = &[];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallState {
    /// INVITE received, no final response yet.
    Early,
    /// 2xx sent, waiting for ACK.
    WaitAck,
    Confirmed,
    /// Our BYE is outstanding.
    Terminating,
}

/// The INVITE (initial or re-) waiting for the app's final answer.
struct Pending {
    key: TxKey,
    request: Message,
    initial: bool,
}

/// 2xx retransmission by the UAS core (RFC 3261 §13.3.1.4).
struct OkRetransmit {
    bytes: Vec<u8>,
    cseq: u32,
    /// None over TCP: only the give-up deadline applies.
    next: Option<Instant>,
    interval: Duration,
    deadline: Instant,
}

struct Call {
    dialog: Dialog,
    remote: SocketAddr,
    transport: Transport,
    /// The dialog was opened by a request to a `sips:` URI: our Contact is SIPS too.
    sips: bool,
    state: CallState,
    pending: Option<Pending>,
    ok: Option<OkRetransmit>,
    hangup_after_ack: bool,
    offerless: bool,
    /// Client side of an outgoing call; None for calls we answered.
    uac: Option<Uac>,
    /// Our REFER and its implicit subscription (RFC 3515).
    refer: Option<Refer>,
}

struct InviteEntry {
    tx: InviteServerTx,
    remote: SocketAddr,
    transport: Transport,
    call: Option<CallKey>,
}

struct ServerEntry {
    tx: NonInviteServerTx,
    remote: SocketAddr,
    transport: Transport,
}

struct ClientEntry {
    tx: NonInviteClientTx,
    method: Method,
    remote: SocketAddr,
    transport: Transport,
    /// None once the call has been reported gone (BYE after ACK timeout).
    call: Option<CallKey>,
}

pub struct Endpoint {
    config: EndpointConfig,
    timing: Timing,
    limits: Limits,
    rng: u64,
    next_call: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// While set (loading, draining), OPTIONS and new INVITEs get 503 with this Retry-After
    /// (seconds), so a dispatcher's probe sees the node out of service instead of silence.
    unavailable: Option<u32>,
    invite_txs: HashMap<TxKey, InviteEntry>,
    server_txs: HashMap<TxKey, ServerEntry>,
    client_txs: HashMap<String, ClientEntry>,
    /// Our INVITE transactions by Via branch.
    invite_client_txs: HashMap<String, InviteClientEntry>,
    calls: HashMap<CallKey, Call>,
    dialogs: HashMap<DialogId, CallKey>,
}

/// Appends `received`/`rport` to the top Via value (RFC 3261 §18.2.1, RFC 3581 §4).
fn stamp_top_via(value: &str, from: SocketAddr) -> String {
    let parts = message::split_list(value);
    let Some(first) = parts.first() else {
        return value.to_string();
    };
    let Ok(via) = Via::parse(first) else {
        return value.to_string();
    };
    let mut top = first.to_string();
    let host = via
        .sent_by
        .rsplit_once(':')
        .map_or(via.sent_by.as_str(), |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                via.sent_by.as_str()
            }
        });
    let wants_rport = via.params.iter().any(|(n, v)| n == "rport" && v.is_none());
    if wants_rport {
        // Rewrite the valueless ";rport" into ";rport=PORT".
        if let Some(pos) = top.to_ascii_lowercase().find(";rport") {
            let end = pos + ";rport".len();
            top.insert_str(end, &format!("={}", from.port()));
        }
    }
    if (wants_rport || host.trim_matches(['[', ']']) != from.ip().to_string())
        && via.param("received").is_none()
    {
        top.push_str(&format!(";received={}", from.ip()));
    }
    let mut out = vec![top];
    out.extend(parts[1..].iter().map(|s| s.to_string()));
    out.join(", ")
}

fn tag_of(value: &str) -> Option<String> {
    NameAddr::parse(value)
        .ok()?
        .param("tag")
        .map(str::to_string)
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Self {
        // Tags and branches must be unguessable across restarts; RandomState is seeded by the OS
        // once per process without any IO of ours.
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        let seed = h.finish() | 1;
        Endpoint {
            timing: Timing {
                t1: config.t1,
                t2: config.t2,
                t4: config.t4,
            },
            limits: Limits {
                max_message_bytes: config.max_message_bytes,
                max_headers: config.max_headers,
            },
            config,
            rng: seed,
            next_call: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            invite_txs: HashMap::new(),
            server_txs: HashMap::new(),
            client_txs: HashMap::new(),
            invite_client_txs: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            unavailable: None,
        }
    }

    /// Take new calls (`None`), or refuse them and OPTIONS probes with 503 and `Retry-After:
    /// secs` (loading, draining). Dialogs already up are not affected.
    pub fn set_unavailable(&mut self, retry_after_secs: Option<u32>) {
        self.unavailable = retry_after_secs;
    }

    /// Whether new calls and probes get 503 now.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable.is_some()
    }

    /// Dialogs/INVITE calls currently known.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Whether `call` is still known (not yet ended).
    pub fn contains(&self, call: CallKey) -> bool {
        self.calls.contains_key(&call)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Earliest pending timer over all transactions and calls.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let inv = self.invite_txs.values().filter_map(|e| e.tx.poll_timeout());
        let srv = self.server_txs.values().filter_map(|e| e.tx.poll_timeout());
        let cli = self.client_txs.values().filter_map(|e| e.tx.poll_timeout());
        let uac = self
            .invite_client_txs
            .values()
            .filter_map(|e| e.tx.poll_timeout());
        let ok = self
            .calls
            .values()
            .filter_map(|c| c.ok.as_ref())
            .map(|o| o.next.map_or(o.deadline, |n| n.min(o.deadline)));
        inv.chain(srv).chain(cli).chain(uac).chain(ok).min()
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: cheap, and good enough for tags/branches seeded from RandomState.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn new_tag(&mut self) -> String {
        format!("{:016x}", self.random())
    }

    /// Our address as `transport` reaches it (the TLS port differs from the UDP/TCP one).
    fn local_for(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Tls => self.config.tls_addr.unwrap_or(self.config.local_addr),
            Transport::Udp | Transport::Tcp => self.config.local_addr,
        }
    }

    /// Contact for a dialog over `transport`. Over TLS: a `sips:` URI when the dialog's request
    /// was addressed to one (RFC 3261 §8.1.1.8, §12.1.1: the Contact MUST then be SIPS), else
    /// `sip:...;transport=tls`, which keeps the peer's in-dialog requests on TLS without
    /// promising TLS on every hop (RFC 5630 §3.1.3 leaves a `sip:` dialog over TLS possible).
    fn contact(&self, transport: Transport, sips: bool) -> String {
        let local = self.local_for(transport);
        match transport {
            Transport::Udp => format!("<sip:{local}>"),
            Transport::Tcp => format!("<sip:{local};transport=tcp>"),
            Transport::Tls if sips => format!("<sips:{local}>"),
            Transport::Tls => format!("<sip:{local};transport=tls>"),
        }
    }

    fn send(&mut self, transport: Transport, destination: SocketAddr, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            transport,
            destination,
            payload,
        });
    }

    /// Builds a response to a request whose headers are `req` (RFC 3261 §8.2.6). Every response
    /// but 100 carries a To tag: `to_tag`, or a fresh one if the request had none.
    fn response(
        &mut self,
        req: &[Header],
        from: SocketAddr,
        code: u16,
        to_tag: Option<&str>,
        extra: &[Header],
        body: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut headers = Vec::with_capacity(req.len() + extra.len() + 4);
        let mut first_via = true;
        for h in req.iter().filter(|h| h.is("via")) {
            let value = if first_via {
                stamp_top_via(&h.value, from)
            } else {
                h.value.clone()
            };
            first_via = false;
            headers.push(Header::new("Via", &value));
        }
        for (long, name) in [
            ("from", "From"),
            ("to", "To"),
            ("call-id", "Call-ID"),
            ("cseq", "CSeq"),
        ] {
            let Some(h) = req.iter().find(|h| h.is(long)) else {
                continue;
            };
            let mut value = h.value.clone();
            if long == "to" && code > 100 && tag_of(&value).is_none() {
                let tag = match to_tag {
                    Some(t) => t.to_string(),
                    None => self.new_tag(),
                };
                value.push_str(";tag=");
                value.push_str(&tag);
            }
            headers.push(Header::new(name, &value));
        }
        // Dialog-creating responses echo Record-Route so the caller's route set keeps the
        // proxies (Kamailio) in the path of its ACK and BYE (RFC 3261 §12.1.1).
        let invite = req
            .iter()
            .any(|h| h.is("cseq") && h.value.trim_end().ends_with("INVITE"));
        if invite && (101..300).contains(&code) {
            for h in req.iter().filter(|h| h.is("record-route")) {
                headers.push(Header::new("Record-Route", &h.value));
            }
        }
        // 100 Trying echoes Timestamp so the caller can measure round-trip time (§8.2.6.1).
        if code == 100
            && let Some(h) = req.iter().find(|h| h.is("timestamp"))
        {
            headers.push(Header::new("Timestamp", &h.value));
        }
        headers.push(Header::new("Server", &self.config.user_agent));
        headers.extend(extra.iter().cloned());
        let body = match body {
            Some(b) => {
                headers.push(Header::new("Content-Type", "application/sdp"));
                b.to_vec()
            }
            None => Vec::new(),
        };
        let start = StartLine::Response {
            code,
            reason: reason_phrase(code).to_string(),
        };
        Message {
            start,
            headers,
            body,
        }
        .to_bytes()
    }

    /// Answers a non-INVITE request and keeps the answer for retransmissions (Timer J).
    fn reply(
        &mut self,
        now: Instant,
        req: &Message,
        from: SocketAddr,
        transport: Transport,
        code: u16,
        extra: &[Header],
    ) {
        let bytes = self.response(&req.headers, from, code, None, extra, None);
        if let Some(key) = TxKey::server(req)
            && self.server_txs.len() < MAX_TRANSACTIONS
        {
            let tx = NonInviteServerTx::completed(
                now,
                &self.timing,
                transport.reliable(),
                bytes.clone(),
            );
            self.server_txs.insert(
                key,
                ServerEntry {
                    tx,
                    remote: from,
                    transport,
                },
            );
        }
        self.send(transport, from, bytes);
    }

    /// Final non-2xx to an INVITE that never became a call (415, 420, ...): stateful so that
    /// the ACK is absorbed and the response retransmitted per Timer G.
    fn reject_invite(
        &mut self,
        now: Instant,
        req: &Message,
        from: SocketAddr,
        transport: Transport,
        code: u16,
        extra: &[Header],
    ) {
        let bytes = self.response(&req.headers, from, code, None, extra, None);
        if let Some(key) = TxKey::server(req)
            && self.invite_txs.len() < MAX_TRANSACTIONS
        {
            let mut tx = InviteServerTx::new(transport.reliable(), Vec::new());
            tx.send_final(now, &self.timing, code, bytes.clone());
            self.invite_txs.insert(
                key,
                InviteEntry {
                    tx,
                    remote: from,
                    transport,
                    call: None,
                },
            );
        }
        self.send(transport, from, bytes);
    }

    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        data: &[u8],
    ) {
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return; // keep-alive (RFC 5626 CRLF) or empty datagram
        }
        let msg = match message::parse(data, &self.limits, transport.reliable()) {
            Ok(m) => m,
            Err(violation) => {
                // Requests get an error if we can tell where it goes; responses are dropped.
                if let Some(headers) = message::salvage(data) {
                    tracing::debug!(?violation, "unparseable request");
                    let extra = violation.extra_headers();
                    let bytes =
                        self.response(&headers, from, violation.status(), None, &extra, None);
                    self.send(transport, from, bytes);
                }
                return;
            }
        };
        match msg.start {
            StartLine::Response { code, .. } => self.handle_response(now, code, &msg),
            StartLine::Request { .. } => self.handle_request(now, from, transport, msg),
        }
    }

    /// Answer a request with `code` and keep nothing: no transaction, no dialog, no event (a
    /// policy refusal, such as 403 to a source that is not trusted). Responses, ACKs and
    /// messages with no readable Via get nothing.
    pub fn refuse(&mut self, from: SocketAddr, transport: Transport, data: &[u8], code: u16) {
        let start = data
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(data.len());
        if data[start..].starts_with(b"ACK ") {
            return;
        }
        if let Some(headers) = message::salvage(data) {
            let bytes = self.response(&headers, from, code, None, &[], None);
            self.send(transport, from, bytes);
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        msg: Message,
    ) {
        // Unwrap-free: a parsed request always has a method.
        let Some(method) = msg.method().cloned() else {
            return;
        };
        if let Err(violation) = message::validate_request(&msg) {
            if method != Method::Ack {
                let extra = violation.extra_headers();
                let bytes =
                    self.response(&msg.headers, from, violation.status(), None, &extra, None);
                self.send(transport, from, bytes);
            }
            return;
        }
        // validate_request guarantees a Via with a readable sent-by and a CSeq.
        let Some(key) = TxKey::server(&msg) else {
            return;
        };
        if method == Method::Ack {
            self.handle_ack(now, &key, &msg);
            return;
        }
        // Retransmissions are answered from the transaction before any other logic runs, so a
        // retransmitted INVITE can never create a second call (RFC 3261 §17.2.3).
        // The answer goes to where this copy came from (and later Timer G retransmissions too):
        // the peer may have moved (NAT rebinding), and a stale address helps no one.
        if method == Method::Invite
            && let Some(entry) = self.invite_txs.get_mut(&key)
        {
            (entry.remote, entry.transport) = (from, transport);
            if let Some(bytes) = entry.tx.handle_retransmission() {
                let bytes = bytes.to_vec();
                self.send(transport, from, bytes);
            }
            return;
        }
        if let Some(entry) = self.server_txs.get_mut(&key) {
            (entry.remote, entry.transport) = (from, transport);
            let bytes = entry.tx.last_response.clone();
            self.send(transport, from, bytes);
            return;
        }
        // Method inspection precedes header inspection (RFC 3261 §8.2.1): an unknown method is
        // 501 even when its URI scheme or Require would also be refused.
        match method {
            Method::Invite
            | Method::Cancel
            | Method::Bye
            | Method::Options
            | Method::Info
            | Method::Notify => {}
            Method::Other(_) => {
                return self.reply(
                    now,
                    &msg,
                    from,
                    transport,
                    501,
                    &[Header::new("Allow", ALLOW)],
                );
            }
            _ => {
                return self.reply(
                    now,
                    &msg,
                    from,
                    transport,
                    405,
                    &[Header::new("Allow", ALLOW)],
                );
            }
        }
        let sdp = match message::inspect_request(&msg, SUPPORTED) {
            Ok(sdp) => sdp.map(<[u8]>::to_vec),
            Err(violation) => {
                let extra = violation.extra_headers();
                if method == Method::Invite {
                    self.reject_invite(now, &msg, from, transport, violation.status(), &extra);
                } else {
                    self.reply(now, &msg, from, transport, violation.status(), &extra);
                }
                return;
            }
        };
        match method {
            Method::Cancel => self.handle_cancel(now, key, &msg, from, transport),
            Method::Options => {
                if let Some(secs) = self.unavailable {
                    let extra = [Header::new("Retry-After", &secs.to_string())];
                    return self.reply(now, &msg, from, transport, 503, &extra);
                }
                let extra = [
                    Header::new("Allow", ALLOW),
                    Header::new("Accept", "application/sdp"),
                ];
                self.reply(now, &msg, from, transport, 200, &extra);
            }
            Method::Invite if msg.to_tag().is_none() => {
                self.handle_invite(now, key, msg, sdp, from, transport)
            }
            _ => self.handle_in_dialog(now, key, msg, sdp, from, transport),
        }
    }

    fn parse_offer(sdp: Option<Vec<u8>>) -> Result<Option<SessionDescription>, ()> {
        match sdp {
            Some(b) if !b.iter().all(|c| c.is_ascii_whitespace()) => {
                SessionDescription::parse(&b).map(Some).map_err(|_| ())
            }
            _ => Ok(None),
        }
    }

    fn handle_invite(
        &mut self,
        now: Instant,
        key: TxKey,
        msg: Message,
        sdp: Option<Vec<u8>>,
        from: SocketAddr,
        transport: Transport,
    ) {
        if let Some(secs) = self.unavailable {
            let extra = [Header::new("Retry-After", &secs.to_string())];
            return self.reject_invite(now, &msg, from, transport, 503, &extra);
        }
        if self.calls.len() >= MAX_CALLS {
            let extra = [Header::new("Retry-After", "5")];
            return self.reject_invite(now, &msg, from, transport, 503, &extra);
        }
        let Ok(offer) = Self::parse_offer(sdp) else {
            return self.reject_invite(now, &msg, from, transport, 400, &[]);
        };
        let local_tag = self.new_tag();
        let Some(dialog) = Dialog::from_invite(&msg, &local_tag) else {
            return self.reject_invite(now, &msg, from, transport, 400, &[]);
        };
        let trying = self.response(&msg.headers, from, 100, None, &[], None);
        self.send(transport, from, trying.clone());
        let call = CallKey(self.next_call);
        self.next_call += 1;
        let tx = InviteServerTx::new(transport.reliable(), trying);
        self.invite_txs.insert(
            key.clone(),
            InviteEntry {
                tx,
                remote: from,
                transport,
                call: Some(call),
            },
        );
        let addr = |name: &str| msg.header(name).and_then(|v| NameAddr::parse(v).ok());
        let from_na = addr("from");
        let (request_user, sips) = match &msg.start {
            StartLine::Request { uri, .. } => (
                message::uri_user(uri).to_string(),
                uri.get(..5)
                    .is_some_and(|s| s.eq_ignore_ascii_case("sips:")),
            ),
            StartLine::Response { .. } => (String::new(), false),
        };
        let info = IncomingCall {
            call_id: dialog.id.call_id.clone(),
            from_user: from_na
                .as_ref()
                .map(|n| n.user().to_string())
                .unwrap_or_default(),
            from_display: from_na.and_then(|n| n.display),
            to_user: addr("to").map(|n| n.user().to_string()).unwrap_or_default(),
            request_user,
            remote: from,
            transport,
            offer,
            headers: msg
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        };
        self.dialogs.insert(dialog.id.clone(), call);
        let pending = Some(Pending {
            key,
            request: msg,
            initial: true,
        });
        self.calls.insert(
            call,
            Call {
                dialog,
                remote: from,
                transport,
                sips,
                state: CallState::Early,
                pending,
                ok: None,
                hangup_after_ack: false,
                offerless: false,
                uac: None,
                refer: None,
            },
        );
        self.events.push_back(Event::Incoming { call, info });
    }

    /// Dialog of an in-dialog request: Call-ID + To tag (ours) + From tag (theirs), §12.2.2.
    /// RFC 2543 peers without a From tag still match, with an empty remote tag.
    fn dialog_of(&self, msg: &Message) -> Option<CallKey> {
        let id = DialogId {
            call_id: msg.call_id()?.to_string(),
            local_tag: msg.to_tag()?,
            remote_tag: msg.from_tag().unwrap_or_default(),
        };
        self.dialogs.get(&id).copied()
    }

    /// BYE, INFO and re-INVITE: they need an existing dialog (481 otherwise, RFC 3261 §12.2.2).
    fn handle_in_dialog(
        &mut self,
        now: Instant,
        key: TxKey,
        msg: Message,
        sdp: Option<Vec<u8>>,
        from: SocketAddr,
        transport: Transport,
    ) {
        let method = msg.method().cloned().unwrap_or(Method::Bye);
        let is_invite = method == Method::Invite;
        let Some(call) = self.dialog_of(&msg) else {
            return if is_invite {
                self.reject_invite(now, &msg, from, transport, 481, &[])
            } else {
                self.reply(now, &msg, from, transport, 481, &[])
            };
        };
        let cseq = msg.cseq().map_or(0, |(n, _)| n);
        // Unwrap-free lookups: `dialogs` and `calls` are kept in step.
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if cseq < c.dialog.remote_cseq {
            return if is_invite {
                self.reject_invite(now, &msg, from, transport, 500, &[])
            } else {
                self.reply(now, &msg, from, transport, 500, &[])
            };
        }
        c.dialog.remote_cseq = cseq;
        match method {
            Method::Bye => {
                let state = c.state;
                let pending = c.pending.take();
                self.reply(now, &msg, from, transport, 200, &[]);
                if let Some(p) = pending {
                    self.final_for_pending(now, call, &p, 487, &[], None);
                }
                if state != CallState::Terminating {
                    self.forget(call);
                    self.events.push_back(Event::RemoteHangup { call });
                }
            }
            Method::Invite => {
                // A second INVITE while the first awaits our answer: 500 + Retry-After
                // (RFC 3261 §14.2); one before our 2xx was ACKed: 491 (glare-like).
                if c.pending.is_some() {
                    let extra = [Header::new("Retry-After", "1")];
                    return self.reject_invite(now, &msg, from, transport, 500, &extra);
                }
                if c.state != CallState::Confirmed || c.ok.is_some() {
                    return self.reject_invite(now, &msg, from, transport, 491, &[]);
                }
                let Ok(offer) = Self::parse_offer(sdp) else {
                    return self.reject_invite(now, &msg, from, transport, 400, &[]);
                };
                c.offerless = offer.is_none();
                let trying = self.response(&msg.headers, from, 100, None, &[], None);
                self.send(transport, from, trying.clone());
                let tx = InviteServerTx::new(transport.reliable(), trying);
                self.invite_txs.insert(
                    key.clone(),
                    InviteEntry {
                        tx,
                        remote: from,
                        transport,
                        call: Some(call),
                    },
                );
                if let Some(c) = self.calls.get_mut(&call) {
                    c.pending = Some(Pending {
                        key,
                        request: msg,
                        initial: false,
                    });
                }
                self.events.push_back(Event::Reoffer { call, offer });
            }
            Method::Notify => self.handle_notify(now, call, &msg, from, transport),
            _ => self.reply(now, &msg, from, transport, 200, &[]),
        }
    }

    fn handle_ack(&mut self, now: Instant, key: &TxKey, msg: &Message) {
        if let Some(entry) = self.invite_txs.get_mut(key)
            && entry.tx.handle_ack(now, &self.timing)
        {
            return; // ACK for our non-2xx: the transaction's business (RFC 3261 §17.2.1)
        }
        let Some(call) = self.dialog_of(msg) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        // Only the ACK for the 2xx we are retransmitting counts; its CSeq number equals the
        // INVITE's (RFC 3261 §13.2.2.4).
        let cseq = msg.cseq().map_or(0, |(n, _)| n);
        if c.ok.as_ref().is_none_or(|ok| ok.cseq != cseq) {
            return; // late or duplicate ACK
        }
        c.ok = None;
        if c.offerless {
            c.offerless = false;
            let body = message::inspect_request(msg, SUPPORTED)
                .ok()
                .flatten()
                .map(<[u8]>::to_vec);
            if let Ok(Some(answer)) = Self::parse_offer(body) {
                self.events.push_back(Event::Reoffer {
                    call,
                    offer: Some(answer),
                });
            }
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.state == CallState::WaitAck {
            c.state = CallState::Confirmed;
            let hangup = c.hangup_after_ack;
            self.events.push_back(Event::Confirmed { call });
            if hangup {
                let _ = self.send_bye(now, call);
            }
        }
    }

    fn handle_cancel(
        &mut self,
        now: Instant,
        key: TxKey,
        msg: &Message,
        from: SocketAddr,
        transport: Transport,
    ) {
        let invite_key = key.invite_of();
        let Some(entry) = self.invite_txs.get(&invite_key) else {
            return self.reply(now, msg, from, transport, 481, &[]);
        };
        let proceeding = entry.tx.is_proceeding();
        let call = entry.call;
        // The 200 for CANCEL carries the same To tag as the INVITE's responses would.
        let tag = call
            .and_then(|k| self.calls.get(&k))
            .map(|c| c.dialog.id.local_tag.clone());
        let ok = self.response(&msg.headers, from, 200, tag.as_deref(), &[], None);
        let tx = NonInviteServerTx::completed(now, &self.timing, transport.reliable(), ok.clone());
        self.server_txs.insert(
            key,
            ServerEntry {
                tx,
                remote: from,
                transport,
            },
        );
        self.send(transport, from, ok);
        // After a final response CANCEL has no effect on the INVITE (RFC 3261 §9.2).
        if !proceeding {
            return;
        }
        let Some(call) = call else { return };
        let Some(pending) = self.calls.get_mut(&call).and_then(|c| c.pending.take()) else {
            return;
        };
        self.final_for_pending(now, call, &pending, 487, &[], None);
        if pending.initial {
            self.forget(call);
            self.events.push_back(Event::Cancelled { call });
        }
    }

    fn handle_response(&mut self, now: Instant, code: u16, msg: &Message) {
        let Some(branch) = msg.top_via().and_then(|v| v.branch().map(str::to_string)) else {
            return;
        };
        if msg.cseq().is_some_and(|(_, m)| m == "INVITE") {
            return self.handle_invite_response(now, &branch, code, msg);
        }
        let Some(entry) = self.client_txs.get_mut(&branch) else {
            return;
        };
        // Branch alone is not enough: a CANCEL we might send later shares it (§17.1.3).
        if msg.cseq().is_none_or(|(_, m)| m != entry.method.as_str()) {
            return;
        }
        if entry.tx.handle_response(now, &self.timing, code).is_some() {
            let call = entry.call.take();
            match (call, &entry.method) {
                (Some(call), Method::Bye) => {
                    self.forget(call);
                    self.events.push_back(Event::Terminated {
                        call,
                        reason: TerminateReason::LocalBye,
                    });
                }
                (Some(call), Method::Refer) => self.handle_refer_final(call, &branch, code),
                _ => {}
            }
        }
    }

    /// Sends the final response for the pending INVITE of `call` through its transaction.
    fn final_for_pending(
        &mut self,
        now: Instant,
        call: CallKey,
        p: &Pending,
        code: u16,
        extra: &[Header],
        body: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        let tag = self.calls.get(&call)?.dialog.id.local_tag.clone();
        let entry = self.invite_txs.get(&p.key)?;
        let (remote, transport) = (entry.remote, entry.transport);
        let bytes = self.response(&p.request.headers, remote, code, Some(&tag), extra, body);
        let entry = self.invite_txs.get_mut(&p.key)?;
        entry.tx.send_final(now, &self.timing, code, bytes.clone());
        self.send(transport, remote, bytes.clone());
        Some(bytes)
    }

    fn forget(&mut self, call: CallKey) {
        if let Some(c) = self.calls.remove(&call) {
            self.dialogs.remove(&c.dialog.id);
        }
    }

    fn pending_proceeding(&self, call: CallKey) -> Result<(), CallError> {
        let c = self.calls.get(&call).ok_or(CallError::UnknownCall)?;
        let p = c.pending.as_ref().ok_or(CallError::InvalidState)?;
        match self.invite_txs.get(&p.key) {
            Some(e) if e.tx.is_proceeding() => Ok(()),
            _ => Err(CallError::InvalidState),
        }
    }

    /// 180 Ringing for the pending initial INVITE.
    pub fn ring(&mut self, _now: Instant, call: CallKey) -> Result<(), CallError> {
        self.pending_proceeding(call)?;
        let c = self.calls.get(&call).ok_or(CallError::UnknownCall)?;
        let p = c.pending.as_ref().ok_or(CallError::InvalidState)?;
        let (headers, key, tag, transport) = (
            p.request.headers.clone(),
            p.key.clone(),
            c.dialog.id.local_tag.clone(),
            c.transport,
        );
        let remote = c.remote;
        let contact = [Header::new("Contact", &self.contact(transport, c.sips))];
        let bytes = self.response(&headers, remote, 180, Some(&tag), &contact, None);
        if let Some(e) = self.invite_txs.get_mut(&key) {
            e.tx.send_provisional(bytes.clone());
        }
        self.send(transport, remote, bytes);
        Ok(())
    }

    /// 200 OK with `sdp` for the pending INVITE or re-INVITE of `call`; retransmitted (UDP) at T1,
    /// doubling to T2, until the ACK; 64*T1 without ACK → BYE + `Terminated{AckTimeout}`.
    pub fn answer(
        &mut self,
        now: Instant,
        call: CallKey,
        sdp: &SessionDescription,
    ) -> Result<(), CallError> {
        self.pending_proceeding(call)?;
        let c = self.calls.get_mut(&call).ok_or(CallError::UnknownCall)?;
        let p = c.pending.take().ok_or(CallError::InvalidState)?;
        let (transport, sips) = (c.transport, c.sips);
        let extra = [
            Header::new("Contact", &self.contact(transport, sips)),
            Header::new("Allow", ALLOW),
        ];
        let body = sdp.to_string().into_bytes();
        let cseq = p.request.cseq().map_or(0, |(n, _)| n);
        let bytes = self
            .final_for_pending(now, call, &p, 200, &extra, Some(&body))
            .ok_or(CallError::InvalidState)?;
        let c = self.calls.get_mut(&call).ok_or(CallError::UnknownCall)?;
        if p.initial {
            c.state = CallState::WaitAck;
        }
        let t1 = self.timing.t1;
        c.ok = Some(OkRetransmit {
            bytes,
            cseq,
            next: (!transport.reliable()).then(|| now + t1),
            interval: t1,
            deadline: now + self.timing.timeout(),
        });
        Ok(())
    }

    /// Final non-2xx (300–699) for the pending INVITE/re-INVITE; `extra` adds headers such as
    /// `("Retry-After", "30")`. Rejecting the initial INVITE ends the call without an event.
    pub fn reject(
        &mut self,
        now: Instant,
        call: CallKey,
        status: u16,
        extra: &[(&str, &str)],
    ) -> Result<(), CallError> {
        if !(300..=699).contains(&status) {
            return Err(CallError::InvalidState);
        }
        self.pending_proceeding(call)?;
        let c = self.calls.get_mut(&call).ok_or(CallError::UnknownCall)?;
        let p = c.pending.take().ok_or(CallError::InvalidState)?;
        let extra: Vec<Header> = extra.iter().map(|(n, v)| Header::new(n, v)).collect();
        self.final_for_pending(now, call, &p, status, &extra, None);
        if p.initial {
            self.forget(call);
        }
        Ok(())
    }

    /// Sends BYE in the dialog (non-INVITE client transaction, Timers E/F). The end is reported
    /// later as `Terminated{LocalBye}`. Before the ACK of our 2xx the BYE waits for it
    /// (RFC 3261 §15). A UAS cannot BYE an unanswered call, so there it answers 480 instead and
    /// reports `Terminated{LocalBye}` at once: every hangup ends in exactly one Terminated.
    /// An unanswered outgoing call is cancelled instead (see [`Endpoint::cancel`]; it ends in
    /// `Failed`).
    pub fn hangup(&mut self, now: Instant, call: CallKey) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call).ok_or(CallError::UnknownCall)?;
        match c.state {
            CallState::Terminating => Err(CallError::InvalidState),
            // Our own unanswered INVITE: the only way out is CANCEL (RFC 3261 §9.1).
            CallState::Early if c.uac.is_some() => self.cancel(now, call),
            CallState::Early => {
                if let Some(p) = c.pending.take() {
                    self.final_for_pending(now, call, &p, 480, &[], None);
                }
                self.forget(call);
                self.events.push_back(Event::Terminated {
                    call,
                    reason: TerminateReason::LocalBye,
                });
                Ok(())
            }
            CallState::WaitAck => {
                c.hangup_after_ack = true;
                Ok(())
            }
            CallState::Confirmed => {
                if let Some(p) = c.pending.take() {
                    self.final_for_pending(now, call, &p, 487, &[], None);
                }
                self.send_bye(now, call)
            }
        }
    }

    fn send_bye(&mut self, now: Instant, call: CallKey) -> Result<(), CallError> {
        self.send_in_dialog(now, call, Method::Bye, &[], None)?;
        if let Some(c) = self.calls.get_mut(&call) {
            c.state = CallState::Terminating;
            c.ok = None;
        }
        Ok(())
    }

    /// Sends a request inside the dialog of `call` through a new non-INVITE client transaction.
    /// Generic so that REFER and INFO can use the same path as BYE.
    fn send_in_dialog(
        &mut self,
        now: Instant,
        call: CallKey,
        method: Method,
        extra: &[Header],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<String, CallError> {
        let branch = format!("z9hG4bK{:016x}", self.random());
        let c = self.calls.get(&call).ok_or(CallError::UnknownCall)?;
        let (contact, local) = (
            self.contact(c.transport, c.sips),
            self.local_for(c.transport),
        );
        let user_agent = self.config.user_agent.clone();
        let c = self.calls.get_mut(&call).ok_or(CallError::UnknownCall)?;
        let via = format!(
            "SIP/2.0/{} {};branch={};rport",
            c.transport.via_name(),
            local,
            branch
        );
        let request = c
            .dialog
            .request(method.clone(), via, &contact, &user_agent, extra, body)
            .to_bytes();
        let (remote, transport) = (c.remote, c.transport);
        let tx = NonInviteClientTx::new(now, &self.timing, transport.reliable(), request.clone());
        self.client_txs.insert(
            branch.clone(),
            ClientEntry {
                tx,
                method,
                remote,
                transport,
                call: Some(call),
            },
        );
        self.send(transport, remote, request);
        Ok(branch)
    }

    /// The shell lost the TCP connection to `remote`: calls signalled over it can no longer be
    /// reached (we do not open connections), so they end with `Terminated{TransportError}`.
    pub fn handle_connection_lost(&mut self, _now: Instant, remote: SocketAddr) {
        let mut lost: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, c)| c.transport.connected() && c.remote == remote)
            .map(|(k, _)| *k)
            .collect();
        lost.sort();
        for call in lost {
            self.forget(call);
            self.events.push_back(Event::Terminated {
                call,
                reason: TerminateReason::TransportError,
            });
        }
        let gone = |t: Transport, r: SocketAddr| t.connected() && r == remote;
        self.invite_txs.retain(|_, e| !gone(e.transport, e.remote));
        self.server_txs.retain(|_, e| !gone(e.transport, e.remote));
        self.client_txs.retain(|_, e| !gone(e.transport, e.remote));
        self.invite_client_txs
            .retain(|_, e| !gone(e.transport, e.remote));
    }

    /// Fires every due timer. Work is collected first and done after, because firing a timer
    /// may add transactions (the BYE after an ACK timeout) to the maps being scanned.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        let keys: Vec<TxKey> = self
            .invite_txs
            .iter()
            .filter(|(_, e)| due(e.tx.poll_timeout()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            // Bounded loop: each retransmission re-arms Timer G in the future.
            for _ in 0..4 {
                let Some(entry) = self.invite_txs.get_mut(&key) else {
                    break;
                };
                match entry.tx.handle_timeout(now, &self.timing) {
                    TxAction::None => break,
                    TxAction::Retransmit(bytes) => {
                        let (t, r) = (entry.transport, entry.remote);
                        self.send(t, r, bytes);
                    }
                    TxAction::TimedOut | TxAction::Terminated => {
                        self.invite_txs.remove(&key);
                    }
                }
            }
        }
        self.server_txs
            .retain(|_, e| e.tx.handle_timeout(now) != TxAction::Terminated);
        self.handle_invite_client_timeouts(now);

        let branches: Vec<String> = self
            .client_txs
            .iter()
            .filter(|(_, e)| due(e.tx.poll_timeout()))
            .map(|(k, _)| k.clone())
            .collect();
        for branch in branches {
            let Some(entry) = self.client_txs.get_mut(&branch) else {
                continue;
            };
            match entry.tx.handle_timeout(now, &self.timing) {
                TxAction::None => {}
                TxAction::Retransmit(bytes) => {
                    let (t, r) = (entry.transport, entry.remote);
                    self.send(t, r, bytes);
                }
                TxAction::TimedOut => {
                    let (call, method) = (entry.call.take(), entry.method.clone());
                    self.client_txs.remove(&branch);
                    match (call, method) {
                        (Some(call), Method::Bye) => {
                            self.forget(call);
                            self.events.push_back(Event::Terminated {
                                call,
                                reason: TerminateReason::LocalBye,
                            });
                        }
                        (Some(call), Method::Refer) => self.handle_refer_final(call, &branch, 408),
                        _ => {}
                    }
                }
                TxAction::Terminated => {
                    self.client_txs.remove(&branch);
                }
            }
        }

        let calls: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.ok.as_ref()
                    .is_some_and(|o| o.deadline <= now || due(o.next))
            })
            .map(|(k, _)| *k)
            .collect();
        for call in calls {
            let Some(c) = self.calls.get_mut(&call) else {
                continue;
            };
            let Some(ok) = c.ok.as_mut() else { continue };
            if ok.deadline <= now {
                // No ACK for 64*T1: confirm and immediately end the dialog (RFC 3261 §13.3.1.4).
                c.ok = None;
                c.state = CallState::Confirmed;
                let _ = self.send_bye(now, call);
                for e in self
                    .client_txs
                    .values_mut()
                    .filter(|e| e.call == Some(call))
                {
                    e.call = None;
                }
                self.forget(call);
                self.events.push_back(Event::Terminated {
                    call,
                    reason: TerminateReason::AckTimeout,
                });
            } else {
                ok.interval = (ok.interval * 2).min(self.timing.t2);
                ok.next = Some(now + ok.interval);
                let (bytes, t, r) = (ok.bytes.clone(), c.transport, c.remote);
                self.send(t, r, bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:5070".parse().unwrap()
    }

    fn invite(branch: &str) -> String {
        format!(
            "INVITE sip:help@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n\
             From: \"Caller\" <sip:5551234@example.com>;tag=ft\r\nTo: <sip:help@example.com>\r\nCall-ID: cid-1\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:5551234@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn drain(ep: &mut Endpoint) -> Vec<String> {
        std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| String::from_utf8_lossy(&t.payload).into_owned())
            .collect()
    }

    #[test]
    fn endpoint_can_move_between_threads() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Endpoint>();
        assert_send::<Event>();
    }

    #[test]
    fn stamps_received_and_rport() {
        let v = stamp_top_via(
            "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKx;rport, SIP/2.0/UDP h",
            addr(),
        );
        assert_eq!(
            v,
            "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKx;rport=5070;received=127.0.0.1, SIP/2.0/UDP h"
        );
        let v = stamp_top_via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx", addr());
        assert_eq!(v, "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx");
    }

    #[test]
    fn incoming_call_redacts_caller_in_debug() {
        let mut ep = Endpoint::new(EndpointConfig::default());
        ep.handle_input(
            Instant::now(),
            addr(),
            Transport::Udp,
            invite("z9hG4bK1")
                .replace("Max-Forwards", "Timestamp: 54\r\nMax-Forwards")
                .as_bytes(),
        );
        let out = drain(&mut ep);
        assert!(out[0].starts_with("SIP/2.0 100 Trying\r\n"), "{out:?}");
        assert!(out[0].contains("\r\nTimestamp: 54\r\n"), "{out:?}");
        assert!(out[0].contains("rport=5070"));
        let Some(Event::Incoming { info, .. }) = ep.poll_event() else {
            panic!("no Incoming")
        };
        assert_eq!(info.from_user, "5551234");
        assert_eq!(info.request_user, "help");
        assert!(!format!("{info:?}").contains("5551234"));
        assert_eq!(ep.calls(), 1);
    }

    #[test]
    fn unavailable_refuses_probes_and_new_calls_with_503_not_silence() {
        let mut ep = Endpoint::new(EndpointConfig::default());
        let options = invite("z9hG4bKo1").replace("INVITE", "OPTIONS");
        ep.set_unavailable(Some(7));
        assert!(ep.is_unavailable());
        ep.handle_input(Instant::now(), addr(), Transport::Udp, options.as_bytes());
        let out = drain(&mut ep);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].starts_with("SIP/2.0 503 "), "{out:?}");
        assert!(out[0].contains("\r\nRetry-After: 7\r\n"), "{out:?}");
        ep.handle_input(
            Instant::now(),
            addr(),
            Transport::Udp,
            invite("z9hG4bKi1").as_bytes(),
        );
        let out = drain(&mut ep);
        assert!(out.iter().any(|m| m.starts_with("SIP/2.0 503 ")), "{out:?}");
        assert!(ep.poll_event().is_none(), "no call for the app");
        assert_eq!(ep.calls(), 0);
        // Back in service: the same probe (a new transaction) gets 200, a call is offered.
        ep.set_unavailable(None);
        let options = options.replace("z9hG4bKo1", "z9hG4bKo2");
        ep.handle_input(Instant::now(), addr(), Transport::Udp, options.as_bytes());
        let out = drain(&mut ep);
        assert!(out[0].starts_with("SIP/2.0 200 OK\r\n"), "{out:?}");
        ep.handle_input(
            Instant::now(),
            addr(),
            Transport::Udp,
            invite("z9hG4bKi2").replace("cid-1", "cid-2").as_bytes(),
        );
        assert!(matches!(ep.poll_event(), Some(Event::Incoming { .. })));
    }

    #[test]
    fn refuse_answers_requests_statelessly_and_nothing_else() {
        let mut ep = Endpoint::new(EndpointConfig::default());
        ep.refuse(addr(), Transport::Udp, invite("z9hG4bK7").as_bytes(), 403);
        let out = drain(&mut ep);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].starts_with("SIP/2.0 403 Forbidden\r\n"), "{out:?}");
        assert!(out[0].contains("branch=z9hG4bK7"), "{out:?}");
        assert!(
            out[0].contains("\r\nTo: <sip:help@example.com>;tag="),
            "{out:?}"
        );
        assert!(out[0].contains("\r\nCSeq: 1 INVITE\r\n"), "{out:?}");
        assert!(ep.poll_event().is_none());
        assert_eq!(ep.calls(), 0);
        assert_eq!(ep.poll_timeout(), None, "no transaction kept");
        let ack = invite("z9hG4bK7").replace("INVITE", "ACK");
        ep.refuse(addr(), Transport::Udp, ack.as_bytes(), 403);
        ep.refuse(addr(), Transport::Udp, b"SIP/2.0 200 OK\r\n\r\n", 403);
        ep.refuse(addr(), Transport::Udp, b"\r\n\r\n", 403);
        ep.refuse(addr(), Transport::Udp, b"garbage", 403);
        assert!(drain(&mut ep).is_empty());
    }

    #[test]
    fn keepalive_and_stray_response_are_silent() {
        let mut ep = Endpoint::new(EndpointConfig::default());
        let now = Instant::now();
        ep.handle_input(now, addr(), Transport::Tcp, b"\r\n\r\n");
        ep.handle_input(
            now,
            addr(),
            Transport::Udp,
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKq\r\nCSeq: 1 BYE\r\n\r\n",
        );
        assert!(ep.poll_transmit().is_none());
        assert!(ep.poll_event().is_none());
        assert_eq!(ep.poll_timeout(), None);
    }

    #[test]
    fn lost_tcp_connection_terminates_its_calls() {
        let mut ep = Endpoint::new(EndpointConfig::default());
        let now = Instant::now();
        ep.handle_input(now, addr(), Transport::Tcp, invite("z9hG4bK3").as_bytes());
        let Some(Event::Incoming { call, .. }) = ep.poll_event() else {
            panic!("no Incoming")
        };
        ep.handle_connection_lost(now, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(ep.calls(), 1);
        ep.handle_connection_lost(now, addr());
        assert_eq!(
            ep.poll_event(),
            Some(Event::Terminated {
                call,
                reason: TerminateReason::TransportError
            })
        );
        assert_eq!((ep.calls(), ep.poll_timeout()), (0, None));
    }

    /// Over TLS: our Contact is on the TLS port, `sips:` when the caller dialled a `sips:` URI
    /// and `;transport=tls` otherwise; the call is bound to its connection.
    #[test]
    fn tls_dialogs_get_a_tls_contact_and_via() {
        let tls: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        for (uri, contact) in [
            ("sip:help@127.0.0.1", "<sip:127.0.0.1:5061;transport=tls>"),
            ("sips:help@127.0.0.1", "<sips:127.0.0.1:5061>"),
            ("SIPS:help@127.0.0.1", "<sips:127.0.0.1:5061>"),
        ] {
            let mut ep = Endpoint::new(EndpointConfig {
                tls_addr: Some(tls),
                ..EndpointConfig::default()
            });
            let now = Instant::now();
            let req = invite("z9hG4bK5")
                .replace("INVITE sip:help@127.0.0.1", &format!("INVITE {uri}"))
                .replace("SIP/2.0/UDP", "SIP/2.0/TLS");
            ep.handle_input(now, addr(), Transport::Tls, req.as_bytes());
            let Some(Event::Incoming { call, info }) = ep.poll_event() else {
                panic!("no Incoming")
            };
            assert_eq!(info.transport, Transport::Tls);
            ep.ring(now, call).unwrap();
            let sent: Vec<Transmit> = std::iter::from_fn(|| ep.poll_transmit()).collect();
            assert!(sent.iter().all(|t| t.transport == Transport::Tls));
            let ringing = String::from_utf8_lossy(&sent[1].payload).into_owned();
            assert!(ringing.starts_with("SIP/2.0 180"), "{ringing}");
            assert!(
                ringing.contains(&format!("Contact: {contact}\r\n")),
                "{ringing}"
            );
            ep.handle_connection_lost(now, addr());
            assert!(
                std::iter::from_fn(|| ep.poll_event())
                    .any(|e| matches!(e, Event::Terminated { .. })),
                "a lost TLS connection ends its call"
            );
        }
    }

    #[test]
    fn leading_crlf_and_reasonless_status_are_tolerated() {
        let mut ep = Endpoint::new(EndpointConfig::default());
        let now = Instant::now();
        ep.handle_input(
            now,
            addr(),
            Transport::Udp,
            format!("\r\n\r\n{}", invite("z9hG4bK4")).as_bytes(),
        );
        assert!(matches!(ep.poll_event(), Some(Event::Incoming { .. })));
        let m = message::parse(
            b"SIP/2.0 200\r\nCSeq: 1 BYE\r\n\r\n",
            &Limits::default(),
            false,
        )
        .unwrap();
        assert_eq!(m.code(), Some(200));
    }

    #[test]
    fn limits_give_413_and_400() {
        let config = EndpointConfig {
            max_message_bytes: 600,
            max_headers: 12,
            ..EndpointConfig::default()
        };
        let mut ep = Endpoint::new(config);
        let now = Instant::now();
        let big = invite("z9hG4bK5").replace(
            "Max-Forwards: 70\r\n",
            &format!("X-Pad: {}\r\n", "a".repeat(600)),
        );
        ep.handle_input(now, addr(), Transport::Udp, big.as_bytes());
        let many = invite("z9hG4bK6").replace("Max-Forwards: 70\r\n", &"X-H: 1\r\n".repeat(13));
        ep.handle_input(now, addr(), Transport::Udp, many.as_bytes());
        let out = drain(&mut ep);
        assert!(out[0].starts_with("SIP/2.0 413 "), "{out:?}");
        assert!(
            out[1].starts_with("SIP/2.0 400 ") && out[1].contains("too many headers"),
            "{out:?}"
        );
        assert_eq!(ep.calls(), 0);
    }

    #[test]
    fn reject_unknown_call_and_bad_status() {
        let mut ep = Endpoint::new(EndpointConfig::default());
        let now = Instant::now();
        assert_eq!(
            ep.reject(now, CallKey(9), 486, &[]),
            Err(CallError::UnknownCall)
        );
        ep.handle_input(now, addr(), Transport::Udp, invite("z9hG4bK2").as_bytes());
        let Some(Event::Incoming { call, .. }) = ep.poll_event() else {
            panic!()
        };
        assert_eq!(ep.reject(now, call, 200, &[]), Err(CallError::InvalidState));
        ep.reject(now, call, 486, &[]).unwrap();
        assert_eq!(ep.calls(), 0);
        assert_eq!(ep.reject(now, call, 486, &[]), Err(CallError::UnknownCall));
        assert_eq!(ep.hangup(now, call), Err(CallError::UnknownCall));
    }

    #[test]
    fn hangup_before_answer_rejects_480_and_terminates() {
        let mut ep = Endpoint::new(EndpointConfig::default());
        let now = Instant::now();
        ep.handle_input(now, addr(), Transport::Udp, invite("z9hG4bK7").as_bytes());
        let Some(Event::Incoming { call, .. }) = ep.poll_event() else {
            panic!("no Incoming")
        };
        drain(&mut ep);
        ep.hangup(now, call).unwrap();
        let out = drain(&mut ep);
        assert!(
            out.len() == 1 && out[0].starts_with("SIP/2.0 480 "),
            "{out:?}"
        );
        assert_eq!(
            ep.poll_event(),
            Some(Event::Terminated {
                call,
                reason: TerminateReason::LocalBye
            })
        );
        assert_eq!((ep.calls(), ep.poll_event()), (0, None));
    }
}
