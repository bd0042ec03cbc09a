//! The DNS server and the DKIM-signed message of `BENCH_AUTH=on bash
//! bench/smtp-bench.sh` (sender authentication and scoring on).
//!
//! ```text
//! cargo run --release --example bench_dns -- sign --key dkim.pem --domain client.test \
//!     --selector bench --from sender@client.test --to u1@example.test --size 2048 \
//!     --out message.txt --record-out dkim.txt
//! cargo run --release --example bench_dns -- serve --port 20053 --domain client.test \
//!     --selector bench --record-file dkim.txt
//! ```
//!
//! `sign` writes one message of about `--size` bytes (LF line ends, as
//! `smtp-source -F` wants them: it sends each line with CRLF), with a
//! `DKIM-Signature` (RSA-SHA256, relaxed/relaxed, `d=DOMAIN s=SELECTOR`)
//! made with mail-auth, the crate mxguard verifies with, from the private
//! key in `--key` (PEM, PKCS#8 or PKCS#1; the script makes it with
//! `openssl genpkey`: ring cannot generate RSA keys). It also writes the
//! key record (`v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo, base64>`) to
//! `--record-out`, and checks the signature against that record.
//!
//! `serve` is an authoritative DNS server (hickory-server, as
//! tests/support/dns.rs) on 127.0.0.1:PORT, UDP and TCP, for `DOMAIN`:
//!
//! - `DOMAIN TXT "v=spf1 ip4:127.0.0.1 -all"`, `DOMAIN MX 10 mail.DOMAIN`,
//!   `DOMAIN A 127.0.0.1`, `mail.DOMAIN A 127.0.0.1`;
//! - `SELECTOR._domainkey.DOMAIN TXT` the record of `--record-file`;
//! - `_dmarc.DOMAIN TXT "v=DMARC1; p=reject"`;
//! - `1.0.0.127.in-addr.arpa PTR mail.DOMAIN` (mxguard asks the reverse
//!   name of a loopback client when `[dns] nameservers` is set).
//!
//! Every record has a TTL of 3600 s, and the SOA's negative TTL is 3600 s:
//! a resolver that caches asks each name once. Other names in the zones
//! (`test.`, `arpa.`) are NXDOMAIN. It prints `ready 127.0.0.1:PORT` on
//! stdout once it listens. On SIGUSR1 it prints one line to stderr with the
//! queries received so far (`queries total=N NAME/TYPE=N ...`); on SIGTERM
//! or SIGINT the same, and exits.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::rr::rdata::{A, MX, PTR, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

const TTL: u32 = 3600;

fn usage() -> ! {
    eprintln!(
        "usage:\n  bench_dns sign --key PEM --domain D --selector S --from ADDR --to ADDR --size BYTES --out FILE --record-out FILE\n  bench_dns serve --port PORT --domain D --selector S --record-file FILE"
    );
    std::process::exit(2)
}

/// `--name value` pairs.
fn options(args: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let Some(name) = k.strip_prefix("--") else {
            eprintln!("bench_dns: unexpected argument {k:?}");
            usage()
        };
        let Some(v) = it.next() else {
            eprintln!("bench_dns: {k} needs a value");
            usage()
        };
        out.insert(name.to_string(), v.clone());
    }
    out
}

fn need<'a>(o: &'a BTreeMap<String, String>, k: &str) -> &'a str {
    o.get(k).map(String::as_str).unwrap_or_else(|| {
        eprintln!("bench_dns: --{k} is required");
        usage()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let o = options(&args[1..]);
    let r = match cmd.as_str() {
        "sign" => sign(&o),
        "serve" => serve(&o),
        _ => usage(),
    };
    if let Err(e) = r {
        eprintln!("bench_dns {cmd}: {e}");
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------ sign

/// Standard base64.
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A DER length.
fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        let mut v = vec![0x80 | bytes.len() as u8];
        v.extend(bytes);
        v
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend(der_len(content.len()));
    v.extend_from_slice(content);
    v
}

/// SubjectPublicKeyInfo of an RSA public key given as PKCS#1 RSAPublicKey
/// DER (what ring returns): the form DKIM key records carry (RFC 6376
/// 3.6.1), which every verifier (mail-auth, OpenDKIM) reads.
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    let alg = der(
        0x30,
        &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
        ],
    );
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut seq = alg;
    seq.extend(der(0x03, &bits));
    der(0x30, &seq)
}

