//! `[verify]`: sender authentication of inbound mail at the end of DATA,
//! before the 250: SPF of the MAIL FROM identity and of the HELO identity
//! (RFC 7208 §2.3; for `<>` the HELO identity alone), every DKIM
//! signature, and DMARC (alignment and the policy of the `From:` domain),
//! with mail-auth 0.13.
//!
//! The results go into an `Authentication-Results:` header (RFC 8601,
//! authserv-id = `server.hostname`) right after our `Received:`. What they
//! lead to depends on the modes:
//!
//! - `spf = "score"` adds [`SPF_FAIL`], [`SPF_SOFTFAIL`] or [`SPF_NONE`] to
//!   the message score for the MAIL FROM identity, and [`SPF_HELO_FAIL`]
//!   for a HELO name whose SPF record refuses the client; `spf =
//!   "reject"` refuses a MAIL FROM fail with 550 5.7.23
//!   (RFC 7372). A temporary error (temperror) is never refused: the
//!   message is accepted with `spf=temperror` in the header.
//! - `dkim = "score"` adds [`DKIM_FAIL`] when a signature fails and none
//!   passes, [`DKIM_NONE`] when the message is not signed.
//! - `dmarc = "enforce"`: a DMARC fail under `p=reject` is refused with
//!   550 5.7.1; under `p=quarantine` the message is accepted and flagged
//!   `X-Spam-Flag: YES`.
//!
//! Nothing here runs for authenticated sessions, whitelisted clients,
//! relay clients and POP-before-SMTP clients (their mail is ours), nor when
//! `[verify]` is absent (no DNS query, no header).
//!
//! [`sign`] does `[dkim_sign]`: the DKIM signature of our users' mail.
//!
//! DNS goes through mail-auth's own resolver (hickory 0.26, the version we
//! use too), built from `[dns]` like [`crate::facts::dns`] builds ours and
//! kept while `[dns]` does not change.
//!
//! # Security
//! The message is the client's. A spool file is read up to
//! [`super::content::READ_LIMIT`]; a larger message has its DKIM
//! signatures left unverified (`dkim=neutral`, DMARC then rests on SPF).
//! The parse and the checks run in a task of their own, bounded by a
//! deadline: a panic or a timeout lets the message through with
//! `Authentication-Results: <host>; none`, logged as an error. Values taken
//! from the message (domains) are cleaned before they reach a reply.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_auth::common::crypto::DkimKey;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::ResolverConfig;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfResult,
};
use mxguard_config::{
    Config, DkimKeyFormat, DkimMode, DkimSignConfig, DmarcMode, DnsConfig, SpfMode,
};
use mxguard_proto::Reply;
use mxguard_queue::Body;

/// Score of an SPF fail (`spf = "score"`).
pub(crate) const SPF_FAIL: f64 = 3.0;
/// Score of an SPF softfail.
pub(crate) const SPF_SOFTFAIL: f64 = 1.0;
/// Score of a domain without SPF record (none) or with a broken one
/// (permerror).
pub(crate) const SPF_NONE: f64 = 0.5;
/// Score of an SPF fail of the HELO name, when MAIL FROM is not `<>` (for
/// `<>` the HELO identity is the one of [`SPF_FAIL`]).
pub(crate) const SPF_HELO_FAIL: f64 = 1.0;
/// Score of a message whose DKIM signatures fail, none passing
/// (`dkim = "score"`).
pub(crate) const DKIM_FAIL: f64 = 2.0;
/// Score of a message without DKIM signature.
pub(crate) const DKIM_NONE: f64 = 0.5;

/// What the driver knows of the message.
pub(crate) struct Request<'a> {
    pub cfg: &'a Config,
    pub session: &'a str,
    pub queue_id: &'a str,
    pub client_ip: IpAddr,
    pub helo: &'a str,
    /// MAIL FROM, empty for `<>`.
    pub sender: &'a str,
    /// The client is one of ours (authenticated, whitelisted, relay or
    /// POP-before-SMTP client): not verified.
    pub trusted: bool,
    /// Where the client's content starts (after our `Received:`).
    pub content_start: usize,
}

