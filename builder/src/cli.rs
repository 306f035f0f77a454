//! The `nib` command line: one `*Args` struct per subcommand (the contract in
//! builder/doc/DESIGN.md, "CLI"). Parsing only; the work is in the library
//! modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "nib",
    version,
    about = "Build reproducible controller images and the NoCloud seeds that configure them",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve an image definition and its layers; print layers, packages and cache keys (no network, no root)
    Plan(PlanArgs),
    /// Build an image into OUT/<image>/
    Build(BuildArgs),
    /// Rebuild from scratch in a fresh cache and compare every digest with the last build
    Verify(VerifyArgs),
    /// Make the NoCloud seed of one node from a cluster.toml
    Seed(SeedArgs),
    /// Cluster role data: `nib cluster init` writes a cluster.toml with fresh secrets
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Set up an existing Debian/Ubuntu host as the pair's quorum arbiter (corosync-qnetd) from cluster.toml
    ArbiterSetup(ArbiterSetupArgs),
    /// Show a built image's manifest
    Inspect(InspectArgs),
    /// Write disk.raw to a block device (bmap-aware) and verify it by reading back
    Flash(FlashArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Image definition, e.g. images/controller.toml
    pub image: PathBuf,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputKind {
    Rootfs,
    Raw,
    Pxe,
    Qcow2,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Image definition, e.g. images/controller-bookworm.toml
    pub image: PathBuf,
    /// Output directory; the image goes to OUT/<image name>/
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Layer and package cache (OCI layout: blobs/sha256/<hex>)
    #[arg(long, env = "NIB_CACHE", default_value = ".cache/nib")]
    pub cache: PathBuf,
    /// Outputs to produce, comma-separated
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rootfs")]
    pub outputs: Vec<OutputKind>,
    /// Install exactly the versions in images/<name>.lock, or fail naming what is missing
    #[arg(long)]
    pub locked: bool,
    /// Print a table of where the time went, per layer and per step
    #[arg(long)]
    pub timings: bool,
    /// Only errors
    #[arg(long, short)]
    pub quiet: bool,
    /// Progress and result as JSON lines
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Image definition that was built before
    pub image: PathBuf,
    /// Output directory of the last build
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// The build's cache: only its package store is used (a fresh layer cache is made)
    #[arg(long, env = "NIB_CACHE", default_value = ".cache/nib")]
    pub cache: PathBuf,
    /// Only errors
    #[arg(long, short)]
    pub quiet: bool,
    /// Result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeedFormat {
    /// A FAT image labelled CIDATA (attach as a disk or USB stick)
    Vfat,
    /// A directory with meta-data, user-data and network-config (serve over HTTP, or copy to /var/lib/cloud/seed/nocloud/)
    Dir,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The pair's role data
    pub cluster: PathBuf,
    /// The node this seed is for (its `name` in cluster.toml)
    #[arg(long)]
    pub node: String,
    /// Where to write the seed (a file for vfat, a directory for dir)
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "vfat")]
    pub format: SeedFormat,
    /// instance-id to put in meta-data (default: derived from the role data, so a changed cluster.toml re-provisions)
    #[arg(long)]
    pub instance_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Write a new cluster.toml with freshly generated secrets
    Init(ClusterInitArgs),
}

#[derive(Debug, Args)]
pub struct ClusterInitArgs {
    /// File to create (refuses to overwrite)
    #[arg(long, default_value = "cluster.toml")]
    pub out: PathBuf,
    /// Cluster name
    #[arg(long, default_value = "openstack-ctl")]
    pub name: String,
    /// Nodes as NAME=ADDRESS, in id order (first is the bootstrap node)
    #[arg(long = "node", value_name = "NAME=ADDRESS", num_args = 1.., required = true)]
    pub nodes: Vec<String>,
    /// The virtual IP with prefix, e.g. 192.168.60.100/24
    #[arg(long)]
    pub vip: String,
    /// Interface carrying the cluster network and the VIP
    #[arg(long, default_value = "eth0")]
    pub interface: String,
    /// A quorum arbiter as NAME=ADDRESS (a third host running corosync-qnetd): adds [arbiter] and the qnetd CA and certificates to [secrets.arbiter]
    #[arg(long, value_name = "NAME=ADDRESS")]
    pub arbiter: Option<String>,
}

#[derive(Debug, Args)]
pub struct ArbiterSetupArgs {
    /// The pair's role data (with an [arbiter] section)
    pub cluster: PathBuf,
    /// Target root: `/` installs corosync-qnetd with apt-get when it is missing, and (re)starts it
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A build's output directory, e.g. out/controller-bookworm
    pub out_dir: PathBuf,
    /// Print the manifest as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FlashArgs {
    /// disk.raw of a build (its .bmap beside it is used when present)
    pub image: PathBuf,
    /// Target block device, e.g. /dev/sdb
    pub device: PathBuf,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// Block map to use (default: IMAGE.bmap when it exists, else the whole image is written)
    #[arg(long)]
    pub bmap: Option<PathBuf>,
    /// Allow DEVICE to be a regular file (made or truncated), e.g. to test a flash or copy an image sparsely
    #[arg(long)]
    pub to_file: bool,
}
