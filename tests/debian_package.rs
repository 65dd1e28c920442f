//! The Debian package: `scripts/package-deb` builds it (from the test's binary), dpkg installs it
//! on this machine, the service starts as its unit says — by systemd when systemd runs, else the
//! unit's ExecStart as the `ivr` user with no new privileges — and a SIPp caller is answered and
//! hears the menus. SIGTERM drains it cleanly; `dpkg --purge` removes the binary, user and state.
//! Needs root (CI runs as root); serialized with other runs on the machine by a lock file.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "ivr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Purges the package (and stops what this test started) however the test ends.
struct Installed {
    child: Option<Child>,
    systemd: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.systemd {
            let _ = Command::new("systemctl").args(["stop", "ivr"]).status();
        }
        let _ = Command::new("dpkg").args(["--purge", "ivr"]).status();
    }
}

/// `Key=value` lines of the unit's [Service] section.
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
}

#[test]
fn the_package_installs_starts_answers_a_call_and_purges() {
    require("sipp");
    require("dpkg-deb");
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "installing a package needs root (CI runs as root)"
    );
    let lock = std::fs::File::create("/tmp/ivr-debian-package-test.lock").unwrap();
    lock.lock().unwrap();
    assert!(
        !installed(),
        "an ivr package is already installed on this machine: not touching it"
    );

    let dir = temp_dir("deb");
    let out = Command::new(repo().join("scripts/package-deb"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_ivr"))
        .arg("--out")
        .arg(&dir)
        .output()
        .expect("run scripts/package-deb");
    assert!(
        out.status.success(),
        "package-deb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The script prints the package's path last on stdout.
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("the .deb path")
        .trim()
        .to_string();
    let contents = run(Command::new("dpkg-deb").args(["-c", &deb]));
    for f in [
        "./usr/bin/ivr",
        "./usr/lib/ivr/libvosk.so",
        "./etc/ivr/ivr.toml",
        "./lib/systemd/system/ivr.service",
        "./usr/share/ivr/grammars/en/case_status.txt",
        "./usr/share/ivr/prompts/en/speech.txt",
        "./usr/share/ivr/tts-cache/enc-",
    ] {
        assert!(contents.contains(f), "{f} not in the package:\n{contents}");
    }

    let systemd = Path::new("/run/systemd/system").is_dir();
    let mut guard = Installed {
        child: None,
        systemd,
    };
    run(Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(installed());
    run(Command::new("id").arg("ivr"));
    let conf = std::fs::read_to_string("/etc/ivr/ivr.toml").unwrap();
    assert!(conf.contains("data_dir = \"/var/lib/ivr\""), "{conf}");
    assert!(conf.contains("grammars_dir = \"/usr/share/ivr/grammars\""));
    let unit = std::fs::read_to_string("/lib/systemd/system/ivr.service").unwrap();
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        // Offline verification of the unit's syntax, directives and executable.
        let out = Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/ivr.service"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        let problems: Vec<&str> = text.lines().filter(|l| l.contains("ivr.service")).collect();
        assert!(problems.is_empty(), "systemd-analyze verify:\n{text}");
    }
    let drain: u64 = conf
        .lines()
        .find_map(|l| l.strip_prefix("drain_timeout_secs = "))
        .and_then(|v| v.trim().parse().ok())
        .expect("drain_timeout_secs in ivr.toml");
    let stop: u64 = unit_value(&unit, "TimeoutStopSec")
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec");
    assert!(stop > drain, "TimeoutStopSec {stop} <= drain {drain}");

    // Ports of its own, so the installed service collides with nothing.
    let sip = free_port();
    let admin = free_port();
    let rtp = rtp_range(100);
    let conf = conf
        .replace(
            "listen = \"127.0.0.1:5060\"",
            &format!("listen = \"127.0.0.1:{sip}\""),
        )
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{admin}\""),
        )
        .replace(
            "rtp_ports = \"20000-29999\"",
            &format!("rtp_ports = \"{}-{}\"", rtp.0, rtp.1),
        )
        .replace("drain_timeout_secs = 60", "drain_timeout_secs = 5");
    assert!(conf.contains(&format!(":{sip}\"")) && conf.contains(&format!(":{admin}\"")));
    std::fs::write("/etc/ivr/ivr.toml", &conf).unwrap();
    // The data dir is fresh: every prompt must come from the package's seed, none rendered.
    assert!(
        conf.contains("tts_seed_dir = \"/usr/share/ivr/tts-cache\""),
        "{conf}"
    );
    assert!(!Path::new("/var/lib/ivr/tts-cache").exists());

    let log = dir.join("service.log");
    if systemd {
        run(Command::new("systemctl").arg("daemon-reload"));
        run(Command::new("systemctl").args(["restart", "ivr"]));
    } else {
        // No systemd here: what the unit would run, as the unit's user, no new privileges.
        let exec = unit_value(&unit, "ExecStart").expect("ExecStart");
        let user = unit_value(&unit, "User").expect("User");
        let workdir = unit_value(&unit, "WorkingDirectory").expect("WorkingDirectory");
        assert_eq!(unit_value(&unit, "NoNewPrivileges").as_deref(), Some("yes"));
        let child = Command::new("setpriv")
            .args([
                "--reuid",
                &user,
                "--regid",
                &user,
                "--init-groups",
                "--no-new-privs",
                "--",
            ])
            .args(exec.split_whitespace())
            .current_dir(&workdir)
            .env("IVR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the installed ivr");
        guard.child = Some(child);
    }
    let service_log = || {
        if systemd {
            run(Command::new("journalctl").args(["-u", "ivr", "--no-pager", "-n", "50"]))
        } else {
            std::fs::read_to_string(&log).unwrap_or_default()
        }
    };
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let start = Instant::now();
    loop {
        if let Some(c) = &mut guard.child
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("installed ivr exited: {status}\n{}", service_log());
        }
        if let Ok((200, _)) = http_get(admin_addr, "/readyz") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "installed service not ready:\n{}",
            service_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A first start on a fresh data dir rendered nothing: the package's seed had every prompt.
    let started = service_log();
    let line = started
        .lines()
        .find(|l| l.contains("prompts rendered and encoded"))
        .unwrap_or_else(|| panic!("no prompt count in the log:\n{started}"));
    assert!(
        line.contains(" rendered=0 ") && !line.contains(" seeded=0 "),
        "the first start rendered prompts the package should have had: {line}"
    );
    if !systemd {
        // It runs as the ivr user, not root.
        let pid = guard.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let ivr_uid = run(Command::new("id").args(["-u", "ivr"]));
        assert!(
            uid_line.split_whitespace().nth(1) == Some(ivr_uid.trim()),
            "{uid_line}"
        );
    }

    let out = Command::new("sipp")
        .arg("-sf")
        .arg(repo().join("sip-configs/sipp/uac_menu.xml"))
        .args(["-m", "1", "-s", "ivr", "-i", "127.0.0.1", "-p"])
        .arg(free_port().to_string())
        .args(["-timeout", "40s", "-timeout_error", "-nostdin"])
        .arg(format!("127.0.0.1:{sip}"))
        .current_dir(&dir)
        .output()
        .expect("run sipp");
    assert!(
        out.status.success(),
        "sipp call to the installed service failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        service_log()
    );
    let (status, body) = http_get(admin_addr, "/calls?limit=5").unwrap();
    assert_eq!(status, 200, "{body}");
    let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
    let prompts = calls[0]["prompts"].to_string();
    assert!(prompts.contains("en:main_menu"), "{body}");
    // Its records are in the package's state directory.
    assert!(
        Path::new("/var/lib/ivr").read_dir().unwrap().count() > 0,
        "nothing in /var/lib/ivr"
    );

    // SIGTERM (the unit's KillSignal) drains and exits cleanly.
    if let Some(mut child) = guard.child.take() {
        unsafe_kill(child.id(), "TERM");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            service_log()
        );
    } else {
        run(Command::new("systemctl").args(["stop", "ivr"]));
    }

    run(Command::new("dpkg").args(["--purge", "ivr"]));
    assert!(!installed());
    assert!(!Path::new("/usr/bin/ivr").exists());
    assert!(!Path::new("/var/lib/ivr").exists());
    assert!(!Path::new("/etc/ivr/ivr.toml").exists());
    assert!(
        !Command::new("id")
            .arg("ivr")
            .output()
            .unwrap()
            .status
            .success(),
        "the ivr user outlived the purge"
    );
    drop(guard);
}
