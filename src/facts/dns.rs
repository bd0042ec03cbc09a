//! DNS lookups through the `[dns]` resolver: MX hosts and addresses for
//! delivery, reverse names (PTR, forward-confirmed) and DNSBL answers for
//! the connection checks. Answers, negative ones included, are cached for
//! their TTL by the resolver.
//!
//! With `dns.nameservers` set, every query goes to those servers (UDP, then
//! TCP on truncation), nothing is answered from /etc/hosts, and the cache is
//! off only for tests' sake when the TTLs say so; otherwise the system's
//! resolver configuration is used. A lookup either finds records, finds
//! that there are none (NXDOMAIN or no records of the type: a definite
//! answer), or fails temporarily (timeout, SERVFAIL): callers must never
//! treat the last as the second (RFC 2505 §4: DNS trouble is a 4xx).
//!
//! # Security
//! Answers come from the network. Names are used only as names to look up
//! or connect to; a null MX (RFC 7505) and empty answers are handled.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::sync::Arc;

use futures_util::StreamExt;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::DnsHandle;
use hickory_resolver::proto::op::{DnsRequestOptions, Query};
use hickory_resolver::proto::rr::Name;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig, TokioResolver};
use mxguard_config::DnsConfig;
use mxguard_policy::sender::DomainAnswer;

/// Answers kept by the resolver's cache (DNSBL and PTR answers of busy
/// clients are asked again and again).
const CACHE_SIZE: u64 = 16 * 1024;

/// A lookup that did not find records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN).
    #[error("{0}: no such domain")]
    NoDomain(String),
    /// The name exists but has no record of the type asked.
    #[error("{0}: no {1} records")]
    NoRecords(String, &'static str),
    /// Timeout, SERVFAIL, network trouble: try again later.
    #[error("{0}: DNS lookup failed: {1}")]
    Temporary(String, String),
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    pub preference: u16,
    /// The exchange, without the trailing dot; "." for a null MX.
    pub exchange: String,
}

/// The resolver.
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    /// With `dns.nameservers` set, reverse lookups of loopback addresses go
    /// to those servers too (SPEC §2): the resolver would otherwise answer
    /// "localhost" itself (RFC 6761), so they take this direct path.
    direct: Option<Arc<NameServerPool<TokioRuntimeProvider>>>,
}

fn classify(name: &str, kind: &'static str, e: NetError) -> DnsError {
    if e.is_nx_domain() {
        DnsError::NoDomain(name.to_string())
    } else if e.is_no_records_found() {
        DnsError::NoRecords(name.to_string(), kind)
    } else {
        DnsError::Temporary(name.to_string(), e.to_string())
    }
}

/// Makes `name` fully qualified, so no search domain is ever appended.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// The servers of `[dns] nameservers`: UDP, then TCP, on each one's port.
pub(crate) fn nameserver_configs(cfg: &DnsConfig) -> Vec<NameServerConfig> {
    cfg.nameservers
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect()
}

/// The options used with `[dns] nameservers`: its timeout, one attempt,
/// no hosts file (the configured servers answer everything).
pub(crate) fn configured_opts(cfg: &DnsConfig) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = cfg.timeout;
    opts.attempts = 1;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    opts
}

impl Dns {
    /// Builds the resolver of `[dns]`.
    pub fn from_config(cfg: &DnsConfig) -> Result<Dns, NetError> {
        if cfg.nameservers.is_empty() {
            let mut b = TokioResolver::builder_tokio()?;
            b.options_mut().timeout = cfg.timeout;
            b.options_mut().cache_size = CACHE_SIZE;
            return Ok(Dns {
                resolver: b.build()?,
                direct: None,
            });
        }
        let servers = nameserver_configs(cfg);
        let mut opts = configured_opts(cfg);
        opts.cache_size = CACHE_SIZE;
        let cx = Arc::new(PoolContext::new(opts.clone(), TlsConfig::new()?));
        let direct =
            NameServerPool::from_config(servers.clone(), cx, TokioRuntimeProvider::default());
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()?;
        Ok(Dns {
            resolver,
            direct: Some(Arc::new(direct)),
        })
    }

