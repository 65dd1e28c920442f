//! The SIP task: owns the `sip::Endpoint` and the SIP sockets (UDP, TCP and, when configured,
//! TLS), admits or refuses calls, allocates RTP ports, negotiates SDP and spawns one media task
//! per call. TCP and TLS connections share one framing task (`stream_connection`) and one event
//! channel; the edge guard admits or refuses each connection and checks each message the same way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

use super::Shared;
use super::bridge::{self, AgentEvent, AgentLeg, BridgeConfig};
use super::call::{self, CallCommand, CallSetup, SipCommand};
use super::metrics::Metrics;
use super::outgoing::{Outgoing, Stream};
use super::store::{CallRecord, now_rfc3339};
use crate::flow::FlowConfig;
use crate::pii::redact;
use crate::rtp::srtp::{self, KeySalt, Protector, Unprotector};
use crate::sip::guard::{DropReason, Guard, Verdict};
use crate::sip::sdp::{self, LocalMedia};
use crate::sip::{CallKey, Endpoint, EndpointConfig, Event, OutgoingCall, Transport};
use crate::types::Codec;

/// A live call as the SIP task sees it.
struct Live {
    tx: mpsc::Sender<CallCommand>,
    rtp_port: u16,
    /// The RFC 4103 text stream's port (audio + 2), when one was bound.
    text_port: Option<u16>,
    session_id: u64,
    version: u64,
    /// Our SRTP key for the call: a re-INVITE is answered with the same one unless it changes
    /// the suite (then a fresh one).
    srtp_key: KeySalt,
    /// The audio stream's SRTP keys as last negotiated (None: plain RTP).
    srtp: Option<sdp::SrtpKeys>,
}

