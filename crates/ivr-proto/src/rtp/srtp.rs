//! SRTP (RFC 3711) keyed by SDES (RFC 4568): the two suites every SIP phone has,
//! AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32, through Debian's libsrtp2 (a tiny FFI
//! over its stable C API: `srtp_create`, `srtp_protect`, `srtp_unprotect`); no crypto of our own.
//!
//! Sans-IO: the master keys are arguments (the shell draws ours from the OS), packets are
//! buffers. `Protector::protect` works in place in a caller-owned buffer (no allocation per
//! packet). Keys never reach `Debug`, logs or errors.

use std::fmt;
use std::os::raw::{c_int, c_uint, c_ulong, c_void};
use std::sync::Once;

/// Master key (16 bytes) + master salt (14 bytes), as carried in `inline:` (RFC 4568 §6.1).
pub const KEY_SALT_LEN: usize = 30;
/// What `srtp_protect` may append: the longest tag (16) + MKI (128) per libsrtp2's
/// `SRTP_MAX_TRAILER_LEN`. A buffer handed to `protect` must have this much room after the packet.
pub const MAX_TRAILER: usize = 16 + 128;

/// The SDES crypto suites we speak, in our order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }
    pub fn parse(name: &str) -> Option<Suite> {
        [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32]
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }
    /// Bytes of authentication tag on each SRTP packet.
    pub fn tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// A master key and salt. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySalt(pub [u8; KEY_SALT_LEN]);

impl fmt::Debug for KeySalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySalt(<redacted>)")
    }
}

impl KeySalt {
    /// From the base64 of an `inline:` key parameter (lifetime and MKI, if any, cut off first).
    pub fn from_base64(text: &str) -> Option<KeySalt> {
        let bytes = base64_decode(text)?;
        Some(KeySalt(bytes.try_into().ok()?))
    }
    pub fn to_base64(&self) -> String {
        base64_encode(&self.0)
    }
}

/// SRTP failures; no key material in them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpError {
    /// libsrtp2 refused to create the session (status code).
    Create(i32),
    /// The packet failed authentication, was replayed, or is malformed (status code).
    Unprotect(i32),
    /// Protecting failed, or the buffer had no room for the trailer.
    Protect(i32),
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SrtpError::Create(c) => write!(f, "srtp_create failed (status {c})"),
            SrtpError::Unprotect(c) => write!(f, "srtp_unprotect failed (status {c})"),
            SrtpError::Protect(c) => write!(f, "srtp_protect failed (status {c})"),
        }
    }
}

impl std::error::Error for SrtpError {}

// ---- libsrtp2 FFI (2.x ABI, /usr/include/srtp2/srtp.h) ----

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CryptoPolicy {
    cipher_type: u32,
    cipher_key_len: c_int,
    auth_type: u32,
    auth_key_len: c_int,
    auth_tag_len: c_int,
    sec_serv: c_int,
}

#[repr(C)]
struct SsrcSpec {
    kind: c_int,
    value: c_uint,
}

#[repr(C)]
struct Policy {
    ssrc: SsrcSpec,
    rtp: CryptoPolicy,
    rtcp: CryptoPolicy,
    key: *const u8,
    keys: *mut c_void,
    num_master_keys: c_ulong,
    deprecated_ekt: *mut c_void,
    window_size: c_ulong,
    allow_repeat_tx: c_int,
    enc_xtn_hdr: *mut c_int,
    enc_xtn_hdr_count: c_int,
    next: *mut Policy,
}

const SSRC_ANY_INBOUND: c_int = 2;
const SSRC_ANY_OUTBOUND: c_int = 3;

