//! Loading profiles from files and choosing a sample type.
//!
//! [`load_profile`] reads one file in any supported encoding, sniffed from
//! its content (never its name):
//!
//! 1. gzip (magic `1f 8b`) is decompressed first, bounded by
//!    [`Limits::max_decompressed_bytes`];
//! 2. pprof protobuf (`perftools.profiles.Profile`);
//! 3. the legacy formats of [`crate::legacy`] (binary CPU, heap, contention,
//!    threadz, goroutine/threadcreate text, Java);
//! 4. folded stacks ([`crate::folded`]).
//!
//! This is `go tool pprof`'s order (it has no folded reader). An empty
//! file is an error, as in pprof. A protobuf that decodes but is
//! inconsistent (string index out of range, unknown or reserved id,
//! sample value count not matching the sample types) is an error naming
//! the offending index or id; pprof rejects these too, except a location
//! naming a mapping id that does not exist, which pprof silently ignores
//! and we reject.
//!
//! # Limits
//!
//! Every input is bounded by [`Limits`] (defaults in
//! [`Limits::default`]): the file size (1 GiB), the decompressed size
//! (512 MiB; a larger gzip stream is reported as a decompression bomb), the
//! number of samples (50 million), top-level messages (100 million) and
//! repeated entries such as location ids and values (400 million, each at
//! least one byte on the wire). Use [`load_profile_with`] to change them.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use profiler_pprof::decode::RawError;

use crate::error::{DecodeError, InputError};
use crate::profile::Profile;

pub use profiler_pprof::Limits;

/// The encoding a profile was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// pprof protobuf.
    Pprof,
    /// One of the legacy text or binary formats.
    Legacy,
    /// Folded stacks.
    Folded,
}

pub use profiler_pprof::{gunzip_bounded, is_gzip};

/// Decodes a profile from bytes in any supported encoding (see the module docs).
pub fn decode_bytes(data: &[u8], limits: &Limits) -> Result<(Profile, Encoding), DecodeError> {
    let data = profiler_pprof::decompress(data, limits)?;
    let data = &data[..];
    let wire_err = match crate::pprof::decode_raw(data, limits) {
        Ok(p) => return Ok((p, Encoding::Pprof)),
        Err(RawError::Limit(e)) => return Err(e),
        Err(RawError::Concatenated) => {
            return Err(DecodeError::MalformedPprof(
                "concatenated profiles detected (time_nanos appears twice)".into(),
            ))
        }
        Err(RawError::Wire(w)) => w,
    };
    if let Some(p) = crate::legacy::parse(data)? {
        check_samples(&p, limits)?;
        return Ok((p, Encoding::Legacy));
    }
    if let Some(p) = crate::folded::parse(data) {
        check_samples(&p, limits)?;
        return Ok((p, Encoding::Folded));
    }
    Err(DecodeError::NotAProfile(describe_unrecognized(
        data, wire_err,
    )))
}

/// For text input the protobuf error is noise: name the first line instead.
fn describe_unrecognized(data: &[u8], wire_err: String) -> String {
    let head = &data[..data.len().min(512)];
    let texty = std::str::from_utf8(head).is_ok_and(|s| {
        s.chars()
            .all(|c| !c.is_control() || c == '\n' || c == '\r' || c == '\t')
    });
    if !texty {
        return wire_err;
    }
    let first = String::from_utf8_lossy(head)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(60)
        .collect::<String>();
    format!("unrecognized text format (first line {first:?})")
}

fn check_samples(p: &Profile, limits: &Limits) -> Result<(), DecodeError> {
    if p.samples.len() as u64 > limits.max_samples {
        return Err(DecodeError::TooMany {
            what: "samples",
            limit: limits.max_samples,
        });
    }
    Ok(())
}

/// Loads one profile file with the default [`Limits`].
pub fn load_profile(path: impl AsRef<Path>) -> Result<Profile, InputError> {
    load_profile_with(path, &Limits::default())
}