/// A fresh SRTP master key and salt from the OS (getrandom(2)); never logged.
fn srtp_key() -> KeySalt {
    let mut k = [0u8; srtp::KEY_SALT_LEN];
    let mut filled = 0;
    while filled < k.len() {
        // SAFETY: writes at most the remaining bytes of `k`.
        let n = unsafe { libc::getrandom(k[filled..].as_mut_ptr().cast(), k.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // No entropy source at all: a process that cannot key SRTP must not pretend to.
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
    KeySalt(k)
}

/// The IVR's own call to an agent queue (B2BUA bridge), until it ends.
struct AgentCall {
    /// The caller's call this leg is bridged to.
    caller: CallKey,
    rtp_port: u16,
    /// Handed to the caller's task when the agent answers.
    rtp: Option<std::net::UdpSocket>,
    /// Our SRTP key for this leg (`[transfer] srtp`), drawn apart from the caller leg's.
    srtp_key: KeySalt,
}

/// Ports handed out to calls, even numbers only (RTCP takes port + 1).
struct PortPool {
    lo: u16,
    hi: u16,
    next: u16,
    in_use: std::collections::HashSet<u16>,
}

impl PortPool {
    fn new(lo: u16, hi: u16) -> Self {
        let lo = lo + lo % 2;
        PortPool {
            lo,
            hi,
            next: lo,
            in_use: Default::default(),
        }
    }

    /// Bind the next free even port (and its RTCP neighbour) on `ip`.
    fn bind(
        &mut self,
        ip: IpAddr,
    ) -> Option<(u16, std::net::UdpSocket, Option<std::net::UdpSocket>)> {
        let span = usize::from((self.hi - self.lo) / 2 + 1);
        for _ in 0..span {
            let port = self.next;
            self.next = if self.next + 2 > self.hi.saturating_sub(1) {
                self.lo
            } else {
                self.next + 2
            };
            if self.in_use.contains(&port) {
                continue;
            }
            let Ok(rtp) = std::net::UdpSocket::bind((ip, port)) else {
                continue;
            };
            let rtcp = std::net::UdpSocket::bind((ip, port + 1)).ok();
            self.in_use.insert(port);
            return Some((port, rtp, rtcp));
        }
        None
    }

    /// Bind `port` for a call's text stream (the SDP answer names audio + 2); None when that
    /// port is another call's or cannot be bound. It is then in use until released.
    fn bind_text(&mut self, ip: IpAddr, port: u16) -> Option<std::net::UdpSocket> {
        if self.in_use.contains(&port) {
            return None;
        }
        let sock = std::net::UdpSocket::bind((ip, port)).ok()?;
        self.in_use.insert(port);
        Some(sock)
    }

    fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }
}

type TransferMap = std::collections::HashMap<(crate::types::Lang, String), crate::flow::Transfer>;
type AfterHours = std::collections::HashSet<(crate::types::Lang, String)>;

pub struct SipTask {
    shared: Arc<Shared>,
    /// Until `shared.ready`: OPTIONS and INVITE get 503 + Retry-After.
    loading: bool,
    /// Who may talk to the endpoint at all (`[security]`): every message passes it first.
    guard: Guard,
    endpoint: Endpoint,
    udp: Arc<UdpSocket>,
    tcp_out: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    calls: HashMap<CallKey, Live>,
    ports: PortPool,
    media_ip: IpAddr,
    seed: u64,
    outgoing: Outgoing,
    /// Calls ringing until their answer time (calls.answer_delay_ms).
    pending_answers: Vec<(Instant, CallKey, sdp::SessionDescription)>,
    /// `[transfer]`: REFER fallback by bridging.
    bridge: BridgeConfig,
    /// Agent legs by their own key, and the caller → agent-leg index.
    agents: HashMap<CallKey, AgentCall>,
    agent_of: HashMap<CallKey, CallKey>,
    /// When the last "overloaded" warning was logged (at most one a second).
    shed_logged: Option<Instant>,
    /// The routing decisions of the calls starting in this second (`routing_now`).
    routing: Option<RoutingNow>,
}

/// The routing policy's decisions for a new call, made once per second and prompt set rather
/// than per call: they were a tenth of a call's set-up at 300 new calls a second (the calendar
/// recomputes the year's holidays at each of ~40 decisions). The calendar changes on whole
/// seconds at most (opening hours and days), so a call gets the decisions of its own second.
#[derive(Clone)]
struct RoutingNow {
    second: i64,
    prompts: Arc<crate::speech::cache::PromptSet>,
    transfers: TransferMap,
    after_hours: AfterHours,
    next_open: Vec<(crate::types::Lang, String)>,
    tty_transfers: Arc<std::collections::HashSet<String>>,
}

/// The routing decisions for a call starting now with `prompts` (cached for the second).
fn routing_now(
    cache: &mut Option<RoutingNow>,
    shared: &Shared,
    prompts: &Arc<crate::speech::cache::PromptSet>,
) -> RoutingNow {
    let now = jiff::Timestamp::now();
    let second = now.as_second();
    if let Some(r) = cache
        && r.second == second
        && Arc::ptr_eq(&r.prompts, prompts)
    {
        return r.clone();
    }
    let (transfers, after_hours) = transfers_now(shared, now);
    let next_open = next_open_sentences(shared, prompts, !after_hours.is_empty(), now);
    let r = RoutingNow {
        second,
        prompts: prompts.clone(),
        transfers,
        after_hours,
        next_open,
        tty_transfers: Arc::new(tty_transfers_now(shared, now)),
    };
    *cache = Some(r.clone());
    r
}

/// The policy's transfer decisions at `now`, per language and intent: the transfers on
/// offer, and the intents that would have one if the center were open. The special flows
/// are asked as they will stand when the flow offers the transfer: the agent flow after its
/// one try at self-service, the protected-case flow for identity verification only.
fn transfers_now(shared: &Shared, now: jiff::Timestamp) -> (TransferMap, AfterHours) {
    let router = &shared.router;
    let mut out = std::collections::HashMap::new();
    let mut closed = std::collections::HashSet::new();
    for lang in crate::types::Lang::ALL {
        for intent in crate::intents::INTENTS {
            let facts = crate::routing::Facts::new(lang)
                .question_attempted(*intent == "agent")
                .verification_requested(*intent == "protected_case");
            match router.decide(intent, &facts, now).map(|d| d.action) {
                Ok(crate::routing::Action::OfferTransfer {
                    queue,
                    needs_text_ahead_consent,
                }) => {
                    let t = crate::flow::Transfer {
                        queue_uri: router.queue_uri(queue).to_string(),
                        ask_text_ahead: needs_text_ahead_consent,
                    };
                    out.insert((lang, intent.to_string()), t);
                }
                Ok(crate::routing::Action::AfterHours { .. }) => {
                    closed.insert((lang, intent.to_string()));
                }
                _ => {}
            }
        }
    }
    (out, closed)
}

/// "Our representatives are available again Monday, November 30, at 8 a.m." per language,
/// from the calendar and the catalog's `after_hours_next` lead, when anything is closed.
fn next_open_sentences(
    shared: &Shared,
    prompts: &crate::speech::cache::PromptSet,
    closed: bool,
    now: jiff::Timestamp,
) -> Vec<(crate::types::Lang, String)> {
    if !closed {
        return Vec::new();
    }
    let calendar = shared.router.calendar();
    crate::types::Lang::ALL
        .into_iter()
        .filter_map(|lang| {
            let lead = prompts.catalog.get(lang, "after_hours_next")?.text.clone();
            let when = calendar.spoken_next_open(now, lang)?;
            let tail = prompts
                .catalog
                .get(lang, "after_hours_next_tail")
                .map(|p| p.text.clone())
                .unwrap_or_default();
            Some((lang, format!("{} {when}, {}", lead.trim(), tail.trim())))
        })
        .collect()
}

/// The intents a TTY caller is transferred for right now (the TTY agent queue).
fn tty_transfers_now(shared: &Shared, now: jiff::Timestamp) -> std::collections::HashSet<String> {
    crate::intents::INTENTS
        .iter()
        .filter(|i| shared.router.should_transfer(i, true, now))
        .map(|i| i.to_string())
        .collect()
}

/// Messages from TCP and TLS connection tasks (the transport says which).
enum TcpEvent {
    Message(SocketAddr, Transport, Vec<u8>),
    Open(SocketAddr, Transport, mpsc::Sender<Vec<u8>>),
    Closed(SocketAddr),
}

/// The TLS listener and its acceptor (`[sip] tls_listen`), bound by `server::run`.
pub struct TlsListener {
    pub listener: TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

/// A TLS handshake not done in this time closes the connection (a slow or silent peer must not
/// hold a task and a socket).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of SIP over TLS from PEM files: the certificate chain (leaf first) and the
/// private key (PKCS#8, PKCS#1 or SEC1). rustls with ring (the provider lettre already uses),
/// TLS 1.2 and 1.3, no client certificates.
pub fn tls_acceptor(cert: &str, key: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("sip.tls_cert {cert}: reading PEM certificates"))?;
    if certs.is_empty() {
        anyhow::bail!("sip.tls_cert {cert}: no certificate in the file");
    }
    // The key's bytes never reach an error message or a log line.
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("sip.tls_key {key}: reading a PEM private key"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("sip.tls_cert/tls_key: certificate and key do not make a TLS identity")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Retry-After of the 503s sent while the server loads (recognizers, prompts).
const LOADING_RETRY_AFTER_SECS: u32 = 5;

pub async fn run(
    shared: Arc<Shared>,
    udp: UdpSocket,
    tcp: TcpListener,
    tls: Option<TlsListener>,
    mut drain: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let cfg = &shared.config;
    let media_ip: IpAddr = if cfg.sip.public_ip.is_empty() {
        cfg.sip.listen.ip()
    } else {
        cfg.sip
            .public_ip
            .parse()
            .map_err(|e| anyhow::anyhow!("sip.public_ip: {e}"))?
    };
    let tls_addr = tls
        .as_ref()
        .and_then(|t| t.listener.local_addr().ok())
        .map(|a| SocketAddr::new(media_ip, a.port()));
    let endpoint = Endpoint::new(EndpointConfig {
        local_addr: SocketAddr::new(media_ip, cfg.sip.listen.port()),
        tls_addr,
        user_agent: cfg.sip.user_agent.clone(),
        max_message_bytes: cfg.sip.max_message_bytes,
        max_headers: cfg.sip.max_headers,
        ..EndpointConfig::default()
    });
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(1024);
    if let Some(tls) = tls {
        tokio::spawn(accept_tls(tls, tcp_tx.clone(), cfg.sip.max_message_bytes));
    }
    tokio::spawn(accept_tcp(tcp, tcp_tx, cfg.sip.max_message_bytes));
    let (sip_tx, mut sip_rx) = mpsc::channel::<SipCommand>(4096);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut endpoint = endpoint;
    endpoint.set_unavailable(Some(LOADING_RETRY_AFTER_SECS));
    let mut task = SipTask {
        loading: true,
        ports: PortPool::new(cfg.media.rtp_ports.lo, cfg.media.rtp_ports.hi),
        shared: shared.clone(),
        guard: Guard::new(cfg.security.guard_config()),
        endpoint,
        udp: Arc::new(udp),
        tcp_out: HashMap::new(),
        calls: HashMap::new(),
        media_ip,
        seed,
        pending_answers: Vec::new(),
        bridge: shared.config.transfer.clone(),
        agents: HashMap::new(),
        agent_of: HashMap::new(),
        shed_logged: None,
        routing: None,
        outgoing: Outgoing::start(
            &shared,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            cfg.media.ptime_ms,
        ),
    };
    let mut buf = vec![0u8; 65_536];
    let mut draining = false;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let timeout = task.endpoint.poll_timeout();
        let answer_at = task.pending_answers.iter().map(|(at, _, _)| *at).min();
        tokio::select! {
            _ = tokio::time::sleep_until(answer_at.unwrap_or_else(Instant::now).into()), if answer_at.is_some() => {
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) = task.pending_answers.drain(..).partition(|(at, _, _)| *at <= now);
                task.pending_answers = later;
                for (_, call, answer) in due {
                    // A call cancelled while ringing is already gone: the answer is refused.
                    if task.calls.contains_key(&call) {
                        let _ = task.endpoint.answer(now, call, &answer);
                    }
                }
            }
            r = task.udp.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    Metrics::inc(&shared.metrics.sip_messages_in_total);
                    task.receive(from, Transport::Udp, &buf[..n]);
                }
            }
            Some(ev) = tcp_rx.recv() => match ev {
                TcpEvent::Message(from, transport, data) => {
                    Metrics::inc(&shared.metrics.sip_messages_in_total);
                    task.receive(from, transport, &data);
                }
                TcpEvent::Open(from, transport, tx) => {
                    // Dropping `tx` instead of keeping it closes the connection at once.
                    if let Some(reason) = task.guard.connection(Instant::now(), from.ip()) {
                        tracing::debug!(%from, ?transport, reason = reason.as_str(), "SIP connection refused");
                        Metrics::inc(&shared.edge.tcp_refused);
                    } else {
                        task.tcp_out.insert(from, tx);
                    }
                }
                TcpEvent::Closed(from) => {
                    task.tcp_out.remove(&from);
                    task.endpoint.handle_connection_lost(Instant::now(), from);
                }
            },
            Some(cmd) = sip_rx.recv() => match cmd {
                SipCommand::Hangup(key) => { let _ = task.endpoint.hangup(Instant::now(), key); }
                SipCommand::Refer { call, uri, context } => task.refer(call, &uri, &context),
                SipCommand::Bridge { call, uri, context, codec } => task.place_agent_call(call, &uri, &context, codec),
                SipCommand::DropAgent(call) => task.drop_agent(call),
                SipCommand::Finished(key) => task.finished(key),
            },
            _ = tokio::time::sleep_until(timeout.unwrap_or_else(Instant::now).into()), if timeout.is_some() => {
                task.endpoint.handle_timeout(Instant::now());
            }
            changed = drain.changed(), if !draining => {
                if changed.is_ok() && *drain.borrow() {
                    draining = true;
                    task.endpoint.set_unavailable(Some(shared.config.calls.retry_after_secs));
                    drain_deadline = Some(Instant::now() + Duration::from_secs(shared.config.calls.drain_timeout_secs));
                    tracing::info!(calls = task.calls.len(), "draining: new calls get 503");
                }
            }
            _ = tokio::time::sleep_until(drain_deadline.unwrap_or_else(Instant::now).into()), if drain_deadline.is_some() => {
                // Live calls had their time: end them (each sends BYE and writes its record).
                drain_deadline = None;
                tracing::warn!(calls = task.calls.len(), "drain timeout: hanging up live calls");
                for live in task.calls.values() {
                    let _ = live.tx.try_send(CallCommand::Drain);
                }
            }
        }
        task.flush(&sip_tx, draining).await;
    }
}

