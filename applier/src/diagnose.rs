//! Which column, and which row, a value error on green is about.
//!
//! Green's report of a value it cannot take often names only a type: `value too long for type
//! character varying(10)` (22001), `numeric field overflow` (22003), `invalid input syntax for
//! type integer` (22P02). The statement that failed is at hand, with its parameters: the
//! columns whose green type is the one named are the candidates, and the values blue sent for
//! them say which one cannot fit (too long, too many integer digits, out of range, not a number,
//! NULL). The row is then named by its replica identity key — key values only, never any other
//! value of the row.
//!
//! The server's own text is kept, with the values it quotes blanked ([`redact`]): a data
//! exception quotes the offending value (`invalid input syntax for type integer: "abc"`), and a
//! constraint violation's detail prints the whole row (`Failing row contains (…)`).

use std::fmt;

use blueshift_decoder::pgoutput::ColumnValue;

use crate::client::{ServerError, SqlError};
use crate::statement::{Locate, Shape};
use crate::target::TargetTable;

/// The column (or the few candidates) and the row a value error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Culprit {
    /// Green's column names: one when it was found, the candidates otherwise.
    pub columns: Vec<String>,
    /// Green's type of the column(s), when one.
    pub green_type: Option<String>,
    /// The row's replica identity key, `(id)=(42)`, when the row is known and has one.
    pub key: Option<String>,
}

impl fmt::Display for Culprit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted: Vec<String> = self.columns.iter().map(|c| format!("\"{c}\"")).collect();
        match quoted.as_slice() {
            [one] => write!(f, "column {one}")?,
            many => write!(f, "one of columns {}", many.join(", "))?,
        }
        if let Some(ty) = &self.green_type {
            write!(f, " ({ty} on green)")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", row with key {key}")?;
        }
        Ok(())
    }
}

/// The value test a candidate column fails, from the server's report.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Test {
    /// Longer than this many characters (trailing spaces aside: green drops those).
    Longer(usize),
    /// More integer digits than this.
    IntegerDigits(usize),
    /// Not an integer within this many bits.
    Integer(u32),
    /// Not a decimal number.
    NotNumeric,
    /// NULL.
    Null,
    /// No test: every value is suspect.
    Any,
}

/// Names the column (and the row) of `error`, raised by the statement of `shape` on `target`
/// run with `params`. `None` when the error is not about a value, or no column of the
/// statement can be the one.
pub(crate) fn culprit(
    target: &TargetTable,
    shape: &Shape,
    params: &[ColumnValue],
    error: &SqlError,
) -> Option<Culprit> {
    let server = error.server()?;
    let state = server.sqlstate.as_str();
    if !(state.starts_with("22") || state == "23502") {
        return None;
    }
    let layout = Layout::of(target, shape, params.len());
    // The columns the statement writes, each once.
    let mut written: Vec<usize> = Vec::new();
    for &c in &layout.columns {
        if !written.contains(&c) {
            written.push(c);
        }
    }
    let (candidates, test) = candidates(target, &written, server);
    if candidates.is_empty() {
        return None;
    }
    // Rows × candidates whose value fails the test.
    let mut hits: Vec<(usize, usize)> = Vec::new();
    if test != Test::Any {
        for row in 0..layout.rows {
            for &c in &candidates {
                let failing = layout
                    .positions(row, c)
                    .any(|p| params.get(p).is_some_and(|v| fails(test, v)));
                if failing {
                    hits.push((row, c));
                }
            }
        }
    }
    let (columns, row): (Vec<usize>, Option<usize>) = match hits.as_slice() {
        [] if layout.rows == 1 => (candidates, Some(0)),
        [] => (candidates, None),
        [(row, c), rest @ ..] => {
            let mut columns = vec![*c];
            for (_, other) in rest {
                if !columns.contains(other) {
                    columns.push(*other);
                }
            }
            (columns, Some(*row))
        }
    };
    let green_type = {
        let first = &target.columns[columns[0]].green_type;
        columns
            .iter()
            .all(|&c| target.columns[c].green_type == *first)
            .then(|| first.clone())
    };
    Some(Culprit {
        columns: columns
            .iter()
            .map(|&c| target.columns[c].name.clone())
            .collect(),
        green_type,
        key: row.and_then(|r| layout.key(target, r, params)),
    })
}

/// Where a statement's parameters go: rows of columns (indexes in `target.columns`).
struct Layout {
    /// The column of each parameter.
    columns: Vec<usize>,
    /// Parameters per row.
    width: usize,
    rows: usize,
    /// Parameter positions of the key, within a row, when the statement finds rows by key.
    key: Option<Vec<usize>>,
}

