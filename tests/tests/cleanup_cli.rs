//! `blueshift cleanup`, the real binary against a real blue and green: a dry run changes
//! nothing; `--yes` drops exactly the slot, blueshift's publication and the slot's origins and
//! leaves everything else (other slots, a foreign publication, other origins); an active slot
//! is refused, naming its process, with nothing dropped; a second run has nothing to do; a
//! password given in a URI appears in no output.

#[path = "support/cli.rs"]
mod cli;

use std::process::Output;
use std::time::Duration;

use blueshift_tests::{eventually, Cluster, ClusterOptions, PgBinaries};

const PASSWORD: &str = "Cl3anup-Secr3t-pw";
const MARK: &str = "blueshift: created by blueshift sync";

fn cluster(name: &str) -> Cluster {
    let c = Cluster::start(
        ClusterOptions::new(PgBinaries::from_env().expect("binaries"))
            .name(name)
            .hba_line("host all bs_admin 127.0.0.1/32 scram-sha-256"),
    )
    .expect("cluster");
    c.create_database("app").expect("db");
    c.psql(
        "app",
        &format!("CREATE ROLE bs_admin LOGIN SUPERUSER PASSWORD '{PASSWORD}'"),
    )
    .expect("role");
    c
}

/// Blue: slots `s` (ours) and `keep` (another sync's); publications `bs_pub` (blueshift's),
/// `app_pub` (the application's, another comment), `other_bs` (blueshift's, another sync).
/// Green: `s`'s origins, one advanced; other syncs' origins and look-alikes.
fn blue_and_green() -> (Cluster, Cluster) {
    let blue = cluster("cleanup-blue");
    blue.psql(
        "app",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY);
             CREATE PUBLICATION bs_pub FOR TABLE t;
             COMMENT ON PUBLICATION bs_pub IS '{MARK}';
             CREATE PUBLICATION app_pub FOR TABLE t;
             COMMENT ON PUBLICATION app_pub IS 'owned by the app team';
             CREATE PUBLICATION other_bs FOR TABLE t;
             COMMENT ON PUBLICATION other_bs IS '{MARK}';
             SELECT pg_create_logical_replication_slot('s', 'pgoutput');
             SELECT pg_create_logical_replication_slot('keep', 'pgoutput');"
        ),
    )
    .expect("blue setup");
    let green = cluster("cleanup-green");
    green
        .psql(
            "app",
            "SELECT pg_replication_origin_create('blueshift_s_0');
             SELECT pg_replication_origin_create('blueshift_s_1');
             SELECT pg_replication_origin_advance('blueshift_s_0', '0/ABC');
             SELECT pg_replication_origin_create('blueshift_keep_0');
             SELECT pg_replication_origin_create('blueshift_s_x');
             SELECT pg_replication_origin_create('blueshift_s_1_0');
             SELECT pg_replication_origin_create('other_origin');",
        )
        .expect("green setup");
    (blue, green)
}

fn cleanup(blue_uri: &str, green_uri: &str, args: &[&str]) -> Output {
    cli::run("cleanup", blue_uri, green_uri, args)
}

fn succeeded(out: &Output) -> String {
    cli::succeeded("cleanup", out)
}

fn failed(out: &Output) -> String {
    cli::failed("cleanup", out)
}

fn slots(blue: &Cluster) -> String {
    blue.psql(
        "app",
        "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots",
    )
    .expect("slots")
}

fn publications(blue: &Cluster) -> String {
    blue.psql(
        "app",
        "SELECT string_agg(pubname, ',' ORDER BY pubname) FROM pg_publication",
    )
    .expect("publications")
}

fn origins(green: &Cluster) -> String {
    green
        .psql(
            "app",
            "SELECT string_agg(roname, ',' ORDER BY roname) FROM pg_replication_origin",
        )
        .expect("origins")
}

