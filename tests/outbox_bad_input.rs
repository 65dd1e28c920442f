//! Bad input is refused before queuing: an unparseable email or phone number, a link that is
//! not a link, an empty call id. Each gets a typed error and nothing reaches the database.

mod outbox_support;

use ivr::outbox::recipient::RecipientError;
use ivr::outbox::{Channel, NewMessage, Store, StoreError};
use ivr::pii::Pii;
use ivr::types::Lang;
use outbox_support::*;

fn msg(channel: Channel, to: &str) -> NewMessage {
    NewMessage {
        call_id: "call-bad".into(),
        link_id: "case_status".into(),
        url: None,
        channel,
        to: Pii::new(to.into()),
        lang: Lang::En,
    }
}

#[test]
fn bad_recipients_and_links_queue_nothing() {
    let dir = temp_dir("outbox-bad");
    let store = Store::open(&dir).unwrap();
    let bad_recipients = [
        (Channel::Email, "jane.example.org"),
        (Channel::Email, "jane@"),
        (Channel::Email, "jane@localhost"),
        (Channel::Email, "ja ne@example.org"),
        (
            Channel::Email,
            "jane@example.org\r\nBcc: everyone@example.org",
        ),
        (Channel::Email, "two@at@example.org"),
        (Channel::Email, ""),
        (Channel::Sms, "555-0134"),
        (Channel::Sms, "call me maybe"),
        (Channel::Sms, "+44 20 7946 0958"),
        (Channel::Sms, "(102) 555-0134"),
        (Channel::Sms, "jane@example.org"),
    ];
    for (channel, to) in bad_recipients {
        let r = store.enqueue_blocking(&msg(channel, to));
        assert!(
            matches!(r, Err(StoreError::Recipient(_))),
            "{channel} {to:?}: {r:?}"
        );
    }
    assert!(matches!(
        store.enqueue_blocking(&msg(Channel::Sms, "12")),
        Err(StoreError::Recipient(RecipientError::PhoneFormat))
    ));

    let mut unknown_link = msg(Channel::Email, "jane@example.org");
    unknown_link.link_id = "not_a_link".into();
    assert!(matches!(
        store.enqueue_blocking(&unknown_link),
        Err(StoreError::BadLink)
    ));
    unknown_link.url = Some("javascript:alert(1)".into());
    assert!(matches!(
        store.enqueue_blocking(&unknown_link),
        Err(StoreError::BadLink)
    ));
    let mut no_call = msg(Channel::Email, "jane@example.org");
    no_call.call_id = String::new();
    assert!(matches!(
        store.enqueue_blocking(&no_call),
        Err(StoreError::BadKey)
    ));

    // Nothing stored, even after reopening the database from scratch.
    assert!(store.list(None, 100).unwrap().is_empty());
    drop(store);
    let store = Store::open(&dir).unwrap();
    assert!(store.list(None, 100).unwrap().is_empty());

    // The same store does queue good input: the emptiness above is not an accident.
    let ok = store
        .enqueue_blocking(&msg(Channel::Email, "jane@example.org"))
        .unwrap();
    assert_eq!(store.list(None, 100).unwrap(), vec![ok]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rejections_are_counted_and_errors_carry_no_personal_data() {
    let dir = temp_dir("outbox-bad-metrics");
    let store = Store::open(&dir).unwrap();
    let e = store
        .enqueue_blocking(&msg(Channel::Sms, "202-555-01x4"))
        .unwrap_err();
    assert!(!e.to_string().contains("555"), "{e}");
    let e = store
        .enqueue_blocking(&msg(Channel::Email, "secret.name@@example.org"))
        .unwrap_err();
    assert!(!e.to_string().contains("secret"), "{e}");
    let text = store.metrics.render();
    assert!(text.contains("ivr_outbox_rejected_total 2\n"), "{text}");
    assert!(text.contains("ivr_outbox_enqueued_total 0\n"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
