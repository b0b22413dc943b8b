//! The few facts about an ELF file the symbolizer needs: build id, loadable
//! segments (file offset to virtual address), and Go's pclntab; plus the
//! frameless-range computation.

use std::ops::Range;
use std::path::Path;

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Object, ObjectSection, ObjectSymbol};

use crate::gopclntab::{GoFuncData, Pclntab};
use crate::SymbolizeError;

/// A `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Load {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub executable: bool,
}

/// What the symbolizer keeps about one binary.
pub(crate) struct ElfInfo {
    /// GNU build id, lower-case hex.
    pub build_id: Option<String>,
    pub loads: Vec<Load>,
    /// Whether the file has a `.gopclntab` (a Go binary).
    pub is_go: bool,
}

fn elf_err(path: &Path, reason: impl std::fmt::Display) -> SymbolizeError {
    SymbolizeError::Elf {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Read a whole file, refusing files larger than `max_bytes`.
pub(crate) fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, SymbolizeError> {
    let io = |source| SymbolizeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > max_bytes {
        return Err(elf_err(
            path,
            format!("file is {len} bytes, over the {max_bytes}-byte limit"),
        ));
    }
    std::fs::read(path).map_err(io)
}

fn parse<'a>(path: &Path, data: &'a [u8]) -> Result<ElfFile64<'a>, SymbolizeError> {
    ElfFile64::<object::Endianness>::parse(data).map_err(|e| elf_err(path, e))
}

/// Parse build id and segments from file bytes.
pub(crate) fn elf_info(path: &Path, data: &[u8]) -> Result<ElfInfo, SymbolizeError> {
    elf_info_from(path, data)
}