#[link(name = "srtp2")]
unsafe extern "C" {
    fn srtp_init() -> c_int;
    fn srtp_create(session: *mut *mut c_void, policy: *const Policy) -> c_int;
    fn srtp_dealloc(session: *mut c_void) -> c_int;
    fn srtp_protect(ctx: *mut c_void, rtp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect(ctx: *mut c_void, srtp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_protect_rtcp(ctx: *mut c_void, rtcp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect_rtcp(ctx: *mut c_void, srtcp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_crypto_policy_set_rtp_default(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_rtcp_default(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(p: *mut CryptoPolicy);
}

static INIT: Once = Once::new();

/// One direction of one SRTP stream (libsrtp2 session). Every use of the context goes through
/// `&mut self` (the owner: a pacing thread's stream under its mutex, a call task).
struct Session {
    ctx: *mut c_void,
}

// SAFETY: a libsrtp2 session has no thread affinity; it is only used through `&mut self`, so a
// shared `&Session` can do nothing with it.
unsafe impl Send for Session {}
unsafe impl Sync for Session {}

impl Session {
    fn new(suite: Suite, key: &KeySalt, outbound: bool) -> Result<Session, SrtpError> {
        INIT.call_once(|| {
            // SAFETY: library initialisation, once per process.
            unsafe {
                srtp_init();
            }
        });
        let mut rtp = CryptoPolicy::default();
        let mut rtcp = CryptoPolicy::default();
        // SAFETY: the setters fill plain structs of the ABI's layout.
        unsafe {
            match suite {
                Suite::AesCm128HmacSha1_80 => srtp_crypto_policy_set_rtp_default(&mut rtp),
                Suite::AesCm128HmacSha1_32 => {
                    srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&mut rtp)
                }
            }
            srtp_crypto_policy_set_rtcp_default(&mut rtcp);
        }
        let policy = Policy {
            ssrc: SsrcSpec {
                kind: if outbound {
                    SSRC_ANY_OUTBOUND
                } else {
                    SSRC_ANY_INBOUND
                },
                value: 0,
            },
            rtp,
            rtcp,
            key: key.0.as_ptr(),
            keys: std::ptr::null_mut(),
            num_master_keys: 0,
            deprecated_ekt: std::ptr::null_mut(),
            // RFC 3711 §3.3.2 minimum is 64; libsrtp2's default 128.
            window_size: 128,
            allow_repeat_tx: 0,
            enc_xtn_hdr: std::ptr::null_mut(),
            enc_xtn_hdr_count: 0,
            next: std::ptr::null_mut(),
        };
        let mut ctx = std::ptr::null_mut();
        // SAFETY: `policy` and the key it points to live across the call; libsrtp2 copies the
        // key into the session.
        let status = unsafe { srtp_create(&mut ctx, &policy) };
        if status != 0 || ctx.is_null() {
            return Err(SrtpError::Create(status));
        }
        Ok(Session { ctx })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from srtp_create and is freed once.
        unsafe {
            srtp_dealloc(self.ctx);
        }
    }
}

/// The sending side: RTP → SRTP in place.
pub struct Protector {
    session: Session,
    suite: Suite,
}

impl fmt::Debug for Protector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protector({})", self.suite.name())
    }
}

impl Protector {
    pub fn new(suite: Suite, key: &KeySalt) -> Result<Protector, SrtpError> {
        Ok(Protector {
            session: Session::new(suite, key, true)?,
            suite,
        })
    }

    /// Encrypt and authenticate the RTP packet in `buf[..len]`; returns the SRTP length
    /// (`len` + tag). `buf` must have `MAX_TRAILER` bytes of room after the packet.
    pub fn protect(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len < 12 || buf.len() < len + MAX_TRAILER {
            return Err(SrtpError::Protect(-1));
        }
        let mut n = len as c_int;
        // SAFETY: `buf` holds `len` bytes of packet and MAX_TRAILER of room, as libsrtp2 asks.
        let status = unsafe { srtp_protect(self.session.ctx, buf.as_mut_ptr().cast(), &mut n) };
        if status != 0 {
            return Err(SrtpError::Protect(status));
        }
        Ok(n as usize)
    }

    /// SRTCP: protect the RTCP compound packet in `buf[..len]` (adds the SRTCP index and tag).
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len < 8 || buf.len() < len + MAX_TRAILER + 4 {
            return Err(SrtpError::Protect(-1));
        }
        let mut n = len as c_int;
        // SAFETY: `buf` holds the packet and MAX_TRAILER + 4 bytes of room, as libsrtp2 asks.
        let status =
            unsafe { srtp_protect_rtcp(self.session.ctx, buf.as_mut_ptr().cast(), &mut n) };
        if status != 0 {
            return Err(SrtpError::Protect(status));
        }
        Ok(n as usize)
    }

    /// `protect` into a reusable `Vec`: the packet is copied in (the Vec's capacity is kept
    /// between calls, so a steady stream allocates nothing).
    pub fn protect_into(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        out.clear();
        out.extend_from_slice(packet);
        out.resize(packet.len() + MAX_TRAILER, 0);
        let n = self.protect(out, packet.len())?;
        out.truncate(n);
        Ok(())
    }
}

/// The receiving side: SRTP → RTP in place, with authentication and replay protection.
pub struct Unprotector {
    session: Session,
    suite: Suite,
}

impl fmt::Debug for Unprotector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unprotector({})", self.suite.name())
    }
}

