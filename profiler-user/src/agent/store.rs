//! The agent's on-disk profile store: one gzip'd pprof file per
//! (target, profile type, time window), an append-only index, retention,
//! and merged queries over a time range.
//!
//! # Layout
//!
//! ```text
//! <root>/index.jsonl                      append-only JSON lines (see below)
//! <root>/data/<namespace|_>/<pod>/<pod_uid>/<container>/<type>/<start_ms>-<end_ms>.pb.gz
//! ```
//!
//! Path components are sanitized (only `[A-Za-z0-9._-]`, no leading dot,
//! at most 100 bytes); a component that had to change gets a short hash
//! of the original appended, so two different names never share a
//! directory. The index, not the path, holds the real [`TargetId`].
//!
//! # Crash safety
//!
//! [`Store::put`] writes the profile to a hidden temporary file in the
//! destination directory and fsyncs it, appends (and fsyncs) a `put` line
//! to the index, then renames the file into place. A reader never sees a
//! partial profile; a crash leaves at worst a temporary file (removed by
//! [`Store::open`]) or an index line whose file is missing (dropped by
//! [`Store::open`]). Evictions append `del` lines. A torn last line (crash
//! in the middle of an append) is skipped and counted in
//! [`StoreStats::index_recoveries`]. [`Store::open`] also adopts window
//! files the index does not know (e.g. after the index was deleted) from
//! their path and the `target.json` kept in each container directory, then
//! rewrites the index compactly (temporary file + rename).
//!
//! # Bounds
//!
//! The in-memory index holds one small entry per stored window, so it is
//! bounded by [`Retention`]; on top of that it never holds more than
//! [`MAX_ENTRIES`] entries (the oldest are evicted and counted in
//! [`StoreStats::evicted_overflow`]). Queries merge at most
//! [`MAX_QUERY_WINDOWS`] windows and [`MAX_QUERY_BYTES`] of stored data.
//! Queries scan the index linearly (fine for the rare, human-driven
//! queries this store serves).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use profiler_pprof::{proto, AtomicFile, Merger};
use serde::{Deserialize, Serialize};

mod cursor;
use cursor::CursorShared;
pub use cursor::{CursorPos, ExportCursor, StoredWindow, EXPORT_DIR, MAX_PENDING_BATCH};

/// Hard cap on the number of windows in the index, whatever the retention.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Most windows one query merges.
pub const MAX_QUERY_WINDOWS: usize = 10_000;
/// Most stored (compressed) bytes one query reads.
pub const MAX_QUERY_BYTES: u64 = 512 << 20;
/// Largest decompressed size of one stored or fetched profile.
pub const MAX_PROFILE_BYTES: u64 = 512 << 20;

const INDEX: &str = "index.jsonl";
const DATA: &str = "data";
const TARGET_JSON: &str = "target.json";

/// What a profile was taken of: a container of a pod.
///
/// Without Kubernetes metadata the agent sets `namespace` to `""`, `pod`
/// to the pod uid and `container` to the short (12 character) container
/// id; lookups match a pod name against both `pod` and `pod_uid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TargetId {
    /// Kubernetes namespace, `""` when unknown.
    pub namespace: String,
    /// Pod name (the pod uid when unknown).
    pub pod: String,
    /// Pod uid.
    pub pod_uid: String,
    /// Container name (the short container id when unknown).
    pub container: String,
    /// Container id (runtime id, as in the cgroup path).
    pub container_id: String,
}

impl TargetId {
    /// True when `pod` names this target's pod (by name or uid) and the
    /// optional namespace and container match (a container matches by
    /// name, by id, or by an id prefix of at least 12 characters).
    pub fn matches(&self, namespace: Option<&str>, pod: &str, container: Option<&str>) -> bool {
        self.matches_pod(namespace, pod)
            && container.is_none_or(|c| {
                self.container == c
                    || self.container_id == c
                    || (c.len() >= 12 && self.container_id.starts_with(c))
            })
    }

    fn matches_pod(&self, namespace: Option<&str>, pod: &str) -> bool {
        namespace.is_none_or(|n| self.namespace == n) && (self.pod == pod || self.pod_uid == pod)
    }

    /// `namespace/pod` (or just `pod` without a namespace), for messages.
    pub fn pod_display(&self) -> String {
        if self.namespace.is_empty() {
            self.pod.clone()
        } else {
            format!("{}/{}", self.namespace, self.pod)
        }
    }
}

/// One window's metadata, as given to [`Store::put`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowMeta {
    /// Whose profile it is.
    pub target: TargetId,
    /// Profile type: `cpu`, `goroutines`, `allocs`, `calls`, ...
    pub profile_type: String,
    /// Window start.
    pub start: SystemTime,
    /// Window end.
    pub end: SystemTime,
    /// Number of samples in the window (informational).
    pub samples: u64,
}

