//! `nib flash` (placeholder until its issue lands).

use crate::cli::FlashArgs;

pub fn run(_args: &FlashArgs) -> anyhow::Result<()> {
    anyhow::bail!("nib flash is not implemented yet")
}
