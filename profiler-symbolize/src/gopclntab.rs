//! A reader for Go's `.gopclntab` (Go 1.18 and later), the table the Go
//! runtime itself uses for tracebacks. It survives `-ldflags=-s -w`, so it
//! gives function names, file:line and the SP delta of every PC even when a
//! binary has neither `.symtab` nor DWARF.
//!
//! Layout (Go's `runtime/symtab.go`, `debug/gosym/pclntab.go`): a header
//! `magic u32, pad u8 x2, minLC u8, ptrSize u8` followed by eight
//! pointer-sized words `nfunc, nfiles, textStart, funcnameOffset, cuOffset,
//! filetabOffset, pctabOffset, pcOffset`. At `pcOffset` is the functab:
//! `nfunc` pairs `(entryoff u32, funcoff u32)` plus a final `entryoff`
//! (end of text); `funcoff` points (from the same base) at a `_func`
//! whose `u32` fields start `entryOff, nameOff, args, deferreturn, pcsp,
//! pcfile, pcln, npcdata, cuOffset`. Every read here is bounds-checked:
//! a truncated or hostile table yields fewer results, never a panic.

use std::ops::Range;

/// Go 1.18 and 1.19.
const MAGIC_118: u32 = 0xffff_fff0;
/// Go 1.20 and later.
const MAGIC_120: u32 = 0xffff_fff1;

/// One function of the table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GoFunc {
    /// Entry PC (ELF virtual address).
    pub entry: u64,
    /// End PC (the next function's entry), exclusive.
    pub end: u64,
    /// Offset of the `_func` struct from the functab base.
    funcoff: usize,
}

/// The bytes holding `go:func.*` (Go's funcdata, where inline trees
/// live): a copy of the section containing it.
pub(crate) struct GoFuncData {
    /// Virtual address of `go:func.*`.
    pub gofunc: u64,
    /// Virtual address of `bytes[0]`.
    pub base: u64,
    /// The section's bytes.
    pub bytes: Vec<u8>,
}

/// One frame from the pclntab: function, file, line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GoFrame<'a> {
    pub function: &'a str,
    pub file: &'a str,
    pub line: i64,
}

/// A parsed `.gopclntab`; owns the section bytes.
pub(crate) struct Pclntab {
    data: Vec<u8>,
    /// Go 1.20+ layout (`_func` has `startLine`; 16-byte inlinedCall).
    go120: bool,
    funcdata: Option<GoFuncData>,
    quantum: u64,
    nfunc: usize,
    text_start: u64,
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
}

impl Pclntab {
    /// Parse the section bytes. `text_start` overrides the header's
    /// `textStart` when given (it is unrelocated, zero, in PIE files).
    pub fn parse(data: Vec<u8>, text_start: Option<u64>) -> Result<Self, String> {
        let magic = read_u32(&data, 0).ok_or("truncated header")?;
        if magic != MAGIC_118 && magic != MAGIC_120 {
            return Err(format!(
                "unsupported pclntab magic {magic:#x} (need Go 1.18 or later)"
            ));
        }
        let quantum = u64::from(*data.get(6).ok_or("truncated header")?);
        let ptr_size = usize::from(*data.get(7).ok_or("truncated header")?);
        if ptr_size != 8 && ptr_size != 4 {
            return Err(format!("bad pointer size {ptr_size}"));
        }
        let word = |i: usize| -> Result<u64, String> {
            let off = 8 + i * ptr_size;
            let v = if ptr_size == 8 {
                read_u64(&data, off)
            } else {
                read_u32(&data, off).map(u64::from)
            };
            v.ok_or_else(|| "truncated header".to_string())
        };
        let to_off = |v: u64| -> Result<usize, String> {
            usize::try_from(v)
                .ok()
                .filter(|&o| o <= data.len())
                .ok_or_else(|| format!("header offset {v:#x} beyond the table"))
        };
        let nfunc = word(0)?;
        let header_text = word(2)?;
        let funcnametab = to_off(word(3)?)?;
        let cutab = to_off(word(4)?)?;
        let filetab = to_off(word(5)?)?;
        let pctab = to_off(word(6)?)?;
        let functab = to_off(word(7)?)?;
        // Each functab entry takes 8 bytes; reject counts the data cannot hold.
        let nfunc = usize::try_from(nfunc)
            .ok()
            .filter(|&n| n.saturating_mul(8) <= data.len() - functab)
            .ok_or("function count larger than the table")?;
        let text_start = match text_start {
            Some(t) => t,
            None => header_text,
        };
        Ok(Self {
            data,
            go120: magic == MAGIC_120,
            funcdata: None,
            quantum: quantum.max(1),
            nfunc,
            text_start,
            funcnametab,
            cutab,
            filetab,
            pctab,
            functab,
        })
    }

    /// Attach `go:func.*` so [`Self::frames`] can expand inlined calls.
    pub fn set_funcdata(&mut self, d: GoFuncData) {
        self.funcdata = Some(d);
    }

