//! Client host names, found the way MariaDB finds them when `skip_name_resolve` is
//! OFF, so that the proxy matches host-name accounts (`'app'@'localhost'`,
//! `'app'@'%.example.com'`) as MariaDB would.
//!
//! * 127.0.0.1 and ::1 are `localhost` without a lookup (other loopback addresses are
//!   not: MariaDB resolves them like any address).
//! * Otherwise: a reverse lookup (`getnameinfo`, name required), refused when the name
//!   it gives is itself an IP address, then confirmed by a forward lookup that must
//!   return the client's address. A name that fails any step leaves the client with its
//!   IP only.
//!
//! Lookups run on the blocking pool and are cached for [`CACHE_TTL`] (MariaDB caches
//! them too, until `FLUSH HOSTS`), at most [`CACHE_MAX`] addresses.

use std::collections::HashMap;
use std::ffi::CStr;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::acl::canonical_ip;

pub const CACHE_TTL: Duration = Duration::from_secs(300);
pub const CACHE_MAX: usize = 4096;

/// Resolved names by address.
#[derive(Default)]
pub struct HostCache {
    entries: Mutex<HashMap<IpAddr, (Instant, Option<String>)>>,
}

impl HostCache {
    /// The name MariaDB would give `ip`, if any.
    pub async fn name_of(&self, ip: IpAddr) -> Option<String> {
        let ip = canonical_ip(ip);
        if let Some(fixed) = loopback_name(ip) {
            return Some(fixed.to_string());
        }
        if let Some(hit) = self.cached(ip) {
            return hit;
        }
        let name = tokio::task::spawn_blocking(move || resolve(ip))
            .await
            .unwrap_or(None);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_MAX {
            let now = Instant::now();
            entries.retain(|_, (at, _)| now.duration_since(*at) < CACHE_TTL);
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(ip, (Instant::now(), name.clone()));
        name
    }

    fn cached(&self, ip: IpAddr) -> Option<Option<String>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&ip)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, name)| name.clone())
    }
}

/// MariaDB names exactly these two addresses `localhost` without asking DNS.
fn loopback_name(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.octets() == [127, 0, 0, 1] => Some("localhost"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("localhost"),
        _ => None,
    }
}

/// Reverse lookup confirmed by a forward lookup (blocking).
fn resolve(ip: IpAddr) -> Option<String> {
    let name = reverse(ip)?;
    if name.parse::<IpAddr>().is_ok() {
        return None;
    }
    let confirmed = (name.as_str(), 0)
        .to_socket_addrs()
        .ok()?
        .any(|a| canonical_ip(a.ip()) == ip);
    confirmed.then_some(name)
}

fn reverse(ip: IpAddr) -> Option<String> {
    let addr = SocketAddr::new(ip, 0);
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: `storage` is a correctly sized sockaddr for `addr`'s family, and `host`
    // is a writable buffer of the length passed; getnameinfo writes a NUL-terminated
    // string into it on success.
    let rc = unsafe {
        match addr {
            SocketAddr::V4(v4) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                libc::getnameinfo(
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    host.as_mut_ptr(),
                    host.len() as libc::socklen_t,
                    std::ptr::null_mut(),
                    0,
                    libc::NI_NAMEREQD,
                )
            }
            SocketAddr::V6(v6) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_addr.s6_addr = v6.ip().octets();
                libc::getnameinfo(
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    host.as_mut_ptr(),
                    host.len() as libc::socklen_t,
                    std::ptr::null_mut(),
                    0,
                    libc::NI_NAMEREQD,
                )
            }
        }
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(host.as_ptr()) };
    name.to_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_rules() {
        let cache = HostCache::default();
        assert_eq!(
            cache.name_of("127.0.0.1".parse().unwrap()).await.as_deref(),
            Some("localhost")
        );
        assert_eq!(
            cache.name_of("::1".parse().unwrap()).await.as_deref(),
            Some("localhost")
        );
        assert_eq!(
            cache
                .name_of("::ffff:127.0.0.1".parse().unwrap())
                .await
                .as_deref(),
            Some("localhost")
        );
    }
}
