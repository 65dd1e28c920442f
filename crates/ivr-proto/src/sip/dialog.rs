//! Dialog state (RFC 3261 §12) for both roles: identity, route set, remote target and CSeq
//! spaces, and the construction of requests inside the dialog (BYE, REFER, INFO, and the ACK
//! for a 2xx, which reuses the INVITE's CSeq number).

use super::message::{Header, Message, Method, NameAddr, StartLine};

/// Dialog identity from our side: Call-ID, our tag (To of incoming requests), their tag (From).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

#[derive(Clone, Debug)]
pub struct Dialog {
    pub id: DialogId,
    /// Our URI as the caller addressed us (their To without tag), used as From of our requests.
    pub local_uri: String,
    /// Their From value without tag, used as To of our requests.
    pub remote_uri: String,
    /// Remote Contact URI: the Request-URI of our requests (RFC 3261 §12.1.1).
    pub remote_target: String,
    /// Record-Route of the INVITE, in order, as our Route set (UAS keeps the order, §12.1.1).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    /// Highest CSeq seen from the peer; lower ones are out of order (§12.2.2).
    pub remote_cseq: u32,
}

/// Removes the `tag` parameter from a From/To value so that we can re-add ours.
fn without_tag(value: &str) -> String {
    match NameAddr::parse(value) {
        Ok(na) => {
            let mut out = match &na.display {
                Some(d) => format!(
                    "\"{}\" <{}>",
                    d.replace('\\', "\\\\").replace('"', "\\\""),
                    na.uri
                ),
                None => format!("<{}>", na.uri),
            };
            for (n, v) in na.params.iter().filter(|(n, _)| n != "tag") {
                match v {
                    Some(v) => out.push_str(&format!(";{n}={v}")),
                    None => out.push_str(&format!(";{n}")),
                }
            }
            out
        }
        Err(_) => value.to_string(),
    }
}

