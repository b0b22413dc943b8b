//! The request messages of the two push protocols, written by hand with
//! prost derive from the field numbers their upstream `.proto` files
//! publish (facts only; no generated code):
//!
//! * Pyroscope: `push.v1` from grafana/pyroscope `api/push/v1/push.proto`
//!   and `types.v1.LabelPair` from `api/types/v1/types.proto` (as of
//!   commit 0ed69a0b, Pyroscope 1.x). Annotations (field 3 of
//!   `RawProfileSeries`) are dropped by Pyroscope's distributors and are
//!   not sent.
//! * Parca: `parca.profilestore.v1alpha1` from parca-dev/parca
//!   `proto/parca/profilestore/v1alpha1/profilestore.proto` (as of commit
//!   182cd094). Newer Parca releases add `executable_info` (field 2 of
//!   `RawSample`), which is optional and not sent.
//!
//! The empty responses (`PushResponse`, `WriteRawResponse`) need no type:
//! only the status is read.

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct LabelPair {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `push.v1.PushRequest`: the body of `/push.v1.PusherService/Push`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PushRequest {
    /// Profiles with their labels.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<PushSeries>,
}

/// `push.v1.RawProfileSeries`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PushSeries {
    /// The series' labels (`__name__`, `service_name`, ...).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    /// The profiles.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<PushSample>,
}

/// `push.v1.RawSample`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PushSample {
    /// A pprof profile, gzip'd or not.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// Unique id of the profile (`ID` upstream), for deduplication.
    #[prost(string, tag = "2")]
    pub id: String,
}

/// `parca.profilestore.v1alpha1.WriteRawRequest`: the body of
/// `/parca.profilestore.v1alpha1.ProfileStoreService/WriteRaw`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct WriteRawRequest {
    /// Tenant (deprecated upstream, still read).
    #[prost(string, tag = "1")]
    pub tenant: String,
    /// Profiles with their labels.
    #[prost(message, repeated, tag = "2")]
    pub series: Vec<ParcaSeries>,
    /// True when the profiles' addresses are already relative to their
    /// mappings' files (ours are: ELF virtual addresses).
    #[prost(bool, tag = "3")]
    pub normalized: bool,
}

/// `parca.profilestore.v1alpha1.RawProfileSeries`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ParcaSeries {
    /// The series' labels.
    #[prost(message, optional, tag = "1")]
    pub labels: Option<LabelSet>,
    /// The profiles.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<ParcaSample>,
}

/// `parca.profilestore.v1alpha1.LabelSet` (its `Label` has the same
/// fields as [`LabelPair`]).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct LabelSet {
    /// The labels.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
}

/// `parca.profilestore.v1alpha1.RawSample`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ParcaSample {
    /// A pprof profile, gzip'd or not.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
}
