//! pgbench, PostgreSQL's own load generator: `pgbench -i` for the tables, TPC-B runs for the
//! load (at full speed, or at a fixed rate with `-R`).

use anyhow::Context as _;

use crate::server::Server;

/// The tables `pgbench -i` creates.
pub(crate) const TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// Row changes of one TPC-B transaction: three UPDATEs and one INSERT.
pub(crate) const CHANGES_PER_TRANSACTION: f64 = 4.0;

/// `pgbench -i -q -s scale db`.
pub(crate) async fn init(server: &Server, db: &str, scale: u32) -> anyhow::Result<()> {
    server
        .run("pgbench", &["-i", "-q", "-s", &scale.to_string(), db])
        .await?;
    Ok(())
}

/// What a TPC-B run did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) transactions: u64,
    pub(crate) tps: f64,
}

/// `pgbench -n -c C -j C -T seconds [-R rate] db`.
pub(crate) async fn run(
    server: &Server,
    db: &str,
    clients: u32,
    seconds: u32,
    rate: Option<f64>,
) -> anyhow::Result<Run> {
    run_with(server, db, clients, seconds, rate, &[]).await
}

/// `pgbench -n -f script -D rows=N -c C -j C -T seconds db`: a custom script's load.
pub(crate) async fn run_script(
    server: &Server,
    db: &str,
    clients: u32,
    seconds: u32,
    script: &std::path::Path,
    rows: u64,
) -> anyhow::Result<Run> {
    let script = script.display().to_string();
    let rows = format!("rows={rows}");
    run_with(
        server,
        db,
        clients,
        seconds,
        None,
        &["-f", &script, "-D", &rows],
    )
    .await
}

/// [`run`] with more arguments (a custom script: `-f FILE -D name=value …`).
pub(crate) async fn run_with(
    server: &Server,
    db: &str,
    clients: u32,
    seconds: u32,
    rate: Option<f64>,
    extra: &[&str],
) -> anyhow::Result<Run> {
    let c = clients.to_string();
    let t = seconds.to_string();
    let r = rate.map(|r| format!("{:.0}", r.max(1.0)));
    let mut args = vec!["-n", "-c", &c, "-j", &c, "-T", &t];
    if let Some(r) = &r {
        args.extend(["-R", r]);
    }
    args.extend(extra);
    args.push(db);
    let out = server.run("pgbench", &args).await?;
    let transactions = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next()?.trim().parse::<u64>().ok())
        .with_context(|| format!("no transaction count in pgbench's output:\n{out}"))?;
    let tps = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench's output:\n{out}"))?;
    Ok(Run { transactions, tps })
}
