//! The write loads `catchup` can replay besides TPC-B (`--catchup-workload`): shapes that
//! folding and set-based apply cannot shorten, so that a gain on TPC-B is not mistaken for a
//! gain everywhere.
//!
//! | workload | table | each transaction | what it defeats |
//! |---|---|---|---|
//! | `tpcb` | pgbench's | TPC-B (3 UPDATEs, 1 INSERT) | — (hot branch rows fold well) |
//! | `uniform` | `bench_uniform` (key) | one UPDATE of 4 uniformly random rows | folding: keys rarely repeat |
//! | `swap` | `bench_swap` (key, UNIQUE `code`) | swaps two rows' codes in 3 UPDATEs | set apply: a secondary unique key must see blue's order |
//! | `keychange` | `bench_keychange` (key) | moves one row to a new key | folding per key: the key itself changes |
//! | `toast` | `bench_toast` (key, 4 KiB out-of-line `doc`) | one UPDATE of a small column | carries an unchanged TOAST value |
//! | `rifull` | `bench_rifull` (no key, REPLICA IDENTITY FULL, index on `a`) | one UPDATE | keyless matching by whole row |
//!
//! Each is a pgbench custom script run with `-D rows=N`; tables are created and filled on blue
//! before green's copy, and published with pgbench's tables. `rifull` on a green before
//! PostgreSQL 16: native apply matches a keyless row by a sequential scan (16 uses the index),
//! so its native figure there says more about that than about apply.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// One write load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// pgbench's TPC-B.
    Tpcb,
    /// Updates of uniformly random keys.
    Uniform,
    /// Swaps on a secondary unique key.
    Swap,
    /// Key-changing updates.
    Keychange,
    /// Updates that leave a TOASTed column unchanged.
    Toast,
    /// Updates of a keyless REPLICA IDENTITY FULL table.
    Rifull,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 6] = [
        Workload::Tpcb,
        Workload::Uniform,
        Workload::Swap,
        Workload::Keychange,
        Workload::Toast,
        Workload::Rifull,
    ];

    /// The name on the command line and in metric names.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Tpcb => "tpcb",
            Workload::Uniform => "uniform",
            Workload::Swap => "swap",
            Workload::Keychange => "keychange",
            Workload::Toast => "toast",
            Workload::Rifull => "rifull",
        }
    }

    /// Row changes one transaction makes.
    pub(crate) fn changes_per_transaction(self) -> f64 {
        match self {
            Workload::Tpcb => crate::pgbench::CHANGES_PER_TRANSACTION,
            Workload::Uniform => 4.0,
            Workload::Swap => 3.0,
            Workload::Keychange | Workload::Toast | Workload::Rifull => 1.0,
        }
    }

    /// Its table (none for TPC-B: pgbench's own).
    pub(crate) fn table(self) -> Option<&'static str> {
        match self {
            Workload::Tpcb => None,
            Workload::Uniform => Some("bench_uniform"),
            Workload::Swap => Some("bench_swap"),
            Workload::Keychange => Some("bench_keychange"),
            Workload::Toast => Some("bench_toast"),
            Workload::Rifull => Some("bench_rifull"),
        }
    }

    /// Rows of its table at pgbench scale `scale`.
    pub(crate) fn rows(self, scale: u32) -> u64 {
        let scale = u64::from(scale);
        match self {
            Workload::Tpcb => 100_000 * scale,
            Workload::Toast => 500 * scale,
            Workload::Rifull => 1_000 * scale,
            Workload::Uniform | Workload::Swap | Workload::Keychange => 10_000 * scale,
        }
    }

    /// The statements that create and fill its table on blue.
    pub(crate) fn setup_sql(self, scale: u32) -> Option<String> {
        let rows = self.rows(scale);
        Some(match self {
            Workload::Tpcb => return None,
            Workload::Uniform => format!(
                "CREATE TABLE public.bench_uniform (id int PRIMARY KEY, v int NOT NULL, \
                 pad text NOT NULL); \
                 INSERT INTO public.bench_uniform \
                 SELECT g, 0, repeat('x', 80) FROM generate_series(1, {rows}) g;"
            ),
            Workload::Swap => format!(
                "CREATE TABLE public.bench_swap (id int PRIMARY KEY, code int NOT NULL UNIQUE, \
                 v int NOT NULL DEFAULT 0); \
                 INSERT INTO public.bench_swap (id, code) \
                 SELECT g, g FROM generate_series(1, {rows}) g;"
            ),
            Workload::Keychange => format!(
                "CREATE TABLE public.bench_keychange (id bigint PRIMARY KEY, slot int NOT NULL, \
                 v int NOT NULL DEFAULT 0); \
                 CREATE INDEX bench_keychange_slot ON public.bench_keychange (slot); \
                 CREATE SEQUENCE public.bench_keychange_id START {start}; \
                 INSERT INTO public.bench_keychange (id, slot) \
                 SELECT g, g FROM generate_series(1, {rows}) g;",
                start = rows + 1
            ),
            Workload::Toast => format!(
                "CREATE TABLE public.bench_toast (id int PRIMARY KEY, v int NOT NULL DEFAULT 0, \
                 doc text NOT NULL); \
                 ALTER TABLE public.bench_toast ALTER COLUMN doc SET STORAGE EXTERNAL; \
                 INSERT INTO public.bench_toast (id, doc) \
                 SELECT g, (SELECT string_agg(md5(g::text || ':' || i::text), '') \
                            FROM generate_series(1, 128) i) \
                 FROM generate_series(1, {rows}) g;"
            ),
            Workload::Rifull => format!(
                "CREATE TABLE public.bench_rifull (a int NOT NULL, b int NOT NULL, \
                 v int NOT NULL DEFAULT 0); \
                 CREATE INDEX bench_rifull_a ON public.bench_rifull (a); \
                 ALTER TABLE public.bench_rifull REPLICA IDENTITY FULL; \
                 INSERT INTO public.bench_rifull (a, b) \
                 SELECT g, g FROM generate_series(1, {rows}) g;"
            ),
        })
    }

    /// Its pgbench script (`:rows` is set with `-D`); none for TPC-B (pgbench's built-in).
    fn script(self) -> Option<&'static str> {
        Some(match self {
            Workload::Tpcb => return None,
            // One statement: an index scan of `= ANY` takes the row locks in key order, so
            // concurrent clients never deadlock.
            Workload::Uniform => {
                "\\set a random(1, :rows)\n\
                 \\set b random(1, :rows)\n\
                 \\set c random(1, :rows)\n\
                 \\set d random(1, :rows)\n\
                 UPDATE public.bench_uniform SET v = v + 1 WHERE id IN (:a, :b, :c, :d);\n"
            }
            // Both rows locked in key order first; then a through a free (negative) code.
            Workload::Swap => {
                "\\set a random(1, :rows)\n\
                 \\set b random(1, :rows)\n\
                 BEGIN;\n\
                 SELECT count(*) FROM (SELECT id FROM public.bench_swap WHERE id IN (:a, :b) \
                 ORDER BY id FOR UPDATE) locked;\n\
                 SELECT code AS ca FROM public.bench_swap WHERE id = :a \\gset\n\
                 SELECT code AS cb FROM public.bench_swap WHERE id = :b \\gset\n\
                 UPDATE public.bench_swap SET code = -:ca WHERE id = :a;\n\
                 UPDATE public.bench_swap SET code = :ca WHERE id = :b;\n\
                 UPDATE public.bench_swap SET code = :cb WHERE id = :a;\n\
                 END;\n"
            }
            Workload::Keychange => {
                "\\set s random(1, :rows)\n\
                 UPDATE public.bench_keychange \
                 SET id = nextval('public.bench_keychange_id') WHERE slot = :s;\n"
            }
            Workload::Toast => {
                "\\set a random(1, :rows)\n\
                 UPDATE public.bench_toast SET v = v + 1 WHERE id = :a;\n"
            }
            Workload::Rifull => {
                "\\set a random(1, :rows)\n\
                 UPDATE public.bench_rifull SET v = v + 1 WHERE a = :a;\n"
            }
        })
    }

    /// Writes its script into `dir`; `None` for TPC-B.
    pub(crate) fn write_script(self, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
        let Some(text) = self.script() else {
            return Ok(None);
        };
        let path = dir.join(format!("workload-{}.sql", self.name()));
        std::fs::write(&path, text)
            .with_context(|| format!("could not write {}", path.display()))?;
        Ok(Some(path))
    }
}

impl std::str::FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown workload {s:?}: choose from {}",
                    Workload::ALL.map(Workload::name).join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_but_tpcb_has_a_table_a_setup_and_a_script() {
        for w in Workload::ALL {
            let own = w != Workload::Tpcb;
            assert_eq!(w.table().is_some(), own, "{w:?}");
            assert_eq!(w.setup_sql(2).is_some(), own, "{w:?}");
            assert_eq!(w.script().is_some(), own, "{w:?}");
            if let (Some(table), Some(sql)) = (w.table(), w.setup_sql(2)) {
                assert!(sql.contains(&format!("public.{table}")), "{w:?}");
                assert!(w.script().unwrap().contains(&format!("public.{table}")));
            }
            assert_eq!(w.name().parse::<Workload>(), Ok(w));
        }
        assert!("tpc-b".parse::<Workload>().is_err());
    }
}
