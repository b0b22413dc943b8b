//! Feeds arbitrary bytes to the profile loader (gzip sniffing, pprof
//! protobuf, every legacy reader, folded stacks), with small limits so a
//! run explores bounds rather than allocating. Any decoded profile is also
//! re-encoded, decoded again and summarized with `top`, which must not panic.
#![no_main]

use diff::input::{decode_bytes, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_input_bytes: 1 << 20,
        max_decompressed_bytes: 4 << 20,
        max_samples: 100_000,
        max_messages: 200_000,
        max_entries: 1_000_000,
    };
    if let Ok((p, _)) = decode_bytes(data, &limits) {
        p.check_valid().expect("decoders produce valid profiles");
        for i in 0..p.sample_types.len() {
            let _ = diff::top::render(&diff::top::top_with(&p, i, false, 0.005), Some(10));
            let _ = diff::folded::write(&p, i);
        }
        let again = diff::pprof::encode_gzip(&p);
        let q = diff::pprof::decode(&again, &Limits::default()).expect("our own output decodes");
        assert_eq!(q.totals(), p.totals());
    }
});
