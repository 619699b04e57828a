//! A stored reply rendered from the cache for a client that spells the question
//! differently and sends an OPT record of its own. The input is a 2-octet length, that
//! many octets of upstream reply, then 8 octets of spelling, then the client's OPT.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (reply, rest) = rest.split_at(len);
    let (spelling, opt) = rest.split_at(rest.len().min(8));
    zonefwd::fuzzing::exercise_cache_render(reply, spelling, opt);
});
