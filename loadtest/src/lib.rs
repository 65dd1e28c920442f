//! `loadtest`: replays scripted calls (recorded audio, RFC 4733 keys, TTY text, silence) against
//! the ivr over real SIP and RTP, checks each call's record on the admin API against the
//! script's expectation, measures latency and the IVR's RTP quality, and writes JSON and HTML
//! reports. See README.md for the manifest format.
//!
//! The SIP UAC, SDP, RTP header writer, G.711 tables, resampler and Baudot modulator are the
//! product's own (`ivr` crate): what the tester sends is what the IVR parses in production.

pub mod audio;
pub mod call;
pub mod cli;
pub mod html;
pub mod impair;
pub mod manifest;
pub mod nodes;
pub mod procfs;
pub mod run;
pub mod sender;
pub mod soak;
pub mod stamped;
pub mod stats;
