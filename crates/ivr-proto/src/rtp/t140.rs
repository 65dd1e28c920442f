//! RFC 4103 real-time text: T.140 (UTF-8 text) over RTP, with RFC 2198 `red` redundancy.
//!
//! Sans-IO, time passed in. [`T140Sender`] buffers typed text and sends it at most every
//! `buffer_ms` (300 ms, RFC 4103 §4.1), each packet carrying the two previous primaries as
//! redundant generations so that up to two lost packets in a row cost no text. [`T140Receiver`]
//! parses `red` (or plain `t140`), recovers lost primaries from the redundancy by sequence
//! number and marks what cannot be recovered with U+FFFD (RFC 4103 §4.5). [`LineBuffer`] turns
//! the character stream into whole lines (backspace, CR LF, U+2028) for a conversation.
//!
//! Nothing here allocates per packet: the sender reuses its block buffers, the receiver parses
//! block headers into a fixed array and queues characters in a bounded ring.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::packet::{RTP_HEADER_LEN, RtpPacket, parse_rtp, write_header};

/// The RTP clock of text/t140 and its red: milliseconds.
pub const T140_CLOCK_HZ: u32 = 1000;
/// Redundant generations sent with each primary (RFC 4103 recommends 2; our SDP answer says
/// `t140/t140/t140`).
pub const GENERATIONS: usize = 2;
/// The most text bytes one block carries; the rest waits for the next packet. With headers,
/// three blocks stay well inside one Ethernet MTU.
pub const BLOCK_BYTES_MAX: usize = 400;
/// The largest packet the sender writes: a buffer this long never gets `BufferTooSmall`.
pub const PACKET_BYTES_MAX: usize =
    RTP_HEADER_LEN + GENERATIONS * 4 + 1 + (GENERATIONS + 1) * BLOCK_BYTES_MAX;
/// Typed text waiting to be sent; more is refused (a runaway producer, not a typist).
const PENDING_BYTES_MAX: usize = 16 * 1024;
/// Received characters not yet polled.
const RECEIVED_CHARS_MAX: usize = 4096;
/// Red blocks parsed from one packet; senders use 1–3, a longer list is garbage.
const RED_BLOCKS_MAX: usize = 8;
/// A packet at most this far behind the newest is late (reordered or duplicated); one further
/// back means the sender restarted its numbering (RFC 3550 §A.1 resyncs the same way).
const LATE_WINDOW: u16 = 100;
/// A red timestamp offset has 14 bits (RFC 2198 §3).
const OFFSET_MAX: u32 = 0x3FFF;
/// A red block length has 10 bits.
const RED_LEN_MAX: usize = 0x3FF;

/// Marks text lost in transmission (T.140 "missing text" mark, RFC 4103 §4.5).
pub const MISSING_TEXT: char = '\u{FFFD}';
/// Zero-width no-break space: T.140's keep-alive and start mark, never text.
pub const BOM: char = '\u{FEFF}';
pub const BACKSPACE: char = '\u{8}';
/// T.140's new line.
pub const LINE_SEPARATOR: char = '\u{2028}';

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum T140Error {
    /// Not an RTP v2 packet.
    Malformed,
    /// RTP with a payload type that is neither the negotiated t140 nor its red.
    UnknownPayloadType(u8),
    /// A red payload whose block headers do not add up.
    BadRedundancy,
    /// More text queued than the sender holds (`PENDING_BYTES_MAX`).
    BufferFull,
    /// The output buffer cannot hold the packet.
    BufferTooSmall { needed: usize, available: usize },
}

impl fmt::Display for T140Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            T140Error::Malformed => f.write_str("malformed RTP packet"),
            T140Error::UnknownPayloadType(pt) => write!(f, "unexpected payload type {pt}"),
            T140Error::BadRedundancy => f.write_str("malformed RFC 2198 redundancy"),
            T140Error::BufferFull => f.write_str("T.140 send buffer full"),
            T140Error::BufferTooSmall { needed, available } => {
                write!(
                    f,
                    "T.140 packet buffer too small: need {needed}, have {available}"
                )
            }
        }
    }
}

impl std::error::Error for T140Error {}

/// How the sender writes its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct T140SenderConfig {
    /// The negotiated text/t140 payload type.
    pub payload_type: u8,
    /// The negotiated red payload type; None sends plain t140 without redundancy.
    pub red_payload_type: Option<u8>,
    /// Text is collected this long between packets (RFC 4103 §4.1 recommends 300 ms).
    pub buffer_ms: u64,
    /// An idle stream sends an empty packet this often (NAT bindings, liveness); 0: never.
    pub keepalive_ms: u64,
    pub ssrc: u32,
    /// First sequence number and timestamp (random in production, RFC 3550 §5.1).
    pub seq: u16,
    pub timestamp: u32,
}

