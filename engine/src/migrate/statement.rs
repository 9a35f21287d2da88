//! Splitting a migration script into statements, and mapping a server error position back to
//! the script's line and column.
//!
//! The lexer knows just enough SQL to find the semicolons that end statements, the way `psql`
//! does (`src/fe_utils/psqlscan.l`): `'…'` strings (with `''`, and backslash escapes in `E'…'`),
//! `"…"` identifiers, `$tag$…$tag$` dollar quotes, `--` line comments, nested `/* */` comments,
//! parentheses, and `BEGIN … END` blocks of SQL-standard function bodies
//! (`CREATE FUNCTION … BEGIN ATOMIC …; END`). Everything else is passed to the server untouched.

use std::fmt;

/// One statement of a script: its text (without the ending `;`) and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement as sent to the server: from its first token to its last, comments inside
    /// included, the `;` and the comments and blanks around it left out.
    pub text: &'a str,
    /// Byte offset of `text` in the script.
    pub offset: usize,
}

/// A line and column in a script, both 1-based; the column counts characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TextPosition {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for TextPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl TextPosition {
    /// The line and column of byte `offset` in `text` (clamped to the end of `text`).
    pub fn of_offset(text: &str, offset: usize) -> TextPosition {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        TextPosition { line, column }
    }
}

impl Statement<'_> {
    /// Where a server error position falls in the script. `position` is the server's `P` field:
    /// a 1-based character offset into [`Statement::text`]. Without one (or out of range), the
    /// statement's first character.
    pub fn position_in(&self, script: &str, position: Option<u32>) -> TextPosition {
        let within = position
            .and_then(|p| usize::try_from(p).ok())
            .and_then(|p| p.checked_sub(1))
            .and_then(|chars| self.text.char_indices().nth(chars).map(|(byte, _)| byte))
            .unwrap_or(0);
        TextPosition::of_offset(script, self.offset + within)
    }

    /// The first keyword of the statement, lowercased (`create`, `insert`, …), if it starts with
    /// one.
    pub fn keyword(&self) -> Option<String> {
        let word: String = self
            .text
            .chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
            .collect();
        (!word.is_empty()).then(|| word.to_ascii_lowercase())
    }

    /// One line of the statement for messages: its first line, shortened to 80 characters.
    pub fn summary(&self) -> String {
        let first = self.text.lines().next().unwrap_or_default().trim_end();
        let mut out: String = first.chars().take(80).collect();
        if out.len() < first.len() || self.text.lines().nth(1).is_some() {
            out.push('…');
        }
        out
    }
}

/// A script the lexer cannot split: a quote or comment that is never closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} starting at line {}, column {} is never closed — close it, or the whole rest of the file is one {what}", at.line, at.column)]
pub struct SplitError {
    /// What was left open: `quoted string`, `quoted identifier`, `dollar-quoted string
    /// $tag$`, `block comment`.
    pub what: String,
    /// Where it starts.
    pub at: TextPosition,
}

/// The first words of a statement that matter for `BEGIN … END` tracking, as psql tracks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lead {
    Create,
    Or,
    Replace,
    Function,
    Procedure,
    Other,
}

/// Splits `script` into statements. Empty statements (a lone `;`, only comments) are dropped.
pub fn split(script: &str) -> Result<Vec<Statement<'_>>, SplitError> {
    let bytes = script.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    let mut end = 0;
    let mut parens: u32 = 0;
    let mut begins: u32 = 0;
    let mut leads: Vec<Lead> = Vec::new();

    while let Some(&c) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        let token_start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if next == Some(b'-') => {
                i = script[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
                continue;
            }
            b'/' if next == Some(b'*') => {
                i = skip_block_comment(script, i)?;
                continue;
            }
            b';' if parens == 0 && begins == 0 => {
                if let Some(s) = start.take() {
                    out.push(Statement {
                        text: &script[s..end],
                        offset: s,
                    });
                }
                leads.clear();
                i += 1;
                continue;
            }
            b'\'' => {
                let escapes = i
                    .checked_sub(1)
                    .and_then(|p| bytes.get(p))
                    .is_some_and(|b| matches!(b, b'E' | b'e'))
                    && (i < 2 || bytes.get(i - 2).is_none_or(|b| !is_ident_byte(*b)));
                i = skip_quoted(script, i, b'\'', escapes)?;
            }
            b'"' => i = skip_quoted(script, i, b'"', false)?,
            b'$' if i == 0 || bytes.get(i - 1).is_none_or(|b| !is_ident_byte(*b)) => {
                i = match dollar_tag(bytes, i) {
                    Some(tag_end) => skip_dollar_quoted(script, i, tag_end)?,
                    None => i + 1,
                };
            }
            b'(' => {
                parens += 1;
                i += 1;
            }
            b')' => {
                parens = parens.saturating_sub(1);
                i += 1;
            }
            c if is_ident_start(c) => {
                let mut j = i + 1;
                while bytes.get(j).is_some_and(|b| is_ident_byte(*b)) {
                    j += 1;
                }
                let word = &script[i..j];
                track_block(word, &mut leads, &mut begins, parens);
                i = j;
            }
            _ => {
                // Anything else (digits, operators, `$1`): one byte at a time, or a whole
                // character when it is not ASCII.
                i += script[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
        start.get_or_insert(token_start);
        end = i;
    }
    if let Some(s) = start {
        out.push(Statement {
            text: &script[s..end],
            offset: s,
        });
    }
    Ok(out)
}

/// Whether the script asks to run outside a transaction: one of its leading comment lines (before
/// the first statement) is `-- blueshift:no-transaction`.
pub fn wants_no_transaction(script: &str) -> bool {
    for line in script.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix("--") else {
            return false;
        };
        if comment
            .trim()
            .eq_ignore_ascii_case("blueshift:no-transaction")
        {
            return true;
        }
    }
    false
}

