//! ivr's call logic, sans-IO.
//!
//! - `nlu`: grammars, the intent classifier, slots, the answer/confirm/reject decision.
//! - `flow`: the voice dialog (`flow::Call`), the text dialog for TTY and RTT (`flow::tty`), the
//!   link entry sub-machine (`flow::entry`), the menu script.
//! - `routing`: the policy (which intent is answered, linked or transferred) and the business
//!   calendar.
//! - `prompts`: the prompt catalog and its markup.
//! - `call`: one call's pieces, sans-IO: the transfer (REFER, B2BUA bridge decisions and relay),
//!   the TTY session and watch, the RTT conversation.
//! - `intents`, `diag`: the intent table and file/line diagnostics.
//!
//! No tokio, no sockets, no files, no threads, no clock reads (`tests/layers.rs` in the `ivr`
//! crate checks the dependency tree): grammar and prompt files arrive as text, and the time is
//! an argument.

pub mod call;
pub mod diag;
pub mod flow;
pub mod intents;
pub mod nlu;
pub mod prompts;
pub mod routing;

// The protocol crate's vocabulary, under the paths the modules here have always used.
use ivr_proto::{audio, pii, rtp, sip, types};
