//! SIGTERM drains: new calls get 503, a live call carries on until its caller hangs up, then
//! the process exits 0 with the call's record written.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn sigterm_refuses_new_calls_and_lets_live_ones_finish() {
    let mut server = Server::start(ServerOptions::default());
    let mut live = Uac::new(server.sip);
    live.call();
    common::unsafe_kill(server.child.id(), "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.get("/readyz").0, 503, "not ready while draining");
    // A dispatcher's OPTIONS probe sees the node out of service and stops sending calls.
    let mut probe = Uac::new(server.sip);
    probe.request("OPTIONS", "", true);
    let answer = probe.final_response(Duration::from_secs(3));
    assert_eq!(answer.status(), Some(503), "{answer:?}");
    assert!(answer.header("Retry-After").is_some(), "{answer:?}");
    let mut late = Uac::new(server.sip);
    let sdp = late.sdp("sendrecv");
    late.request("INVITE", &sdp, true);
    assert_eq!(
        late.final_response(Duration::from_secs(3)).status(),
        Some(503)
    );
    // The live call still works: its BYE is answered.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "still running while a call is live"
    );
    live.request("BYE", "", true);
    assert_eq!(
        live.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let status = server.terminate();
    assert!(status.success(), "clean exit: {status}");
    let db = server.data_dir.join("ivr.sqlite3");
    let conn = rusqlite::Connection::open(db).unwrap();
    let reason: String = conn
        .query_row(
            "SELECT end_reason FROM calls WHERE call_id = ?1",
            [&live.call_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reason, "caller_bye");
}
