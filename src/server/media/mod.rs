//! The media engine (issue #15). `leg`: one call's receive path as a sans-IO unit
//! (`MediaLeg`: strict source, SRTP unprotect, jitter buffer and decoding, RFC 4733 and in-band
//! DTMF, the speech front end, the RTP timeout), driven by whoever owns the call's socket. Time
//! is an argument and nothing in it touches a socket, so it is tested in virtual time.

pub mod leg;

pub use leg::{LegSetup, MediaEvent, MediaLeg, Rx, RxMedia};
