//! Free ports for children to bind: found free here, bound by the child later.
//!
//! Between the probe and the child's bind, two things could take a port: the kernel, handing it
//! out as an ephemeral port (a bind to port 0 or a connect, by any process), and another test
//! process probing the same way. So ports come from outside the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`), and each is claimed with a lock on a file named after it
//! in a directory every harness process shares, held until the process exits: no two harness
//! processes hand out the same port, and this one never hands one out twice (a collector
//! restarted on its ports finds them still its own). Probing starts at a per-process offset so
//! concurrent processes rarely meet.

use std::collections::BTreeSet;
use std::fs::{File, TryLockError};
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The lowest port handed out: below are the well-known and the usual service ports.
const LOWEST: u16 = 10_000;
/// Where ports are claimed, under the temp dir.
const CLAIMS_DIR: &str = "codestax-test-ports";
/// The kernel's default ephemeral range, if `/proc` does not say.
const EPHEMERAL_DEFAULT: (u16, u16) = (32_768, 60_999);

struct Ports {
    /// Ports this process may hand out, in probing order.
    candidates: Vec<u16>,
    /// The index in `candidates` to probe next.
    next: usize,
    /// Ports handed out, with their claims (locked files, held until the process exits).
    given: BTreeSet<u16>,
    claims: Vec<File>,
    dir: PathBuf,
}

static PORTS: Mutex<Option<Ports>> = Mutex::new(None);

/// A port free on 127.0.0.1 now, for a child to bind: not handed out before by this process,
/// nor by another harness process while that one runs, and outside the kernel's ephemeral
/// range.
pub fn try_free_port() -> io::Result<u16> {
    try_free_ports(1)
}

/// The first of `n` consecutive ports, each as [`try_free_port`] gives them.
pub fn try_free_ports(n: u16) -> io::Result<u16> {
    let mut guard = PORTS.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        *guard = Some(Ports::new()?);
    }
    guard.as_mut().expect("set above").claim_run(n)
}

/// A port free on 127.0.0.1 now ([`try_free_port`]); panics if there is none.
pub fn free_port() -> u16 {
    try_free_port().expect("a free port on 127.0.0.1")
}

impl Ports {
    fn new() -> io::Result<Ports> {
        let (low, high) = ephemeral_range();
        let candidates: Vec<u16> = (LOWEST..=u16::MAX)
            .filter(|p| !(low..=high).contains(p))
            .collect();
        if candidates.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("the ephemeral range {low}-{high} leaves no port from {LOWEST} up"),
            ));
        }
        let dir = std::env::temp_dir().join(CLAIMS_DIR);
        std::fs::create_dir_all(&dir)?;
        // Any user's tests claim here (as /tmp itself: sticky, everyone may create files).
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed =
            u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(nanos);
        Ok(Ports {
            next: (seed % candidates.len() as u64) as usize,
            candidates,
            given: BTreeSet::new(),
            claims: Vec::new(),
            dir,
        })
    }

    /// Claims `n` consecutive free ports, probing from where the last claim ended; returns the
    /// first.
    fn claim_run(&mut self, n: u16) -> io::Result<u16> {
        for _ in 0..self.candidates.len() {
            let first = self.candidates[self.next];
            self.next = (self.next + 1) % self.candidates.len();
            let Some(ports) = run(first, n) else { continue };
            if ports
                .iter()
                .any(|p| self.given.contains(p) || self.candidates.binary_search(p).is_err())
            {
                continue;
            }
            let mut claims = Vec::with_capacity(ports.len());
            for &port in &ports {
                match claim(&self.dir, port)? {
                    Some(file) if bindable(port) => claims.push(file),
                    _ => break,
                }
            }
            if claims.len() == ports.len() {
                self.given.extend(ports);
                self.claims.append(&mut claims);
                return Ok(first);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no {n} consecutive free ports on 127.0.0.1"),
        ))
    }
}

/// `first..first + n`, if it fits below 65536.
fn run(first: u16, n: u16) -> Option<Vec<u16>> {
    let last = first.checked_add(n.checked_sub(1)?)?;
    Some((first..=last).collect())
}

/// Locks `port`'s file in `dir` without waiting: `None` if another process holds it. The lock
/// lasts as long as the file stays open (the process's life: the file is not inherited by
/// children, std opens it close-on-exec).
fn claim(dir: &Path, port: u16) -> io::Result<Option<File>> {
    let path = dir.join(port.to_string());
    // Read-only suffices to lock, so a file another user made serves too.
    let file = match File::open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?,
        other => other?,
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Whether nothing listens on 127.0.0.1:`port` now (a server not started by the harness).
fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// `net.ipv4.ip_local_port_range`.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut ports = text.split_whitespace().map(|p| p.parse().ok());
            Some((ports.next()??, ports.next()??))
        })
        .unwrap_or(EPHEMERAL_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_claimed_and_never_given_twice() {
        let (low, high) = ephemeral_range();
        let mut seen = BTreeSet::new();
        for _ in 0..50 {
            let port = try_free_port().unwrap();
            assert!(port >= LOWEST && !(low..=high).contains(&port), "{port}");
            assert!(seen.insert(port), "{port} twice");
            // Claimed: another process (or a second open here) cannot lock it.
            let dir = std::env::temp_dir().join(CLAIMS_DIR);
            assert!(claim(&dir, port).unwrap().is_none(), "{port} not claimed");
        }
        let first = try_free_ports(6).unwrap();
        for port in first..first + 6 {
            assert!(seen.insert(port), "{port} twice");
        }
    }
}
