//! `weir`: build, run and test proxy-wasm filters.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use weir_cli::{build, demo, publish};

/// The weir toolchain for Envoy proxy-wasm filters.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the sample filters and show them working through the harness, with
    /// the same configuration as envoy/*.yaml.
    Demo,
    /// Build filters to wasm32-wasip1 (default: every sample filter).
    Build {
        /// Filter packages to build.
        #[arg(short, long = "package")]
        packages: Vec<String>,
        /// Keep the DWARF and function names (profile `filter-debug`), so a
        /// trap in the harness names each frame's function and file:line.
        /// Larger modules: build without it for Envoy.
        #[arg(long)]
        debug: bool,
    },
    /// Push a filter to an OCI registry, verify it loads, print its digest and
    /// deployment config.
    Push(publish::PushArgs),
    /// Pull a filter's module from a registry, verifying every digest.
    Pull(publish::PullArgs),
    /// Show an image's manifest, layers, annotations, ABI, size and digest.
    Inspect(publish::InspectArgs),
    /// Point a tag at an existing image.
    Tag(publish::TagArgs),
    /// Check and store registry credentials in the docker config.
    Login(publish::LoginArgs),
    /// Remove stored registry credentials.
    Logout(publish::LoginArgs),
    /// Registry-wide tools: the HTML catalog, the manifest schema.
    Hub {
        #[command(subcommand)]
        command: publish::HubCommand,
    },
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        // `demo` prints the harness's config warnings itself, as plain lines.
        0 => "warn,weir_harness::bootstrap=error",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let root = || build::workspace_root(std::env::current_dir()?);
    match cli.command {
        Command::Demo => {
            let report = demo::run(&root()?)?;
            stdout.write_all(report.as_bytes())?;
        }
        Command::Build { packages, debug } => {
            let packages: Vec<&str> = if packages.is_empty() {
                build::SAMPLE_FILTERS.to_vec()
            } else {
                packages.iter().map(String::as_str).collect()
            };
            let as_built = if debug {
                build::Build::Debug
            } else {
                build::Build::Release
            };
            for f in build::build_filters_as(&root()?, &packages, as_built)? {
                writeln!(stdout, "{}", f.wasm.display())?;
            }
        }
        Command::Push(args) => publish::push(args, &mut stdout)?,
        Command::Pull(args) => publish::pull(args, &mut stdout)?,
        Command::Inspect(args) => publish::inspect(args, &mut stdout)?,
        Command::Tag(args) => publish::tag(args, &mut stdout)?,
        Command::Login(args) => publish::login(args, &mut stdout)?,
        Command::Logout(args) => publish::logout(args, &mut stdout)?,
        Command::Hub { command } => publish::hub(command, &mut stdout)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "error: {e}");
            for (i, cause) in e.chain().skip(1).enumerate() {
                if i == 0 {
                    let _ = writeln!(stderr, "\nCaused by:");
                }
                let _ = writeln!(stderr, "    {i}: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        super::Cli::command().debug_assert();
    }
}
