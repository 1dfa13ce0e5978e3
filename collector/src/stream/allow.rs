//! Which addresses a stream may connect to. Loopback, link-local, private, shared (CGNAT),
//! unspecified, multicast and broadcast addresses are refused unless the operator's
//! `[streams] allow_destinations` lists them (a CIDR block) or the host name: no stream can be
//! pointed at a metadata service or an internal host. A name is resolved and every address it
//! gives is checked; the connection goes to a checked address, so a name that resolves
//! differently a moment later cannot slip through.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The operator's allowlist.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
}

/// A destination refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "{host} resolves to {addr}, a {what} address; the operator must allow it in [streams] allow_destinations"
    )]
    Internal {
        host: String,
        addr: IpAddr,
        what: &'static str,
    },
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
}

impl Allowlist {
    /// From `allow_destinations`: CIDRs, single addresses, host names.
    pub fn new(entries: &[String]) -> Result<Allowlist, String> {
        let mut list = Allowlist::default();
        for e in entries {
            let e = e.trim();
            if let Ok(net) = e.parse::<IpNet>() {
                list.nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip));
            } else if !e.is_empty()
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                list.hosts.push(e.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "streams.allow_destinations: {e:?} is neither a CIDR, an address nor a host name"
                ));
            }
        }
        Ok(list)
    }

    /// Whether `addr`, reached through the name `host`, may be connected to.
    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), Refused> {
        let addr = canonical(addr);
        let Some(what) = internal(addr) else {
            return Ok(());
        };
        let host_lower = host.to_ascii_lowercase();
        if self.hosts.contains(&host_lower) || self.nets.iter().any(|n| n.contains(&addr)) {
            return Ok(());
        }
        Err(Refused::Internal {
            host: host.to_string(),
            addr,
            what,
        })
    }

    /// Resolves `host` and checks every address; all must pass.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| Refused::Resolve {
                    host: host.to_string(),
                    message: e.to_string(),
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Refused::Resolve {
                host: host.to_string(),
                message: "no address".into(),
            });
        }
        for a in &addrs {
            self.check(host, a.ip())?;
        }
        Ok(addrs)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of non-public address `addr` is, if it is one.
fn internal(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_loopback() {
                Some("loopback")
            } else if a.is_link_local() {
                Some("link-local")
            } else if a.is_private() {
                Some("private")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared (CGNAT)")
            } else if a.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if a.is_multicast() || a.is_broadcast() {
                Some("multicast or broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            if a.is_loopback() {
                Some("loopback")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private (unique local)")
            } else if a.is_unspecified() {
                Some("unspecified")
            } else if a.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_listed() {
        let none = Allowlist::new(&[]).unwrap();
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(none.check("h", ip).is_err(), "{a}");
        }
        for a in ["8.8.8.8", "2001:4860::8888", "1.1.1.1"] {
            assert!(none.check("h", a.parse().unwrap()).is_ok(), "{a}");
        }
        let some =
            Allowlist::new(&["10.0.0.0/8".into(), "127.0.0.1".into(), "siem.corp".into()]).unwrap();
        assert!(some.check("x", "10.9.9.9".parse().unwrap()).is_ok());
        assert!(some.check("x", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(some.check("x", "127.0.0.2".parse().unwrap()).is_err());
        assert!(
            some.check("SIEM.corp", "192.168.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(some.check("x", "169.254.169.254".parse().unwrap()).is_err());
        assert!(Allowlist::new(&["not a host/".into()]).is_err());
    }

    #[tokio::test]
    async fn a_name_is_checked_on_every_address_it_resolves_to() {
        let none = Allowlist::new(&[]).unwrap();
        let e = none.resolve("localhost", 80).await.unwrap_err();
        assert!(matches!(e, Refused::Internal { .. }), "{e}");
        let host = Allowlist::new(&["localhost".into()]).unwrap();
        assert!(!host.resolve("localhost", 80).await.unwrap().is_empty());
    }
}
