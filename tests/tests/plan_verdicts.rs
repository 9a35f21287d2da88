//! `blueshift plan` on two real clusters: every verdict kind (fine, cast, warning, blocked) for
//! published tables, column lists, column mappings, a missing publication, JSON output and the
//! exit code.

#[path = "support/migrate.rs"]
mod support;

use blueshift_engine::schema::{self, CastKind, ColumnRef, Mapping, Renames, SchemaError, Verdict};
use blueshift_tests::{Cluster, ClusterOptions, PgBinaries};
use support::{blueshift, connect_uri, stderr, stdout};

const BLUE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE same (id int PRIMARY KEY, name text);
CREATE TABLE added_default (id int PRIMARY KEY);
CREATE TABLE added_not_null (id int PRIMARY KEY);
CREATE TABLE dropped (id int PRIMARY KEY, gone text);
CREATE TABLE key_dropped (a int, b int, PRIMARY KEY (a, b));
CREATE TABLE cast_ok (id int PRIMARY KEY, n int, big bigint, v varchar(10), j jsonb, m mood,
                      arr int[], maybe int);
CREATE TABLE cast_blocked (id int PRIMARY KEY, at timestamptz);
CREATE TABLE generated_on_green (id int PRIMARY KEY, total int);
CREATE TABLE missing (id int PRIMARY KEY);
CREATE TABLE no_key (a int);
CREATE TABLE nothing_identity (id int PRIMARY KEY);
ALTER TABLE nothing_identity REPLICA IDENTITY NOTHING;
CREATE TABLE full_identity (a int);
ALTER TABLE full_identity REPLICA IDENTITY FULL;
CREATE TABLE lossy (id int PRIMARY KEY, price numeric(12,4), ratio float8, at timestamptz,
                    doc json, code varchar(20), wider numeric(10,2), big bigint);
CREATE SCHEMA "Odd ""Schema"" ü";
CREATE TABLE "Odd ""Schema"" ü"."it's a ""table"" 表" ("Col 'x'" int PRIMARY KEY, "naïve" text);
CREATE TABLE not_published (id int PRIMARY KEY);
CREATE PUBLICATION "pub ""all"" ü" FOR TABLE same, added_default, added_not_null, dropped,
    key_dropped, cast_ok, cast_blocked, generated_on_green, missing, no_key, nothing_identity,
    full_identity, lossy, "Odd ""Schema"" ü"."it's a ""table"" 表";
CREATE PUBLICATION fine_only FOR TABLE same, dropped (id);
"#;

const GREEN: &str = r#"
CREATE TABLE same (id int PRIMARY KEY, name text);
CREATE TABLE added_default (id int PRIMARY KEY, flag boolean NOT NULL DEFAULT false,
                            note text, seq int GENERATED ALWAYS AS IDENTITY);
CREATE TABLE added_not_null (id int PRIMARY KEY, flag boolean NOT NULL);
CREATE TABLE dropped (id int PRIMARY KEY);
CREATE TABLE key_dropped (a int PRIMARY KEY);
CREATE TABLE cast_ok (id int PRIMARY KEY, n bigint, big int, v varchar(20), j text, m text,
                      arr bigint[], maybe int NOT NULL);
CREATE TABLE cast_blocked (id int PRIMARY KEY, at int);
CREATE TABLE generated_on_green (id int PRIMARY KEY, total int GENERATED ALWAYS AS (id * 2) STORED);
CREATE TABLE no_key (a int);
CREATE TABLE nothing_identity (id int PRIMARY KEY);
CREATE TABLE full_identity (a int);
CREATE TABLE lossy (id int PRIMARY KEY, price numeric(12,2), ratio float4, at timestamp,
                    doc jsonb, code varchar(10), wider numeric(14,4), big int);
CREATE SCHEMA "Odd ""Schema"" ü";
CREATE TABLE "Odd ""Schema"" ü"."it's a ""table"" 表" ("Col 'x'" int PRIMARY KEY, "naïve" varchar(40));
"#;

fn clusters() -> (Cluster, Cluster) {
    let bins = PgBinaries::from_env().expect("the default PostgreSQL binaries");
    let blue = Cluster::start(ClusterOptions::new(bins.clone()).name("blue")).expect("blue starts");
    let green = Cluster::start(ClusterOptions::new(bins).name("green")).expect("green starts");
    blue.create_database("app").unwrap();
    green.create_database("app").unwrap();
    blue.psql("app", BLUE).unwrap();
    green.psql("app", GREEN).unwrap();
    (blue, green)
}

