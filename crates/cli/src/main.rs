//! The `netdissect` command-line tool: a thin shell over the library crates.

fn main() {}