/// psql's heuristic for `CREATE [OR REPLACE] {FUNCTION|PROCEDURE} … BEGIN ATOMIC … END`: inside
/// such a statement, `BEGIN` (and `CASE` within it) opens a block that `END` closes, and
/// semicolons inside a block do not end the statement.
fn track_block(word: &str, leads: &mut Vec<Lead>, begins: &mut u32, parens: u32) {
    if leads.len() < 4 {
        let lead = match word.to_ascii_lowercase().as_str() {
            "create" => Lead::Create,
            "or" => Lead::Or,
            "replace" => Lead::Replace,
            "function" => Lead::Function,
            "procedure" => Lead::Procedure,
            _ => Lead::Other,
        };
        leads.push(lead);
    }
    let routine = |l: Option<&Lead>| matches!(l, Some(Lead::Function | Lead::Procedure));
    let is_routine = leads.first() == Some(&Lead::Create)
        && (routine(leads.get(1))
            || (leads.get(1) == Some(&Lead::Or)
                && leads.get(2) == Some(&Lead::Replace)
                && routine(leads.get(3))));
    if !is_routine || parens != 0 {
        return;
    }
    if word.eq_ignore_ascii_case("begin") {
        *begins += 1;
    } else if word.eq_ignore_ascii_case("case") {
        if *begins >= 1 {
            *begins += 1;
        }
    } else if word.eq_ignore_ascii_case("end") {
        *begins = begins.saturating_sub(1);
    }
}

/// Identifier characters as PostgreSQL's scanner sees them: letters, digits, `_`, `$` and every
/// non-ASCII byte.
fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Skips a `/* … */` comment starting at `at`, nesting as PostgreSQL does; returns the offset
/// after it.
fn skip_block_comment(script: &str, at: usize) -> Result<usize, SplitError> {
    let bytes = script.as_bytes();
    let mut depth = 0u32;
    let mut i = at;
    while i < bytes.len() {
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'/'), Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (Some(b'*'), Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => i += 1,
        }
    }
    Err(unterminated("block comment", script, at))
}

/// Skips a quoted string or identifier starting at `at` (the opening quote); a doubled quote is
/// part of it, and with `escapes` a backslash escapes the next byte. Returns the offset after
/// the closing quote.
fn skip_quoted(script: &str, at: usize, quote: u8, escapes: bool) -> Result<usize, SplitError> {
    let bytes = script.as_bytes();
    let mut i = at + 1;
    while let Some(&b) = bytes.get(i) {
        if escapes && b == b'\\' {
            i += 2;
        } else if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Ok(i + 1);
            }
        } else {
            i += 1;
        }
    }
    let what = if quote == b'"' {
        "quoted identifier"
    } else {
        "quoted string"
    };
    Err(unterminated(what, script, at))
}

/// If a dollar-quote opening tag (`$$` or `$tag$`) starts at `at`, the offset just after it.
fn dollar_tag(bytes: &[u8], at: usize) -> Option<usize> {
    let mut j = at + 1;
    match bytes.get(j) {
        Some(b'$') => return Some(j + 1),
        Some(b) if is_ident_start(*b) => j += 1,
        _ => return None,
    }
    while let Some(&b) = bytes.get(j) {
        if b == b'$' {
            return Some(j + 1);
        }
        if !(b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80) {
            return None;
        }
        j += 1;
    }
    None
}

/// Skips a dollar-quoted string whose opening tag spans `at..tag_end`; returns the offset after
/// the closing tag.
fn skip_dollar_quoted(script: &str, at: usize, tag_end: usize) -> Result<usize, SplitError> {
    let tag = &script[at..tag_end];
    match script[tag_end..].find(tag) {
        Some(n) => Ok(tag_end + n + tag.len()),
        None => Err(unterminated(
            &format!("dollar-quoted string {tag}"),
            script,
            at,
        )),
    }
}

fn unterminated(what: &str, script: &str, at: usize) -> SplitError {
    SplitError {
        what: what.to_owned(),
        at: TextPosition::of_offset(script, at),
    }
}

#[cfg(test)]
mod tests;
