//! Static analysis of a Go binary: version (buildinfo), `runtime.g` field
//! offsets (DWARF, else a per-version table), functions (`.gopclntab`,
//! which survives `-s -w`), data symbols (`.symtab`) and file offsets.

use std::{collections::HashMap, path::Path};

use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _};

use super::{BinaryProblem, GoError};

/// Field offsets in `runtime.g` the probes and the goroutine walk need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GOffsets {
    /// `g.goid`.
    pub goid: u64,
    /// `g.gopc` (PC of the `go` statement that created the goroutine).
    pub gopc: u64,
    /// `g.startpc`.
    pub startpc: u64,
    /// `g.atomicstatus`.
    pub atomicstatus: u64,
}

/// Offsets measured (from DWARF) on Go 1.19.8, 1.21.13, 1.22 and 1.23.5
/// amd64; used for binaries without DWARF (`-w`).
pub fn fallback_offsets(version: &str) -> Option<GOffsets> {
    let minor = go_minor(version)?;
    match minor {
        19 => Some(GOffsets {
            goid: 152,
            gopc: 296,
            startpc: 312,
            atomicstatus: 144,
        }),
        21 | 22 => Some(GOffsets {
            goid: 152,
            gopc: 280,
            startpc: 296,
            atomicstatus: 144,
        }),
        23 => Some(GOffsets {
            goid: 160,
            gopc: 288,
            startpc: 304,
            atomicstatus: 152,
        }),
        _ => None,
    }
}

