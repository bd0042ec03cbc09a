//! An in-process authoritative DNS server for the tests (hickory-server).
//!
//! ```ignore
//! let dns = TestDns::start(
//!     Zones::new()
//!         .mx("backup.test", 10, "mx1.backup.test")
//!         .a("mx1.backup.test", "127.0.0.11"),
//! );
//! // [dns] nameservers = [dns.addr()]
//! ```
//!
//! It listens on 127.0.0.1 with an ephemeral port, UDP and TCP on the same
//! port, and runs on its own thread with its own tokio runtime, so plain
//! (sync) tests can use it. Each record goes into the zone of its top-level
//! label (`test.`, `arpa.`, ...), which is authoritative: a name it does not
//! hold is NXDOMAIN, a name without the asked type is NOERROR with no answer.
//! `set_silent(true)` makes it drop every query, like a dead server.
//! [`DeadDns`] is a socket that never answers at all.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Message, MessageType, Metadata, Query};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

/// Default TTL of the records (short: tests never rely on caching).
const TTL: u32 = 5;

/// A fully qualified name from `host` (a final dot is optional).
pub fn fqdn(host: &str) -> Name {
    let text = if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    };
    Name::from_ascii(&text).unwrap_or_else(|e| panic!("bad DNS name {host:?}: {e}"))
}

/// The reverse name of an address: `4.3.2.1.in-addr.arpa.` or the nibbles
/// under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> Name {
    let text = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0x0f, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    };
    Name::from_ascii(&text).expect("a valid reverse name")
}

/// The records a [`TestDns`] serves, added with the helpers.
#[derive(Clone, Debug, Default)]
pub struct Zones {
    records: Vec<Record>,
}

impl Zones {
    pub fn new() -> Self {
        Self::default()
    }

    /// Any record.
    pub fn record(mut self, name: &str, rdata: RData) -> Self {
        self.records
            .push(Record::from_rdata(fqdn(name), TTL, rdata));
        self
    }

    /// `domain MX pref host`.
    pub fn mx(self, domain: &str, pref: u16, host: &str) -> Self {
        self.record(domain, RData::MX(MX::new(pref, fqdn(host))))
    }

    /// `host A ip` (`ip` like "127.0.0.11").
    pub fn a(self, host: &str, ip: &str) -> Self {
        let ip: Ipv4Addr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad IPv4 address {ip:?}: {e}"));
        self.record(host, RData::A(A(ip)))
    }

    /// `host AAAA ip` (`ip` like "::1").
    pub fn aaaa(self, host: &str, ip: &str) -> Self {
        let ip: Ipv6Addr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad IPv6 address {ip:?}: {e}"));
        self.record(host, RData::AAAA(AAAA(ip)))
    }

    /// `name TXT "text"` (one string; split at 255 bytes as DNS requires).
    pub fn txt(self, name: &str, text: &str) -> Self {
        let parts: Vec<String> = if text.is_empty() {
            vec![String::new()]
        } else {
            text.as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect()
        };
        self.record(name, RData::TXT(TXT::new(parts)))
    }

    /// The PTR record of `ip` (like "192.0.2.10") pointing to `host`.
    pub fn ptr(mut self, ip: &str, host: &str) -> Self {
        let ip: IpAddr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad IP address {ip:?}: {e}"));
        self.records.push(Record::from_rdata(
            reverse_name(ip),
            TTL,
            RData::PTR(PTR(fqdn(host))),
        ));
        self
    }

    /// `name CNAME target`.
    pub fn cname(self, name: &str, target: &str) -> Self {
        self.record(name, RData::CNAME(CNAME(fqdn(target))))
    }

    /// The records grouped by the zone (top-level label) they go into.
    fn by_zone(&self) -> BTreeMap<Name, Vec<Record>> {
        let mut zones: BTreeMap<Name, Vec<Record>> = BTreeMap::new();
        // The zones most tests touch exist even when empty, so that unknown
        // names there are NXDOMAIN rather than REFUSED.
        for z in ["test.", "arpa."] {
            zones.insert(Name::from_ascii(z).expect("zone name"), Vec::new());
        }
        for r in &self.records {
            zones.entry(zone_of(&r.name)).or_default().push(r.clone());
        }
        zones
    }
}

/// The zone a name goes into: its top-level label.
fn zone_of(name: &Name) -> Name {
    let n = name.num_labels();
    if n <= 1 {
        return name.clone();
    }
    name.trim_to(1)
}

fn soa_record(origin: &Name) -> Record {
    Record::from_rdata(
        origin.clone(),
        TTL,
        RData::SOA(SOA::new(
            Name::from_ascii("ns.test.").expect("ns name"),
            Name::from_ascii("hostmaster.test.").expect("rname"),
            1,
            3600,
            600,
            86400,
            // Negative caching TTL: short, tests never rely on it.
            1,
        )),
    )
}

/// The request handler: the catalog, unless silenced.
struct Switch {
    catalog: Catalog,
    silent: Arc<AtomicBool>,
    queries: Arc<Mutex<Vec<(String, RecordType)>>>,
}

