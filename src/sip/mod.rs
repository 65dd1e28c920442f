//! SIP user-agent server core, sans-IO (RFC 3261 UAS, RFC 3264 answerer, RFC 4475-hardened).
//!
//! The shell drives [`Endpoint`] like quinn-proto's: datagrams and stream frames go into
//! `handle_input`, timers into `handle_timeout`, and it drains `poll_transmit` (send these bytes),
//! `poll_event` (call control for the app) and `poll_timeout` (when to wake up next). Nothing here
//! reads clocks, sockets or files.

pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod sdp;
pub mod transaction;

pub use endpoint::{
    CallError, CallKey, Endpoint, EndpointConfig, Event, IncomingCall, TerminateReason, Transmit,
    Transport,
};