/// Minor version of a `go1.N[.P]` string.
pub fn go_minor(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("go1.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// One function: name and address range (ELF virtual addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Func {
    /// Go symbol name.
    pub name: String,
    /// Entry address.
    pub entry: u64,
    /// End address (exclusive).
    pub end: u64,
}

/// What the probes need to know about one Go binary.
pub struct GoBinary {
    /// Go version from the buildinfo (`go1.23.5`), if found.
    pub version: Option<String>,
    /// `runtime.g` offsets.
    pub offsets: GOffsets,
    /// Where the offsets came from: `DWARF` or `table for go1.N`.
    pub offsets_source: String,
    /// Functions by name.
    funcs: HashMap<String, Func>,
    /// Functions sorted by name, for globs.
    names: Vec<String>,
    /// Data symbols from `.symtab` (empty when stripped).
    data_symbols: HashMap<String, u64>,
    /// Whether `.symtab` was present.
    pub has_symtab: bool,
    /// PT_LOAD segments: (vaddr, memsz, file offset, filesz).
    segments: Vec<(u64, u64, u64, u64)>,
    /// The file's bytes (for prologue decoding).
    data: Vec<u8>,
}

impl GoBinary {
    /// Analyse the ELF file at `path` (read whole; at most 2 GiB).
    pub fn open(path: &Path) -> Result<Self, GoError> {
        let bad = |problem| GoError::Binary {
            path: path.display().to_string(),
            problem,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(BinaryProblem::Read(e)))?;
        if meta.len() > 2 << 30 {
            return Err(bad(BinaryProblem::TooLarge(meta.len())));
        }
        let data = std::fs::read(path).map_err(|e| bad(BinaryProblem::Read(e)))?;
        let file = object::File::parse(&*data).map_err(|e| bad(BinaryProblem::NotElf(e)))?;
        if file.architecture() != object::Architecture::X86_64 {
            return Err(bad(BinaryProblem::NotX86_64));
        }
        let version = file
            .section_by_name(".go.buildinfo")
            .and_then(|s| s.data().ok())
            .and_then(buildinfo_version);
        let funcs_list = profiler_symbolize::go_functions(path)
            .map_err(|e| bad(BinaryProblem::Pclntab(e)))?
            .ok_or_else(|| GoError::NotGo {
                path: path.display().to_string(),
            })?;
        let mut funcs = HashMap::with_capacity(funcs_list.len());
        for f in funcs_list {
            funcs.entry(f.name.clone()).or_insert(Func {
                name: f.name,
                entry: f.entry,
                end: f.end,
            });
        }
        let mut names: Vec<String> = funcs.keys().cloned().collect();
        names.sort();
        let mut data_symbols = HashMap::new();
        let mut has_symtab = false;
        for s in file.symbols() {
            has_symtab = true;
            if s.kind() == object::SymbolKind::Data {
                if let Ok(n) = s.name() {
                    if n == "runtime.MemProfileRate"
                        || n == "runtime.disableMemoryProfiling"
                        || n == "runtime.allgs"
                        || n == "runtime.allglen"
                        || n == "runtime.mbuckets"
                        || n == "runtime.mProfCycle"
                    {
                        data_symbols.insert(n.to_string(), s.address());
                    }
                }
            }
        }
        let segments = file
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (s.address(), s.size(), off, size)
            })
            .collect();
        let (offsets, offsets_source) = match dwarf_offsets(&file) {
            Some(o) => (o, "DWARF".to_string()),
            None => {
                let v = version
                    .clone()
                    .ok_or_else(|| bad(BinaryProblem::NoGoVersion))?;
                let o = fallback_offsets(&v)
                    .ok_or_else(|| bad(BinaryProblem::NoOffsets { version: v.clone() }))?;
                (o, format!("table for {v}"))
            }
        };
        drop(file);
        Ok(Self {
            version,
            offsets,
            offsets_source,
            funcs,
            names,
            data_symbols,
            has_symtab,
            segments,
            data,
        })
    }

    /// The function named exactly `name`.
    pub fn func(&self, name: &str) -> Option<&Func> {
        self.funcs.get(name)
    }

    /// Functions whose names match `pattern` (`*` any run, `?` one char;
    /// without wildcards, the exact name), sorted by name.
    pub fn matching(&self, pattern: &str) -> Vec<&Func> {
        if !pattern.contains(['*', '?']) {
            return self.func(pattern).into_iter().collect();
        }
        self.names
            .iter()
            .filter(|n| glob(pattern.as_bytes(), n.as_bytes()))
            .filter_map(|n| self.funcs.get(n))
            .collect()
    }

    /// Address of a data symbol (only with `.symtab`).
    pub fn data_symbol(&self, name: &str) -> Option<u64> {
        self.data_symbols.get(name).copied()
    }

    /// File offset of a virtual address.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(a, _, _, fsz)| vaddr >= *a && vaddr < a + fsz)
            .map(|(a, _, off, _)| vaddr - a + off)
    }

    /// PT_LOAD segments: (vaddr, memsz, file offset, filesz).
    pub(super) fn segments(&self) -> &[(u64, u64, u64, u64)] {
        &self.segments
    }

    /// Virtual address of a file offset (inside a PT_LOAD segment).
    pub fn vaddr_of_file_offset(&self, off: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(_, _, o, fsz)| off >= *o && off < o + fsz)
            .map(|(a, _, o, _)| off - o + a)
    }

    /// The bytes of a function.
    pub fn code(&self, f: &Func) -> Option<&[u8]> {
        let off = self.file_offset(f.entry)? as usize;
        let len = f.end.checked_sub(f.entry)? as usize;
        self.data.get(off..off.checked_add(len)?)
    }
}

