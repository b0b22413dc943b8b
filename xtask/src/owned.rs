//! What a benchmark made and must undo: the processes it started (killed
//! and reaped by their `Child`, so only the bench's own) and the cgroup
//! folders it created (removed in reverse order of creation).

use std::{
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

use anyhow::{Context as _, Result};

/// Processes and cgroups a bench made; ended and removed on drop.
#[derive(Default)]
pub struct Owned {
    /// Started processes.
    pub children: Vec<Child>,
    /// Created cgroup folders, parents first.
    pub dirs: Vec<PathBuf>,
}

impl Owned {
    /// Create `base/rel` folder by folder (`rel` uses `/`), recording each
    /// folder this call creates; returns the deepest.
    pub fn mkdirs(&mut self, base: &Path, rel: &str) -> Result<PathBuf> {
        let mut p = base.to_path_buf();
        for part in rel.split('/') {
            p = p.join(part);
            if !p.exists() {
                std::fs::create_dir(&p)
                    .with_context(|| format!("creating cgroup {}", p.display()))?;
                self.dirs.push(p.clone());
            }
        }
        Ok(p)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A cgroup can be removed only once its last process has gone,
        // which the kernel notes shortly after the wait.
        for d in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
