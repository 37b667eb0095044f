//! Unlock time of `node.key` with the default Argon2id parameters.
fn main() {}
