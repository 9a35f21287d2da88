//! `pg-binaries [MAJOR]`: prints the PostgreSQL binaries folder the harness
//! would use — the default one (`PG_BIN`, else `pg_config --bindir`), or the
//! one of a major version — or, when it is missing, the error naming the
//! install command (exit status 1). For scripts:
//! `PG_BIN=$(cargo run -q -p blueshift-tests --bin pg-binaries -- 18)`.

use std::process::ExitCode;

use blueshift_tests::PgBinaries;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let found = match args.as_slice() {
        [] => PgBinaries::from_env(),
        [major] => match major.parse::<u32>() {
            Ok(major) => PgBinaries::major(major),
            Err(_) => Err(anyhow::anyhow!(
                "{major:?} is not a major version (14 to 18)"
            )),
        },
        _ => Err(anyhow::anyhow!("usage: pg-binaries [MAJOR]")),
    };
    match found {
        Ok(bins) => {
            println!("{}", bins.dir().display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