impl Dialog {
    /// Dialog state of a UAS from the dialog-creating INVITE (RFC 3261 §12.1.1).
    pub fn from_invite(invite: &Message, local_tag: &str) -> Option<Dialog> {
        let remote_target = invite
            .values("contact")
            .first()
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|na| na.uri)
            // RFC 2543 peers may omit Contact; the From URI is the best remaining target.
            .or_else(|| {
                NameAddr::parse(invite.header("from")?)
                    .ok()
                    .map(|na| na.uri)
            })?;
        let route_set = invite
            .values("record-route")
            .into_iter()
            .map(str::to_string)
            .collect();
        Some(Dialog {
            id: DialogId {
                call_id: invite.call_id()?.to_string(),
                local_tag: local_tag.to_string(),
                remote_tag: invite.from_tag().unwrap_or_default(),
            },
            local_uri: without_tag(invite.header("to")?),
            remote_uri: without_tag(invite.header("from")?),
            remote_target,
            route_set,
            local_cseq: 0,
            remote_cseq: invite.cseq().map(|(n, _)| n).unwrap_or(0),
        })
    }

    /// Dialog state of a UAC before any answer: the target is the Request-URI, no remote tag yet.
    /// `local_uri`/`remote_uri` are our From and To values without tags; `cseq` the INVITE's.
    pub fn for_outgoing(
        call_id: &str,
        local_tag: &str,
        local_uri: &str,
        remote_uri: &str,
        target: &str,
        cseq: u32,
    ) -> Dialog {
        Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag: local_tag.to_string(),
                remote_tag: String::new(),
            },
            local_uri: local_uri.to_string(),
            remote_uri: remote_uri.to_string(),
            remote_target: target.to_string(),
            route_set: Vec::new(),
            local_cseq: cseq,
            remote_cseq: 0,
        }
    }

    /// The UAC side of dialog creation from a 2xx (RFC 3261 §12.1.2): remote tag from To,
    /// target from Contact, and the Record-Route in reverse order as our route set.
    pub fn with_response(&self, response: &Message) -> Dialog {
        let mut d = self.clone();
        d.id.remote_tag = response.to_tag().unwrap_or_default();
        if let Some(uri) = response
            .values("contact")
            .first()
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|na| na.uri)
        {
            d.remote_target = uri;
        }
        d.route_set = response
            .values("record-route")
            .into_iter()
            .rev()
            .map(str::to_string)
            .collect();
        d
    }

    /// The ACK for a 2xx to the INVITE with CSeq `cseq` (RFC 3261 §13.2.2.4): a new branch, the
    /// dialog's route set, and the INVITE's CSeq number.
    pub fn ack(&self, via: String, cseq: u32, user_agent: &str) -> Message {
        self.build(Method::Ack, cseq, via, None, user_agent, &[], None)
    }

    /// Builds a request within the dialog (RFC 3261 §12.2.1.1). With a loose-routing first
    /// Route, the Request-URI is the remote target and the route set goes in Route; with a
    /// strict router the first route becomes the Request-URI.
    pub fn request(
        &mut self,
        method: Method,
        via: String,
        contact: &str,
        user_agent: &str,
        extra: &[Header],
        body: Option<(&str, Vec<u8>)>,
    ) -> Message {
        self.local_cseq = self.local_cseq.wrapping_add(1).max(1);
        self.build(
            method,
            self.local_cseq,
            via,
            Some(contact),
            user_agent,
            extra,
            body,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        method: Method,
        cseq: u32,
        via: String,
        contact: Option<&str>,
        user_agent: &str,
        extra: &[Header],
        body: Option<(&str, Vec<u8>)>,
    ) -> Message {
        let mut uri = self.remote_target.clone();
        let mut routes = self.route_set.clone();
        if let Some(first) = routes.first()
            && let Ok(na) = NameAddr::parse(first)
            && !na.uri.contains(";lr")
        {
            uri = na.uri;
            routes.remove(0);
            routes.push(format!("<{}>", self.remote_target));
        }
        let mut headers = vec![Header::new("Via", &via), Header::new("Max-Forwards", "70")];
        headers.extend(routes.iter().map(|r| Header::new("Route", r)));
        headers.push(Header::new(
            "From",
            &format!("{};tag={}", self.local_uri, self.id.local_tag),
        ));
        let to = if self.id.remote_tag.is_empty() {
            self.remote_uri.clone()
        } else {
            format!("{};tag={}", self.remote_uri, self.id.remote_tag)
        };
        headers.push(Header::new("To", &to));
        headers.push(Header::new("Call-ID", &self.id.call_id));
        headers.push(Header::new(
            "CSeq",
            &format!("{} {}", cseq, method.as_str()),
        ));
        if let Some(contact) = contact {
            headers.push(Header::new("Contact", contact));
        }
        headers.push(Header::new("User-Agent", user_agent));
        headers.extend(extra.iter().cloned());
        let body = match body {
            Some((content_type, bytes)) => {
                headers.push(Header::new("Content-Type", content_type));
                bytes
            }
            None => Vec::new(),
        };
        Message {
            start: StartLine::Request { method, uri },
            headers,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Limits, parse};

    const INVITE: &str = "INVITE sip:ivr@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\n\
        Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
        From: \"Alice\" <sip:alice@example.com>;tag=abc\r\nTo: <sip:ivr@example.com>\r\nCall-ID: c1\r\n\
        CSeq: 10 INVITE\r\nContact: <sip:alice@192.0.2.1:5062>\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn bye_uses_dialog_state() {
        let invite = parse(INVITE.as_bytes(), &Limits::default(), false).unwrap();
        let mut d = Dialog::from_invite(&invite, "ours").unwrap();
        assert_eq!(d.remote_cseq, 10);
        let bye = d.request(
            Method::Bye,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKb".into(),
            "<sip:10.0.0.1>",
            "ivr",
            &[],
            None,
        );
        assert_eq!(
            bye.start,
            StartLine::Request {
                method: Method::Bye,
                uri: "sip:alice@192.0.2.1:5062".into()
            }
        );
        assert_eq!(bye.from_tag().as_deref(), Some("ours"));
        assert_eq!(bye.to_tag().as_deref(), Some("abc"));
        assert_eq!(
            bye.values("route"),
            vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        assert_eq!(bye.cseq(), Some((1, "BYE")));
        let next = d.request(
            Method::Info,
            "SIP/2.0/UDP x;branch=z9hG4bKc".into(),
            "<sip:x>",
            "ivr",
            &[],
            None,
        );
        assert_eq!(next.cseq(), Some((2, "INFO")));
    }

    #[test]
    fn strict_router_becomes_request_uri() {
        let text = INVITE.replace(
            "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            "<sip:strict.example.com>",
        );
        let invite = parse(text.as_bytes(), &Limits::default(), false).unwrap();
        let mut d = Dialog::from_invite(&invite, "t").unwrap();
        let bye = d.request(
            Method::Bye,
            "SIP/2.0/UDP x;branch=z9hG4bKb".into(),
            "<sip:x>",
            "ivr",
            &[],
            None,
        );
        assert!(
            matches!(bye.start, StartLine::Request { ref uri, .. } if uri == "sip:strict.example.com")
        );
        assert_eq!(bye.values("route"), vec!["<sip:alice@192.0.2.1:5062>"]);
    }

    #[test]
    fn uac_dialog_from_2xx_reverses_record_route() {
        let d = Dialog::for_outgoing(
            "c9",
            "mine",
            "<sip:ivr@10.0.0.1>",
            "<sip:tier1@queue.example>",
            "sip:tier1@queue.example",
            1,
        );
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa\r\n\
            Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n\
            From: <sip:ivr@10.0.0.1>;tag=mine\r\nTo: <sip:tier1@queue.example>;tag=theirs\r\n\
            Call-ID: c9\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@192.0.2.7:5080>\r\n\r\n";
        let ok = parse(ok.as_bytes(), &Limits::default(), false).unwrap();
        let mut d = d.with_response(&ok);
        assert_eq!(d.id.remote_tag, "theirs");
        let ack = d.ack("SIP/2.0/UDP x;branch=z9hG4bKc".into(), 1, "ivr");
        assert_eq!(ack.cseq(), Some((1, "ACK")));
        assert_eq!(
            ack.start,
            StartLine::Request {
                method: Method::Ack,
                uri: "sip:agent@192.0.2.7:5080".into()
            }
        );
        assert_eq!(
            ack.values("route"),
            vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        let bye = d.request(Method::Bye, "v".into(), "<sip:x>", "ivr", &[], None);
        assert_eq!(bye.cseq(), Some((2, "BYE")));
        assert_eq!(bye.to_tag().as_deref(), Some("theirs"));
    }
}