impl Default for T140SenderConfig {
    fn default() -> Self {
        T140SenderConfig {
            payload_type: 98,
            red_payload_type: Some(100),
            buffer_ms: 300,
            keepalive_ms: 10_000,
            ssrc: 0,
            seq: 0,
            timestamp: 0,
        }
    }
}

/// One generation: a primary already sent, kept to be repeated as redundancy.
#[derive(Clone, Debug, Default)]
struct Block {
    data: Vec<u8>,
    timestamp: u32,
}

/// RFC 4103 sender. Push text with [`T140Sender::push_text`], wake at
/// [`T140Sender::poll_timeout`] and write packets with [`T140Sender::poll_transmit`].
pub struct T140Sender {
    config: T140SenderConfig,
    /// Timestamps count milliseconds from here.
    epoch: Instant,
    /// Typed text not yet sent (valid UTF-8: only whole `&str`s go in, whole chars come out).
    pending: Vec<u8>,
    /// The last primaries, oldest first.
    history: [Block; GENERATIONS],
    seq: u16,
    last_sent_at: Option<Instant>,
    /// When the last packet with text went out (plain t140 has no redundancy to tell idle).
    last_text_at: Option<Instant>,
    /// Packets still owed to carry the last text as redundancy; 0: the stream is idle.
    owed: usize,
}

impl T140Sender {
    pub fn new(now: Instant, config: T140SenderConfig) -> T140Sender {
        let history = std::array::from_fn(|_| Block {
            data: Vec::with_capacity(BLOCK_BYTES_MAX),
            timestamp: config.timestamp,
        });
        T140Sender {
            seq: config.seq,
            config,
            epoch: now,
            pending: Vec::with_capacity(BLOCK_BYTES_MAX),
            history,
            last_sent_at: None,
            last_text_at: None,
            owed: 0,
        }
    }

    /// Queues text to send. All or nothing: `BufferFull` queues none of it.
    pub fn push_text(&mut self, text: &str) -> Result<(), T140Error> {
        if self.pending.len() + text.len() > PENDING_BYTES_MAX {
            return Err(T140Error::BufferFull);
        }
        self.pending.extend_from_slice(text.as_bytes());
        Ok(())
    }

    /// Everything queued has been sent, with all its redundant generations.
    pub fn is_drained(&self) -> bool {
        self.pending.is_empty() && self.owed == 0
    }

