//! Whether green can take blue's values of one type into a column of another, and how: the
//! reasoning of PostgreSQL's `can_coerce_type` in assignment context, asked of green's catalog.
//!
//! In order: the same type (a different type modifier is a length coercion); domains compare by
//! their base types; a `pg_cast` entry usable in assignment or implicit context (binary-coercible
//! or through a function); any type into a string type through its output function (automatic
//! I/O conversion); arrays element by element. Anything else — an explicit-only cast, no cast,
//! a type green does not have — cannot be carried.

use std::collections::HashMap;
use std::fmt;

use tokio_postgres::Client;

use super::catalog::Column;
use super::SchemaError;

/// How green converts blue's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastKind {
    /// Same type, another type modifier (`varchar(20)` → `varchar(40)`): values longer or more
    /// precise than the new modifier allows fail.
    Length,
    /// Binary-coercible: the bytes need no conversion (`varchar` → `text`, a domain and its base).
    Binary,
    /// A cast usable implicitly (`int4` → `int8`).
    Implicit,
    /// A cast usable in assignment (`int8` → `int4`, `numeric` → `int4`): values out of range fail.
    Assignment,
    /// Through the type's text form into a string type (`int4` → `text`).
    Io,
}

impl CastKind {
    /// `length`, `binary`, `implicit`, `assignment`, `io`.
    pub fn as_str(self) -> &'static str {
        match self {
            CastKind::Length => "length",
            CastKind::Binary => "binary",
            CastKind::Implicit => "implicit",
            CastKind::Assignment => "assignment",
            CastKind::Io => "io",
        }
    }
}

impl fmt::Display for CastKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What green does with a blue column's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversion {
    /// Nothing: the same type.
    Same,
    /// A cast.
    Cast(CastKind),
    /// Cannot: why, in words.
    Impossible(String),
}

/// A row of `pg_type` on green, as much as the reasoning needs.
#[derive(Debug, Clone, Copy)]
struct TypeInfo {
    kind: u8,
    base: u32,
    category: u8,
    element: u32,
}

/// Asks green's catalog; remembers what it learned.
#[derive(Debug)]
pub(crate) struct Casts<'a> {
    green: &'a Client,
    regtype: HashMap<String, Option<u32>>,
    types: HashMap<u32, TypeInfo>,
}