impl SipTask {
    /// One datagram or framed TCP message: through the guard, then to the endpoint.
    fn receive(&mut self, from: SocketAddr, transport: Transport, data: &[u8]) {
        let now = Instant::now();
        if self.loading && self.shared.ready.load(Relaxed) {
            self.loading = false;
            self.endpoint.set_unavailable(None);
        }
        let verdict = self.guard.check(now, from.ip(), data);
        let edge = &self.shared.edge;
        edge.sources.store(self.guard.tracked() as i64, Relaxed);
        let reason = match verdict {
            Verdict::Accept => return self.endpoint.handle_input(now, from, transport, data),
            Verdict::Reject => {
                Metrics::inc(&edge.rejected_untrusted);
                return self.endpoint.refuse(from, transport, data, 403);
            }
            Verdict::Drop(reason) => reason,
            Verdict::DropScannerNoted => {
                // One line per source and ban period, for fail2ban (sip-configs/fail2ban/). The
                // User-Agent is not logged: it is the scanner's text, and could forge a match.
                tracing::warn!("SIP scanner dropped src={}", from.ip());
                DropReason::Scanner
            }
        };
        edge.dropped(reason);
        if reason == DropReason::Flood {
            Metrics::inc(&edge.bans);
            let cfg = &self.shared.config.security;
            tracing::warn!(
                "SIP source banned src={} reason=flood rate_limit_per_sec={} rate_limit_burst={} ban_secs={}",
                from.ip(),
                cfg.rate_limit_per_sec,
                cfg.rate_limit_burst,
                cfg.ban_secs
            );
        }
        // A banned source's TCP connections are closed (a new one is refused while the ban lasts).
        if matches!(reason, DropReason::Flood | DropReason::Banned) {
            self.tcp_out.retain(|peer, _| peer.ip() != from.ip());
        }
    }