    /// When the next packet is due (text, redundancy or keep-alive).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let busy = !self.pending.is_empty() || self.owed > 0;
        let keepalive =
            (self.config.keepalive_ms > 0).then(|| Duration::from_millis(self.config.keepalive_ms));
        match self.last_sent_at {
            // The first text goes out at once; later ones wait out the buffer time, which
            // after an idle spell is already over.
            None if busy => Some(self.epoch),
            None => keepalive.map(|k| self.epoch + k),
            Some(t) if busy => Some(t + Duration::from_millis(self.config.buffer_ms)),
            Some(t) => keepalive.map(|k| t + k),
        }
    }

    /// Writes the packet due at `now` into `out`; `Ok(None)` when nothing is due.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<usize>, T140Error> {
        if self.poll_timeout().is_none_or(|t| now < t) {
            return Ok(None);
        }
        // Cut the primary at a character boundary so every block is valid UTF-8 on its own.
        let mut n = self.pending.len().min(BLOCK_BYTES_MAX);
        while n > 0 && n < self.pending.len() && self.pending[n] & 0xC0 == 0x80 {
            n -= 1;
        }
        let timestamp = self.timestamp(now);
        // RFC 4103 §4.2: the first packet of text after an idle period carries the marker. Red
        // is idle once the redundancy is out; plain t140 once a buffer period went by empty.
        let idle = match self.config.red_payload_type {
            Some(_) => self.owed == 0,
            None => self.last_text_at.is_none_or(|t| {
                now >= t + Duration::from_millis(self.config.buffer_ms.saturating_mul(2))
            }),
        };
        let marker = n > 0 && idle;
        let len = match self.config.red_payload_type {
            Some(red) => self.write_red(out, red, timestamp, marker, n)?,
            None => self.write_plain(out, timestamp, marker, n)?,
        };
        if n > 0 {
            self.last_text_at = Some(now);
        }
        self.pending.drain(..n);
        self.seq = self.seq.wrapping_add(1);
        self.last_sent_at = Some(now);
        Ok(Some(len))
    }

    fn timestamp(&self, now: Instant) -> u32 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        // RTP timestamps wrap: only the low 32 bits count.
        self.config.timestamp.wrapping_add(ms as u32)
    }

    fn write_red(
        &mut self,
        out: &mut [u8],
        red: u8,
        timestamp: u32,
        marker: bool,
        n: usize,
    ) -> Result<usize, T140Error> {
        let pt = self.config.payload_type & 0x7F;
        let data_len: usize = self.history.iter().map(|b| b.data.len()).sum::<usize>() + n;
        let needed = RTP_HEADER_LEN + GENERATIONS * 4 + 1 + data_len;
        if out.len() < needed {
            return Err(T140Error::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        write_header(out, red, self.seq, timestamp, self.config.ssrc, marker);
        let mut at = RTP_HEADER_LEN;
        // Block headers, oldest generation first (RFC 2198 §3), then the primary's.
        for block in &self.history {
            let offset = timestamp.wrapping_sub(block.timestamp).min(OFFSET_MAX);
            let len = block.data.len();
            out[at] = 0x80 | pt;
            out[at + 1] = (offset >> 6) as u8;
            out[at + 2] = (((offset & 0x3F) << 2) as u8) | ((len >> 8) as u8 & 0x03);
            out[at + 3] = len as u8;
            at += 4;
        }
        out[at] = pt;
        at += 1;
        for block in &self.history {
            out[at..at + block.data.len()].copy_from_slice(&block.data);
            at += block.data.len();
        }
        out[at..at + n].copy_from_slice(&self.pending[..n]);
        at += n;
        // The primary becomes the newest generation; the oldest buffer is reused for it.
        self.history.rotate_left(1);
        let newest = &mut self.history[GENERATIONS - 1];
        newest.data.clear();
        newest.data.extend_from_slice(&self.pending[..n]);
        newest.timestamp = timestamp;
        self.owed = if n > 0 {
            GENERATIONS
        } else {
            self.owed.saturating_sub(1)
        };
        Ok(at)
    }

    fn write_plain(
        &mut self,
        out: &mut [u8],
        timestamp: u32,
        marker: bool,
        n: usize,
    ) -> Result<usize, T140Error> {
        // Without redundancy an empty packet would be an empty payload: T.140's keep-alive is
        // a BOM instead, which receivers drop.
        let mut bom = [0u8; 3];
        let payload: &[u8] = if n > 0 {
            &self.pending[..n]
        } else {
            BOM.encode_utf8(&mut bom).as_bytes()
        };
        let needed = RTP_HEADER_LEN + payload.len();
        if out.len() < needed {
            return Err(T140Error::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        write_header(
            out,
            self.config.payload_type,
            self.seq,
            timestamp,
            self.config.ssrc,
            marker,
        );
        out[RTP_HEADER_LEN..needed].copy_from_slice(payload);
        self.owed = 0;
        Ok(needed)
    }
}

/// A block of a received red payload: its payload type and its bytes in the packet.
#[derive(Clone, Copy, Debug, Default)]
struct BlockRef {
    pt: u8,
    start: usize,
    len: usize,
}

/// What the receiver has seen, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct T140Stats {
    pub packets: u64,
    /// Lost packets whose text came back from a later packet's redundancy.
    pub recovered: u64,
    /// Lost packets beyond the redundancy: each gap is one U+FFFD in the text.
    pub lost: u64,
    /// Duplicates and packets older than one already handled.
    pub late: u64,
    /// Characters dropped because nobody polled them.
    pub overflow: u64,
}

/// RFC 4103 receiver: datagrams in, characters out ([`T140Receiver::poll_char`]), in order,
/// without duplicates, with U+FFFD where text was lost and BOMs removed.
pub struct T140Receiver {
    payload_type: u8,
    red_payload_type: Option<u8>,
    ssrc: Option<u32>,
    last_seq: Option<u16>,
    chars: VecDeque<char>,
    stats: T140Stats,
}

impl T140Receiver {
    pub fn new(payload_type: u8, red_payload_type: Option<u8>) -> T140Receiver {
        T140Receiver {
            payload_type,
            red_payload_type,
            ssrc: None,
            last_seq: None,
            chars: VecDeque::with_capacity(256),
            stats: T140Stats::default(),
        }
    }

    /// A re-INVITE may renumber the payload types; the stream state stays.
    pub fn set_payload_types(&mut self, payload_type: u8, red_payload_type: Option<u8>) {
        self.payload_type = payload_type;
        self.red_payload_type = red_payload_type;
    }

    pub fn stats(&self) -> T140Stats {
        self.stats
    }

    /// One datagram from the text port.
    pub fn handle_datagram(&mut self, data: &[u8]) -> Result<(), T140Error> {
        let packet = parse_rtp(data).map_err(|_| T140Error::Malformed)?;
        self.handle_packet(&packet)
    }

    pub fn handle_packet(&mut self, p: &RtpPacket<'_>) -> Result<(), T140Error> {
        let is_red = Some(p.payload_type) == self.red_payload_type;
        if !is_red && p.payload_type != self.payload_type {
            return Err(T140Error::UnknownPayloadType(p.payload_type));
        }
        // Parse everything before touching the sequence state: a garbage packet changes
        // nothing.
        let mut blocks = [BlockRef::default(); RED_BLOCKS_MAX];
        let (redundant, primary) = if is_red {
            let count = parse_red(p.payload, &mut blocks)?;
            // `parse_red` returns at least the primary, so count ≥ 1.
            (&blocks[..count - 1], blocks[count - 1])
        } else {
            let plain = BlockRef {
                pt: self.payload_type,
                start: 0,
                len: p.payload.len(),
            };
            (&blocks[..0], plain)
        };

        if self.ssrc != Some(p.ssrc) {
            // A new source (or the first): its numbering starts afresh.
            self.ssrc = Some(p.ssrc);
            self.last_seq = None;
        }
        let missing = match self.last_seq {
            None => None,
            Some(last) => {
                let d = p.seq.wrapping_sub(last);
                if d == 0 || last.wrapping_sub(p.seq) <= LATE_WINDOW {
                    // A duplicate, or older than what we have: its text came already (or its
                    // gap was marked).
                    self.stats.late += 1;
                    return Ok(());
                }
                if d >= 0x8000 {
                    // Far behind: a sender that restarted its numbering; start over from here.
                    None
                } else {
                    Some(usize::from(d - 1))
                }
            }
        };
        self.last_seq = Some(p.seq);
        self.stats.packets += 1;

        // Redundant generations are the newest last: the k-th from the end belongs to the
        // packet k sequence numbers back.
        let recover = match missing {
            // The first packet: whatever it repeats was never seen here.
            None => redundant,
            Some(m) => {
                if m > redundant.len() {
                    self.stats.lost += (m - redundant.len()) as u64;
                    self.push_char(MISSING_TEXT);
                }
                let k = m.min(redundant.len());
                self.stats.recovered += k as u64;
                &redundant[redundant.len() - k..]
            }
        };
        for b in recover.iter().chain(std::iter::once(&primary)) {
            if b.pt == self.payload_type & 0x7F {
                self.push_text(&p.payload[b.start..b.start + b.len]);
            }
        }
        Ok(())
    }

    /// The next received character.
    pub fn poll_char(&mut self) -> Option<char> {
        self.chars.pop_front()
    }

    fn push_text(&mut self, bytes: &[u8]) {
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c != BOM {
                    self.push_char(c);
                }
            }
            if !chunk.invalid().is_empty() {
                // Bytes that are not UTF-8 are text we cannot show: mark them.
                self.push_char(MISSING_TEXT);
            }
        }
    }

    fn push_char(&mut self, c: char) {
        if self.chars.len() >= RECEIVED_CHARS_MAX {
            self.stats.overflow += 1;
            return;
        }
        self.chars.push_back(c);
    }
}

