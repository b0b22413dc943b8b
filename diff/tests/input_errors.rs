//! Hostile and broken input: every case must give a clear one-line error
//! (or a bounded result), never a panic or unbounded allocation.

use std::io::Write;

use diff::error::{DecodeError, InputError};
use diff::input::{decode_bytes, load_many, load_profile, load_profile_with, Limits};
use diff::pprof::{encode_gzip, encode_raw, proto};
use diff::{Frame, Profile, Sample, ValueType};
use prost::Message;

mod common;

fn tmp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("profdiff-input-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_profile() -> Profile {
    Profile {
        sample_types: common::cpu_sample_types(),
        frames: vec![
            Frame {
                function: "leaf".into(),
                file: "a.go".into(),
                line: 3,
                inlined: true,
                ..Default::default()
            },
            Frame {
                function: "caller".into(),
                file: "a.go".into(),
                line: 10,
                ..Default::default()
            },
            Frame {
                function: "main".into(),
                mapping: "/bin/app".into(),
                address: 0x1234,
                ..Default::default()
            },
        ],
        samples: vec![
            Sample {
                stack: vec![0, 1, 2],
                values: vec![3, 30_000_000],
                labels: vec![("thread".into(), diff::LabelValue::Str("t1".into()))],
            },
            Sample {
                stack: vec![1, 2],
                values: vec![1, 10_000_000],
                labels: vec![],
            },
        ],
        period: 10_000_000,
        period_type: Some(ValueType {
            kind: "cpu".into(),
            unit: "nanoseconds".into(),
        }),
        ..Default::default()
    }
}

fn decode_err(data: &[u8]) -> DecodeError {
    decode_bytes(data, &Limits::default())
        .map(|(p, _)| p.samples.len())
        .expect_err("must fail")
}

#[test]
fn round_trip_keeps_inlining_labels_and_totals() {
    let p = small_profile();
    let q = diff::pprof::decode(&encode_gzip(&p), &Limits::default()).unwrap();
    assert_eq!(q.totals(), vec![4, 40_000_000]);
    assert_eq!(q.sample_types, p.sample_types);
    assert_eq!(q.period, p.period);
    assert_eq!(q.samples[0].labels, p.samples[0].labels);
    let names: Vec<_> = q.samples[0]
        .stack
        .iter()
        .map(|&f| {
            (
                q.frames[f as usize].function.as_str(),
                q.frames[f as usize].inlined,
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![("leaf", true), ("caller", false), ("main", false)]
    );
    // leaf+caller became one location with two lines.
    let wire = proto::Profile::decode(&encode_raw(&p)[..]).unwrap();
    assert_eq!(wire.location.iter().map(|l| l.line.len()).max(), Some(2));
}

#[test]
fn empty_file_is_a_clear_error() {
    let d = tmp_dir("empty");
    let f = d.join("empty.pb.gz");
    std::fs::write(&f, b"").unwrap();
    let e = load_profile(&f).unwrap_err().to_string();
    assert!(
        e.contains("empty.pb.gz") && e.contains("empty input"),
        "{e}"
    );
    assert!(!e.contains('\n'));
}

#[test]
fn truncated_protobuf_names_the_byte() {
    let raw = encode_raw(&small_profile());
    let cut = &raw[..raw.len() - 3]; // inside the trailing `period` varint
    match decode_err(cut) {
        DecodeError::NotAProfile(m) => assert!(m.contains("truncated protobuf at byte"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
    // Truncated gzip stream.
    let gz = encode_gzip(&small_profile());
    let e = decode_err(&gz[..gz.len() / 2]);
    assert!(matches!(e, DecodeError::Gzip(_)), "{e:?}");
}

#[test]
fn error_display_is_one_line_with_file_and_hint() {
    let d = tmp_dir("corrupt");
    let f = d.join("corrupt.pb.gz");
    let raw = encode_raw(&small_profile());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw[..raw.len() - 3]).unwrap();
    std::fs::write(&f, gz.finish().unwrap()).unwrap();
    let e = load_profile(&f).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: not a pprof profile: truncated protobuf at byte ",
            f.display()
        )),
        "{e}"
    );
    assert!(
        e.ends_with("(expected gzip'd or raw pprof, legacy text/binary, or folded stacks)"),
        "{e}"
    );
}

#[test]
fn random_bytes_are_rejected_without_panic() {
    // A fixed xorshift sequence: deterministic "random" inputs of many sizes.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in [1usize, 2, 7, 64, 1000, 65_536] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        // Either an error or (rarely) a valid reading; never a panic.
        let _ = decode_bytes(&bytes, &Limits::default());
        let mut gz = bytes.clone();
        if gz.len() >= 2 {
            gz[0] = 0x1f;
            gz[1] = 0x8b;
            assert!(decode_bytes(&gz, &Limits::default()).is_err());
        }
    }
}