    /// Offset of `funcnametab` and the `go120` flag, for locating moduledata.
    pub fn funcnametab_offset(&self) -> u64 {
        self.funcnametab as u64
    }

    /// Whether the table has the Go 1.20+ layout.
    pub fn is_go120(&self) -> bool {
        self.go120
    }

    /// Frames at `pc` of `f`, innermost inlined call first and `f`
    /// itself last. Inlined calls are expanded (Go 1.20+) when the
    /// funcdata was attached; otherwise only `f` is returned.
    pub fn frames(&self, f: &GoFunc, pc: u64) -> Vec<GoFrame<'_>> {
        let mut out = Vec::new();
        let mut pc = pc;
        if let Some((tree_pcdata, tree)) = self.inline_tree(f) {
            // Bounded: inlining depth is small; a cycle in garbage stops here.
            for _ in 0..64 {
                let Some(ix) = self.value_at(f, tree_pcdata, pc) else {
                    break;
                };
                let Ok(ix) = usize::try_from(ix) else { break };
                let Some(rec) = tree.checked_add(ix * 16) else {
                    break;
                };
                let Some(d) = &self.funcdata else { break };
                let (Some(name_off), Some(parent_pc)) =
                    (read_u32(&d.bytes, rec + 4), read_u32(&d.bytes, rec + 8))
                else {
                    break;
                };
                let Some(name) = read_cstr(
                    &self.data,
                    self.funcnametab.saturating_add(name_off as usize),
                ) else {
                    break;
                };
                let (file, line) = self.file_line(f, pc).unwrap_or(("", 0));
                out.push(GoFrame {
                    function: name,
                    file,
                    line,
                });
                let next = f.entry.wrapping_add(u64::from(parent_pc as i32 as u32));
                if next < f.entry || next >= f.end {
                    break;
                }
                pc = next;
            }
        }
        if let Some(name) = self.name(f) {
            let (file, line) = self.file_line(f, pc).unwrap_or(("", 0));
            out.push(GoFrame {
                function: name,
                file,
                line,
            });
        }
        out
    }

    /// (pcdata table of inline-tree indexes, byte offset of the tree in
    /// the funcdata bytes) of `f`, if it has inlined calls.
    fn inline_tree(&self, f: &GoFunc) -> Option<(u32, usize)> {
        if !self.go120 {
            return None;
        }
        let d = self.funcdata.as_ref()?;
        const PCDATA_INL_TREE_INDEX: usize = 2;
        const FUNCDATA_INL_TREE: usize = 3;
        // Go 1.20+ `_func`: 10 u32 fields, funcID, flag, pad, nfuncdata
        // (44 bytes), then npcdata u32 pcdata offsets, then nfuncdata u32
        // funcdata offsets (from go:func.*; u32::MAX if absent).
        let base = self.functab.checked_add(f.funcoff)?;
        let npcdata = self.field(f, 7)? as usize;
        let nfuncdata = usize::from(*self.data.get(base + 43)?);
        if npcdata <= PCDATA_INL_TREE_INDEX || nfuncdata <= FUNCDATA_INL_TREE {
            return None;
        }
        let pcdata = read_u32(&self.data, base + 44 + PCDATA_INL_TREE_INDEX * 4)?;
        let fd = read_u32(&self.data, base + 44 + npcdata * 4 + FUNCDATA_INL_TREE * 4)?;
        if pcdata == 0 || fd == u32::MAX {
            return None;
        }
        let tree_vaddr = d.gofunc.checked_add(u64::from(fd))?;
        let off = usize::try_from(tree_vaddr.checked_sub(d.base)?).ok()?;
        (off < d.bytes.len()).then_some((pcdata, off))
    }

    /// The text start used to turn entry offsets into addresses.
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    /// The `i`-th function (sorted by entry), if the table holds it.
    pub fn func(&self, i: usize) -> Option<GoFunc> {
        let base = self.functab + i * 8;
        let entryoff = read_u32(&self.data, base)?;
        let funcoff = read_u32(&self.data, base + 4)?;
        let endoff = read_u32(&self.data, base + 8)?;
        let entry = self.text_start.checked_add(u64::from(entryoff))?;
        let end = self.text_start.checked_add(u64::from(endoff))?;
        Some(GoFunc {
            entry,
            end: end.max(entry),
            funcoff: funcoff as usize,
        })
    }

    /// The function containing `pc`, by binary search.
    pub fn find(&self, pc: u64) -> Option<GoFunc> {
        if pc < self.text_start || self.nfunc == 0 {
            return None;
        }
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.func(mid)?.entry <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let f = self.func(lo)?;
        (f.entry <= pc && pc < f.end).then_some(f)
    }

    fn field(&self, f: &GoFunc, index: usize) -> Option<u32> {
        read_u32(&self.data, self.functab.checked_add(f.funcoff)? + index * 4)
    }

    /// The function's name (`nameOff` into the funcname table).
    pub fn name(&self, f: &GoFunc) -> Option<&str> {
        let off = self.field(f, 1)? as usize;
        read_cstr(&self.data, self.funcnametab.checked_add(off)?)
    }

    /// The source file and line of `pc` inside `f` (outermost function;
    /// the pclntab's inline tree is not consulted).
    pub fn file_line(&self, f: &GoFunc, pc: u64) -> Option<(&str, i64)> {
        let pcfile = self.field(f, 5)?;
        let pcln = self.field(f, 6)?;
        let cu = self.field(f, 8)?;
        let file_no = self.value_at(f, pcfile, pc)?;
        let line = self.value_at(f, pcln, pc)?;
        let idx = (cu as usize).checked_add(usize::try_from(file_no).ok()?)?;
        let name_off = read_u32(&self.data, self.cutab.checked_add(idx.checked_mul(4)?)?)?;
        if name_off == u32::MAX {
            return None;
        }
        let file = read_cstr(&self.data, self.filetab.checked_add(name_off as usize)?)?;
        Some((file, i64::from(line)))
    }

    /// Value of the pc-value table at `table_off` for `pc`.
    fn value_at(&self, f: &GoFunc, table_off: u32, pc: u64) -> Option<i32> {
        if table_off == 0 {
            return None;
        }
        let mut found = None;
        self.walk(f, table_off, |r, v| {
            if r.contains(&pc) {
                found = Some(v);
                false
            } else {
                true
            }
        });
        found
    }

    /// Walk the pc-value table at `table_off` of `f`, calling `visit` with
    /// each `[pc, next_pc)` range and its value until it returns false.
    fn walk(&self, f: &GoFunc, table_off: u32, mut visit: impl FnMut(Range<u64>, i32) -> bool) {
        let Some(mut pos) = self.pctab.checked_add(table_off as usize) else {
            return;
        };
        let mut pc = f.entry;
        let mut val: i32 = -1;
        let mut first = true;
        loop {
            let Some(uvdelta) = read_uvarint(&self.data, &mut pos) else {
                return;
            };
            if uvdelta == 0 && !first {
                return;
            }
            first = false;
            let vdelta = if uvdelta & 1 != 0 {
                !(uvdelta >> 1) as i32
            } else {
                (uvdelta >> 1) as i32
            };
            let Some(pcdelta) = read_uvarint(&self.data, &mut pos) else {
                return;
            };
            let next = pc.saturating_add(u64::from(pcdelta) * self.quantum);
            val = val.wrapping_add(vdelta);
            // Clamp to the function so a corrupt table cannot claim other code.
            let hi = next.min(f.end);
            if pc < hi && !visit(pc..hi, val) {
                return;
            }
            if next >= f.end {
                return;
            }
            pc = next;
        }
    }

    /// Ranges of `f` where the SP delta (pcsp table) is zero, i.e. the
    /// return address is at `[RSP]`.
    pub fn sp_zero_ranges(&self, f: &GoFunc, out: &mut Vec<Range<u64>>) {
        let Some(pcsp) = self.field(f, 4) else {
            return;
        };
        if pcsp == 0 {
            return;
        }
        self.walk(f, pcsp, |r, v| {
            if v == 0 {
                out.push(r);
            }
            true
        });
    }
}