/// What the checks add to the message score, and whether DMARC asks for
/// the message to be flagged.
#[derive(Default)]
pub(crate) struct AuthScore {
    pub score: f64,
    /// Names for the score's `tests=` list (`spf_fail`, `dkim_none`...).
    pub reasons: Vec<String>,
    /// DMARC quarantine: the message was flagged `X-Spam-Flag: YES`.
    pub flagged: bool,
}

pub(crate) enum Checked {
    /// Go on with this body (its headers added).
    Pass(Body, AuthScore),
    /// Refuse the message (logged; the spool file is removed).
    Refuse(Reply),
    /// The spool file could not be read or rewritten (a 451; removed).
    Failed(String),
}

/// The results of one message, owned.
struct Results {
    /// The Authentication-Results value, authserv-id first.
    header: String,
    spf: Option<SpfResult>,
    /// SPF of the HELO name, checked besides a MAIL FROM address.
    spf_helo: Option<SpfResult>,
    /// (a signature passed, a signature failed, signatures seen).
    dkim: Option<(bool, bool, usize)>,
    /// The result, the policy and the From domain.
    dmarc: Option<(DmarcResult, Policy, String)>,
}

/// Verifies the message of `req` when `[verify]` asks for it.
pub(crate) async fn check(req: Request<'_>, body: Body) -> Checked {
    let v = req.cfg.verify;
    if !v.is_active() || req.trusted {
        return Checked::Pass(body, AuthScore::default());
    }
    let start = req.content_start;
    let (body, message, complete) = match body {
        Body::Memory(m) => {
            let message = m.get(start..).unwrap_or_default().to_vec();
            (Body::Memory(m), message, true)
        }
        Body::File(path) => match super::content::read_head(&path, start).await {
            Ok(message) => {
                let complete = (message.len() as u64) < super::content::READ_LIMIT;
                (Body::File(path), message, complete)
            }
            Err(e) => {
                let why = format!("reading spool file {} for [verify]: {e}", path.display());
                let _ = tokio::fs::remove_file(&path).await;
                return Checked::Failed(why);
            }
        },
    };
    let hostname = req.cfg.server.hostname.clone();
    let results = match authenticator(&req.cfg.dns) {
        Ok(auth) => {
            let task = tokio::spawn(verify(
                auth,
                message,
                complete,
                v,
                hostname.clone(),
                req.client_ip,
                req.helo.to_string(),
                req.sender.to_string(),
            ));
            // SPF alone may take ten lookups; a bound well beyond that.
            let deadline = req.cfg.dns.timeout.saturating_mul(12) + Duration::from_secs(1);
            match tokio::time::timeout(deadline, task).await {
                Ok(Ok(r)) => Some(r),
                Ok(Err(e)) => {
                    tracing::error!(session = %req.session, client = %req.client_ip, queue_id = %req.queue_id,
                        check = "verify", error = %e, "sender authentication failed; accepted unverified");
                    None
                }
                Err(_) => {
                    tracing::error!(session = %req.session, client = %req.client_ip, queue_id = %req.queue_id,
                        check = "verify", "sender authentication timed out; accepted unverified");
                    None
                }
            }
        }
        Err(e) => {
            tracing::error!(session = %req.session, client = %req.client_ip, queue_id = %req.queue_id,
                check = "verify", error = %e, "no resolver for sender authentication; accepted unverified");
            None
        }
    };
    let Some(results) = results else {
        let headers = [(
            "Authentication-Results".to_string(),
            format!("{hostname}; none"),
        )];
        return match super::content::add_headers(body, start, &headers).await {
            Ok(body) => Checked::Pass(body, AuthScore::default()),
            Err(why) => Checked::Failed(why),
        };
    };
    let summary = summarize(&results);
    if let Some((reply, reason)) = refusal(&req, &results) {
        super::content::remove_spool(&body).await;
        tracing::info!(
            session = %req.session, client = %req.client_ip, helo = %req.helo, from = %req.sender,
            queue_id = %req.queue_id, check = "verify", results = %summary, reason = %reason, reply = %reply,
            "DATA refused (verify)"
        );
        return Checked::Refuse(reply);
    }
    let mut score = AuthScore::default();
    if v.spf == SpfMode::Score
        && let Some(spf) = &results.spf
    {
        let (points, name) = match spf {
            SpfResult::Fail => (SPF_FAIL, "spf_fail"),
            SpfResult::SoftFail => (SPF_SOFTFAIL, "spf_softfail"),
            SpfResult::None => (SPF_NONE, "spf_none"),
            SpfResult::PermError => (SPF_NONE, "spf_permerror"),
            _ => (0.0, ""),
        };
        if points > 0.0 {
            score.score += points;
            score.reasons.push(name.into());
        }
        if results.spf_helo == Some(SpfResult::Fail) {
            score.score += SPF_HELO_FAIL;
            score.reasons.push("spf_helo_fail".into());
        }
    }
    if v.dkim == DkimMode::Score
        && let Some((pass, fail, seen)) = results.dkim
    {
        if fail && !pass {
            score.score += DKIM_FAIL;
            score.reasons.push("dkim_fail".into());
        } else if seen == 0 {
            score.score += DKIM_NONE;
            score.reasons.push("dkim_none".into());
        }
    }
    let mut headers = vec![("Authentication-Results".to_string(), results.header.clone())];
    if v.dmarc == DmarcMode::Enforce
        && let Some((DmarcResult::Fail(_), Policy::Quarantine, domain)) = &results.dmarc
    {
        score.flagged = true;
        score.reasons.push("dmarc_quarantine".into());
        headers.push(("X-Spam-Flag".to_string(), "YES".to_string()));
        tracing::info!(session = %req.session, client = %req.client_ip, queue_id = %req.queue_id,
            check = "verify", domain = %clean_domain(domain), "DMARC quarantine: message flagged");
    }
    tracing::debug!(session = %req.session, queue_id = %req.queue_id, check = "verify",
        results = %summary, "sender authentication");
    match super::content::add_headers(body, start, &headers).await {
        Ok(body) => Checked::Pass(body, score),
        Err(why) => Checked::Failed(why),
    }
}