/// `*`/`?` glob match.
pub fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// The Go version string of a `.go.buildinfo` section (Go 1.18+ layout:
/// 14-byte magic, pointer size, flags with bit 2 = inline strings, then at
/// offset 32 varint-length-prefixed version).
pub fn buildinfo_version(d: &[u8]) -> Option<String> {
    if d.len() < 32 || &d[..14] != b"\xff Go buildinf:" || d[15] & 2 == 0 {
        return None;
    }
    let mut pos = 32;
    let mut len: usize = 0;
    let mut shift = 0;
    loop {
        let b = *d.get(pos)?;
        pos += 1;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    let s = d.get(pos..pos.checked_add(len)?)?;
    String::from_utf8(s.to_vec()).ok()
}

/// `runtime.g` field offsets from DWARF, if the binary has it.
fn dwarf_offsets(file: &object::File<'_>) -> Option<GOffsets> {
    use gimli::{AttributeValue, EndianSlice, LittleEndian};
    let load = |id: gimli::SectionId| -> Result<std::borrow::Cow<'_, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(std::borrow::Cow::Borrowed(&[])))
    };
    let owned = gimli::DwarfSections::load(load).ok()?;
    let dwarf = owned.borrow(|s| EndianSlice::new(s, LittleEndian));
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let mut entries = unit.entries();
        while let Ok(Some(e)) = entries.next_dfs() {
            if e.tag() != gimli::DW_TAG_structure_type {
                continue;
            }
            let Some(name) = e
                .attr_value(gimli::DW_AT_name)
                .and_then(|v| dwarf.attr_string(&unit, v).ok())
            else {
                continue;
            };
            if name.slice() != b"runtime.g" {
                continue;
            }
            let mut tree = unit.entries_tree(Some(e.offset())).ok()?;
            let root = tree.root().ok()?;
            let mut children = root.children();
            let mut found: HashMap<Vec<u8>, u64> = HashMap::new();
            while let Ok(Some(child)) = children.next() {
                let m = child.entry();
                if m.tag() != gimli::DW_TAG_member {
                    continue;
                }
                let Some(n) = m
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| dwarf.attr_string(&unit, v).ok())
                else {
                    continue;
                };
                let off = match m.attr_value(gimli::DW_AT_data_member_location) {
                    Some(AttributeValue::Udata(v)) => v,
                    Some(AttributeValue::Data1(v)) => u64::from(v),
                    Some(AttributeValue::Data2(v)) => u64::from(v),
                    Some(AttributeValue::Data4(v)) => u64::from(v),
                    Some(AttributeValue::Data8(v)) => v,
                    Some(AttributeValue::Sdata(v)) => v as u64,
                    _ => continue,
                };
                found.insert(n.slice().to_vec(), off);
            }
            let get = |k: &str| found.get(k.as_bytes()).copied();
            return Some(GOffsets {
                goid: get("goid")?,
                gopc: get("gopc")?,
                startpc: get("startpc")?,
                atomicstatus: get("atomicstatus")?,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_typed_problems_with_sources() {
        use std::error::Error as _;
        let dir = std::env::temp_dir().join(format!("profiler-gobinary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("script.sh");
        std::fs::write(&text, "#!/bin/sh\necho not elf\n").unwrap();
        let problem = |p: &Path| match GoBinary::open(p) {
            Err(GoError::Binary { path, problem }) => {
                assert_eq!(path, p.display().to_string());
                problem
            }
            Err(e) => panic!("{}: {e:?}", p.display()),
            Ok(_) => panic!("{} accepted", p.display()),
        };
        let e = problem(&dir.join("missing"));
        assert!(
            matches!(&e, BinaryProblem::Read(io) if io.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        let e = problem(&text);
        assert!(matches!(e, BinaryProblem::NotElf(_)), "{e:?}");
        assert!(e.source().is_some_and(|s| s.is::<object::Error>()), "{e:?}");
        assert!(e.to_string().starts_with("not ELF: "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        // An x86-64 ELF file without `.gopclntab` is not Go (no note).
        let exe = std::env::current_exe().unwrap();
        assert!(matches!(GoBinary::open(&exe), Err(GoError::NotGo { .. })));
    }

    #[test]
    fn globs() {
        assert!(glob(b"*.Reconcile", b"main.(*R).Reconcile"));
        assert!(!glob(b"*.Reconcile", b"main.(*R).Reconcile.func1"));
        assert!(glob(b"net/http.(*Client).do", b"net/http.(*Client).do"));
        assert!(glob(b"main.count?d*", b"main.countedTarget"));
        assert!(!glob(b"main.x", b"main.xy"));
    }

    #[test]
    fn versions() {
        assert_eq!(go_minor("go1.23.5"), Some(23));
        assert_eq!(go_minor("go1.19"), Some(19));
        assert_eq!(go_minor("devel"), None);
        for v in ["go1.19.8", "go1.21.13", "go1.22.2", "go1.23.5"] {
            assert!(fallback_offsets(v).is_some(), "{v}");
        }
        assert!(fallback_offsets("go1.20.1").is_none());
        assert!(buildinfo_version(b"short").is_none());
    }
}