/// Loads one profile file with explicit limits.
pub fn load_profile_with(path: impl AsRef<Path>, limits: &Limits) -> Result<Profile, InputError> {
    let path = path.as_ref();
    let io = |error| InputError::Io {
        path: path.to_owned(),
        error,
    };
    let file = fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > limits.max_input_bytes {
        return Err(InputError::decode(
            path,
            DecodeError::TooLarge {
                size,
                limit: limits.max_input_bytes,
            },
        ));
    }
    let mut data = Vec::with_capacity(size as usize);
    file.take(limits.max_input_bytes + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    decode_bytes(&data, limits)
        .map(|(p, _)| p)
        .map_err(|e| InputError::decode(path, e))
}

/// File names skipped when scanning a directory (never when named explicitly).
fn is_non_profile_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let stem = lower.split('.').next().unwrap_or("");
    name.starts_with('.')
        || matches!(
            stem,
            "manifest" | "readme" | "license" | "licence" | "notice" | "copying" | "changelog"
        )
        || [
            ".md", ".tsv", ".csv", ".json", ".yaml", ".yml", ".toml", ".html", ".svg",
        ]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// Lists the profile files under `dir`, recursively, sorted by path.
/// Hidden entries, non-profile names (see [`load_many`]) and symlinked
/// directories are skipped.
pub fn scan_dir(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let rd = fs::read_dir(&d).map_err(|error| InputError::Io {
            path: d.clone(),
            error,
        })?;
        for entry in rd {
            let entry = entry.map_err(|error| InputError::Io {
                path: d.clone(),
                error,
            })?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let ft = entry.file_type().map_err(|error| InputError::Io {
                path: path.clone(),
                error,
            })?;
            if ft.is_dir() {
                if !name.starts_with('.') {
                    stack.push(path);
                }
            } else if ft.is_symlink() && path.is_dir() {
                // Symlinked directories are not followed (no cycles).
                continue;
            } else if !is_non_profile_name(&name) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Loads files and directories (recursively, sorted; non-profile files
/// such as `MANIFEST.tsv` or `README.md` are skipped inside directories
/// only). Any file that fails to load is an error naming it.
pub fn load_many(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Profile)>, InputError> {
    load_many_with(paths, &Limits::default())
}

/// [`load_many`] with explicit limits.
pub fn load_many_with(
    paths: &[PathBuf],
    limits: &Limits,
) -> Result<Vec<(PathBuf, Profile)>, InputError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let found = scan_dir(p)?;
            if found.is_empty() {
                return Err(InputError::EmptyDirectory { path: p.clone() });
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    // Files decode on up to one thread per core; results (and the error
    // reported, the first in file order) do not depend on the scheduling.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let mut loaded: Vec<Option<Result<Profile, InputError>>> =
        (0..files.len()).map(|_| None).collect();
    if threads <= 1 {
        for (slot, f) in loaded.iter_mut().zip(&files) {
            *slot = Some(load_profile_with(f, limits));
        }
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(&mut loaded);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(f) = files.get(i) else { break };
                    let r = load_profile_with(f, limits);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                });
            }
        });
    }
    files
        .into_iter()
        .zip(loaded)
        .map(|(f, r)| {
            // Every slot is filled above; a missing one is loaded here.
            let r = r.unwrap_or_else(|| load_profile_with(&f, limits));
            r.map(|p| (f, p))
        })
        .collect()
}

/// Chooses a sample type, returning its index into `sample_types`.
///
/// `requested` may be a type name (`cpu`, `alloc_space`), `type/unit`
/// (`cpu/nanoseconds`) or an index (`0`). Without one: the profile's
/// `default_sample_type` if it names a type, else the last type (pprof's
/// convention). Errors list the available types.
pub fn select_sample_type(p: &Profile, requested: Option<&str>) -> Result<usize, InputError> {
    select_sample_type_for(p, requested, Path::new(""))
}

/// [`select_sample_type`] with the file name to put in errors.
pub fn select_sample_type_for(
    p: &Profile,
    requested: Option<&str>,
    path: &Path,
) -> Result<usize, InputError> {
    if p.sample_types.is_empty() {
        return Err(InputError::NoSampleTypes {
            path: path.to_owned(),
        });
    }
    let find = |name: &str| {
        p.sample_types
            .iter()
            .position(|t| t.kind == name || t.to_string() == name)
    };
    match requested {
        None => Ok(p
            .default_sample_type
            .as_deref()
            .and_then(find)
            .unwrap_or(p.sample_types.len() - 1)),
        Some(r) => find(r)
            .or_else(|| {
                r.parse::<usize>()
                    .ok()
                    .filter(|&i| i < p.sample_types.len())
            })
            .ok_or_else(|| InputError::UnknownSampleType {
                path: path.to_owned(),
                requested: r.to_owned(),
                available: sample_types_string(p),
            }),
    }
}

/// Merges loaded profiles into one (see [`Profile::merge_from`]); all must
/// have the same sample types (names and units, in order), else the error
/// names the first file that differs.
pub fn merge(loaded: &[(PathBuf, Profile)]) -> Result<Profile, InputError> {
    let Some(((first_path, first), rest)) = loaded.split_first() else {
        return Ok(Profile::default());
    };
    let mut merged = first.clone();
    for (path, p) in rest {
        if p.sample_types != first.sample_types {
            return Err(InputError::SampleTypeMismatch {
                path: path.clone(),
                found: sample_types_string(p),
                first: first_path.clone(),
                expected: sample_types_string(first),
            });
        }
        merged.merge_from(p);
    }
    Ok(merged)
}

/// The sample types as `type/unit` comma-separated, for messages.
pub fn sample_types_string(p: &Profile) -> String {
    p.sample_types
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_only_non_profile_names() {
        assert!(is_non_profile_name("MANIFEST.tsv"));
        assert!(is_non_profile_name("README"));
        assert!(is_non_profile_name(".hidden"));
        assert!(!is_non_profile_name("cpu.pb.gz"));
        assert!(!is_non_profile_name("profile__testdata__cppbench.heap"));
    }
}