impl<'a> Casts<'a> {
    pub(crate) fn new(green: &'a Client) -> Casts<'a> {
        Casts {
            green,
            regtype: HashMap::new(),
            types: HashMap::new(),
        }
    }

    /// How green stores values of `blue`'s column into `green`'s column.
    pub(crate) async fn conversion(
        &mut self,
        blue: &Column,
        green: &Column,
        green_type: u32,
    ) -> Result<Conversion, SchemaError> {
        let Some(source) = self.resolve(&blue.type_ref).await? else {
            return Ok(if self.is_string(green_type).await? {
                Conversion::Cast(CastKind::Io)
            } else {
                Conversion::Impossible(format!("type {} does not exist on green", blue.type_name))
            });
        };
        if source == green_type {
            return Ok(if blue.typmod == green.typmod {
                Conversion::Same
            } else {
                Conversion::Cast(CastKind::Length)
            });
        }
        Ok(match Box::pin(self.coerce(source, green_type)).await? {
            Some(kind) => Conversion::Cast(kind),
            None => Conversion::Impossible(format!(
                "green has no assignment cast from {} to {}",
                blue.type_name, green.type_name
            )),
        })
    }

    async fn coerce(&mut self, source: u32, target: u32) -> Result<Option<CastKind>, SchemaError> {
        let src = self.base(source).await?;
        let dst = self.base(target).await?;
        if src == dst {
            return Ok(Some(CastKind::Binary));
        }
        let cast = self
            .green
            .query_opt(
                "SELECT castcontext, castmethod FROM pg_catalog.pg_cast \
                  WHERE castsource = $1 AND casttarget = $2",
                &[&src, &dst],
            )
            .await
            .map_err(|e| SchemaError::query("read pg_cast on green", e))?;
        if let Some(row) = cast {
            let context = u8::try_from(row.get::<_, i8>(0)).unwrap_or(b'e');
            let method = u8::try_from(row.get::<_, i8>(1)).unwrap_or(b'f');
            match (context, method) {
                (b'i' | b'a', b'b') => return Ok(Some(CastKind::Binary)),
                (b'i', _) => return Ok(Some(CastKind::Implicit)),
                (b'a', _) => return Ok(Some(CastKind::Assignment)),
                _ => {}
            }
        }
        if self.info(dst).await?.category == b'S' {
            return Ok(Some(CastKind::Io));
        }
        let (s, d) = (self.info(src).await?, self.info(dst).await?);
        if s.category == b'A' && d.category == b'A' && s.element != 0 && d.element != 0 {
            if s.element == d.element {
                return Ok(Some(CastKind::Binary));
            }
            return Box::pin(self.coerce(s.element, d.element)).await;
        }
        Ok(None)
    }

    async fn is_string(&mut self, oid: u32) -> Result<bool, SchemaError> {
        let base = self.base(oid).await?;
        Ok(self.info(base).await?.category == b'S')
    }

    /// The base type of a domain (following domains over domains), else the type itself.
    async fn base(&mut self, mut oid: u32) -> Result<u32, SchemaError> {
        for _ in 0..32 {
            let info = self.info(oid).await?;
            if info.kind != b'd' || info.base == 0 {
                return Ok(oid);
            }
            oid = info.base;
        }
        Ok(oid)
    }

    async fn resolve(&mut self, type_ref: &str) -> Result<Option<u32>, SchemaError> {
        if let Some(oid) = self.regtype.get(type_ref) {
            return Ok(*oid);
        }
        let oid: Option<u32> = self
            .green
            .query_one("SELECT pg_catalog.to_regtype($1)::oid", &[&type_ref])
            .await
            .map_err(|e| SchemaError::query("look up a type on green", e))?
            .get(0);
        self.regtype.insert(type_ref.to_owned(), oid);
        Ok(oid)
    }

    async fn info(&mut self, oid: u32) -> Result<TypeInfo, SchemaError> {
        if let Some(info) = self.types.get(&oid) {
            return Ok(*info);
        }
        let row = self
            .green
            .query_opt(
                "SELECT typtype, typbasetype, typcategory, typelem \
                   FROM pg_catalog.pg_type WHERE oid = $1",
                &[&oid],
            )
            .await
            .map_err(|e| SchemaError::query("read pg_type on green", e))?;
        let byte = |v: i8| u8::try_from(v).unwrap_or(0);
        let info = match row {
            Some(r) => TypeInfo {
                kind: byte(r.get(0)),
                base: r.get(1),
                category: byte(r.get(2)),
                element: r.get(3),
            },
            None => TypeInfo {
                kind: 0,
                base: 0,
                category: 0,
                element: 0,
            },
        };
        self.types.insert(oid, info);
        Ok(info)
    }
}

/// Whether blue's values arrive in green's column as they were.
///
/// Values travel as blue's text and green's input function of its column's type (with its type
/// modifier) reads them, as PostgreSQL's own apply does. So what matters is what that input
/// function does with every value blue can send:
///
/// | kind | examples | verdict |
/// |---|---|---|
/// | lossless | `int4` → `int8`, `varchar(10)` → `text`, `numeric(12,2)` → `numeric(14,4)`, `date` → `timestamp`, `float4` → `float8`, `json` → `text` | cast |
/// | fails loudly on a value that does not fit | `int8` → `int4`, `numeric` → `int4` (a fraction is refused), `text` → `varchar(10)`, `inet` → `cidr` | cast: apply errors name the column |
/// | narrower type modifier | `numeric(12,4)` → `numeric(12,2)`, `varchar(20)` → `varchar(10)`, `timestamp(6)` → `timestamp(3)`, `bit(4)` → `bit(8)` | blocked |
/// | loses silently | `float8` → `float4`, `int8` → `float8`, `numeric` → `float8`, `timestamptz` → `timestamp`, `timestamp` → `date`, `json` → `jsonb`, anything → `name` | blocked |
///
/// A narrowing or a silent loss is accepted only when declared for the column (`--lossy-cast`,
/// `[[cast]] … lossy = true`; see `blueshift_applier::mapping`); otherwise sync stops, at
/// preflight or at the Relation message that brings it. An assignment cast blueshift does not
/// know counts as a silent loss: it cannot tell. `timestamp` → `timestamptz` is lossless: the
/// appliers and the backfill read it with `TimeZone = UTC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fidelity {
    /// Every value arrives as it is.
    Lossless,
    /// A value green cannot hold fails with an error (which names the column): what.
    FailsLoudly(String),
    /// Green's type modifier is narrower than blue's: how.
    Narrowing(String),
    /// Some values would change without an error: how.
    LosesSilently(String),
}

