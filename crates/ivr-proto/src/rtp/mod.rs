//! RTP media core (sans-IO): packets, stream bookkeeping, RTCP, jitter buffer, RFC 4733
//! telephone events and codecs. Everything on the per-packet path writes into caller buffers
//! and never allocates after construction.

pub mod codec;
pub mod dtmf;
pub mod inbound;
pub mod jitter;
pub mod packet;
pub mod rtcp;
pub mod session;
pub mod srtp;
pub mod t140;

pub use codec::{CodecError, Decoder, Encoder};
pub use dtmf::{DigitEvent, TelephoneEventReceiver};
pub use inbound::{Inbound, InboundConfig};
pub use jitter::{JitterBuffer, JitterConfig, Pop, PushOutcome};
pub use packet::{PacketError, RtpPacket, parse_rtp, write_rtp};
pub use rtcp::{ReportBlock, RtcpPacket, SenderInfo};
pub use session::{Accept, Due, Pacer, ReceiverStats, RtpReceiver, RtpSender};
