//! audio (in progress).
pub mod tty;
