use std::process::ExitCode;

fn main() -> ExitCode {
    match snn_delays::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
