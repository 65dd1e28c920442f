//! sip (in progress).
