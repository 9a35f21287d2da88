//! The splitter on tricky inputs, and a property: statements joined with `;` split back into
//! themselves.

use proptest::prelude::*;

use super::*;

fn texts(script: &str) -> Vec<&str> {
    split(script)
        .expect("the script is well formed")
        .into_iter()
        .map(|s| s.text)
        .collect()
}

#[test]
fn tricky_inputs_split_where_psql_would() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        (";;  ;\n", &[]),
        ("-- only a comment\n/* and another */", &[]),
        ("select 1", &["select 1"]),
        ("select 1;select 2;", &["select 1", "select 2"]),
        ("  select 1 ; \n\n select 2 -- trailing\n;", &["select 1", "select 2"]),
        ("select 'a;b'; select 2", &["select 'a;b'", "select 2"]),
        ("select 'it''s;'; select 2", &["select 'it''s;'", "select 2"]),
        (r"select E'\';'; select 2", &[r"select E'\';'", "select 2"]),
        (r"select e'a\\'; select 2", &[r"select e'a\\'", "select 2"]),
        // Without the E prefix a backslash is an ordinary character.
        (r"select 'a\'; select 2", &[r"select 'a\'", "select 2"]),
        // `xE'…'` is the identifier `xE` then a plain string.
        (r"select xE'a\'; select 2", &[r"select xE'a\'", "select 2"]),
        (
            r#"create table "we;ird ""t""" (id int); select 2"#,
            &[r#"create table "we;ird ""t""" (id int)"#, "select 2"],
        ),
        (
            "create function f() returns int as $$ select 1; $$ language sql; select 2",
            &[
                "create function f() returns int as $$ select 1; $$ language sql",
                "select 2",
            ],
        ),
        (
            "do $body$ begin perform 1; $x$ ; $x$; end $body$; select 2",
            &["do $body$ begin perform 1; $x$ ; $x$; end $body$", "select 2"],
        ),
        // `$1` is a parameter, `a$b$` an identifier: neither opens a dollar quote.
        ("select $1; select a$b$; select 3", &["select $1", "select a$b$", "select 3"]),
        (
            "select 1 /* a /* nested; */ comment; */ + 1; select 2",
            &["select 1 /* a /* nested; */ comment; */ + 1", "select 2"],
        ),
        ("select 1 -- a; comment\n + 1; select 2", &["select 1 -- a; comment\n + 1", "select 2"]),
        (
            "create rule r as on insert to t do also (insert into u values (1); insert into u values (2)); select 2",
            &[
                "create rule r as on insert to t do also (insert into u values (1); insert into u values (2))",
                "select 2",
            ],
        ),
        (
            "CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 2 END; SELECT 3; END; SELECT 4",
            &[
                "CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 2 END; SELECT 3; END",
                "SELECT 4",
            ],
        ),
        (
            "create procedure p() begin atomic insert into t values (1); end; begin; commit",
            &[
                "create procedure p() begin atomic insert into t values (1); end",
                "begin",
                "commit",
            ],
        ),
        ("select 'ünï;côdé', \"tâble;\"; select 2", &["select 'ünï;côdé', \"tâble;\"", "select 2"]),
        ("select 1 as \"$$\"; select 2", &["select 1 as \"$$\"", "select 2"]),
        ("select $é$ ; $é$; select 2", &["select $é$ ; $é$", "select 2"]),
    ];
    for (script, expected) in cases {
        assert_eq!(&texts(script), expected, "splitting {script:?}");
    }
}

#[test]
fn unterminated_constructs_are_errors_with_their_start() {
    let cases: &[(&str, &str, usize, usize)] = &[
        ("select 'abc", "quoted string", 1, 8),
        ("select 1;\n  select \"abc", "quoted identifier", 2, 10),
        ("select $fn$ abc $f$", "dollar-quoted string $fn$", 1, 8),
        ("select 1 /* a /* b */", "block comment", 1, 10),
        (r"select E'abc\'", "quoted string", 1, 9),
    ];
    for (script, what, line, column) in cases {
        let err = split(script).expect_err(script);
        assert_eq!(err.what, *what, "{script:?}");
        assert_eq!(
            err.at,
            TextPosition {
                line: *line,
                column: *column
            },
            "{script:?}"
        );
        assert!(err.to_string().contains("never closed"), "{err}");
    }
}