/// Words for a plausible business mail body.
const TEXT: &str = "Hello team, please find below the figures we discussed on Tuesday. \
The numbers for the northern region are slightly ahead of the plan, while the \
southern region is still catching up after the delays in the spring. We expect \
the remaining orders to ship before the end of the month, and the warehouse has \
confirmed that the new shelving will be installed next week. If anything in the \
summary looks wrong to you, reply to this message before Friday so that we can \
correct it before the board meeting. Thanks again for the careful work on the \
inventory count; it made the reconciliation much quicker than last time.";

fn body_text(bytes: usize) -> String {
    let words: Vec<&str> = TEXT.split_whitespace().collect();
    let mut out = String::new();
    let mut line = String::new();
    let mut i = 0;
    while out.len() + line.len() < bytes {
        let w = words[i % words.len()];
        i += 1;
        if line.len() + 1 + w.len() > 72 {
            out.push_str(&line);
            out.push('\n');
            line.clear();
            if i % 40 == 0 {
                out.push('\n'); // a paragraph break now and then
            }
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    out.push_str(&line);
    out.push('\n');
    out.push_str("\n-- \nSender Bench, Accounts\nclient.test\n");
    out
}

fn sign(o: &BTreeMap<String, String>) -> Result<(), String> {
    let domain = need(o, "domain");
    let selector = need(o, "selector");
    let from = need(o, "from");
    let to = need(o, "to");
    let size: usize = need(o, "size")
        .parse()
        .map_err(|e| format!("--size: {e}"))?;
    let key_path = need(o, "key");
    let der = PrivateKeyDer::from_pem_file(key_path).map_err(|e| format!("{key_path}: {e}"))?;
    let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| format!("{key_path}: {e}"))?;
    let record = format!("v=DKIM1; k=rsa; p={}", base64(&rsa_spki(&key.public_key())));

    // CRLF for signing (what goes on the wire); LF in the file.
    let head = format!(
        "From: Sender Bench <{from}>\r\nTo: <{to}>\r\nSubject: Quarterly report: figures for review\r\n\
         Date: Sun, 22 Nov 2026 08:00:00 +0000\r\nMessage-ID: <bench-auth-0001@{domain}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n"
    );
    // about 620 bytes of DKIM-Signature (2048-bit key, 8 signed headers)
    let body_bytes = size.saturating_sub(head.len() + 620).max(200);
    let body = body_text(body_bytes).replace('\n', "\r\n");
    let message = format!("{head}{body}");
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers([
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
        ])
        .sign(message.as_bytes())
        .map_err(|e| format!("signing: {e}"))?;
    let signed = format!("{}{message}", signature.to_header());
    if signed.lines().any(|l| l.starts_with('.')) {
        return Err("a line starts with '.'".into());
    }
    let file = signed.replace("\r\n", "\n");
    let out = need(o, "out");
    std::fs::write(out, &file).map_err(|e| format!("{out}: {e}"))?;
    let rout = need(o, "record-out");
    std::fs::write(rout, format!("{record}\n")).map_err(|e| format!("{rout}: {e}"))?;
    println!(
        "signed {out}: {} bytes on the wire (CRLF), d={domain} s={selector} rsa-sha256, key record {} bytes",
        signed.len(),
        record.len()
    );
    Ok(())
}

// ------------------------------------------------------------------ serve

fn fqdn(host: &str) -> Result<Name, String> {
    let text = if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    };
    Name::from_ascii(&text).map_err(|e| format!("bad DNS name {host:?}: {e}"))
}