/// Parses an RFC 2198 payload into `blocks` (redundant ones oldest first, the primary last);
/// returns how many.
fn parse_red(payload: &[u8], blocks: &mut [BlockRef; RED_BLOCKS_MAX]) -> Result<usize, T140Error> {
    let mut count = 0;
    let mut at = 0;
    let mut data_len = 0usize;
    loop {
        let Some(&first) = payload.get(at) else {
            return Err(T140Error::BadRedundancy);
        };
        if count == RED_BLOCKS_MAX {
            return Err(T140Error::BadRedundancy);
        }
        if first & 0x80 == 0 {
            // The primary's one-byte header ends the list; its data is what remains.
            at += 1;
            let rest = payload
                .len()
                .checked_sub(at + data_len)
                .ok_or(T140Error::BadRedundancy)?;
            blocks[count] = BlockRef {
                pt: first & 0x7F,
                start: 0,
                len: rest,
            };
            count += 1;
            break;
        }
        let Some(h) = payload.get(at..at + 4) else {
            return Err(T140Error::BadRedundancy);
        };
        let len = (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
        debug_assert!(len <= RED_LEN_MAX);
        blocks[count] = BlockRef {
            pt: first & 0x7F,
            start: 0,
            len,
        };
        data_len += len;
        count += 1;
        at += 4;
    }
    // The data follows the headers in the same order.
    let mut start = at;
    for b in &mut blocks[..count] {
        b.start = start;
        start += b.len;
    }
    Ok(count)
}

/// Assembles received characters into lines: backspace erases, CR, LF, CR LF, U+2028,
/// U+2029 and NEL end a line, BOMs and other control functions (BEL, T.140's SGR sequences)
/// are dropped.
#[derive(Clone, Debug)]
pub struct LineBuffer {
    line: String,
    chars: usize,
    chars_max: usize,
    after_cr: bool,
    escape: Escape,
}

/// Where we are in a control sequence that must not reach the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC: `[` starts a CSI, anything else ends a two-character sequence.
    Esc,
    /// In a CSI (ESC `[` or U+009B): parameters until a final byte 0x40–0x7E.
    Csi,
    /// In a control string (SOS, DCS, OSC, PM, APC) until ST.
    String,
}

