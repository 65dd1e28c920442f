//! TTY (Baudot) text conversation (in progress).
