//! RTCP (RFC 3550 §6): build SR/RR + SDES CNAME compounds into a caller buffer, parse incoming
//! compounds without allocating and without trusting any length field.

use std::fmt;

pub const PT_SR: u8 = 200;
pub const PT_RR: u8 = 201;
pub const PT_SDES: u8 = 202;
pub const PT_BYE: u8 = 203;

const REPORT_BLOCK_LEN: usize = 24;
/// RC is a 5-bit field.
const MAX_BLOCKS: usize = 31;

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed on the wire.
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from this source.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// The sender-info section of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (seconds since 1900 in the high word), passed in by the shell.
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpError {
    BufferTooSmall {
        needed: usize,
    },
    TooManyBlocks,
    /// CNAME longer than the 255 bytes an SDES item can carry.
    CnameTooLong,
    /// Truncated, wrong version or inconsistent length.
    Malformed,
}

impl fmt::Display for RtcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtcpError::BufferTooSmall { needed } => {
                write!(f, "RTCP buffer too small: need {needed}")
            }
            RtcpError::TooManyBlocks => f.write_str("more than 31 report blocks"),
            RtcpError::CnameTooLong => f.write_str("CNAME longer than 255 bytes"),
            RtcpError::Malformed => f.write_str("malformed RTCP"),
        }
    }
}

impl std::error::Error for RtcpError {}

/// Converts Unix time (seconds, nanoseconds) to a 64-bit NTP timestamp. The shell reads the clock
/// and calls this; the core never does.
pub fn ntp_from_unix(secs: u64, nanos: u32) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let frac = ((nanos as u64) << 32) / 1_000_000_000;
    ((secs + NTP_UNIX_OFFSET) << 32) | frac
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn write_block(out: &mut [u8], at: usize, b: &ReportBlock) {
    put_u32(out, at, b.ssrc);
    let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
    put_u32(out, at + 4, ((b.fraction_lost as u32) << 24) | lost);
    put_u32(out, at + 8, b.extended_highest_seq);
    put_u32(out, at + 12, b.jitter);
    put_u32(out, at + 16, b.lsr);
    put_u32(out, at + 20, b.dlsr);
}

/// Writes a compound packet: SR (if `sender` is `Some`) or RR, then SDES with our CNAME
/// (RFC 3550 §6.1 requires both in every compound). Returns its length.
pub fn write_report(
    out: &mut [u8],
    ssrc: u32,
    sender: Option<&SenderInfo>,
    blocks: &[ReportBlock],
    cname: &str,
) -> Result<usize, RtcpError> {
    if blocks.len() > MAX_BLOCKS {
        return Err(RtcpError::TooManyBlocks);
    }
    if cname.len() > 255 {
        return Err(RtcpError::CnameTooLong);
    }
    let report_len = 8 + if sender.is_some() { 20 } else { 0 } + blocks.len() * REPORT_BLOCK_LEN;
    // SDES: header 4 + SSRC 4 + item (2 + cname) + end 1, padded to 4.
    let sdes_len = (8 + 2 + cname.len() + 1).div_ceil(4) * 4;
    let needed = report_len + sdes_len;
    if out.len() < needed {
        return Err(RtcpError::BufferTooSmall { needed });
    }
    out[0] = 0x80 | blocks.len() as u8;
    out[1] = if sender.is_some() { PT_SR } else { PT_RR };
    out[2..4].copy_from_slice(&((report_len / 4 - 1) as u16).to_be_bytes());
    put_u32(out, 4, ssrc);
    let mut at = 8;
    if let Some(si) = sender {
        put_u32(out, at, (si.ntp >> 32) as u32);
        put_u32(out, at + 4, si.ntp as u32);
        put_u32(out, at + 8, si.rtp_timestamp);
        put_u32(out, at + 12, si.packet_count);
        put_u32(out, at + 16, si.octet_count);
        at += 20;
    }
    for b in blocks {
        write_block(out, at, b);
        at += REPORT_BLOCK_LEN;
    }
    let s = at;
    out[s] = 0x81; // one chunk
    out[s + 1] = PT_SDES;
    out[s + 2..s + 4].copy_from_slice(&((sdes_len / 4 - 1) as u16).to_be_bytes());
    put_u32(out, s + 4, ssrc);
    out[s + 8] = 1; // CNAME
    out[s + 9] = cname.len() as u8;
    out[s + 10..s + 10 + cname.len()].copy_from_slice(cname.as_bytes());
    // End item plus zero padding to the word boundary.
    out[s + 10 + cname.len()..s + sdes_len].fill(0);
    Ok(needed)
}

