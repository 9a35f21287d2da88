//! A role that can create in `public` defines operators and functions named like those
//! blueshift uses — `=` for `varchar` and for a domain, `pg_drop_replication_slot(text)`,
//! `obj_description(oid, text)`, `pg_advisory_lock(bigint)`, `pg_try_advisory_lock(bigint)`,
//! `count(*)`, `set_config`, `current_setting`, `now()` — on both clusters, and the database's
//! `search_path` puts `public` before `pg_catalog`. Every body writes into an audit table. After
//! migrate, sync (backfill and streamed UPDATE/DELETE by those keys), status and cleanup, run as
//! the superuser, the audit table is empty on both sides, and cleanup really dropped the slot
//! and left the publication that is not blueshift's.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use blueshift_tests::{
    blueshift_binary, eventually, succeeded, Cluster, ClusterOptions, PgBinaries,
};

/// The attacker's objects, created by role `mallory`.
const TRAPS: &str = r#"
CREATE TABLE public.audit (what text, app text, at timestamptz DEFAULT pg_catalog.clock_timestamp());
GRANT INSERT ON public.audit TO PUBLIC;
CREATE FUNCTION public.trap(what text) RETURNS void LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog
  AS $$ INSERT INTO public.audit (what, app)
        VALUES (what, pg_catalog.current_setting('application_name')) $$;

CREATE FUNCTION public.eq_varchar(varchar, varchar) RETURNS boolean LANGUAGE plpgsql AS $$
  BEGIN PERFORM public.trap('=(varchar,varchar)');
        RETURN $1::pg_catalog.text OPERATOR(pg_catalog.=) $2::pg_catalog.text; END $$;
CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.eq_varchar);

CREATE DOMAIN public.code AS varchar(10);
CREATE FUNCTION public.eq_code(public.code, public.code) RETURNS boolean LANGUAGE plpgsql AS $$
  BEGIN PERFORM public.trap('=(code,code)');
        RETURN $1::pg_catalog.text OPERATOR(pg_catalog.=) $2::pg_catalog.text; END $$;
CREATE OPERATOR public.= (LEFTARG = public.code, RIGHTARG = public.code, FUNCTION = public.eq_code);

CREATE FUNCTION public.pg_drop_replication_slot(text) RETURNS void LANGUAGE plpgsql AS $$
  BEGIN PERFORM public.trap('pg_drop_replication_slot'); END $$;
CREATE FUNCTION public.obj_description(oid, text) RETURNS text LANGUAGE plpgsql AS $$
  BEGIN PERFORM public.trap('obj_description');
        RETURN 'blueshift: created by blueshift sync'; END $$;
CREATE FUNCTION public.pg_advisory_lock(bigint) RETURNS void LANGUAGE plpgsql AS $$
  BEGIN PERFORM public.trap('pg_advisory_lock'); END $$;
CREATE FUNCTION public.pg_try_advisory_lock(bigint) RETURNS boolean LANGUAGE plpgsql AS $$
  BEGIN PERFORM public.trap('pg_try_advisory_lock'); RETURN true; END $$;
CREATE FUNCTION public.set_config(text, text, boolean) RETURNS text LANGUAGE plpgsql AS $$
  BEGIN PERFORM public.trap('set_config'); RETURN pg_catalog.set_config($1, $2, $3); END $$;
