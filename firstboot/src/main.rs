//! nib-firstboot: the node side of nib. Parses the command line and
//! dispatches; the work is in the library. Exit codes: 0 done or nothing to
//! do, 2 invalid input (nothing written), 1 anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use nib_firstboot::apply::{self, ApplyOptions};
use nib_firstboot::{cluster, status};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "nib-firstboot",
    version,
    about = "Configure this controller node from its NoCloud seed"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand, each with its own `*Args` struct.
#[derive(Debug, Subcommand)]
enum Command {
    /// Find the seed (or use --seed), validate, write this node's configuration under --root
    Apply(ApplyArgs),
    /// Validate a seed's role data only; write nothing
    Validate(ValidateArgs),
    /// Wait for quorum with every node, then (bootstrap node only) apply the pacemaker configuration where it differs
    Cluster(ClusterArgs),
    /// One screen: what first boot applied, cluster state, VIP, MariaDB primary, warnings
    Status(StatusArgs),
    /// Generate the missing SSH host keys (nib-hostkeys.service, before sshd)
    HostKeys(RootArgs),
    /// Initialise an empty MariaDB datadir with mariadb-install-db (nib-datadir.service; MariaDB's start in pacemaker waits for it)
    Datadir(RootArgs),
    /// Serve re-seeds of the peer from this node's MariaDB while it is the primary (nib-reseed-donor.service)
    ReseedDonor(ReseedServer),
    /// Replace this node's stopped MariaDB datadir with a streamed physical copy of the primary's (ocf:nib:mariadb runs it)
    Reseed(ReseedArgs),
}

/// This node's MariaDB, and the role data the re-seed key comes from.
#[derive(Debug, Args)]
struct ReseedServer {
    /// Role data (cluster.toml) instead of the copy first boot recorded
    #[arg(long, env = "NIB_ROLE_DATA")]
    role_data: Option<PathBuf>,
    /// MariaDB's configuration (mariabackup reads it)
    #[arg(long, default_value = nib_firstboot::render::mariadb_paths::CONFIG)]
    config: PathBuf,
    /// MariaDB's socket
    #[arg(long, default_value = nib_firstboot::render::mariadb_paths::SOCKET)]
    socket: PathBuf,
}

#[derive(Debug, Args)]
struct ReseedArgs {
    /// The node to copy from, the primary: its name or cluster address
    #[arg(long)]
    from: String,
    /// The datadir to replace (MariaDB stopped)
    #[arg(long, default_value = nib_firstboot::render::mariadb_paths::DATADIR)]
    datadir: PathBuf,
    #[command(flatten)]
    server: ReseedServer,
}

#[derive(Debug, Args)]
struct RootArgs {
    /// Target root (an unpacked or mounted image; the datadir is then initialised in a chroot)
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Role data from this seed directory instead of the copy first boot recorded
    #[arg(long)]
    seed: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// Role data from this seed directory instead of the copy first boot recorded
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Print the rendered pacemaker configuration (secrets masked) and exit
    #[arg(long)]
    print_cib: bool,
    /// With --print-cib: print the replication and BMC passwords too
    #[arg(long, requires = "print_cib")]
    show_secrets: bool,
    /// Seconds to wait for quorum with every node, and again for MariaDB to start
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    /// Target root (an unpacked or mounted image for offline use)
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Seed directory (meta-data, user-data, network-config) instead of searching
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Print what would change (secrets masked); write nothing
    #[arg(long)]
    dry_run: bool,
    /// Apply even if this instance-id was applied before
    #[arg(long)]
    force: bool,
    /// Under a --root other than /, also initialise an empty MariaDB datadir (chroot + mariadb-install-db)
    #[arg(long)]
    init_datadir: bool,
    /// Do not generate missing SSH host keys (nib-hostkeys.service does, before sshd)
    #[arg(long)]
    no_host_keys: bool,
    /// On /, leave an empty MariaDB datadir to `nib-firstboot datadir` (nib-datadir.service)
    #[arg(long)]
    no_datadir: bool,
    /// Only errors and the final line
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Seed directory (meta-data, user-data, network-config)
    #[arg(long)]
    seed: PathBuf,
}

impl ReseedServer {
    fn server(&self) -> nib_firstboot::reseed::Server {
        nib_firstboot::reseed::Server {
            config: self.config.clone(),
            socket: self.socket.clone(),
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Apply(a) => {
            nib_firstboot::log::set_quiet(a.quiet);
            let opts = ApplyOptions {
                root: a.root,
                seed: a.seed,
                dry_run: a.dry_run,
                force: a.force,
                init_datadir: a.init_datadir,
                host_keys: !a.no_host_keys,
                datadir: !a.no_datadir,
            };
            apply::apply(&opts)?;
            Ok(())
        }
        Command::Cluster(a) if a.print_cib => {
            print!("{}", cluster::print_cib(a.seed.as_deref(), a.show_secrets)?);
            Ok(())
        }
        Command::Cluster(a) => {
            let deadlines = cluster::Deadlines {
                quorum: Duration::from_secs(a.timeout),
                primary: Duration::from_secs(a.timeout),
                ..cluster::Deadlines::default()
            };
            cluster::cluster_command(a.seed.as_deref(), deadlines)?;
            Ok(())
        }
        Command::Status(a) => {
            let (screen, _warnings) = status::status_command(a.seed.as_deref())?;
            print!("{screen}");
            Ok(())
        }
        Command::HostKeys(a) => {
            apply::host_keys_command(&a.root)?;
            Ok(())
        }
        Command::Datadir(a) => {
            apply::datadir_command(&a.root)?;
            Ok(())
        }
        Command::ReseedDonor(a) => {
            let (pair, node) = nib_firstboot::node_state::load_pair_from(a.role_data.as_deref())?;
            nib_firstboot::reseed::donor_command(&pair, &node, &a.server())
        }
        Command::Reseed(a) => {
            let (pair, node) =
                nib_firstboot::node_state::load_pair_from(a.server.role_data.as_deref())?;
            let r = nib_firstboot::reseed::reseed_command(
                &pair,
                &node,
                &a.from,
                &a.datadir,
                &a.server.server(),
            )?;
            let mb = r.bytes as f64 / 1e6;
            println!(
                "re-seed: {mb:.1} MB from {} streamed in {:.1} s ({:.0} MB/s), prepared in {:.1} s",
                a.from,
                r.stream_s,
                mb / r.stream_s.max(0.001),
                r.prepare_s
            );
            println!("gtid={}", r.gtid);
            Ok(())
        }
        Command::Validate(a) => {
            let mut opts = ApplyOptions::new("/");
            opts.seed = Some(a.seed);
            let (seed, _rd, role) = apply::load(&opts)?;
            let what = match role {
                nib_firstboot::role::Role::Node(_) => "node",
                nib_firstboot::role::Role::Arbiter(_) => "arbiter",
            };
            println!(
                "{}: valid (instance-id {}, {what} {})",
                seed.origin,
                seed.instance_id,
                role.name()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nib-firstboot: error: {err:#}");
            ExitCode::from(nib_firstboot::exit_code(&err))
        }
    }
}
