//! The client side of the endpoint: outgoing INVITE (RFC 3261 §13.2, §17.1.1), CANCEL (§9.1),
//! and blind transfer by REFER with NOTIFY progress (RFC 3515).
//!
//! An outgoing call is a `Call` with a `Uac` part and no dialog entry until its first 2xx; then
//! it is routed like any other dialog (BYE both ways, re-INVITE, REFER). Responses reach the
//! INVITE client transaction by Via branch and CSeq method (§17.1.3); the ACK for a non-2xx is
//! the transaction's, the ACK for a 2xx is the dialog's and is kept per To tag so that
//! retransmitted and forked 2xx are ACKed again without reaching the app.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::{
    Call, CallError, CallKey, CallState, ClientEntry, Endpoint, Event, MAX_CALLS, Transport,
};
use crate::sip::dialog::Dialog;
use crate::sip::message::{self, Header, Message, Method, StartLine};
use crate::sip::sdp::SessionDescription;
use crate::sip::transaction::{InviteClientTx, InviteResponse, NonInviteClientTx, TxAction};

/// A call to place with [`Endpoint::invite`]. `Debug` redacts who calls whom.
#[derive(Clone, PartialEq)]
pub struct OutgoingCall {
    /// sip:/sips:/tel: URI, used as Request-URI and To. May be PERSONAL DATA (a number).
    pub target: String,
    /// User part of our From (`sip:{from_user}@{local_addr}`): PERSONAL DATA when it is the
    /// caller's number passed through by a B2BUA.
    pub from_user: String,
    /// Where the INVITE and every later request of the call go (no DNS in the core).
    pub destination: SocketAddr,
    pub transport: Transport,
    pub offer: SessionDescription,
    /// Extra headers for the INVITE (e.g. `User-to-User`), name and value as sent.
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for OutgoingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingCall")
            .field("target", &crate::pii::Pii::new(self.target.as_str()))
            .field("from_user", &crate::pii::Pii::new(self.from_user.as_str()))
            .field("destination", &self.destination)
            .field("transport", &self.transport)
            .field("headers", &self.headers.len())
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CancelState {
    No,
    /// Asked for before any provisional: CANCEL goes out with the first 1xx (RFC 3261 §9.1).
    Wanted,
    Sent,
}

/// Client-side state of an outgoing call.
pub(super) struct Uac {
    pub(super) branch: String,
    pub(super) cancel: CancelState,
}

/// Our REFER and its implicit subscription.
pub(super) struct Refer {
    branch: String,
    /// A final outcome has been reported; later NOTIFYs are answered but not reported.
    done: bool,
    /// NOTIFYs are accepted until `Subscription-State: terminated` or the REFER failed.
    subscribed: bool,
}

pub(super) struct InviteClientEntry {
    pub(super) tx: InviteClientTx,
    pub(super) remote: SocketAddr,
    pub(super) transport: Transport,
    /// None once the app has heard the end of the call.
    call: Option<CallKey>,
    /// The INVITE as sent: CANCEL and the non-2xx ACK copy its headers.
    invite: Message,
    /// Dialog state before any answer, the base of every (forked) dialog of this INVITE.
    early: Dialog,
    /// ACKs sent for 2xx, by To tag.
    acks: Vec<(String, Vec<u8>)>,
}

/// Dialogs (To tags) one INVITE may create; more forked 2xx are dropped unanswered, a bound
/// on the ACK/BYE work a hostile peer can cause with one INVITE.
const MAX_FORKS: usize = 16;

/// A value that can go in a header line without breaking the message.
fn header_safe(s: &str) -> bool {
    !s.contains(['\r', '\n', '\0'])
}

fn valid_uri(uri: &str) -> bool {
    matches!(message::uri_scheme(uri).as_str(), "sip" | "sips" | "tel")
        && header_safe(uri)
        && !uri.contains(['<', '>', ' ', '\t'])
}

fn extra_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Header>, CallError> {
    headers
        .into_iter()
        .map(|(n, v)| {
            if message::is_token(n) && header_safe(v) {
                Ok(Header::new(n, v))
            } else {
                Err(CallError::InvalidTarget)
            }
        })
        .collect()
}

/// ACK or CANCEL of our INVITE, built from it (RFC 3261 §17.1.1.3, §9.1): same Request-URI,
/// top Via (so the same branch), From, Call-ID, Route and CSeq number; `to` from the response
/// for the ACK.
fn hop_by_hop(invite: &Message, method: Method, to: Option<&str>) -> Vec<u8> {
    let uri = match &invite.start {
        StartLine::Request { uri, .. } => uri.clone(),
        StartLine::Response { .. } => String::new(),
    };
    let mut headers = Vec::with_capacity(8);
    if let Some(via) = invite.values("via").first() {
        headers.push(Header::new("Via", via));
    }
    headers.push(Header::new("Max-Forwards", "70"));
    for name in ["from", "to", "call-id"] {
        let value = match (name, to) {
            ("to", Some(to)) => Some(to),
            _ => invite.header(name),
        };
        if let Some(value) = value {
            headers.push(Header::new(message::canonical(name), value));
        }
    }
    let cseq = invite.cseq().map_or(1, |(n, _)| n);
    headers.push(Header::new("CSeq", &format!("{cseq} {}", method.as_str())));
    headers.extend(invite.headers_named("route").cloned());
    Message {
        start: StartLine::Request { method, uri },
        headers,
        body: Vec::new(),
    }
    .to_bytes()
}

fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.trim_start().lines().next()?;
    let mut parts = line.split_whitespace();
    if parts.next()? != "SIP/2.0" {
        return None;
    }
    let code = parts.next()?;
    let code: u16 = code.parse().ok().filter(|_| code.len() == 3)?;
    (100..=699).contains(&code).then_some(code)
}