/// How long and how much the store keeps. Whichever limit is hit first
/// evicts the oldest windows (by end time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Windows that ended longer ago than this are removed.
    pub max_age: Duration,
    /// Total size of the stored files.
    pub max_bytes: u64,
}

/// A merged-profile request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Namespace filter (`None`: any).
    pub namespace: Option<String>,
    /// Pod name or uid.
    pub pod: String,
    /// Container name or id filter (`None`: all containers of the pod).
    pub container: Option<String>,
    /// Profile type.
    pub profile_type: String,
    /// Range start (windows ending after it are included).
    pub from: SystemTime,
    /// Range end (windows starting before it are included).
    pub to: SystemTime,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// The merged profile, gzip'd pprof.
    pub profile_gz: Vec<u8>,
    /// Number of windows merged.
    pub windows: usize,
    /// Start of the earliest merged window.
    pub start: SystemTime,
    /// End of the latest merged window.
    pub end: SystemTime,
    /// Sum of the windows' sample counts (from their metadata).
    pub samples: u64,
    /// The distinct targets the windows came from.
    pub targets: Vec<TargetId>,
    /// Windows that were evicted or unreadable between lookup and read.
    pub skipped: usize,
}

/// What the store holds for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetSummary {
    /// The target (the most recently written id for its key).
    pub target: TargetId,
    /// Profile types stored, sorted.
    pub types: Vec<String>,
    /// Start of the oldest window.
    pub first: SystemTime,
    /// End of the newest window.
    pub last: SystemTime,
    /// Number of windows.
    pub windows: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// Store counters and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Window files currently stored.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Windows written since open.
    pub windows_written: u64,
    /// Windows evicted because they were older than the retention.
    pub evicted_age: u64,
    /// Windows evicted to stay under the size limit.
    pub evicted_size: u64,
    /// Windows evicted because the index reached [`MAX_ENTRIES`].
    pub evicted_overflow: u64,
    /// Failed writes (profile or index).
    pub write_errors: u64,
    /// Index repairs at open: torn or invalid lines skipped, entries whose
    /// file was missing, files adopted that the index did not know.
    pub index_recoveries: u64,
    /// Leftover temporary files removed at open.
    pub temp_files_removed: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    #[error("store: {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No window was ever stored for this pod.
    #[error("unknown pod {pod}: no profile stored for it on this node{}", known_list(.known))]
    UnknownPod {
        /// The pod as asked.
        pod: String,
        /// A few known pods (`namespace/name`), for the message.
        known: Vec<String>,
    },
    /// The pod is known but no window of that type overlaps the range.
    #[error("no {profile_type} windows for pod {pod} between {from} and {to}{}", avail(.available))]
    NoWindows {
        /// The pod as asked.
        pod: String,
        /// The type asked.
        profile_type: String,
        /// Range start (RFC 3339).
        from: String,
        /// Range end (RFC 3339).
        to: String,
        /// What is stored for the pod: `type first..last`, for the message.
        available: Vec<String>,
    },
    /// The query matches more windows than [`MAX_QUERY_WINDOWS`] or more
    /// bytes than [`MAX_QUERY_BYTES`].
    #[error("the range matches {what}, more than the limit of {limit}: ask for a shorter range or one container")]
    TooLarge {
        /// What was counted (`12000 windows`).
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A stored profile could not be decoded.
    #[error("profile {path}: {source}")]
    Decode {
        /// The file.
        path: String,
        /// The decoder's answer.
        #[source]
        source: profiler_pprof::DecodeError,
    },
    /// A stored profile could not be merged with the others of the query.
    #[error("profile {path}: {source}")]
    Merge {
        /// The file.
        path: String,
        /// The merger's answer.
        #[source]
        source: profiler_pprof::MergeError,
    },
    /// An export cursor file is not a cursor (remove it to export from the start).
    #[error(
        "export cursor {path}: not a cursor file ({source}); remove it to export from the start"
    )]
    Cursor {
        /// The file.
        path: String,
        /// The JSON parser's answer.
        #[source]
        source: serde_json::Error,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (no pods stored yet)".into()
    } else {
        format!(" (known pods include: {})", known.join(", "))
    }
}

