use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = loadtest::cli::Cli::parse();
    match loadtest::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
