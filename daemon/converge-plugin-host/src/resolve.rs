//! Name resolution for plugins' requests. A grant names what a plugin may
//! reach; a granted host *name* must not lead inside the network the daemon
//! runs in (a DNS record pointing `api.partner.com` at 127.0.0.1, or at a
//! metadata service on 169.254.169.254). So names resolve to public
//! addresses only; an internal address is reachable only when the grant
//! names that address itself (`127.0.0.1:9000`), which needs no resolution.

use std::error::Error;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// Resolves with the system resolver and keeps the public addresses. Only
/// names reach it: the connector takes an address in the URL as it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublicOnly;

/// A granted name that resolved to internal addresses only.
#[derive(Debug)]
pub(crate) struct InternalAddress {
    pub host: String,
    pub addresses: Vec<IpAddr>,
}

impl std::fmt::Display for InternalAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addresses: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
        write!(
            f,
            "{} resolves to {}, an internal address: grant that address itself (host:port) to reach it",
            self.host,
            addresses.join(", ")
        )
    }
}

impl Error for InternalAddress {}

type Resolving = Pin<
    Box<
        dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, Box<dyn Error + Send + Sync>>>
            + Send,
    >,
>;

impl tower_service::Service<Name> for PublicOnly {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn Error + Send + Sync>;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (public, internal): (Vec<SocketAddr>, Vec<SocketAddr>) =
                found.into_iter().partition(|a| is_public(a.ip()));
            if public.is_empty() && !internal.is_empty() {
                let addresses = internal.iter().map(SocketAddr::ip).collect();
                return Err(
                    Box::new(InternalAddress { host, addresses }) as Box<dyn Error + Send + Sync>
                );
            }
            Ok(public.into_iter())
        })
    }
}

/// Whether an address is on the public internet: not loopback, private,
/// link-local, shared (carrier-grade NAT), unspecified, broadcast,
/// documentation or unique-local.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || shared
        || a == 0)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || unique_local || link_local)
}

/// Whether a request failed because its host name led inside.
pub(crate) fn internal_address(error: &(dyn Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(internal) = cause.downcast_ref::<InternalAddress>() {
            return Some(internal.to_string());
        }
        source = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "100.128.0.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_name_of_an_internal_address_is_refused_with_the_way_out() {
        let name: Name = "localhost".parse().unwrap();
        let error = match tower_service::Service::call(&mut PublicOnly, name).await {
            Ok(_) => panic!("localhost resolved to a public address"),
            Err(e) => e,
        };
        let message = internal_address(&*error).expect("an internal address");
        assert!(message.starts_with("localhost resolves to "), "{message}");
        assert!(message.contains("grant that address itself"), "{message}");
    }
}