    /// MX records of a domain, best (lowest preference) first.
    pub async fn mx(&self, domain: &str) -> Result<Vec<Mx>, DnsError> {
        let lookup = self
            .resolver
            .mx_lookup(fqdn(domain))
            .await
            .map_err(|e| classify(domain, "MX", e))?;
        let mut out: Vec<Mx> = lookup
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::MX(m) => {
                    let ex = m.exchange.to_ascii();
                    let ex = ex
                        .strip_suffix('.')
                        .filter(|e| !e.is_empty())
                        .unwrap_or(".");
                    Some(Mx {
                        preference: m.preference,
                        exchange: ex.to_lowercase(),
                    })
                }
                _ => None,
            })
            .collect();
        if out.is_empty() {
            return Err(DnsError::NoRecords(domain.to_string(), "MX"));
        }
        out.sort_by_key(|m| m.preference);
        Ok(out)
    }

    /// Whether a return path's domain can receive mail (RFC 2505 §2.9,
    /// `sender.verify_domain`): an MX, or else an A or AAAA record
    /// (RFC 5321 §5.1's implicit MX); a lone null MX (RFC 7505) says it
    /// takes none.
    pub async fn mail_domain(&self, domain: &str) -> DomainAnswer {
        let temporary = |e: DnsError| match e {
            DnsError::NoDomain(_) => DomainAnswer::NoSuchDomain,
            DnsError::NoRecords(..) => DomainAnswer::NoRecords,
            DnsError::Temporary(_, why) => DomainAnswer::Unavailable(why),
        };
        match self.mx(domain).await {
            Ok(mx) if mx.iter().all(|m| m.exchange == ".") => DomainAnswer::NullMx,
            Ok(_) => DomainAnswer::MailServers,
            Err(DnsError::NoRecords(..)) => match self.ips(domain).await {
                Ok(_) => DomainAnswer::MailServers,
                Err(e) => temporary(e),
            },
            Err(e) => temporary(e),
        }
    }

    /// The IPv4 and IPv6 addresses of a host.
    pub async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let lookup = self
            .resolver
            .lookup_ip(fqdn(host))
            .await
            .map_err(|e| classify(host, "A/AAAA", e))?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(DnsError::NoRecords(host.to_string(), "A/AAAA"));
        }
        Ok(ips)
    }

    /// Addresses of a host with a port.
    pub async fn socket_addrs(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DnsError> {
        Ok(self
            .ips(host)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// The PTR names of an address (without trailing dots).
    pub async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        if let (Some(direct), true) = (&self.direct, canonical(ip).is_loopback()) {
            return self.ptr_direct(direct, ip).await;
        }
        let lookup = self
            .resolver
            .reverse_lookup(ip)
            .await
            .map_err(|e| classify(&ip.to_string(), "PTR", e))?;
        ptr_names(ip, lookup.answers())
    }

    /// A PTR query sent to the configured servers as it is.
    async fn ptr_direct(
        &self,
        pool: &NameServerPool<TokioRuntimeProvider>,
        ip: IpAddr,
    ) -> Result<Vec<String>, DnsError> {
        let query = Query::query(Name::from(canonical(ip)), RecordType::PTR);
        let mut answers = pool.lookup(query, DnsRequestOptions::default());
        match answers.next().await {
            Some(Ok(resp)) => ptr_names(ip, &resp.answers),
            Some(Err(e)) => Err(classify(&ip.to_string(), "PTR", e)),
            None => Err(DnsError::Temporary(ip.to_string(), "no answer".into())),
        }
    }

    /// Whether `name` resolves back to `ip` (forward-confirmed reverse DNS).
    pub async fn resolves_to(&self, name: &str, ip: IpAddr) -> Result<bool, DnsError> {
        match self.ips(name).await {
            Ok(ips) => Ok(ips.iter().any(|a| canonical(*a) == canonical(ip))),
            Err(DnsError::NoDomain(_)) | Err(DnsError::NoRecords(..)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The A records of a DNSBL query name: `Ok(vec![])` when not listed.
    pub async fn dnsbl(&self, query: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        match self.resolver.lookup(query, RecordType::A).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(DnsError::Temporary(query.to_string(), e.to_string())),
        }
    }
}

/// The names of PTR records (lowercase, without trailing dots).
fn ptr_names(
    ip: IpAddr,
    answers: &[hickory_resolver::proto::rr::Record],
) -> Result<Vec<String>, DnsError> {
    let names: Vec<String> = answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::PTR(p) => Some(p.0.to_ascii().trim_end_matches('.').to_lowercase()),
            _ => None,
        })
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Err(DnsError::NoRecords(ip.to_string(), "PTR"));
    }
    Ok(names)
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