#[tokio::test]
async fn every_verdict_kind_on_two_clusters() {
    let (blue, green) = clusters();
    let b = connect_uri(&blue.uri("app")).await;
    let g = connect_uri(&green.uri("app")).await;
    let plan = schema::plan(&b, &g, Some("pub \"all\" ü"), &Mapping::default())
        .await
        .unwrap();

    let verdicts: Vec<(String, Verdict)> = plan
        .tables
        .iter()
        .map(|t| (t.table.name.clone(), t.verdict))
        .collect();
    let expect = |name: &str| {
        verdicts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} is in the plan: {verdicts:?}"))
    };
    assert_eq!(plan.tables.len(), 14, "{verdicts:?}");
    assert_eq!(expect("same"), Verdict::Fine);
    assert_eq!(expect("added_default"), Verdict::Fine);
    assert_eq!(expect("added_not_null"), Verdict::Blocked);
    assert_eq!(
        expect("dropped"),
        Verdict::Blocked,
        "a blue column green lacks would lose its values"
    );
    assert_eq!(expect("key_dropped"), Verdict::Blocked);
    assert_eq!(
        expect("cast_ok"),
        Verdict::Warning,
        "the NOT NULL on `maybe` warns"
    );
    assert_eq!(expect("cast_blocked"), Verdict::Blocked);
    assert_eq!(expect("generated_on_green"), Verdict::Blocked);
    assert_eq!(expect("missing"), Verdict::Blocked);
    assert_eq!(expect("no_key"), Verdict::Warning);
    assert_eq!(expect("nothing_identity"), Verdict::Warning);
    assert_eq!(expect("full_identity"), Verdict::Fine);
    assert_eq!(expect("lossy"), Verdict::Blocked);
    assert_eq!(expect("it's a \"table\" 表"), Verdict::Cast);
    assert_eq!(plan.verdict(), Verdict::Blocked);

    let t = plan.table("public", "added_not_null").unwrap();
    let flag = t.column("flag").unwrap();
    assert_eq!(flag.verdict, Verdict::Blocked);
    assert!(flag.note.contains("add a default"), "{}", flag.note);
    assert!(flag.note.contains("\"flag\""), "{}", flag.note);
    let t = plan.table("public", "added_default").unwrap();
    assert!(t.columns.iter().all(|c| c.verdict == Verdict::Fine));
    assert!(t.column("flag").unwrap().note.contains("default false"));

    let t = plan.table("public", "cast_ok").unwrap();
    let casts: Vec<(&str, Option<CastKind>, Verdict)> = t
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.cast, c.verdict))
        .collect();
    assert_eq!(
        casts,
        [
            ("id", None, Verdict::Fine),
            ("n", Some(CastKind::Implicit), Verdict::Cast),
            ("big", Some(CastKind::Assignment), Verdict::Cast),
            ("v", Some(CastKind::Length), Verdict::Cast),
            ("j", Some(CastKind::Io), Verdict::Cast),
            ("m", Some(CastKind::Io), Verdict::Cast),
            ("arr", Some(CastKind::Implicit), Verdict::Cast),
            ("maybe", None, Verdict::Warning),
        ]
    );
    let mappings = t.column_mappings();
    assert_eq!(mappings.len(), 8);
    assert_eq!(mappings[1].blue, "n");
    assert_eq!(mappings[1].green, "n");
    assert_eq!(mappings[1].green_type, "bigint");
    assert_eq!(mappings[1].cast, Some(CastKind::Implicit));

    let t = plan.table("public", "cast_blocked").unwrap();
    let at = t.column("at").unwrap();
    assert_eq!(at.verdict, Verdict::Blocked);
    assert!(
        at.note
            .contains("no assignment cast from timestamp with time zone to integer"),
        "{}",
        at.note
    );
    assert!(t.column_mappings().iter().all(|m| m.blue != "at"));

    let t = plan.table("public", "dropped").unwrap();
    let gone = t.column("gone").unwrap();
    assert_eq!(gone.verdict, Verdict::Blocked);
    assert!(
        gone.note
            .contains("ALTER TABLE \"public\".\"dropped\" ADD COLUMN \"gone\" text")
            && gone.note.contains("--exclude 'public.dropped:gone'"),
        "{}",
        gone.note
    );

    // Narrower modifiers and silent losses are blocked; widening and loud failures are casts.
    let t = plan.table("public", "lossy").unwrap();
    let verdict = |c: &str| {
        let column = t.column(c).unwrap();
        (column.verdict, column.note.clone())
    };
    for (column, why) in [
        ("price", "rounded to 2 decimals"),
        ("ratio", "rounds to 6 significant digits"),
        ("at", "drops the UTC offset"),
        ("doc", "normalizes"),
        ("code", "longer values fail"),
    ] {
        let (v, note) = verdict(column);
        assert_eq!(v, Verdict::Blocked, "{column}: {note}");
        assert!(note.contains(why), "{column}: {note}");
        assert!(
            note.contains("--lossy-cast 'public.lossy:") && note.contains("ALTER COLUMN"),
            "{column}: both fixes: {note}"
        );
    }
    assert_eq!(verdict("wider").0, Verdict::Cast);
    let (v, note) = verdict("big");
    assert_eq!(v, Verdict::Cast);
    assert!(note.contains("out of the range of integer fail"), "{note}");
    let t = plan.table("public", "key_dropped").unwrap();
    assert!(t.column("b").unwrap().note.contains("key column \"b\""));
    let t = plan.table("public", "missing").unwrap();
    assert!(!t.on_green);
    assert!(t.notes[0]
        .message
        .contains("\"public\".\"missing\" does not exist on green"));
    let t = plan.table("public", "no_key").unwrap();
    assert!(
        t.notes[0].message.contains("no primary key"),
        "{:?}",
        t.notes
    );
    assert!(plan.table("public", "not_published").is_none());

    let json = plan.to_json();
    assert_eq!(json["verdict"], "blocked");
    assert_eq!(json["publication"], "pub \"all\" ü");
    let odd = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["schema"] == "Odd \"Schema\" ü")
        .unwrap();
    assert_eq!(odd["columns"][1]["name"], "naïve");
    assert_eq!(odd["columns"][1]["cast"], "binary");

    // Declared: `gone` excluded, the lossy columns accepted.
    let c = |text: &str| text.parse::<ColumnRef>().unwrap();
    let mapping = Mapping::new(
        Renames::default(),
        [c("dropped:gone")],
        ["price", "ratio", "at", "doc", "code"].map(|col| c(&format!("lossy:{col}"))),
    )
    .unwrap();
    let plan = schema::plan(&b, &g, Some("pub \"all\" ü"), &mapping)
        .await
        .unwrap();
    let t = plan.table("public", "dropped").unwrap();
    assert_eq!(t.verdict, Verdict::Fine);
    let gone = t.column("gone").unwrap();
    assert!(
        gone.excluded && gone.note.contains("excluded"),
        "{}",
        gone.note
    );
    assert!(t.column_mappings().iter().all(|m| m.blue != "gone"));
    let t = plan.table("public", "lossy").unwrap();
    assert_eq!(t.verdict, Verdict::Warning);
    assert!(t
        .column("price")
        .unwrap()
        .note
        .contains("accepted lossy cast"));
    assert_eq!(t.column_mappings().len(), 8, "accepted columns are carried");
    // A key column cannot be excluded.
    let mapping = Mapping::new(Renames::default(), [c("same:id")], []).unwrap();
    let plan = schema::plan(&b, &g, Some("pub \"all\" ü"), &mapping)
        .await
        .unwrap();
    let id = plan.table("public", "same").unwrap().column("id").unwrap();
    assert_eq!(id.verdict, Verdict::Blocked);
    assert!(
        id.note.contains("key column \"id\" is excluded"),
        "{}",
        id.note
    );
}