impl LineBuffer {
    /// `chars_max`: a line this long is handed over even without a new line (a stuck key).
    pub fn new(chars_max: usize) -> LineBuffer {
        LineBuffer {
            line: String::new(),
            chars: 0,
            chars_max: chars_max.max(1),
            after_cr: false,
            escape: Escape::None,
        }
    }

    /// One received character; a completed, non-blank line comes back.
    pub fn handle_char(&mut self, c: char) -> Option<String> {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        match self.escape {
            Escape::Esc => {
                self.escape = if c == '[' { Escape::Csi } else { Escape::None };
                return None;
            }
            Escape::Csi => {
                if ('\u{40}'..='\u{7E}').contains(&c) {
                    self.escape = Escape::None;
                }
                return None;
            }
            Escape::String => {
                if c == '\u{9C}' || c == '\u{1B}' {
                    // ST, or the ESC of "ESC \"; the `\` after it is swallowed as Esc.
                    self.escape = if c == '\u{1B}' {
                        Escape::Esc
                    } else {
                        Escape::None
                    };
                }
                return None;
            }
            Escape::None => {}
        }
        match c {
            '\r' => {
                self.after_cr = true;
                self.finish()
            }
            // The LF of a CR LF pair: the line already ended.
            '\n' if after_cr => None,
            '\n' | LINE_SEPARATOR | '\u{2029}' | '\u{85}' => self.finish(),
            BACKSPACE => {
                if self.line.pop().is_some() {
                    self.chars -= 1;
                }
                None
            }
            '\u{1B}' => {
                self.escape = Escape::Esc;
                None
            }
            '\u{9B}' => {
                self.escape = Escape::Csi;
                None
            }
            '\u{98}' | '\u{90}' | '\u{9D}' | '\u{9E}' | '\u{9F}' => {
                self.escape = Escape::String;
                None
            }
            '\t' => self.push(' '),
            c if c.is_control() || c == BOM => None,
            c => self.push(c),
        }
    }

    fn push(&mut self, c: char) -> Option<String> {
        self.line.push(c);
        self.chars += 1;
        if self.chars >= self.chars_max {
            return self.finish();
        }
        None
    }

    /// The line typed so far (not yet ended).
    pub fn partial(&self) -> &str {
        &self.line
    }

    /// Ends the line typed so far (a pause): the line, if it is not blank.
    pub fn take_partial(&mut self) -> Option<String> {
        self.finish()
    }

