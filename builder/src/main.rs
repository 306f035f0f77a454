use std::process::ExitCode;

use clap::Parser;
use nib::cli::{Cli, ClusterCommand, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    nib_host::log::set_program("nib");
    // A build speaks in progress lines; each command it runs (hundreds) is
    // logged only with NIB_DEBUG. seed and cluster init run a few, shown.
    if !matches!(
        cli.command,
        Command::Seed(_) | Command::Cluster(_) | Command::ArbiterSetup(_)
    ) {
        nib_host::log::set_exec_lines(std::env::var_os("NIB_DEBUG").is_some());
    }
    let result = match &cli.command {
        Command::Plan(args) => nib::plan::run(args),
        Command::Build(args) => nib::build::run(args),
        Command::Verify(args) => nib::verify::run(args),
        Command::Seed(args) => nib::seed_cmd::run_seed(args),
        Command::Cluster(ClusterCommand::Init(args)) => nib::seed_cmd::run_cluster_init(args),
        Command::ArbiterSetup(args) => nib::arbiter::run_setup(args),
        Command::Inspect(args) => nib::inspect::run(args),
        Command::Flash(args) => nib::flash::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nib: error: {err:#}");
            ExitCode::from(nib::error::exit_code(&err))
        }
    }
}
