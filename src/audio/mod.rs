//! audio (in progress).
