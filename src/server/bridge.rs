//! The transfer's IO half: the agent leg of a bridged call (its socket and SRTP sessions) and
//! the relay between it and the caller. The decisions and the packet rewriting are sans-IO in
//! `ivr_core::call::transfer` (re-exported here under the names the shell always used).

use std::net::SocketAddr;

pub use ivr_core::call::transfer::{
    BridgeConfig, BridgeError, LegMedia, Outcome, Relay, Step, Transfer, agent_media, offer,
    route_of,
};

use crate::rtp::srtp::{Protector, Unprotector};
use crate::sip::sdp::SrtpKeys;

/// Agent-leg news from the SIP task, with the answered leg's socket and keys.
pub type AgentEvent = ivr_core::call::transfer::AgentEvent<Box<AgentLeg>>;

/// The agent leg as the call task holds it once the agent answered.
#[derive(Debug)]
pub struct AgentLeg {
    pub socket: tokio::net::UdpSocket,
    pub remote: SocketAddr,
    pub media: LegMedia,
    /// The agent leg's SRTP keys (ours from the offer, the agent's from its answer); None:
    /// plain RTP.
    pub srtp: Option<SrtpKeys>,
}

/// The agent leg's SRTP sessions: ours protects what goes to the agent, the agent's key
/// checks what comes back.
struct AgentSrtp {
    tx: Protector,
    rx: Unprotector,
}

/// A bridged call's media: both relays and their buffer, owned by the call task.
/// Each leg has its own SRTP keys: a caller's packet arrives here already checked and
/// decrypted with the caller leg's key (the call task does that) and leaves protected with the
/// agent leg's; an agent's packet is checked with the agent leg's key and leaves protected with
/// the caller leg's (`to_caller`). Nothing plain leaves an SRTP leg: a packet that cannot be
/// protected is not sent.
pub struct Bridge {
    leg: AgentLeg,
    srtp: Option<AgentSrtp>,
    to_agent: Relay,
    to_caller: Relay,
    /// Agent packets that failed SRTP authentication (forged, replayed, plain): dropped.
    refused: u64,
    out: [u8; 1500],
}

impl Bridge {
    pub fn new(leg: AgentLeg, caller: LegMedia, seed: u64) -> Result<Bridge, BridgeError> {
        let srtp = match &leg.srtp {
            Some(k) => Some(AgentSrtp {
                tx: Protector::new(k.suite, &k.local).map_err(|_| BridgeError::Srtp)?,
                rx: Unprotector::new(k.suite, &k.remote).map_err(|_| BridgeError::Srtp)?,
            }),
            None => None,
        };
        Ok(Bridge {
            to_agent: Relay::new(caller, leg.media, seed)?,
            to_caller: Relay::new(leg.media, caller, seed ^ 0x5bd1_e995)?,
            srtp,
            leg,
            refused: 0,
            out: [0; 1500],
        })
    }

    /// A datagram from the caller goes to the agent (dropped if the socket is not ready: a
    /// late packet is worth less than a blocked call task). On an SRTP agent leg it is
    /// protected in place in the relay buffer with the agent leg's key.
    pub fn from_caller(&mut self, datagram: &[u8]) {
        let Some(n) = self.to_agent.relay(datagram, &mut self.out) else {
            return;
        };
        let n = match self.srtp.as_mut() {
            Some(s) => match s.tx.protect(&mut self.out, n) {
                Ok(n) => n,
                Err(_) => return,
            },
            None => n,
        };
        let _ = self.leg.socket.try_send_to(&self.out[..n], self.leg.remote);
    }

    /// Wait for the agent's next datagram, into `buf`.
    pub async fn recv_agent(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.leg.socket.recv_from(buf).await.map(|(n, _)| n)
    }

    /// A datagram from the agent goes to the caller on the caller leg's socket (symmetric RTP:
    /// the caller expects our media from the port it sends to).
    /// On an SRTP call the relayed packet is protected with the caller leg's own key (the
    /// caller's stream's protector), in place in the relay buffer.
    /// On an SRTP agent leg, `datagram` is first checked and decrypted in place with the agent
    /// leg's key; one that fails is dropped and counted.
    pub fn to_caller(
        &mut self,
        datagram: &mut [u8],
        caller: &tokio::net::UdpSocket,
        dest: Option<SocketAddr>,
        stream: &super::outgoing::Stream,
    ) {
        let Some(dest) = dest else { return };
        let len = match self.srtp.as_mut() {
            Some(s) => match s.rx.unprotect(datagram) {
                Ok(n) => n,
                Err(_) => {
                    self.refused += 1;
                    return;
                }
            },
            None => datagram.len(),
        };
        if let Some(n) = self.to_caller.relay(&datagram[..len], &mut self.out) {
            if let Some(n) = stream.protect(&mut self.out, n) {
                let _ = caller.try_send_to(&self.out[..n], dest);
            }
        }
    }

