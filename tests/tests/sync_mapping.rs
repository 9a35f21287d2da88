//! Schema mapping, blue ≠ green, with the real binary between two real clusters: green adds a
//! column with a default, drops a column (declared excluded), widens types (int4 → int8,
//! varchar(10) → text) and renames columns (a key column among them), declared in a TOML file
//! (`[[rename]]`, `[[exclude]]`) and with `--rename`, `--exclude`. Rows blue held before sync are
//! backfilled through the mapping; streamed INSERT, UPDATE (one changing only the excluded
//! column) and DELETE — REPLICA IDENTITY FULL on a table with an excluded column too — give
//! exactly the expected green rows. A green-only NOT NULL column without a default, a blue-only
//! column not excluded, and renames naming a column or table that does not exist, stop sync
//! before any data moves, naming them. `blueshift plan` prints the mapping, and `--json` carries
//! it. The applier alone: renames, excluded columns, and the errors preflight normally catches
//! first.

#[path = "support/applier.rs"]
mod applier_support;
#[path = "support/cli.rs"]
mod cli;
#[path = "support/sync.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use applier_support::{delete, full, insert, key, relation, tx, update};
use blueshift_applier::{Applier, ApplierOptions, ApplyError};
use blueshift_decoder::pgoutput::ReplicaIdentity;

use blueshift_engine::schema::{
    self, CastKind, ColumnMapping, ColumnRef, Mapping, Rename, Renames, Verdict,
};
use blueshift_tests::{blueshift_binary, eventually};
use support::Pair;

const BLUE: &str = r#"
CREATE TABLE users (id int PRIMARY KEY, name text, legacy text, age int, code varchar(10), nick text);
CREATE TABLE events (a int, b text, gone text);
ALTER TABLE events REPLICA IDENTITY FULL;
CREATE TABLE orders (ref int PRIMARY KEY, qty int, "Note ""x""" text);
CREATE TABLE same (id int PRIMARY KEY, v text);
CREATE PUBLICATION pub FOR ALL TABLES;
"#;

/// users: `name` → `full_name` and `nick` → `handle` (renamed), `legacy` dropped (excluded),
/// `id` and `age` int4 → int8, `code` varchar(10) → text, `created` added with a default, `note`
/// added nullable; events: `gone` dropped (excluded) under REPLICA IDENTITY FULL; orders: the
/// key `ref` → `order_ref` and `qty` → `quantity` renamed.
const GREEN: &str = r#"
CREATE TABLE users (id bigint PRIMARY KEY, full_name text, age bigint, code text, handle text,
                    created text NOT NULL DEFAULT 'green', note text);
CREATE UNIQUE INDEX users_handle ON users (handle);
CREATE TABLE events (a int, b text);
CREATE TABLE orders (order_ref int PRIMARY KEY, quantity int, "Note ""x""" text);
CREATE TABLE same (id int PRIMARY KEY, v text);
"#;

/// The mapping of the TOML file; `RENAME_FLAGS` holds the rest.
const RENAME_FILE: &str = r#"
[[rename]]
table = "public.users"
from = "name"
to = "full_name"

[[rename]]
table = "orders"
from = "ref"
to = "order_ref"

[[exclude]]
table = "events"
column = "gone"
"#;

const RENAME_FLAGS: &[&str] = &[
    "--rename",
    "users:nick=handle",
    "--rename",
    "public.orders:qty=quantity",
    "--exclude",
    "public.users:legacy",
];

/// Each pair of queries, on blue and on green, must print the same rows.
const EXPECTED: &[(&str, &str)] = &[
    (
        "SELECT id, name, age, code, nick, 'green', NULL::text FROM users ORDER BY id",
        "SELECT id, full_name, age, code, handle, created, note FROM users ORDER BY id",
    ),
    (
        "SELECT a, b FROM events ORDER BY a, b",
        "SELECT a, b FROM events ORDER BY a, b",
    ),
    (
        r#"SELECT ref, qty, "Note ""x""" FROM orders ORDER BY 1"#,
        r#"SELECT order_ref, quantity, "Note ""x""" FROM orders ORDER BY 1"#,
    ),
    (
        "SELECT id, v FROM same ORDER BY id",
        "SELECT id, v FROM same ORDER BY id",
    ),
];

