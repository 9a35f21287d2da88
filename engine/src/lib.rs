//! The blueshift pipeline (stream → decode → assemble → schedule → apply → progress) and its stages. Built by the sync issue.
