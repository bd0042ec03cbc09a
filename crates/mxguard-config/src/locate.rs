//! From byte offsets to what an administrator can use: line, column and the
//! dotted key path (`listener[1].role`).

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Formats a key path the way TOML would write it, with array indexes in
/// brackets: `domains.catchall."example.test"`, `listener[0].role`.
pub(crate) fn format_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&format_key(k));
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
pub(crate) fn format_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
/// Never panics: an offset past the end or inside a character is moved back.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_boundary(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The largest char boundary of `text` that is `<= offset`.
pub(crate) fn floor_boundary(text: &str, offset: usize) -> usize {
    let mut o = offset.min(text.len());
    while o > 0 && !text.is_char_boundary(o) {
        o -= 1;
    }
    o
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

/// The key path of the deepest key or value of `doc` whose span contains
/// `offset`, if any.
pub(crate) fn path_at(doc: &DeTable<'_>, offset: usize) -> Option<Vec<Segment>> {
    let mut path = Vec::new();
    table_path(doc, offset, &mut path).then_some(path)
}

fn table_path(table: &DeTable<'_>, offset: usize, path: &mut Vec<Segment>) -> bool {
    for (key, value) in table.iter() {
        path.push(Segment::Key(key.get_ref().to_string()));
        if contains(&key.span(), offset) || value_path(value, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn value_path(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Segment>) -> bool {
    match value.get_ref() {
        DeValue::Table(table) if table_path(table, offset, path) => {
            return true;
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Segment::Index(i));
                if value_path(item, offset, path) {
                    return true;
                }
                path.pop();
            }
        }
        _ => {}
    }
    contains(&value.span(), offset)
}

/// A best-effort key path for a syntax error at `offset`, found by reading
/// the text itself (the document may not be parseable): the last table
/// header before the error, then the key at the start of the error's line.
pub(crate) fn syntax_path(text: &str, offset: usize) -> Vec<Segment> {
    let offset = floor_boundary(text, offset);
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut table: Vec<Segment> = Vec::new();
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for line in text[..line_start].lines() {
        if let Some((name, is_array)) = header(line) {
            table = header_path(&name, is_array, &mut array_counts);
        }
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    if let Some((name, is_array)) = header(line) {
        return header_path(&name, is_array, &mut array_counts);
    }
    if let Some((key, _)) = line.split_once('=') {
        let key = key.trim();
        let plausible = !key.is_empty()
            && key.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\'' | ' ')
            });
        if plausible {
            for part in key.split('.') {
                let part = part.trim().trim_matches(|c| c == '"' || c == '\'');
                if !part.is_empty() {
                    table.push(Segment::Key(part.to_string()));
                }
            }
        }
    }
    table
}

/// `[a.b]` or `[[a]]` (possibly unclosed, possibly followed by a comment).
fn header(line: &str) -> Option<(String, bool)> {
    let line = line.trim();
    let (rest, is_array) = match line.strip_prefix("[[") {
        Some(rest) => (rest, true),
        None => (line.strip_prefix('[')?, false),
    };
    let name = rest.split([']', '#']).next().unwrap_or("").trim();
    Some((name.to_string(), is_array))
}

fn header_path(name: &str, is_array: bool, counts: &mut Vec<(String, usize)>) -> Vec<Segment> {
    if name.is_empty() {
        return Vec::new();
    }
    let mut path: Vec<Segment> = name
        .split('.')
        .map(|p| Segment::Key(p.trim().trim_matches(|c| c == '"' || c == '\'').to_string()))
        .collect();
    if is_array {
        let index = match counts.iter_mut().find(|(n, _)| n == name) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                counts.push((name.to_string(), 0));
                0
            }
        };
        path.push(Segment::Index(index));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // "é" is two bytes: the column counts characters.
        assert_eq!(line_col(text, 10), (2, 4));
        // Inside a character, and past the end: no panic.
        assert_eq!(line_col(text, 8), (2, 2));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn paths() {
        let path = vec![
            Segment::Key("domains".into()),
            Segment::Key("catchall".into()),
            Segment::Key("example.test".into()),
        ];
        assert_eq!(format_path(&path), "domains.catchall.\"example.test\"");
        let path = vec![
            Segment::Key("listener".into()),
            Segment::Index(1),
            Segment::Key("role".into()),
        ];
        assert_eq!(format_path(&path), "listener[1].role");
    }

    #[test]
    fn syntax_paths() {
        let text = "[server]\nhostname = \"x\n";
        assert_eq!(format_path(&syntax_path(text, 22)), "server.hostname");
        let text = "[[listener]]\nrole = \"mx\"\n[[listener]]\nrole = mx\n";
        assert_eq!(format_path(&syntax_path(text, 45)), "listener[1].role");
        let text = "[server\n";
        assert_eq!(format_path(&syntax_path(text, 7)), "server");
        assert_eq!(format_path(&syntax_path("= 1", 0)), "");
        assert_eq!(format_path(&syntax_path("[", 1)), "");
        assert_eq!(format_path(&syntax_path("[[", 2)), "");
    }
}