impl Fidelity {
    /// A narrowing or a silent loss: sync must not carry it unless the operator accepted it.
    pub fn is_loss(&self) -> bool {
        matches!(self, Fidelity::Narrowing(_) | Fidelity::LosesSilently(_))
    }
}

/// The `pg_catalog` type name of a `type_ref` (`"pg_catalog"."numeric"` → `numeric`), `None`
/// for another schema's type.
fn builtin(type_ref: &str) -> Option<&str> {
    let name = type_ref.strip_prefix("pg_catalog.").or_else(|| {
        type_ref
            .strip_prefix("\"pg_catalog\".")
            .map(|n| n.trim_matches('"'))
    })?;
    Some(name.trim_matches('"'))
}

/// `numeric(p,s)`'s precision and scale; `None` when unconstrained.
fn numeric_modifier(typmod: i32) -> Option<(i32, i32)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    // An 11-bit signed scale (negative scales exist from PostgreSQL 15).
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    Some((precision, scale))
}

/// Integer digits a column of type `name` (with `typmod`) holds: `None` when unbounded.
fn integer_digits(name: &str, typmod: i32) -> Option<i32> {
    match name {
        "int2" => Some(5),
        "int4" => Some(10),
        "int8" => Some(19),
        "numeric" => numeric_modifier(typmod).map(|(p, s)| p - s),
        _ => None,
    }
}

/// The length limit of a string or bit string type modifier; `None` when unbounded.
fn length(name: &str, typmod: i32) -> Option<i32> {
    match name {
        "varchar" | "bpchar" if typmod >= 4 => Some(typmod - 4),
        "bit" | "varbit" if typmod >= 0 => Some(typmod),
        _ => None,
    }
}

/// Fractional digits of a time type modifier (6 when unset).
fn time_precision(name: &str, typmod: i32) -> i32 {
    let p = if name == "interval" && typmod >= 0 {
        typmod & 0xffff
    } else {
        typmod
    };
    if (0..=6).contains(&p) {
        p
    } else {
        6
    }
}

const STRINGS: &[&str] = &["text", "varchar", "bpchar"];
const INTEGERS: &[&str] = &["int2", "int4", "int8"];
const FLOATS: &[&str] = &["float4", "float8"];
const TIMES: &[&str] = &["timestamp", "timestamptz", "time", "timetz", "interval"];