    /// (caller → agent, agent → caller) packets relayed.
    pub fn packets(&self) -> (u64, u64) {
        (self.to_agent.packets(), self.to_caller.packets())
    }

    /// Agent packets dropped for failing SRTP authentication.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Whether the agent leg is SRTP.
    pub fn is_srtp(&self) -> bool {
        self.srtp.is_some()
    }
}

/// Awaits the agent's next datagram, or forever when there is no bridge (a `select!` arm).
pub async fn recv_agent(bridge: Option<&Bridge>, buf: &mut [u8]) -> Option<usize> {
    match bridge {
        Some(b) => b.recv_agent(buf).await.ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::codec::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
    use crate::rtp::packet::write_rtp;
    use crate::rtp::srtp::{KeySalt, Suite};
    use crate::types::Codec;
    use std::time::Duration;

    const PCMU: LegMedia = LegMedia {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
    };
    const PCMA: LegMedia = LegMedia {
        codec: Codec::Pcma,
        payload_type: 8,
        telephone_event: Some(96),
    };

    /// An SRTP agent leg: the caller's (already decrypted) packet reaches the agent protected
    /// with the agent leg's key (the payload not in clear, the agent's key opens it); the
    /// agent's packets are checked with its key: a plain or forged one is dropped and counted,
    /// a good one is relayed to the caller protected with the caller leg's key.
    #[test]
    fn srtp_agent_leg_relays_protected_both_ways() {
        use crate::rtp::srtp::MAX_TRAILER;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let ours = KeySalt([0x11; 30]);
            let agents = KeySalt([0x22; 30]);
            let callers_rx = KeySalt([0x33; 30]);
            let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            agent
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            caller
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let leg = AgentLeg {
                socket: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
                remote: agent.local_addr().unwrap(),
                media: PCMA,
                srtp: Some(SrtpKeys {
                    suite: Suite::AesCm128HmacSha1_80,
                    local: ours.clone(),
                    remote: agents.clone(),
                }),
            };
            let mut b = Bridge::new(leg, PCMU, 3).unwrap();
            assert!(b.is_srtp());

            // Caller → agent.
            let mut plain = [0u8; 12 + 160];
            write_rtp(&mut plain, 0, 1, 160, 0x1234_5678, false, &[0x7f; 160]).unwrap();
            // (tokio learns a fresh socket's write readiness from the reactor.)
            b.leg.socket.writable().await.unwrap();
            b.from_caller(&plain);
            let mut buf = [0u8; 1500];
            let n = agent.recv(&mut buf).unwrap();
            assert_eq!(n, 12 + 160 + 10, "an auth tag on the wire");
            let converted = alaw_encode(ulaw_decode(0x7f));
            assert!(buf[12..172].iter().any(|&x| x != converted), "not in clear");
            let mut rx = Unprotector::new(Suite::AesCm128HmacSha1_80, &ours).unwrap();
            let m = rx.unprotect(&mut buf[..n]).unwrap();
            assert!(buf[12..m].iter().all(|&x| x == converted));

            // Agent → caller: plain and forged dropped, a good one re-protected for the caller.
            let ivr = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let (events, _keep) = tokio::sync::mpsc::channel(1);
            let stream = super::super::outgoing::Stream::new(
                std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
                Codec::Pcmu,
                0,
                20,
                1,
                events,
            );
            stream.set_srtp(Some(
                Protector::new(Suite::AesCm128HmacSha1_80, &callers_rx).unwrap(),
            ));
            let dest = Some(caller.local_addr().unwrap());
            ivr.writable().await.unwrap();
            let mut tx = Protector::new(Suite::AesCm128HmacSha1_80, &agents).unwrap();
            let mut pkt = [0u8; 12 + 160 + MAX_TRAILER];
            write_rtp(&mut pkt, 8, 9, 160, 0xabcd, false, &[0x55; 160]).unwrap();
            let mut clear = pkt[..172].to_vec();
            b.to_caller(&mut clear, &ivr, dest, &stream);
            let n = tx.protect(&mut pkt, 172).unwrap();
            let mut forged = pkt[..n].to_vec();
            forged[30] ^= 1;
            b.to_caller(&mut forged, &ivr, dest, &stream);
            assert_eq!(b.refused(), 2);
            b.to_caller(&mut pkt[..n], &ivr, dest, &stream);
            assert_eq!(b.refused(), 2);
            let n = caller.recv(&mut buf).unwrap();
            assert_eq!(n, 172 + 10);
            let mut rx = Unprotector::new(Suite::AesCm128HmacSha1_80, &callers_rx).unwrap();
            let m = rx.unprotect(&mut buf[..n]).unwrap();
            let back = ulaw_encode(alaw_decode(0x55));
            assert!(buf[12..m].iter().all(|&x| x == back));
            assert_eq!(b.packets(), (1, 1));
        });
    }
}