    /// Send what the endpoint wants sent and act on its events.
    async fn flush(&mut self, sip_tx: &mpsc::Sender<SipCommand>, draining: bool) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.endpoint.poll_transmit() {
                progressed = true;
                Metrics::inc(&self.shared.metrics.sip_messages_out_total);
                match t.transport {
                    Transport::Udp => {
                        let _ = self.udp.send_to(&t.payload, t.destination).await;
                    }
                    Transport::Tcp | Transport::Tls => {
                        if let Some(tx) = self.tcp_out.get(&t.destination) {
                            let _ = tx.try_send(t.payload);
                        }
                    }
                }
            }
            while let Some(ev) = self.endpoint.poll_event() {
                progressed = true;
                self.on_event(ev, sip_tx, draining).await;
            }
            if !progressed {
                break;
            }
        }
    }

    async fn on_event(&mut self, ev: Event, sip_tx: &mpsc::Sender<SipCommand>, draining: bool) {
        let now = Instant::now();
        let ev = match self.on_agent_event(ev) {
            Some(ev) => ev,
            None => return,
        };
        let m = &self.shared.metrics;
        match ev {
            Event::Incoming { call, info } => {
                let cfg = &self.shared.config;
                let active = self.calls.len();
                let lag = super::lag::current(m);
                let lagging = !super::lag::admits(lag, cfg.calls.max_scheduling_lag_ms);
                let full = draining || active >= cfg.calls.max_concurrent;
                if full || lagging {
                    Metrics::inc(&m.calls_rejected_total);
                    if !full {
                        Metrics::inc(&m.calls_shed_total);
                        if self
                            .shed_logged
                            .is_none_or(|t| now.duration_since(t).as_secs() >= 1)
                        {
                            self.shed_logged = Some(now);
                            tracing::warn!(
                                lag_ms = lag.as_millis() as u64,
                                calls = active,
                                "overloaded: the runtime lags, new calls get 503"
                            );
                        }
                    }
                    let retry = cfg.calls.retry_after_secs.to_string();
                    let _ =
                        self.endpoint
                            .reject(now, call, 503, &[("Retry-After", retry.as_str())]);
                    return;
                }
                let Some(offer) = info.offer.as_ref() else {
                    // Offerless INVITEs (offer in our 200, answer in the ACK) are not supported yet.
                    Metrics::inc(&m.calls_failed_total);
                    let _ = self.endpoint.reject(now, call, 488, &[]);
                    return;
                };
                let Some((rtp_port, rtp, rtcp)) = self.ports.bind(self.media_ip) else {
                    tracing::error!("no free RTP port in {}", cfg.media.rtp_ports);
                    Metrics::inc(&m.calls_rejected_total);
                    let _ = self
                        .endpoint
                        .reject(now, call, 503, &[("Retry-After", "5")]);
                    return;
                };
                self.seed = self
                    .seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let session_id = self.seed >> 16;
                let key = srtp_key();
                let local = LocalMedia {
                    addr: self.media_ip,
                    port: rtp_port,
                    codecs: cfg.media.codec_list().unwrap_or_default(),
                    ptime_ms: cfg.media.ptime_ms,
                    session_id,
                    session_version: 1,
                    srtp: cfg.media.srtp,
                    srtp_key: key.clone(),
                };
                let mut media = match sdp::negotiate(offer, &local) {
                    Ok(n) => n,
                    Err(sdp::NegotiateError::SrtpRequired) => {
                        tracing::info!(call_id = %info.call_id, "plain RTP offered, SRTP required: 488");
                        self.ports.release(rtp_port);
                        Metrics::inc(&m.calls_failed_total);
                        let _ = self.endpoint.reject(now, call, 488, &[]);
                        return;
                    }
                    Err(e) => {
                        tracing::info!(call_id = %info.call_id, error = ?e, "no common media: 488");
                        self.ports.release(rtp_port);
                        Metrics::inc(&m.calls_failed_total);
                        let _ = self.endpoint.reject(now, call, 488, &[]);
                        return;
                    }
                };
                // The pacing thread sends on a clone of the RTP socket; this task receives on it.
                let Ok(send_half) = rtp.try_clone() else {
                    self.ports.release(rtp_port);
                    let _ = self.endpoint.reject(now, call, 500, &[]);
                    return;
                };
                // The RTP socket stays out of tokio's reactor: the media thread reads it (a
                // registered socket would wake the reactor at every packet); the call task
                // registers a clone only while it relays a bridged call.
                let (Ok(()), rtcp) = (
                    rtp.set_nonblocking(true),
                    rtcp.and_then(|s| tokio_udp(s).ok()),
                ) else {
                    self.ports.release(rtp_port);
                    let _ = self.endpoint.reject(now, call, 500, &[]);
                    return;
                };
                // RFC 4103 text: its port (audio + 2) is bound now, or the stream is declined.
                let text = media.text.clone().and_then(|t| {
                    let sock = self.ports.bind_text(self.media_ip, t.local_port)?;
                    match tokio_udp(sock) {
                        Ok(socket) => Some(super::rtt_session::TextSetup {
                            socket,
                            media: t,
                            config: cfg.rtt.clone(),
                        }),
                        Err(_) => {
                            self.ports.release(t.local_port);
                            None
                        }
                    }
                });
                if text.is_none() && media.text.is_some() {
                    tracing::warn!("text port not available: m=text declined");
                    media.reject_text();
                }
                let text_port = text.as_ref().map(|t| t.media.local_port);
                // Calls to the TTY line's number start as a text conversation.
                let tty_line = cfg.tty_line();
                let tty = tty_line.is_tty_number(&info.request_user)
                    || tty_line.is_tty_number(&info.to_user);
                let prompts = self.shared.prompts.load();
                let routing = routing_now(&mut self.routing, &self.shared, &prompts);
                let record = CallRecord {
                    call_id: info.call_id.clone(),
                    started_at: now_rfc3339(),
                    answered_at: Some(now_rfc3339()),
                    caller: redact(&info.from_user),
                    to: info.to_user.clone(),
                    transport: match info.transport {
                        Transport::Udp => "udp".into(),
                        Transport::Tcp => "tcp".into(),
                        Transport::Tls => "tls".into(),
                    },
                    codec: Some(media.codec.name().into()),
                    mode: if tty { "tty".into() } else { "voice".into() },
                    ..Default::default()
                };
                self.shared.store.save(record.clone());
                tracing::info!(call_id = %info.call_id, caller = %record.caller, codec = %media.codec, srtp = media.srtp.as_ref().map(|k| k.suite.name()),
                    rtp_port, remote = ?media.remote_rtp, "call answered");
                let answer = media.answer.clone();
                let srtp_keys = media.srtp.clone();
                let (tx, rx) = mpsc::channel(64);
                let (events_tx, events_rx) = mpsc::channel(16);
                let stream = Arc::new(Stream::new(
                    send_half,
                    media.codec,
                    media.payload_type,
                    cfg.media.ptime_ms,
                    self.seed,
                    events_tx,
                ));
                // SRTP: our key protects what the stream sends, the caller's checks what arrives.
                let srtp_in = match &media.srtp {
                    Some(k) => match (
                        Protector::new(k.suite, &k.local),
                        Unprotector::new(k.suite, &k.remote),
                    ) {
                        (Ok(p), Ok(u)) => {
                            stream.set_srtp(Some(p));
                            Some(u)
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::error!(error = %e, "SRTP session not created: 488");
                            self.ports.release(rtp_port);
                            let _ = self.endpoint.reject(now, call, 488, &[]);
                            return;
                        }
                    },
                    None => None,
                };
                self.outgoing.add(stream.clone());
                let setup = CallSetup {
                    srtp_in,
                    key: call,
                    record,
                    rtp,
                    rtcp,
                    stream,
                    stream_events: events_rx,
                    media,
                    prompts: prompts.clone(),
                    flow: FlowConfig {
                        transfers: routing.transfers,
                        next_open: routing.next_open,
                        after_hours: routing.after_hours,
                        entry: cfg.entry.clone(),
                        readbacks: crate::types::Lang::ALL
                            .into_iter()
                            .filter_map(|l| {
                                crate::flow::entry::Readback::from_catalog(&prompts.catalog, l)
                                    .map(|r| (l, r))
                            })
                            .collect(),
                        email_readbacks: crate::types::Lang::ALL
                            .into_iter()
                            .filter_map(|l| {
                                crate::flow::entry::Readback::email_from_catalog(
                                    &prompts.catalog,
                                    l,
                                )
                                .map(|r| (l, r))
                            })
                            .collect(),
                        sms_links: self.shared.sms_links.clone(),
                        // A text goes only to a number that can take one (a US number).
                        sms_to_caller: crate::nlu::slots::phone(&info.from_user).is_some(),
                        no_input_timeout: Duration::from_secs(cfg.calls.no_input_timeout_secs),
                        max_retries: cfg.calls.max_retries,
                        speech: self.shared.speech_langs(),
                        spelling: crate::types::Lang::ALL
                            .into_iter()
                            .filter(|l| cfg.asr.spelling(*l))
                            .collect(),
                        start_lang: None,
                        question_silence_ms: cfg.asr.trailing_silence_ms,
                        choice_silence_ms: cfg.asr.trailing_silence_ms.min(500),
                    },
                    rtp_timeout: cfg.media.rtp_timeout(),
                    ptime_ms: cfg.media.ptime_ms,
                    tty,
                    tty_config: tty_line,
                    nlu: self.shared.nlu.load(),
                    caller_id: Some(crate::pii::Pii::new(info.from_user.clone())),
                    tty_transfers: routing.tty_transfers,
                    tty_queue_uri: self
                        .shared
                        .router
                        .queue_uri(crate::routing::Queue::Tty)
                        .to_string(),
                    text,
                    bridge: self.bridge.clone(),
                };
                tokio::spawn(call::run(setup, rx, sip_tx.clone(), self.shared.clone()));
                self.calls.insert(
                    call,
                    Live {
                        tx,
                        rtp_port,
                        text_port,
                        session_id,
                        version: 1,
                        srtp_key: key,
                        srtp: srtp_keys,
                    },
                );
                Metrics::inc(&m.calls_total);
                m.calls_active.fetch_add(1, Relaxed);
                let delay = cfg.calls.answer_delay_ms;
                if delay == 0 {
                    let _ = self.endpoint.answer(now, call, &answer);
                } else {
                    let _ = self.endpoint.ring(now, call);
                    self.pending_answers
                        .push((now + Duration::from_millis(delay), call, answer));
                }
            }
            Event::Reoffer { call, offer } => {
                if self.agents.contains_key(&call) {
                    // The relay keeps the formats it started with; a changed agent leg is
                    // refused and keeps the old session (RFC 3261 §14.2).
                    let _ = self.endpoint.reject(now, call, 488, &[]);
                    return;
                }
                let Some(live) = self.calls.get_mut(&call) else {
                    let _ = self.endpoint.reject(now, call, 481, &[]);
                    return;
                };
                let Some(offer) = offer else {
                    let _ = self.endpoint.reject(now, call, 488, &[]);
                    return;
                };
                let mut local = LocalMedia {
                    addr: self.media_ip,
                    port: live.rtp_port,
                    codecs: self.shared.config.media.codec_list().unwrap_or_default(),
                    ptime_ms: self.shared.config.media.ptime_ms,
                    session_id: live.session_id,
                    session_version: live.version + 1,
                    srtp: self.shared.config.media.srtp,
                    srtp_key: live.srtp_key.clone(),
                };
                // SRTP re-keying (RFC 4568 §7.1.4 lets the answerer keep its key or draw a new
                // one): we keep ours while the suite stays, so our outgoing stream goes on
                // undisturbed, and draw a fresh one when the offer changes the suite (a key is
                // never used under two transforms). The offerer's new key re-keys what we
                // receive (`SrtpRekey`). A plain re-offer on a `required` call is refused by
                // `negotiate` (488, the old session stays); on `optional` it is followed.
                let mut negotiated = sdp::negotiate(&offer, &local);
                if let (Ok(n), Some(old)) = (&negotiated, &live.srtp)
                    && n.srtp.as_ref().is_some_and(|k| k.suite != old.suite)
                {
                    local.srtp_key = srtp_key();
                    negotiated = sdp::negotiate(&offer, &local);
                }
                let rekey = negotiated
                    .as_ref()
                    .map_err(|e| e.to_string())
                    .and_then(|n| {
                        sdp::SrtpRekey::between(live.srtp.as_ref(), n.srtp.as_ref())
                            .map_err(|e| e.to_string())
                    });
                match (negotiated, rekey) {
                    (Ok(mut media), Ok(rekey)) => {
                        if live.text_port.is_none() {
                            // No text socket for this call: a text stream added later is declined.
                            media.reject_text();
                        }
                        live.version += 1;
                        live.srtp_key = local.srtp_key;
                        live.srtp = media.srtp.clone();
                        let answer = media.answer.clone();
                        tracing::info!(direction = ?media.direction, codec = %media.codec,
                            srtp = media.srtp.as_ref().map(|k| k.suite.name()),
                            rekey_in = rekey.inbound.is_some(), rekey_out = rekey.outbound.is_some(), "re-INVITE");
                        let _ = live
                            .tx
                            .try_send(CallCommand::Media(Box::new(media), Box::new(rekey)));
                        let _ = self.endpoint.answer(now, call, &answer);
                    }
                    (_, rekey) => {
                        let error = rekey.err().unwrap_or_default();
                        tracing::info!(%error, "re-INVITE refused: 488, the session stays");
                        let _ = self.endpoint.reject(now, call, 488, &[]);
                    }
                }
            }
            Event::Confirmed { call } => {
                if let Some(live) = self.calls.get(&call) {
                    let _ = live.tx.try_send(CallCommand::Confirmed);
                }
            }
            Event::Cancelled { call } => self.tell(call, CallCommand::RemoteHangup("cancelled")),
            Event::RemoteHangup { call } => {
                self.tell(call, CallCommand::RemoteHangup("caller_bye"))
            }
            Event::Terminated { call, reason } => {
                let why = match reason {
                    crate::sip::TerminateReason::LocalBye => "ivr_hangup",
                    crate::sip::TerminateReason::AckTimeout => "ack_timeout",
                    crate::sip::TerminateReason::TransportError => "transport_error",
                };
                self.tell(call, CallCommand::Ended(why));
            }
            Event::TransferProgress { call, status, done } => {
                self.tell(call, CallCommand::Transfer { status, done })
            }
            // Outgoing calls are agent legs, handled in `on_agent_event`.
            Event::Progress { .. } | Event::Answered { .. } | Event::Failed { .. } => {}
        }
    }

    /// Blind transfer by REFER (RFC 3515) with the call's context in User-to-User (RFC 7433,
    /// hex). A refusal shows up as a final TransferProgress and the flow apologizes.
    fn refer(&mut self, call: CallKey, uri: &str, context: &str) {
        let uui = user_to_user(context);
        if let Err(e) =
            self.endpoint
                .refer(Instant::now(), call, uri, &[("User-to-User", uui.as_str())])
        {
            tracing::warn!(error = ?e, "REFER not sent");
            self.tell(
                call,
                CallCommand::Transfer {
                    status: 500,
                    done: true,
                },
            );
        }
    }

    fn tell(&mut self, call: CallKey, cmd: CallCommand) {
        if let Some(live) = self.calls.get(&call) {
            // A full queue means the call task is wedged or gone; the command is best effort.
            let _ = live.tx.try_send(cmd);
        }
    }

    fn finished(&mut self, key: CallKey) {
        // The caller's leg is gone: so is its bridge (BYE, or CANCEL while it rings).
        self.drop_agent(key);
        if let Some(live) = self.calls.remove(&key) {
            self.ports.release(live.rtp_port);
            if let Some(port) = live.text_port {
                self.ports.release(port);
            }
            Metrics::inc(&self.shared.metrics.calls_completed_total);
            self.shared.metrics.calls_active.fetch_sub(1, Relaxed);
        }
    }
}