fn avail(a: &[String]) -> String {
    if a.is_empty() {
        String::new()
    } else {
        format!(" (stored: {})", a.join("; "))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Milliseconds since the epoch (0 before it, saturating).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A stored window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// Path relative to the root, `/`-separated.
    path: String,
    target: TargetId,
    #[serde(rename = "type")]
    profile_type: String,
    start_ms: u64,
    end_ms: u64,
    samples: u64,
    bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum IndexLine {
    Put(Entry),
    Del { path: String },
}

struct Inner {
    /// Entries ordered oldest first: (end_ms, sequence).
    entries: BTreeMap<(u64, u64), Entry>,
    /// Relative path to its key in `entries`.
    by_path: HashMap<String, (u64, u64)>,
    seq: u64,
    bytes: u64,
    index: fs::File,
    index_lines: u64,
    stats: StoreStats,
    /// Exporters' cursors, told about evictions of windows they had not
    /// sent yet (see [`Store::export_cursor`]).
    cursors: Vec<std::sync::Arc<CursorShared>>,
}

/// The profile store. `Send + Sync`: share it as `Arc<Store>`.
pub struct Store {
    root: PathBuf,
    retention: Retention,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// Replaces anything but `[A-Za-z0-9._-]` by `_`, forbids a leading dot
/// (temporary files are hidden) and empty names, caps the length, and
/// appends a hash of the original when it had to change anything.
pub fn sanitize_component(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out.truncate(100);
    if out != s {
        out.push_str(&format!("~{:08x}", fnv1a(s.as_bytes()) as u32));
    }
    out
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x100_0000_01b3)
    })
}

fn target_dir(t: &TargetId) -> String {
    let ns = if t.namespace.is_empty() {
        "_".to_string()
    } else {
        sanitize_component(&t.namespace)
    };
    format!(
        "{DATA}/{ns}/{}/{}/{}",
        sanitize_component(&t.pod),
        sanitize_component(&t.pod_uid),
        sanitize_component(&t.container)
    )
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp")
}

fn parse_window_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".pb.gz")?;
    let (a, b) = stem.split_once('-')?;
    let (s, e) = (a.parse().ok()?, b.parse().ok()?);
    (s <= e).then_some((s, e))
}