    fn finish(&mut self) -> Option<String> {
        self.chars = 0;
        let line = std::mem::take(&mut self.line);
        (!line.trim().is_empty()).then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T140: u8 = 98;
    const RED: u8 = 100;

    fn config(red: bool) -> T140SenderConfig {
        T140SenderConfig {
            payload_type: T140,
            red_payload_type: red.then_some(RED),
            buffer_ms: 300,
            keepalive_ms: 0,
            ssrc: 0x1234,
            seq: 65530, // wraps during the tests
            timestamp: 4_294_967_000,
        }
    }

    /// Types `text` a few characters every 100 ms and collects the packets sent, in virtual
    /// time, until the sender is drained.
    fn packets(text: &str, red: bool, chars_per_push: usize) -> Vec<Vec<u8>> {
        let t0 = Instant::now();
        let mut tx = T140Sender::new(t0, config(red));
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = chars.chunks(chars_per_push);
        let mut out = Vec::new();
        let mut buf = [0u8; PACKET_BYTES_MAX];
        let mut typing = true;
        for step in 0..100_000u64 {
            let now = t0 + Duration::from_millis(step * 10);
            if step % 10 == 0 && typing {
                match pieces.next() {
                    Some(p) => tx.push_text(&p.iter().collect::<String>()).unwrap(),
                    None => typing = false,
                }
            }
            if let Some(n) = tx.poll_transmit(now, &mut buf).unwrap() {
                out.push(buf[..n].to_vec());
            }
            if !typing && tx.is_drained() {
                break;
            }
        }
        out
    }

    fn receive(packets: &[Vec<u8>], red: bool) -> String {
        let mut rx = T140Receiver::new(T140, red.then_some(RED));
        let mut text = String::new();
        for p in packets {
            rx.handle_datagram(p).unwrap();
            while let Some(c) = rx.poll_char() {
                text.push(c);
            }
        }
        text
    }

    const QUESTION: &str = "how do I check my case status? ¿Cómo está? 😀\r\n";

    #[test]
    fn red_round_trip_without_loss() {
        let p = packets(QUESTION, true, 3);
        assert_eq!(receive(&p, true), QUESTION);
        // Paced: 300 ms between packets, so ~1 packet per 3 pushes plus 2 redundancy packets.
        let pushes = QUESTION.chars().count().div_ceil(3);
        assert!(p.len() <= pushes / 3 + 4, "{} packets", p.len());
    }

    #[test]
    fn losing_one_packet_in_three_loses_no_text() {
        let p = packets(QUESTION, true, 2);
        for phase in 0..3 {
            let kept: Vec<Vec<u8>> = p
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 3 != phase)
                .map(|(_, p)| p.clone())
                .collect();
            assert_eq!(receive(&kept, true), QUESTION, "phase {phase}");
        }
        // Two in a row are still covered by the two generations.
        let kept: Vec<Vec<u8>> = p
            .iter()
            .enumerate()
            .filter(|(i, _)| !(3..5).contains(i))
            .map(|(_, p)| p.clone())
            .collect();
        assert_eq!(receive(&kept, true), QUESTION);
    }

    #[test]
    fn losing_three_in_a_row_marks_the_gap() {
        let p = packets(QUESTION, true, 1);
        assert!(p.len() > 10);
        let mut rx = T140Receiver::new(T140, Some(RED));
        let mut text = String::new();
        for (i, pkt) in p.iter().enumerate() {
            if (4..7).contains(&i) {
                continue;
            }
            rx.handle_datagram(pkt).unwrap();
            while let Some(c) = rx.poll_char() {
                text.push(c);
            }
        }
        // Exactly one mark, where the oldest lost packet's text was; the rest is intact.
        assert_eq!(text.matches(MISSING_TEXT).count(), 1, "{text:?}");
        let (before, after) = text.split_once(MISSING_TEXT).unwrap();
        assert!(QUESTION.starts_with(before), "{before:?}");
        assert!(QUESTION.ends_with(after), "{after:?}");
        assert!(before.chars().count() + after.chars().count() < QUESTION.chars().count());
        assert_eq!(rx.stats().lost, 1);
        assert_eq!(rx.stats().recovered, 2);
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let mut p = packets(QUESTION, true, 2);
        p.swap(2, 3);
        p.swap(6, 8);
        assert_eq!(receive(&p, true), QUESTION);
    }

    #[test]
    fn plain_t140_round_trip_and_loss() {
        let p = packets(QUESTION, false, 2);
        assert_eq!(receive(&p, false), QUESTION);
        let mut lossy = p.clone();
        let lost = lossy.remove(3);
        let lost = std::str::from_utf8(&lost[RTP_HEADER_LEN..]).unwrap();
        assert!(!lost.is_empty());
        // The lost packet's text is replaced by one mark, nothing else changes.
        let text = receive(&lossy, false);
        let (head, tail) = QUESTION.split_once(lost).unwrap();
        assert_eq!(text, format!("{head}{MISSING_TEXT}{tail}"));
    }

