//! Header fields a client may not bring: those this server writes itself.
//!
//! - `X-Spam-Flag`, `X-Spam-Score` and `X-Spam-Status`, when `[scoring]` is
//!   active: a spammer's `X-Spam-Status: No, score=-5` must not sit next to
//!   ours (SpamAssassin removes them likewise).
//! - `Authentication-Results` bearing our own authserv-id
//!   (`server.hostname`), when `[verify]` is on: RFC 8601 §5 asks a border
//!   MTA to remove them, since a reader trusts that id.
//!
//! They are removed from the client's header section at the end of DATA,
//! before SPF/DKIM/DMARC and the rules (which so never see them), in memory
//! or by rewriting the spool file. Other fields are left byte for byte.

use std::ops::Range;
use std::path::Path;

use mxguard_config::Config;
use mxguard_queue::Body;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// The longest header section looked at in a spool file.
const MAX_HEAD: u64 = 256 * 1024;

const SPAM_FIELDS: [&str; 3] = ["X-Spam-Flag", "X-Spam-Score", "X-Spam-Status"];

/// What to remove for this configuration: the spam fields, and the
/// authserv-id whose results are ours. `None` when nothing is.
fn plan(cfg: &Config) -> Option<(bool, Option<&str>)> {
    let spam = cfg.scoring.active;
    let authserv = cfg
        .verify
        .is_active()
        .then_some(cfg.server.hostname.as_str());
    (spam || authserv.is_some()).then_some((spam, authserv))
}

/// The byte ranges of the fields to remove in `message` (the client's
/// content, starting with its header section), each with its
/// continuation lines and line end, in order. The header section ends at
/// the first empty line (or the end of `message`).
pub(crate) fn forged_fields(
    message: &[u8],
    spam: bool,
    authserv: Option<&str>,
) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut field: Option<(usize, bool)> = None; // (start, remove)
    loop {
        let end = message[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| at + i + 1);
        let line = &message[at..end];
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some((start, true)) = field.take() {
                out.push(start..at);
            }
            let blank = line.iter().all(|b| matches!(b, b'\r' | b'\n'));
            if blank || at >= message.len() {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                // Not a header field: the header section is over.
                break;
            };
            let name = String::from_utf8_lossy(&line[..colon]);
            let name = name.trim();
            let remove = (spam && SPAM_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name)))
                || (name.eq_ignore_ascii_case("Authentication-Results")
                    && authserv.is_some_and(|id| names_authserv(&message[at + colon + 1..], id)));
            field = Some((at, remove));
        }
        if end >= message.len() {
            if let Some((start, true)) = field.take() {
                out.push(start..end);
            }
            break;
        }
        at = end;
    }
    out
}

/// Whether an Authentication-Results value starts with the authserv-id
/// `id` (RFC 8601 §2.2: `authserv-id [version] ;`), comments aside.
fn names_authserv(value: &[u8], id: &str) -> bool {
    let text = String::from_utf8_lossy(&value[..value.len().min(1024)]);
    let mut rest = text.trim_start();
    // A leading comment: `(...)`.
    while let Some(after) = rest.strip_prefix('(') {
        rest = after.split_once(')').map_or("", |(_, r)| r).trim_start();
    }
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ';' && *c != '(')
        .collect();
    token.eq_ignore_ascii_case(id)
}

/// Removes the forged fields from the client's header section of `body`
/// (which starts at `start`, after our `Received:`). A spool file is
/// rewritten only when it holds one; an error removes it.
pub(crate) async fn strip(cfg: &Config, body: Body, start: usize) -> Result<Body, String> {
    let Some((spam, authserv)) = plan(cfg) else {
        return Ok(body);
    };
    match body {
        Body::Memory(mut m) => {
            let ranges = forged_fields(m.get(start..).unwrap_or_default(), spam, authserv);
            for r in ranges.iter().rev() {
                m.drain(start + r.start..start + r.end);
            }
            Ok(Body::Memory(m))
        }
        Body::File(path) => match strip_file(&path, start, spam, authserv).await {
            Ok(()) => Ok(Body::File(path)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                Err(format!(
                    "removing forged header fields from spool file {}: {e}",
                    path.display()
                ))
            }
        },
    }
}

