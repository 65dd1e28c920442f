//! ivr — a speech-enabled telephony IVR backend.
//!
//! The workspace has three layers, and the compiler keeps them apart:
//! - `ivr-proto` (`sip`, `rtp`, `audio`, `types`, `pii`): the wire protocols and the DSP, sans-IO;
//! - `ivr-core` (`nlu`, `flow`, `routing`, `intents`, `diag`, the prompt catalog): the call logic,
//!   sans-IO, on top of `ivr-proto`;
//! - this crate: the IO. The tokio shell (`server`), the outbox senders and stores, the
//!   recognizer and synthesizer backends (`asr`, `speech`), the configuration and the CLI.
//!
//! The lower crates' modules are re-exported here under the paths they always had
//! (`ivr::sip`, `ivr::flow`, …). See ARCHITECTURE.md.

pub mod asr;
pub mod assets;
pub mod cli;
pub mod config;
pub mod outbox;
pub mod server;
pub mod speech;

pub use ivr_core::{call, diag, flow, intents, nlu, routing};
pub use ivr_proto::{audio, pii, rtp, sip, types};
