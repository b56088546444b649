mod cli;

use clap::Parser;

use cli::{Cli, Command, KeysCommand};
use tokend::config::Settings;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // Making or inspecting a key needs no configuration (e.g. generating
    // the key a production configuration still lacks).
    if let Command::Keys(
        keys_command @ (KeysCommand::Public { .. } | KeysCommand::Generate { .. }),
    ) = &command
    {
        return match cli::offline_keys(keys_command) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tokend: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("tokend: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    tokend::telemetry::init(&settings.log, !matches!(command, Command::Serve));
    let result = cli::run(settings, command);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tokend: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