#[test]
fn gzip_bomb_is_stopped_at_the_limit() {
    // 64 MiB of zeros compresses to ~64 KiB; a 1 MiB limit must stop it.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    let e = decode_bytes(&bomb, &limits).unwrap_err();
    assert_eq!(e, DecodeError::DecompressionBomb { limit: 1 << 20 });
    assert!(e.to_string().contains("decompression bomb"));

    let d = tmp_dir("bomb");
    let f = d.join("bomb.pb.gz");
    std::fs::write(&f, &bomb).unwrap();
    let e = load_profile_with(&f, &limits).unwrap_err().to_string();
    assert!(
        e.starts_with(&f.display().to_string()) && e.contains("bomb"),
        "{e}"
    );
}

#[test]
fn input_size_limit() {
    let limits = Limits {
        max_input_bytes: 10,
        ..Limits::default()
    };
    let e = decode_bytes(&[0u8; 11], &limits).unwrap_err();
    assert_eq!(
        e,
        DecodeError::TooLarge {
            size: 11,
            limit: 10
        }
    );
}

#[test]
fn huge_repeated_counts_are_bounded() {
    // A million empty samples (2 bytes each on the wire) against a limit of 1000.
    let mut raw = proto::Profile {
        string_table: vec!["".into()],
        ..Default::default()
    }
    .encode_to_vec();
    for _ in 0..1_000_000 {
        raw.extend_from_slice(&[0x12, 0x00]); // field 2 (sample), length 0
    }
    let limits = Limits {
        max_samples: 1000,
        ..Limits::default()
    };
    let e = decode_bytes(&raw, &limits).unwrap_err();
    assert!(
        matches!(
            e,
            DecodeError::TooMany {
                what: "samples",
                limit: 1000
            }
        ),
        "{e:?}"
    );

    // One sample with a packed location-id list of 10 million ids.
    let ids = vec![1u64; 10_000_000];
    let wire = proto::Profile {
        string_table: vec!["".into()],
        sample: vec![proto::Sample {
            location_id: ids,
            value: vec![],
            label: vec![],
        }],
        ..Default::default()
    }
    .encode_to_vec();
    let limits = Limits {
        max_entries: 1_000_000,
        ..Limits::default()
    };
    let e = decode_bytes(&wire, &limits).unwrap_err();
    assert!(matches!(e, DecodeError::TooMany { .. }), "{e:?}");

    // A length prefix claiming far more bytes than exist.
    let lie = [0x12u8, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(matches!(decode_err(&lie), DecodeError::NotAProfile(_)));
}

fn wire_with(edit: impl FnOnce(&mut proto::Profile)) -> Vec<u8> {
    let mut w = diff::pprof::to_proto(&small_profile());
    edit(&mut w);
    w.encode_to_vec()
}

fn malformed(data: &[u8]) -> String {
    match decode_err(data) {
        DecodeError::MalformedPprof(m) => m,
        other => panic!("expected MalformedPprof, got {other:?}"),
    }
}

#[test]
fn bad_ids_and_indexes_are_named() {
    let m = malformed(&wire_with(|w| w.sample[0].location_id[0] = 999));
    assert!(m.contains("location id 999"), "{m}");
    // A multi-byte varint id and id 0 (a hole in a dense id table), in
    // the last place of the packed field.
    let m = malformed(&wire_with(|w| {
        let last = w.sample[0].location_id.len() - 1;
        w.sample[0].location_id[last] = 1 << 40;
    }));
    assert!(
        m.contains("sample 0 refers to location id 1099511627776"),
        "{m}"
    );
    let m = malformed(&wire_with(|w| w.sample[1].location_id.push(0)));
    assert!(m.contains("sample 1 refers to location id 0"), "{m}");
    let m = malformed(&wire_with(|w| w.location[0].line[0].function_id = 77));
    assert!(m.contains("function id 77"), "{m}");
    let m = malformed(&wire_with(|w| w.function[0].name = 12345));
    assert!(m.contains("string index 12345"), "{m}");
    let m = malformed(&wire_with(|w| w.sample_type[0].r#type = -1));
    assert!(m.contains("string index -1"), "{m}");
    let m = malformed(&wire_with(|w| w.function[0].id = 0));
    assert!(m.contains("reserved id 0"), "{m}");
    let m = malformed(&wire_with(|w| w.location[1].id = w.location[0].id));
    assert!(m.contains("several locations"), "{m}");
    let m = malformed(&wire_with(|w| w.sample[0].value.push(1)));
    assert!(
        m.contains("3 values but the profile has 2 sample types"),
        "{m}"
    );
    let m = malformed(&wire_with(|w| {
        w.location[0].mapping_id = 42;
    }));
    assert!(m.contains("mapping id 42"), "{m}");
}

#[test]
fn string_table_must_start_empty() {
    let data = wire_with(|w| w.string_table[0] = "x".into());
    assert!(matches!(decode_err(&data), DecodeError::NotAProfile(_)));
}

#[test]
fn unsymbolized_locations_become_hex_frames() {
    let data = wire_with(|w| {
        w.location[0].line.clear();
        w.location[0].address = 0x4005f0;
    });
    let (p, _) = decode_bytes(&data, &Limits::default()).unwrap();
    assert_eq!(
        p.frames[p.samples[0].stack[0] as usize].function,
        "0x4005f0"
    );
}

#[test]
fn legacy_and_folded_are_sniffed() {
    let (p, enc) = decode_bytes(b"main;run;work 5\nmain;idle 2\n", &Limits::default()).unwrap();
    assert_eq!(enc, diff::input::Encoding::Folded);
    assert_eq!(p.totals(), vec![7]);
    let text = b"goroutine profile: total 3\n2 @ 0x1001 0x2001\n1 @ 0x3001\n";
    let (p, enc) = decode_bytes(text, &Limits::default()).unwrap();
    assert_eq!(enc, diff::input::Encoding::Legacy);
    assert_eq!(p.totals(), vec![3]);
    // All frames adjusted by -1, as pprof does.
    assert_eq!(p.frames[p.samples[0].stack[0] as usize].function, "0x1000");
    // A recognized legacy header with a broken body is a legacy error.
    let e = decode_err(b"goroutine profile: total 3\nnonsense\n");
    assert!(matches!(e, DecodeError::MalformedLegacy { .. }), "{e:?}");
}

#[test]
fn explicit_bad_file_fails_but_directory_scan_skips_readme() {
    let d = tmp_dir("dir");
    std::fs::write(d.join("README.md"), "# not a profile").unwrap();
    std::fs::write(d.join("MANIFEST.tsv"), "a\tb\n").unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/b.pb.gz"), encode_gzip(&small_profile())).unwrap();
    std::fs::write(d.join("a.folded"), "x;y 1\n").unwrap();
    let got = load_many(std::slice::from_ref(&d)).unwrap();
    let names: Vec<_> = got
        .iter()
        .map(|(p, _)| p.strip_prefix(&d).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["a.folded", "sub/b.pb.gz"]);
    let e = load_many(&[d.join("README.md")]).unwrap_err();
    assert!(matches!(e, InputError::Decode { .. }), "{e}");
    assert!(e.to_string().contains("README.md"));
    let e = load_profile(d.join("missing.pb")).unwrap_err().to_string();
    assert!(e.contains("missing.pb"), "{e}");
}

#[test]
fn sample_type_selection() {
    use diff::input::select_sample_type;
    let mut p = small_profile();
    assert_eq!(
        select_sample_type(&p, None).unwrap(),
        1,
        "last type by default"
    );
    assert_eq!(select_sample_type(&p, Some("samples")).unwrap(), 0);
    assert_eq!(select_sample_type(&p, Some("cpu/nanoseconds")).unwrap(), 1);
    assert_eq!(select_sample_type(&p, Some("0")).unwrap(), 0);
    let e = select_sample_type(&p, Some("alloc_space"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("alloc_space") && e.contains("samples/count,cpu/nanoseconds"),
        "{e}"
    );
    p.default_sample_type = Some("samples".into());
    assert_eq!(select_sample_type(&p, None).unwrap(), 0);
}

#[test]
fn merge_requires_equal_sample_types() {
    let a = small_profile();
    let mut b = small_profile();
    let merged = diff::input::merge(&[("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
    assert_eq!(merged.totals(), vec![8, 80_000_000]);
    assert_eq!(
        merged.frames.len(),
        a.frames.len(),
        "frames are re-interned"
    );
    b.sample_types[1].unit = "microseconds".into();
    let e = diff::input::merge(&[("a".into(), a), ("b".into(), b)])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("b: sample types") && e.contains("of a"),
        "{e}"
    );
}

#[test]
fn legacy_heap_extreme_values_do_not_overflow() {
    // i64::MIN / -1 overflows; pprof (Go) wraps, we must not panic either.
    let text =
        b"heap profile: 1: 1 [1: 1] @ heapprofile\n-1: -9223372036854775808 [0: 0] @ 0x10 0x20\n";
    let (p, enc) = decode_bytes(text, &Limits::default()).unwrap();
    assert_eq!(enc, diff::input::Encoding::Legacy);
    assert_eq!(p.totals(), vec![-1, i64::MIN]);
}