impl Layout {
    fn of(target: &TargetTable, shape: &Shape, params: usize) -> Layout {
        match shape {
            Shape::Insert { rows } | Shape::Upsert { rows } => {
                let width = target.columns.len();
                Layout {
                    columns: (0..rows * width).map(|p| p % width.max(1)).collect(),
                    width,
                    rows: *rows,
                    key: Some(target.key.iter().filter(|&&k| k < width).copied().collect()),
                }
            }
            Shape::Update { set, locate, .. } => {
                let mut columns = set.to_vec();
                columns.extend_from_slice(locate.columns());
                let key = match locate {
                    Locate::Key(_) => Some((set.len()..columns.len()).collect()),
                    Locate::Full { .. } => None,
                };
                Layout {
                    width: columns.len(),
                    columns,
                    rows: 1,
                    key,
                }
            }
            // Arrays, one per column: no row to point at (a folded group that fails is applied
            // again in blue's order, which names it).
            Shape::SetInsert | Shape::SetUpdate { .. } | Shape::SetDelete | Shape::SetAbsent => {
                Layout {
                    columns: Vec::new(),
                    width: 0,
                    rows: 0,
                    key: None,
                }
            }
            Shape::Delete { locate, .. } => Layout {
                columns: locate.columns().to_vec(),
                width: params,
                rows: 1,
                key: matches!(locate, Locate::Key(_)).then(|| (0..params).collect()),
            },
        }
    }

    /// Parameter positions of column `c` in row `row`.
    fn positions(&self, row: usize, c: usize) -> impl Iterator<Item = usize> + '_ {
        let start = row * self.width;
        (start..start + self.width).filter(move |&p| self.columns.get(p) == Some(&c))
    }

    /// `(k1, k2)=(v1, v2)` of row `row`: its replica identity key, when the statement has it as
    /// text (never under REPLICA IDENTITY FULL: the "key" is the whole row).
    fn key(&self, target: &TargetTable, row: usize, params: &[ColumnValue]) -> Option<String> {
        if target.identity_full {
            return None;
        }
        let positions = self.key.as_ref().filter(|k| !k.is_empty())?;
        let start = row * self.width;
        let mut names = Vec::with_capacity(positions.len());
        let mut values = Vec::with_capacity(positions.len());
        for &p in positions {
            let column = *self.columns.get(start + p)?;
            if !target.key.contains(&column) {
                return None;
            }
            names.push(target.columns[column].name.as_str());
            values.push(match params.get(start + p)? {
                ColumnValue::Text(v) => String::from_utf8_lossy(v).into_owned(),
                ColumnValue::Null => "null".to_owned(),
                ColumnValue::Binary(_) | ColumnValue::UnchangedToast => return None,
            });
        }
        Some(format!("({})=({})", names.join(", "), values.join(", ")))
    }
}

/// The candidate columns (among `written`) of the server's report, and the test their values
/// fail.
fn candidates(target: &TargetTable, written: &[usize], server: &ServerError) -> (Vec<usize>, Test) {
    let by_name = |name: &str| -> Vec<usize> {
        written
            .iter()
            .copied()
            .filter(|&c| target.columns[c].name == name)
            .collect()
    };
    if server.sqlstate == "23502" {
        return match &server.column {
            Some(name) => (by_name(name), Test::Null),
            None => (written.to_vec(), Test::Null),
        };
    }
    if let Some(name) = &server.column {
        let named = by_name(name);
        if !named.is_empty() {
            return (named, Test::Any);
        }
    }
    let message = server.message.as_str();
    let of_type = |ty: &str| -> Vec<usize> {
        written
            .iter()
            .copied()
            .filter(|&c| {
                let green = &target.columns[c].green_type;
                green == ty || base(green) == ty
            })
            .collect()
    };
    // "value too long for type character varying(10)", "bit string too long for type …".
    if let Some(ty) = message.split(" too long for type ").nth(1) {
        let length = modifiers(ty).first().copied().unwrap_or(usize::MAX);
        return (of_type(ty), Test::Longer(length));
    }
    if message.starts_with("numeric field overflow") {
        // Detail: "A field with precision 12, scale 2 must round to an absolute value less than
        // 10^10."
        let numbers: Vec<usize> = server
            .detail
            .as_deref()
            .unwrap_or_default()
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        if let [precision, scale, ..] = numbers.as_slice() {
            let ty = format!("numeric({precision},{scale})");
            return (
                of_type(&ty),
                Test::IntegerDigits(precision.saturating_sub(*scale)),
            );
        }
        return (of_type("numeric"), Test::Any);
    }
    for (ty, bits) in [("smallint", 16), ("integer", 32), ("bigint", 64)] {
        if message.starts_with(&format!("{ty} out of range"))
            || message.ends_with(&format!("out of range for type {ty}"))
            || message.contains(&format!("for type {ty}:"))
        {
            return (of_type(ty), Test::Integer(bits));
        }
    }
    // "invalid input syntax for type numeric: …", "… for type date: …".
    if let Some(rest) = message.split(" for type ").nth(1) {
        let ty = rest.split(':').next().unwrap_or(rest).trim();
        let test = if ty == "numeric" {
            Test::NotNumeric
        } else {
            Test::Any
        };
        return (of_type(ty), test);
    }
    (Vec::new(), Test::Any)
}