    #[test]
    fn red_wire_format() {
        let t0 = Instant::now();
        let mut tx = T140Sender::new(t0, config(true));
        let mut buf = [0u8; PACKET_BYTES_MAX];
        tx.push_text("ab").unwrap();
        let n = tx.poll_transmit(t0, &mut buf).unwrap().unwrap();
        let p = parse_rtp(&buf[..n]).unwrap();
        assert_eq!(
            (p.payload_type, p.marker, p.seq, p.ssrc),
            (RED, true, 65530, 0x1234)
        );
        // Two empty generations, then the primary header and "ab".
        assert_eq!(p.payload[0] & 0x7F, T140);
        assert!(p.payload[0] & 0x80 != 0 && p.payload[4] & 0x80 != 0);
        assert_eq!((p.payload[3], p.payload[7]), (0, 0));
        assert_eq!(p.payload[8], T140);
        assert_eq!(&p.payload[9..], b"ab");
        let ts0 = p.timestamp;

        // Nothing new within the buffer time.
        tx.push_text("c").unwrap();
        assert_eq!(
            tx.poll_transmit(t0 + Duration::from_millis(299), &mut buf),
            Ok(None)
        );
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_millis(300)));
        let t1 = t0 + Duration::from_millis(300);
        let n = tx.poll_transmit(t1, &mut buf).unwrap().unwrap();
        let p = parse_rtp(&buf[..n]).unwrap();
        assert!(!p.marker, "not after idle");
        assert_eq!(p.seq, 65531);
        assert_eq!(p.timestamp, ts0.wrapping_add(300));
        // Newest redundant block: "ab", 300 ms back, length 2.
        let h = &p.payload[4..8];
        let offset = (u32::from(h[1]) << 6) | u32::from(h[2] >> 2);
        let len = (usize::from(h[2] & 3) << 8) | usize::from(h[3]);
        assert_eq!((offset, len), (300, 2));
        assert_eq!(&p.payload[9..], b"abc");

        // Two more packets carry "c" as redundancy, with empty primaries; then silence.
        let mut sent = 0;
        let mut t = t1;
        while !tx.is_drained() {
            t += Duration::from_millis(300);
            let n = tx.poll_transmit(t, &mut buf).unwrap().unwrap();
            let p = parse_rtp(&buf[..n]).unwrap();
            assert_eq!(p.payload[8], T140, "primary header");
            assert!(!p.marker);
            sent += 1;
        }
        assert_eq!(sent, 2);
        assert_eq!(tx.poll_timeout(), None, "keep-alive off");
        // Text after the idle spell goes at once, marked.
        let later = t + Duration::from_secs(5);
        tx.push_text("d").unwrap();
        let n = tx.poll_transmit(later, &mut buf).unwrap().unwrap();
        let p = parse_rtp(&buf[..n]).unwrap();
        assert!(p.marker);
        assert_eq!(&p.payload[9..], b"d", "redundant generations are empty");
    }

    #[test]
    fn plain_t140_marks_only_text_after_idle() {
        let t0 = Instant::now();
        let mut tx = T140Sender::new(t0, config(false));
        let mut buf = [0u8; PACKET_BYTES_MAX];
        let mut markers = Vec::new();
        // Typing at 0, 300 and 600 ms, then again after a 2 s pause.
        for ms in [0, 300, 600, 2600] {
            tx.push_text("x").unwrap();
            let at = t0 + Duration::from_millis(ms);
            let n = tx.poll_transmit(at, &mut buf).unwrap().unwrap();
            markers.push(parse_rtp(&buf[..n]).unwrap().marker);
            assert!(tx.is_drained(), "no redundancy packets without red");
        }
        assert_eq!(markers, [true, false, false, true]);
    }

    #[test]
    fn idle_streams_send_empty_keepalives() {
        let t0 = Instant::now();
        let mut buf = [0u8; PACKET_BYTES_MAX];
        for red in [true, false] {
            let mut tx = T140Sender::new(
                t0,
                T140SenderConfig {
                    keepalive_ms: 1000,
                    ..config(red)
                },
            );
            assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(1)));
            let n = tx
                .poll_transmit(t0 + Duration::from_secs(1), &mut buf)
                .unwrap()
                .unwrap();
            let p = parse_rtp(&buf[..n]).unwrap();
            assert!(!p.marker);
            if red {
                // Red keeps its generations (all empty), as RFC 4103 wants for red streams.
                assert_eq!(p.payload.len(), 9);
                assert_eq!((p.payload[3], p.payload[7], p.payload[8]), (0, 0, T140));
            } else {
                assert_eq!(p.payload, "\u{FEFF}".as_bytes());
            }
            assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(2)));
            let mut rx = T140Receiver::new(T140, Some(RED));
            rx.handle_datagram(&buf[..n]).unwrap();
            assert_eq!(rx.poll_char(), None, "keep-alives carry no text");
        }
    }

    #[test]
    fn long_text_is_split_on_character_boundaries() {
        let text: String = "é😀x".repeat(300);
        let p = packets(&text, true, 900);
        assert!(p.iter().all(|p| p.len() <= PACKET_BYTES_MAX));
        assert_eq!(receive(&p, true), text);
        let mut tx = T140Sender::new(Instant::now(), config(true));
        assert_eq!(
            tx.push_text(&"x".repeat(PENDING_BYTES_MAX + 1)),
            Err(T140Error::BufferFull)
        );
        tx.push_text("hello").unwrap();
        let mut small = [0u8; 20];
        assert!(matches!(
            tx.poll_transmit(Instant::now(), &mut small),
            Err(T140Error::BufferTooSmall { .. })
        ));
    }

    #[test]
    fn bom_is_dropped_and_bad_utf8_is_marked() {
        let mut rx = T140Receiver::new(T140, None);
        let mut buf = [0u8; 64];
        let n = crate::rtp::write_rtp(
            &mut buf,
            T140,
            1,
            0,
            9,
            true,
            "\u{FEFF}hi\u{FEFF}".as_bytes(),
        )
        .unwrap();
        rx.handle_datagram(&buf[..n]).unwrap();
        let n = crate::rtp::write_rtp(&mut buf, T140, 2, 0, 9, false, b"a\xFFb").unwrap();
        rx.handle_datagram(&buf[..n]).unwrap();
        let text: String = std::iter::from_fn(|| rx.poll_char()).collect();
        assert_eq!(text, "hia\u{FFFD}b");
        // The same packet again is a duplicate.
        rx.handle_datagram(&buf[..n]).unwrap();
        assert_eq!(rx.poll_char(), None);
        assert_eq!(rx.stats().late, 1);
        // A sender that restarts its numbering far back is followed, not ignored.
        let n = crate::rtp::write_rtp(&mut buf, T140, 40_000, 0, 9, false, b"z").unwrap();
        rx.handle_datagram(&buf[..n]).unwrap();
        assert_eq!(rx.poll_char(), Some('z'));
        assert_eq!(rx.poll_char(), None);
        let n = crate::rtp::write_rtp(&mut buf, 0, 3, 0, 9, false, b"x").unwrap();
        assert_eq!(
            rx.handle_datagram(&buf[..n]),
            Err(T140Error::UnknownPayloadType(0))
        );
    }

    #[test]
    fn lines_handle_backspace_and_separators() {
        let mut lines = LineBuffer::new(1000);
        let mut got = Vec::new();
        let input = "helo\u{8}\u{8}llo\r\nsecond\u{2028}\u{8}\r\n\nthird\nfo\u{1B}[31mur\u{9B}0m\u{7}\u{FEFF}!";
        for c in input.chars() {
            got.extend(lines.handle_char(c));
        }
        assert_eq!(got, ["hello", "second", "third"]);
        assert_eq!(lines.partial(), "four!");
        assert_eq!(lines.take_partial().as_deref(), Some("four!"));
        assert_eq!(lines.take_partial(), None);
        // A stuck key does not grow the line without end.
        let mut short = LineBuffer::new(5);
        let out: Vec<String> = "abcdefgh"
            .chars()
            .filter_map(|c| short.handle_char(c))
            .collect();
        assert_eq!(out, ["abcde"]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 0x9E37_79B9;
        let mut next = || {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        };
        let mut rx = T140Receiver::new(T140, Some(RED));
        let mut lines = LineBuffer::new(100);
        let mut buf = [0u8; 300];
        for round in 0..20_000 {
            let len = usize::from(next()) % 300;
            for b in buf[..len].iter_mut() {
                *b = next();
            }
            if round % 2 == 0 && len >= 12 {
                // A valid RTP header with a garbage red or t140 payload.
                buf[0] = 0x80;
                buf[1] = if round % 4 == 0 { RED } else { T140 };
                // Red headers with the F bit on run past the end of the payload.
                if round % 8 == 0 && len > 20 {
                    for b in &mut buf[12..len] {
                        *b |= 0x80;
                    }
                }
            }
            let _ = rx.handle_datagram(&buf[..len]);
            while let Some(c) = rx.poll_char() {
                let _ = lines.handle_char(c);
            }
        }
        assert!(rx.stats().packets > 0, "some packets were accepted");
        let mut blocks = [BlockRef::default(); RED_BLOCKS_MAX];
        assert_eq!(parse_red(&[], &mut blocks), Err(T140Error::BadRedundancy));
        assert_eq!(
            parse_red(&[0x80 | T140, 0, 0, 5, T140], &mut blocks),
            Err(T140Error::BadRedundancy)
        );
        assert_eq!(
            parse_red(&[0x80 | T140, 0, 0], &mut blocks),
            Err(T140Error::BadRedundancy)
        );
        assert_eq!(
            parse_red(&[0x80 | T140; 40], &mut blocks),
            Err(T140Error::BadRedundancy)
        );
    }
}