/// The refusal the results call for, with the reason for the log.
fn refusal(req: &Request<'_>, results: &Results) -> Option<(Reply, String)> {
    let v = req.cfg.verify;
    if v.spf == SpfMode::Reject && results.spf == Some(SpfResult::Fail) {
        let domain = clean_domain(spf_domain(req.sender, req.helo));
        return Some((
            Reply::fixed(
                550,
                5,
                7,
                23,
                &format!(
                    "SPF validation failed: {domain} does not allow this host to send its mail"
                ),
            ),
            "SPF fail (verify.spf = reject)".into(),
        ));
    }
    if v.dmarc == DmarcMode::Enforce
        && let Some((DmarcResult::Fail(_), Policy::Reject, domain)) = &results.dmarc
    {
        let domain = clean_domain(domain);
        return Some((
            Reply::fixed(
                550,
                5,
                7,
                1,
                &format!("Message refused by the DMARC policy of {domain} (p=reject)"),
            ),
            "DMARC fail under p=reject (verify.dmarc = enforce)".into(),
        ));
    }
    None
}

/// The domain SPF checks: the MAIL FROM domain, the HELO name for `<>`.
fn spf_domain<'a>(sender: &'a str, helo: &'a str) -> &'a str {
    sender.rsplit_once('@').map_or(helo, |(_, d)| d)
}

/// A domain from the message or the envelope, fit for a reply or a log.
fn clean_domain(domain: &str) -> String {
    let clean: String = domain
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(255)
        .collect();
    if clean.is_empty() {
        "the sender's domain".into()
    } else {
        clean
    }
}