fn pair(name: &str) -> Pair {
    let pair = Pair::new(name);
    pair.blue.psql("app", BLUE).expect("blue's schema");
    pair.green.psql("app", GREEN).expect("green's schema");
    pair
}

fn rename_file(pair: &Pair, text: &str) -> PathBuf {
    let path = pair.logs.path().join("renames.toml");
    std::fs::write(&path, text).expect("settings file");
    path
}

/// Waits until every query pair of `EXPECTED` prints the same on blue and green.
fn converge_mapped(pair: &Pair) {
    eventually(Duration::from_secs(60), || {
        for (on_blue, on_green) in EXPECTED {
            let b = pair.blue.psql("app", on_blue)?;
            let g = pair.green.psql("app", on_green)?;
            anyhow::ensure!(b == g, "{on_green}\nblue:\n{b}\ngreen:\n{g}");
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("green did not converge: {e:#}"));
}

#[test]
fn streamed_changes_land_in_green_s_schema() {
    let pair = pair("mapping");
    // Rows blue holds before sync starts: the backfill copies them through the same mapping.
    pair.blue
        .psql(
            "app",
            r#"
            INSERT INTO users SELECT g, 'name ' || g, 'legacy ' || g, g, 'c' || g, 'nick' || g
              FROM generate_series(1, 100) g;
            INSERT INTO events VALUES (1, 'a', 'g1'), (1, 'a', 'g2');
            INSERT INTO orders SELECT g, g * 2, 'n' || g FROM generate_series(1, 30) g;
            "#,
        )
        .expect("rows before sync");
    let file = rename_file(&pair, RENAME_FILE);
    let mut args = vec!["--workers", "2", "--config", file.to_str().unwrap()];
    args.extend_from_slice(RENAME_FLAGS);
    let mut sync = pair.sync(&args);
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT count(*) FROM users WHERE full_name IS NOT NULL"
            )
            .unwrap(),
        "100",
        "the backfill copied blue's rows into the renamed column"
    );
    pair.blue
        .psql(
            "app",
            r#"
            INSERT INTO users SELECT g, 'name ' || g, 'legacy ' || g, g, 'c' || g, 'nick' || g
              FROM generate_series(101, 200) g;
            INSERT INTO users VALUES (201, NULL, NULL, NULL, NULL, NULL),
                                     (202, 'ünï "q"', 'l', 2147483647, '0123456789', NULL);
            UPDATE users SET legacy = 'only the dropped column' WHERE id = 1;
            UPDATE users SET name = 'renamed ' || id, age = age + 1000 WHERE id BETWEEN 2 AND 20;
            UPDATE users SET id = 1000 WHERE id = 21;
            UPDATE users SET nick = NULL WHERE id = 22;
            UPDATE users SET nick = 'nick 23 again' WHERE id = 23;
            DELETE FROM users WHERE id BETWEEN 30 AND 39;
            INSERT INTO events VALUES (2, 'b', 'g3'), (3, NULL, 'g4');
            UPDATE events SET gone = 'only the dropped column' WHERE a = 2;
            UPDATE events SET b = 'c' WHERE a = 2;
            DELETE FROM events WHERE gone = 'g1';
            UPDATE events SET b = 'n' WHERE a = 3;
            INSERT INTO orders SELECT g, g * 2, 'n' || g FROM generate_series(31, 50) g;
            UPDATE orders SET qty = qty + 1 WHERE ref <= 10;
            UPDATE orders SET ref = ref + 1000 WHERE ref BETWEEN 11 AND 15;
            DELETE FROM orders WHERE ref > 45 AND ref < 1000;
            INSERT INTO same VALUES (1, 'x'), (2, 'y');
            UPDATE same SET v = 'z' WHERE id = 2;
            "#,
        )
        .expect("workload");
    converge_mapped(&pair);

    // The exact rows, not only equal to blue's: renamed, widened, defaulted, dropped.
    let green = |sql: &str| pair.green.psql("app", sql).unwrap();
    assert_eq!(
        green("SELECT id, full_name, age, code, handle, created, note FROM users WHERE id IN (1, 2, 22, 201, 202, 1000) ORDER BY id"),
        "1|name 1|1|c1|nick1|green|\n\
         2|renamed 2|1002|c2|nick2|green|\n\
         22|name 22|22|c22||green|\n\
         201|||||green|\n\
         202|ünï \"q\"|2147483647|0123456789||green|\n\
         1000|name 21|21|c21|nick21|green|"
    );
    assert_eq!(green("SELECT count(*) FROM users"), "192");
    assert_eq!(
        green("SELECT handle FROM users WHERE id = 23"),
        "nick 23 again"
    );
    // REPLICA IDENTITY FULL without `gone`: one of the two (1, 'a') rows was deleted.
    assert_eq!(
        green("SELECT a, b FROM events ORDER BY a, b"),
        "1|a\n2|c\n3|n"
    );
    assert_eq!(
        green(
            r#"SELECT order_ref, quantity, "Note ""x""" FROM orders WHERE order_ref IN (1, 11, 1011, 45) ORDER BY 1"#
        ),
        "1|3|n1\n45|90|n45\n1011|22|n11"
    );
    assert_eq!(green("SELECT count(*) FROM orders"), "45");

    // A second round of changes after the first has settled, through the same mappings.
    pair.blue
        .psql(
            "app",
            "UPDATE users SET legacy = NULL, code = 'again' WHERE id <= 5;
             DELETE FROM events WHERE a = 1;
             UPDATE orders SET \"Note \"\"x\"\"\" = NULL WHERE ref = 1;",
        )
        .unwrap();
    converge_mapped(&pair);
    assert_eq!(green("SELECT count(*) FROM events"), "2");
    assert!(sync.running(), "{}", sync.log_text());
    assert!(sync.terminate());
}

