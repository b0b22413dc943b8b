//! Plain flame graph of a recorded profile, drawn with inferno.

use std::path::Path;

use anyhow::Context as _;
use diff::pprof::proto::Profile;
use prost::Message as _;

/// Write `profile` (sample type 0, samples) as an SVG flame graph. Folding
/// goes through the `diff` crate's resolved model, so inlined functions are
/// frames of their own exactly as `profdiff flamegraph` draws them.
pub fn write(profile: &Profile, path: &Path) -> anyhow::Result<()> {
    let resolved = diff::pprof::decode(&profile.encode_to_vec(), &diff::input::Limits::default())
        .context("re-reading the profile")?;
    let folded = diff::folded::write(&resolved, 0);
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = "profiler record".into();
    opts.count_name = "samples".into();
    let file = std::fs::File::create(path)?;
    let w = std::io::BufWriter::new(file);
    inferno::flamegraph::from_lines(&mut opts, folded.lines(), w)
        .context("drawing the flame graph")?;
    Ok(())
}
