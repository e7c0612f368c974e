//! Where webhooks may be sent (SSRF): `https://` URLs, or `http://` when the settings allow it;
//! no target that resolves to a loopback, private, link-local or otherwise special address
//! (`domain::webhooks::is_private`) unless private targets are allowed. Checked when a webhook is
//! registered or changed, and again on every delivery: the delivery client resolves names
//! through [`SafeResolver`], which drops forbidden addresses, so a name that later points inside
//! (DNS rebinding) reaches nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;

use crate::domain::webhooks::is_private;

/// What the settings allow beyond `https://` to public addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetPolicy {
    /// `COINS_WEBHOOK_ALLOW_HTTP`: plain `http://` URLs.
    pub allow_http: bool,
    /// `COINS_WEBHOOK_ALLOW_PRIVATE`: loopback and private addresses (development, tests).
    pub allow_private: bool,
}

/// Longest URL accepted.
pub const URL_CHARS_MAX: usize = 2048;

/// Checks a URL's form; the sentence of a 400 on failure.
pub fn parse(url: &str, policy: TargetPolicy) -> Result<Url, String> {
    if url.len() > URL_CHARS_MAX {
        return Err(format!("url must be at most {URL_CHARS_MAX} characters"));
    }
    let parsed = Url::parse(url).map_err(|_| "url must be an absolute http(s) URL".to_owned())?;
    match parsed.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return Err("url must be https:// (http:// needs COINS_WEBHOOK_ALLOW_HTTP=true)".into()),
        _ => return Err("url must be an absolute http(s) URL".into()),
    }
    if parsed.host_str().is_none_or(str::is_empty) || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url must name a host and carry no credentials".into());
    }
    if let Some(ip) = literal_ip(&parsed) {
        check_ip(ip, policy)?;
    }
    Ok(parsed)
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

fn check_ip(ip: IpAddr, policy: TargetPolicy) -> Result<(), String> {
    if is_private(ip) && !policy.allow_private {
        return Err(format!("url resolves to {ip}, a private or loopback address (allowed only with COINS_WEBHOOK_ALLOW_PRIVATE=true)"));
    }
    Ok(())
}

/// Checks what a URL resolves to now (at registration): every address must be allowed. A name
/// that does not resolve (yet) is accepted: delivery checks again, address by address.
pub async fn check_resolved(url: &Url, policy: TargetPolicy) -> Result<(), String> {
    if literal_ip(url).is_some() || policy.allow_private {
        return Ok(()); // literal addresses are checked by `parse`
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let Ok(addrs) = tokio::net::lookup_host((host, port)).await else { return Ok(()) };
    for a in addrs {
        check_ip(a.ip(), policy)?;
    }
    Ok(())
}

/// Checks a URL at delivery: its form again (settings may have changed), and a literal address.
pub fn check_delivery(url: &str, policy: TargetPolicy) -> Result<Url, String> {
    parse(url, policy)
}

/// The delivery client's resolver: forbidden addresses are dropped from every answer.
pub struct SafeResolver {
    pub policy: TargetPolicy,
}

impl reqwest::dns::Resolve for SafeResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all.into_iter().filter(|a| policy.allow_private || !is_private(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves only to forbidden addresses").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The pooled delivery client: no redirects followed (a 3xx is a failure), the time limit of
/// the settings, names resolved by [`SafeResolver`].
pub fn client(policy: TargetPolicy, timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(std::time::Duration::from_secs(5)))
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("coins-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(SafeResolver { policy }))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_and_public_unless_allowed() {
        let strict = TargetPolicy::default();
        assert!(parse("https://hooks.example.com/coins", strict).is_ok());
        assert!(parse("http://hooks.example.com/coins", strict).unwrap_err().contains("https://"));
        assert!(parse("https://127.0.0.1/x", strict).unwrap_err().contains("private"));
        assert!(parse("https://[::1]/x", strict).is_err());
        assert!(parse("https://169.254.169.254/latest", strict).is_err());
        assert!(parse("ftp://example.com", strict).is_err());
        assert!(parse("https://user:pw@example.com", strict).is_err());
        let open = TargetPolicy { allow_http: true, allow_private: true };
        assert!(parse("http://127.0.0.1:9000/hook", open).is_ok());
    }
}