CREATE FUNCTION public.current_setting(text) RETURNS text LANGUAGE plpgsql AS $$
  BEGIN PERFORM public.trap('current_setting'); RETURN pg_catalog.current_setting($1); END $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
  BEGIN PERFORM public.trap('now'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION public.count_step(bigint) RETURNS bigint LANGUAGE plpgsql AS $$
  BEGIN PERFORM public.trap('count'); RETURN $1 OPERATOR(pg_catalog.+) 1; END $$;
CREATE AGGREGATE public.count(*) (SFUNC = public.count_step, STYPE = bigint, INITCOND = '0');
"#;

const TABLES: &str = "
CREATE TABLE public.kv (k varchar(20) PRIMARY KEY, v text);
CREATE TABLE public.dk (k public.code PRIMARY KEY, n int);
";

fn cluster(name: &str) -> Cluster {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let c = Cluster::start(ClusterOptions::new(bins).name(name)).expect("cluster starts");
    c.create_database("app").unwrap();
    c.psql(
        "app",
        "CREATE ROLE mallory LOGIN;
         GRANT CREATE ON SCHEMA public TO mallory;
         ALTER DATABASE app SET search_path = public, pg_catalog;",
    )
    .unwrap();
    c.psql("app", &format!("SET ROLE mallory; {TRAPS}"))
        .unwrap();
    c
}

fn blueshift(args: &[&str]) -> Output {
    Command::new(blueshift_binary())
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("PGPASSWORD")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("blueshift runs")
}

/// Rows of `table` as one text, read without any name the traps shadow.
fn rows(c: &Cluster, table: &str) -> String {
    c.psql(
        "app",
        &format!(
            "SELECT pg_catalog.count(*) || ':' || pg_catalog.md5(coalesce( \
               pg_catalog.string_agg(x::pg_catalog.text, ',' ORDER BY x::pg_catalog.text), '')) \
               FROM public.{table} x"
        ),
    )
    .unwrap()
}

fn audit(c: &Cluster) -> String {
    c.psql(
        "app",
        "SELECT pg_catalog.string_agg(what || ' by ' || coalesce(app, '?'), '; ') \
           FROM public.audit",
    )
    .unwrap()
}

#[test]
fn shadowing_objects_in_public_are_never_called() {
    let blue = cluster("attack-blue");
    let green = cluster("attack-green");
    let (blue_uri, green_uri) = (blue.uri("app"), green.uri("app"));

    // The trap works for anyone not pinning search_path (so the assertions below mean something).
    blue.psql("app", "SELECT 'a'::varchar = 'a'::varchar")
        .unwrap();
    assert!(audit(&blue).contains("=(varchar,varchar)"));
    blue.psql("app", "TRUNCATE public.audit").unwrap();

    // migrate builds green's tables (the script itself names nothing the traps shadow).
    let migrations = tempfile::tempdir().unwrap();
    std::fs::write(migrations.path().join("V1__tables.sql"), TABLES).unwrap();
    let dir = migrations.path().to_str().unwrap();
    succeeded(
        "migrate up",
        &blueshift(&["migrate", "up", "--database", &green_uri, "--dir", dir]),
    );
    succeeded(
        "migrate status",
        &blueshift(&["migrate", "status", "--database", &green_uri, "--dir", dir]),
    );

    blue.psql("app", TABLES).unwrap();
    blue.psql(
        "app",
        "INSERT INTO public.kv SELECT 'k' || g, 'v' || g FROM pg_catalog.generate_series(1, 200) g;
         INSERT INTO public.dk SELECT 'c' || g, g FROM pg_catalog.generate_series(1, 200) g;
         CREATE PUBLICATION other FOR TABLE public.kv;",
    )
    .unwrap();

    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sync.log");
    let mut sync = Command::new(blueshift_binary())
        .args(["sync", "--source", &blue_uri, "--target", &green_uri])
        .args(["--publication", "pub", "--create-publication", ""])
        .args(["--slot", "trap", "--status-interval", "1"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("sync starts");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(Duration::from_secs(90), || {
        anyhow::ensure!(sync.try_wait()?.is_none(), "sync exited:\n{}", log_text());
        anyhow::ensure!(log_text().contains("sync started"), "not streaming yet");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    // Streamed changes found by the shadowed keys.
    blue.psql(
        "app",
        "UPDATE public.kv SET v = 'new' WHERE k OPERATOR(pg_catalog.=) 'k5';
         DELETE FROM public.kv WHERE k OPERATOR(pg_catalog.=) 'k6';
         UPDATE public.dk SET n = -1 WHERE n OPERATOR(pg_catalog.=) 7;
         DELETE FROM public.dk WHERE n OPERATOR(pg_catalog.=) 8;
         INSERT INTO public.kv VALUES ('late', 'x');",
    )
    .unwrap();
    eventually(Duration::from_secs(90), || {
        for t in ["kv", "dk"] {
            anyhow::ensure!(rows(&blue, t) == rows(&green, t), "{t} differs");
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log_text()));
    succeeded(
        "status",
        &blueshift(&[
            "status", "--source", &blue_uri, "--target", &green_uri, "--slot", "trap",
        ]),
    );
    // verify (through the running sidecar's hold) compares by the shadowed types' keys and
    // values; cutover's preflight reads both sides.
    succeeded(
        "verify",
        &blueshift(&[
            "verify",
            "--source",
            &blue_uri,
            "--target",
            &green_uri,
            "--publication",
            "pub",
            "--slot",
            "trap",
        ]),
    );
    succeeded(
        "cutover --dry-run",
        &blueshift(&[
            "cutover",
            "--source",
            &blue_uri,
            "--target",
            &green_uri,
            "--publication",
            "pub",
            "--slot",
            "trap",
            "--switch-command",
            "true",
            "--max-lag",
            "60",
            "--dry-run",
        ]),
    );
    sync.kill().unwrap();
    sync.wait().unwrap();
    // The slot stays active until blue's walsender notices its client is gone (cleanup refuses
    // a slot in use, and says so: `cleanup_cli`).
    blue.wait_slot_inactive("app", "trap", Duration::from_secs(60))
        .expect("blue's walsender ends");

    // cleanup of the publication blueshift did not create leaves it (a shadowed obj_description
    // would call it blueshift's), and really drops the slot.
    succeeded(
        "cleanup",
        &blueshift(&[
            "cleanup",
            "--source",
            &blue_uri,
            "--target",
            &green_uri,
            "--slot",
            "trap",
            "--publication",
            "other",
            "--yes",
        ]),
    );
    assert_eq!(
        blue.psql(
            "postgres",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'trap'"
        )
        .unwrap(),
        "0",
        "cleanup did not drop the slot"
    );
    assert_eq!(
        blue.psql(
            "app",
            "SELECT pg_catalog.string_agg(pubname, ',' ORDER BY pubname) FROM pg_catalog.pg_publication"
        )
        .unwrap(),
        "other,pub",
        "cleanup dropped a publication blueshift did not create"
    );
    assert_eq!(audit(&blue), "", "a trap ran on blue");
    assert_eq!(audit(&green), "", "a trap ran on green");
}
