//! SDP (RFC 4566) parse/print and the answerer side of offer/answer (RFC 3264).
//!
//! Only what a telephony answerer needs is modelled; unknown lines are kept in order so that a
//! parsed description prints back without loss of the parts we understand.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::rtp::srtp::{CryptoAttr, KeySalt, Protector, SrtpError, Suite, Unprotector};
use crate::types::{Codec, Direction};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: u64,
    pub session_version: u64,
    pub addr: String,
}

/// `c=IN IP4 192.0.2.1`; `ip` is None for FQDNs (which we cannot use without DNS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub addr: String,
    pub ip: Option<IpAddr>,
}

impl Connection {
    pub fn new(ip: IpAddr) -> Connection {
        Connection {
            addr: ip.to_string(),
            ip: Some(ip),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDescription {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    pub connection: Option<Connection>,
    pub attributes: Vec<Attribute>,
    /// Other media-level lines (i=, b=, k=) kept verbatim as (type, value).
    pub other: Vec<(char, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    pub connection: Option<Connection>,
    pub timing: String,
    pub attributes: Vec<Attribute>,
    pub media: Vec<MediaDescription>,
    /// Other session-level lines (i=, u=, e=, p=, b=, r=, z=, k=) kept verbatim.
    pub other: Vec<(char, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SdpError {
    NotUtf8,
    MissingVersion,
    BadLine(usize),
    MissingOrigin,
    TooLarge,
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for SdpError {}

const MAX_SDP_LINES: usize = 512;
const MAX_MEDIA: usize = 16;

fn parse_connection(v: &str) -> Option<Connection> {
    let mut it = v.split_whitespace();
    if it.next()? != "IN" {
        return None;
    }
    let _addr_type = it.next()?;
    // Multicast "224.2.1.1/127" carries a TTL suffix; the address is what matters.
    let addr = it.next()?.split('/').next()?.to_string();
    Some(Connection {
        ip: addr.parse().ok(),
        addr,
    })
}

fn parse_attribute(v: &str) -> Attribute {
    match v.split_once(':') {
        Some((n, val)) => Attribute {
            name: n.to_string(),
            value: Some(val.to_string()),
        },
        None => Attribute {
            name: v.to_string(),
            value: None,
        },
    }
}

fn direction_of(attrs: &[Attribute]) -> Option<Direction> {
    attrs.iter().rev().find_map(|a| match a.name.as_str() {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    })
}

impl SessionDescription {
    pub fn parse(data: &[u8]) -> Result<SessionDescription, SdpError> {
        let text = std::str::from_utf8(data).map_err(|_| SdpError::NotUtf8)?;
        let mut sd = SessionDescription {
            origin: Origin {
                username: "-".into(),
                session_id: 0,
                session_version: 0,
                addr: String::new(),
            },
            session_name: "-".into(),
            connection: None,
            timing: "0 0".into(),
            attributes: Vec::new(),
            media: Vec::new(),
            other: Vec::new(),
        };
        let (mut saw_version, mut saw_origin) = (false, false);
        for (n, raw) in text.split('\n').enumerate() {
            if n >= MAX_SDP_LINES {
                return Err(SdpError::TooLarge);
            }
            let line = raw.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let bytes = line.as_bytes();
            // "type=value" with a one-letter type and no space around '=' (RFC 4566 §5).
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(SdpError::BadLine(n + 1));
            }
            let (kind, value) = (bytes[0] as char, &line[2..]);
            if !saw_version {
                if kind != 'v' || value.trim() != "0" {
                    return Err(SdpError::MissingVersion);
                }
                saw_version = true;
                continue;
            }
            match (kind, sd.media.last_mut()) {
                ('m', _) => {
                    if sd.media.len() >= MAX_MEDIA {
                        return Err(SdpError::TooLarge);
                    }
                    let mut it = value.split_whitespace();
                    let kind = it.next().ok_or(SdpError::BadLine(n + 1))?.to_string();
                    // "port/number-of-ports" is legal; we only use the base port.
                    let port = it
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse().ok())
                        .ok_or(SdpError::BadLine(n + 1))?;
                    let proto = it.next().ok_or(SdpError::BadLine(n + 1))?.to_string();
                    let formats = it.map(str::to_string).collect();
                    sd.media.push(MediaDescription {
                        kind,
                        port,
                        proto,
                        formats,
                        connection: None,
                        attributes: Vec::new(),
                        other: Vec::new(),
                    });
                }
                ('o', None) => {
                    let f: Vec<&str> = value.split_whitespace().collect();
                    if f.len() != 6 {
                        return Err(SdpError::BadLine(n + 1));
                    }
                    sd.origin = Origin {
                        username: f[0].to_string(),
                        session_id: f[1].parse().unwrap_or(0),
                        session_version: f[2].parse().unwrap_or(0),
                        addr: f[5].to_string(),
                    };
                    saw_origin = true;
                }
                ('s', None) => sd.session_name = value.to_string(),
                ('t', None) => sd.timing = value.to_string(),
                ('c', None) => {
                    sd.connection = Some(parse_connection(value).ok_or(SdpError::BadLine(n + 1))?)
                }
                ('c', Some(m)) => {
                    m.connection = Some(parse_connection(value).ok_or(SdpError::BadLine(n + 1))?)
                }
                ('a', None) => sd.attributes.push(parse_attribute(value)),
                ('a', Some(m)) => m.attributes.push(parse_attribute(value)),
                (k, None) => sd.other.push((k, value.to_string())),
                (k, Some(m)) => m.other.push((k, value.to_string())),
            }
        }
        if !saw_version {
            return Err(SdpError::MissingVersion);
        }
        if !saw_origin {
            return Err(SdpError::MissingOrigin);
        }
        Ok(sd)
    }

    /// Session-level direction, sendrecv by default.
    pub fn direction(&self) -> Direction {
        direction_of(&self.attributes).unwrap_or_default()
    }
}

impl MediaDescription {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.value.as_deref())
    }

    /// (payload type, encoding name, clock rate, channels) for each rtpmap line.
    pub fn rtpmaps(&self) -> impl Iterator<Item = (u8, &str, u32, u8)> {
        self.attributes
            .iter()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| {
                let v = a.value.as_deref()?;
                let (pt, enc) = v.split_once(' ')?;
                let mut parts = enc.trim().split('/');
                let name = parts.next()?;
                let rate = parts.next()?.parse().ok()?;
                let channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
                Some((pt.trim().parse().ok()?, name, rate, channels))
            })
    }

    /// The offered payload type for `codec` (static 0/8 need no rtpmap, RFC 3551).
    fn payload_type_for(&self, codec: Codec) -> Option<u8> {
        let offered = |pt: u8| {
            self.formats
                .iter()
                .any(|f| f.parse::<u8>().ok() == Some(pt))
        };
        let mapped = self.rtpmaps().find(|&(pt, name, rate, _)| {
            offered(pt) && name.eq_ignore_ascii_case(codec.name()) && rate == codec.rtp_clock()
        });
        if let Some((pt, ..)) = mapped {
            return Some(pt);
        }
        let static_pt = match codec {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => return None,
        };
        // A static PT re-mapped by rtpmap to another codec is not this codec.
        let remapped = self.rtpmaps().any(|(pt, ..)| pt == static_pt);
        (offered(static_pt) && !remapped).then_some(static_pt)
    }

    fn rtpmap_pt(&self, name: &str, rate: u32) -> Option<u8> {
        self.rtpmaps()
            .find(|&(_, n, r, _)| n.eq_ignore_ascii_case(name) && r == rate)
            .map(|(pt, ..)| pt)
    }
}

fn write_attrs(f: &mut fmt::Formatter<'_>, attrs: &[Attribute]) -> fmt::Result {
    for a in attrs {
        match &a.value {
            Some(v) => write!(f, "a={}:{}\r\n", a.name, v)?,
            None => write!(f, "a={}\r\n", a.name)?,
        }
    }
    Ok(())
}

fn addr_type(c: &Connection) -> &'static str {
    match c.ip {
        Some(IpAddr::V6(_)) => "IP6",
        _ => "IP4",
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        let o_type = if o.addr.contains(':') { "IP6" } else { "IP4" };
        write!(
            f,
            "v=0\r\no={} {} {} IN {} {}\r\n",
            o.username, o.session_id, o.session_version, o_type, o.addr
        )?;
        write!(
            f,
            "s={}\r\n",
            if self.session_name.is_empty() {
                "-"
            } else {
                &self.session_name
            }
        )?;
        for (k, v) in self
            .other
            .iter()
            .filter(|(k, _)| matches!(k, 'i' | 'u' | 'e' | 'p'))
        {
            write!(f, "{k}={v}\r\n")?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c=IN {} {}\r\n", addr_type(c), c.addr)?;
        }
        for (k, v) in self.other.iter().filter(|(k, _)| *k == 'b') {
            write!(f, "{k}={v}\r\n")?;
        }
        write!(f, "t={}\r\n", self.timing)?;
        for (k, v) in self
            .other
            .iter()
            .filter(|(k, _)| matches!(k, 'r' | 'z' | 'k'))
        {
            write!(f, "{k}={v}\r\n")?;
        }
        write_attrs(f, &self.attributes)?;
        for m in &self.media {
            write!(f, "m={} {} {}", m.kind, m.port, m.proto)?;
            for fmt_ in &m.formats {
                write!(f, " {fmt_}")?;
            }
            f.write_str("\r\n")?;
            for (k, v) in m.other.iter().filter(|(k, _)| *k == 'i') {
                write!(f, "{k}={v}\r\n")?;
            }
            if let Some(c) = &m.connection {
                write!(f, "c=IN {} {}\r\n", addr_type(c), c.addr)?;
            }
            for (k, v) in m.other.iter().filter(|(k, _)| *k != 'i') {
                write!(f, "{k}={v}\r\n")?;
            }
            write_attrs(f, &m.attributes)?;
        }
        Ok(())
    }
}

/// `[media] srtp`: whether calls may, or must, use SRTP keyed by SDES (RFC 4568).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpMode {
    /// Plain RTP only: `RTP/SAVP` audio is declined, `a=crypto` on `RTP/AVP` ignored.
    Off,
    /// SRTP when the offer asks for it (`RTP/SAVP`, or `RTP/AVP` with `a=crypto`), else plain.
    #[default]
    Optional,
    /// SRTP only: an offer without a usable `a=crypto` gets 488.
    Required,
}

