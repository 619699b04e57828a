//! Bytes from a client: the wire parser, then the handler's whole synchronous path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zonefwd::fuzzing::exercise_query(data);
    zonefwd::fuzzing::exercise_handler(data);
});