/// Appends nothing; writes a BYE for `ssrc` (to follow a report in the same compound).
pub fn write_bye(out: &mut [u8], ssrc: u32) -> Result<usize, RtcpError> {
    if out.len() < 8 {
        return Err(RtcpError::BufferTooSmall { needed: 8 });
    }
    out[0] = 0x81;
    out[1] = PT_BYE;
    out[2..4].copy_from_slice(&1u16.to_be_bytes());
    put_u32(out, 4, ssrc);
    Ok(8)
}

/// Report blocks of a parsed SR/RR, read lazily from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl<'a> Iterator for ReportBlocks<'a> {
    type Item = ReportBlock;
    fn next(&mut self) -> Option<ReportBlock> {
        if self.0.len() < REPORT_BLOCK_LEN {
            return None;
        }
        let b = &self.0[..REPORT_BLOCK_LEN];
        self.0 = &self.0[REPORT_BLOCK_LEN..];
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let lost_raw = word(4) & 0x00FF_FFFF;
        // Sign-extend the 24-bit field.
        let cumulative_lost = ((lost_raw << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: word(0),
            fraction_lost: b[4],
            cumulative_lost,
            extended_highest_seq: word(8),
            jitter: word(12),
            lsr: word(16),
            dlsr: word(20),
        })
    }
}

/// One packet of a compound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        blocks: ReportBlocks<'a>,
    },
    ReceiverReport {
        ssrc: u32,
        blocks: ReportBlocks<'a>,
    },
    /// `ssrc` is the first source leaving (the only one a unicast peer sends).
    Bye {
        ssrc: Option<u32>,
    },
    /// SDES, APP, feedback, XR...: recognised as RTCP, ignored.
    Other {
        packet_type: u8,
    },
}

/// Iterates over the packets of a compound; stops at the first malformed one (yielding an error).
pub fn parse_compound(buf: &[u8]) -> RtcpIter<'_> {
    RtcpIter {
        rest: buf,
        failed: false,
    }
}

