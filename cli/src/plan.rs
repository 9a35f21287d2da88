//! `blueshift plan`: compares each table blue publishes with green's table of the same name and
//! says whether replication can carry the difference. Prints a table per table (or JSON) and
//! fails when anything is blocked.

use anyhow::Context as _;
use blueshift_decoder::config::ConnectConfig;
use blueshift_engine::client;
use blueshift_engine::schema::{self, quote_ident, SchemaPlan, TablePlan, Verdict};

/// Compare blue's published tables with green's schema: fine, cast, warning or blocked.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:
  blueshift plan --source postgresql://app@blue:5432/app --target postgresql://app@green:5432/app --publication blueshift
  blueshift plan --source … --target … --json | jq '.tables[] | select(.verdict == \"blocked\")'

Exits with 1 when a table is blocked.")]
pub(crate) struct PlanArgs {
    /// Blue, the database replicated from: a libpq URI or key=value string.
    #[arg(long, value_name = "URI")]
    source: String,

    /// Green, the database replicated to.
    #[arg(long, value_name = "URI")]
    target: String,

    /// The publication whose tables are compared (default: every user table on blue).
    #[arg(long, value_name = "NAME")]
    publication: Option<String>,

    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let blue_config = ConnectConfig::from_conninfo(&args.source).context("invalid --source")?;
    let green_config = ConnectConfig::from_conninfo(&args.target).context("invalid --target")?;
    let (blue, blue_connection) = client::connect(&blue_config, "blueshift plan")
        .await
        .context("cannot reach blue (--source)")?;
    let (green, green_connection) = client::connect(&green_config, "blueshift plan")
        .await
        .context("cannot reach green (--target)")?;
    let plan = schema::plan(&blue, &green, args.publication.as_deref()).await;
    drop((blue, green));
    let _ = blue_connection.await;
    let _ = green_connection.await;
    let plan = plan?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan.to_json())?);
    } else {
        print_plan(&plan);
    }
    let blocked: Vec<String> = plan
        .tables
        .iter()
        .filter(|t| t.verdict == Verdict::Blocked)
        .map(|t| t.table.to_string())
        .collect();
    if !blocked.is_empty() {
        anyhow::bail!(
            "replication cannot carry the schema of {} table(s): {} — fix what is marked blocked \
             on green before starting sync",
            blocked.len(),
            blocked.join(", ")
        );
    }
    Ok(())
}

fn print_plan(plan: &SchemaPlan) {
    match &plan.publication {
        Some(p) => println!(
            "tables of publication {} on blue, compared with green",
            quote_ident(p)
        ),
        None => println!("every user table on blue, compared with green"),
    }
    for t in &plan.tables {
        println!();
        print_table(t);
    }
    let count = |v: Verdict| plan.tables.iter().filter(|t| t.verdict == v).count();
    println!();
    println!(
        "{} table(s): {} fine, {} cast, {} warning, {} blocked",
        plan.tables.len(),
        count(Verdict::Fine),
        count(Verdict::Cast),
        count(Verdict::Warning),
        count(Verdict::Blocked)
    );
}

fn print_table(t: &TablePlan) {
    println!("table {}: {}", t.table, t.verdict);
    for n in &t.notes {
        println!("  {}: {}", n.verdict, n.message);
    }
    if t.columns.is_empty() {
        return;
    }
    let rows: Vec<[String; 5]> = t
        .columns
        .iter()
        .map(|c| {
            [
                quote_ident(&c.name),
                c.blue
                    .as_ref()
                    .map_or("-".to_owned(), |b| b.type_name.clone()),
                c.green
                    .as_ref()
                    .map_or("-".to_owned(), |g| g.type_name.clone()),
                c.verdict.to_string(),
                c.note.clone(),
            ]
        })
        .collect();
    let header = ["COLUMN", "BLUE", "GREEN", "VERDICT", "NOTE"].map(str::to_owned);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::from("  ");
        for (cell, w) in row.iter().zip(widths) {
            line.push_str(cell);
            line.push_str(&" ".repeat(w - cell.chars().count() + 2));
        }
        line.push_str(&row[4]);
        println!("{}", line.trim_end());
    }
}