impl Store {
    /// Opens (creating it if needed) the store at `root`: loads the
    /// index, tolerating a torn last line, drops entries whose file is
    /// gone, adopts window files the index lacks, removes leftover
    /// temporary files, rewrites the index compactly, and applies the
    /// retention.
    pub fn open(root: &Path, retention: Retention) -> Result<Store, StoreError> {
        fs::create_dir_all(root.join(DATA)).map_err(io_err(root))?;
        let mut stats = StoreStats::default();
        let mut entries: BTreeMap<(u64, u64), Entry> = BTreeMap::new();
        let mut by_path: HashMap<String, (u64, u64)> = HashMap::new();
        let mut seq = 0u64;
        let index_path = root.join(INDEX);
        let insert = |e: Entry,
                      entries: &mut BTreeMap<(u64, u64), Entry>,
                      by_path: &mut HashMap<String, (u64, u64)>,
                      seq: &mut u64| {
            if let Some(old) = by_path.remove(&e.path) {
                entries.remove(&old);
            }
            *seq += 1;
            let key = (e.end_ms, *seq);
            by_path.insert(e.path.clone(), key);
            entries.insert(key, e);
        };
        match fs::File::open(&index_path) {
            Ok(f) => {
                for line in io::BufReader::new(f).split(b'\n') {
                    let line = line.map_err(io_err(&index_path))?;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<IndexLine>(&line) {
                        Ok(IndexLine::Put(e)) if valid_rel_path(&e.path) => {
                            insert(e, &mut entries, &mut by_path, &mut seq)
                        }
                        Ok(IndexLine::Del { path }) => {
                            if let Some(k) = by_path.remove(&path) {
                                entries.remove(&k);
                            }
                        }
                        _ => stats.index_recoveries += 1,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&index_path)(e)),
        }
        // Entries whose file is missing (crash between the index append
        // and the rename, or files removed by hand).
        let missing: Vec<(u64, u64)> = entries
            .iter()
            .filter(|(_, e)| !root.join(&e.path).is_file())
            .map(|(k, _)| *k)
            .collect();
        for k in missing {
            if let Some(e) = entries.remove(&k) {
                by_path.remove(&e.path);
                stats.index_recoveries += 1;
            }
        }
        // Walk the data tree: remove temporary files, adopt unknown windows,
        // refresh sizes.
        let mut stack = vec![root.join(DATA)];
        let mut adopted = Vec::new();
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => return Err(io_err(&dir)(e)),
            };
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                let path = ent.path();
                let Ok(ft) = ent.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(path);
                } else if is_temp_name(&name) {
                    if fs::remove_file(&path).is_ok() {
                        stats.temp_files_removed += 1;
                    }
                } else if ft.is_file() {
                    let Some((s, e)) = parse_window_name(&name) else {
                        continue;
                    };
                    let Ok(rel) = path.strip_prefix(root) else {
                        continue;
                    };
                    let rel = rel.to_string_lossy().replace('\\', "/");
                    let size = ent.metadata().map(|m| m.len()).unwrap_or(0);
                    if let Some(k) = by_path.get(&rel) {
                        if let Some(en) = entries.get_mut(k) {
                            en.bytes = size;
                        }
                    } else if let Some(en) = adopt(root, &rel, s, e, size) {
                        adopted.push(en);
                    }
                }
            }
        }
        for e in adopted {
            stats.index_recoveries += 1;
            insert(e, &mut entries, &mut by_path, &mut seq);
        }
        // Leftover temporary index files (`.index.jsonl.tmp.PID.N`).
        if let Ok(rd) = fs::read_dir(root) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!(".{INDEX}.tmp")) && fs::remove_file(ent.path()).is_ok()
                {
                    stats.temp_files_removed += 1;
                }
            }
        }
        // Rewrite the index compactly (also drops a torn last line, so the
        // next append starts on a fresh line).
        let index = rewrite_index(root, entries.values())?;
        let bytes = entries.values().map(|e| e.bytes).sum();
        stats.files = entries.len() as u64;
        let store = Store {
            root: root.to_owned(),
            retention,
            inner: Mutex::new(Inner {
                index_lines: entries.len() as u64,
                entries,
                by_path,
                seq,
                bytes,
                index,
                stats,
                cursors: Vec::new(),
            }),
        };
        store.enforce_retention();
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The retention it applies.
    pub fn retention(&self) -> Retention {
        self.retention.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state
        // (every mutation is a single insert/remove); keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores one window: gzip'd pprof written atomically, index updated,
    /// then the retention applied (which may evict this very window if it
    /// is already older than the retention). Returns the file's path.
    pub fn put(&self, meta: &WindowMeta, profile: &proto::Profile) -> Result<PathBuf, StoreError> {
        let gz = profiler_pprof::encode_gzip(profile);
        let (s, e) = (
            unix_ms(meta.start),
            unix_ms(meta.end).max(unix_ms(meta.start)),
        );
        let tdir = target_dir(&meta.target);
        let rel = format!(
            "{tdir}/{}/{s}-{e}.pb.gz",
            sanitize_component(&meta.profile_type)
        );
        let path = self.root.join(&rel);
        let entry = Entry {
            path: rel.clone(),
            target: meta.target.clone(),
            profile_type: meta.profile_type.clone(),
            start_ms: s,
            end_ms: e,
            samples: meta.samples,
            bytes: gz.len() as u64,
        };
        let mut inner = self.lock();
        let res = self.put_locked(&mut inner, &path, &gz, &entry);
        if res.is_err() {
            inner.stats.write_errors += 1;
            return res.map(|_| path);
        }
        drop(inner);
        self.enforce_retention();
        Ok(path)
    }

    fn put_locked(
        &self,
        inner: &mut Inner,
        path: &Path,
        gz: &[u8],
        entry: &Entry,
    ) -> Result<(), StoreError> {
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        // target.json lets Store::open adopt files if the index is lost.
        let tj = dir
            .parent()
            .map(|d| d.join(TARGET_JSON))
            .unwrap_or_else(|| dir.join(TARGET_JSON));
        let tj_bytes = serde_json::to_vec(&entry.target).unwrap_or_default();
        if fs::read(&tj).ok().as_deref() != Some(&tj_bytes[..]) {
            profiler_pprof::write_atomic(&tj, &tj_bytes).map_err(io_err(&tj))?;
        }
        // Dropping `file` before the commit removes the temporary file.
        let mut file = AtomicFile::create(path).map_err(io_err(path))?;
        if let Err(e) = file.write_all(gz).and_then(|()| file.sync()) {
            return Err(io_err(file.temp_path())(e));
        }
        if let Err(e) = append_index(inner, &IndexLine::Put(entry.clone())) {
            return Err(io_err(&self.root.join(INDEX))(e));
        }
        if let Err(e) = file.commit() {
            // Undo the index line: restore a previous window at the same
            // path (its file is untouched), else record the deletion.
            let previous = inner
                .by_path
                .get(&entry.path)
                .and_then(|k| inner.entries.get(k))
                .cloned();
            let undo = match previous {
                Some(prev) => IndexLine::Put(prev),
                None => IndexLine::Del {
                    path: entry.path.clone(),
                },
            };
            let _ = append_index(inner, &undo);
            return Err(io_err(path)(e));
        }
        if let Some(old) = inner.by_path.remove(&entry.path) {
            if let Some(o) = inner.entries.remove(&old) {
                inner.bytes = inner.bytes.saturating_sub(o.bytes);
            }
        }
        inner.seq += 1;
        let key = (entry.end_ms, inner.seq);
        inner.by_path.insert(entry.path.clone(), key);
        inner.entries.insert(key, entry.clone());
        inner.bytes += entry.bytes;
        inner.stats.windows_written += 1;
        self.maybe_compact(inner);
        Ok(())
    }

    fn maybe_compact(&self, inner: &mut Inner) {
        let live = inner.entries.len() as u64;
        if inner.index_lines > 2 * live + 4096 {
            match rewrite_index(&self.root, inner.entries.values()) {
                Ok(f) => {
                    inner.index = f;
                    inner.index_lines = live;
                }
                Err(_) => inner.stats.write_errors += 1,
            }
        }
    }

    /// Applies the retention now: evicts windows that ended before
    /// `now - max_age`, then the oldest until the total size fits
    /// `max_bytes` and the index fits [`MAX_ENTRIES`]. [`Store::put`]
    /// calls it; call it periodically too so old windows go even when
    /// nothing is written.
    pub fn enforce_retention(&self) {
        let now = unix_ms(SystemTime::now());
        let cutoff = now
            .saturating_sub(u64::try_from(self.retention.max_age.as_millis()).unwrap_or(u64::MAX));
        let mut inner = self.lock();
        let mut removed_any = false;
        while let Some((&key, e)) = inner.entries.first_key_value() {
            let reason = if e.end_ms < cutoff {
                0
            } else if inner.bytes > self.retention.max_bytes {
                1
            } else if inner.entries.len() > MAX_ENTRIES {
                2
            } else {
                break;
            };
            let e = inner.entries.remove(&key).expect("first key exists");
            for c in &inner.cursors {
                c.note_eviction(&e);
            }
            inner.by_path.remove(&e.path);
            inner.bytes = inner.bytes.saturating_sub(e.bytes);
            match reason {
                0 => inner.stats.evicted_age += 1,
                1 => inner.stats.evicted_size += 1,
                _ => inner.stats.evicted_overflow += 1,
            }
            let path = self.root.join(&e.path);
            match fs::remove_file(&path) {
                Ok(()) => remove_empty_dirs(&self.root, &path),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(_) => inner.stats.write_errors += 1,
            }
            if append_index(&mut inner, &IndexLine::Del { path: e.path }).is_err() {
                inner.stats.write_errors += 1;
            }
            removed_any = true;
        }
        if removed_any {
            self.maybe_compact(&mut inner);
        }
    }

    /// Merges every window of the matching targets and type that overlaps
    /// `[from, to]` into one gzip'd pprof (see [`Merger`]): sample
    /// types kept, identical samples summed, `time_nanos`/`duration_nanos`
    /// set to the covered span, a comment naming the windows merged.
    pub fn query(&self, q: &Query) -> Result<QueryResult, StoreError> {
        let (from, to) = (unix_ms(q.from), unix_ms(q.to));
        let ns = q.namespace.as_deref().filter(|n| !n.is_empty());
        let container = q.container.as_deref().filter(|c| !c.is_empty());
        let mut picked: Vec<Entry> = Vec::new();
        let mut pod_known = false;
        let mut available: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut known: BTreeSet<String> = BTreeSet::new();
        {
            let inner = self.lock();
            for e in inner.entries.values() {
                if !e.target.matches_pod(ns, &q.pod) {
                    if known.len() < 5 {
                        known.insert(e.target.pod_display());
                    }
                    continue;
                }
                pod_known = true;
                if !e.target.matches(ns, &q.pod, container) {
                    continue;
                }
                let a = available
                    .entry(e.profile_type.clone())
                    .or_insert((u64::MAX, 0));
                a.0 = a.0.min(e.start_ms);
                a.1 = a.1.max(e.end_ms);
                let overlaps = if from == to {
                    e.start_ms <= from && from <= e.end_ms
                } else {
                    e.start_ms < to && e.end_ms > from
                };
                if e.profile_type == q.profile_type && overlaps {
                    picked.push(e.clone());
                    if picked.len() > MAX_QUERY_WINDOWS {
                        return Err(StoreError::TooLarge {
                            what: format!("more than {MAX_QUERY_WINDOWS} windows"),
                            limit: MAX_QUERY_WINDOWS as u64,
                        });
                    }
                }
            }
        }
        if !pod_known {
            return Err(StoreError::UnknownPod {
                pod: match ns {
                    Some(n) => format!("{n}/{}", q.pod),
                    None => q.pod.clone(),
                },
                known: known.into_iter().collect(),
            });
        }
        if picked.is_empty() {
            return Err(StoreError::NoWindows {
                pod: q.pod.clone(),
                profile_type: q.profile_type.clone(),
                from: rfc3339(q.from),
                to: rfc3339(q.to),
                available: available
                    .into_iter()
                    .map(|(t, (a, b))| {
                        format!("{t} {}..{}", rfc3339(from_ms(a)), rfc3339(from_ms(b)))
                    })
                    .collect(),
            });
        }
        let total: u64 = picked.iter().map(|e| e.bytes).sum();
        if total > MAX_QUERY_BYTES {
            return Err(StoreError::TooLarge {
                what: format!("{total} stored bytes"),
                limit: MAX_QUERY_BYTES,
            });
        }
        picked.sort_by_key(|e| (e.start_ms, e.end_ms));
        // Goroutines are a snapshot at each window's end: a range keeps
        // the live goroutines of each target's last window and sums the
        // created/exited counts of all.
        let snapshot = q.profile_type == SNAPSHOT_TYPE;
        // Heap windows are whole snapshots (in-use now, allocations since
        // the process started): a range is each target's last window.
        let whole_snapshot = q.profile_type == WHOLE_SNAPSHOT_TYPE;
        let mut last_of: HashMap<&TargetId, u64> = HashMap::new();
        for e in &picked {
            let l = last_of.entry(&e.target).or_insert(0);
            *l = (*l).max(e.start_ms);
        }
        let mut merger = Merger::new();
        let mut used: Vec<&Entry> = Vec::new();
        let mut skipped = 0;
        for e in &picked {
            if whole_snapshot && last_of.get(&e.target) != Some(&e.start_ms) {
                // An earlier snapshot of the same target: superseded.
                used.push(e);
                continue;
            }
            let path = self.root.join(&e.path);
            let data = match fs::read(&path) {
                Ok(d) => d,
                // Evicted since we looked: skip it.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    skipped += 1;
                    continue;
                }
                Err(err) => return Err(io_err(&path)(err)),
            };
            let p = decode_pprof(&data).map_err(|source| StoreError::Decode {
                path: path.display().to_string(),
                source,
            })?;
            let mut p = p;
            if snapshot && last_of.get(&e.target) != Some(&e.start_ms) {
                zero_first_value(&mut p);
            }
            merger.add(&p).map_err(|source| StoreError::Merge {
                path: path.display().to_string(),
                source,
            })?;
            used.push(e);
        }
        if used.is_empty() {
            return Err(StoreError::NoWindows {
                pod: q.pod.clone(),
                profile_type: q.profile_type.clone(),
                from: rfc3339(q.from),
                to: rfc3339(q.to),
                available: vec!["windows were evicted while reading".into()],
            });
        }
        let start = used.iter().map(|e| e.start_ms).min().unwrap_or(0);
        let end = used.iter().map(|e| e.end_ms).max().unwrap_or(0);
        let targets: BTreeSet<TargetId> = used.iter().map(|e| e.target.clone()).collect();
        let mut out = merger.finish();
        if q.profile_type == "memory" {
            // Memory windows hold means (bytes), not counts: summing the
            // pod's containers is right, summing time is not. Divide by
            // the distinct windows merged: the mean over the range.
            let distinct: BTreeSet<(u64, u64)> =
                used.iter().map(|e| (e.start_ms, e.end_ms)).collect();
            let n = distinct.len().max(1) as f64;
            for s in &mut out.sample {
                for v in &mut s.value {
                    *v = (*v as f64 / n).round() as i64;
                }
            }
            add_comment(
                &mut out,
                &format!(
                    "profiler agent: memory values are the mean over {} window(s)",
                    distinct.len()
                ),
            );
        }
        let ms_ns = |ms: u64| i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        out.time_nanos = ms_ns(start);
        out.duration_nanos = ms_ns(end - start);
        let note = format!(
            "profiler agent: merged {} {} window(s) of {} from {} to {}",
            used.len(),
            q.profile_type,
            targets
                .iter()
                .map(|t| format!("{}:{}", t.pod_display(), t.container))
                .collect::<Vec<_>>()
                .join(","),
            rfc3339(from_ms(start)),
            rfc3339(from_ms(end))
        );
        add_comment(&mut out, &note);
        Ok(QueryResult {
            profile_gz: profiler_pprof::encode_gzip(&out),
            windows: used.len(),
            start: from_ms(start),
            end: from_ms(end),
            samples: used.iter().map(|e| e.samples).sum(),
            targets: targets.into_iter().collect(),
            skipped,
        })
    }

    /// Profile types present in the store, sorted.
    pub fn profile_types(&self) -> Vec<String> {
        let inner = self.lock();
        let set: BTreeSet<&str> = inner
            .entries
            .values()
            .map(|e| e.profile_type.as_str())
            .collect();
        set.into_iter().map(str::to_owned).collect()
    }

    /// One summary per stored target (keyed by pod uid and container;
    /// the most recently written [`TargetId`] wins), sorted by
    /// namespace, pod, container.
    pub fn targets(&self) -> Vec<TargetSummary> {
        let inner = self.lock();
        let mut map: BTreeMap<(String, String, String), (TargetSummary, BTreeSet<String>)> =
            BTreeMap::new();
        for e in inner.entries.values() {
            let t = &e.target;
            let key = (t.namespace.clone(), t.pod_uid.clone(), t.container.clone());
            let (s, types) = map.entry(key).or_insert_with(|| {
                (
                    TargetSummary {
                        target: t.clone(),
                        types: Vec::new(),
                        first: from_ms(e.start_ms),
                        last: from_ms(e.end_ms),
                        windows: 0,
                        bytes: 0,
                    },
                    BTreeSet::new(),
                )
            });
            if from_ms(e.end_ms) >= s.last {
                s.target = t.clone();
                s.last = from_ms(e.end_ms);
            }
            s.first = s.first.min(from_ms(e.start_ms));
            s.windows += 1;
            s.bytes += e.bytes;
            types.insert(e.profile_type.clone());
        }
        let mut out: Vec<TargetSummary> = map
            .into_values()
            .map(|(mut s, types)| {
                s.types = types.into_iter().collect();
                s
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.target.namespace, &a.target.pod, &a.target.container).cmp(&(
                &b.target.namespace,
                &b.target.pod,
                &b.target.container,
            ))
        });
        out
    }

    /// Current counters and sizes.
    pub fn stats(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats {
            files: inner.entries.len() as u64,
            bytes: inner.bytes,
            ..inner.stats
        }
    }
}

