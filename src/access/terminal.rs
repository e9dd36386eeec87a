//! 端末名: the client's network address; a terminal id or forwarded address only from a peer
//! in the configured trusted-proxy list (anyone else could write any name there).

use std::net::IpAddr;

use ipnet::IpNet;

use super::AccessError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// A comma-separated list of addresses and networks (`10.0.0.5, 10.1.0.0/16`).
    pub fn parse(text: &str) -> Result<Self, AccessError> {
        let mut nets = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = part
                .parse::<IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| AccessError::Invalid(format!("trusted proxy {part:?} is not an address or network")))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&peer))
    }

    /// The terminal of a request from `peer`: the proxy's `X-Terminal-Id`, else the last
    /// address of its `X-Forwarded-For` (the client it saw); the peer itself otherwise.
    pub fn terminal(&self, peer: Option<IpAddr>, terminal_id: Option<&str>, forwarded_for: Option<&str>) -> String {
        let Some(peer) = peer else {
            return "unknown".into();
        };
        if self.trusts(peer) {
            let clean = |s: &str| {
                let s = s.trim();
                (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_owned())
            };
            if let Some(id) = terminal_id.and_then(clean) {
                return id;
            }
            if let Some(addr) = forwarded_for.and_then(|f| f.rsplit(',').next()).and_then(clean) {
                return addr;
            }
        }
        peer.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trusted_proxies_name_the_terminal() {
        let t = TrustedProxies::parse("10.0.0.5, 192.168.0.0/16").unwrap();
        let proxy: IpAddr = "192.168.3.4".parse().unwrap();
        let stranger: IpAddr = "10.0.0.6".parse().unwrap();
        assert_eq!(
            t.terminal(Some(proxy), Some("KUYAKUSHO-PC-012"), Some("1.2.3.4")),
            "KUYAKUSHO-PC-012"
        );
        assert_eq!(t.terminal(Some(proxy), None, Some("9.9.9.9, 1.2.3.4")), "1.2.3.4");
        assert_eq!(t.terminal(Some(proxy), None, None), "192.168.3.4");
        assert_eq!(t.terminal(Some(stranger), Some("forged"), Some("6.6.6.6")), "10.0.0.6");
        assert_eq!(
            TrustedProxies::default().terminal(Some(proxy), Some("x"), None),
            "192.168.3.4"
        );
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
    }
}
