//! `ivr call --tty`: a TTY caller recorded by minimodem (an independent Baudot implementation)
//! runs through the offline pipeline; the IVR understands the question, and what it typed back,
//! decoded by minimodem from `--out-wav`, is exactly the expected greeting and answer.
//!
//! minimodem must be on PATH (`apt-get install minimodem`); without it these tests fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ivr::cli::call::{Args, run, run_tty};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ivr-ttycall-{}-{name}.wav", std::process::id()))
}

/// minimodem renders `text` as a caller's TTY would send it, 8 kHz WAV.
fn minimodem_tx(text: &str, name: &str) -> PathBuf {
    let path = temp(name);
    let mut child = Command::new("minimodem")
        .args(["--tx", "tdd", "-R", "8000", "-f"])
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("minimodem is on PATH (apt-get install minimodem)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin.write_all(text.as_bytes()).expect("minimodem reads");
    }
    assert!(child.wait().expect("minimodem runs").success());
    path
}

/// minimodem decodes what the IVR transmitted.
fn minimodem_rx(path: &Path) -> String {
    let out = Command::new("minimodem")
        .args(["--rx", "-q", "tdd", "-f"])
        .arg(path)
        .output()
        .expect("minimodem runs");
    assert!(out.status.success(), "minimodem --rx failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn args(file: PathBuf, lang: &str, out_wav: Option<PathBuf>) -> Args {
    Args {
        file,
        tty: true,
        lang: Some(lang.into()),
        rate: None,
        config: None,
        out_wav,
        g711: "pcmu".into(),
        caller_id: None,
        echo_db: None,
        clear: false,
        prompts: repo().join("prompts"),
        grammars: repo().join("grammars"),
    }
}

#[test]
fn english_case_status_question_gets_the_answer_and_the_link_offer() {
    let caller = minimodem_tx("WHAT IS MY CASE STATUS Q GA", "en-in");
    let out = temp("en-out");
    let report = run_tty(&args(caller.clone(), "en", Some(out.clone()))).expect("the run works");
    let heard = minimodem_rx(&out);
    let _ = std::fs::remove_file(&caller);
    let _ = std::fs::remove_file(&out);

    assert_eq!(report["mode"], "tty");
    assert_eq!(report["caller_text"], "WHAT IS MY CASE STATUS Q GA");
    assert_eq!(report["intent"], "case_status");
    assert!(report["confidence"].as_f64().unwrap_or(0.0) >= 0.6);
    // The modulator sends "\n" as CR LF; every turn starts on a new line, lines wrap at 40.
    let expected = "\r\nUSCIS CONTACT CENTER TTY. TYPE YOUR\r\nQUESTION GA\
                    \r\nCHECK YOUR CASE STATUS AT\r\nUSCIS.GOV/CASESTATUS OR IN YOUR USCIS\
                    \r\nONLINE ACCOUNT. WANT THIS LINK BY TEXT\r\nOR EMAIL Q TYPE TEXT OR EMAIL OR NO GA";
    assert_eq!(heard, expected);
    let typed: Vec<&str> = report["typed"]
        .as_array()
        .expect("typed is a list")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert_eq!(typed.len(), 2, "greeting and answer: {typed:?}");
    assert_eq!(typed.concat().replace('\n', "\r\n"), expected);
}

#[test]
fn spanish_question_with_figures_is_understood() {
    // Figures (the form number) and a line ended by a pause, not by GA.
    let caller = minimodem_tx("MI TARJETA VERDE VENCIO Y TENGO EL I-90", "es-in");
    let out = temp("es-out");
    let report = run_tty(&args(caller.clone(), "es", Some(out.clone()))).expect("the run works");
    let heard = minimodem_rx(&out);
    let _ = std::fs::remove_file(&caller);
    let _ = std::fs::remove_file(&out);

    assert_eq!(
        report["caller_text"],
        "MI TARJETA VERDE VENCIO Y TENGO EL I-90"
    );
    assert_eq!(report["intent"], "green_card_expired");
    let expected = "\r\nCENTRO DE CONTACTO DE USCIS TTY. ESCRIBA\r\nSU PREGUNTA GA\
                    \r\nUN AVISO DE RECIBO DEL FORMULARIO I-90\r\nNUEVO EXTIENDE SU TARJETA VERDE 36\
                    \r\nMESES. PRESENTELO CON LA TARJETA VENCIDA\r\nCOMO PRUEBA DE ESTATUS. ALGO MAS Q GA";
    assert_eq!(heard, expected);
}

#[test]
fn echo_of_our_own_typing_is_not_taken_for_the_caller() {
    // A strong hybrid echo (12 dB down): the receiver decodes our own text while we type; the
    // conversation must neither answer it nor record it.
    let caller = minimodem_tx("WHAT IS MY CASE STATUS Q GA", "echo-in");
    let clean = run_tty(&args(caller.clone(), "en", None)).expect("the run works");
    let mut a = args(caller.clone(), "en", None);
    a.echo_db = Some(12.0);
    let echoed = run_tty(&a).expect("the run works");
    let _ = std::fs::remove_file(&caller);
    assert_eq!(
        echoed["caller_lines"],
        serde_json::json!(["WHAT IS MY CASE STATUS Q GA"])
    );
    assert_eq!(echoed["intent"], "case_status");
    assert_eq!(echoed["typed"], clean["typed"]);
}

/// Lines rendered by minimodem one by one, joined with a second of silence each.
fn minimodem_conversation(lines: &[&str], name: &str) -> PathBuf {
    let mut samples: Vec<i16> = Vec::new();
    for (k, line) in lines.iter().enumerate() {
        let path = minimodem_tx(line, &format!("{name}-{k}"));
        let mut reader = hound::WavReader::open(&path).expect("minimodem wrote a WAV");
        assert_eq!(reader.spec().sample_rate, 8000);
        samples.extend(reader.samples::<i16>().map(|s| s.expect("16-bit samples")));
        samples.extend(std::iter::repeat_n(0i16, 8000));
        let _ = std::fs::remove_file(&path);
    }
    let path = temp(name);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).expect("temp dir is writable");
    for s in samples {
        w.write_sample(s).expect("write");
    }
    w.finalize().expect("finalize");
    path
}