/// One line for the log: `spf=fail dkim=pass dmarc=none`.
fn summarize(r: &Results) -> String {
    let mut out = Vec::new();
    if let Some(spf) = &r.spf {
        out.push(format!("spf={}", spf.to_string().to_lowercase()));
    }
    if let Some(spf) = &r.spf_helo {
        out.push(format!("spf_helo={}", spf.to_string().to_lowercase()));
    }
    if let Some((pass, fail, seen)) = r.dkim {
        let word = if pass {
            "pass"
        } else if fail {
            "fail"
        } else if seen == 0 {
            "none"
        } else {
            "other"
        };
        out.push(format!("dkim={word}"));
    }
    if let Some((result, policy, _)) = &r.dmarc {
        let word = match result {
            DmarcResult::Pass => "pass",
            DmarcResult::Fail(_) => "fail",
            DmarcResult::TempError(_) => "temperror",
            DmarcResult::PermError(_) => "permerror",
            DmarcResult::None => "none",
        };
        out.push(format!("dmarc={word}({policy:?})"));
    }
    out.join(" ")
}

/// The checks of one message (in a task of its own).
#[allow(clippy::too_many_arguments)]
async fn verify(
    auth: Arc<MessageAuthenticator>,
    message: Vec<u8>,
    complete: bool,
    v: mxguard_config::VerifyConfig,
    hostname: String,
    ip: IpAddr,
    helo: String,
    sender: String,
) -> Results {
    let mut header = hostname.clone();
    // SPF: MAIL FROM, or HELO for `<>`. DMARC needs it too. Besides a MAIL
    // FROM address, the HELO name on its own (a name, not an address
    // literal), at the same time.
    let main_spf = async {
        if v.spf != SpfMode::Off || v.dmarc != DmarcMode::Off {
            let params = if sender.is_empty() {
                SpfParameters::verify_ehlo(ip, &helo, &hostname)
            } else {
                SpfParameters::verify_mail_from(ip, &helo, &hostname, &sender)
            };
            Some(auth.verify_spf(params).await)
        } else {
            None
        }
    };
    let helo_is_name = helo.contains('.') && !helo.starts_with('[');
    let helo_spf = async {
        if v.spf != SpfMode::Off && !sender.is_empty() && helo_is_name {
            Some(
                auth.verify_spf(SpfParameters::verify_ehlo(ip, &helo, &hostname))
                    .await,
            )
        } else {
            None
        }
    };
    let (spf_output, helo_output) = tokio::join!(main_spf, helo_spf);
    let mut spf = None;
    if v.spf != SpfMode::Off
        && let Some(out) = &spf_output
    {
        // The result comment names the authserv-id: a part with our
        // hostname, which `part` strips again.
        let ar = AuthenticationResults::new(&hostname);
        let ar = if sender.is_empty() {
            ar.with_spf_ehlo_result(out, ip, &helo)
        } else {
            ar.with_spf_mailfrom_result(out, ip, &sender, &helo)
        };
        header.push_str(&part(&ar, &hostname));
        spf = Some(out.result());
    }
    let mut spf_helo = None;
    if let Some(out) = &helo_output {
        let ar = AuthenticationResults::new(&hostname).with_spf_ehlo_result(out, ip, &helo);
        header.push_str(&part(&ar, &hostname));
        spf_helo = Some(out.result());
    }
    let parsed = AuthenticatedMessage::parse(&message);
    let dkim_output = match (&parsed, complete) {
        (Some(m), true) if v.dkim != DkimMode::Off || v.dmarc != DmarcMode::Off => {
            auth.verify_dkim(m).await
        }
        _ => Vec::new(),
    };
    let mut dkim = None;
    if v.dkim != DkimMode::Off {
        if !complete {
            header.push_str(";\r\n\tdkim=neutral reason=\"too large to verify\"");
        } else if dkim_output.is_empty() {
            header.push_str(";\r\n\tdkim=none");
        } else {
            let ar = AuthenticationResults::new(&hostname).with_dkim_results(&dkim_output, "");
            header.push_str(&part(&ar, &hostname));
        }
        let pass = dkim_output.iter().any(|o| *o.result() == DkimResult::Pass);
        // mail-auth calls a body hash mismatch and an expired signature
        // neutral: no better than a fail for the score.
        let fail = dkim_output.iter().any(|o| {
            matches!(
                o.result(),
                DkimResult::Fail(_) | DkimResult::PermError(_) | DkimResult::Neutral(_)
            )
        });
        dkim = Some((pass, fail, dkim_output.len()));
    }
    let mut dmarc = None;
    if v.dmarc != DmarcMode::Off {
        match (&parsed, &spf_output) {
            (Some(m), Some(spf_out)) => {
                let domain = spf_domain(&sender, &helo);
                let out = auth
                    .verify_dmarc(DmarcParameters::new(m, &dkim_output, domain, spf_out))
                    .await;
                let ar = AuthenticationResults::new(&hostname).with_dmarc_result(&out);
                header.push_str(&part(&ar, &hostname));
                dmarc = Some((out.result(), out.policy(), out.domain().to_string()));
            }
            _ => header.push_str(";\r\n\tdmarc=none"),
        }
    }
    if header == hostname {
        header.push_str("; none");
    }
    Results {
        header,
        spf,
        spf_helo,
        dkim,
        dmarc,
    }
}

