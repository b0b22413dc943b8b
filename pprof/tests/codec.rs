//! The codec round trip, the bounds, and merging, on profiles built here.

use profiler_pprof::{
    canonical_text, decode, encode_gzip, encode_raw, proto, Builder, DecodeError, LabelSpec,
    Limits, LineSpec, Merger,
};

/// A profile using every field: mapping with build id and range, inlined
/// lines with columns, a folded location, string and numeric labels with
/// units, comments, period, default sample type, frame filters.
fn rich(value: i64, build_id: &str) -> proto::Profile {
    let mut b = Builder::new(&[("samples", "count"), ("cpu", "nanoseconds")]);
    b.set_period(Some(("cpu", "nanoseconds")), 10_000_000);
    b.set_default_sample_type(Some("cpu"));
    b.set_frame_filters("runtime\\..*", "");
    b.set_time(1_000, 2_000);
    b.comment("hello");
    let m = proto::Mapping {
        memory_start: 0x40_0000,
        memory_limit: 0x80_0000,
        file_offset: 0x1000,
        has_functions: true,
        ..Default::default()
    };
    let m = b.mapping(&m, "/bin/app", build_id);
    let inner = b.function("main.inner", "main.inner", "a.go", 10);
    let outer = b.function("main.outer", "main.outer", "a.go", 3);
    let l1 = b.location(
        m,
        0x40_1234,
        &[
            LineSpec {
                function_id: inner,
                line: 12,
                column: 5,
            },
            LineSpec {
                function_id: outer,
                line: 4,
                column: 0,
            },
        ],
        false,
    );
    let l2 = b.location(m, 0x40_2000, &[], true);
    b.sample(
        vec![l1, l2],
        &[
            LabelSpec::Num("pid", 7, ""),
            LabelSpec::Num("bytes", 4096, "bytes"),
            LabelSpec::Str("thread", "main"),
        ],
        &[value, value * 10_000_000],
    );
    b.finish()
}

#[test]
fn decode_of_encode_is_lossless() {
    let p = rich(3, "abc123");
    assert_eq!(decode(&encode_gzip(&p), &Limits::default()).unwrap(), p);
    assert_eq!(decode(&encode_raw(&p), &Limits::default()).unwrap(), p);
    let text = canonical_text(&p);
    assert!(
        text.contains("/bin/app build_id=abc123 0x400000/0x800000/0x1000 [FN]"),
        "{text}"
    );
    assert!(
        text.contains("main.inner a.go:12 <- main.outer a.go:4"),
        "{text}"
    );
}

#[test]
fn unpacked_location_ids_decode_like_packed_ones() {
    // Sample with location ids written one varint field each (wire type 0).
    let p = rich(1, "");
    let packed = encode_raw(&p);
    let mut s = Vec::new();
    for id in &p.sample[0].location_id {
        s.extend_from_slice(&[0x08, *id as u8]); // field 1, varint
    }
    for v in &p.sample[0].value {
        s.push(0x10); // field 2, varint
        let mut v = *v as u64;
        while v >= 0x80 {
            s.push((v as u8) | 0x80);
            v >>= 7;
        }
        s.push(v as u8);
    }
    let mut q = p.clone();
    q.sample.clear();
    let mut raw = encode_raw(&q);
    raw.push(0x12); // field 2 (sample), length-delimited
    raw.push(s.len() as u8);
    raw.extend_from_slice(&s);
    let d = decode(&raw, &Limits::default()).unwrap();
    assert_eq!(d.sample[0].location_id, p.sample[0].location_id);
    assert_eq!(d.sample[0].value, p.sample[0].value);
    assert_ne!(raw, packed);
}

#[test]
fn limits_are_enforced() {
    let gz = encode_gzip(&rich(1, ""));
    let small = Limits {
        max_samples: 0,
        ..Default::default()
    };
    assert!(matches!(
        decode(&gz, &small),
        Err(DecodeError::TooMany {
            what: "samples",
            ..
        })
    ));
    let tiny = Limits {
        max_decompressed_bytes: 10,
        ..Default::default()
    };
    assert!(matches!(
        decode(&gz, &tiny),
        Err(DecodeError::DecompressionBomb { limit: 10 })
    ));
    assert!(matches!(
        decode(&[], &Limits::default()),
        Err(DecodeError::Empty)
    ));
    assert!(decode(b"\xff\xff\xff", &Limits::default()).is_err());
}

/// The gzip trailer's size only sizes the buffer: a trailer that lies (too
/// small, too large) or a second member changes nothing in what is read.
#[test]
fn gzip_size_trailer_is_only_a_hint() {
    let raw = encode_raw(&rich(3, "ab"));
    let gz = profiler_pprof::gzip(&raw);
    let n = gz.len();
    assert_eq!(&gz[n - 4..], &(raw.len() as u32).to_le_bytes());
    for claimed in [0u32, 1, raw.len() as u32 / 2, u32::MAX] {
        let mut lying = gz.clone();
        lying[n - 4..].copy_from_slice(&claimed.to_le_bytes());
        // flate2 checks the size and the CRC of each member.
        let err = profiler_pprof::gunzip_bounded(&lying, 1 << 20).unwrap_err();
        assert!(matches!(err, DecodeError::Gzip(_)), "{claimed}: {err:?}");
    }
    let mut two = gz.clone();
    two.extend_from_slice(&profiler_pprof::gzip(b"tail"));
    let out = profiler_pprof::gunzip_bounded(&two, 1 << 20).unwrap();
    assert_eq!(&out[..raw.len()], &raw[..]);
    assert_eq!(&out[raw.len()..], b"tail");
    assert!(matches!(
        profiler_pprof::gunzip_bounded(&two, raw.len() as u64),
        Err(DecodeError::DecompressionBomb { .. })
    ));
}

#[test]
fn merge_sums_equal_samples_and_keeps_build_ids() {
    let mut m = Merger::new();
    m.add(&rich(2, "abc")).unwrap();
    m.add(&rich(5, "abc")).unwrap();
    m.add(&rich(1, "def")).unwrap();
    let out = m.finish();
    // Two mappings (build ids differ), so two samples: 2+5 and 1.
    assert_eq!(out.mapping.len(), 2);
    let mut values: Vec<i64> = out.sample.iter().map(|s| s.value[0]).collect();
    values.sort();
    assert_eq!(values, vec![1, 7]);
    let ids: Vec<&str> = out
        .mapping
        .iter()
        .map(|x| out.string(x.build_id).unwrap())
        .collect();
    assert_eq!(ids, vec!["abc", "def"]);
    assert_eq!(out.comment.len(), 1, "equal comments are kept once");
    // Labels, period and default type survive the merge.
    let text = canonical_text(&out);
    assert!(
        text.contains("bytes=[4096] pid=[7] thread=[\"main\"]"),
        "{text}"
    );
    assert_eq!(out.string(out.default_sample_type), Some("cpu"));
    // Different sample types are refused.
    let other = Builder::new(&[("alloc_space", "bytes")]).finish();
    assert!(m_err(&other).contains("differ"));
}

fn m_err(p: &proto::Profile) -> String {
    let mut m = Merger::new();
    m.add(&rich(1, "")).unwrap();
    m.add(p).unwrap_err().to_string()
}