fn txt(name: &str, text: &str) -> Result<Record, String> {
    // one TXT string per 255 bytes, as DNS requires
    let parts: Vec<String> = text
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Ok(Record::from_rdata(
        fqdn(name)?,
        TTL,
        RData::TXT(TXT::new(parts)),
    ))
}

fn soa(origin: &Name) -> Result<Record, String> {
    Ok(Record::from_rdata(
        origin.clone(),
        TTL,
        RData::SOA(SOA::new(
            fqdn("ns.test")?,
            fqdn("hostmaster.test")?,
            1,
            3600,
            600,
            86400,
            TTL,
        )),
    ))
}

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// The catalog, counting the queries.
struct Counting {
    catalog: Catalog,
    counts: Counts,
}

#[async_trait::async_trait]
impl RequestHandler for Counting {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        {
            let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            for q in request.queries.queries() {
                *c.entry(format!("{}/{}", q.name(), q.query_type()))
                    .or_default() += 1;
            }
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

fn report(counts: &Counts) {
    let c = counts.lock().unwrap_or_else(|e| e.into_inner());
    let total: u64 = c.values().sum();
    let mut line = format!("queries total={total}");
    for (k, v) in c.iter() {
        line.push_str(&format!(" {k}={v}"));
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

fn serve(o: &BTreeMap<String, String>) -> Result<(), String> {
    let port: u16 = need(o, "port")
        .parse()
        .map_err(|e| format!("--port: {e}"))?;
    let domain = need(o, "domain");
    let selector = need(o, "selector");
    let rfile = need(o, "record-file");
    let record = std::fs::read_to_string(rfile).map_err(|e| format!("{rfile}: {e}"))?;
    let record = record.trim();

    let mail = format!("mail.{domain}");
    let records = vec![
        txt(domain, "v=spf1 ip4:127.0.0.1 -all")?,
        Record::from_rdata(fqdn(domain)?, TTL, RData::MX(MX::new(10, fqdn(&mail)?))),
        Record::from_rdata(fqdn(domain)?, TTL, RData::A(A(Ipv4Addr::LOCALHOST))),
        Record::from_rdata(fqdn(&mail)?, TTL, RData::A(A(Ipv4Addr::LOCALHOST))),
        txt(&format!("{selector}._domainkey.{domain}"), record)?,
        txt(&format!("_dmarc.{domain}"), "v=DMARC1; p=reject")?,
        Record::from_rdata(
            fqdn("1.0.0.127.in-addr.arpa")?,
            TTL,
            RData::PTR(PTR(fqdn(&mail)?)),
        ),
    ];
    // one zone per top-level label, as tests/support/dns.rs
    let mut zones: BTreeMap<Name, Vec<Record>> = BTreeMap::new();
    for z in ["test.", "arpa."] {
        zones.insert(fqdn(z)?, Vec::new());
    }
    for r in records {
        let n = r.name.num_labels();
        let origin = if n <= 1 {
            r.name.clone()
        } else {
            r.name.trim_to(1)
        };
        zones.entry(origin).or_default().push(r);
    }
    let mut catalog = Catalog::new();
    for (origin, records) in zones {
        let mut z: InMemoryZoneHandler =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        z.upsert_mut(soa(&origin)?, 1);
        for r in records {
            z.upsert_mut(r, 1);
        }
        let z: Arc<dyn ZoneHandler> = Arc::new(z);
        catalog.upsert(LowerName::from(origin), vec![z]);
    }
    let counts: Counts = Arc::new(Mutex::new(BTreeMap::new()));
    let handler = Counting {
        catalog,
        counts: counts.clone(),
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| format!("UDP {addr}: {e}"))?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("TCP {addr}: {e}"))?;
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        println!("ready {addr}");
        let _ = std::io::stdout().flush();
        loop {
            tokio::select! {
                _ = usr1.recv() => report(&counts),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        report(&counts);
        let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown_gracefully()).await;
        Ok::<(), String>(())
    })
}
