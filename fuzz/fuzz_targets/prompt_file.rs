//! A prompt catalog file and its speech markup.
#![no_main]

use ivr_core::prompts::{Catalog, Source, markup};
use ivr_proto::types::Lang;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for lang in Lang::ALL {
        let sources = [Source {
            path: format!("prompts/{}/fuzz.txt", lang.code()).into(),
            lang,
            text: text.to_string(),
        }];
        let _ = Catalog::parse(&sources);
        let _ = markup::render(text, lang);
    }
});