impl SipTask {
    /// Bridge fallback: call the agent queue from a fresh RTP port, with the call's context
    /// in User-to-User as the REFER would have carried it.
    fn place_agent_call(&mut self, caller: CallKey, uri: &str, context: &str, codec: Codec) {
        if let Err(e) = self.try_place_agent_call(caller, uri, context, codec) {
            tracing::warn!(error = %e, "bridged call not placed");
            self.tell(caller, CallCommand::Agent(AgentEvent::Failed(0)));
        }
    }

    fn try_place_agent_call(
        &mut self,
        caller: CallKey,
        uri: &str,
        context: &str,
        codec: Codec,
    ) -> anyhow::Result<()> {
        if !self.calls.contains_key(&caller) || self.agent_of.contains_key(&caller) {
            anyhow::bail!("the caller is gone or already bridged");
        }
        let destination = self.bridge.destination(uri)?;
        let (rtp_port, rtp, _rtcp) = self
            .ports
            .bind(self.media_ip)
            .ok_or_else(|| anyhow::anyhow!("no free RTP port"))?;
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = srtp_key();
        let placed = bridge::offer(
            self.media_ip,
            rtp_port,
            codec,
            self.seed >> 16,
            self.bridge.srtp,
            &key,
        )
        .map_err(anyhow::Error::from)
        .and_then(|offer| {
            let request = OutgoingCall {
                target: uri.to_string(),
                // Never the caller's number: the agent gets the context, not personal data.
                from_user: "ivr".into(),
                destination,
                transport: Transport::Udp,
                offer,
                headers: vec![("User-to-User".into(), user_to_user(context))],
            };
            Ok(self.endpoint.invite(Instant::now(), request)?)
        });
        let agent = match placed {
            Ok(k) => k,
            Err(e) => {
                self.ports.release(rtp_port);
                return Err(e);
            }
        };
        tracing::info!(%destination, rtp_port, "bridging: calling the agent queue");
        self.agents.insert(
            agent,
            AgentCall {
                caller,
                rtp_port,
                rtp: Some(rtp),
                srtp_key: key,
            },
        );
        self.agent_of.insert(caller, agent);
        Ok(())
    }

