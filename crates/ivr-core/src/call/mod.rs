//! One call, sans-IO: the transfer (REFER, then the B2BUA bridge), the TTY session (Baudot
//! modem + text dialog) and its watch on voice calls, the RTT text stream's conversation, and
//! what a text conversation asks of the call (`text_step`).

pub mod rtt;
pub mod text_step;
pub mod transfer;
pub mod tty;
