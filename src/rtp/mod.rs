//! rtp (in progress).
