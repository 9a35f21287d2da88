//! Throwaway PostgreSQL clusters (being written).
