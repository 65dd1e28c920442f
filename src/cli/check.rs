//! `ivr check`: validate `prompts/` and `grammars/` the way the server will load them, run the
//! authors' test cases, print accuracy and a confusion list. Exit 1 on any error (reported as
//! `file:line: message`) or failed case. `--eval FILE` (repeatable) also scores a hard
//! evaluation set (`evals/<lang>.txt`, see `nlu::eval`) and fails when a floor is broken.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::types::Lang;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "prompts")]
    pub prompts: PathBuf,
    #[arg(long, default_value = "grammars")]
    pub grammars: PathBuf,
    /// A hard evaluation set to score (`evals/en.txt`); repeat for several. Its floors
    /// (in-domain accuracy, safety recall, out-of-domain rejection, confident errors) must hold.
    #[arg(long = "eval")]
    pub eval: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut errors: Vec<String> = Vec::new();

    match crate::server::load_prompt_sources(&args.prompts) {
        Err(e) => errors.push(format!("{e:#}")),
        Ok(sources) => match crate::speech::Catalog::parse(&sources) {
            Err(errs) => errors.extend(errs.iter().map(ToString::to_string)),
            Ok(catalog) => {
                // The voice flow's prompts, and the typed ones of the TTY and RTT lines.
                let mut required = crate::speech::required_prompts();
                required.extend(crate::flow::tty::prompt_ids());
                let missing = catalog.check_complete(&required, &args.prompts);
                errors.extend(missing.iter().map(ToString::to_string));
                println!(
                    "prompts: {} prompts, {} languages",
                    catalog.len(),
                    Lang::ALL.len()
                );
            }
        },
    }

    let mut failed_cases = 0;
    match crate::server::load_grammar_sources(&args.grammars)
        .map_err(|e| vec![e.to_string()])
        .and_then(|sources| {
            crate::nlu::build(&sources)
                .map_err(|errs| errs.iter().map(ToString::to_string).collect())
        }) {
        Err(errs) => errors.extend(errs),
        Ok(nlu) => {
            for lang in Lang::ALL {
                for intent in nlu.missing_intents(lang) {
                    errors.push(format!(
                        "{}: intent {intent} has no phrases in {lang}",
                        args.grammars.join(lang.code()).display()
                    ));
                }
            }
            let report = nlu.run_tests();
            println!(
                "grammars: {}/{} author test cases pass ({:.1}%)",
                report.passed,
                report.total,
                report.accuracy() * 100.0
            );
            if !report.confusions.is_empty() {
                println!("confusions (expected -> got: count):");
                for (expected, got, n) in &report.confusions {
                    println!("  {expected} -> {got}: {n}");
                }
            }
            for f in &report.failures {
                eprintln!("{f}");
            }
            failed_cases = report.failures.len();
            for path in &args.eval {
                errors.extend(evaluate(&nlu, path));
            }
        }
    }

    for e in &errors {
        eprintln!("{e}");
    }
    if errors.is_empty() && failed_cases == 0 {
        println!("check: ok");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "check: {} error(s), {failed_cases} failed test case(s)",
            errors.len()
        );
        Ok(ExitCode::from(1))
    }
}

/// Score one evaluation file; the floors it breaks (or why it could not be read) as errors.
fn evaluate(nlu: &crate::nlu::Nlu, path: &std::path::Path) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let set = match crate::nlu::eval::parse(path, &text) {
        Ok(s) => s,
        Err(errs) => return errs.iter().map(ToString::to_string).collect(),
    };
    let report = crate::nlu::eval::score(nlu, &set);
    print!("{report}");
    report
        .broken_floors()
        .into_iter()
        .map(|b| format!("{}: {b}", path.display()))
        .collect()
}
