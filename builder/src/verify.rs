//! `nib verify` (placeholder until its issue lands).

use crate::cli::VerifyArgs;

pub fn run(_args: &VerifyArgs) -> anyhow::Result<()> {
    anyhow::bail!("nib verify is not implemented yet")
}
