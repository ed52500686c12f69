//! Fuzz target: the daemon's request decoder (`protocol::decode_request`).
//! A refusal is one line; an accepted request encodes and decodes back to
//! itself, so that daemon, CLI and helper agree on every message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenward::protocol::{self, RequestEnvelope};

fuzz_target!(|data: &[u8]| {
    match protocol::decode_request(data) {
        Err(error) => {
            let text = error.to_string();
            assert!(!text.contains(['\n', '\r']), "multi-line error: {text:?}");
        }
        Ok(request) => {
            let line = protocol::encode_line(&RequestEnvelope {
                v: protocol::VERSION,
                request,
            });
            let again = protocol::decode_request(line.strip_suffix(b"\n").unwrap_or(&line))
                .expect("an encoded request decodes");
            let first = protocol::decode_request(data).expect("decoded once already");
            assert_eq!(first, again, "round trip changed the request");
        }
    }
});
