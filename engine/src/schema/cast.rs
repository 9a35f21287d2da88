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
