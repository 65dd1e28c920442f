//! ivr — a speech-enabled telephony IVR backend.
//!
//! The crate is split into sans-IO cores (`sip`, `rtp`, `audio`, `nlu`, `flow`, `speech`) that take
//! input and the current time as arguments and return what to do, and one thin tokio shell
//! (`server`) that owns sockets, clocks, threads, files and databases. See ARCHITECTURE.md.

pub mod asr;
pub mod assets;
pub mod audio;
pub mod cli;
pub mod config;
pub mod diag;
pub mod flow;
pub mod intents;
pub mod nlu;
pub mod outbox;
pub mod pii;
pub mod routing;
pub mod rtp;
pub mod server;
pub mod sip;
pub mod speech;
pub mod types;
