//! Server configuration (in progress).
