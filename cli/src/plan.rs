//! `blueshift plan`: compares each table blue publishes with green's table of the same name
//! (columns matched by name and the declared mapping: renames, exclusions, lossy casts) and says
//! whether replication can carry the difference losslessly. Prints the mapping per table (or
//! JSON) and fails when anything is blocked.

use anyhow::Context as _;
use blueshift_engine::client;
use blueshift_engine::schema::{self, quote_ident, ColumnPlan, SchemaPlan, TablePlan, Verdict};

use crate::exit::{Differences, Refused};
use crate::rename::{self, RenameArgs};
use crate::settings;

/// Compare blue's published tables with green's schema: fine, cast, warning or blocked.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:
  blueshift plan --source postgresql://app@blue:5432/app --target postgresql://app@green:5432/app --publication blueshift
  blueshift plan --source … --target … --json | jq '.tables[] | select(.verdict == \"blocked\")'
  blueshift plan --source … --target … --rename 'public.users:name=full_name' --exclude 'users:legacy'
  blueshift plan --config /etc/blueshift/sync.toml   # source, target, publication, [[rename]], [[exclude]], [[cast]]

Each table lists blue column → green column: the type (blue → green when green converts it),
\"(excluded)\" for a blue column excluded on purpose, \"(missing)\" for a blue column green lacks
(blocked: its values would be lost), \"(default)\" for a column only on green.
Exits with 1 when a table is blocked.")]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    config: settings::ConfigArg,
    #[command(flatten)]
    source: settings::SourceArgs,
    #[command(flatten)]
    target: settings::TargetArgs,

    /// The publication whose tables are compared (default: the file's `publication`, else
    /// every user table on blue).
    #[arg(long, value_name = "NAME", env = "BLUESHIFT_PUBLICATION")]
    publication: Option<String>,

    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    renames: RenameArgs,
}

pub(crate) async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let file = args.config.load()?;
    let blue_config = args.source.resolve(&file)?;
    let green_config = args.target.resolve(&file)?;
    settings::ensure_distinct(&blue_config, &green_config)?;
    let publication = args.publication.or(file.publication.clone());
    let mapping = rename::collect(file.mapping(), args.renames)
        .map_err(|e| anyhow::Error::new(Refused(format!("{e:#}"))))?;
    let (blue, blue_connection) = client::connect(&blue_config, "blueshift plan")
        .await
        .context("cannot reach blue (--source)")?;
    let (green, green_connection) = client::connect(&green_config, "blueshift plan")
        .await
        .context("cannot reach green (--target)")?;
    let plan = schema::plan(&blue, &green, publication.as_deref(), &mapping).await;
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
        return Err(anyhow::Error::new(Differences(format!(
            "replication cannot carry the schema of {} table(s): {} — fix what is marked blocked \
             on green before starting sync",
            blocked.len(),
            blocked.join(", ")
        ))));
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
    let rows: Vec<[String; 5]> = t.columns.iter().map(row).collect();
    let header = ["BLUE", "GREEN", "TYPE", "VERDICT", "NOTE"].map(str::to_owned);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for (n, row) in std::iter::once(&header).chain(&rows).enumerate() {
        let arrow = if n == 0 { " " } else { "→" };
        let [blue, green, ty, verdict, note] = row;
        let line = format!(
            "  {blue:<w0$} {arrow} {green:<w1$}  {ty:<w2$}  {verdict:<w3$}  {note}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        println!("{}", line.trim_end());
    }
}

/// One column: blue column, green column, type, verdict, note.
fn row(c: &ColumnPlan) -> [String; 5] {
    let blue = match &c.blue {
        Some(_) => quote_ident(&c.name),
        None => "(default)".to_owned(),
    };
    let green = match (c.green_name(), &c.renamed_to) {
        (Some(g), _) => quote_ident(g),
        (None, Some(to)) => format!("{} (missing on green)", quote_ident(to)),
        (None, None) if c.excluded => "(excluded)".to_owned(),
        (None, None) => "(missing)".to_owned(),
    };
    let ty = match (&c.blue, &c.green) {
        (Some(b), Some(g)) if c.cast.is_some() => format!(
            "{} → {} ({} cast)",
            b.type_name,
            g.type_name,
            c.cast.map_or("", |k| k.as_str())
        ),
        (Some(b), Some(g)) if b.type_name != g.type_name => {
            format!("{} → {}", b.type_name, g.type_name)
        }
        (Some(b), _) => b.type_name.clone(),
        (None, Some(g)) => g.type_name.clone(),
        (None, None) => "-".to_owned(),
    };
    [blue, green, ty, c.verdict.to_string(), c.note.clone()]
}