/// What we can send and receive, in our order of preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMedia {
    pub addr: IpAddr,
    pub port: u16,
    pub codecs: Vec<Codec>,
    pub ptime_ms: u32,
    pub session_id: u64,
    pub session_version: u64,
    pub srtp: SrtpMode,
    /// Our SRTP master key and salt for this call (drawn by the shell), used when SRTP is
    /// negotiated: it goes in our `a=crypto` and keys what we send.
    pub srtp_key: KeySalt,
}

/// The SRTP keys of a negotiated audio stream: ours protects what we send, the offerer's
/// what we receive (RFC 4568 §6.1: each side sends with the key it announced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: Suite,
    pub local: KeySalt,
    pub remote: KeySalt,
}

/// The SRTP sessions a re-negotiation (re-INVITE) needs, per direction: `None` where the
/// running session stays (same suite and key: its replay window and rollover counter go on),
/// `Some(new)` where SRTP started, stopped (`Some(None)`: plain from now on) or was re-keyed
/// (a fresh session: rollover counter and replay window start again, RFC 4568 §7.1.4).
#[derive(Debug, Default)]
pub struct SrtpRekey {
    pub inbound: Option<Option<Unprotector>>,
    pub outbound: Option<Option<Protector>>,
}

impl SrtpRekey {
    /// From the stream's keys before (`old`) and after (`new`). An error (libsrtp2 refused a
    /// session) leaves the caller to keep the old session: nothing may go out in clear.
    pub fn between(old: Option<&SrtpKeys>, new: Option<&SrtpKeys>) -> Result<SrtpRekey, SrtpError> {
        let changed = |same: fn(&SrtpKeys, &SrtpKeys) -> bool| match (old, new) {
            (None, None) => false,
            (Some(o), Some(n)) => o.suite != n.suite || !same(o, n),
            _ => true,
        };
        let inbound = if changed(|o, n| o.remote == n.remote) {
            Some(
                new.map(|k| Unprotector::new(k.suite, &k.remote))
                    .transpose()?,
            )
        } else {
            None
        };
        let outbound = if changed(|o, n| o.local == n.local) {
            Some(new.map(|k| Protector::new(k.suite, &k.local)).transpose()?)
        } else {
            None
        };
        Ok(SrtpRekey { inbound, outbound })
    }
}