#[tokio::test]
async fn column_lists_missing_publications_and_all_tables() {
    let (blue, green) = clusters();
    let b = connect_uri(&blue.uri("app")).await;
    let g = connect_uri(&green.uri("app")).await;

    // `dropped (id)`: the column `gone` is not published, so it is not compared.
    let plan = schema::plan(&b, &g, Some("fine_only"), &Mapping::default())
        .await
        .unwrap();
    assert_eq!(plan.verdict(), Verdict::Fine);
    let dropped = plan.table("public", "dropped").unwrap();
    assert!(dropped.column("gone").is_none());

    let err = schema::plan(&b, &g, Some("no \"such\" pub"), &Mapping::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SchemaError::NoPublication { .. }), "{err}");
    assert!(err.to_string().contains("\"no \"\"such\"\" pub\""), "{err}");

    // Without a publication: every user table, the unpublished one included.
    let plan = schema::plan(&b, &g, None, &Mapping::default())
        .await
        .unwrap();
    assert_eq!(plan.tables.len(), 15);
    assert_eq!(
        plan.table("public", "not_published").unwrap().verdict,
        Verdict::Blocked
    );
}

#[test]
fn the_cli_prints_tables_or_json_and_fails_when_blocked() {
    let (blue, green) = clusters();
    let (source, target) = (blue.uri("app"), green.uri("app"));

    let out = blueshift(&[
        "plan",
        "--source",
        &source,
        "--target",
        &target,
        "--publication",
        "fine_only",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("table \"public\".\"same\": fine"), "{text}");
    assert!(
        text.contains("2 table(s): 2 fine, 0 cast, 0 warning, 0 blocked"),
        "{text}"
    );

    let out = blueshift(&[
        "plan",
        "--source",
        &source,
        "--target",
        &target,
        "--publication",
        "pub \"all\" ü",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("table \"public\".\"added_not_null\": blocked"),
        "{text}"
    );
    assert!(text.contains("\"Col 'x'\""), "{text}");
    assert!(
        stderr(&out).contains("\"public\".\"missing\""),
        "{}",
        stderr(&out)
    );

    let out = blueshift(&[
        "plan",
        "--source",
        &source,
        "--target",
        &target,
        "--publication",
        "pub \"all\" ü",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["verdict"], "blocked");
    assert_eq!(json["tables"].as_array().unwrap().len(), 14);
}
