//! Audio core (sans-IO): in-band DTMF, resampling, levels, voice activity, the Baudot TTY modem.
//! Frame-by-frame functions work in place or into caller buffers and never allocate.

pub mod dtmf;
pub mod level;
pub mod resample;
pub mod tty;
pub mod vad;