/// RFC 4103 real-time text, when offered. We answer it on `local_port` = audio port + 2
/// (the next even port), which the media layer must bind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextMedia {
    pub payload_type: u8,
    pub red_payload_type: Option<u8>,
    pub remote: Option<SocketAddr>,
    pub local_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
    pub ptime_ms: u32,
    /// None when the peer holds (port 0 or c=0.0.0.0).
    pub remote_rtp: Option<SocketAddr>,
    /// Our direction.
    pub direction: Direction,
    pub text: Option<TextMedia>,
    /// Some when the audio stream is SRTP.
    pub srtp: Option<SrtpKeys>,
    pub answer: SessionDescription,
}

impl Negotiated {
    /// Declines the text stream after all (its port could not be bound): the answer's `m=text`
    /// gets port 0, as a stream refused from the start.
    pub fn reject_text(&mut self) {
        let Some(text) = self.text.take() else {
            return;
        };
        for m in &mut self.answer.media {
            if m.kind == "text" && m.port == text.local_port {
                m.port = 0;
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegotiateError {
    NoAudio,
    NoCommonCodec,
    /// `srtp = "required"` and the offer's audio is plain RTP (no usable `a=crypto`).
    SrtpRequired,
}

impl fmt::Display for NegotiateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for NegotiateError {}

fn is_rtp_avp(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("RTP/AVP") || proto.eq_ignore_ascii_case("RTP/AVPF")
}

fn is_rtp_savp(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("RTP/SAVP") || proto.eq_ignore_ascii_case("RTP/SAVPF")
}

/// The offer's first `a=crypto` we can use (the offerer lists them in its preference order).
fn offered_crypto(m: &MediaDescription) -> Option<CryptoAttr> {
    m.attributes
        .iter()
        .filter(|a| a.name.eq_ignore_ascii_case("crypto"))
        .find_map(|a| CryptoAttr::parse(a.value.as_deref()?))
}

/// Whether audio m-line `m` is usable under `mode`, and with which offered crypto.
/// `Err(true)` marks a plain stream refused only because SRTP is required.
fn audio_usable(m: &MediaDescription, mode: SrtpMode) -> Result<Option<CryptoAttr>, bool> {
    if m.kind != "audio" || m.port == 0 {
        return Err(false);
    }
    let savp = is_rtp_savp(&m.proto);
    if !savp && !is_rtp_avp(&m.proto) {
        return Err(false);
    }
    let crypto = match mode {
        SrtpMode::Off => None,
        SrtpMode::Optional | SrtpMode::Required => offered_crypto(m),
    };
    match (mode, savp, crypto) {
        (_, _, Some(c)) => Ok(Some(c)),
        // SAVP without a crypto line we can use (or with SRTP off) is not a stream we can do.
        (_, true, None) => Err(false),
        (SrtpMode::Required, false, None) => Err(true),
        (_, false, None) => Ok(None),
    }
}

fn remote_addr(offer: &SessionDescription, m: &MediaDescription) -> Option<SocketAddr> {
    let ip = m.connection.as_ref().or(offer.connection.as_ref())?.ip?;
    (m.port != 0 && !ip.is_unspecified()).then(|| SocketAddr::new(ip, m.port))
}

/// A declined stream keeps its line with port 0 so that m-line positions still match (§6).
fn rejected(m: &MediaDescription) -> MediaDescription {
    MediaDescription {
        kind: m.kind.clone(),
        port: 0,
        proto: m.proto.clone(),
        formats: if m.formats.is_empty() {
            vec!["0".into()]
        } else {
            m.formats.clone()
        },
        connection: None,
        attributes: Vec::new(),
        other: Vec::new(),
    }
}

fn attr(name: &str, value: Option<String>) -> Attribute {
    Attribute {
        name: name.to_string(),
        value,
    }
}

/// Builds our answer to `offer` (RFC 3264 §6): first audio stream with a codec we share,
/// m-line order kept, everything else rejected with port 0.
pub fn negotiate(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<Negotiated, NegotiateError> {
    // Port 0 in an offer disables the stream (RFC 3264 §8.2); it must stay disabled.
    let mut plain_refused = false;
    let (audio_idx, crypto) = offer
        .media
        .iter()
        .enumerate()
        .find_map(|(i, m)| match audio_usable(m, local.srtp) {
            Ok(c) => Some((i, c)),
            Err(plain) => {
                plain_refused |= plain;
                None
            }
        })
        .ok_or(if plain_refused {
            NegotiateError::SrtpRequired
        } else {
            NegotiateError::NoAudio
        })?;
    let audio = &offer.media[audio_idx];
    // Our preference order wins: the IVR's pipeline cost and quality differ per codec, and
    // RFC 3264 §6.1 lets the answerer pick any offered format.
    let (codec, pt) = local
        .codecs
        .iter()
        .find_map(|&c| audio.payload_type_for(c).map(|pt| (c, pt)))
        .ok_or(NegotiateError::NoCommonCodec)?;
    // DTMF keeps the offerer's payload type: RFC 4733 events must be sent with the PT the
    // peer listens on.
    let telephone_event = audio.rtpmap_pt("telephone-event", 8000);
    let offered_ms = |name: &str| {
        audio
            .attr(name)
            .or_else(|| {
                offer
                    .attributes
                    .iter()
                    .find(|a| a.name == name)
                    .and_then(|a| a.value.as_deref())
            })
            .and_then(|v| v.trim().parse().ok())
            .filter(|&p: &u32| (10..=120).contains(&p))
    };
    // The offerer's ptime is what it wants to receive; its maxptime caps whatever we pick.
    let mut ptime_ms = offered_ms("ptime").unwrap_or(local.ptime_ms);
    if let Some(max) = offered_ms("maxptime") {
        ptime_ms = ptime_ms.min(max);
    }
    let remote_rtp = remote_addr(offer, audio);
    let mut offered_dir = direction_of(&audio.attributes).unwrap_or_else(|| offer.direction());
    let legacy_hold = audio
        .connection
        .as_ref()
        .or(offer.connection.as_ref())
        .and_then(|c| c.ip)
        .is_some_and(|ip| ip.is_unspecified());
    if legacy_hold {
        // RFC 3264 §8.4: c=0.0.0.0 means "do not send to me"; the peer may still send.
        offered_dir = match offered_dir {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            _ => Direction::Inactive,
        };
    }
    let direction = offered_dir.answer_to();

    let mut text = None;
    let mut media = Vec::with_capacity(offer.media.len());
    for (i, m) in offer.media.iter().enumerate() {
        if i == audio_idx {
            let mut formats = vec![pt.to_string()];
            let mut attributes = vec![attr(
                "rtpmap",
                Some(format!("{pt} {}/{}", codec.name(), rtpmap_clock(codec))),
            )];
            if codec == Codec::Opus {
                attributes.push(attr("fmtp", Some(format!("{pt} useinbandfec=1"))));
            }
            if let Some(te) = telephone_event {
                formats.push(te.to_string());
                attributes.push(attr("rtpmap", Some(format!("{te} telephone-event/8000"))));
                attributes.push(attr("fmtp", Some(format!("{te} 0-16"))));
            }
            attributes.push(attr("ptime", Some(ptime_ms.to_string())));
            attributes.push(attr(direction.attr(), None));
            if let Some(c) = &crypto {
                // Our key under the offerer's tag and suite (RFC 4568 §7.1.2).
                let ours = CryptoAttr {
                    tag: c.tag,
                    suite: c.suite,
                    key: local.srtp_key.clone(),
                };
                attributes.push(attr("crypto", Some(ours.value())));
            }
            media.push(MediaDescription {
                kind: "audio".into(),
                port: local.port,
                proto: m.proto.clone(),
                formats,
                connection: None,
                attributes,
                other: Vec::new(),
            });
        } else if m.kind == "text" && text.is_none() && m.port != 0 && is_rtp_avp(&m.proto) {
            let Some(t140) = m.rtpmap_pt("t140", 1000) else {
                media.push(rejected(m));
                continue;
            };
            let red = m.rtpmap_pt("red", 1000);
            let local_port = local.port.wrapping_add(2);
            let text_dir = direction_of(&m.attributes)
                .unwrap_or_else(|| offer.direction())
                .answer_to();
            let mut formats = Vec::new();
            let mut attributes = Vec::new();
            if let Some(r) = red {
                formats.push(r.to_string());
                attributes.push(attr("rtpmap", Some(format!("{r} red/1000"))));
                attributes.push(attr("fmtp", Some(format!("{r} {t140}/{t140}/{t140}"))));
            }
            formats.push(t140.to_string());
            attributes.push(attr("rtpmap", Some(format!("{t140} t140/1000"))));
            attributes.push(attr(text_dir.attr(), None));
            media.push(MediaDescription {
                kind: "text".into(),
                port: local_port,
                proto: m.proto.clone(),
                formats,
                connection: None,
                attributes,
                other: Vec::new(),
            });
            text = Some(TextMedia {
                payload_type: t140,
                red_payload_type: red,
                remote: remote_addr(offer, m),
                local_port,
            });
        } else {
            media.push(rejected(m));
        }
    }
    let answer = SessionDescription {
        origin: Origin {
            username: "ivr".into(),
            session_id: local.session_id,
            session_version: local.session_version,
            addr: local.addr.to_string(),
        },
        session_name: "ivr".into(),
        connection: Some(Connection::new(local.addr)),
        timing: "0 0".into(),
        attributes: Vec::new(),
        media,
        other: Vec::new(),
    };
    Ok(Negotiated {
        codec,
        payload_type: pt,
        telephone_event,
        ptime_ms,
        remote_rtp,
        direction,
        text,
        srtp: crypto.map(|c| SrtpKeys {
            suite: c.suite,
            local: local.srtp_key.clone(),
            remote: c.key,
        }),
        answer,
    })
}

fn rtpmap_clock(codec: Codec) -> String {
    match codec {
        Codec::Opus => "48000/2".into(),
        c => c.rtp_clock().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 192.0.2.5\r\ns=call\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 96 8 0 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\na=ptime:30\r\nm=video 5000 RTP/AVP 31\r\n";

    fn local(codecs: Vec<Codec>) -> LocalMedia {
        LocalMedia {
            addr: "10.0.0.1".parse().unwrap(),
            port: 20000,
            codecs,
            ptime_ms: 20,
            session_id: 7,
            session_version: 1,
            srtp: SrtpMode::Optional,
            srtp_key: KeySalt([7; 30]),
        }
    }

    const SAVP: &str = "v=0\r\no=- 1 2 IN IP4 192.0.2.5\r\ns=call\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
        m=audio 4000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=crypto:1 AES_CM_256_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBRPS1uQCVeeCFCanVmcjkpPw==\r\n\
        a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31\r\n\
        a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:QS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";

    #[test]
    fn srtp_offers_get_our_key_under_their_tag_per_mode() {
        let offer = SessionDescription::parse(SAVP.as_bytes()).unwrap();
        for mode in [SrtpMode::Optional, SrtpMode::Required] {
            let n = negotiate(
                &offer,
                &LocalMedia {
                    srtp: mode,
                    ..local(vec![Codec::Pcmu])
                },
            )
            .unwrap();
            let keys = n.srtp.clone().expect("SRTP negotiated");
            // The first suite we speak, in the offerer's order: tag 2, the 32-bit tag suite.
            assert_eq!(keys.suite, Suite::AesCm128HmacSha1_32);
            assert_eq!(keys.local, KeySalt([7; 30]));
            assert_eq!(
                keys.remote.to_base64(),
                "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
            );
            let text = n.answer.to_string();
            assert!(text.contains("m=audio 20000 RTP/SAVP 0 101\r\n"), "{text}");
            assert!(
                text.contains(&format!(
                    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{}\r\n",
                    KeySalt([7; 30]).to_base64()
                )),
                "{text}"
            );
            assert_eq!(text.matches("a=crypto").count(), 1, "{text}");
        }
        // SRTP off: an SAVP-only offer has no stream for us.
        let off = LocalMedia {
            srtp: SrtpMode::Off,
            ..local(vec![Codec::Pcmu])
        };
        assert_eq!(
            negotiate(&offer, &off).unwrap_err(),
            NegotiateError::NoAudio
        );
        // Plain RTP: answered plain unless SRTP is required (then 488's reason).
        let plain = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let n = negotiate(&plain, &local(vec![Codec::Pcmu])).unwrap();
        assert!(n.srtp.is_none() && !n.answer.to_string().contains("crypto"));
        let required = LocalMedia {
            srtp: SrtpMode::Required,
            ..local(vec![Codec::Pcmu])
        };
        assert_eq!(
            negotiate(&plain, &required).unwrap_err(),
            NegotiateError::SrtpRequired
        );
        // SAVP with no suite we speak: no stream.
        let only256 = SAVP.split("a=crypto:2").next().unwrap();
        let offer = SessionDescription::parse(only256.as_bytes()).unwrap();
        assert_eq!(
            negotiate(&offer, &local(vec![Codec::Pcmu])).unwrap_err(),
            NegotiateError::NoAudio
        );
        // Best effort (RTP/AVP with a=crypto, as baresip's mediaenc=srtp): SRTP when allowed.
        let best = SAVP.replace("RTP/SAVP", "RTP/AVP");
        let offer = SessionDescription::parse(best.as_bytes()).unwrap();
        assert!(negotiate(&offer, &required).unwrap().srtp.is_some());
        assert!(negotiate(&offer, &off).unwrap().srtp.is_none());
    }

    /// A re-INVITE's SRTP: same keys keep both sessions (and their rollover and replay
    /// state); the offerer's new key re-keys what we receive only (packets under the old key
    /// are refused, the new key's accepted); a new suite re-keys both ways; dropping SRTP gives
    /// plain in both directions, adding it sessions in both.
    #[test]
    fn srtp_rekey_follows_the_changed_keys_only() {
        use crate::rtp::srtp::MAX_TRAILER;
        let keys = |suite, local: u8, remote: u8| SrtpKeys {
            suite,
            local: KeySalt([local; 30]),
            remote: KeySalt([remote; 30]),
        };
        let s80 = Suite::AesCm128HmacSha1_80;
        let s32 = Suite::AesCm128HmacSha1_32;
        let old = keys(s80, 1, 2);
        let same = SrtpRekey::between(Some(&old), Some(&old.clone())).unwrap();
        assert!(same.inbound.is_none() && same.outbound.is_none());
        let plain = SrtpRekey::between(None, None).unwrap();
        assert!(plain.inbound.is_none() && plain.outbound.is_none());

        let new_remote = keys(s80, 1, 3);
        let r = SrtpRekey::between(Some(&old), Some(&new_remote)).unwrap();
        assert!(r.outbound.is_none(), "our key did not change");
        let mut rx = r.inbound.expect("re-keyed").expect("still SRTP");
        let packet = |key: u8, seq: u16| {
            let mut buf = [0u8; 12 + 160 + MAX_TRAILER];
            buf[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 160, 1, 2, 3, 4]);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            let mut tx = Protector::new(s80, &KeySalt([key; 30])).unwrap();
            let n = tx.protect(&mut buf, 172).unwrap();
            buf[..n].to_vec()
        };
        assert!(rx.unprotect(&mut packet(2, 7)).is_err(), "old key refused");
        assert_eq!(rx.unprotect(&mut packet(3, 8)), Ok(172), "new key heard");

        let r = SrtpRekey::between(Some(&old), Some(&keys(s32, 1, 2))).unwrap();
        assert!(matches!(
            (&r.inbound, &r.outbound),
            (Some(Some(_)), Some(Some(_)))
        ));
        let r = SrtpRekey::between(Some(&old), Some(&keys(s80, 4, 2))).unwrap();
        assert!(matches!((&r.inbound, &r.outbound), (None, Some(Some(_)))));
        let r = SrtpRekey::between(Some(&old), None).unwrap();
        assert!(matches!(
            (&r.inbound, &r.outbound),
            (Some(None), Some(None))
        ));
        let r = SrtpRekey::between(None, Some(&old)).unwrap();
        assert!(matches!(
            (&r.inbound, &r.outbound),
            (Some(Some(_)), Some(Some(_)))
        ));
    }

    #[test]
    fn parses_and_prints() {
        let sd = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(sd.media.len(), 2);
        assert_eq!(sd.media[0].port, 4000);
        assert_eq!(
            sd.connection.as_ref().unwrap().ip,
            Some("192.0.2.5".parse().unwrap())
        );
        let again = SessionDescription::parse(sd.to_string().as_bytes()).unwrap();
        assert_eq!(again, sd);
        assert!(SessionDescription::parse(b"m =video 1 RTP/AVP 0\r\n").is_err());
        assert!(SessionDescription::parse(b"v=0\r\ns=x\r\n").is_err());
    }

    #[test]
    fn prefers_local_order_and_echoes_events() {
        let offer = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let n = negotiate(&offer, &local(vec![Codec::Pcmu, Codec::Opus])).unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.telephone_event, n.ptime_ms),
            (Codec::Pcmu, 0, Some(101), 30)
        );
        assert_eq!(n.remote_rtp, Some("192.0.2.5:4000".parse().unwrap()));
        let text = n.answer.to_string();
        assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("m=video 0 RTP/AVP 31\r\n"), "{text}");
        assert!(text.contains("a=sendrecv"));
        let n = negotiate(&offer, &local(vec![Codec::Opus, Codec::Pcmu])).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Opus, 96));
    }