/// `character varying(10)` → `character varying`; `timestamp(3) without time zone` →
/// `timestamp without time zone`.
fn base(ty: &str) -> String {
    match (ty.find('('), ty.find(')')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{}", &ty[..open], &ty[close + 1..])
        }
        _ => ty.to_owned(),
    }
}

/// The numbers between parentheses: `numeric(12,2)` → `[12, 2]`.
fn modifiers(ty: &str) -> Vec<usize> {
    let Some(open) = ty.find('(') else {
        return Vec::new();
    };
    ty[open + 1..]
        .split(')')
        .next()
        .unwrap_or_default()
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// Whether blue's value `value` fails `test`.
fn fails(test: Test, value: &ColumnValue) -> bool {
    let text = match value {
        ColumnValue::Null => return test == Test::Null,
        ColumnValue::Text(v) => String::from_utf8_lossy(v),
        ColumnValue::Binary(_) | ColumnValue::UnchangedToast => return false,
    };
    match test {
        Test::Null => false,
        Test::Any => true,
        Test::Longer(n) => text.trim_end_matches(' ').chars().count() > n,
        Test::IntegerDigits(n) => {
            let digits = text
                .trim()
                .trim_start_matches(['-', '+'])
                .split(['.', 'e', 'E'])
                .next()
                .unwrap_or_default()
                .trim_start_matches('0')
                .len();
            digits > n
        }
        Test::Integer(bits) => match text.trim().parse::<i128>() {
            Ok(v) => {
                let max = (1i128 << (bits - 1)) - 1;
                v > max || v < -max - 1
            }
            Err(_) => true,
        },
        Test::NotNumeric => {
            let t = text.trim();
            !(t.parse::<f64>().is_ok() || matches!(t, "NaN" | "Infinity" | "-Infinity"))
        }
    }
}

/// `error` without the row values green quotes: a data exception's message quotes the value
/// (blanked to `"…"`), a constraint violation's detail prints the failing row (dropped), and a
/// context may print a parameter (dropped). Keys in a unique violation's detail are kept.
pub(crate) fn redact(error: SqlError) -> SqlError {
    let SqlError::Server(mut server) = error else {
        return error;
    };
    if server.sqlstate.starts_with("22") {
        server.message = blank_quoted(&server.message);
        server.detail = server.detail.as_deref().map(blank_quoted);
    }
    if server
        .detail
        .as_deref()
        .is_some_and(|d| d.contains("Failing row contains"))
    {
        server.detail = None;
    }
    if server
        .context
        .as_deref()
        .is_some_and(|c| c.contains("parameter $"))
    {
        server.context = None;
    }
    SqlError::Server(server)
}

/// Every `"…"`-quoted part of `text` blanked.
fn blank_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        out.push('"');
        out.push_str(if inside { "…" } else { part });
        inside = !inside;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::TargetColumn;
    use bytes::Bytes;

    fn table() -> TargetTable {
        let column = |name: &str, ty: &str| TargetColumn {
            name: name.to_owned(),
            quoted: format!("\"{name}\""),
            green_type: ty.to_owned(),
            blue: 0,
            equality: crate::target::CATALOG_EQUALITY.to_owned(),
        };
        TargetTable {
            id: 1,
            display: "public.t".into(),
            schema: "public".into(),
            name: "t".into(),
            quoted: "\"public\".\"t\"".into(),
            partitioned: false,
            columns: vec![
                column("id", "integer"),
                column("code", "character varying(10)"),
                column("note", "character varying(10)"),
                column("price", "numeric(6,2)"),
                column("n", "integer"),
            ],
            blue_width: 5,
            key: vec![0],
            green_key: vec![0],
            foldable: Err("test"),
            insertable: Err("test"),
            full_indexes: Vec::new(),
            identity_full: false,
        }
    }

    fn text(s: &str) -> ColumnValue {
        ColumnValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn server(sqlstate: &str, message: &str, detail: Option<&str>) -> SqlError {
        SqlError::Server(Box::new(ServerError {
            severity: "ERROR".into(),
            sqlstate: sqlstate.into(),
            message: message.into(),
            detail: detail.map(str::to_owned),
            hint: None,
            position: None,
            context: None,
            column: None,
        }))
    }

    fn row(id: &str, code: &str, note: &str, price: &str, n: &str) -> Vec<ColumnValue> {
        vec![text(id), text(code), text(note), text(price), text(n)]
    }

    #[test]
    fn the_long_value_names_its_column_and_row() {
        let t = table();
        let mut params = row("1", "short", "short", "1.00", "1");
        params.extend(row("2", "short", "far too long!", "1.00", "1"));
        let err = server(
            "22001",
            "value too long for type character varying(10)",
            None,
        );
        let c = culprit(&t, &Shape::Insert { rows: 2 }, &params, &err).unwrap();
        assert_eq!(c.columns, ["note"]);
        assert_eq!(c.green_type.as_deref(), Some("character varying(10)"));
        assert_eq!(c.key.as_deref(), Some("(id)=(2)"));
        assert_eq!(
            c.to_string(),
            "column \"note\" (character varying(10) on green), row with key (id)=(2)"
        );
        // REPLICA IDENTITY FULL: the whole row is the "key"; nothing of it is printed.
        let mut full = table();
        full.identity_full = true;
        full.key = (0..5).collect();
        let c = culprit(&full, &Shape::Insert { rows: 2 }, &params, &err).unwrap();
        assert_eq!(
            (c.columns.as_slice(), c.key.as_deref()),
            (&["note".to_owned()][..], None)
        );
    }

    #[test]
    fn numeric_overflow_and_integers() {
        let t = table();
        let params = row("7", "a", "b", "123456.5", "1");
        let err = server(
            "22003",
            "numeric field overflow",
            Some(
                "A field with precision 6, scale 2 must round to an absolute value less than 10^4.",
            ),
        );
        let c = culprit(&t, &Shape::Insert { rows: 1 }, &params, &err).unwrap();
        assert_eq!(
            (c.columns.as_slice(), c.key.as_deref()),
            (&["price".to_owned()][..], Some("(id)=(7)"))
        );

        // An UPDATE: SET code, n WHERE id = $3.
        let shape = Shape::Update {
            set: vec![1, 4].into(),
            locate: Locate::Key(vec![0].into()),
            checked: true,
        };
        let params = vec![text("x"), text("99999999999"), text("5")];
        let err = server(
            "22003",
            "value \"…\" is out of range for type integer",
            None,
        );
        let c = culprit(&t, &shape, &params, &err).unwrap();
        assert_eq!(c.columns, ["n"]);
        assert_eq!(c.key.as_deref(), Some("(id)=(5)"));
    }

    #[test]
    fn nulls_and_unknown_errors() {
        let t = table();
        let mut err = server("23502", "null value in column \"code\"", None);
        if let SqlError::Server(s) = &mut err {
            s.column = Some("code".into());
        }
        let params = vec![
            text("3"),
            ColumnValue::Null,
            text("n"),
            text("1"),
            text("1"),
        ];
        let c = culprit(&t, &Shape::Insert { rows: 1 }, &params, &err).unwrap();
        assert_eq!(
            (c.columns[0].as_str(), c.key.as_deref()),
            ("code", Some("(id)=(3)"))
        );
        // Two candidates of the type, neither value testable: both named, the only row keyed.
        let err = server(
            "22P02",
            "invalid input syntax for type character varying(10)",
            None,
        );
        let c = culprit(
            &t,
            &Shape::Insert { rows: 1 },
            &row("4", "a", "b", "1", "1"),
            &err,
        )
        .unwrap();
        assert_eq!(c.columns, ["code", "note"]);
        assert!(
            c.to_string()
                .starts_with("one of columns \"code\", \"note\""),
            "{c}"
        );
        // Not a value error.
        assert!(culprit(
            &t,
            &Shape::Insert { rows: 1 },
            &row("4", "a", "b", "1", "1"),
            &server("23505", "duplicate key", None)
        )
        .is_none());
    }

    #[test]
    fn redaction_blanks_values_and_failing_rows() {
        let SqlError::Server(s) = redact(server(
            "22P02",
            "invalid input syntax for type integer: \"secret\"",
            None,
        )) else {
            unreachable!()
        };
        assert_eq!(s.message, "invalid input syntax for type integer: \"…\"");
        let SqlError::Server(s) = redact(server(
            "23502",
            "null value in column \"c\" of relation \"t\" violates not-null constraint",
            Some("Failing row contains (1, secret)."),
        )) else {
            unreachable!()
        };
        assert!(s.detail.is_none());
        assert!(s.message.contains("\"c\""), "names stay: {}", s.message);
        let SqlError::Server(s) = redact(server(
            "23505",
            "duplicate key value violates unique constraint \"t_pkey\"",
            Some("Key (id)=(1) already exists."),
        )) else {
            unreachable!()
        };
        assert_eq!(s.detail.as_deref(), Some("Key (id)=(1) already exists."));
        assert_eq!(
            base("timestamp(3) without time zone"),
            "timestamp without time zone"
        );
    }
}
