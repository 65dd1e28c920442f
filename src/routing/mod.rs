//! Business calendar and routing policy (in progress).
