//! Logging: `tracing` to stderr, as text (colours on a terminal) or as one JSON object per line
//! (`--log-format json`: `timestamp`, `level`, `fields.message` and the event's other fields,
//! the span list), for a log collector.
//!
//! Server notices are not relayed at INFO: PostgreSQL's NOTICEs ("relation … already exists,
//! skipping") are noise to an operator. The replication connection logs them at DEBUG itself;
//! the SQL client's (`tokio_postgres`, through the `log` bridge) are kept at WARN unless the
//! filter names `tokio_postgres`.

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the subscriber: `RUST_LOG` wins when set, else `filter`.
pub(crate) fn init(filter: &str, format: Format) {
    let filter = filter_for(
        std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .as_deref()
            .unwrap_or(filter),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        Format::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Format::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(false)
            .init(),
    }
}

/// The filter for `text`, with the SQL client's notices held back unless `text` names it. A
/// filter that does not parse falls back to `info`.
fn filter_for(text: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(text).unwrap_or_else(|_| EnvFilter::new("info"));
    if !text.contains("tokio_postgres") {
        if let Ok(directive) = "tokio_postgres=warn".parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_clients_notices_are_held_back_unless_asked_for() {
        assert!(filter_for("info")
            .to_string()
            .contains("tokio_postgres=warn"));
        assert!(!filter_for("info,tokio_postgres=debug")
            .to_string()
            .contains("tokio_postgres=warn"));
    }
}
