//! Crash-safe writing: a hidden temporary file in the destination's
//! directory, fsync, rename over the destination, fsync of the directory.
//! A reader never sees a partial file; a crash leaves at worst a
//! temporary file named `.NAME.tmp.PID.N`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;

use crate::proto;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file being written to a temporary name; [`AtomicFile::commit`] moves
/// it into place, dropping it uncommitted removes it.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<fs::File>,
    tmp: PathBuf,
    path: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file for `path` (`.NAME.tmp.PID.N` beside it).
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name")
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".tmp.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = path.with_file_name(tmp_name);
        let file = fs::File::create(&tmp)?;
        Ok(AtomicFile {
            file: Some(file),
            tmp,
            path: path.to_owned(),
        })
    }

    /// The temporary file's path.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes the data to disk (fsync) without moving the file into place.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file_mut()?.sync_all()
    }

    fn file_mut(&mut self) -> io::Result<&mut fs::File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("atomic file already committed"))
    }

    /// fsync, rename over the destination, fsync of the directory (best
    /// effort: not every file system supports it).
    pub fn commit(mut self) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("committed twice"))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.path)?;
        self.tmp = PathBuf::new();
        if let Some(d) = self.path.parent() {
            sync_dir(if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            });
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file_mut()?.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file_mut()?.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Best-effort fsync of a directory, which makes renames in it durable.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `data` to `path` atomically (see the module docs).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(data)?;
    f.commit()
}

/// Writes `profile` as gzip'd protobuf to `path` atomically.
pub fn write_gzip_atomic(profile: &proto::Profile, path: &Path) -> io::Result<()> {
    let f = AtomicFile::create(path)?;
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()?.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_is_removed_and_committed_one_replaces() {
        let dir = std::env::temp_dir().join(format!("pprof-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.pb.gz");
        fs::write(&path, b"old").unwrap();
        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"new").unwrap();
        let tmp = f.temp_path().to_owned();
        assert!(tmp.exists());
        drop(f);
        assert!(!tmp.exists());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
