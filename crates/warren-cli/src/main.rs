//! `warren`: the server, its privileged jail helper, and a terminal client for the API.

mod client;
mod commands;
mod stream;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // `build.rs` embeds the commit; `--version` (in parse) and the server read it from the API.
    warren_api::set_commit(env!("WARREN_COMMIT"));
    let cli = commands::Cli::parse();
    // The jail must run before any thread exists (it forks): dispatch it before the runtime starts.
    if let commands::Command::Jail = cli.command {
        return match warren_runtime::namespaces::jail::run_from_stdin() {
            Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("warren jail: {e}");
                std::process::ExitCode::from(120)
            }
        };
    }
    if let commands::Command::VolumeView { source, mountpoint } = &cli.command {
        return commands::shared_volumes::serve_view(source, mountpoint);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
