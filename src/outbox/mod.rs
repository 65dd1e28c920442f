//! The outbox: links to send by SMS or email, written durably before the caller hears "sent" (in progress).
