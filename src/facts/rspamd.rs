//! The `[rspamd]` client: a message and its envelope go to rspamd's normal
//! worker, its score and symbols come back.
//!
//! One HTTP/1.1 connection per message (hyper's connection-level client over
//! a tokio `TcpStream`): `POST {path}/checkv2` with the envelope in rspamd's
//! request headers (`IP`, `Helo`, `Hostname` when known, `From` unless the
//! return path is `<>`, one `Rcpt` per recipient, `Queue-Id`) and the raw
//! message as the body. The answer is JSON: `score`, `required_score`,
//! `action` and `symbols` (name -> `{score, ...}`); rspamd's own action is
//! only logged, mxguard decides with the score. A message larger than
//! `max_size` is not sent, and `timeout` bounds the whole exchange: name
//! lookup, connection, request and answer.
//!
//! # Security
//! The header values come from the SMTP client (HELO, addresses): every
//! control character in them is replaced by a space, so none can end a
//! header line and add headers of its own. Everything from the socket is
//! untrusted: the answer's body is read up to [`MAX_ANSWER`] only, hyper
//! bounds the status line and headers, the JSON must have a finite numeric
//! `score`, and the names that reach the log (action, symbols) are cleaned
//! of control characters and shortened.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request as HttpRequest, StatusCode};
use hyper_util::rt::TokioIo;
use mxguard_config::RspamdConfig;
use tokio::net::TcpStream;

/// The largest answer body read from rspamd (a real one is a few KiB).
pub const MAX_ANSWER: usize = 1024 * 1024;
/// Symbols kept in an [`Answer`].
const MAX_SYMBOLS: usize = 30;
/// The longest symbol name kept (rspamd's are short upper-case words).
const MAX_SYMBOL_LEN: usize = 128;
/// The longest action text kept.
const MAX_ACTION_LEN: usize = 64;
/// How much of an error answer's body goes into [`RspamdError::Http`].
const ERROR_BODY_CHARS: usize = 200;

/// What rspamd is told besides the message.
pub struct Request<'a> {
    pub client_ip: IpAddr,
    pub helo: &'a str,
    /// The client's verified reverse DNS name, if any.
    pub hostname: Option<&'a str>,
    /// MAIL FROM, "" for <>.
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub queue_id: &'a str,
}

/// rspamd's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub score: f64,
    pub required_score: Option<f64>,
    /// rspamd's own action ("no action", "add header", "reject", ...), for the log only.
    pub action: String,
    /// Symbols with a non-zero score, largest |score| first (ties by name), at most 30.
    pub symbols: Vec<(String, f64)>,
}

/// Why rspamd gave no score.
#[derive(Debug, thiserror::Error)]
pub enum RspamdError {
    /// No connection to any address of `host:port` (or the name did not
    /// resolve, or the request could not be built from the URL).
    #[error("rspamd at {addr}: cannot connect: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The whole exchange took longer than `rspamd.timeout`.
    #[error("rspamd gave no answer within {timeout:?}")]
    Timeout { timeout: Duration },
    /// An HTTP status other than 200.
    #[error("rspamd answered HTTP {status}: {body}")]
    Http {
        status: u16,
        /// The start of the answer's body, control characters replaced.
        body: String,
    },
    /// The HTTP exchange failed, or the answer is not rspamd's JSON.
    #[error("rspamd's answer not understood: {0}")]
    BadAnswer(String),
    /// The message is larger than `rspamd.max_size`: not sent.
    #[error("message of {size} bytes not sent to rspamd (max_size {max} bytes)")]
    TooLarge { size: u64, max: u64 },
}

