//! SIP user-agent core, sans-IO (RFC 3261 UAS and UAC, RFC 3264 answerer, RFC 3515 REFER,
//! RFC 4475-hardened).
//!
//! The shell drives [`Endpoint`] like quinn-proto's: datagrams and stream frames go into
//! `handle_input`, timers into `handle_timeout`, and it drains `poll_transmit` (send these bytes),
//! `poll_event` (call control for the app) and `poll_timeout` (when to wake up next) after every
//! input. Nothing here reads clocks, sockets or files.
//!
//! ```
//! use std::time::Instant;
//! use ivr_proto::sip::{Endpoint, EndpointConfig, Event, Transport};
//!
//! let mut ep = Endpoint::new(EndpointConfig::default());
//! let now = Instant::now();
//! let from = "127.0.0.1:5070".parse().unwrap();
//! let options = b"OPTIONS sip:ivr@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
//!     From: <sip:a@example.com>;tag=1\r\nTo: <sip:ivr@example.com>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
//! ep.handle_input(now, from, Transport::Udp, options);
//! let t = ep.poll_transmit().unwrap(); // socket.send_to(&t.payload, t.destination)
//! assert!(t.payload.starts_with(b"SIP/2.0 200 OK"));
//! while let Some(event) = ep.poll_event() {
//!     if let Event::Incoming { call, .. } = event { /* negotiate, then ep.answer(..) */ }
//! }
//! if let Some(at) = ep.poll_timeout() { /* sleep_until(at); */ ep.handle_timeout(at) }
//! ```
//!
//! Outgoing calls: [`Endpoint::invite`] returns a `CallKey` at once; `Event::Progress`, then
//! `Event::Answered` (ACK already sent) or `Event::Failed` follow. [`Endpoint::cancel`] and
//! [`Endpoint::hangup`] end them; [`Endpoint::refer`] transfers any established call and reports
//! `Event::TransferProgress`.
//!
//! Before any of that, the shell asks [`guard::Guard`] whether a source may talk at all
//! (trusted networks, scanners by User-Agent, per-source flood bans).
//!
//! Over TCP the shell cuts the byte stream with [`message::frame_len`] and feeds whole messages.
//! An SDP answer is built by [`sdp::negotiate`]; the endpoint itself only checks that an INVITE
//! body is SDP (415 otherwise) and parses it.

pub mod dialog;
pub mod endpoint;
pub mod guard;
pub mod message;
pub mod sdp;
pub mod transaction;

pub use endpoint::{
    CallError, CallKey, Endpoint, EndpointConfig, Event, IncomingCall, OutgoingCall,
    TerminateReason, Transmit, Transport,
};