const ALL_SLOTS: &str = "keep,s";
const ALL_PUBLICATIONS: &str = "app_pub,bs_pub,other_bs";
const ALL_ORIGINS: &str =
    "blueshift_keep_0,blueshift_s_0,blueshift_s_1,blueshift_s_1_0,blueshift_s_x,other_origin";

#[test]
fn dry_run_then_drop_exactly_the_right_objects_then_nothing_to_do() {
    let (blue, green) = blue_and_green();
    let (b, g) = (blue.uri("app"), green.uri("app"));

    // Dry run: the plan, and nothing changed.
    let text = succeeded(&cleanup(
        &b,
        &g,
        &["--slot", "s", "--publication", "bs_pub"],
    ));
    assert!(text.starts_with("dry run: nothing was changed"), "{text}");
    for expected in [
        "replication slot \"s\" on blue",
        "publication \"bs_pub\" on blue (created by blueshift)",
        "replication origin \"blueshift_s_0\" on green (progress 0/ABC)",
        "replication origin \"blueshift_s_1\" on green",
        "left publication \"other_bs\"",
        "--publication other_bs",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    for absent in [
        "keep",
        "app_pub",
        "blueshift_s_x",
        "blueshift_s_1_0",
        "other_origin",
    ] {
        assert!(!text.contains(absent), "{absent:?} in:\n{text}");
    }
    assert_eq!(slots(&blue), ALL_SLOTS);
    assert_eq!(publications(&blue), ALL_PUBLICATIONS);
    assert_eq!(origins(&green), ALL_ORIGINS);

    // A foreign publication is left, and the output says why.
    let text = succeeded(&cleanup(
        &b,
        &g,
        &["--slot", "s", "--publication", "app_pub"],
    ));
    assert!(
        text.contains("left publication \"app_pub\" on blue: blueshift did not create it"),
        "{text}"
    );
    assert!(text.contains("owned by the app team"), "{text}");
    assert!(!text.contains("  publication \"app_pub\""), "{text}");
    assert_eq!(publications(&blue), ALL_PUBLICATIONS);

    // For real.
    let text = succeeded(&cleanup(
        &b,
        &g,
        &["--slot", "s", "--publication", "bs_pub", "--yes"],
    ));
    assert!(text.contains("dropped replication slot \"s\""), "{text}");
    assert!(text.contains("dropped publication \"bs_pub\""), "{text}");
    assert!(
        text.contains("dropped replication origin \"blueshift_s_0\""),
        "{text}"
    );
    assert!(
        text.contains("dropped replication origin \"blueshift_s_1\""),
        "{text}"
    );
    assert_eq!(slots(&blue), "keep");
    assert_eq!(publications(&blue), "app_pub,other_bs");
    assert_eq!(
        origins(&green),
        "blueshift_keep_0,blueshift_s_1_0,blueshift_s_x,other_origin"
    );

    // --yes with the foreign publication named: it stays.
    let text = succeeded(&cleanup(
        &b,
        &g,
        &["--slot", "s", "--publication", "app_pub", "--yes"],
    ));
    assert!(text.starts_with("nothing to do"), "{text}");
    assert!(text.contains("left publication \"app_pub\""), "{text}");
    assert_eq!(publications(&blue), "app_pub,other_bs");

    // Again: nothing to do, nothing changed, exit 0.
    let text = succeeded(&cleanup(
        &b,
        &g,
        &["--slot", "s", "--publication", "bs_pub", "--yes"],
    ));
    assert!(
        text.starts_with(
            "nothing to do: no replication slot \"s\" on blue, no blueshift_s_<n> replication origin on green, no publication \"bs_pub\" on blue"
        ),
        "{text}"
    );
    assert_eq!(slots(&blue), "keep");
    assert_eq!(publications(&blue), "app_pub,other_bs");
    assert_eq!(
        origins(&green),
        "blueshift_keep_0,blueshift_s_1_0,blueshift_s_x,other_origin"
    );
}

#[test]
fn an_active_slot_is_refused_with_its_pid_and_nothing_is_dropped() {
    let (blue, green) = blue_and_green();
    let (b, g) = (blue.uri("app"), green.uri("app"));
    let mut consumer = cli::pg_recvlogical(&blue, "s", "bs_pub");
    let pid: i32 = eventually(Duration::from_secs(30), || {
        let pid = blue.psql(
            "app",
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's' AND active",
        )?;
        anyhow::ensure!(!pid.is_empty(), "slot not active yet");
        Ok(pid.parse()?)
    })
    .expect("pg_recvlogical streams from the slot");

    for args in [
        &["--slot", "s", "--publication", "bs_pub"][..],
        &["--slot", "s", "--publication", "bs_pub", "--yes"],
    ] {
        let err = failed(&cleanup(&b, &g, args));
        assert!(
            err.contains(&format!(
                "replication slot \"s\" on blue is in use by process {pid}"
            )),
            "{args:?}: {err}"
        );
        assert!(err.contains("then run cleanup again"), "{err}");
        assert_eq!(slots(&blue), ALL_SLOTS);
        assert_eq!(publications(&blue), ALL_PUBLICATIONS);
        assert_eq!(origins(&green), ALL_ORIGINS);
    }

    // Once the consumer is gone, the same command goes through.
    consumer.kill().expect("stop pg_recvlogical");
    consumer.wait().expect("reap pg_recvlogical");
    blue.wait_slot_inactive("app", "s", Duration::from_secs(30))
        .expect("the walsender ends");
    succeeded(&cleanup(
        &b,
        &g,
        &["--slot", "s", "--publication", "bs_pub", "--yes"],
    ));
    assert_eq!(slots(&blue), "keep");
}

#[test]
fn a_slot_blueshift_did_not_create_is_refused() {
    let (blue, green) = blue_and_green();
    blue.psql(
        "app",
        "SELECT pg_create_logical_replication_slot('td', 'test_decoding');
         SELECT pg_create_physical_replication_slot('phys');",
    )
    .expect("slots");
    let (b, g) = (blue.uri("app"), green.uri("app"));
    let err = failed(&cleanup(&b, &g, &["--slot", "td", "--yes"]));
    assert!(
        err.contains(
            "\"td\" on blue is a logical (test_decoding) slot, not a logical pgoutput slot"
        ),
        "{err}"
    );
    let err = failed(&cleanup(&b, &g, &["--slot", "phys", "--yes"]));
    assert!(err.contains("\"phys\" on blue is a physical slot"), "{err}");
    assert_eq!(slots(&blue), "keep,phys,s,td");
}

#[test]
fn a_password_in_a_uri_appears_in_no_output() {
    let (blue, green) = blue_and_green();
    let uri = |c: &Cluster, password: &str| {
        format!(
            "postgresql://bs_admin:{password}@127.0.0.1:{}/app",
            c.port()
        )
    };
    let (b, g) = (uri(&blue, PASSWORD), uri(&green, PASSWORD));
    for args in [
        &["--slot", "s", "--publication", "bs_pub"][..],
        &["--slot", "s", "--publication", "bs_pub", "--yes"],
        &["--slot", "s", "--publication", "bs_pub", "--yes"],
    ] {
        let out = cleanup(&b, &g, args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{all}");
        assert!(!all.contains(PASSWORD), "{args:?}: {all}");
        assert!(all.contains("carries a password"), "{all}");
    }
    assert_eq!(slots(&blue), "keep");

    let wrong = "Wr0ng-Cl3anup-pw";
    let out = cleanup(&uri(&blue, wrong), &g, &["--slot", "keep", "--yes"]);
    let err = failed(&out);
    assert!(err.contains("cannot reach blue"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(PASSWORD), "{err}");
    assert_eq!(slots(&blue), "keep");
}
