//! Exit codes (builder/doc/DESIGN.md, "Exit codes"): 0 done, 2 invalid
//! input (nothing changed), 1 anything else.

use std::fmt;

/// Marks an error as the user's input being wrong (exit code 2). Wrap the
/// message so that it names the file, the key and the reason.
#[derive(Debug)]
pub struct InvalidInput(pub String);

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

/// Shorthand: `return Err(invalid(format!("{path}: key `x`: reason")))`.
pub fn invalid(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InvalidInput(msg.into()))
}

/// 2 when any error in the chain is an [`InvalidInput`] or a role-data
/// validation failure, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<InvalidInput>()) {
        2
    } else {
        1
    }
}
