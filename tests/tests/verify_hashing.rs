//! `blueshift verify --hashing client` (each chunk's canonical rows streamed out and hashed
//! with xxh3 in blueshift) against `--hashing server` (hashtextextended summed on each server),
//! blue 15 → green 18: the canonical text is the same bytes on both versions for the types whose
//! output differs most easily (floats with their special values, numeric, bytea, text with
//! escapes and non-ASCII, arrays, jsonb, timestamps, intervals, money, NULLs), so both paths
//! find the pair equal, and then both find exactly the same injected differences.

#[path = "support/sync.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use blueshift_tests::{blueshift_binary, PgBinaries};
use serde_json::Value;
use support::Pair;

/// `blueshift verify --format json --hashing <hashing>`; (exit code, report, stderr).
fn verify(pair: &Pair, hashing: &str) -> (i32, Value, String) {
    let out = Command::new(blueshift_binary())
        .arg("verify")
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .args(["--publication", "pub", "--slot", "bs", "--format", "json"])
        .args([
            "--chunk-rows",
            "300",
            "--workers",
            "2",
            "--hashing",
            hashing,
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("blueshift verify runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().expect("exited"), report, stderr)
}

/// (table, kind, key) of each difference, sorted.
fn found(report: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = report["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| {
            (
                d["table"].as_str().unwrap_or_default().to_owned(),
                d["kind"].as_str().unwrap_or_default().to_owned(),
                d["key"].to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

const TABLES: &str = r#"
CREATE TABLE typed (
    id int PRIMARY KEY, f8 float8, f4 float4, n numeric, b bytea, t text, a int[], j jsonb,
    ts timestamptz, d date, iv interval, m money, u uuid, ok bool,
    s smallint, c char(6), v varchar(12), big bigint
);
CREATE TABLE loose (v text, n int);
"#;

const ROWS: &str = r#"
INSERT INTO typed
SELECT g,
       (ARRAY['NaN', 'Infinity', '-Infinity', '-0', '0.1', '1e300', '5e-324'])[g % 7 + 1]::float8 * (CASE WHEN g % 11 = 0 THEN NULL ELSE 1 END),
       (g / 3.0)::float4,
       (g * 1234567.891011)::numeric(20, 6),
       pg_catalog.decode(pg_catalog.md5(g::text), 'hex'),
       E'line\nbreak\ttab \\ back "quote" ' || g || ' Grüße ✓ 日本',
       ARRAY[g, NULL, -g],
       jsonb_build_object('k', g, 'nested', jsonb_build_array(g, 'x', NULL, 1.50)),
       '2024-02-29 23:59:59.999999+13'::timestamptz + g * interval '1 hour',
       '0001-01-01 BC'::date + g,
       g * interval '1 year 2 mon 3 days 04:05:06.789',
       (g * 1.25)::money,
       pg_catalog.md5(g::text)::uuid,
       g % 2 = 0,
       (g % 300)::smallint,
       'c' || (g % 97),
       'v' || g,
       g * 4294967297
  FROM generate_series(1, 1500) g;
INSERT INTO loose SELECT 'row ' || (g % 50), g % 7 FROM generate_series(1, 400) g;
"#;

#[test]
fn both_hashing_paths_agree_across_15_and_18() {
    let blue = PgBinaries::major(15).expect("PostgreSQL 15");
    let green = PgBinaries::major(18).expect("PostgreSQL 18");
    let pair = Pair::with("vhash", blue, green, &[]);
    pair.schema(TABLES);
    pair.blue.psql("app", ROWS).unwrap();
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .unwrap();
    let mut sync = pair.sync(&[]);
    pair.converge(&["typed", "loose"], Duration::from_secs(120));
    assert!(sync.terminate());

    for hashing in ["client", "server"] {
        let (code, report, stderr) = verify(&pair, hashing);
        assert_eq!(code, 0, "--hashing {hashing}: {report:#}\n{stderr}");
        assert_eq!(report["tables"].as_array().unwrap().len(), 2);
    }

    pair.green
        .psql(
            "app",
            "UPDATE typed SET b = pg_catalog.set_byte(b, 3, pg_catalog.get_byte(b, 3) # 1) WHERE id = 77; \
             UPDATE typed SET f8 = 0 WHERE id = 4; \
             UPDATE typed SET t = t || ' ' WHERE id = 1200; \
             DELETE FROM typed WHERE id = 600; \
             INSERT INTO loose VALUES ('row 3', 3); \
             UPDATE typed SET c = 'c' WHERE id = 900; \
             UPDATE typed SET big = 0 WHERE id = 1; \
             UPDATE typed SET (s, v) = (SELECT s, v FROM typed o WHERE o.id = 21 - typed.id) \
              WHERE id IN (10, 11)",
        )
        .unwrap();
    let (code, client, stderr) = verify(&pair, "client");
    assert_eq!(code, 1, "{client:#}\n{stderr}");
    let (code, server, stderr) = verify(&pair, "server");
    assert_eq!(code, 1, "{server:#}\n{stderr}");
    let expected: Vec<(String, String, String)> = vec![
        (
            r#""public"."loose""#.into(),
            "extra on green".into(),
            "null".into(),
        ),
        (
            r#""public"."typed""#.into(),
            "different".into(),
            r#"["1"]"#.into(),
        ),
        (
            r#""public"."typed""#.into(),
            "different".into(),
            r#"["10"]"#.into(),
        ),
        (
            r#""public"."typed""#.into(),
            "different".into(),
            r#"["11"]"#.into(),
        ),
        (
            r#""public"."typed""#.into(),
            "different".into(),
            r#"["1200"]"#.into(),
        ),
        (
            r#""public"."typed""#.into(),
            "different".into(),
            r#"["4"]"#.into(),
        ),
        (
            r#""public"."typed""#.into(),
            "different".into(),
            r#"["77"]"#.into(),
        ),
        (
            r#""public"."typed""#.into(),
            "different".into(),
            r#"["900"]"#.into(),
        ),
        (
            r#""public"."typed""#.into(),
            "missing on green".into(),
            r#"["600"]"#.into(),
        ),
    ];
    assert_eq!(found(&client), expected, "{client:#}");
    assert_eq!(found(&server), expected, "{server:#}");
    assert_eq!(client["differences_total"], 9);
    assert_eq!(server["differences_total"], 9);
}
