//! flow (in progress).