fn valid_rel_path(p: &str) -> bool {
    p.starts_with("data/")
        && !p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        && !p.contains('\\')
}

/// Rebuilds an entry for a window file the index does not know, from its
/// path and the container directory's `target.json`.
fn adopt(root: &Path, rel: &str, s: u64, e: u64, bytes: u64) -> Option<Entry> {
    let parts: Vec<&str> = rel.split('/').collect();
    // data/ns/pod/uid/container/type/file
    if parts.len() != 7 {
        return None;
    }
    let tj = root.join(parts[..5].join("/")).join(TARGET_JSON);
    let target: TargetId = serde_json::from_slice(&fs::read(tj).ok()?).ok()?;
    Some(Entry {
        path: rel.to_owned(),
        target,
        profile_type: parts[5].to_owned(),
        start_ms: s,
        end_ms: e,
        samples: 0,
        bytes,
    })
}

fn remove_empty_dirs(root: &Path, file: &Path) {
    let data = root.join(DATA);
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == data || !d.starts_with(&data) {
            break;
        }
        // Only the type directory and above; fails (and stops) when not empty.
        // A lone target.json keeps a container directory alive, so remove it
        // when it is the only thing left.
        let only_target_json = fs::read_dir(d)
            .map(|rd| {
                let names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
                names.len() == 1 && names[0] == TARGET_JSON
            })
            .unwrap_or(false);
        if only_target_json {
            let _ = fs::remove_file(d.join(TARGET_JSON));
        }
        if fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

fn append_index(inner: &mut Inner, line: &IndexLine) -> io::Result<()> {
    let mut buf = serde_json::to_vec(line).map_err(io::Error::other)?;
    buf.push(b'\n');
    inner.index.write_all(&buf)?;
    inner.index.sync_data()?;
    inner.index_lines += 1;
    Ok(())
}

fn rewrite_index<'a>(
    root: &Path,
    entries: impl Iterator<Item = &'a Entry>,
) -> Result<fs::File, StoreError> {
    let path = root.join(INDEX);
    let res = (|| {
        let mut w = io::BufWriter::new(AtomicFile::create(&path)?);
        for e in entries {
            serde_json::to_writer(&mut w, &IndexLine::Put(e.clone())).map_err(io::Error::other)?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.commit()?;
        fs::OpenOptions::new().append(true).open(&path)
    })();
    res.map_err(io_err(&path))
}

/// Decodes gzip'd (or raw) pprof into the wire type with the pprof
/// crate's bounded decoder, at most [`MAX_PROFILE_BYTES`] decompressed.
pub fn decode_pprof(data: &[u8]) -> Result<proto::Profile, profiler_pprof::DecodeError> {
    let limits = profiler_pprof::Limits {
        max_decompressed_bytes: MAX_PROFILE_BYTES,
        ..Default::default()
    };
    profiler_pprof::decode(data, &limits)
}

fn add_comment(p: &mut proto::Profile, text: &str) {
    let i = p.string_table.len() as i64;
    p.string_table.push(text.to_owned());
    p.comment.push(i);
}

/// The profile type whose first sample type is a snapshot (live
/// goroutines at the window's end) rather than a count that adds up.
pub const SNAPSHOT_TYPE: &str = "goroutines";

/// The profile type whose windows are whole snapshots (every value is as
/// of the window's end): a range keeps each target's last window only.
pub const WHOLE_SNAPSHOT_TYPE: &str = "heap";

/// Zero every sample's first value (the snapshot of an earlier window),
/// keeping the others (counts that add up over windows).
fn zero_first_value(p: &mut proto::Profile) {
    for s in &mut p.sample {
        if let Some(v) = s.value.first_mut() {
            *v = 0;
        }
    }
    p.sample.retain(|s| s.value.iter().any(|v| *v != 0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_safe_names_and_marks_changed_ones() {
        assert_eq!(sanitize_component("kube-system"), "kube-system");
        let a = sanitize_component("..");
        assert!(a.starts_with("_.~"), "{a}");
        let b = sanitize_component("a/b");
        assert!(b.starts_with("a_b~") && !b.contains('/'), "{b}");
        assert_ne!(sanitize_component("a/b"), sanitize_component("a_b"));
        assert!(sanitize_component("").starts_with("_~"));
        assert!(!sanitize_component(".hidden").starts_with('.'));
    }

    /// A memory window: one `memory.current` sample of `bytes`.
    fn memory_profile(bytes: i64) -> proto::Profile {
        use profiler_symbolize::{
            FrameLine, ProfileMeta, ProfileSample, ProfileShape, ResolvedFrame,
        };
        let frame = ResolvedFrame {
            mapping: None,
            address: 1,
            lines: vec![FrameLine {
                function: "memory.current".into(),
                system_name: "memory.current".into(),
                file: String::new(),
                line: 0,
                column: 0,
            }],
        };
        let shape = ProfileShape::new(&[("memory", "bytes")], ("memory", "bytes"), 0, None);
        let meta = ProfileMeta {
            frequency_hz: 0,
            start: SystemTime::now(),
            duration: Duration::from_secs(10),
            comments: vec![],
        };
        let s = ProfileSample {
            frames: vec![frame],
            pid: 0,
            values: vec![bytes],
            labels: vec![],
        };
        profiler_symbolize::build_profile(&[], &[s], &shape, &meta)
    }

    #[test]
    fn memory_windows_sum_containers_and_average_time() {
        let dir = std::env::temp_dir().join(format!("store-memory-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(
            &dir,
            Retention {
                max_age: Duration::from_secs(86400),
                max_bytes: 1 << 30,
            },
        )
        .unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(60);
        let target = |c: &str| TargetId {
            namespace: "ns".into(),
            pod: "pod".into(),
            pod_uid: "uid".into(),
            container: c.into(),
            container_id: format!("id-{c}"),
        };
        // Pod mean: (100 + 50 + 300 + 50) / 2 windows = 250.
        for (c, w, bytes) in [("a", 0, 100), ("b", 0, 50), ("a", 1, 300), ("b", 1, 50)] {
            let start = t0 + Duration::from_secs(10 * w);
            let meta = WindowMeta {
                target: target(c),
                profile_type: "memory".into(),
                start,
                end: start + Duration::from_secs(10),
                samples: 10,
            };
            store.put(&meta, &memory_profile(bytes)).unwrap();
            let cpu = WindowMeta {
                profile_type: "cpu".into(),
                ..meta
            };
            store.put(&cpu, &memory_profile(bytes)).unwrap();
        }
        let query = |t: &str| {
            let r = store
                .query(&Query {
                    namespace: None,
                    pod: "pod".into(),
                    container: None,
                    profile_type: t.into(),
                    from: t0,
                    to: SystemTime::now(),
                })
                .unwrap();
            let p =
                profiler_pprof::decode(&r.profile_gz, &profiler_pprof::Limits::default()).unwrap();
            (r.windows, p.sample.iter().map(|s| s.value[0]).sum::<i64>())
        };
        assert_eq!(query("memory"), (4, 250));
        // Other types are summed as before.
        assert_eq!(query("cpu"), (4, 500));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn window_names_parse() {
        assert_eq!(parse_window_name("1000-2000.pb.gz"), Some((1000, 2000)));
        assert_eq!(parse_window_name("2000-1000.pb.gz"), None);
        assert_eq!(parse_window_name(".1-2.pb.gz.tmp.1.2"), None);
        assert!(valid_rel_path("data/_/p/u/c/cpu/1-2.pb.gz"));
        assert!(!valid_rel_path("data/../x"));
        assert!(!valid_rel_path("/etc/passwd"));
    }
}
