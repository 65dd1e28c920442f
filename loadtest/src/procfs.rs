//! The IVR's CPU, memory, threads and open files when it runs on this machine, read from /proc
//! (Linux). The process is named by `--ivr-pid` or found by the UDP port it listens on.

use std::path::Path;

/// CPU time and resident memory of a process at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu_s: f64,
    pub rss_kib: u64,
    /// Threads of the process (`Threads:` of its status; 0 when absent).
    pub threads: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Parse `/proc/<pid>/stat` and `/proc/<pid>/status` texts.
pub fn parse_sample(stat: &str, status: &str, ticks_per_s: f64) -> Option<ProcSample> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come state (field 3), ...; utime is field 14 and stime 15 → index 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_kib = parse_kib(status, "VmRSS:").unwrap_or(0);
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        cpu_s: (utime + stime) as f64 / ticks_per_s,
        rss_kib,
        threads,
    })
}

/// Open file descriptors of a process (entries of `/proc/<pid>/fd`; needs the same user).
pub fn fd_count(pid: u32) -> Option<usize> {
    let dir = Path::new("/proc").join(pid.to_string()).join("fd");
    Some(std::fs::read_dir(dir).ok()?.count())
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    parse_sample(&stat, &status, clock_ticks())
}

/// A process's peak resident memory (`VmHWM:` of its status), KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    parse_kib(&status, "VmHWM:")
}

fn parse_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Socket inodes bound to local UDP `port` in a `/proc/net/udp{,6}` text.
pub fn udp_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1)?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (p == port).then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// The process that has UDP `port` open (the IVR's SIP port), if this user can see it.
pub fn pid_by_udp_port(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for t in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(t) {
            inodes.extend(udp_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && wanted.iter().any(|w| link.as_os_str() == w.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "1234 (ivr (x) y) S 1 1234 1234 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 9 0 100 \
                    1000000 3000 18446744073709551615";
        let status = "Name:\tivr\nVmRSS:\t   40960 kB\nThreads: 9\n";
        let s = parse_sample(stat, status, 100.0).unwrap();
        assert_eq!(s.cpu_s, 3.0);
        assert_eq!(s.rss_kib, 40960);
        assert_eq!(s.threads, 9);
        assert!(parse_sample("garbage", "", 100.0).is_none());
        assert!(parse_sample("1 (x) S 1", "", 100.0).is_none());
    }

    #[test]
    fn peak_memory_is_at_least_the_current() {
        assert_eq!(
            parse_kib("VmHWM:\t  512 kB\nVmRSS:\t 256 kB\n", "VmHWM:"),
            Some(512)
        );
        assert_eq!(parse_kib("VmRSS:\t 256 kB\n", "VmHWM:"), None);
        let me = std::process::id();
        let (peak, now) = (peak_rss_kib(me).unwrap(), sample(me).unwrap().rss_kib);
        assert!(peak >= now && now > 0, "peak {peak} KiB, now {now} KiB");
    }

    #[test]
    fn own_process_is_found_by_its_udp_port() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        assert_eq!(pid_by_udp_port(port), Some(std::process::id()));
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.threads >= 1);
        // The standard streams and the socket above at least (other tests open and close
        // files meanwhile, so no exact count).
        assert!(fd_count(std::process::id()).unwrap() >= 4);
        assert_eq!(fd_count(u32::MAX), None);
        drop(sock);
    }

    #[test]
    fn udp_table_lines() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                 12: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4242 2 0\n";
        assert_eq!(udp_inodes(t, 5060), vec![4242]);
        assert!(udp_inodes(t, 5061).is_empty());
    }
}
