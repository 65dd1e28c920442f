//! A throwaway PostgreSQL cluster for a test (`scripts/pg-throwaway`), destroyed on drop.
//! Missing binaries skip the test with a loud reason, except in CI (`CI=true`), where they
//! fail it: CI must run what it claims to.

use std::path::PathBuf;
use std::process::Command;

pub struct PgCluster {
    pub dir: PathBuf,
    pub url: String,
}

fn script(args: &[&str]) -> std::process::Output {
    Command::new(super::repo().join("scripts/pg-throwaway"))
        .args(args)
        .output()
        .expect("run scripts/pg-throwaway")
}

impl PgCluster {
    /// A running cluster, or `None` (printed) when PostgreSQL is not installed outside CI.
    pub fn start() -> Option<PgCluster> {
        let dir = std::env::temp_dir().join(format!(
            "ivr-pg-{}-{}",
            std::process::id(),
            super::rand_u32()
        ));
        let out = script(&["init", dir.to_str().unwrap()]);
        if out.status.code() == Some(3) {
            let reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL is required in CI: {reason}");
            }
            println!("\n\n*** SKIPPED: {reason} ***\n");
            eprintln!("\n\n*** SKIPPED: {reason} ***\n");
            return None;
        }
        assert!(
            out.status.success(),
            "pg-throwaway init failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(PgCluster { dir, url })
    }

    /// Stop the server (the database is down; data kept).
    pub fn stop(&self) {
        let out = script(&["stop", self.dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start it again on the same port.
    pub fn resume(&self) {
        let out = script(&["start", self.dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = script(&["destroy", self.dir.to_str().unwrap()]);
    }
}
