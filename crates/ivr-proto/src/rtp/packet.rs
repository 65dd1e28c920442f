//! RTP packet parse (rtp-rs `RtpReader`, zero-copy) and header write into a caller buffer.

use std::fmt;

/// Fixed RTP header length without CSRCs or extension.
pub const RTP_HEADER_LEN: usize = 12;

/// The fields of an incoming RTP packet that the media path needs; `payload` borrows the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PacketError {
    /// Not a parseable RTP v2 packet (too short, bad version, bad padding/CSRC/extension length).
    Malformed,
    /// The output buffer is shorter than header + payload.
    BufferTooSmall { needed: usize, available: usize },
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::Malformed => f.write_str("malformed RTP packet"),
            PacketError::BufferTooSmall { needed, available } => {
                write!(f, "RTP buffer too small: need {needed}, have {available}")
            }
        }
    }
}

impl std::error::Error for PacketError {}

/// Parses an RTP datagram. RTCP multiplexed on the same port (RFC 5761: PT 64–95 after masking
/// the marker) is rejected so the caller can route it to the RTCP parser.
pub fn parse_rtp(buf: &[u8]) -> Result<RtpPacket<'_>, PacketError> {
    if is_rtcp(buf) {
        return Err(PacketError::Malformed);
    }
    let r = rtp_rs::RtpReader::new(buf).map_err(|_| PacketError::Malformed)?;
    // rtp-rs accepts any version bits; we only speak RTP v2.
    if r.version() != 2 {
        return Err(PacketError::Malformed);
    }
    Ok(RtpPacket {
        payload_type: r.payload_type(),
        marker: r.mark(),
        seq: u16::from(r.sequence_number()),
        timestamp: r.timestamp(),
        ssrc: r.ssrc(),
        payload: r.payload(),
    })
}

/// True when a datagram on a muxed port is RTCP (RFC 5761 §4: second byte 192–223).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1]) && buf[0] >> 6 == 2
}

/// Writes a 12-byte RTP v2 header plus `payload` into `out`; returns the packet length.
pub fn write_rtp(
    out: &mut [u8],
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    payload: &[u8],
) -> Result<usize, PacketError> {
    let len = RTP_HEADER_LEN + payload.len();
    if out.len() < len {
        return Err(PacketError::BufferTooSmall {
            needed: len,
            available: out.len(),
        });
    }
    write_header(out, payload_type, seq, timestamp, ssrc, marker);
    out[RTP_HEADER_LEN..len].copy_from_slice(payload);
    Ok(len)
}

/// Writes only the header into `out[..12]` (the payload is already in place after it: the
/// prompt cache can encode straight into the send buffer). `out` must be at least 12 bytes.
pub fn write_header(
    out: &mut [u8],
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
) {
    out[0] = 0x80; // V=2, no padding, no extension, CC=0
    out[1] = (payload_type & 0x7F) | if marker { 0x80 } else { 0 };
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let mut buf = [0u8; 200];
        let n = write_rtp(&mut buf, 0, 65535, 0xDEADBEEF, 0x01020304, true, &[1, 2, 3]).unwrap();
        assert_eq!(n, 15);
        let p = parse_rtp(&buf[..n]).unwrap();
        assert_eq!(p.payload_type, 0);
        assert!(p.marker);
        assert_eq!(p.seq, 65535);
        assert_eq!(p.timestamp, 0xDEADBEEF);
        assert_eq!(p.ssrc, 0x01020304);
        assert_eq!(p.payload, &[1, 2, 3]);
        // Agrees with rtp-rs' own builder byte for byte.
        let built = rtp_rs::RtpPacketBuilder::new()
            .payload_type(0)
            .marked(true)
            .sequence(rtp_rs::Seq::from(65535))
            .timestamp(0xDEADBEEF)
            .ssrc(0x01020304)
            .payload(&[1, 2, 3])
            .build()
            .unwrap();
        assert_eq!(&buf[..n], &built[..]);
    }

    #[test]
    fn too_small_buffer_is_an_error() {
        let mut buf = [0u8; 13];
        assert_eq!(
            write_rtp(&mut buf, 0, 1, 1, 1, false, &[0, 0]),
            Err(PacketError::BufferTooSmall {
                needed: 14,
                available: 13
            })
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 12345;
        for len in 0..64 {
            let mut buf = vec![0u8; len];
            for _ in 0..200 {
                for b in buf.iter_mut() {
                    x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                    *b = (x >> 24) as u8;
                }
                let _ = parse_rtp(&buf);
            }
        }
        assert!(parse_rtp(&[0x80]).is_err());
        // Version 1 is rejected even when rtp-rs would read it.
        let mut buf = [0u8; 20];
        write_rtp(&mut buf, 0, 1, 1, 1, false, &[0; 8]).unwrap();
        buf[0] = 0x40;
        assert_eq!(parse_rtp(&buf), Err(PacketError::Malformed));
    }

    #[test]
    fn rtcp_is_told_apart() {
        let sr = [0x80u8, 200, 0, 6, 0, 0, 0, 1];
        assert!(is_rtcp(&sr));
        assert!(parse_rtp(&sr).is_err());
        let mut buf = [0u8; 20];
        let n = write_rtp(&mut buf, 8, 1, 1, 1, true, &[0; 4]).unwrap();
        assert!(!is_rtcp(&buf[..n]));
    }
}