#[test]
fn server_positions_map_to_script_lines_and_columns() {
    let script = "-- header\ncreate table t (id int);\n\n  insert into t\n  values ('é', nope);\n";
    let statements = split(script).expect("splits");
    assert_eq!(statements.len(), 2);
    let insert = statements[1];
    assert_eq!(insert.text, "insert into t\n  values ('é', nope)");
    assert_eq!(
        insert.position_in(script, None),
        TextPosition { line: 4, column: 3 }
    );
    // The server counts characters: `nope` is the 30th character of the statement (`é` is one
    // character of two bytes).
    assert_eq!(
        insert.position_in(script, Some(30)),
        TextPosition {
            line: 5,
            column: 16
        }
    );
    // Out of range: the statement's start.
    assert_eq!(
        insert.position_in(script, Some(10_000)),
        TextPosition { line: 4, column: 3 }
    );
}

#[test]
fn no_transaction_marker_is_read_from_the_leading_comments_only() {
    assert!(wants_no_transaction(
        "-- blueshift:no-transaction\ncreate index concurrently i on t (a);"
    ));
    assert!(wants_no_transaction(
        "\n-- add an index without blocking writes\n--   blueshift:no-transaction  \nselect 1;"
    ));
    assert!(!wants_no_transaction(
        "select 1;\n-- blueshift:no-transaction\n"
    ));
    assert!(!wants_no_transaction(
        "/* blueshift:no-transaction */ select 1"
    ));
    assert!(!wants_no_transaction("-- nothing to see\nselect 1"));
}

#[test]
fn keyword_and_summary() {
    let s = split("  BEGIN;\nCREATE TABLE t (\n id int);").expect("splits");
    assert_eq!(s[0].keyword().as_deref(), Some("begin"));
    assert_eq!(s[1].keyword().as_deref(), Some("create"));
    assert_eq!(s[1].summary(), "CREATE TABLE t (…");
}

/// Pieces that each lex as a unit and never contain a top-level `;` of their own.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("select".to_owned()),
        Just("1".to_owned()),
        Just("$1".to_owned()),
        Just("(a; b)".to_owned()),
        Just("x$y$".to_owned()),
        "[a-zA-Zé_][a-zA-Z0-9é_]{0,6}",
        "'([^']|''|;){0,8}'",
        "E'([^'\\\\]|''|\\\\.|;){0,8}'",
        "\"([^\"]|\"\"|;){1,8}\"",
        "\\$\\$([^$]|;){0,8}\\$\\$",
        // No `t` inside: `$$` beside a `t` would spell the closing `$t$` early, as PostgreSQL
        // reads it (`$t$$$t$$…` closes after one `$`).
        "\\$t\\$([^$t]|;|\\$\\$){0,8}\\$t\\$",
        "/\\*([^*/]|;){0,6}(/\\*([^*/]|;){0,4}\\*/)?\\*/",
        "--[^\n]{0,8}\n",
    ]
}

fn statement() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 1..6).prop_map(|parts| {
        // A leading comment would be dropped from the statement's text: start with a word.
        let mut s = String::from("select");
        for p in parts {
            s.push(' ');
            s.push_str(&p);
        }
        // A trailing line comment would swallow the `;`: end with a word.
        s.push_str(" x");
        s
    })
}

proptest! {
    #[test]
    fn joined_statements_split_back(statements in prop::collection::vec(statement(), 0..5)) {
        let script = statements.iter().map(|s| format!("{s};\n")).collect::<String>();
        let split = split(&script).expect("generated scripts are well formed");
        let got: Vec<&str> = split.iter().map(|s| s.text).collect();
        prop_assert_eq!(got, statements.iter().map(String::as_str).collect::<Vec<_>>());
        for s in &split {
            prop_assert_eq!(&script[s.offset..s.offset + s.text.len()], s.text);
        }
    }
}