/// The results `ar` holds, without its authserv-id (`;\r\n\tspf=...`).
fn part(ar: &AuthenticationResults<'_>, hostname: &str) -> String {
    let text = ar.to_string();
    text.strip_prefix(hostname).unwrap_or(&text).to_string()
}

/// The authenticator of the current `[dns]` settings (built once, rebuilt
/// when a reload changes them).
fn authenticator(dns: &DnsConfig) -> Result<Arc<MessageAuthenticator>, String> {
    static CURRENT: Mutex<Option<(DnsConfig, Arc<MessageAuthenticator>)>> = Mutex::new(None);
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((cfg, auth)) = current.as_ref()
        && cfg == dns
    {
        return Ok(auth.clone());
    }
    let auth = Arc::new(build(dns).map_err(|e| e.to_string())?);
    *current = Some((dns.clone(), auth.clone()));
    Ok(auth)
}

/// mail-auth's resolver from `[dns]`: the listed servers (UDP, then TCP),
/// no hosts file, one attempt; or the system configuration.
fn build(
    dns: &DnsConfig,
) -> Result<MessageAuthenticator, mail_auth::hickory_resolver::net::NetError> {
    if dns.nameservers.is_empty() {
        let (config, mut opts) = mail_auth::hickory_resolver::system_conf::read_system_conf()?;
        opts.timeout = dns.timeout;
        return MessageAuthenticator::new(config, opts);
    }
    // The same servers and options as the server's own resolver.
    let servers = crate::facts::dns::nameserver_configs(dns);
    let opts = crate::facts::dns::configured_opts(dns);
    MessageAuthenticator::new(ResolverConfig::from_name_servers(servers), opts)
}

/// The headers a `[dkim_sign]` signature covers (those present are signed).
const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
];

