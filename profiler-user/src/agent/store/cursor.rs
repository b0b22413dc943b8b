//! Export cursors: where each exporter is in the store's windows.
//!
//! Windows are exported in the order of their end time; windows that end
//! at the same moment (one per container and type) are told apart by
//! their path, which is also their [`StoredWindow::id`]. A cursor is the
//! last end time fully or partly sent plus the ids sent at that end time
//! (bounded by the containers and types of one window), so a window put
//! late within the same end time is still sent, and none is sent twice.
//!
//! Each cursor lives in `<root>/export/<name>.json`, written atomically
//! after every window sent. The store tells every open cursor about the
//! windows it evicts that the cursor had not passed yet: those are the
//! exporter's dropped windows ([`ExportCursor::dropped`]).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{from_ms, io_err, Entry, Store, StoreError, TargetId};

/// Directory of the cursor files, under the store's root.
pub const EXPORT_DIR: &str = "export";

/// Most windows [`Store::pending_windows`] returns at once.
pub const MAX_PENDING_BATCH: usize = 1024;

/// One stored window, as an exporter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWindow {
    /// Stable id: the window file's path relative to the store's root
    /// (unique per target, type, start and end).
    pub id: String,
    /// Whose profile it is.
    pub target: TargetId,
    /// Profile type.
    pub profile_type: String,
    /// Window start.
    pub start: SystemTime,
    /// Window end.
    pub end: SystemTime,
    /// End in milliseconds since the epoch (the export order).
    pub end_ms: u64,
    /// Stored (gzip'd) size.
    pub bytes: u64,
}

/// A cursor's position: the windows ending up to `end_ms` are sent,
/// except those ending exactly at `end_ms` whose id is not in `sent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorPos {
    /// End time (ms since the epoch) of the last window sent.
    pub end_ms: u64,
    /// Ids of the windows sent that end at `end_ms`.
    pub sent: BTreeSet<String>,
}

impl CursorPos {
    /// True when the window ending at `end_ms` with `id` is not sent yet.
    pub fn is_pending(&self, end_ms: u64, id: &str) -> bool {
        end_ms > self.end_ms || (end_ms == self.end_ms && !self.sent.contains(id))
    }
}

/// The part of a cursor the store updates on eviction.
#[derive(Debug, Default)]
pub(super) struct CursorShared {
    pos: Mutex<CursorPos>,
    dropped: AtomicU64,
}

