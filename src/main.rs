use std::process::ExitCode;

fn main() -> ExitCode {
    match snn_delays::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<snn_delays::train::run::Interrupted>() => ExitCode::from(130),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
