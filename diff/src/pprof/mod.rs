//! The pprof codec: wire types and conversion to and from [`crate::Profile`].
//!
//! Decoding ([`decode`]) accepts gzip'd or raw protobuf and is bounded by
//! [`crate::input::Limits`]; see [`crate::input`] for the limits and for
//! loading files in any supported encoding. Encoding ([`encode_gzip`])
//! writes gzip'd protobuf that `go tool pprof` opens.

pub(crate) mod decode;
mod encode;
pub mod proto;

pub use encode::{encode_gzip, encode_raw, to_proto};

use crate::error::DecodeError;
use crate::input::Limits;
use crate::profile::Profile;

/// Decodes pprof protobuf only (gzip'd or raw), not the legacy formats.
pub fn decode(data: &[u8], limits: &Limits) -> Result<Profile, DecodeError> {
    let unzipped;
    let data = if crate::input::is_gzip(data) {
        unzipped = crate::input::gunzip_bounded(data, limits.max_decompressed_bytes)?;
        &unzipped[..]
    } else {
        data
    };
    if data.is_empty() {
        return Err(DecodeError::Empty);
    }
    decode::decode_raw(data, limits).map_err(|e| match e {
        decode::RawError::Wire(w) => DecodeError::NotAProfile(w),
        decode::RawError::Concatenated => {
            DecodeError::MalformedPprof("concatenated profiles detected".into())
        }
        decode::RawError::Limit(e) => e,
    })
}
