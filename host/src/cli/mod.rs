//! The command line's subcommands, apart from parsing (in `main.rs`).

pub(crate) mod commands;
pub(crate) mod serve;
