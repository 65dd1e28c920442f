//! ivr's wire protocols and audio DSP, sans-IO.
//!
//! Everything here takes bytes, samples and the current time as arguments and returns bytes,
//! samples and events: no sockets, no files, no threads, no clock reads, no tokio (the crate
//! does not depend on it; `tests/layers.rs` in the `ivr` crate checks that). The tokio shell in
//! the `ivr` crate owns the sockets and clocks and drives these machines.
//!
//! - `sip`: message parser and writer, transactions, dialogs, the UAS/UAC endpoint, the edge
//!   guard (trusted sources, scanners, floods).
//! - `rtp`: RTP/RTCP packets, codecs (G.711, Opus), jitter buffer, RFC 4733, T.140/RED, SRTP
//!   (libsrtp2 through FFI: crypto on buffers, no IO).
//! - `audio`: resampler, VAD, level meter, DTMF and Baudot (TTY) modems.
//! - `types`, `pii`: shared vocabulary (language, codec, direction) and the redacting wrapper
//!   for personal data.

pub mod audio;
pub mod pii;
pub mod rtp;
pub mod sip;
pub mod types;
