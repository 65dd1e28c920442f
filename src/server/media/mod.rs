//! The media engine (issue #15). `leg`: one call's receive path as a sans-IO unit
//! (`MediaLeg`: strict source, SRTP unprotect, jitter buffer and decoding, RFC 4733 and in-band
//! DTMF, the Baudot watch, the speech front end, the RTP timeout), driven by the media thread
//! that owns the call's socket (`outgoing`). Time is an argument and nothing in it touches a
//! socket, so it is tested in virtual time.

pub mod leg;

pub use leg::{LegSetup, MediaEvent, MediaLeg, PrefetchHint, Rx, RxMedia};

/// A call's leg, shared by its media thread (which reads the socket into it and ticks it) and
/// its call task (which sets what it listens for, and ticks it in TTY mode).
pub type SharedLeg = std::sync::Arc<std::sync::Mutex<MediaLeg>>;

/// The leg, locked. Its state is plain data; a panic elsewhere cannot leave it inconsistent.
pub fn lock_leg(leg: &SharedLeg) -> std::sync::MutexGuard<'_, MediaLeg> {
    leg.lock().unwrap_or_else(|e| e.into_inner())
}
