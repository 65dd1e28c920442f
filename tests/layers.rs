//! The workspace's layers, checked (issue #13): the protocol crate (`ivr-proto`) and the core
//! crate (`ivr-core`) are sans-IO, and the compiler can only keep them so if their dependency
//! trees hold nothing that does IO. Two checks:
//! - `cargo tree` of each lower crate (normal dependencies) names no async runtime, socket,
//!   HTTP, database, mail or recognizer crate; the load tester does not link the recognizers.
//! - The lower crates' own sources (outside their `#[cfg(test)]` modules) call no socket, file,
//!   process, thread or clock API: time and bytes are arguments.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that do IO or run a runtime: none may appear under `ivr-proto` or `ivr-core`.
const IO_CRATES: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "axum",
    "hyper",
    "rusqlite",
    "postgres",
    "tokio-postgres",
    "lettre",
    "rustls",
    "vosk",
    "async-std",
    "smol",
];

/// Calls that read the clock or touch the OS. `std::net::SocketAddr`/`IpAddr` are plain values
/// and allowed.
const IO_CALLS: &[&str] = &[
    "Instant::now(",
    "SystemTime::now(",
    "std::fs::",
    "std::process::",
    "std::thread::spawn",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "std::env::var",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Package names in `package`'s normal dependency tree (itself included).
fn tree(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert!(
        names.iter().any(|n| n == package),
        "cargo tree -p {package} did not list the package itself: {names:?}"
    );
    names
}

#[test]
fn the_protocol_and_core_crates_depend_on_nothing_that_does_io() {
    for package in ["ivr-proto", "ivr-core"] {
        let names = tree(package);
        let bad: Vec<&String> = names
            .iter()
            .filter(|n| IO_CRATES.contains(&n.as_str()))
            .collect();
        assert!(bad.is_empty(), "{package} depends on {bad:?}");
    }
    // The core sits on the protocol crate, never the other way round.
    assert!(tree("ivr-core").iter().any(|n| n == "ivr-proto"));
    assert!(!tree("ivr-proto").iter().any(|n| n == "ivr-core"));
}

#[test]
fn the_load_tester_does_not_link_the_recognizers_or_the_server() {
    let names = tree("loadtest");
    for bad in ["vosk", "ivr", "ivr-core", "tokio", "rusqlite"] {
        assert!(!names.iter().any(|n| n == bad), "loadtest depends on {bad}");
    }
    assert!(names.iter().any(|n| n == "ivr-proto"));
}

/// `text` without its `#[cfg(test)] mod …` blocks (unit tests may read files and clocks).
fn without_test_modules(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let is_test_mod = line.trim() == "#[cfg(test)]"
            && lines.peek().is_some_and(|next| {
                next.trim_start().starts_with("mod ")
                    || next.trim_start().starts_with("pub(crate) mod ")
            });
        if !is_test_mod {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Skip the module: up to the line where its braces balance again.
        let mut depth = 0i32;
        let mut opened = false;
        for l in lines.by_ref() {
            depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
            opened |= l.contains('{');
            if opened && depth <= 0 {
                break;
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_protocol_and_core_sources_call_no_clock_socket_file_process_or_thread() {
    let mut files = Vec::new();
    for c in ["crates/ivr-proto/src", "crates/ivr-core/src"] {
        rust_files(&repo().join(c), &mut files);
    }
    assert!(files.len() > 30, "found only {} files", files.len());
    let mut found = Vec::new();
    for f in &files {
        let text = without_test_modules(&std::fs::read_to_string(f).unwrap());
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for call in IO_CALLS {
                if code.contains(call) {
                    found.push(format!("{}: {}", f.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "IO in a sans-IO crate:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_test_module_filter_keeps_code_and_drops_only_test_modules() {
    let text = "fn a() { Instant::now(); }\n#[cfg(test)]\nmod tests {\n    fn b() {\n        std::fs::read(\"x\");\n    }\n}\nfn c() {}\n";
    let kept = without_test_modules(text);
    assert!(kept.contains("fn a()"));
    assert!(kept.contains("fn c()"));
    assert!(!kept.contains("std::fs"));
}
