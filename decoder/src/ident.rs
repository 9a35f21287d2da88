//! SQL identifiers: the one quoting function every crate uses, so that no identifier reaches
//! SQL (or a replication command) unquoted.

/// `name` as a quoted SQL identifier: `"name"`, inner `"` doubled. Case, spaces, punctuation and
/// any Unicode survive as they are.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn quotes_and_doubles_inner_quotes() {
        assert_eq!(quote_ident("t"), "\"t\"");
        assert_eq!(quote_ident("x; DROP TABLE y"), "\"x; DROP TABLE y\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_ident("Ünï cödé"), "\"Ünï cödé\"");
        assert_eq!(quote_ident(""), "\"\"");
    }
}