    #[test]
    fn maxptime_caps_and_disabled_audio_stays_disabled() {
        let capped = OFFER.replace("a=ptime:30", "a=maxptime:20");
        let offer = SessionDescription::parse(capped.as_bytes()).unwrap();
        let mut ours = local(vec![Codec::Pcmu]);
        ours.ptime_ms = 40;
        assert_eq!(negotiate(&offer, &ours).unwrap().ptime_ms, 20);
        let disabled = OFFER.replace("m=audio 4000", "m=audio 0");
        let offer = SessionDescription::parse(disabled.as_bytes()).unwrap();
        assert_eq!(negotiate(&offer, &ours), Err(NegotiateError::NoAudio));
    }

    #[test]
    fn opus_only_when_both_sides_have_it() {
        let offer =
            SessionDescription::parse(OFFER.replace(" 8 0 101", " 101").as_bytes()).unwrap();
        assert_eq!(
            negotiate(&offer, &local(vec![Codec::Pcmu])),
            Err(NegotiateError::NoCommonCodec)
        );
        let video_only = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=video 1 RTP/AVP 31\r\n",
        )
        .unwrap();
        assert_eq!(
            negotiate(&video_only, &local(vec![Codec::Pcmu])),
            Err(NegotiateError::NoAudio)
        );
    }

    #[test]
    fn hold_directions() {
        let sendonly =
            SessionDescription::parse(OFFER.replace("a=ptime:30", "a=sendonly").as_bytes())
                .unwrap();
        let n = negotiate(&sendonly, &local(vec![Codec::Pcma])).unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
        assert!(n.answer.to_string().contains("a=recvonly"));
        let legacy = SessionDescription::parse(
            OFFER
                .replace("c=IN IP4 192.0.2.5", "c=IN IP4 0.0.0.0")
                .as_bytes(),
        )
        .unwrap();
        let n = negotiate(&legacy, &local(vec![Codec::Pcma])).unwrap();
        assert_eq!((n.remote_rtp, n.direction), (None, Direction::RecvOnly));
        let inactive =
            SessionDescription::parse(OFFER.replace("a=ptime:30", "a=inactive").as_bytes())
                .unwrap();
        assert_eq!(
            negotiate(&inactive, &local(vec![Codec::Pcma]))
                .unwrap()
                .direction,
            Direction::Inactive
        );
    }

    #[test]
    fn accepts_rfc4103_text() {
        let offer = format!(
            "{OFFER}m=text 6000 RTP/AVP 100 98\r\na=rtpmap:98 t140/1000\r\na=rtpmap:100 red/1000\r\na=fmtp:100 98/98/98\r\n"
        );
        let n = negotiate(
            &SessionDescription::parse(offer.as_bytes()).unwrap(),
            &local(vec![Codec::Pcmu]),
        )
        .unwrap();
        let t = n.text.clone().unwrap();
        assert_eq!(
            (t.payload_type, t.red_payload_type, t.local_port),
            (98, Some(100), 20002)
        );
        assert_eq!(t.remote, Some("192.0.2.5:6000".parse().unwrap()));
        assert!(
            n.answer
                .to_string()
                .contains("m=text 20002 RTP/AVP 100 98\r\n")
        );
        let mut declined = n.clone();
        declined.reject_text();
        assert_eq!(declined.text, None);
        let answer = declined.answer.to_string();
        assert!(answer.contains("m=text 0 RTP/AVP 100 98\r\n"), "{answer}");
        assert!(answer.contains("m=audio 20000 "), "{answer}");
    }
}