impl CursorShared {
    fn pos(&self) -> MutexGuard<'_, CursorPos> {
        self.pos.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `e` as dropped when the cursor had not sent it.
    pub(super) fn note_eviction(&self, e: &Entry) {
        if self.pos().is_pending(e.end_ms, &e.path) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An exporter's persistent cursor (see the module docs). Dropping it
/// unregisters it from the store.
#[derive(Debug)]
pub struct ExportCursor {
    shared: Arc<CursorShared>,
    path: PathBuf,
    store: Arc<Store>,
}

impl ExportCursor {
    /// The current position.
    pub fn position(&self) -> CursorPos {
        self.shared.pos().clone()
    }

    /// Windows evicted by the retention before this cursor sent them,
    /// since it was opened.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The cursor file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Marks `w` as sent (or given up because it was evicted) and writes
    /// the cursor file atomically (see [`ExportCursor::advance_all`]).
    pub fn advance(&self, w: &StoredWindow) -> Result<(), StoreError> {
        self.advance_all(std::slice::from_ref(w))
    }

    /// Marks the windows (in export order) as sent and writes the cursor
    /// file once, atomically. The position moves in memory even when the
    /// write fails, so the windows are not sent again by this process.
    pub fn advance_all(&self, ws: &[StoredWindow]) -> Result<(), StoreError> {
        let bytes = {
            let mut pos = self.shared.pos();
            for w in ws {
                if w.end_ms > pos.end_ms {
                    pos.end_ms = w.end_ms;
                    pos.sent.clear();
                }
                if w.end_ms == pos.end_ms {
                    pos.sent.insert(w.id.clone());
                }
            }
            serde_json::to_vec(&*pos).map_err(|e| StoreError::Io {
                path: self.path.clone(),
                source: io::Error::other(e),
            })?
        };
        profiler_pprof::write_atomic(&self.path, &bytes).map_err(io_err(&self.path))
    }
}

impl Drop for ExportCursor {
    fn drop(&mut self) {
        let mut inner = self.store.lock();
        inner.cursors.retain(|c| !Arc::ptr_eq(c, &self.shared));
    }
}

impl Store {
    /// Opens (or creates, at the start of the store) the export cursor
    /// `name` (`[A-Za-z0-9._-]`, e.g. `pyroscope-1a2b3c4d`), kept in
    /// `<root>/export/<name>.json`, and registers it so evictions of
    /// windows it has not sent are counted. Leftover temporary cursor
    /// files are removed.
    pub fn export_cursor(self: &Arc<Self>, name: &str) -> Result<ExportCursor, StoreError> {
        let dir = self.root.join(EXPORT_DIR);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        if let Ok(rd) = fs::read_dir(&dir) {
            for ent in rd.flatten() {
                let n = ent.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!(".{name}.json.tmp")) {
                    let _ = fs::remove_file(ent.path());
                }
            }
        }
        let path = dir.join(format!("{}.json", super::sanitize_component(name)));
        let pos = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StoreError::Cursor {
                path: path.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => CursorPos::default(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let shared = Arc::new(CursorShared {
            pos: Mutex::new(pos),
            dropped: AtomicU64::new(0),
        });
        self.lock().cursors.push(shared.clone());
        Ok(ExportCursor {
            shared,
            path,
            store: self.clone(),
        })
    }

    /// The windows not sent by a cursor at `after`, oldest first (by end
    /// time, then id), at most `limit` (capped at [`MAX_PENDING_BATCH`]),
    /// and how many are pending in all.
    pub fn pending_windows(&self, after: &CursorPos, limit: usize) -> (Vec<StoredWindow>, u64) {
        let limit = limit.min(MAX_PENDING_BATCH);
        let inner = self.lock();
        let mut total = 0u64;
        let mut out: Vec<StoredWindow> = Vec::new();
        for e in inner
            .entries
            .range((after.end_ms, 0)..)
            .map(|(_, e)| e)
            .filter(|e| after.is_pending(e.end_ms, &e.path))
        {
            total += 1;
            // Entries come by end time: once `limit` are taken, only ties
            // at the last end time taken can still sort before them.
            let tie = out.len() >= limit && out.last().is_some_and(|l| l.end_ms == e.end_ms);
            if out.len() < limit || tie {
                out.push(StoredWindow {
                    id: e.path.clone(),
                    target: e.target.clone(),
                    profile_type: e.profile_type.clone(),
                    start: from_ms(e.start_ms),
                    end: from_ms(e.end_ms),
                    end_ms: e.end_ms,
                    bytes: e.bytes,
                });
            }
        }
        out.sort_by(|a, b| (a.end_ms, &a.id).cmp(&(b.end_ms, &b.id)));
        out.truncate(limit);
        (out, total)
    }

    /// True while the window is stored (not evicted).
    pub fn contains_window(&self, w: &StoredWindow) -> bool {
        self.lock().by_path.contains_key(&w.id)
    }

    /// The stored bytes (gzip'd pprof, exactly as written) of a window,
    /// or `None` when it was evicted.
    pub fn read_window(&self, w: &StoredWindow) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.contains_window(w) {
            return Ok(None);
        }
        let path = self.root.join(&w.id);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Retention, WindowMeta};
    use super::*;
    use profiler_pprof::proto;
    use std::time::Duration;

    fn profile(n: i64) -> proto::Profile {
        proto::Profile {
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
            sample: vec![proto::Sample {
                value: vec![n],
                ..Default::default()
            }],
            string_table: vec!["".into(), "samples".into(), "count".into()],
            ..Default::default()
        }
    }

    fn put(s: &Store, pod: &str, end_s: u64, n: i64) {
        // One base for the whole test, so windows put at the same `end_s`
        // end together.
        static BASE: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
        let now = *BASE.get_or_init(SystemTime::now);
        let t = TargetId {
            namespace: String::new(),
            pod: pod.into(),
            pod_uid: pod.into(),
            container: "c".into(),
            container_id: "c".into(),
        };
        // Recent windows (retention is by age from now).
        let end = now - Duration::from_secs(1000) + Duration::from_secs(end_s);
        s.put(
            &WindowMeta {
                target: t,
                profile_type: "cpu".into(),
                start: end - Duration::from_secs(1),
                end,
                samples: 1,
            },
            &profile(n),
        )
        .unwrap();
    }

    #[test]
    fn cursor_sends_each_window_once_survives_reopen_and_counts_drops() {
        let dir = std::env::temp_dir().join(format!("profiler-cursor-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ret = Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 30,
        };
        let s = Arc::new(Store::open(&dir, ret.clone()).unwrap());
        put(&s, "b", 1, 1);
        put(&s, "a", 1, 2);
        put(&s, "a", 2, 3);
        let c = s.export_cursor("test-1").unwrap();
        let (ws, total) = s.pending_windows(&c.position(), 2);
        assert_eq!(total, 3);
        assert_eq!(ws.len(), 2);
        // Same end time: ordered by id.
        assert!(
            ws[0].id.contains("/a/") && ws[1].id.contains("/b/"),
            "{ws:?}"
        );
        let bytes = s.read_window(&ws[0]).unwrap().unwrap();
        assert_eq!(bytes, fs::read(dir.join(&ws[0].id)).unwrap());
        c.advance(&ws[0]).unwrap();
        // A window put late at the same end time is still pending.
        put(&s, "0", 1, 4);
        let (ws2, total) = s.pending_windows(&c.position(), 10);
        assert_eq!(total, 3, "{ws2:?}");
        assert!(ws2.iter().all(|w| w.id != ws[0].id));
        drop(c);
        drop(s);

        // Reopened: the cursor file holds the position.
        let s = Arc::new(Store::open(&dir, ret).unwrap());
        let c = s.export_cursor("test-1").unwrap();
        let (ws3, _) = s.pending_windows(&c.position(), 10);
        assert_eq!(ws3, ws2);
        for w in &ws3[..2] {
            c.advance(w).unwrap();
        }
        assert_eq!(s.pending_windows(&c.position(), 10).1, 1);
        // Evicting the one pending window counts it as dropped; evicting
        // sent ones does not.
        let old = s.lock().entries.len();
        assert_eq!(old, 4);
        {
            let mut inner = s.lock();
            let keys: Vec<_> = inner.entries.keys().copied().collect();
            for k in keys {
                let e = inner.entries.remove(&k).unwrap();
                inner.by_path.remove(&e.path);
                for cur in &inner.cursors {
                    cur.note_eviction(&e);
                }
            }
        }
        assert_eq!(c.dropped(), 1);
        assert_eq!(s.read_window(&ws3[2]).unwrap(), None);
        drop(c);
        assert!(s.lock().cursors.is_empty(), "dropping unregisters");
        let _ = fs::remove_dir_all(&dir);
    }
}
