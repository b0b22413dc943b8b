//! Errors of the input side: reading, decoding and selecting from profiles.
//!
//! [`DecodeError`] is what a codec says about a byte buffer; [`InputError`]
//! adds the file it came from so that its `Display` is a complete one-line
//! message such as
//! `corrupt.pb.gz: not a pprof profile: truncated protobuf at byte 1234 (expected gzip'd or raw pprof, legacy text/binary, or folded stacks)`.

use std::path::PathBuf;

/// What went wrong decoding a buffer (defined by the pprof crate, which
/// every reader of the workspace shares).
pub use profiler_pprof::DecodeError;

/// An error loading or using a profile file; `Display` names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Reading the file or directory failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error (part of the message, not a separate source, so
        /// `{:#}` chains print it once).
        error: std::io::Error,
    },
    /// The file's content could not be decoded.
    #[error("{}: {problem}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said (part of the message, not a separate source).
        problem: DecodeError,
    },
    /// A directory given as input holds no profile files.
    #[error("{}: directory contains no profile files", path.display())]
    EmptyDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// The requested sample type is not in the profile.
    #[error("{}: no sample type {requested:?}; available: {available}", path.display())]
    UnknownSampleType {
        /// The profile (may be empty when the profile did not come from a file).
        path: PathBuf,
        /// What was asked for.
        requested: String,
        /// The profile's sample types, comma-separated.
        available: String,
    },
    /// The profile has no sample types at all, so nothing can be selected.
    #[error("{}: profile has no sample types", path.display())]
    NoSampleTypes {
        /// The profile.
        path: PathBuf,
    },
    /// Profiles that must be combined have different sample types.
    #[error("{}: sample types [{found}] differ from [{expected}] of {}", path.display(), first.display())]
    SampleTypeMismatch {
        /// The profile that differs.
        path: PathBuf,
        /// Its sample types.
        found: String,
        /// The first profile.
        first: PathBuf,
        /// The first profile's sample types.
        expected: String,
    },
    /// Writing an output file failed.
    #[error("{}: cannot write: {error}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

impl InputError {
    /// Wraps a [`DecodeError`] with the file it came from.
    pub fn decode(path: impl Into<PathBuf>, problem: DecodeError) -> Self {
        InputError::Decode {
            path: path.into(),
            problem,
        }
    }
}
