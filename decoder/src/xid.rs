//! `Xid`: a PostgreSQL transaction id as pgoutput sends it (32 bits).

use std::fmt;

/// A transaction id. pgoutput sends the 32-bit form; it wraps around, so it identifies a
/// transaction only among those in flight, and is never used to order them (LSNs do that).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Xid(pub u32);

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Xid({})", self.0)
    }
}