    /// End the agent leg of `caller`, if any: BYE when up, CANCEL while it rings. Its end
    /// comes back as an endpoint event that frees the port.
    fn drop_agent(&mut self, caller: CallKey) {
        if let Some(&agent) = self.agent_of.get(&caller) {
            let _ = self.endpoint.hangup(Instant::now(), agent);
        }
    }

    fn forget_agent(&mut self, agent: CallKey) -> Option<CallKey> {
        let a = self.agents.remove(&agent)?;
        self.ports.release(a.rtp_port);
        self.agent_of.remove(&a.caller);
        Some(a.caller)
    }

    /// Events of agent legs go to the caller's task; others are returned for `on_event`.
    fn on_agent_event(&mut self, ev: Event) -> Option<Event> {
        let call = match &ev {
            Event::Answered { call, .. }
            | Event::Failed { call, .. }
            | Event::Progress { call, .. }
            | Event::RemoteHangup { call }
            | Event::Terminated { call, .. } => *call,
            _ => return Some(ev),
        };
        if !self.agents.contains_key(&call) {
            return Some(ev);
        }
        match ev {
            Event::Progress { .. } => {}
            Event::Answered { answer, .. } => self.agent_answered(call, answer),
            Event::Failed { status, .. } => {
                if let Some(caller) = self.forget_agent(call) {
                    tracing::info!(status, "agent leg failed");
                    self.tell(caller, CallCommand::Agent(AgentEvent::Failed(status)));
                }
            }
            _ => {
                if let Some(caller) = self.forget_agent(call) {
                    tracing::info!("agent leg ended");
                    self.tell(caller, CallCommand::Agent(AgentEvent::Hangup));
                }
            }
        }
        None
    }