fn read_u32(d: &[u8], off: usize) -> Option<u32> {
    let b = d.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn read_u64(d: &[u8], off: usize) -> Option<u64> {
    let b = d.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

fn read_cstr(d: &[u8], off: usize) -> Option<&str> {
    let rest = d.get(off..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Unsigned LEB128, at most 32 bits (as the Go runtime reads them).
fn read_uvarint(d: &[u8], pos: &mut usize) -> Option<u32> {
    let mut v: u32 = 0;
    let mut shift = 0u32;
    loop {
        let b = *d.get(*pos)?;
        *pos += 1;
        v |= u32::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 35 {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_and_truncation() {
        let d = [0x96, 0x01, 0x80];
        let mut pos = 0;
        assert_eq!(read_uvarint(&d, &mut pos), Some(150));
        assert_eq!(read_uvarint(&d, &mut pos), None);
    }

    #[test]
    fn rejects_bad_headers() {
        assert!(Pclntab::parse(vec![], None).is_err());
        assert!(Pclntab::parse(vec![0; 64], None).is_err());
        let mut h = vec![0u8; 72];
        h[..4].copy_from_slice(&MAGIC_120.to_le_bytes());
        h[6] = 1;
        h[7] = 8;
        // nfunc huge: must be rejected, not trusted.
        h[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Pclntab::parse(h.clone(), None).is_err());
        h[8..16].copy_from_slice(&0u64.to_le_bytes());
        let t = Pclntab::parse(h, Some(0x1000)).unwrap();
        assert_eq!(t.len(), 0);
        assert!(t.find(0x1000).is_none());
    }
}
