//! Fuzz target: the relay's handling of a client connection (head scan,
//! hyper's parser with the relay's limits, the guards, the upstream request
//! with its credential). The invariants live in
//! `tokenward::relay::fuzzing::request_head`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tokenward::relay::fuzzing::request_head(data);
});
