//! speech (in progress).
