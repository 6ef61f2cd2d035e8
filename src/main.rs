use std::process::ExitCode;

fn main() -> ExitCode {
    match snn_delays::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<snn_delays::train::run::Interrupted>() => ExitCode::from(130),
        Err(error) => {
            eprintln!("error: {error:#}");
            let rank = error.downcast_ref::<snn_delays::cli::RankFailed>();
            rank.map_or(ExitCode::FAILURE, |failed| ExitCode::from(failed.exit_code))
        }
    }
}