impl Unprotector {
    pub fn new(suite: Suite, key: &KeySalt) -> Result<Unprotector, SrtpError> {
        Ok(Unprotector {
            session: Session::new(suite, key, false)?,
            suite,
        })
    }

    /// Check and decrypt the SRTP packet `buf` in place; returns the RTP length. A forged,
    /// replayed or truncated packet is an error and must be dropped.
    pub fn unprotect(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        if buf.len() < 12 + self.suite.tag_len() || buf.len() > c_int::MAX as usize {
            return Err(SrtpError::Unprotect(-1));
        }
        let mut n = buf.len() as c_int;
        // SAFETY: libsrtp2 reads and rewrites at most `n` bytes of `buf`.
        let status = unsafe { srtp_unprotect(self.session.ctx, buf.as_mut_ptr().cast(), &mut n) };
        if status != 0 {
            return Err(SrtpError::Unprotect(status));
        }
        Ok(n as usize)
    }

    /// SRTCP: check and decrypt an RTCP compound packet in place; returns the RTCP length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        if buf.len() < 8 + 4 + self.suite.tag_len() || buf.len() > c_int::MAX as usize {
            return Err(SrtpError::Unprotect(-1));
        }
        let mut n = buf.len() as c_int;
        // SAFETY: libsrtp2 reads and rewrites at most `n` bytes of `buf`.
        let status =
            unsafe { srtp_unprotect_rtcp(self.session.ctx, buf.as_mut_ptr().cast(), &mut n) };
        if status != 0 {
            return Err(SrtpError::Unprotect(status));
        }
        Ok(n as usize)
    }
}

/// One `a=crypto` line (RFC 4568 §9.1): `tag suite inline:key[|lifetime][|mki:len]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoAttr {
    pub tag: u32,
    pub suite: Suite,
    pub key: KeySalt,
}

