//! `nib seed` and `nib cluster init` (placeholder until the first-boot issue lands).

use crate::cli::{ClusterInitArgs, SeedArgs};

pub fn run_seed(_args: &SeedArgs) -> anyhow::Result<()> {
    anyhow::bail!("nib seed is not implemented yet")
}

pub fn run_cluster_init(_args: &ClusterInitArgs) -> anyhow::Result<()> {
    anyhow::bail!("nib cluster init is not implemented yet")
}
