//! `*` patterns over addresses: the router's left sides and the
//! `sender.ban` / `recipient.ban` lists (DMail's ban_mailfrom and
//! ban_rcptto). `*` matches any run of characters, the empty one too;
//! every other character matches itself. Patterns and text are compared
//! as given: callers lowercase both.

/// Matches `text` against `pattern`; returns what each `*` matched, in
/// order, or `None` when it does not match.
pub fn glob(pattern: &str, text: &str) -> Option<Vec<String>> {
    // The literal ends first, without allocating: most patterns fail there.
    let (Some(a), Some(b)) = (pattern.find('*'), pattern.rfind('*')) else {
        return (pattern == text).then(Vec::new);
    };
    let (first, last) = (&pattern[..a], &pattern[b + 1..]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return None;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = &text[first.len()..text.len() - last.len()];
    let mut caps = Vec::new();
    for mid in &parts[1..parts.len() - 1] {
        let i = rest.find(mid)?;
        caps.push(rest[..i].to_string());
        rest = &rest[i + mid.len()..];
    }
    caps.push(rest.to_string());
    Some(caps)
}

/// The first of `patterns` (lowercase) that matches `address`, compared
/// without regard to case.
pub fn first_match<'a>(patterns: &'a [String], address: &str) -> Option<&'a str> {
    let lower = address.to_ascii_lowercase();
    patterns
        .iter()
        .find(|p| glob(p, &lower).is_some())
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert_eq!(glob("*@x.test", "a@x.test"), Some(vec!["a".into()]));
        assert_eq!(
            glob("a*b*c", "aXXbYYc"),
            Some(vec!["XX".into(), "YY".into()])
        );
        assert_eq!(glob("a*a", "a"), None);
        assert_eq!(glob("exact", "exact"), Some(vec![]));
        assert_eq!(glob("exact", "exactly"), None);
        assert_eq!(glob("*", ""), Some(vec!["".into()]));
    }

    #[test]
    fn ban_lists() {
        let bans = vec!["*@spam.test".to_string(), "promo*@bigcorp.test".to_string()];
        assert_eq!(first_match(&bans, "Joe@SPAM.test"), Some("*@spam.test"));
        assert_eq!(
            first_match(&bans, "promo-2026@bigcorp.test"),
            Some("promo*@bigcorp.test")
        );
        assert_eq!(first_match(&bans, "ceo@bigcorp.test"), None);
        assert_eq!(first_match(&bans, "joe@notspam.test"), None);
        assert_eq!(first_match(&[], "joe@spam.test"), None);
    }
}