#[async_trait::async_trait]
impl RequestHandler for Switch {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        for q in request.queries.queries() {
            self.queries
                .lock()
                .expect("query log lock")
                .push((q.name().to_string(), q.query_type()));
        }
        if self.silent.load(Ordering::SeqCst) {
            // Nothing is sent: the client sees a timeout.
            let m = &request.metadata;
            return ResponseInfo::from(Header {
                metadata: Metadata::new(m.id, MessageType::Response, m.op_code),
                counts: HeaderCounts::default(),
            });
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// A running authoritative DNS server; stopped when dropped.
pub struct TestDns {
    addr: SocketAddr,
    silent: Arc<AtomicBool>,
    queries: Arc<Mutex<Vec<(String, RecordType)>>>,
    zones: BTreeMap<Name, Arc<InMemoryZoneHandler>>,
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestDns {
    /// Starts a server with `zones` on 127.0.0.1:<ephemeral> (UDP and TCP).
    pub fn start(zones: Zones) -> TestDns {
        let mut handlers: BTreeMap<Name, Arc<InMemoryZoneHandler>> = BTreeMap::new();
        let mut catalog = Catalog::new();
        for (origin, records) in zones.by_zone() {
            let mut z: InMemoryZoneHandler =
                InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
            z.upsert_mut(soa_record(&origin), 1);
            for r in records {
                z.upsert_mut(r, 1);
            }
            let z = Arc::new(z);
            let dynz: Arc<dyn ZoneHandler> = z.clone();
            catalog.upsert(LowerName::from(origin.clone()), vec![dynz]);
            handlers.insert(origin, z);
        }
        let silent = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let switch = Switch {
            catalog,
            silent: silent.clone(),
            queries: queries.clone(),
        };

        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the test DNS");
                rt.block_on(async move {
                    let (udp, tcp) = match bind_udp_tcp_pair().await {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let addr = udp.local_addr().expect("UDP local address");
                    let mut server = Server::new(switch);
                    server.register_socket(udp);
                    if let Some(tcp) = tcp {
                        server.register_listener(tcp, Duration::from_secs(5), 4096);
                    }
                    let _ = ready_tx.send(Ok((addr, tokio::runtime::Handle::current())));
                    let _ = stop_rx.await;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), server.shutdown_gracefully())
                            .await;
                });
            })
            .expect("spawn the test DNS thread");
        let (addr, handle) = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("test DNS failed to start: {e}"),
            Err(e) => panic!("test DNS did not start within 10s: {e}"),
        };
        TestDns {
            addr,
            silent,
            queries,
            zones: handlers,
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Where it listens (UDP, and TCP on the same port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:PORT"`, for `[dns] nameservers`.
    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }

    /// When `true`, every query is dropped unanswered (a dead server).
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// The queries received so far (name with its final dot, type), in
    /// order, including the ones dropped while silent.
    pub fn queries(&self) -> Vec<(String, RecordType)> {
        self.queries.lock().expect("query log lock").clone()
    }

    /// Adds records to the running server. Each must fall in a zone that
    /// existed at start (`test.` and `arpa.` always do).
    pub fn add(&self, zones: Zones) {
        for r in zones.records {
            let origin = zone_of(&r.name);
            let z = self.zones.get(&origin).unwrap_or_else(|| {
                panic!(
                    "zone {origin} did not exist when the test DNS started; add a record there at start"
                )
            });
            let z = z.clone();
            // The zone's lock is all upsert waits for: no I/O driver needed.
            self.handle.block_on(async move {
                z.upsert(r, 2).await;
            });
        }
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds UDP on 127.0.0.1:0 and TCP on the same port (retrying with a new
/// port when another process holds that TCP port; without TCP after a few
/// tries).
async fn bind_udp_tcp_pair() -> io::Result<(tokio::net::UdpSocket, Option<tokio::net::TcpListener>)>
{
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = udp.local_addr()?.port();
        if let Ok(tcp) = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            return Ok((udp, Some(tcp)));
        }
    }
    let udp = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    Ok((udp, None))
}

/// A "DNS server" that never answers: a bound UDP socket (and a TCP
/// listener on the same port that accepts and never replies), read and
/// ignored by a thread until dropped.
pub struct DeadDns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeadDns {
    pub fn start() -> DeadDns {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a UDP socket");
        let addr = udp.local_addr().expect("local address");
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set read timeout");
        let tcp = std::net::TcpListener::bind(addr).ok();
        if let Some(t) = &tcp {
            t.set_nonblocking(true).expect("nonblocking listener");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut held: Vec<TcpStream> = Vec::new();
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let _ = udp.recv_from(&mut buf);
                    if let Some(t) = &tcp {
                        while let Ok((s, _)) = t.accept() {
                            held.push(s);
                        }
                    }
                }
            })
        };
        DeadDns {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for DeadDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// A plain client, for checking the server itself.

/// One query over UDP; `Err` on timeout.
pub fn query_udp(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> io::Result<Message> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sock.set_read_timeout(Some(timeout))?;
    let q = query_message(name, rtype);
    let id = q.metadata.id;
    sock.send_to(&q.to_vec().map_err(io::Error::other)?, server)?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf)?;
        let m = Message::from_vec(&buf[..n]).map_err(io::Error::other)?;
        if m.metadata.id == id {
            return Ok(m);
        }
    }
}

/// One query over TCP (two-byte length prefix); `Err` on timeout.
pub fn query_tcp(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> io::Result<Message> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&server, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let q = query_message(name, rtype)
        .to_vec()
        .map_err(io::Error::other)?;
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    s.write_all(&out)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Message::from_vec(&body).map_err(io::Error::other)
}

fn query_message(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(fqdn(name), rtype));
    m
}