impl CryptoAttr {
    /// Parse the value of an `a=crypto` attribute; None for suites we do not speak, other key
    /// methods, session parameters we do not support (e.g. UNENCRYPTED_SRTP), MKIs or bad keys.
    pub fn parse(value: &str) -> Option<CryptoAttr> {
        let mut parts = value.split_ascii_whitespace();
        let tag: u32 = parts.next()?.parse().ok()?;
        if tag > 999_999_999 {
            return None;
        }
        let suite = Suite::parse(parts.next()?)?;
        let params = parts.next()?;
        // Session parameters (UNENCRYPTED_SRTP, KDR=...) change the transform: not supported.
        if parts.next().is_some() {
            return None;
        }
        // One key only (";"-separated lists carry several keys with MKIs).
        if params.contains(';') {
            return None;
        }
        let inline = params
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("inline:"))
            .map(|_| &params[7..])?;
        let mut fields = inline.split('|');
        let key = KeySalt::from_base64(fields.next()?)?;
        for f in fields {
            // A lifetime is fine (we re-key per call long before 2^31 packets); an MKI is not.
            if f.contains(':') {
                return None;
            }
        }
        Some(CryptoAttr { tag, suite, key })
    }

    /// The `a=crypto` value.
    pub fn value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            self.key.to_base64()
        )
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> KeySalt {
        let mut k = [0u8; KEY_SALT_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8);
        }
        KeySalt(k)
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn round_trip_both_suites_with_tags_and_no_clear_payload() {
        for suite in [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32] {
            let k = key(7);
            let mut tx = Protector::new(suite, &k).unwrap();
            let mut rx = Unprotector::new(suite, &k).unwrap();
            let mut wire = Vec::new();
            for seq in 0..50u16 {
                let plain = rtp(seq, &[0xff; 160]);
                tx.protect_into(&plain, &mut wire).unwrap();
                assert_eq!(wire.len(), plain.len() + suite.tag_len());
                assert_eq!(wire[..12], plain[..12], "the header stays in clear");
                assert_ne!(wire[12..172], plain[12..], "the payload is encrypted");
                let n = rx.unprotect(&mut wire).unwrap();
                assert_eq!(wire[..n], plain[..]);
            }
        }
    }

    #[test]
    fn forged_replayed_truncated_and_wrong_key_packets_are_refused() {
        let suite = Suite::AesCm128HmacSha1_80;
        let mut tx = Protector::new(suite, &key(1)).unwrap();
        let mut rx = Unprotector::new(suite, &key(1)).unwrap();
        let mut other = Unprotector::new(suite, &key(2)).unwrap();
        let mut wire = Vec::new();
        tx.protect_into(&rtp(1, &[0x55; 160]), &mut wire).unwrap();
        let mut forged = wire.clone();
        forged[20] ^= 1;
        assert!(rx.unprotect(&mut forged).is_err());
        assert!(other.unprotect(&mut wire.clone()).is_err());
        assert!(rx.unprotect(&mut wire[..15].to_vec()).is_err());
        assert!(rx.unprotect(&mut []).is_err());
        let mut first = wire.clone();
        assert!(rx.unprotect(&mut first).is_ok());
        assert!(rx.unprotect(&mut wire).is_err(), "a replay is refused");
        // Plain RTP is not SRTP.
        assert!(rx.unprotect(&mut rtp(2, &[0x55; 160])).is_err());
    }

    #[test]
    fn protect_needs_room_for_the_trailer() {
        let mut tx = Protector::new(Suite::AesCm128HmacSha1_80, &key(3)).unwrap();
        let mut p = rtp(1, &[0; 160]);
        let len = p.len();
        assert!(tx.protect(&mut p, len).is_err());
    }

    #[test]
    fn crypto_lines_parse_and_print() {
        let k = key(9);
        let line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}", k.to_base64());
        let c = CryptoAttr::parse(&line).unwrap();
        assert_eq!(
            (c.tag, c.suite, &c.key),
            (1, Suite::AesCm128HmacSha1_80, &k)
        );
        assert_eq!(c.value(), line);
        // RFC 4568 §9.1's example: lifetime and MKI. The MKI is not supported.
        assert!(
            CryptoAttr::parse(
                "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"
            )
            .is_none()
        );
        let c = CryptoAttr::parse(
            "2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
        )
        .unwrap();
        assert_eq!(c.suite, Suite::AesCm128HmacSha1_32);
        for bad in [
            "",
            "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:short",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP",
            "1 AES_CM_128_HMAC_SHA1_80 key:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
        ] {
            assert!(CryptoAttr::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(format!("{k:?}"), "KeySalt(<redacted>)");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
    }
}
