//! (being written) The transaction assembler.