#[derive(Debug, Clone)]
pub struct RtcpIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for RtcpIter<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match parse_one(self.rest) {
            Ok((p, used)) => {
                self.rest = &self.rest[used..];
                Some(Ok(p))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn parse_one(buf: &[u8]) -> Result<(RtcpPacket<'_>, usize), RtcpError> {
    if buf.len() < 4 || buf[0] >> 6 != 2 {
        return Err(RtcpError::Malformed);
    }
    let count = (buf[0] & 0x1F) as usize;
    let padding = buf[0] & 0x20 != 0;
    let pt = buf[1];
    let len = (u16::from_be_bytes([buf[2], buf[3]]) as usize + 1) * 4;
    if buf.len() < len {
        return Err(RtcpError::Malformed);
    }
    let mut body = &buf[4..len];
    if padding {
        let pad = *body.last().ok_or(RtcpError::Malformed)? as usize;
        if pad == 0 || pad > body.len() {
            return Err(RtcpError::Malformed);
        }
        body = &body[..body.len() - pad];
    }
    let word = |b: &[u8], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let packet = match pt {
        PT_SR => {
            if body.len() < 24 + count * REPORT_BLOCK_LEN {
                return Err(RtcpError::Malformed);
            }
            let info = SenderInfo {
                ntp: ((word(body, 4) as u64) << 32) | word(body, 8) as u64,
                rtp_timestamp: word(body, 12),
                packet_count: word(body, 16),
                octet_count: word(body, 20),
            };
            RtcpPacket::SenderReport {
                ssrc: word(body, 0),
                info,
                blocks: ReportBlocks(&body[24..24 + count * REPORT_BLOCK_LEN]),
            }
        }
        PT_RR => {
            if body.len() < 4 + count * REPORT_BLOCK_LEN {
                return Err(RtcpError::Malformed);
            }
            RtcpPacket::ReceiverReport {
                ssrc: word(body, 0),
                blocks: ReportBlocks(&body[4..4 + count * REPORT_BLOCK_LEN]),
            }
        }
        PT_BYE => {
            if body.len() < count * 4 {
                return Err(RtcpError::Malformed);
            }
            RtcpPacket::Bye {
                ssrc: if count > 0 { Some(word(body, 0)) } else { None },
            }
        }
        other => RtcpPacket::Other { packet_type: other },
    };
    Ok((packet, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(i: u32) -> ReportBlock {
        ReportBlock {
            ssrc: 0x1000 + i,
            fraction_lost: 25,
            cumulative_lost: -3,
            extended_highest_seq: 70000,
            jitter: 42,
            lsr: 0xAABBCCDD,
            dlsr: 65536,
        }
    }

    #[test]
    fn sr_with_sdes_round_trips() {
        let mut buf = [0u8; 256];
        let info = SenderInfo {
            ntp: ntp_from_unix(1_700_000_000, 500_000_000),
            rtp_timestamp: 1234,
            packet_count: 50,
            octet_count: 8000,
        };
        let n = write_report(&mut buf, 0xCAFE, Some(&info), &[block(1)], "ivr@example").unwrap();
        assert_eq!(n % 4, 0);
        assert!(crate::rtp::packet::is_rtcp(&buf[..n]));
        let packets: Vec<_> = parse_compound(&buf[..n]).collect();
        assert_eq!(packets.len(), 2);
        match packets[0].unwrap() {
            RtcpPacket::SenderReport {
                ssrc,
                info: got,
                blocks,
            } => {
                assert_eq!(ssrc, 0xCAFE);
                assert_eq!(got, info);
                assert_eq!(blocks.collect::<Vec<_>>(), vec![block(1)]);
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(
            packets[1].unwrap(),
            RtcpPacket::Other {
                packet_type: PT_SDES
            }
        );
        // NTP fraction of half a second is 2^31.
        assert_eq!(info.ntp as u32, 0x8000_0000);
        assert_eq!(info.ntp >> 32, 1_700_000_000 + 2_208_988_800);
    }

    #[test]
    fn rr_with_several_blocks_and_bye() {
        let mut buf = [0u8; 512];
        let blocks: Vec<_> = (0..3).map(block).collect();
        let n = write_report(&mut buf, 7, None, &blocks, "a").unwrap();
        let m = write_bye(&mut buf[n..], 7).unwrap();
        let packets: Vec<_> = parse_compound(&buf[..n + m]).map(|p| p.unwrap()).collect();
        assert!(matches!(
            packets[0],
            RtcpPacket::ReceiverReport { ssrc: 7, .. }
        ));
        if let RtcpPacket::ReceiverReport { blocks: b, .. } = packets[0] {
            assert_eq!(b.collect::<Vec<_>>(), blocks);
        }
        assert_eq!(packets[2], RtcpPacket::Bye { ssrc: Some(7) });
    }

    #[test]
    fn limits_are_errors() {
        let mut buf = [0u8; 16];
        assert_eq!(
            write_report(&mut buf, 1, None, &[], "x"),
            Err(RtcpError::BufferTooSmall { needed: 20 })
        );
        let many = [ReportBlock::default(); 32];
        let mut big = [0u8; 2048];
        assert_eq!(
            write_report(&mut big, 1, None, &many, "x"),
            Err(RtcpError::TooManyBlocks)
        );
        assert_eq!(
            write_report(&mut big, 1, None, &[], &"x".repeat(256)),
            Err(RtcpError::CnameTooLong)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut x: u32 = 99;
        let mut errors = 0;
        for len in 0..80 {
            let mut buf = vec![0u8; len];
            for _ in 0..300 {
                for b in buf.iter_mut() {
                    x = x.wrapping_mul(1103515245).wrapping_add(12345);
                    *b = (x >> 16) as u8;
                }
                // Force version 2 half the time so deeper paths are reached.
                if len > 0 && x & 1 == 0 {
                    buf[0] = (buf[0] & 0x3F) | 0x80;
                }
                for p in parse_compound(&buf) {
                    if let Ok(
                        RtcpPacket::SenderReport { blocks, .. }
                        | RtcpPacket::ReceiverReport { blocks, .. },
                    ) = p
                    {
                        blocks.count();
                    }
                    errors += p.is_err() as u32;
                }
            }
        }
        assert!(errors > 0);
        // Length field claiming more than the datagram holds.
        assert_eq!(
            parse_compound(&[0x80, 201, 0, 9, 0, 0, 0, 1]).next(),
            Some(Err(RtcpError::Malformed))
        );
        // RC claiming a block the length does not cover.
        assert_eq!(
            parse_compound(&[0x81, 201, 0, 1, 0, 0, 0, 1]).next(),
            Some(Err(RtcpError::Malformed))
        );
    }

    #[test]
    fn report_block_from_receiver() {
        use crate::rtp::session::RtpReceiver;
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut r = RtpReceiver::new(8000);
        for i in 0..20u16 {
            if i != 7 {
                r.handle_packet(
                    t0 + Duration::from_millis(i as u64 * 20),
                    5,
                    i,
                    i as u32 * 160,
                );
            }
        }
        r.handle_sender_report(t0, 0x0001_2345_6789_0000);
        let rb = r.report_block(t0 + Duration::from_millis(500)).unwrap();
        assert_eq!(rb.lsr, 0x2345_6789);
        assert_eq!(rb.dlsr, 32768);
        assert_eq!(rb.cumulative_lost, 1);
        let mut buf = [0u8; 128];
        let n = write_report(&mut buf, 9, None, &[rb], "c").unwrap();
        let Some(Ok(RtcpPacket::ReceiverReport { mut blocks, .. })) =
            parse_compound(&buf[..n]).next()
        else {
            panic!("not an RR");
        };
        assert_eq!(blocks.next(), Some(rb));
    }
}