/// `[dkim_sign]`: a DKIM-Signature (relaxed/relaxed, SHA-256) on top of the
/// client's content, when MAIL FROM or a `From:` address is in
/// `dkim_sign.domain`. Called for authenticated sessions only. A message
/// that cannot be signed (a key the crypto library refuses) goes unsigned,
/// logged as an error; an unreadable spool file is an error.
pub(crate) async fn sign(
    cfg: &Config,
    session: &str,
    queue_id: &str,
    sender: &str,
    content_start: usize,
    body: Body,
) -> Result<Body, String> {
    let Some(ds) = &cfg.dkim_sign else {
        return Ok(body);
    };
    let in_domain = |address: &str| {
        address
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.trim_end_matches('>').eq_ignore_ascii_case(&ds.domain))
    };
    // A message in memory is signed where it lies; a spool file is read.
    let read;
    let message: &[u8] = match &body {
        Body::Memory(m) => m.get(content_start..).unwrap_or_default(),
        Body::File(path) => match tokio::fs::read(path).await {
            Ok(all) => {
                read = all;
                read.get(content_start..).unwrap_or_default()
            }
            Err(e) => {
                let why = format!("reading spool file {} to sign it: {e}", path.display());
                let _ = tokio::fs::remove_file(path).await;
                return Err(why);
            }
        },
    };
    let from_ours =
        AuthenticatedMessage::parse(message).is_some_and(|m| m.from.iter().any(|a| in_domain(a)));
    if !in_domain(sender) && !from_ours {
        return Ok(body);
    }
    let signed = cached_key(ds).and_then(|k| signature(k, &ds.domain, &ds.selector, message));
    match signed {
        Ok(header) => {
            let value = header
                .strip_prefix("DKIM-Signature: ")
                .unwrap_or(&header)
                .trim_end_matches("\r\n")
                .to_string();
            tracing::debug!(session = %session, queue_id = %queue_id, domain = %ds.domain,
                "message DKIM-signed");
            super::content::add_headers(body, content_start, &[("DKIM-Signature".into(), value)])
                .await
        }
        Err(e) => {
            tracing::error!(session = %session, queue_id = %queue_id, check = "dkim_sign",
                key = %ds.key_file.display(), error = %e, "message not DKIM-signed");
            Ok(body)
        }
    }
}

/// The DKIM-Signature header (`DKIM-Signature: ...\r\n`) of `message`.
fn signature<T: mail_auth::common::crypto::SigningKey>(
    key: T,
    domain: &str,
    selector: &str,
    message: &[u8],
) -> mail_auth::Result<String> {
    use mail_auth::common::headers::HeaderWriter;
    let signature = mail_auth::dkim::DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .sign(message)?;
    Ok(signature.to_header())
}

/// The key of `[dkim_sign]`, parsed once and shared by every signature
/// (the signer takes its key by value).
#[derive(Clone)]
struct SharedKey(Arc<DkimKey>);

impl mail_auth::common::crypto::SigningKey for SharedKey {
    type Hasher = mail_auth::common::crypto::Sha256;

    fn sign(&self, input: impl mail_auth::common::headers::Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

/// The last key parsed, by its DER bytes (a reload may bring another).
static KEY_CACHE: Mutex<Option<(Vec<u8>, SharedKey)>> = Mutex::new(None);

fn cached_key(ds: &DkimSignConfig) -> mail_auth::Result<SharedKey> {
    let der = ds.key.der.as_slice();
    if let Ok(cache) = KEY_CACHE.lock()
        && let Some((cached, key)) = cache.as_ref()
        && cached.as_slice() == der
    {
        return Ok(key.clone());
    }
    let key = SharedKey(Arc::new(signing_key(ds)?));
    if let Ok(mut cache) = KEY_CACHE.lock() {
        *cache = Some((der.to_vec(), key.clone()));
    }
    Ok(key)
}

fn signing_key(ds: &DkimSignConfig) -> mail_auth::Result<DkimKey> {
    use mail_auth::common::crypto::{Ed25519Key, RsaKey};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};
    let der = ds.key.der.as_slice();
    Ok(match ds.key.format {
        DkimKeyFormat::Ed25519Pkcs8 => {
            DkimKey::Ed25519(Ed25519Key::from_pkcs8_maybe_unchecked_der(der)?)
        }
        DkimKeyFormat::RsaPkcs1 => DkimKey::Rsa(RsaKey::from_key_der(PrivateKeyDer::Pkcs1(
            PrivatePkcs1KeyDer::from(der),
        ))?),
        DkimKeyFormat::RsaPkcs8 => DkimKey::Rsa(RsaKey::from_key_der(PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(der),
        ))?),
    })
}

/// Whether the crypto library takes the key of `[dkim_sign]` (at start-up:
/// the configuration only checked its form).
pub(crate) fn check_key(ds: &DkimSignConfig) -> anyhow::Result<()> {
    signing_key(ds)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("dkim_sign.key {}: {e}", ds.key_file.display()))
}
