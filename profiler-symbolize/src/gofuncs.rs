//! Go function table of a binary from `.gopclntab`, for callers that
//! need function addresses when `.symtab` is stripped (`-ldflags=-s -w`),
//! e.g. to place uprobes.

use std::path::Path;

use crate::{elf, Limits, SymbolizeError};

/// One function of a Go binary's `.gopclntab`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFunction {
    /// Go symbol name, e.g. `runtime.newproc` or `main.(*T).Run`.
    pub name: String,
    /// Entry address (ELF virtual address).
    pub entry: u64,
    /// End address (exclusive).
    pub end: u64,
}

/// Every function of the Go binary at `path`, sorted by entry address.
/// `Ok(None)` when the file has no `.gopclntab` (not a Go binary); an
/// error when it cannot be read or the table is not Go 1.18+.
pub fn go_functions(path: &Path) -> Result<Option<Vec<GoFunction>>, SymbolizeError> {
    let data = elf::read_file(path, Limits::default().max_elf_bytes)?;
    let Some(table) = elf::go_pclntab(path, &data)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(table.len());
    for i in 0..table.len() {
        let Some(f) = table.func(i) else { break };
        if let Some(name) = table.name(&f) {
            out.push(GoFunction {
                name: name.to_string(),
                entry: f.entry,
                end: f.end,
            });
        }
    }
    Ok(Some(out))
}