async fn strip_file(
    path: &Path,
    start: usize,
    spam: bool,
    authserv: Option<&str>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    {
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(std::io::SeekFrom::Start(start as u64)).await?;
        file.take(MAX_HEAD).read_to_end(&mut head).await?;
    }
    let mut ranges = forged_fields(&head, spam, authserv);
    if head.len() as u64 == MAX_HEAD {
        // A field cut by the read limit is left whole.
        ranges.retain(|r| r.end < head.len());
    }
    if ranges.is_empty() {
        return Ok(());
    }
    super::content::rewrite_spool(path, ".strip", async |src, dst| {
        // Our trace, then the client's header section without the ranges.
        tokio::io::copy(&mut src.take(start as u64), dst).await?;
        let mut kept = 0;
        for r in &ranges {
            dst.write_all(&head[kept..r.start]).await?;
            kept = r.end;
        }
        dst.write_all(&head[kept..]).await?;
        // The rest, after what was read.
        src.seek(std::io::SeekFrom::Start(start as u64 + head.len() as u64))
            .await?;
        tokio::io::copy(src, dst).await?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripped(message: &str, spam: bool, authserv: Option<&str>) -> String {
        let mut out = message.as_bytes().to_vec();
        for r in forged_fields(message.as_bytes(), spam, authserv)
            .iter()
            .rev()
        {
            out.drain(r.clone());
        }
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn spam_fields_go_with_their_continuations() {
        let m = "From: a@b.test\r\nX-Spam-Status: No, score=-5\r\n\ttests=NONE\r\nx-spam-flag: NO\r\nSubject: hi\r\nX-Spam-Score:-9\r\n\r\nX-Spam-Flag: in the body stays\r\n";
        assert_eq!(
            stripped(m, true, None),
            "From: a@b.test\r\nSubject: hi\r\n\r\nX-Spam-Flag: in the body stays\r\n"
        );
        // Scoring off: nothing to remove.
        assert_eq!(stripped(m, false, None), m);
        // Other X-Spam-* fields stay.
        let m = "X-Spam-Level: ***\r\nX-Spam-Flag: YES\r\n\r\nb\r\n";
        assert_eq!(stripped(m, true, None), "X-Spam-Level: ***\r\n\r\nb\r\n");
    }

    #[test]
    fn only_our_own_authentication_results_go() {
        let m = "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=a@b.test\r\n\
                 Authentication-Results: other.test; dkim=pass\r\n\
                 Authentication-Results: (forged) MX.Example.Test 1;\r\n\tdmarc=pass\r\n\
                 Authentication-Results: mx.example.test.evil; none\r\n\
                 Subject: x\r\n\r\nbody\r\n";
        assert_eq!(
            stripped(m, false, Some("mx.example.test")),
            "Authentication-Results: other.test; dkim=pass\r\n\
             Authentication-Results: mx.example.test.evil; none\r\n\
             Subject: x\r\n\r\nbody\r\n"
        );
        assert_eq!(stripped(m, true, None), m);
    }

    #[test]
    fn odd_messages() {
        // No body, no final line end, a header section that ends with junk.
        assert_eq!(stripped("X-Spam-Flag: YES", true, None), "");
        assert_eq!(stripped("X-Spam-Flag: YES\r\n", true, None), "");
        assert_eq!(
            stripped(
                "Subject: a\r\nnot a header\r\nX-Spam-Flag: YES\r\n",
                true,
                None
            ),
            "Subject: a\r\nnot a header\r\nX-Spam-Flag: YES\r\n"
        );
        assert_eq!(stripped("", true, Some("a")), "");
        assert_eq!(
            stripped("\r\nX-Spam-Flag: YES\r\n", true, None),
            "\r\nX-Spam-Flag: YES\r\n"
        );
        // A bare-LF message (never accepted by the session, but no panic).
        assert_eq!(
            stripped("X-Spam-Flag: Y\nA: b\n\nc", true, None),
            "A: b\n\nc"
        );
    }
}
