//! Applies decoded changes to green (one applier = one target connection). Built by the sync issue.