#[test]
fn whole_conversation_sends_the_link_by_text_and_ends_with_sk() {
    let caller = minimodem_conversation(
        &[
            "WHAT IS MY CASE STATUS Q GA",
            "TEXT GA",
            "202 555 0134 GA",
            "YES GA",
            "NO GA",
        ],
        "multi",
    );
    let out = temp("multi-out");
    let report = run_tty(&args(caller.clone(), "en", Some(out.clone()))).expect("the run works");
    let heard = minimodem_rx(&out);
    let _ = std::fs::remove_file(&caller);
    let _ = std::fs::remove_file(&out);
    assert_eq!(
        report["actions"],
        serde_json::json!(["send_link:sms:case_status", "hangup"])
    );
    assert_eq!(report["outcome"], "completed");
    let flat = heard.replace("\r\n", " ");
    assert!(
        flat.contains("SEND THE TEXT TO 202-555-0134 Q TYPE YES OR NO GA"),
        "{heard:?}"
    );
    assert!(flat.contains("SENT. ANYTHING ELSE Q GA"), "{heard:?}");
    assert!(
        flat.ends_with("THANK YOU FOR CALLING USCIS. GOODBYE SK"),
        "{heard:?}"
    );
    // The report is redacted by default: the number is not in it.
    let json = report.to_string();
    assert!(!json.contains("0134") && !json.contains("555"), "{json}");
}

#[test]
fn a_missing_recording_is_an_error_in_either_mode() {
    let mut a = args(repo().join("no-such.wav"), "en", None);
    assert!(run(a.clone()).is_err());
    a.tty = false;
    let e = run(a).expect_err("no recording, no call");
    assert!(format!("{e:#}").contains("no-such.wav"), "{e:#}");
}

#[test]
fn unknown_language_is_an_error() {
    let a = args(repo().join("no-such.wav"), "fr", None);
    assert!(run_tty(&a).is_err());
}