/// Runs `blueshift sync` expecting it to stop before any data moves; returns its stderr.
fn refused(pair: &Pair, extra: &[&str]) -> String {
    let out = sync_once(pair, extra);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "sync started: {err}");
    assert_eq!(
        pair.blue
            .psql("app", "SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "0",
        "{err}"
    );
    err
}

fn sync_once(pair: &Pair, extra: &[&str]) -> Output {
    Command::new(blueshift_binary())
        .arg("sync")
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .args(["--publication", "pub", "--slot", "bs"])
        .args(extra)
        .env_remove("BLUESHIFT_CONFIG")
        .output()
        .expect("runs")
}

#[test]
fn unfillable_columns_and_bad_renames_stop_sync_naming_them() {
    let pair = Pair::new("mapping-refused");
    pair.blue
        .psql(
            "app",
            "CREATE TABLE users (id int PRIMARY KEY, name text, legacy text);
             CREATE PUBLICATION pub FOR ALL TABLES;",
        )
        .unwrap();
    pair.green
        .psql(
            "app",
            "CREATE TABLE users (id int PRIMARY KEY, full_name text, tenant int NOT NULL)",
        )
        .unwrap();
    let rename = ["--rename", "users:name=full_name"];

    // Green's NOT NULL column without a default: no value from blue can fill it.
    let err = refused(&pair, &rename);
    assert!(
        err.contains("column \"tenant\" of table \"public\".\"users\""),
        "{err}"
    );
    assert!(
        err.contains("add a default") && err.contains("make it nullable"),
        "{err}"
    );
    // Blue's `legacy` is not on green: its values would be lost unless it is excluded.
    assert!(
        err.contains("column \"legacy\" of table \"public\".\"users\": green has no column"),
        "{err}"
    );
    assert!(err.contains("--exclude 'public.users:legacy'"), "{err}");
    pair.green
        .psql("app", "ALTER TABLE users ALTER COLUMN tenant SET DEFAULT 0")
        .unwrap();

    // A rename from a column blue does not publish.
    let err = refused(&pair, &["--rename", "users:nope=full_name"]);
    assert!(
        err.contains(
            "the rename of column \"nope\" to \"full_name\" names no column blue publishes in \
             table \"public\".\"users\""
        ),
        "{err}"
    );
    // A rename to a column green does not have.
    let err = refused(&pair, &["--rename", "users:name=nope"]);
    assert!(
        err.contains("column \"name\" → \"nope\" of table \"public\".\"users\": renamed to \"nope\", which green does not have"),
        "{err}"
    );
    // A rename of a table blue does not publish.
    let err = refused(&pair, &["--rename", "public.nosuch:a=b"]);
    assert!(
        err.contains(
            "a rename, exclusion or lossy cast names table \"public\".\"nosuch\", which blue \
             does not publish in publication \"pub\""
        ),
        "{err}"
    );
    // Bad syntax is a usage error.
    let out = sync_once(&pair, &["--rename", "users:name"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("invalid rename") && err.contains("[schema.]table:from=to"),
        "{err}"
    );
    // The same column renamed in the file and on the command line.
    let file = rename_file(
        &pair,
        "[[rename]]\ntable = \"users\"\nfrom = \"name\"\nto = \"full_name\"\n",
    );
    let err = refused(
        &pair,
        &[
            "--config",
            file.to_str().unwrap(),
            "--rename",
            "users:name=other",
        ],
    );
    assert!(
        err.contains("column \"name\" of table \"public\".\"users\" is renamed twice"),
        "{err}"
    );
    // A column renamed to itself.
    let err = refused(&pair, &["--rename", "users:name=name"]);
    assert!(err.contains("to itself"), "{err}");

    // An exclusion naming a column blue does not have (yet) warns: it takes effect when blue
    // adds the column.
    let out = plan(
        &pair,
        &[
            "--config",
            file.to_str().unwrap(),
            "--exclude",
            "users:legacy",
            "--exclude",
            "users:nope",
        ],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("warning: the exclusion of column \"nope\" names no column blue publishes"),
        "{text}"
    );

    // Fixed: the declared rename and exclusion are all it takes.
    let mut sync = pair.sync(&[
        "--config",
        file.to_str().unwrap(),
        "--exclude",
        "users:legacy",
    ]);
    pair.blue
        .psql("app", "INSERT INTO users VALUES (1, 'ada', 'gone')")
        .unwrap();
    eventually(Duration::from_secs(60), || {
        let row = pair
            .green
            .psql("app", "SELECT id, full_name, tenant FROM users")?;
        anyhow::ensure!(row == "1|ada|0", "green has {row:?}");
        Ok(())
    })
    .unwrap();
    assert!(sync.terminate());
}

/// The line of `text` that contains `needle`.
fn line_with<'t>(text: &'t str, needle: &str) -> &'t str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