/// Parse build id and segments reading only the headers, notes and
/// section table of the file (not the whole binary).
pub(crate) fn elf_info_from_path(path: &Path) -> Result<ElfInfo, SymbolizeError> {
    let f = std::fs::File::open(path).map_err(|source| SymbolizeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let cache = object::ReadCache::new(f);
    elf_info_from(path, &cache)
}

fn elf_info_from<'a, R: object::ReadRef<'a>>(
    path: &Path,
    data: R,
) -> Result<ElfInfo, SymbolizeError> {
    let file = ElfFile64::<object::Endianness, R>::parse(data).map_err(|e| elf_err(path, e))?;
    let endian = file.endian();
    let build_id = file
        .build_id()
        .ok()
        .flatten()
        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        .or_else(|| go_build_id(&file));
    let mut loads = Vec::new();
    let phdrs = file
        .elf_header()
        .program_headers(endian, data)
        .map_err(|e| elf_err(path, e))?;
    for ph in phdrs {
        if ph.p_type(endian) == elf::PT_LOAD {
            loads.push(Load {
                offset: ph.p_offset(endian),
                vaddr: ph.p_vaddr(endian),
                filesz: ph.p_filesz(endian),
                executable: ph.p_flags(endian).0 & elf::PF_X.0 != 0,
            });
        }
    }
    // PIE and other relro builds name it `.data.rel.ro.gopclntab`.
    let is_go = file.section_by_name(".gopclntab").is_some()
        || file.section_by_name(".data.rel.ro.gopclntab").is_some();
    Ok(ElfInfo {
        build_id,
        loads,
        is_go,
    })
}

/// The Go build ID from `.note.go.buildid` (Go binaries carry no GNU
/// build id unless linked with `-B`): note name "Go", type 4, the
/// description is the ID string.
fn go_build_id<'a, R: object::ReadRef<'a>>(
    file: &ElfFile64<'a, object::Endianness, R>,
) -> Option<String> {
    let data = file.section_by_name(".note.go.buildid")?.data().ok()?;
    let word = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(data.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let (namesz, descsz, kind) = (word(0)?, word(4)?, word(8)?);
    if kind != 4 || namesz > 64 || descsz > 4096 {
        return None;
    }
    let name_end = 12 + namesz;
    let desc_start = 12 + namesz.div_ceil(4) * 4;
    if data.get(12..name_end)?.split(|&b| b == 0).next()? != b"Go" {
        return None;
    }
    let desc = data.get(desc_start..desc_start + descsz)?;
    let id = std::str::from_utf8(desc).ok()?.trim_end_matches('\0');
    (!id.is_empty()).then(|| id.to_string())
}

fn pclntab_section<'a, 'f>(
    file: &'f ElfFile64<'a>,
) -> Option<object::read::elf::ElfSection64<'a, 'f>> {
    // PIE and other relro builds name it `.data.rel.ro.gopclntab`.
    file.section_by_name(".gopclntab")
        .or_else(|| file.section_by_name(".data.rel.ro.gopclntab"))
}

/// Parse the Go pclntab of a binary, if it has one.
pub(crate) fn go_pclntab(path: &Path, data: &[u8]) -> Result<Option<Pclntab>, SymbolizeError> {
    let file = parse(path, data)?;
    let Some(sect) = pclntab_section(&file) else {
        return Ok(None);
    };
    let bytes = sect.data().map_err(|e| elf_err(path, e))?.to_vec();
    // Like Go's objfile: `runtime.text` if there is a symbol table, else the
    // header's textStart if set, else the `.text` section address.
    let runtime_text = file
        .symbols()
        .find(|s| s.name() == Ok("runtime.text"))
        .map(|s| s.address());
    let text_section = file.section_by_name(".text").map(|s| s.address());
    let mut table = Pclntab::parse(bytes.clone(), runtime_text)
        .map_err(|e| elf_err(path, format!(".gopclntab: {e}")))?;
    if runtime_text.is_none() && table.text_start() == 0 {
        if let Some(t) = text_section {
            table = Pclntab::parse(bytes, Some(t))
                .map_err(|e| elf_err(path, format!(".gopclntab: {e}")))?;
        }
    }
    if table.is_go120() {
        if let Some(gofunc) = find_gofunc(&file, sect.address(), &table) {
            if let Some(s) = file
                .sections()
                .find(|s| s.address() <= gofunc && gofunc < s.address() + s.size())
            {
                if let Ok(bytes) = s.data() {
                    table.set_funcdata(GoFuncData {
                        gofunc,
                        base: s.address(),
                        bytes: bytes.to_vec(),
                    });
                }
            }
        }
    }
    Ok(Some(table))
}

/// Address of `go:func.*` (base of funcdata offsets): from the symbol
/// table, else from `runtime.firstmoduledata`, found as the words
/// `(pclntab, pclntab + funcnameOffset)` in the file's data or, in PIE
/// files, as the addends of relative relocations. Go 1.20+ layout, where
/// `gofunc` is word 40 of moduledata.
fn find_gofunc(file: &ElfFile64<'_>, pclntab: u64, table: &Pclntab) -> Option<u64> {
    const GOFUNC_WORD: u64 = 40;
    if let Some(s) = file.symbols().find(|s| s.name() == Ok("go:func.*")) {
        return Some(s.address());
    }
    let names = pclntab + table.funcnametab_offset();
    for name in [".noptrdata", ".data", ".data.rel.ro"] {
        let Some(sect) = file.section_by_name(name) else {
            continue;
        };
        let Ok(d) = sect.data() else { continue };
        let word = |o: usize| {
            d.get(o..o + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        };
        let mut o = 0;
        while o + 16 <= d.len() {
            if word(o) == Some(pclntab) && word(o + 8) == Some(names) {
                let g = word(o + GOFUNC_WORD as usize * 8)?;
                if g != 0 {
                    return Some(g);
                }
            }
            o += 8;
        }
    }
    // PIE: the pointers are R_X86_64_RELATIVE relocations (addend = value).
    let rela = file.section_by_name(".rela.dyn")?;
    let d = rela.data().ok()?;
    let entry = |i: usize| -> Option<(u64, u64)> {
        let b = d.get(i * 24..i * 24 + 24)?;
        let off = u64::from_le_bytes(b[0..8].try_into().ok()?);
        let addend = u64::from_le_bytes(b[16..24].try_into().ok()?);
        Some((off, addend))
    };
    let n = d.len() / 24;
    let mut by_offset = std::collections::HashMap::new();
    for i in 0..n {
        let (off, addend) = entry(i)?;
        by_offset.insert(off, addend);
    }
    let mut candidates: Vec<u64> = (0..n)
        .filter_map(entry)
        .filter(|&(_, a)| a == pclntab)
        .map(|(o, _)| o)
        .collect();
    candidates.sort_unstable();
    candidates
        .into_iter()
        .find(|o| by_offset.get(&(o + 8)) == Some(&names))
        .and_then(|o| by_offset.get(&(o + GOFUNC_WORD * 8)).copied())
}

/// See [`crate::frameless_ranges`].
pub(crate) fn frameless_ranges(
    path: &Path,
    max_bytes: u64,
) -> Result<Vec<Range<u64>>, SymbolizeError> {
    let data = read_file(path, max_bytes)?;
    let file = parse(path, &data)?;
    if file.elf_header().e_machine(file.endian()) != elf::EM_X86_64 {
        return Err(elf_err(
            path,
            "frameless ranges are only computed for x86-64",
        ));
    }
    let mut out = Vec::new();
    if let Some(table) = go_pclntab(path, &data)? {
        for i in 0..table.len() {
            if let Some(f) = table.func(i) {
                table.sp_zero_ranges(&f, &mut out);
            }
        }
    }
    eh_frame_ranges(&file, &mut out);
    Ok(merge_ranges(out))
}

/// Rows of `.eh_frame` whose CFA is `RSP+8` (return address at `[RSP]`).
/// A malformed entry stops the walk; what was found before it is kept.
fn eh_frame_ranges(file: &ElfFile64<'_>, out: &mut Vec<Range<u64>>) {
    use gimli::{BaseAddresses, CfaRule, CieOrFde, EhFrame, UnwindContext, UnwindSection};
    let Some(sect) = file.section_by_name(".eh_frame") else {
        return;
    };
    let Ok(data) = sect.data() else { return };
    let eh = EhFrame::new(data, gimli::LittleEndian);
    let mut bases = BaseAddresses::default().set_eh_frame(sect.address());
    if let Some(text) = file.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    let mut ctx = UnwindContext::new();
    let mut entries = eh.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        let Ok(mut rows) = fde.rows(&eh, &bases, &mut ctx) else {
            continue;
        };
        while let Ok(Some(row)) = rows.next_row() {
            if let CfaRule::RegisterAndOffset { register, offset } = row.cfa() {
                if *register == gimli::X86_64::RSP && *offset == 8 {
                    out.push(row.start_address()..row.end_address());
                }
            }
        }
    }
}

/// Sort and merge overlapping or adjacent ranges; drop empty ones.
pub(crate) fn merge_ranges(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.retain(|r| r.start < r.end);
    v.sort_by_key(|r| (r.start, r.end));
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sorts_and_joins_adjacent() {
        let v = vec![10..20, 0..5, 5..7, 15..30, 40..40, 31..32];
        assert_eq!(merge_ranges(v), vec![0..7, 10..30, 31..32]);
    }
}
