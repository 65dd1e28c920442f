//! A grammar file (the authors' line format) through parse and validation.
#![no_main]

use ivr_core::nlu::Source;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = [Source {
        path: "grammars/en/fuzz.txt".into(),
        text: text.to_string(),
    }];
    let _ = ivr_core::nlu::grammar::parse(&sources);
});
