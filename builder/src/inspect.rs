//! `nib inspect` (placeholder until its issue lands).

use crate::cli::InspectArgs;

pub fn run(_args: &InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("nib inspect is not implemented yet")
}