fn plan(pair: &Pair, extra: &[&str]) -> Output {
    let mut args = vec!["--publication", "pub"];
    args.extend_from_slice(extra);
    cli::run("plan", &pair.blue.uri("app"), &pair.green.uri("app"), &args)
}

#[test]
fn plan_prints_the_mapping_with_renames() {
    let pair = pair("mapping-plan");
    let file = rename_file(&pair, RENAME_FILE);
    let mut args = vec!["--config", file.to_str().unwrap()];
    args.extend_from_slice(RENAME_FLAGS);

    let text = cli::succeeded("plan", &plan(&pair, &args));
    assert!(text.contains("table \"public\".\"users\": cast"), "{text}");
    let line = line_with(&text, "\"full_name\"");
    assert!(
        line.trim_start().starts_with("\"name\"") && line.contains(" → "),
        "{line}"
    );
    assert!(
        line_with(&text, "\"handle\"").contains("\"nick\""),
        "{text}"
    );
    let line = line_with(&text, "\"legacy\"");
    assert!(line.contains("→ (excluded)"), "{line}");
    let line = line_with(&text, "\"created\"");
    assert!(line.trim_start().starts_with("(default)"), "{line}");
    assert!(line.contains("takes its default 'green'::text"), "{line}");
    let line = line_with(&text, "\"age\"");
    assert!(line.contains("integer → bigint (implicit cast)"), "{line}");
    let line = line_with(&text, "\"code\"");
    assert!(
        line.contains("character varying(10) → text (binary cast)"),
        "{line}"
    );
    let line = line_with(&text, "\"order_ref\"");
    assert!(line.trim_start().starts_with("\"ref\""), "{line}");
    assert!(
        text.contains("4 table(s): 3 fine, 1 cast, 0 warning, 0 blocked"),
        "{text}"
    );

    // Without the renames, the key of orders has nowhere to go.
    let out = plan(&pair, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("table \"public\".\"orders\": blocked"),
        "{text}"
    );
    assert!(line_with(&text, "\"ref\"").contains("(missing)"), "{text}");
    assert!(
        line_with(&text, "\"legacy\"").contains("(missing)"),
        "not excluded without the flags: {text}"
    );

    // JSON: every column with its green name, the mapping, and whether binary COPY may be used.
    let mut json_args = args.clone();
    json_args.push("--json");
    let json: serde_json::Value =
        serde_json::from_str(&cli::succeeded("plan", &plan(&pair, &json_args))).unwrap();
    let table = |name: &str| {
        json["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == name)
            .unwrap_or_else(|| panic!("{name} in {json}"))
            .clone()
    };
    let users = table("users");
    assert_eq!(users["binary_compatible"], false);
    let mappings: Vec<(String, String)> = users["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["blue"].as_str().unwrap().to_owned(),
                m["green"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        mappings,
        [
            ("id", "id"),
            ("name", "full_name"),
            ("age", "age"),
            ("code", "code"),
            ("nick", "handle"),
        ]
        .map(|(b, g)| (b.to_owned(), g.to_owned()))
    );
    assert_eq!(users["mappings"][2]["cast"], "implicit");
    let name = &users["columns"][1];
    assert_eq!(name["name"], "name");
    assert_eq!(name["green_name"], "full_name");
    assert_eq!(name["renamed_to"], "full_name");
    let legacy = &users["columns"][2];
    assert_eq!(legacy["green_name"], serde_json::Value::Null);
    assert_eq!(table("same")["binary_compatible"], true);
    assert_eq!(table("events")["binary_compatible"], true);
    assert_eq!(table("orders")["binary_compatible"], true);
    assert_eq!(
        table("orders")["mappings"][0]["green"],
        "order_ref",
        "{json}"
    );
}

/// The library the backfill uses: `column_mappings()` and `binary_compatible()` with renames.
#[tokio::test]
async fn the_plan_library_maps_renamed_columns() {
    let pair = pair("mapping-lib");
    let blue = pair.blue.connect("app").await.unwrap();
    let green = pair.green.connect("app").await.unwrap();
    let renames = Renames::new(
        [
            "users:name=full_name",
            "users:nick=handle",
            "orders:ref=order_ref",
        ]
        .iter()
        .map(|r| r.parse::<Rename>().unwrap())
        .chain([Rename::new("public.orders", "qty", "quantity").unwrap()]),
    )
    .unwrap();
    let c = |text: &str| text.parse::<ColumnRef>().unwrap();
    let mapping = Mapping::new(renames.clone(), [c("users:legacy"), c("events:gone")], []).unwrap();
    let plan = schema::plan(&blue, &green, Some("pub"), &mapping)
        .await
        .unwrap();
    assert_eq!(plan.verdict(), Verdict::Cast);

    let users = plan.table("public", "users").unwrap();
    let mapping = |blue: &str, green: &str, green_type: &str, cast| ColumnMapping {
        blue: blue.to_owned(),
        green: green.to_owned(),
        green_type: green_type.to_owned(),
        cast,
    };
    assert_eq!(
        users.column_mappings(),
        [
            mapping("id", "id", "bigint", Some(CastKind::Implicit)),
            mapping("name", "full_name", "text", None),
            mapping("age", "age", "bigint", Some(CastKind::Implicit)),
            mapping("code", "code", "text", Some(CastKind::Binary)),
            mapping("nick", "handle", "text", None),
        ]
    );
    assert!(!users.binary_compatible());
    let name = users.column("name").unwrap();
    assert_eq!(
        (name.renamed_to.as_deref(), name.green_name(), name.verdict),
        (Some("full_name"), Some("full_name"), Verdict::Fine)
    );
    assert_eq!(name.label(), "\"name\" → \"full_name\"");
    let legacy = users.column("legacy").unwrap();
    assert_eq!((legacy.green_name(), legacy.verdict), (None, Verdict::Fine));
    assert!(legacy.excluded);
    // Not excluded, it is blocked: its values would be lost.
    let plan_without = schema::plan(&blue, &green, Some("pub"), &Mapping::from(renames))
        .await
        .unwrap();
    let legacy = plan_without
        .table("public", "users")
        .unwrap()
        .column("legacy")
        .unwrap();
    assert_eq!(legacy.verdict, Verdict::Blocked);
    assert!(!legacy.excluded);
    let created = users.column("created").unwrap();
    assert!(created.blue.is_none() && created.verdict == Verdict::Fine);

    let orders = plan.table("public", "orders").unwrap();
    assert!(orders.binary_compatible());
    assert_eq!(
        orders
            .column_mappings()
            .iter()
            .map(|m| (m.blue.as_str(), m.green.as_str()))
            .collect::<Vec<_>>(),
        [
            ("ref", "order_ref"),
            ("qty", "quantity"),
            ("Note \"x\"", "Note \"x\"")
        ]
    );
    let events = plan.table("public", "events").unwrap();
    assert!(events.binary_compatible());
    assert_eq!(events.column_mappings().len(), 2);

    // A blue column whose green namesake receives a renamed column has nowhere to go: blocked
    // unless excluded.
    let swap = Renames::new(["users:age=code".parse::<Rename>().unwrap()]).unwrap();
    let plan = schema::plan(&blue, &green, Some("pub"), &Mapping::from(swap.clone()))
        .await
        .unwrap();
    let users = plan.table("public", "users").unwrap();
    let code = users.column("code").unwrap();
    assert_eq!(code.verdict, Verdict::Blocked);
    assert!(
        code.note.contains("receives blue's \"age\"")
            && code.note.contains("--exclude 'public.users:code'"),
        "{}",
        code.note
    );
    let excluded = Mapping::new(swap, [c("users:code"), c("users:legacy")], []).unwrap();
    let plan = schema::plan(&blue, &green, Some("pub"), &excluded)
        .await
        .unwrap();
    let users = plan.table("public", "users").unwrap();
    assert_eq!(users.column("code").unwrap().verdict, Verdict::Fine);
    assert!(users
        .column_mappings()
        .iter()
        .any(|m| m.blue == "age" && m.green == "code" && m.cast == Some(CastKind::Io)));

    // A rename naming a table not compared is an error.
    let err = schema::plan(
        &blue,
        &green,
        Some("pub"),
        &Mapping::from(Renames::new(["nosuch:a=b".parse::<Rename>().unwrap()]).unwrap()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, schema::SchemaError::RenameTable { .. }),
        "{err}"
    );
}

/// The applier on its own, with hand-built relation descriptions: what preflight would catch
/// first is still an error naming the column.
#[tokio::test]
async fn the_applier_maps_columns_and_names_what_it_cannot_map() {
    let (green, config) = applier_support::green(
        "mapping-applier",
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, full_name text, extra text DEFAULT 'd');
         CREATE TABLE f (a int, b text);",
    );
    let t = relation(
        17000,
        "public",
        "t",
        ReplicaIdentity::Default,
        &[("id", true), ("name", false), ("legacy", false)],
    );
    let f = relation(
        17001,
        "public",
        "f",
        ReplicaIdentity::Full,
        &[("a", true), ("gone", true), ("b", true)],
    );
    let mapping = |list: &[&str], excluded: &[&str]| {
        Arc::new(
            Mapping::new(
                Renames::new(list.iter().map(|r| r.parse::<Rename>().unwrap())).unwrap(),
                excluded.iter().map(|c| c.parse::<ColumnRef>().unwrap()),
                [],
            )
            .unwrap(),
        )
    };
    let connect = |origin: &str, mapping: Arc<Mapping>| {
        let mut options = ApplierOptions::new(origin);
        options.mapping = mapping;
        Applier::connect(&config, options)
    };

    // Not excluded, a blue column green lacks is an error naming it and both fixes.
    let mut applier = connect("blueshift_map_x", mapping(&["t:name=full_name"], &[]))
        .await
        .unwrap();
    let err = applier
        .apply(&mut tx(
            0x80,
            vec![insert(&t, &[Some("9"), Some("z"), Some("l")])],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApplyError::UnmappedColumn { column, .. } if column == "legacy"),
        "{err:?}"
    );
    assert!(err.is_blocked(), "sync waits for green to be fixed");
    assert!(
        err.to_string().contains("ADD COLUMN") && err.to_string().contains("--exclude"),
        "{err}"
    );
    applier.close().await;

    let mut applier = connect(
        "blueshift_map_0",
        mapping(&["t:name=full_name"], &["t:legacy", "f:gone"]),
    )
    .await
    .unwrap();
    applier
        .apply(&mut tx(
            0x100,
            vec![
                insert(&t, &[Some("1"), Some("a"), Some("l1")]),
                insert(&t, &[Some("2"), Some("b"), Some("l2")]),
                update(
                    &t,
                    None,
                    &[Some("1"), Some("a"), Some("only legacy changed")],
                ),
                update(&t, None, &[Some("2"), Some("b2"), None]),
                insert(&t, &[Some("3"), Some("c"), None]),
                delete(&t, key(&[Some("3"), None, None])),
                insert(&f, &[Some("1"), Some("g1"), Some("x")]),
                insert(&f, &[Some("1"), Some("g2"), Some("x")]),
                insert(&f, &[Some("2"), Some("g3"), None]),
                update(
                    &f,
                    Some(full(&[Some("2"), Some("g3"), None])),
                    &[Some("2"), Some("g4"), Some("y")],
                ),
                delete(&f, full(&[Some("1"), Some("g1"), Some("x")])),
            ],
        ))
        .await
        .expect("applied");
    assert_eq!(
        green
            .psql("app", "SELECT id, full_name, extra FROM t ORDER BY id")
            .unwrap(),
        "1|a|d\n2|b2|d"
    );
    assert_eq!(
        green.psql("app", "SELECT a, b FROM f ORDER BY a").unwrap(),
        "1|x\n2|y"
    );
    applier.close().await;

    // A rename to a column green lacks.
    let mut applier = connect("blueshift_map_1", mapping(&["t:name=nope"], &["t:legacy"]))
        .await
        .unwrap();
    let err = applier
        .apply(&mut tx(
            0x200,
            vec![insert(&t, &[Some("9"), Some("z"), None])],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApplyError::MissingRenameTarget { from, to, .. } if from == "name" && to == "nope"),
        "{err:?}"
    );
    assert!(err.to_string().contains("fix the rename"), "{err}");
    applier.close().await;

    // A key column green lacks (not under REPLICA IDENTITY FULL).
    let keyed_by_legacy = relation(
        17000,
        "public",
        "t",
        ReplicaIdentity::Index,
        &[("id", false), ("name", false), ("legacy", true)],
    );
    let mut applier = connect("blueshift_map_2", mapping(&[], &["t:name"]))
        .await
        .unwrap();
    let err = applier
        .apply(&mut tx(
            0x300,
            vec![insert(&keyed_by_legacy, &[Some("9"), None, Some("k")])],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApplyError::MissingKeyColumn { column, .. } if column == "legacy"),
        "{err:?}"
    );
    applier.close().await;
    // …and excluding it does not help: rows are found by it.
    let mut applier = connect("blueshift_map_3", mapping(&[], &["t:name", "t:legacy"]))
        .await
        .unwrap();
    let err = applier
        .apply(&mut tx(
            0x400,
            vec![insert(&keyed_by_legacy, &[Some("9"), None, Some("k")])],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApplyError::ExcludedKeyColumn { column, .. } if column == "legacy"),
        "{err:?}"
    );
    applier.close().await;
    assert_eq!(green.psql("app", "SELECT count(*) FROM t").unwrap(), "2");
}
