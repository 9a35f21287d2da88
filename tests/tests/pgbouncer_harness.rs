//! The PgBouncer harness: a real PgBouncer in transaction pooling in front of a real cluster,
//! its admin console, PAUSE/RESUME, re-pointing an entry with RELOAD, and a crash.

use std::time::{Duration, Instant};

use blueshift_tests::{eventually, Cluster, ClusterOptions, DatabaseEntry, PgBinaries, PgBouncer};

fn cluster(name: &str) -> Cluster {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let c = Cluster::start(ClusterOptions::new(bins).name(name)).expect("cluster starts");
    c.create_database("app").expect("database app");
    c
}

async fn through(bouncer: &PgBouncer, sql: &str) -> anyhow::Result<String> {
    let (client, conn) =
        tokio_postgres::connect(&bouncer.uri("app"), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let rows = client.simple_query(sql).await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_pauses_repoints_and_survives_a_crash() {
    let blue = cluster("bouncer-blue");
    let green = cluster("bouncer-green");
    blue.psql("app", "CREATE TABLE side AS SELECT 'blue'::text AS name")
        .unwrap();
    green
        .psql("app", "CREATE TABLE side AS SELECT 'green'::text AS name")
        .unwrap();
    let mut bouncer = PgBouncer::in_front_of(&blue, "app").expect("pgbouncer starts");

    // Clients reach blue through the pooler; the admin console answers.
    assert_eq!(
        through(&bouncer, "SELECT name FROM side").await.unwrap(),
        "blue"
    );
    let pools = bouncer.admin("SHOW POOLS").unwrap();
    assert!(
        pools.contains("app|postgres"),
        "SHOW POOLS lists app: {pools}"
    );
    let mode = bouncer.admin("SHOW CONFIG").unwrap();
    assert!(
        mode.lines().any(|l| l.starts_with("pool_mode|transaction")),
        "transaction pooling: {mode}"
    );

    // PAUSE makes a client wait (not fail) until RESUME.
    bouncer.admin("PAUSE app").unwrap();
    let waiting = {
        let uri = bouncer.uri("app");
        tokio::spawn(async move {
            let started = Instant::now();
            let (client, conn) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await?;
            anyhow::Ok(started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a query through a paused pool waits"
    );
    bouncer.admin("RESUME app").unwrap();
    let waited = waiting
        .await
        .unwrap()
        .expect("the paused query succeeds after RESUME");
    assert!(
        waited >= Duration::from_millis(400),
        "it waited for RESUME: {waited:?}"
    );

    // Re-pointing the entry at green and RELOAD sends new transactions to green.
    bouncer
        .repoint(&[DatabaseEntry::on("app", &green, "app")])
        .unwrap();
    eventually(Duration::from_secs(10), || {
        let rt = tokio::runtime::Handle::current();
        let name = std::thread::scope(|s| {
            s.spawn(|| rt.block_on(through(&bouncer, "SELECT name FROM side")))
                .join()
                .expect("no panic")
        })?;
        anyhow::ensure!(name == "green", "still on {name}");
        Ok(())
    })
    .unwrap();

    // A crash drops clients; a restart serves again.
    bouncer.crash().unwrap();
    assert!(
        through(&bouncer, "SELECT 1").await.is_err(),
        "down after the crash"
    );
    bouncer.start_again().unwrap();
    assert_eq!(
        through(&bouncer, "SELECT name FROM side").await.unwrap(),
        "green"
    );
}
