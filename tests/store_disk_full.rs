//! Calls go on while call records cannot be written. The data directory is a small tmpfs; it is
//! filled to the last byte mid-run (disk full). A call placed then is answered and runs; its
//! record waits in memory (`ivr_store_backlog_records`, `ivr_store_write_errors_total`,
//! `/readyz`), the log says so once, and when space returns the record is written without
//! anything new happening.
//!
//! Needs root to mount the tmpfs: skipped with the reason printed otherwise. (A read-only
//! remount is refused while SQLite holds the files open for writing — "mount point is busy" —
//! so the fault is a full disk, which fails the same writes.)

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tmpfs mounted for the test, unmounted on drop (after the server, declared later, died).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = temp_dir("tmpfs");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Write zeros until the file system refuses (ENOSPC).
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if f.write_all(&chunk).and_then(|_| f.sync_all()).is_err() {
            break;
        }
    }
    // The last partial chunk too: byte by byte is slow, 512 bytes is close enough.
    let small = vec![0u8; 512];
    while f.write_all(&small).and_then(|_| f.sync_all()).is_ok() {}
}

fn wait_until(what: &str, limit: Duration, server: &Server, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn short_call(server: &Server) -> String {
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    assert_eq!(ok.status(), Some(200), "answered");
    // A second of the greeting, then hang up.
    uac.send_pcmu(Uac::remote_rtp(&ok), &vec![0i16; 8000], 1, 0);
    uac.request("BYE", "", true);
    let _ = uac.recv(Duration::from_secs(2));
    uac.call_id.clone()
}

#[test]
fn a_full_disk_holds_records_in_memory_until_space_returns() {
    let tmpfs = match Tmpfs::mount("24m") {
        Ok(t) => t,
        Err(reason) => {
            println!("SKIPPED: cannot mount a tmpfs for the disk-full test ({reason})");
            return;
        }
    };
    let storage = tmpfs.0.join("data");
    let server = Server::start(ServerOptions {
        storage_dir: Some(storage.clone()),
        ..ServerOptions::default()
    });
    let first = short_call(&server);
    server.ended_call(&first, Duration::from_secs(20));
    wait_until(
        "the first record written",
        Duration::from_secs(10),
        &server,
        || server.metric("ivr_store_backlog_records") == 0,
    );
    assert_eq!(server.metric("ivr_store_write_errors_total"), 0);

    let filler = tmpfs.0.join("filler");
    fill(&filler);
    let second = short_call(&server);
    let record = server.ended_call(&second, Duration::from_secs(20));
    assert_eq!(record["end_reason"], "caller_bye", "{record}");
    wait_until("failed writes", Duration::from_secs(10), &server, || {
        server.metric("ivr_store_write_errors_total") >= 3
    });
    assert!(server.metric("ivr_store_backlog_records") >= 1);
    assert_eq!(server.metric("ivr_store_failing"), 1);
    let (status, ready) = server.get("/readyz");
    assert_eq!(status, 200, "calls are still taken: {ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["store"]["failing"], true, "{ready}");
    assert!(
        ready["store"]["backlog_records"].as_u64() >= Some(1),
        "{ready}"
    );
    let log = server.log_text();
    assert_eq!(
        log.matches("call records cannot be written").count(),
        1,
        "one line per state change, not per attempt:\n{log}"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_until(
        "the backlog written",
        Duration::from_secs(15),
        &server,
        || server.metric("ivr_store_backlog_records") == 0,
    );
    assert_eq!(server.metric("ivr_store_failing"), 0);
    assert_eq!(server.metric("ivr_store_dropped_records_total"), 0);
    assert!(server.log_text().contains("call records written again"));
    // On disk now, as it was when the call ended.
    let stored = ivr::server::store::Sqlite::open(&storage).unwrap();
    use ivr::server::store::Backend;
    let on_disk = stored.call(&second).unwrap().expect("the record on disk");
    assert_eq!(on_disk.end_reason.as_deref(), Some("caller_bye"));
    assert!(on_disk.ended_at.is_some());
    drop(server);
    drop(tmpfs);
}
