//! `[verify]`: SPF, DKIM and DMARC of inbound mail; `[dkim_sign]`.

use toml::Spanned;

use super::Cx;
use crate::raw;
use crate::{
    ConfigError, DkimKey, DkimKeyFormat, DkimMode, DkimSignConfig, DmarcMode, SpfMode, VerifyConfig,
};

const SPF_MODES: &str = "off, header, score, reject";
const DKIM_MODES: &str = "off, header, score";
const DMARC_MODES: &str = "off, header, enforce";

impl Cx<'_> {
    pub(super) fn verify(
        &self,
        raw: Option<Spanned<raw::RawVerify>>,
    ) -> Result<VerifyConfig, ConfigError> {
        let mut v = VerifyConfig::default();
        let Some(raw) = raw else { return Ok(v) };
        let raw = raw.into_inner();
        if let Some(s) = &raw.spf {
            v.spf = match s.get_ref().as_str() {
                "off" => SpfMode::Off,
                "header" => SpfMode::Header,
                "score" => SpfMode::Score,
                "reject" => SpfMode::Reject,
                other => return Err(self.mode_error(s, "verify.spf", SPF_MODES, other)),
            };
        }
        if let Some(s) = &raw.dkim {
            v.dkim = match s.get_ref().as_str() {
                "off" => DkimMode::Off,
                "header" => DkimMode::Header,
                "score" => DkimMode::Score,
                other => return Err(self.mode_error(s, "verify.dkim", DKIM_MODES, other)),
            };
        }
        if let Some(s) = &raw.dmarc {
            v.dmarc = match s.get_ref().as_str() {
                "off" => DmarcMode::Off,
                "header" => DmarcMode::Header,
                "enforce" => DmarcMode::Enforce,
                other => return Err(self.mode_error(s, "verify.dmarc", DMARC_MODES, other)),
            };
        }
        Ok(v)
    }

    fn mode_error(
        &self,
        value: &Spanned<String>,
        key: &str,
        modes: &str,
        got: &str,
    ) -> ConfigError {
        self.error(
            value.span(),
            key,
            format!("expected one of: {modes}, got {got:?}"),
        )
    }
}

/// PKCS#8 AlgorithmIdentifier OIDs (DER, with tag and length).
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

impl Cx<'_> {
    pub(super) fn dkim_sign(
        &self,
        raw: Option<Spanned<raw::RawDkimSign>>,
    ) -> Result<Option<DkimSignConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let span = raw.span();
        let raw = raw.into_inner();
        let required = |v: &Option<Spanned<String>>, key: &str, example: &str| {
            let Some(v) = v else {
                return Err(self.error(
                    span.clone(),
                    key,
                    format!("missing required key (like {example:?})"),
                ));
            };
            let text = v.get_ref().trim();
            let ok = !text.is_empty()
                && text.len() <= 253
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                && !text.starts_with('.')
                && !text.ends_with('.');
            if !ok {
                return Err(self.error(
                    v.span(),
                    key,
                    format!("expected a domain name (like {example:?}), got {text:?}"),
                ));
            }
            Ok(text.to_ascii_lowercase())
        };
        let domain = required(&raw.domain, "dkim_sign.domain", "example.test")?;
        let selector = required(&raw.selector, "dkim_sign.selector", "mx2026")?;
        let key_file = self.pem_file(
            raw.key.as_ref(),
            &span,
            "dkim_sign.key",
            "DKIM private key",
            "/etc/mxguard/dkim.key",
        )?;
        let key_span = raw.key.as_ref().map_or(span.clone(), |k| k.span());
        let key = std::fs::read(&key_file)
            .map_err(|e| e.to_string())
            .and_then(|pem| parse_key(&pem))
            .map_err(|m| {
                self.error(
                    key_span,
                    "dkim_sign.key",
                    format!("{}: {m}", key_file.display()),
                )
            })?;
        Ok(Some(DkimSignConfig {
            domain,
            selector,
            key_file,
            key,
        }))
    }
}

/// A PEM private key: PKCS#1 RSA, or PKCS#8 RSA or Ed25519.
fn parse_key(pem: &[u8]) -> Result<DkimKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file (not text)".to_string())?;
    let (label, body) = pem_block(text).ok_or_else(|| {
        "no PEM private key found (expected \"-----BEGIN PRIVATE KEY-----\" or \"-----BEGIN RSA PRIVATE KEY-----\")".to_string()
    })?;
    let der =
        base64_decode(&body).ok_or_else(|| "the PEM block is not valid base64".to_string())?;
    if der.first() != Some(&0x30) || der.len() < 16 {
        return Err("the PEM block is not a DER private key".into());
    }
    let format = match label {
        "RSA PRIVATE KEY" => DkimKeyFormat::RsaPkcs1,
        "PRIVATE KEY" => {
            let head = &der[..der.len().min(32)];
            if contains(head, OID_ED25519) {
                DkimKeyFormat::Ed25519Pkcs8
            } else if contains(head, OID_RSA) {
                DkimKeyFormat::RsaPkcs8
            } else {
                return Err("a PKCS#8 key that is neither RSA nor Ed25519".into());
            }
        }
        other => {
            return Err(format!(
                "a {other:?} PEM block: expected an RSA or Ed25519 private key"
            ));
        }
    };
    Ok(DkimKey { format, der })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The label and base64 text of the first private key block.
fn pem_block(text: &str) -> Option<(&str, String)> {
    let mut lines = text.lines().map(str::trim);
    for line in lines.by_ref() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        if !label.ends_with("PRIVATE KEY") {
            continue;
        }
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        for line in lines.by_ref() {
            if line == end {
                return Some((label, body));
            }
            body.push_str(line);
        }
        return None;
    }
    None
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
