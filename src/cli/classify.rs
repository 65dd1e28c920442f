//! `ivr classify [--lang en|es] [TEXT]`: the intent of a text, or of each stdin line, as JSON
//! lines `{"text":..,"intent":..,"confidence":..,"slots":{..}}`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::types::Lang;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "en")]
    pub lang: String,
    /// The grammars to train from.
    #[arg(long, default_value = "grammars")]
    pub grammars: PathBuf,
    /// Show slot values (receipt numbers, phones, emails) redacted, as logs do.
    #[arg(long)]
    pub redact: bool,
    /// The text; without it, each line of standard input.
    pub text: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let lang = Lang::from_code(&args.lang)
        .ok_or_else(|| anyhow::anyhow!("unknown language {:?}: use en or es", args.lang))?;
    let nlu = crate::server::load_grammars(&args.grammars)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.text.is_empty() {
        writeln!(
            out,
            "{}",
            nlu.classify_line(lang, &args.text.join(" "), !args.redact)
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    for line in std::io::stdin().lock().lines() {
        // Invalid UTF-8 on stdin is classified lossily rather than stopping the batch.
        let line = match line {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => String::new(),
            Err(e) => return Err(e.into()),
        };
        writeln!(out, "{}", nlu.classify_line(lang, &line, !args.redact))?;
    }
    Ok(ExitCode::SUCCESS)
}