/// What green's column of `green` does with blue's values of `blue`, given how green converts
/// them (`conversion`, from [`Casts::conversion`]). See [`Fidelity`].
pub fn fidelity(blue: &Column, green: &Column, conversion: &Conversion) -> Fidelity {
    let (b, g) = (blue.type_name.as_str(), green.type_name.as_str());
    let kind = match conversion {
        Conversion::Same => return Fidelity::Lossless,
        Conversion::Impossible(_) => return Fidelity::Lossless,
        Conversion::Cast(kind) => *kind,
    };
    let (bt, gt) = (builtin(&blue.type_ref), builtin(&green.type_ref));
    // Arrays of built-in types: element by element (the modifier is the elements').
    if let (Some(be), Some(ge)) = (
        bt.and_then(|t| t.strip_prefix('_')),
        gt.and_then(|t| t.strip_prefix('_')),
    ) {
        let element = |c: &Column, name: &str| Column {
            type_ref: format!("pg_catalog.{name}"),
            ..c.clone()
        };
        let kind = if be == ge { CastKind::Length } else { kind };
        return fidelity(
            &element(blue, be),
            &element(green, ge),
            &Conversion::Cast(kind),
        );
    }
    if kind == CastKind::Length {
        return modifier_fidelity(bt.unwrap_or(""), blue.typmod, green.typmod, b, g);
    }
    let Some(gt) = gt else {
        // Into a type of green's own (a domain, an enum): its input function checks every
        // value; a binary coercion is the same bytes.
        return match kind {
            CastKind::Binary | CastKind::Io => Fidelity::Lossless,
            _ => unknown(b, g),
        };
    };
    // Into a string type: blue's text form, whole unless green's column is bounded.
    if STRINGS.contains(&gt) {
        if let Some(max) = length(gt, green.typmod) {
            let fits = bt
                .and_then(|bt| STRINGS.contains(&bt).then(|| length(bt, blue.typmod)))
                .flatten()
                .is_some_and(|n| n <= max);
            if !fits {
                return Fidelity::FailsLoudly(format!("values longer than {g} allows fail"));
            }
        }
        return Fidelity::Lossless;
    }
    if matches!(gt, "name" | "char") {
        return if bt == Some(gt) {
            Fidelity::Lossless
        } else {
            Fidelity::LosesSilently(format!("{g} keeps only the first bytes of longer values"))
        };
    }
    let Some(bt) = bt else {
        return match kind {
            CastKind::Binary => Fidelity::Lossless,
            _ => unknown(b, g),
        };
    };
    let rounds = |what: &str| Fidelity::LosesSilently(format!("{b} → {g} {what}"));
    match (bt, gt) {
        (b_int, "numeric") if INTEGERS.contains(&b_int) => {
            match (
                integer_digits(b_int, -1),
                integer_digits("numeric", green.typmod),
            ) {
                (Some(need), Some(has)) if has < need => Fidelity::FailsLoudly(format!(
                    "values with more than {has} integer digits fail"
                )),
                _ => Fidelity::Lossless,
            }
        }
        (b_int, g_int) if INTEGERS.contains(&b_int) && INTEGERS.contains(&g_int) => {
            if integer_digits(g_int, -1) >= integer_digits(b_int, -1) {
                Fidelity::Lossless
            } else {
                Fidelity::FailsLoudly(format!("values out of the range of {g} fail"))
            }
        }
        ("int2", "float4") | ("int2" | "int4", "float8") => Fidelity::Lossless,
        (b_int, f) if INTEGERS.contains(&b_int) && FLOATS.contains(&f) => {
            rounds("rounds large integers to the float's precision")
        }
        ("numeric", f) if FLOATS.contains(&f) => rounds("rounds to the float's precision"),
        ("numeric" | "float4" | "float8", i) if INTEGERS.contains(&i) => Fidelity::FailsLoudly(
            format!("fractional values and values out of range of {g} fail"),
        ),
        ("float4", "float8") => Fidelity::Lossless,
        ("float8", "float4") => rounds("rounds to 6 significant digits"),
        (f, "numeric") if FLOATS.contains(&f) => match numeric_modifier(green.typmod) {
            None => Fidelity::Lossless,
            Some((_, scale)) => rounds(&format!("rounds to {scale} decimals")),
        },
        ("date", "timestamp" | "timestamptz") => Fidelity::Lossless,
        ("timestamp", "timestamptz") | ("time", "timetz" | "interval") => {
            let (p, p2) = (
                time_precision(bt, blue.typmod),
                time_precision(gt, green.typmod),
            );
            if p2 >= p {
                Fidelity::Lossless
            } else {
                rounds(&format!("rounds fractional seconds to {p2} digits"))
            }
        }
        ("timestamp" | "timestamptz", "date") => rounds("drops the time of day"),
        ("timestamptz", "timestamp") | ("timetz", "time") => {
            rounds("drops the UTC offset: values keep blue's wall-clock time")
        }
        ("interval", "time") => rounds("keeps only the time of day of an interval"),
        ("json", "jsonb") => rounds(
            "normalizes each document (whitespace, key order, duplicate keys: the last wins)",
        ),
        ("jsonb", "json") => Fidelity::Lossless,
        ("cidr", "inet") | ("macaddr", "macaddr8") => Fidelity::Lossless,
        ("inet", "cidr") => Fidelity::FailsLoudly("addresses with host bits set fail".to_owned()),
        ("macaddr8", "macaddr") => {
            Fidelity::FailsLoudly("addresses that are not 6 bytes fail".to_owned())
        }
        ("bit" | "varbit", "bit" | "varbit") => {
            match (length(bt, blue.typmod), length(gt, green.typmod)) {
                (_, None) if gt == "varbit" => Fidelity::Lossless,
                (Some(n), Some(m)) if gt == "varbit" && n <= m => Fidelity::Lossless,
                (Some(n), Some(m)) if gt == "bit" && bt == "bit" && n == m => Fidelity::Lossless,
                _ => Fidelity::FailsLoudly(format!("bit strings that do not fit {g} fail")),
            }
        }
        (_, t) if TIMES.contains(&t) && TIMES.contains(&bt) => unknown(b, g),
        _ => match kind {
            CastKind::Binary | CastKind::Implicit => Fidelity::Lossless,
            _ => unknown(b, g),
        },
    }
}

