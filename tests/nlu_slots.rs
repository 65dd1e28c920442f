//! Slots are read from spoken (ASR) and typed (TTY) forms in both languages, and an
//! unparseable email or phone number is `None` so the flow asks again.

use std::path::PathBuf;

use ivr::nlu::{self, Nlu, Source, slots};
use ivr::types::Lang;

fn nlu() -> Nlu {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    for lang in ["en", "es"] {
        for name in ["acts.txt", "digits.txt", "case_status.txt"] {
            let rel = PathBuf::from("grammars").join(lang).join(name);
            let text = std::fs::read_to_string(root.join(&rel)).expect("grammar file");
            sources.push(Source { path: rel, text });
        }
    }
    nlu::build(&sources).expect("valid grammars")
}

fn receipt(lang: Lang, text: &str) -> Option<String> {
    nlu()
        .classify(lang, text)
        .slots
        .receipt
        .map(|p| p.expose().clone())
}

#[test]
fn receipt_numbers_spoken_and_typed() {
    let want = Some("IOE0123456789".to_string());
    assert_eq!(
        receipt(Lang::En, "my receipt number is IOE0123456789"),
        want
    );
    assert_eq!(receipt(Lang::En, "ioe 0123456789"), want);
    assert_eq!(
        receipt(
            Lang::En,
            "i o e zero one two three four five six seven eight nine"
        ),
        want
    );
    assert_eq!(
        receipt(
            Lang::En,
            "india oscar echo oh one two three four five six seven eight nine"
        ),
        want
    );
    assert_eq!(
        receipt(
            Lang::En,
            "e a c nine nine triple one two two three four four"
        ),
        Some("EAC9911122344".to_string())
    );
    assert_eq!(
        receipt(
            Lang::Es,
            "mi recibo es i o e cero uno dos tres cuatro cinco seis siete ocho nueve"
        ),
        want
    );
    assert_eq!(
        receipt(
            Lang::Es,
            "w a c doble cinco cero uno dos tres cuatro cinco seis siete"
        ),
        Some("WAC5501234567".to_string())
    );
    assert_eq!(receipt(Lang::En, "IOE 12345"), None, "too few digits");
}

#[test]
fn phone_numbers_spoken_and_typed() {
    let want = Some("2025550134".to_string());
    assert_eq!(slots::phone("(202) 555-0134"), want);
    assert_eq!(slots::phone("+1 202.555.0134"), want);
    assert_eq!(slots::phone("1-202-555-0134"), want);
    assert_eq!(
        slots::phone("area code two oh two, five five five, oh one three four"),
        want
    );
    assert_eq!(
        slots::phone("two zero two double five five zero one three four"),
        want
    );
    assert_eq!(
        slots::phone("mi número es dos cero dos cinco cinco cinco cero uno tres cuatro"),
        want
    );
    assert_eq!(
        slots::phone("código de área dos cero dos, cinco cinco cinco, cero uno tres cuatro"),
        want
    );
    assert_eq!(slots::phone("202 555 013"), None, "nine digits");
    assert_eq!(
        slots::phone("202 555 01345"),
        None,
        "eleven digits not starting with 1"
    );
    assert_eq!(slots::phone("call me"), None);
}

#[test]
fn emails_spoken_and_typed() {
    let want = Some("john.smith@gmail.com".to_string());
    assert_eq!(slots::email("JOHN.SMITH@GMAIL.COM"), want);
    assert_eq!(
        slots::email("my email is john dot smith at gmail dot com"),
        want
    );
    assert_eq!(slots::email("john dot smith at g mail dot com"), want);
    assert_eq!(
        slots::email("mi correo es john punto smith arroba gmail punto com"),
        want
    );
    assert_eq!(
        slots::email("maria guion bajo lopez arroba yahoo punto com punto mx"),
        Some("maria_lopez@yahoo.com.mx".to_string())
    );
    assert_eq!(
        slots::email("ana guion ruiz arroba outlook punto com"),
        Some("ana-ruiz@outlook.com".to_string())
    );
    assert_eq!(
        slots::email("bob underscore lee at hotmail dot com"),
        Some("bob_lee@hotmail.com".to_string())
    );
    assert_eq!(
        slots::email("bob dash lee at aol dot com"),
        Some("bob-lee@aol.com".to_string())
    );
    assert_eq!(slots::email("john at gmail"), None, "no top-level domain");
    assert_eq!(slots::email("john@@gmail.com"), None);
    assert_eq!(slots::email("at dot com"), None);
}

#[test]
fn yes_no_both_languages() {
    for y in [
        "yes",
        "yeah sure",
        "Yep!",
        "of course",
        "sí",
        "sí claro",
        "claro que sí",
        "SI GA",
    ] {
        assert_eq!(slots::yes_no(Lang::En, y), Some(true), "{y}");
    }
    for n in [
        "no",
        "nope",
        "no thanks",
        "no gracias",
        "para nada",
        "NO GA",
    ] {
        assert_eq!(slots::yes_no(Lang::Es, n), Some(false), "{n}");
    }
    assert_eq!(slots::yes_no(Lang::En, "I don't know"), None);
    assert_eq!(slots::yes_no(Lang::Es, "no sé"), None);
    let n = nlu();
    assert_eq!(
        n.act(Lang::Es, "sí, claro").map(|a| a.0).as_deref(),
        Some("yes")
    );
    assert_eq!(
        n.act(Lang::En, "no thank you").map(|a| a.0).as_deref(),
        Some("no")
    );
    assert_eq!(n.classify(Lang::En, "yeah").slots.yes_no, Some(true));
}

#[test]
fn menu_digits_both_languages() {
    let n = nlu();
    assert_eq!(n.menu_digit(Lang::En, "two"), Some(2));
    assert_eq!(n.menu_digit(Lang::En, "press 2"), Some(2));
    assert_eq!(
        n.menu_digit(Lang::En, "option number three please"),
        Some(3)
    );
    assert_eq!(n.menu_digit(Lang::Es, "dos"), Some(2));
    assert_eq!(n.menu_digit(Lang::Es, "uno"), Some(1));
    assert_eq!(n.menu_digit(Lang::Es, "la opción cuatro"), Some(4));
    assert_eq!(n.menu_digit(Lang::En, "the first one"), Some(1));
    assert_eq!(n.menu_digit(Lang::En, "one or two"), None, "ambiguous");
    assert_eq!(n.menu_digit(Lang::En, "where is my case"), None);
}

#[test]
fn language_choice() {
    assert_eq!(slots::language("Spanish please"), Some(Lang::Es));
    assert_eq!(slots::language("en español"), Some(Lang::Es));
    assert_eq!(slots::language("inglés"), Some(Lang::En));
    assert_eq!(slots::language("ENGLISH GA"), Some(Lang::En));
    assert_eq!(slots::language("where is my case"), None);
    let n = nlu();
    assert_eq!(
        n.act(Lang::En, "spanish").map(|a| a.0).as_deref(),
        Some("spanish")
    );
    assert_eq!(
        n.act(Lang::Es, "en inglés por favor")
            .map(|a| a.0)
            .as_deref(),
        Some("english")
    );
}

#[test]
fn slots_are_redacted_unless_asked() {
    let c = nlu().classify(Lang::En, "my email is john dot smith at gmail dot com");
    let redacted = serde_json::to_string(&c.slots).expect("json");
    assert!(!redacted.contains("john"), "{redacted}");
    assert_eq!(c.slots.to_json(true)["email"], "john.smith@gmail.com");
}