/// POSTs `message` to {cfg.path}/checkv2 on cfg.host:cfg.port within cfg.timeout (connect+send+answer together).
pub async fn check(
    cfg: &RspamdConfig,
    req: &Request<'_>,
    message: &[u8],
) -> Result<Answer, RspamdError> {
    let size = u64::try_from(message.len()).unwrap_or(u64::MAX);
    if size > cfg.max_size {
        return Err(RspamdError::TooLarge {
            size,
            max: cfg.max_size,
        });
    }
    match tokio::time::timeout(cfg.timeout, exchange(cfg, req, message)).await {
        Ok(result) => result,
        Err(_) => Err(RspamdError::Timeout {
            timeout: cfg.timeout,
        }),
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(cfg: &RspamdConfig) -> String {
    if cfg.host.contains(':') {
        format!("[{}]:{}", cfg.host, cfg.port)
    } else {
        format!("{}:{}", cfg.host, cfg.port)
    }
}

/// Connection, request and answer, without the time limit.
async fn exchange(
    cfg: &RspamdConfig,
    req: &Request<'_>,
    message: &[u8],
) -> Result<Answer, RspamdError> {
    let addr = authority(cfg);
    let request = build_request(cfg, &addr, req, message).map_err(|e| RspamdError::Connect {
        addr: addr.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    let stream = connect(&cfg.host, cfg.port)
        .await
        .map_err(|source| RspamdError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        // rspamd reads its headers without regard to case; this spells
        // them as its documentation does ("Queue-Id", "Rcpt").
        .title_case_headers(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| RspamdError::BadAnswer(format!("HTTP handshake: {e}")))?;
    // Everything here is dropped at the caller's timeout.
    let talk = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| RspamdError::BadAnswer(format!("no HTTP answer: {e}")))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes());
        if status != StatusCode::OK {
            let text = match &body {
                Ok(b) => clean(&String::from_utf8_lossy(b), ERROR_BODY_CHARS),
                Err(e) => format!("(body unreadable: {e})"),
            };
            return Err(RspamdError::Http {
                status: status.as_u16(),
                body: text,
            });
        }
        let body = body.map_err(|e| {
            RspamdError::BadAnswer(format!("answer body (at most {MAX_ANSWER} bytes): {e}"))
        })?;
        parse_answer(&body)
    };
    // The connection is driven while the answer is read, and dropped (the
    // socket closed) as soon as the answer is in; if it ends first, what
    // it read is still in the answer's channel.
    let mut talk = std::pin::pin!(talk);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        biased;
        answer = &mut talk => answer,
        _ = &mut conn => talk.await,
    }
}

/// The first address of `host:port` that accepts a connection.
async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let many = addrs.len() > 1;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                // The request goes out whole; no reason to wait on Nagle.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if many => last = io::Error::new(e.kind(), format!("{a}: {e}")),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The `/checkv2` request with the envelope in rspamd's headers.
fn build_request(
    cfg: &RspamdConfig,
    authority: &str,
    req: &Request<'_>,
    message: &[u8],
) -> Result<HttpRequest<Full<Bytes>>, hyper::http::Error> {
    let mut b = HttpRequest::builder()
        .method(Method::POST)
        .uri(format!("{}/checkv2", cfg.path))
        .header(header::HOST, header_value(authority))
        .header(header::CONTENT_LENGTH, message.len())
        .header(header::CONNECTION, "close")
        .header(HeaderName::from_static("ip"), req.client_ip.to_string());
    if !req.helo.is_empty() {
        b = b.header(HeaderName::from_static("helo"), header_value(req.helo));
    }
    if let Some(h) = req.hostname.filter(|h| !h.is_empty()) {
        b = b.header(HeaderName::from_static("hostname"), header_value(h));
    }
    if !req.sender.is_empty() {
        b = b.header(HeaderName::from_static("from"), header_value(req.sender));
    }
    for r in req.recipients {
        b = b.header(HeaderName::from_static("rcpt"), header_value(r));
    }
    if !req.queue_id.is_empty() {
        b = b.header(
            HeaderName::from_static("queue-id"),
            header_value(req.queue_id),
        );
    }
    b.body(Full::new(Bytes::copy_from_slice(message)))
}

/// A header value from client text: control characters (CR and LF among
/// them) become spaces, the ends are trimmed. Non-ASCII bytes (SMTPUTF8)
/// are kept: HTTP allows them as opaque octets.
fn header_value(text: &str) -> HeaderValue {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // Only control bytes (all replaced above) are refused by from_bytes.
    HeaderValue::from_bytes(cleaned.trim().as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Text from rspamd made fit for a log line: control characters replaced,
/// at most `max` characters.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The JSON answer of `/checkv2`.
fn parse_answer(body: &[u8]) -> Result<Answer, RspamdError> {
    let bad = |why: String| RspamdError::BadAnswer(why);
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let score = obj
        .get("score")
        .and_then(serde_json::Value::as_f64)
        .filter(|s| s.is_finite())
        .ok_or_else(
            || match obj.get("error").and_then(serde_json::Value::as_str) {
                Some(e) => bad(format!("no score, error {:?}", clean(e, ERROR_BODY_CHARS))),
                None => bad("no numeric score".into()),
            },
        )?;
    let required_score = obj
        .get("required_score")
        .and_then(serde_json::Value::as_f64)
        .filter(|s| s.is_finite());
    let action = obj
        .get("action")
        .and_then(serde_json::Value::as_str)
        .map(|a| clean(a, MAX_ACTION_LEN))
        .unwrap_or_default();
    let mut symbols: Vec<(String, f64)> = match obj.get("symbols") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .filter_map(|(name, sym)| {
                let s = sym.get("score")?.as_f64()?;
                (s.is_finite() && s != 0.0).then(|| (clean(name, MAX_SYMBOL_LEN), s))
            })
            .collect(),
        Some(_) => return Err(bad("\"symbols\" is not an object".into())),
    };
    symbols.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then_with(|| a.0.cmp(&b.0)));
    symbols.truncate(MAX_SYMBOLS);
    Ok(Answer {
        score,
        required_score,
        action,
        symbols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    /// A real rspamd 3.4 (Debian bookworm, stock rules, no Redis, no
    /// network) answering /checkv2 for a short plain-text message with
    /// `IP: 192.0.2.10`, `Helo: mail.example.org`, `From:
    /// alice@example.org`, `Rcpt: bob@example.net`. The DNS checks failed
    /// (no network), hence the HFILTER_* and RDNS_NONE symbols.
    const RECORDED_ANSWER: &str = concat!(
        r#"{"is_skipped":false,"score":7.300000,"required_score":15.0,"action":"add header","symbols":{"ARC_NA":{"name":"ARC_NA","score":0.0,"metric_score":0.0,"description":"ARC signature absent"},"#,
        r#""RDNS_NONE":{"name":"RDNS_NONE","score":1.0,"metric_score":1.0,"description":"Cannot resolve reverse DNS for sender's IP"},"#,
        r#""FROM_HAS_DN":{"name":"FROM_HAS_DN","score":0.0,"metric_score":0.0,"description":"From header has a display name"},"#,
        r#""TO_MATCH_ENVRCPT_ALL":{"name":"TO_MATCH_ENVRCPT_ALL","score":0.0,"metric_score":0.0,"description":"All of the recipients match the envelope"},"#,
        r#""MIME_GOOD":{"name":"MIME_GOOD","score":-0.100000,"metric_score":-0.100000,"description":"Known content-type","options":["text/plain"]},"#,
        r#""HFILTER_HELO_IP_A":{"name":"HFILTER_HELO_IP_A","score":1.0,"metric_score":1.0,"description":"Helo A IP != hostname IP","options":["mail.example.org"]},"#,
        r#""HFILTER_HELO_NORES_A_OR_MX":{"name":"HFILTER_HELO_NORES_A_OR_MX","score":0.300000,"metric_score":0.300000,"description":"Helo no resolve to A or MX","options":["mail.example.org"]},"#,
        r#""AUTH_NA":{"name":"AUTH_NA","score":1.0,"metric_score":1.0,"description":"Authenticating message via SPF/DKIM/DMARC/ARC not available"},"#,
        r#""RCPT_COUNT_ONE":{"name":"RCPT_COUNT_ONE","score":0.0,"metric_score":0.0,"description":"One recipient","options":["1"]},"#,
        r#""DMARC_NA":{"name":"DMARC_NA","score":0.0,"metric_score":0.0,"description":"No DMARC record","options":["example.org"]},"#,
        r#""TO_DN_ALL":{"name":"TO_DN_ALL","score":0.0,"metric_score":0.0,"description":"All the recipients have display names"},"#,
        r#""R_SPF_NA":{"name":"R_SPF_NA","score":0.0,"metric_score":0.0,"description":"Missing SPF record","options":["no SPF record"]},"#,
        r#""RCVD_COUNT_ZERO":{"name":"RCVD_COUNT_ZERO","score":0.0,"metric_score":0.0,"description":"Message has no Received headers","options":["0"]},"#,
        r#""FROM_EQ_ENVFROM":{"name":"FROM_EQ_ENVFROM","score":0.0,"metric_score":0.0,"description":"From address is the same as the envelope"},"#,
        r#""R_DKIM_NA":{"name":"R_DKIM_NA","score":0.0,"metric_score":0.0,"description":"Missing DKIM signature"},"#,
        r#""MIME_TRACE":{"name":"MIME_TRACE","score":0.0,"metric_score":0.0,"options":["0:+"]},"#,
        r#""HFILTER_FROMHOST_NORES_A_OR_MX":{"name":"HFILTER_FROMHOST_NORES_A_OR_MX","score":1.500000,"metric_score":1.500000,"description":"FROM host no resolve to A or MX","options":["example.org"]},"#,
        r#""HFILTER_HOSTNAME_UNKNOWN":{"name":"HFILTER_HOSTNAME_UNKNOWN","score":2.500000,"metric_score":2.500000,"description":"Unknown client hostname (PTR or FCrDNS verification failed)"},"#,
        r#""MID_RHS_MATCH_FROM":{"name":"MID_RHS_MATCH_FROM","score":0.0,"metric_score":0.0,"description":"Message-ID RHS matches From domain"},"#,
        r#""ONCE_RECEIVED":{"name":"ONCE_RECEIVED","score":0.100000,"metric_score":0.100000,"description":"One received header in a message"}},"messages":{},"message-id":"lunch.1@example.org","time_real":0.013226,"milter":{"remove_headers":{"X-Spam":0}}}"#,
    );

    /// The same rspamd's answer to a GTUBE message: a pre-result
    /// (`is_skipped`), the score set to the reject threshold and the GTUBE
    /// symbol itself scored 0.
    const RECORDED_GTUBE_ANSWER: &str = r#"{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0}},"messages":{"smtp_message":"Gtube pattern"},"message-id":"gtube1@example.org","time_real":0.174111}"#;

    /// One request as the fake server read it.
    #[derive(Debug)]
    struct Seen {
        /// "POST /checkv2 HTTP/1.1"
        request_line: String,
        /// (lower-cased name, value), in order.
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn all(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        }

        fn one(&self, name: &str) -> Option<&str> {
            let all = self.all(name);
            assert!(all.len() <= 1, "{name} sent {} times: {all:?}", all.len());
            all.first().copied()
        }
    }

    /// Reads one HTTP request (headers, then Content-Length bytes).
    async fn read_request(sock: &mut tokio::net::TcpStream) -> Seen {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = sock.read(&mut chunk).await.expect("read the request");
            assert!(n > 0, "connection closed inside the request head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).expect("an ASCII head");
        let mut lines = head.split("\r\n");
        let request_line = lines.next().expect("a request line").to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("name: value");
                (n.to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().expect("a numeric Content-Length"))
            .expect("a Content-Length");
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < len {
            let n = sock.read(&mut chunk).await.expect("read the body");
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        Seen {
            request_line,
            headers,
            body,
        }
    }

    /// A one-request HTTP server on 127.0.0.1: answers `status` with
    /// `body` and hands over what it read.
    async fn fake_rspamd(status: &'static str, body: String) -> (u16, oneshot::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let seen = read_request(&mut sock).await;
            let answer = format!(
                "HTTP/1.1 {status}\r\nConnection: close\r\nServer: rspamd/3.4\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            // The client may stop reading early (an answer too long).
            let _ = sock.write_all(answer.as_bytes()).await;
            let _ = sock.shutdown().await;
            let _ = tx.send(seen);
        });
        (port, rx)
    }

    fn config(port: u16) -> RspamdConfig {
        RspamdConfig {
            url: format!("http://127.0.0.1:{port}"),
            host: "127.0.0.1".into(),
            port,
            path: String::new(),
            timeout: Duration::from_secs(5),
            max_size: 2 * 1024 * 1024,
        }
    }

    const MESSAGE: &[u8] =
        b"From: <alice@example.org>\r\nTo: <bob@example.net>\r\nSubject: hi\r\n\r\nHello.\r\n";

    fn recipients() -> Vec<String> {
        vec!["bob@example.net".into(), "carol@example.net".into()]
    }

    fn request(recipients: &[String]) -> Request<'_> {
        Request {
            client_ip: "192.0.2.10".parse().expect("an IP"),
            helo: "mail.example.org",
            hostname: Some("mail.example.org"),
            sender: "alice@example.org",
            recipients,
            queue_id: "Q1234",
        }
    }

    #[tokio::test]
    async fn recorded_answer_parses_to_score_and_symbols() {
        let (port, _rx) = fake_rspamd("200 OK", RECORDED_ANSWER.into()).await;
        let rcpts = recipients();
        let a = check(&config(port), &request(&rcpts), MESSAGE)
            .await
            .expect("an answer");
        let sym = |n: &str, s: f64| (n.to_string(), s);
        assert_eq!(
            a,
            Answer {
                score: 7.3,
                required_score: Some(15.0),
                action: "add header".into(),
                symbols: vec![
                    sym("HFILTER_HOSTNAME_UNKNOWN", 2.5),
                    sym("HFILTER_FROMHOST_NORES_A_OR_MX", 1.5),
                    sym("AUTH_NA", 1.0),
                    sym("HFILTER_HELO_IP_A", 1.0),
                    sym("RDNS_NONE", 1.0),
                    sym("HFILTER_HELO_NORES_A_OR_MX", 0.3),
                    sym("MIME_GOOD", -0.1),
                    sym("ONCE_RECEIVED", 0.1),
                ],
            }
        );
    }

    #[tokio::test]
    async fn recorded_gtube_answer_is_a_reject_without_scored_symbols() {
        let (port, _rx) = fake_rspamd("200 OK", RECORDED_GTUBE_ANSWER.into()).await;
        let rcpts = recipients();
        let a = check(&config(port), &request(&rcpts), MESSAGE)
            .await
            .expect("an answer");
        assert_eq!(a.score, 15.0);
        assert_eq!(a.required_score, Some(15.0));
        assert_eq!(a.action, "reject");
        assert!(a.symbols.is_empty(), "{:?}", a.symbols);
    }

    #[tokio::test]
    async fn symbols_are_capped_at_30_largest_first() {
        let mut syms = Vec::new();
        for i in 0..40 {
            syms.push(format!(
                r#""S{i:02}":{{"name":"S{i:02}","score":{}}}"#,
                f64::from(i) - 20.0
            ));
        }
        let body = format!(
            r#"{{"score":1.0,"action":"no action","symbols":{{{}}}}}"#,
            syms.join(",")
        );
        let (port, _rx) = fake_rspamd("200 OK", body).await;
        let rcpts = recipients();
        let a = check(&config(port), &request(&rcpts), MESSAGE)
            .await
            .expect("an answer");
        assert_eq!(a.required_score, None);
        assert_eq!(a.symbols.len(), 30);
        // -20 (S00) first, then 19 (S39), then the ±19... ties by name.
        assert_eq!(a.symbols[0], ("S00".to_string(), -20.0));
        assert_eq!(a.symbols[1], ("S01".to_string(), -19.0));
        assert_eq!(a.symbols[2], ("S39".to_string(), 19.0));
        assert!(a.symbols.iter().all(|(n, _)| n != "S20"), "zero score kept");
        assert!(
            a.symbols.windows(2).all(|w| w[0].1.abs() >= w[1].1.abs()),
            "{:?}",
            a.symbols
        );
    }

    #[tokio::test]
    async fn request_carries_the_envelope_headers_and_the_message() {
        let (port, rx) = fake_rspamd("200 OK", RECORDED_ANSWER.into()).await;
        let rcpts = recipients();
        check(&config(port), &request(&rcpts), MESSAGE)
            .await
            .expect("an answer");
        let seen = rx.await.expect("the fake saw a request");
        assert_eq!(seen.request_line, "POST /checkv2 HTTP/1.1");
        assert_eq!(seen.one("ip"), Some("192.0.2.10"));
        assert_eq!(seen.one("helo"), Some("mail.example.org"));
        assert_eq!(seen.one("hostname"), Some("mail.example.org"));
        assert_eq!(seen.one("from"), Some("alice@example.org"));
        assert_eq!(seen.all("rcpt"), ["bob@example.net", "carol@example.net"]);
        assert_eq!(seen.one("queue-id"), Some("Q1234"));
        assert_eq!(
            seen.one("content-length"),
            Some(MESSAGE.len().to_string().as_str())
        );
        assert_eq!(seen.one("host"), Some(format!("127.0.0.1:{port}").as_str()));
        assert_eq!(seen.body, MESSAGE);
    }

    #[tokio::test]
    async fn null_sender_and_unknown_hostname_are_left_out_and_the_path_prefix_kept() {
        let (port, rx) = fake_rspamd("200 OK", RECORDED_ANSWER.into()).await;
        let mut cfg = config(port);
        cfg.path = "/rspamd".into();
        let rcpts = vec!["bob@example.net".to_string()];
        let req = Request {
            client_ip: "2001:db8::25".parse().expect("an IP"),
            hostname: None,
            sender: "",
            ..request(&rcpts)
        };
        check(&cfg, &req, MESSAGE).await.expect("an answer");
        let seen = rx.await.expect("the fake saw a request");
        assert_eq!(seen.request_line, "POST /rspamd/checkv2 HTTP/1.1");
        assert_eq!(seen.one("ip"), Some("2001:db8::25"));
        assert_eq!(seen.one("from"), None);
        assert_eq!(seen.one("hostname"), None);
        assert_eq!(seen.all("rcpt"), ["bob@example.net"]);
    }

    #[tokio::test]
    async fn crlf_in_client_text_cannot_add_headers() {
        let (port, rx) = fake_rspamd("200 OK", RECORDED_ANSWER.into()).await;
        let rcpts = vec!["bob@example.net\r\nX-Rcpt-Injected: 1".to_string()];
        let req = Request {
            helo: "evil\r\nX-Injected: yes\r\n\r\nGET / HTTP/1.1",
            sender: "a@b\nX-From-Injected: 1",
            queue_id: "Q\0\x7f1",
            ..request(&rcpts)
        };
        check(&config(port), &req, MESSAGE)
            .await
            .expect("an answer");
        let seen = rx.await.expect("the fake saw a request");
        assert!(
            !seen.headers.iter().any(|(n, _)| n.contains("injected")),
            "{:?}",
            seen.headers
        );
        assert_eq!(
            seen.one("helo"),
            Some("evil  X-Injected: yes    GET / HTTP/1.1")
        );
        assert_eq!(seen.one("from"), Some("a@b X-From-Injected: 1"));
        assert_eq!(seen.all("rcpt"), ["bob@example.net  X-Rcpt-Injected: 1"]);
        assert_eq!(seen.one("queue-id"), Some("Q  1"));
        assert_eq!(seen.body, MESSAGE);
    }

    #[tokio::test]
    async fn rspamd_down_is_a_connect_error_at_once() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("address").port()
        };
        let rcpts = recipients();
        let started = Instant::now();
        let err = check(&config(port), &request(&rcpts), MESSAGE)
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(&err, RspamdError::Connect { addr, source }
                if *addr == format!("127.0.0.1:{port}")
                    && source.kind() == io::ErrorKind::ConnectionRefused),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("rspamd at 127.0.0.1:{port}: cannot connect: "))
                && text.to_lowercase().contains("refused"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn silent_server_is_a_timeout_within_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        // Accepts, reads everything, never answers.
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        let mut cfg = config(port);
        cfg.timeout = Duration::from_millis(300);
        let rcpts = recipients();
        let started = Instant::now();
        let err = check(&cfg, &request(&rcpts), MESSAGE)
            .await
            .expect_err("no answer");
        let took = started.elapsed();
        assert!(
            matches!(err, RspamdError::Timeout { timeout } if timeout == cfg.timeout),
            "{err:?}"
        );
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(err.to_string(), "rspamd gave no answer within 300ms");
    }

    #[tokio::test]
    async fn answer_on_a_connection_kept_open_is_taken_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        // Answers (keep-alive, no Connection: close), then holds the socket.
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            read_request(&mut sock).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{RECORDED_ANSWER}",
                RECORDED_ANSWER.len()
            );
            let _ = sock.write_all(answer.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let mut cfg = config(port);
        cfg.timeout = Duration::from_secs(3);
        let rcpts = recipients();
        let started = Instant::now();
        let a = check(&cfg, &request(&rcpts), MESSAGE)
            .await
            .expect("an answer");
        assert_eq!(a.score, 7.3);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn http_500_is_an_http_error_with_the_body() {
        let body = r#"{"error":"invalid command","error_domain":"protocol-error"}"#;
        let (port, _rx) = fake_rspamd("500 invalid command", body.into()).await;
        let rcpts = recipients();
        let err = check(&config(port), &request(&rcpts), MESSAGE)
            .await
            .expect_err("HTTP 500");
        match &err {
            RspamdError::Http { status, body: b } => {
                assert_eq!(*status, 500);
                assert_eq!(b, body);
            }
            other => panic!("expected Http, got {other:?}"),
        }
        assert!(
            err.to_string().starts_with("rspamd answered HTTP 500: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn long_error_body_is_cut_and_cleaned() {
        let body = format!("line one\r\nline two{}", "x".repeat(1000));
        let (port, _rx) = fake_rspamd("503 Service Unavailable", body).await;
        let rcpts = recipients();
        let err = check(&config(port), &request(&rcpts), MESSAGE)
            .await
            .expect_err("HTTP 503");
        match err {
            RspamdError::Http { status, body } => {
                assert_eq!(status, 503);
                assert_eq!(body.chars().count(), 200);
                assert!(body.starts_with("line one  line two"), "{body}");
            }
            other => panic!("expected Http, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_answers_are_bad_answers() {
        for body in [
            r#"{"score":5.2,"symbols":{"#.to_string(),
            "pong".to_string(),
            r#"["score",1]"#.to_string(),
            r#"{"action":"no action","symbols":{}}"#.to_string(),
            r#"{"score":"5.2"}"#.to_string(),
            r#"{"score":1.0,"symbols":[1,2]}"#.to_string(),
        ] {
            let (port, _rx) = fake_rspamd("200 OK", body.clone()).await;
            let rcpts = recipients();
            let err = check(&config(port), &request(&rcpts), MESSAGE)
                .await
                .expect_err("a bad answer");
            assert!(matches!(err, RspamdError::BadAnswer(_)), "{body}: {err:?}");
        }
    }

    #[tokio::test]
    async fn answer_larger_than_the_bound_is_refused() {
        let body = format!(r#"{{"score":1.0,"pad":"{}"}}"#, "x".repeat(MAX_ANSWER));
        let (port, _rx) = fake_rspamd("200 OK", body).await;
        let rcpts = recipients();
        let err = check(&config(port), &request(&rcpts), MESSAGE)
            .await
            .expect_err("too long an answer");
        assert!(matches!(err, RspamdError::BadAnswer(_)), "{err:?}");
    }

    #[tokio::test]
    async fn too_large_message_is_not_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let mut cfg = config(port);
        cfg.max_size = 10;
        let rcpts = recipients();
        let err = check(&cfg, &request(&rcpts), MESSAGE)
            .await
            .expect_err("too large");
        assert!(
            matches!(err, RspamdError::TooLarge { size, max: 10 } if size == MESSAGE.len() as u64),
            "{err:?}"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(100), listener.accept())
                .await
                .is_err(),
            "a connection was made"
        );
        // At exactly max_size it goes.
        let (port, _rx) = fake_rspamd("200 OK", RECORDED_ANSWER.into()).await;
        let mut cfg = config(port);
        cfg.max_size = MESSAGE.len() as u64;
        check(&cfg, &request(&rcpts), MESSAGE)
            .await
            .expect("an answer");
    }
}