    fn agent_answered(&mut self, agent: CallKey, answer: Option<sdp::SessionDescription>) {
        let Some(a) = self.agents.get_mut(&agent) else {
            return;
        };
        let caller = a.caller;
        let leg = answer
            .as_ref()
            .ok_or(bridge::BridgeError::BadAnswer)
            .and_then(|sd| bridge::agent_media(sd, self.bridge.srtp, &a.srtp_key))
            .map_err(anyhow::Error::from)
            .and_then(|(remote, media, srtp)| {
                let std = a
                    .rtp
                    .take()
                    .ok_or_else(|| anyhow::anyhow!("agent RTP socket already handed over"))?;
                Ok(AgentLeg {
                    socket: tokio_udp(std)?,
                    remote,
                    media,
                    srtp,
                })
            });
        match leg {
            Ok(leg) => {
                tracing::info!(remote = %leg.remote, codec = %leg.media.codec,
                    srtp = leg.srtp.as_ref().map(|k| k.suite.name()), "agent answered: bridged");
                self.tell(
                    caller,
                    CallCommand::Agent(AgentEvent::Answered(Box::new(leg))),
                );
            }
            Err(e) => {
                // The agent is up but we cannot talk to it: hang up; the caller hears the
                // failure now, the BYE's end is absorbed by `forget_agent`.
                tracing::warn!(error = %e, "agent answer unusable");
                let _ = self.endpoint.hangup(Instant::now(), agent);
                self.tell(caller, CallCommand::Agent(AgentEvent::Failed(488)));
            }
        }
    }
}