/// A conversion blueshift does not know: it cannot say that every value survives.
fn unknown(blue: &str, green: &str) -> Fidelity {
    Fidelity::LosesSilently(format!(
        "blueshift cannot tell whether green's cast from {blue} to {green} keeps every value"
    ))
}

/// The same type with another type modifier.
fn modifier_fidelity(name: &str, blue: i32, green: i32, b: &str, g: &str) -> Fidelity {
    if green == -1 || blue == green {
        return Fidelity::Lossless;
    }
    let narrower = |how: String| Fidelity::Narrowing(format!("{b} → {g}: {how}"));
    match name {
        "numeric" => match (numeric_modifier(blue), numeric_modifier(green)) {
            (_, None) => Fidelity::Lossless,
            (Some((p, s)), Some((p2, s2))) if s2 >= s && p2 - s2 >= p - s => Fidelity::Lossless,
            (Some((_, s)), Some((_, s2))) if s2 < s => {
                narrower(format!("values are rounded to {s2} decimals"))
            }
            (None, Some((_, s2))) => narrower(format!(
                "values are rounded to {s2} decimals, and large ones fail"
            )),
            (_, Some((p2, s2))) => narrower(format!(
                "values with more than {} integer digits fail",
                p2 - s2
            )),
        },
        "varchar" | "bpchar" | "varbit" => match (length(name, blue), length(name, green)) {
            (Some(n), Some(m)) if n <= m => Fidelity::Lossless,
            _ => narrower("longer values fail".to_owned()),
        },
        "bit" => narrower("every value has blue's length and fails".to_owned()),
        t if TIMES.contains(&t) => {
            let (p, p2) = (time_precision(t, blue), time_precision(t, green));
            let fields_kept = t != "interval" || green < 0 || (green >> 16) == 0x7fff;
            if p2 >= p && fields_kept {
                Fidelity::Lossless
            } else if p2 < p {
                narrower(format!("fractional seconds are rounded to {p2} digits"))
            } else {
                narrower("fields outside green's interval range are dropped".to_owned())
            }
        }
        _ => narrower("green's type modifier differs".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(type_name: &str, typname: &str, typmod: i32) -> Column {
        Column {
            name: "c".into(),
            type_name: type_name.into(),
            type_ref: format!("\"pg_catalog\".\"{typname}\""),
            type_oid: 0,
            typmod,
            not_null: false,
            default: None,
            identity: false,
            generated: false,
            in_key: false,
        }
    }

    /// `numeric(p,s)`'s type modifier.
    fn numeric(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7ff)) + 4
    }

    fn f(b: &Column, g: &Column, kind: CastKind) -> Fidelity {
        fidelity(b, g, &Conversion::Cast(kind))
    }

    #[test]
    fn numeric_modifiers_widen_or_narrow() {
        let n = |p, s| column(&format!("numeric({p},{s})"), "numeric", numeric(p, s));
        let any = column("numeric", "numeric", -1);
        assert_eq!(numeric_modifier(numeric(12, 2)), Some((12, 2)));
        assert_eq!(numeric_modifier(numeric(5, -2)), Some((5, -2)));
        assert_eq!(
            f(&n(12, 2), &n(14, 4), CastKind::Length),
            Fidelity::Lossless
        );
        assert_eq!(f(&n(12, 2), &any, CastKind::Length), Fidelity::Lossless);
        let scale = f(&n(12, 4), &n(12, 2), CastKind::Length);
        assert!(
            matches!(&scale, Fidelity::Narrowing(how) if how.contains("rounded to 2 decimals")),
            "{scale:?}"
        );
        // More decimals but fewer integer digits.
        assert!(matches!(
            f(&n(12, 2), &n(12, 4), CastKind::Length),
            Fidelity::Narrowing(how) if how.contains("more than 8 integer digits")
        ));
        assert!(f(&any, &n(12, 2), CastKind::Length).is_loss());
    }

    #[test]
    fn lengths_and_precisions() {
        let v = |n: i32| column(&format!("character varying({n})"), "varchar", n + 4);
        assert_eq!(f(&v(10), &v(20), CastKind::Length), Fidelity::Lossless);
        assert!(f(&v(20), &v(10), CastKind::Length).is_loss());
        let text = column("text", "text", -1);
        assert_eq!(f(&v(20), &text, CastKind::Binary), Fidelity::Lossless);
        assert!(matches!(
            f(&text, &v(10), CastKind::Assignment),
            Fidelity::FailsLoudly(_)
        ));
        assert_eq!(
            f(
                &v(5),
                &column("character(8)", "bpchar", 12),
                CastKind::Assignment
            ),
            Fidelity::Lossless
        );
        let ts = |p: i32| column("timestamp", "timestamp", p);
        assert_eq!(f(&ts(3), &ts(-1), CastKind::Length), Fidelity::Lossless);
        assert_eq!(f(&ts(3), &ts(6), CastKind::Length), Fidelity::Lossless);
        assert!(f(&ts(-1), &ts(3), CastKind::Length).is_loss());
        let bit = |n: i32| column("bit", "bit", n);
        assert!(f(&bit(4), &bit(8), CastKind::Length).is_loss());
        let iv = column("interval", "interval", -1);
        let iv_day = column("interval day", "interval", (8 << 16) | 0xffff);
        assert_eq!(f(&iv_day, &iv, CastKind::Length), Fidelity::Lossless);
        assert!(f(&iv, &iv_day, CastKind::Length).is_loss());
    }

    #[test]
    fn casts_are_lossless_loud_or_lossy() {
        let t = |name: &str| column(name, name, -1);
        let lossless = [
            ("int4", "int8"),
            ("int2", "numeric"),
            ("int4", "float8"),
            ("float4", "float8"),
            ("date", "timestamptz"),
            ("timestamp", "timestamptz"),
            ("jsonb", "json"),
            ("cidr", "inet"),
            ("bool", "text"),
        ];
        for (b, g) in lossless {
            assert_eq!(
                f(&t(b), &t(g), CastKind::Implicit),
                Fidelity::Lossless,
                "{b} → {g}"
            );
        }
        let loud = [
            ("int8", "int4"),
            ("numeric", "int4"),
            ("float8", "int8"),
            ("inet", "cidr"),
        ];
        for (b, g) in loud {
            assert!(
                matches!(
                    f(&t(b), &t(g), CastKind::Assignment),
                    Fidelity::FailsLoudly(_)
                ),
                "{b} → {g}"
            );
        }
        let lossy = [
            ("float8", "float4"),
            ("int8", "float8"),
            ("int4", "float4"),
            ("numeric", "float8"),
            ("timestamptz", "timestamp"),
            ("timestamp", "date"),
            ("json", "jsonb"),
            ("text", "name"),
            ("money", "numeric"),
        ];
        for (b, g) in lossy {
            assert!(
                matches!(
                    f(&t(b), &t(g), CastKind::Assignment),
                    Fidelity::LosesSilently(_)
                ),
                "{b} → {g}"
            );
        }
        // Into a bounded numeric: integers that may not fit fail loudly, floats are rounded.
        let n = column("numeric(6,2)", "numeric", numeric(6, 2));
        assert!(matches!(
            f(&t("int4"), &n, CastKind::Implicit),
            Fidelity::FailsLoudly(_)
        ));
        assert!(f(&t("float8"), &n, CastKind::Assignment).is_loss());
        let arr = |name: &str| Column {
            type_ref: format!("pg_catalog._{name}"),
            ..t(name)
        };
        assert_eq!(
            f(&arr("int4"), &arr("int8"), CastKind::Implicit),
            Fidelity::Lossless
        );
        assert!(matches!(
            f(&arr("int8"), &arr("int4"), CastKind::Assignment),
            Fidelity::FailsLoudly(_)
        ));
        assert!(f(&arr("float8"), &arr("float4"), CastKind::Assignment).is_loss());
        // A domain of green's: its input function checks values.
        let mut domain = t("text");
        domain.type_ref = "\"public\".\"email\"".into();
        assert_eq!(f(&t("text"), &domain, CastKind::Binary), Fidelity::Lossless);
        assert_eq!(
            fidelity(&t("int4"), &t("int4"), &Conversion::Same),
            Fidelity::Lossless
        );
    }
}
