//! A real SMTP server (aiosmtpd) receives the queued emails, each with the right link, language
//! and recipient, and a Message-ID derived from the idempotency key.

mod outbox_support;

use std::sync::Arc;
use std::time::Duration;

use ivr::outbox::{State, Store, run_worker, template};
use ivr::types::Lang;
use outbox_support::*;

#[test]
fn smtp_server_receives_each_email_in_its_language() {
    let dir = temp_dir("outbox-smtp");
    let port = free_port();
    let smtpd = Smtpd::start(port, &dir.join("maildir"));
    let store = Arc::new(Store::open(&dir.join("data")).unwrap());
    let es = store
        .enqueue_blocking(&email("call-es", "Maria.Lopez@Example.ORG", Lang::Es))
        .unwrap();
    let mut processing = email("call-en", "john@example.com", Lang::En);
    processing.link_id = "processing_times".into();
    let en = store.enqueue_blocking(&processing).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = rt.spawn(run_worker(store.clone(), fast_config(port), stopped));

    wait_for("both emails delivered", Duration::from_secs(20), || {
        let all = store.list(None, 10).unwrap();
        all.iter()
            .all(|m| m.state == State::Delivered)
            .then_some(())
    });
    stop.send(true).unwrap();
    rt.block_on(worker).unwrap().unwrap();

    let received = smtpd.messages();
    assert_eq!(received.len(), 2, "{received:#?}");
    let find = |rcpt: &str| {
        received
            .iter()
            .find(|m| header(m, "X-RcptTo").as_deref() == Some(rcpt))
            .unwrap_or_else(|| panic!("no message to {rcpt}: {received:#?}"))
    };

    let raw = find("Maria.Lopez@example.org");
    assert_eq!(header(raw, "Content-Language").as_deref(), Some("es"));
    assert_eq!(
        header(raw, "Subject").as_deref(),
        Some("USCIS: Consulte el estado de su caso")
    );
    assert_eq!(
        header(raw, "Message-ID"),
        Some(template::message_id(&es.idempotency_key, "ivr.localdomain"))
    );
    let text = body(raw);
    assert!(
        text.contains("Consulte el estado de su caso: https://uscis.gov/casestatus"),
        "{text}"
    );
    assert!(text.contains("Usted pidió este enlace"), "{text}");

    let raw = find("john@example.com");
    assert_eq!(header(raw, "Content-Language").as_deref(), Some("en"));
    assert_eq!(
        header(raw, "Message-ID"),
        Some(template::message_id(&en.idempotency_key, "ivr.localdomain"))
    );
    let text = body(raw);
    assert!(
        text.contains("See case processing times: https://uscis.gov/processingtimes"),
        "{text}"
    );

    // Delivered rows keep no clear recipient; metrics saw two deliveries, no retries.
    let shown = store.show(es.id).unwrap().unwrap();
    assert_eq!(shown.to.expose(), "M***@***.org");
    assert_eq!(shown.attempts, 1);
    let metrics = store.metrics.render();
    assert!(
        metrics.contains("ivr_outbox_delivered_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ivr_outbox_retries_total 0\n"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