/// RFC 7433 User-to-User: the context in hex, as the REFER carries it.
fn user_to_user(context: &str) -> String {
    let hex: String = context.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex};encoding=hex;purpose=call-context")
}

fn tokio_udp(s: std::net::UdpSocket) -> std::io::Result<UdpSocket> {
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

async fn accept_tcp(listener: TcpListener, events: mpsc::Sender<TcpEvent>, max_message: usize) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(stream_connection(
            stream,
            peer,
            Transport::Tcp,
            events.clone(),
            max_message,
        ));
    }
}

/// TLS connections: the handshake (bounded by `TLS_HANDSHAKE_TIMEOUT`) in the connection's own
/// task, then the same framing as TCP. The guard admits the connection once it is up (`Open`).
async fn accept_tls(tls: TlsListener, events: mpsc::Sender<TcpEvent>, max_message: usize) {
    loop {
        let Ok((stream, peer)) = tls.listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tls.acceptor.clone();
        let events = events.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    stream_connection(stream, peer, Transport::Tls, events, max_message).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "SIP TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "SIP TLS handshake timed out"),
            }
        });
    }
}

/// One TCP or TLS connection: cut the byte stream into SIP messages (Content-Length framing) and
/// write what the endpoint sends to this peer.
async fn stream_connection<S>(
    stream: S,
    peer: SocketAddr,
    transport: Transport,
    events: mpsc::Sender<TcpEvent>,
    max_message: usize,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    if events
        .send(TcpEvent::Open(peer, transport, tx))
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            // TLS buffers records: flush so each message leaves at once.
            if wr.write_all(&msg).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let mut writer = writer;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    'read: loop {
        let read = tokio::select! {
            r = rd.read(&mut chunk) => r,
            // The SIP task dropped its sender (an untrusted or banned peer), or a write failed:
            // the connection is closed.
            _ = &mut writer => break,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            // Keep-alive CRLFs between messages (RFC 5626 §3.5.1) are skipped.
            let skip = buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            buf.drain(..skip);
            match crate::sip::message::frame_len(&buf) {
                Ok(Some(len)) => {
                    let msg: Vec<u8> = buf.drain(..len).collect();
                    if events
                        .send(TcpEvent::Message(peer, transport, msg))
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Ok(None) if buf.len() > max_message => break 'read,
                Ok(None) => break,
                // A stream we cannot frame cannot be resynchronised: close it (RFC 3261 §18.3).
                Err(_) => break 'read,
            }
        }
    }
    writer.abort();
    let _ = events.send(TcpEvent::Closed(peer)).await;
}
