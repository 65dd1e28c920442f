//! The server config (`ivr.toml`): parse and validate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ivr::config::Config::from_toml(text);
    }
});
