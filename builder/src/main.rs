use std::process::ExitCode;

use clap::Parser;
use nib::cli::{Cli, ClusterCommand, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Plan(args) => nib::plan::run(args),
        Command::Build(args) => nib::build::run(args),
        Command::Verify(args) => nib::verify::run(args),
        Command::Seed(args) => nib::seed_cmd::run_seed(args),
        Command::Cluster(ClusterCommand::Init(args)) => nib::seed_cmd::run_cluster_init(args),
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