fn first_token(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl Endpoint {
    fn new_branch(&mut self) -> String {
        format!("z9hG4bK{:016x}", self.random())
    }

    fn via(&self, transport: Transport, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            transport.via_name(),
            self.local_for(transport),
            branch
        )
    }

    /// Place a call. Returns its key at once; progress arrives as `Progress`, then `Answered`
    /// or `Failed` (408 when Timer B expires without any response).
    pub fn invite(&mut self, now: Instant, req: OutgoingCall) -> Result<CallKey, CallError> {
        if self.calls.len() >= MAX_CALLS {
            return Err(CallError::TooManyCalls);
        }
        let user_ok = !req.from_user.is_empty()
            && req
                .from_user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,?/%".contains(c));
        if !valid_uri(&req.target) || !user_ok {
            return Err(CallError::InvalidTarget);
        }
        // App-supplied text goes into a header line: refuse CR/LF rather than let a context
        // value (UUI, a caller name) inject headers.
        let extra = extra_headers(req.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))?;
        // Unguessable and unique without a clock: two random words plus our address.
        let call_id = format!(
            "{:016x}{:08x}@{}",
            self.random(),
            self.random() as u32,
            self.config.local_addr.ip()
        );
        let tag = self.new_tag();
        let branch = self.new_branch();
        let local_uri = format!("<sip:{}@{}>", req.from_user, self.config.local_addr);
        let remote_uri = format!("<{}>", req.target);
        // Not in `dialogs` until a 2xx names the remote tag: requests before that cannot match.
        let early = Dialog::for_outgoing(&call_id, &tag, &local_uri, &remote_uri, &req.target, 1);
        let mut headers = vec![
            Header::new("Via", &self.via(req.transport, &branch)),
            Header::new("Max-Forwards", "70"),
            Header::new("From", &format!("{local_uri};tag={tag}")),
            Header::new("To", &remote_uri),
            Header::new("Call-ID", &call_id),
            Header::new("CSeq", "1 INVITE"),
            Header::new("Contact", &self.contact(req.transport, false)),
            Header::new("Allow", super::ALLOW),
            Header::new("User-Agent", &self.config.user_agent),
        ];
        headers.extend(extra);
        headers.push(Header::new("Content-Type", "application/sdp"));
        let invite = Message {
            start: StartLine::Request {
                method: Method::Invite,
                uri: req.target.clone(),
            },
            headers,
            body: req.offer.to_string().into_bytes(),
        };
        let bytes = invite.to_bytes();
        let call = CallKey(self.next_call);
        self.next_call += 1;
        let tx = InviteClientTx::new(now, &self.timing, req.transport.reliable(), bytes.clone());
        self.invite_client_txs.insert(
            branch.clone(),
            InviteClientEntry {
                tx,
                remote: req.destination,
                transport: req.transport,
                call: Some(call),
                invite,
                early: early.clone(),
                acks: Vec::new(),
            },
        );
        self.calls.insert(
            call,
            Call {
                dialog: early,
                remote: req.destination,
                transport: req.transport,
                sips: false,
                state: CallState::Early,
                pending: None,
                ok: None,
                hangup_after_ack: false,
                offerless: false,
                uac: Some(Uac {
                    branch,
                    cancel: CancelState::No,
                }),
                refer: None,
            },
        );
        self.send(req.transport, req.destination, bytes);
        Ok(call)
    }

    /// CANCEL an unanswered outgoing call. The end arrives as `Failed{status: 487}` (or another
    /// final, or 408 if nothing answers 64*T1 after the CANCEL); if the callee answered first,
    /// the endpoint ACKs, sends BYE and reports `Terminated{LocalBye}` instead of `Answered`.
    pub fn cancel(&mut self, now: Instant, call: CallKey) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call).ok_or(CallError::UnknownCall)?;
        let Some(uac) = c.uac.as_mut() else {
            return Err(CallError::InvalidState);
        };
        if c.state != CallState::Early || uac.cancel != CancelState::No {
            return Err(CallError::InvalidState);
        }
        let entry = self
            .invite_client_txs
            .get(&uac.branch)
            .ok_or(CallError::InvalidState)?;
        if !entry.tx.is_unanswered() {
            return Err(CallError::InvalidState);
        }
        if entry.tx.is_calling() {
            // The INVITE may not have arrived yet; a CANCEL could overtake it and be lost.
            uac.cancel = CancelState::Wanted;
            return Ok(());
        }
        let branch = uac.branch.clone();
        self.send_cancel(now, call, &branch);
        Ok(())
    }

    fn send_cancel(&mut self, now: Instant, call: CallKey, branch: &str) {
        let Some(entry) = self.invite_client_txs.get_mut(branch) else {
            return;
        };
        entry.tx.handle_cancel_sent(now, &self.timing);
        let bytes = hop_by_hop(&entry.invite, Method::Cancel, None);
        let (remote, transport) = (entry.remote, entry.transport);
        if let Some(uac) = self.calls.get_mut(&call).and_then(|c| c.uac.as_mut()) {
            uac.cancel = CancelState::Sent;
        }
        // The CANCEL shares the INVITE's branch; its responses are told apart by CSeq method.
        // `call: None`: the CANCEL's own outcome means nothing to the app; the INVITE's final
        // response (487, or a 2xx that won the race) decides how the call ends.
        let tx = NonInviteClientTx::new(now, &self.timing, transport.reliable(), bytes.clone());
        self.client_txs.insert(
            branch.to_string(),
            ClientEntry {
                tx,
                method: Method::Cancel,
                remote,
                transport,
                call: None,
            },
        );
        self.send(transport, remote, bytes);
    }

    pub(super) fn handle_invite_response(
        &mut self,
        now: Instant,
        branch: &str,
        code: u16,
        msg: &Message,
    ) {
        let Some(entry) = self.invite_client_txs.get_mut(branch) else {
            return;
        };
        let (remote, transport, call) = (entry.remote, entry.transport, entry.call);
        match entry.tx.handle_response(now, &self.timing, code) {
            InviteResponse::Ignore => {}
            InviteResponse::ResendAck(ack) => {
                if !ack.is_empty() {
                    self.send(transport, remote, ack);
                }
            }
            InviteResponse::Provisional => {
                // Every 1xx is reported (retransmitted 180s too): the app only shows progress.
                let Some(call) = call else { return };
                let wanted = self
                    .calls
                    .get(&call)
                    .and_then(|c| c.uac.as_ref())
                    .is_some_and(|u| u.cancel == CancelState::Wanted);
                self.events
                    .push_back(Event::Progress { call, status: code });
                if wanted {
                    self.send_cancel(now, call, branch);
                }
            }
            InviteResponse::Rejected => {
                // The ACK of a non-2xx belongs to the transaction and must carry the response's
                // To tag (RFC 3261 §17.1.1.3), so it can only be built now.
                let to = msg.header("to").map(str::to_string);
                let ack = hop_by_hop(&entry.invite, Method::Ack, to.as_deref());
                entry.tx.store_ack(ack.clone());
                entry.call = None;
                self.send(transport, remote, ack);
                if let Some(call) = call {
                    self.forget(call);
                    self.events.push_back(Event::Failed { call, status: code });
                }
            }
            InviteResponse::Success => self.handle_invite_2xx(now, branch, msg),
        }
    }

    /// A 2xx to our INVITE. A retransmission gets its ACK again; the first 2xx establishes the
    /// call; any other To tag is a fork (or a 2xx after our call ended) that is ACKed and hung
    /// up at once (RFC 3261 §13.2.2.4).
    fn handle_invite_2xx(&mut self, now: Instant, branch: &str, msg: &Message) {
        let Some(entry) = self.invite_client_txs.get_mut(branch) else {
            return;
        };
        let tag = msg.to_tag().unwrap_or_default();
        let (remote, transport) = (entry.remote, entry.transport);
        if let Some((_, ack)) = entry.acks.iter().find(|(t, _)| *t == tag) {
            // A retransmitted 2xx means our ACK was lost (RFC 3261 §13.2.2.4).
            let ack = ack.clone();
            return self.send(transport, remote, ack);
        }
        if entry.acks.len() >= MAX_FORKS {
            return;
        }
        let dialog = entry.early.with_response(msg);
        let cseq = entry.early.local_cseq;
        let call = entry.call;
        let via = {
            let b = format!("z9hG4bK{:016x}", self.random());
            self.via(transport, &b)
        };
        let ack = dialog.ack(via, cseq, &self.config.user_agent).to_bytes();
        if let Some(entry) = self.invite_client_txs.get_mut(branch) {
            entry.acks.push((tag, ack.clone()));
        }
        self.send(transport, remote, ack);

        let first = call
            .and_then(|k| self.calls.get(&k).map(|c| (k, c)))
            .filter(|(_, c)| c.state == CallState::Early && c.uac.is_some());
        let Some((call, c)) = first else {
            return self.send_detached_bye(now, dialog, remote, transport);
        };
        // The dialog is registered even when we hang up at once: the BYE and any request the
        // callee sends meanwhile must find it.
        let cancelled = c.uac.as_ref().is_some_and(|u| u.cancel != CancelState::No);
        let id = dialog.id.clone();
        if let Some(c) = self.calls.get_mut(&call) {
            c.dialog = dialog;
            c.state = CallState::Confirmed;
        }
        self.dialogs.insert(id, call);
        if cancelled {
            // The callee answered before our CANCEL took effect: end it as RFC 3261 §9.1 says.
            let _ = self.send_bye(now, call);
            return;
        }
        // An unparseable answer is passed on as None rather than failing a call that the
        // callee already considers up; the app decides (typically: hang up).
        let answer = msg
            .header("content-type")
            .is_none_or(|t| first_token(t) == "application/sdp")
            .then(|| SessionDescription::parse(&msg.body).ok())
            .flatten();
        self.events.push_back(Event::Answered { call, answer });
    }

    /// BYE for a dialog the app never sees (a forked 2xx).
    fn send_detached_bye(
        &mut self,
        now: Instant,
        mut dialog: Dialog,
        remote: SocketAddr,
        transport: Transport,
    ) {
        let branch = self.new_branch();
        let via = self.via(transport, &branch);
        let contact = self.contact(transport, false);
        let bye = dialog
            .request(
                Method::Bye,
                via,
                &contact,
                &self.config.user_agent,
                &[],
                None,
            )
            .to_bytes();
        let tx = NonInviteClientTx::new(now, &self.timing, transport.reliable(), bye.clone());
        self.client_txs.insert(
            branch,
            ClientEntry {
                tx,
                method: Method::Bye,
                remote,
                transport,
                call: None,
            },
        );
        self.send(transport, remote, bye);
    }

    pub(super) fn handle_invite_client_timeouts(&mut self, now: Instant) {
        let due: Vec<String> = self
            .invite_client_txs
            .iter()
            .filter(|(_, e)| e.tx.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for branch in due {
            let Some(entry) = self.invite_client_txs.get_mut(&branch) else {
                continue;
            };
            match entry.tx.handle_timeout(now) {
                TxAction::None => {}
                TxAction::Retransmit(bytes) => {
                    let (t, r) = (entry.transport, entry.remote);
                    self.send(t, r, bytes);
                }
                TxAction::TimedOut => {
                    let call = entry.call.take();
                    self.invite_client_txs.remove(&branch);
                    // Timer B, or no final 64*T1 after our CANCEL: the call never happened.
                    if let Some(call) = call
                        && self
                            .calls
                            .get(&call)
                            .is_some_and(|c| c.state == CallState::Early)
                    {
                        self.forget(call);
                        self.events.push_back(Event::Failed { call, status: 408 });
                    }
                }
                TxAction::Terminated => {
                    self.invite_client_txs.remove(&branch);
                }
            }
        }
    }

    /// Blind transfer (RFC 3515): REFER within the established dialog of `call` with
    /// `Refer-To: <refer_to>`; `headers` adds e.g. `Referred-By` (ours by default) and a
    /// `User-to-User` context. The outcome arrives as `TransferProgress` events: the REFER's
    /// final response, then each NOTIFY's sipfrag status, `done: true` on the last one.
    pub fn refer(
        &mut self,
        now: Instant,
        call: CallKey,
        refer_to: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), CallError> {
        let c = self.calls.get(&call).ok_or(CallError::UnknownCall)?;
        // One transfer at a time: NOTIFYs carry no reference to their REFER unless `id=` is
        // used, so two would be indistinguishable.
        if c.state != CallState::Confirmed || c.refer.as_ref().is_some_and(|r| !r.done) {
            return Err(CallError::InvalidState);
        }
        let target = refer_to.trim();
        let target = target
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(target);
        if !valid_uri(target) {
            return Err(CallError::InvalidTarget);
        }
        let mut extra = vec![Header::new("Refer-To", &format!("<{target}>"))];
        extra.extend(extra_headers(headers.iter().copied())?);
        // Referred-By lets the transfer target (and the trunk's policy) see who transferred.
        if !extra.iter().any(|h| h.is("referred-by")) {
            extra.push(Header::new("Referred-By", &c.dialog.local_uri));
        }
        let branch = self.send_in_dialog(now, call, Method::Refer, &extra, None)?;
        if let Some(c) = self.calls.get_mut(&call) {
            c.refer = Some(Refer {
                branch,
                done: false,
                subscribed: true,
            });
        }
        Ok(())
    }

    /// Final response to our REFER (or 408 on Timer F).
    pub(super) fn handle_refer_final(&mut self, call: CallKey, branch: &str, code: u16) {
        let Some(r) = self
            .calls
            .get_mut(&call)
            .and_then(|c| c.refer.as_mut())
            .filter(|r| r.branch == branch && !r.done)
        else {
            return;
        };
        // 2xx only means "accepted"; the outcome follows in NOTIFY. Anything else is the end.
        let done = !(200..300).contains(&code);
        if done {
            (r.done, r.subscribed) = (true, false);
        }
        self.events.push_back(Event::TransferProgress {
            call,
            status: code,
            done,
        });
    }

    /// NOTIFY in the dialog of `call`: only our REFER's implicit subscription takes them.
    pub(super) fn handle_notify(
        &mut self,
        now: Instant,
        call: CallKey,
        msg: &Message,
        from: SocketAddr,
        transport: Transport,
    ) {
        let subscribed = self
            .calls
            .get(&call)
            .and_then(|c| c.refer.as_ref())
            .is_some_and(|r| r.subscribed);
        // RFC 6665 §4.1.3: a NOTIFY that matches no subscription gets 481, which also tells
        // the notifier to stop.
        if !subscribed {
            return self.reply(now, msg, from, transport, 481, &[]);
        }
        if msg.header("event").map(first_token).as_deref() != Some("refer") {
            let allow = [Header::new("Allow-Events", "refer")];
            return self.reply(now, msg, from, transport, 489, &allow);
        }
        let frag = msg
            .header("content-type")
            .is_none_or(|t| first_token(t) == "message/sipfrag");
        let Some(status) = sipfrag_status(&msg.body).filter(|_| frag) else {
            return self.reply(now, msg, from, transport, 400, &[]);
        };
        let terminated = msg
            .header("subscription-state")
            .is_some_and(|s| first_token(s) == "terminated");
        self.reply(now, msg, from, transport, 200, &[]);
        let Some(r) = self.calls.get_mut(&call).and_then(|c| c.refer.as_mut()) else {
            return;
        };
        if terminated {
            r.subscribed = false;
        }
        if r.done {
            return;
        }
        // A subscription that ends without a final sipfrag (e.g. the referee gave up) is an
        // outcome too: the app must not wait forever.
        r.done = status >= 200 || terminated;
        let done = r.done;
        self.events
            .push_back(Event::TransferProgress { call, status, done });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipfrag_status_line() {
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying\r\n"), Some(100));
        assert_eq!(sipfrag_status(b"SIP/2.0 486 Busy Here"), Some(486));
        assert_eq!(
            sipfrag_status(b"\r\nSIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n"),
            Some(200)
        );
        for bad in [
            &b""[..],
            b"SIP/2.0 99 x",
            b"SIP/2.0 2000 OK",
            b"HTTP/1.1 200",
            b"\xff\xfe",
        ] {
            assert_eq!(sipfrag_status(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn outgoing_call_debug_redacts() {
        let call = OutgoingCall {
            target: "sip:+15551234567@trunk.example".into(),
            from_user: "5559876".into(),
            destination: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
            offer: SessionDescription::parse(
                b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                  m=audio 4000 RTP/AVP 0\r\n",
            )
            .unwrap(),
            headers: vec![],
        };
        let text = format!("{call:?}");
        assert!(
            !text.contains("5551234567") && !text.contains("5559876"),
            "{text}"
        );
    }

    #[test]
    fn cancel_copies_the_invite() {
        let invite = message::parse(
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx;rport\r\n\
              From: <sip:i@h>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 7 INVITE\r\n\
              Content-Type: application/sdp\r\n\r\n",
            &message::Limits::default(),
            false,
        )
        .unwrap();
        let cancel = hop_by_hop(&invite, Method::Cancel, None);
        let cancel = message::parse(&cancel, &message::Limits::default(), false).unwrap();
        assert_eq!(cancel.cseq(), Some((7, "CANCEL")));
        assert_eq!(cancel.top_via().unwrap().branch(), Some("z9hG4bKx"));
        assert_eq!(cancel.header("content-type"), None);
        let ack = hop_by_hop(&invite, Method::Ack, Some("<sip:a@b>;tag=9"));
        let ack = message::parse(&ack, &message::Limits::default(), false).unwrap();
        assert_eq!(
            (ack.cseq(), ack.to_tag()),
            (Some((7, "ACK")), Some("9".into()))
        );
    }
}
