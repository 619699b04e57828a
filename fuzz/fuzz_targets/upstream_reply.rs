//! Bytes from an upstream, as the reply to the question they carry: matching, the
//! record walk, normalisation, and rendering for clients of every size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zonefwd::fuzzing::exercise_reply_bytes(data);
});
