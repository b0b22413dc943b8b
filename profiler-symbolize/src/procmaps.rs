//! Parsing of `/proc/PID/maps`.

/// Name of the vDSO mapping in maps (and of its pprof mapping).
pub(crate) const VDSO: &str = "[vdso]";

/// One line of `/proc/PID/maps` that maps an executable file (or the
/// vDSO, with device and inode 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// `(major << 32) | minor` of the device.
    pub dev: u64,
    pub inode: u64,
    /// The path with a trailing ` (deleted)` removed.
    pub path: String,
    /// Whether the kernel marked the file as deleted.
    pub deleted: bool,
}

/// Parse the executable, file-backed entries of a maps file. Lines that do
/// not parse are skipped (and counted in the second return value).
pub(crate) fn parse_maps(text: &str) -> (Vec<MapsEntry>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        match parse_line(line) {
            Some(Some(e)) => out.push(e),
            Some(None) => {}
            None => bad += 1,
        }
    }
    (out, bad)
}

/// `None`: malformed; `Some(None)`: not an executable file mapping.
fn parse_line(line: &str) -> Option<Option<MapsEntry>> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?;
    let offset = it.next()?;
    let dev = it.next()?;
    let inode = it.next()?;
    let path = it.next().unwrap_or("").trim_start();
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end <= start {
        return None;
    }
    let offset = u64::from_str_radix(offset, 16).ok()?;
    let (major, minor) = dev.split_once(':')?;
    let dev = (u64::from_str_radix(major, 16).ok()? << 32) | u64::from_str_radix(minor, 16).ok()?;
    let inode: u64 = inode.parse().ok()?;
    if perms.as_bytes().get(2) != Some(&b'x') {
        return Some(None);
    }
    if path == VDSO {
        return Some(Some(MapsEntry {
            start,
            end,
            offset,
            dev: 0,
            inode: 0,
            path: VDSO.to_string(),
            deleted: false,
        }));
    }
    if !path.starts_with('/') || inode == 0 {
        return Some(None);
    }
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(Some(MapsEntry {
        start,
        end,
        offset,
        dev,
        inode,
        path: path.to_string(),
        deleted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exec_file_mappings_only() {
        let text = "\
00400000-00401000 r--p 00000000 fd:01 123 /usr/bin/foo
00401000-00480000 r-xp 00001000 fd:01 123 /usr/bin/foo
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]
7f1000000000-7f1000100000 r-xp 00002000 08:02 99 /tmp/my bin (deleted)
garbage
00402000-00401000 r-xp 00001000 fd:01 123 /usr/bin/backwards
";
        let (v, bad) = parse_maps(text);
        assert_eq!(bad, 2);
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].path, VDSO);
        let v = [v[0].clone(), v[2].clone()];
        assert_eq!(v[0].start, 0x401000);
        assert_eq!(v[0].offset, 0x1000);
        assert_eq!(v[0].dev, (0xfd << 32) | 1);
        assert_eq!(v[1].path, "/tmp/my bin");
        assert!(v[1].deleted);
    }
}
