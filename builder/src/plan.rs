//! `nib plan` (placeholder until its issue lands).

use crate::cli::PlanArgs;

pub fn run(_args: &PlanArgs) -> anyhow::Result<()> {
    anyhow::bail!("nib plan is not implemented yet")
}
