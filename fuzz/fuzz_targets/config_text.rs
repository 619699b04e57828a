//! Any text as a configuration file, through load and validation: an error, or a
//! configuration the server can be built from; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        zonefwd::fuzzing::exercise_config(text);
    }
});
