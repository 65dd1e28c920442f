//! `[security] untrusted = "reject"`: a request from outside `trusted` is answered 403 and goes
//! no further (an INVITE makes no call), while a trusted source is served as usual.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

#[test]
fn untrusted_requests_get_403_and_make_no_call() {
    let server = Server::start(ServerOptions {
        extra_toml: "[security]\ntrusted = [\"127.0.0.1/32\"]\nuntrusted = \"reject\"\n".into(),
        ..ServerOptions::default()
    });
    let untrusted = UdpSocket::bind("127.0.0.2:0").unwrap();
    assert_eq!(
        options_from(&untrusted, server.sip, Duration::from_secs(5)),
        Some(403)
    );

    // An INVITE from 127.0.0.2: 403, and the IVR never answers or records it.
    let mut uac = Uac::new(server.sip);
    uac.sock = untrusted;
    let sdp = uac.sdp("sendrecv");
    uac.request("INVITE", &sdp, true);
    let reply = uac.final_response(Duration::from_secs(5));
    assert_eq!(reply.status(), Some(403), "{}", reply.first_line);
    assert_eq!(server.metric("ivr_calls_total"), 0);
    assert!(server.metric("ivr_sip_rejected_untrusted_total") >= 2);

    let trusted = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        options_from(&trusted, server.sip, Duration::from_secs(5)),
        Some(200)
    );
}
