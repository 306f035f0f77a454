//! `nib build` (placeholder until its issue lands).

use crate::cli::BuildArgs;

pub fn run(_args: &BuildArgs) -> anyhow::Result<()> {
    anyhow::bail!("nib build is not implemented yet")
}
