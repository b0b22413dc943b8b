//! Where to put a uprobe in a Go function so the kernel emulates the
//! probed instruction instead of single-stepping it (~1 µs instead of
//! ~10 µs per hit), and so re-runs after `morestack` are not counted.

use iced_x86::{
    Code, Decoder, DecoderOptions, Instruction, InstructionInfoFactory, OpAccess, OpKind, Register,
};

use profiler_common::go::reg;

/// A probe location inside a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    /// Virtual address of the probed instruction.
    pub vaddr: u64,
    /// The probe sits on the stack-check `JBE`: skip hits where the branch
    /// to `morestack` is taken (the function runs again afterwards).
    pub check_flags: bool,
    /// The probed instruction is one the kernel emulates (a branch, a
    /// `PUSH`, a `NOP`) rather than single-steps.
    pub emulated: bool,
}

fn decoder(code: &[u8], ip: u64) -> Decoder<'_> {
    Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
}

fn emulated(i: &Instruction) -> bool {
    i.is_jcc_short_or_near()
        || i.is_call_near()
        || i.is_jmp_short_or_near()
        || matches!(
            i.code(),
            Code::Push_r64 | Code::Nopd | Code::Nopw | Code::Nopq
        )
}

/// The entry probe of a Go function whose code (starting at `entry`) is
/// `code`: the `JBE` of the stack check (`CMP SP|R12, 0x10(R14)`), else the
/// first instruction (functions without a stack check never re-run).
pub fn entry_probe(code: &[u8], entry: u64) -> ProbePoint {
    let mut prev_is_check = false;
    for (n, i) in decoder(code, entry).into_iter().enumerate() {
        if n >= 8 || i.is_invalid() {
            break;
        }
        if prev_is_check && matches!(i.code(), Code::Jbe_rel8_64 | Code::Jbe_rel32_64) {
            return ProbePoint {
                vaddr: i.ip(),
                check_flags: true,
                emulated: true,
            };
        }
        prev_is_check = i.mnemonic() == iced_x86::Mnemonic::Cmp
            && (0..i.op_count()).any(|k| {
                i.op_kind(k) == OpKind::Memory
                    && i.memory_base() == Register::R14
                    && i.memory_displacement64() == 0x10
            });
        if i.is_call_near() || i.is_jmp_short_or_near() || i.is_jcc_short_or_near() {
            break;
        }
    }
    let first = decoder(code, entry).decode();
    ProbePoint {
        vaddr: entry,
        check_flags: false,
        emulated: !first.is_invalid() && emulated(&first),
    }
}

fn reg_selector(r: Register) -> Option<u64> {
    match r {
        Register::RAX => Some(reg::AX),
        Register::RBX => Some(reg::BX),
        Register::RCX => Some(reg::CX),
        Register::RDI => Some(reg::DI),
        Register::RSI => Some(reg::SI),
        Register::RDX => Some(reg::DX),
        _ => None,
    }
}

/// In `runtime.newproc.func1` (code at `entry`), the point after the call
/// to `runtime.newproc1` (at `newproc1`) where a register holds the new g,
/// and which register ([`reg`] selector). Prefers the next `CALL` (which
/// the kernel emulates; in Go 1.19-1.23 the `runqput` call, with the g in
/// BX) if the g is still in a register there, else the instruction right
/// after the call (AX; single-stepped).
pub fn after_call_probe(code: &[u8], entry: u64, newproc1: u64) -> Option<(ProbePoint, u64)> {
    let mut dec = decoder(code, entry);
    let mut info = InstructionInfoFactory::new();
    let mut after_call = None;
    let mut holders: Vec<Register> = Vec::new();
    let mut steps = 0;
    for i in &mut dec {
        if i.is_invalid() {
            return None;
        }
        if after_call.is_none() {
            if i.is_call_near() && i.near_branch_target() == newproc1 {
                after_call = Some(i.next_ip());
                holders.push(Register::RAX);
            }
            continue;
        }
        steps += 1;
        if steps > 12 || holders.is_empty() {
            break;
        }
        if i.is_call_near() {
            // A near CALL is emulated by the kernel (a NOP may not be); the
            // g is still in a holder register when the CALL traps.
            let r = holders.iter().find_map(|r| reg_selector(*r))?;
            return Some((
                ProbePoint {
                    vaddr: i.ip(),
                    check_flags: false,
                    emulated: true,
                },
                r,
            ));
        }
        if i.is_jcc_short_or_near() || i.is_jmp_short_or_near() {
            break;
        }
        // MOV r64, r64 copies the g; any other write to a holder drops it.
        let copy = (i.code() == Code::Mov_r64_rm64 || i.code() == Code::Mov_rm64_r64)
            && i.op0_kind() == OpKind::Register
            && i.op1_kind() == OpKind::Register;
        let written: Vec<Register> = info
            .info(&i)
            .used_registers()
            .iter()
            .filter(|u| {
                matches!(
                    u.access(),
                    OpAccess::Write
                        | OpAccess::CondWrite
                        | OpAccess::ReadWrite
                        | OpAccess::ReadCondWrite
                )
            })
            .map(|u| u.register().full_register())
            .collect();
        let src_holds = copy && holders.contains(&i.op1_register().full_register());
        holders.retain(|h| !written.contains(h));
        if src_holds {
            holders.push(i.op0_register().full_register());
        }
    }
    let vaddr = after_call?;
    Some((
        ProbePoint {
            vaddr,
            check_flags: false,
            emulated: false,
        },
        reg::AX,
    ))
}

/// The exits of a function for latency probes: every `RET`, and every
/// direct `JMP` that leaves the function (a tail call: the callee returns
/// for it, so no `RET` of ours runs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    /// Virtual addresses of the `RET` instructions.
    pub rets: Vec<u64>,
    /// Virtual addresses of jumps whose target is outside the function.
    pub tail_jumps: Vec<u64>,
}

/// Decode `code` (the whole function, from `entry`) and list its exits.
pub fn exits(code: &[u8], entry: u64) -> Exits {
    let end = entry + code.len() as u64;
    let mut out = Exits::default();
    for i in decoder(code, entry) {
        if i.is_invalid() {
            continue;
        }
        if matches!(i.mnemonic(), iced_x86::Mnemonic::Ret) {
            out.rets.push(i.ip());
        } else if i.is_jmp_short_or_near() {
            let t = i.near_branch_target();
            if t < entry || t >= end {
                out.tail_jumps.push(i.ip());
            }
        }
    }
    out
}

/// Addresses of the direct `CALL`s to `target` in a function's code
/// (starting at `entry`). A near `CALL` is emulated by the kernel, so a
/// probe there is not single-stepped. Empty when the code does not decode.
pub fn call_sites(code: &[u8], entry: u64, target: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for i in decoder(code, entry) {
        if i.is_invalid() {
            return Vec::new();
        }
        if i.is_call_near() && i.near_branch_target() == target {
            out.push(i.ip());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jbe_after_stack_check() {
        // go1.23 runtime.goexit1: CMPQ SP,0x10(R14); JBE; PUSHQ BP
        let code = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x7b, 0x55, 0x48, 0x89, 0xe5];
        let p = entry_probe(&code, 0x1000);
        assert_eq!(p.vaddr, 0x1004);
        assert!(p.check_flags && p.emulated);
        // A frameless leaf: PUSHQ BP first, no check.
        let p = entry_probe(&[0x55, 0x48, 0x89, 0xe5], 0x2000);
        assert_eq!(
            p,
            ProbePoint {
                vaddr: 0x2000,
                check_flags: false,
                emulated: true
            }
        );
        // SUBQ $0x18, SP first: single-stepped.
        let p = entry_probe(&[0x48, 0x83, 0xec, 0x18], 0x3000);
        assert!(!p.emulated && !p.check_flags);
    }

    #[test]
    fn newproc_func1_go119() {
        // go1.19 runtime.newproc.func1 from +0x20.
        let code = [
            0xe8, 0x5b, 0x00, 0x00, 0x00, // CALL newproc1
            0x49, 0x8b, 0x56, 0x30, // MOVQ 0x30(R14), DX
            0x48, 0x8b, 0x92, 0xd0, 0x00, 0x00, 0x00, // MOVQ 0xd0(DX), DX
            0x48, 0x89, 0xc3, // MOVQ AX, BX
            0xb9, 0x01, 0x00, 0x00, 0x00, // MOVL $1, CX
            0x48, 0x89, 0xd0, // MOVQ DX, AX
            0x0f, 0x1f, 0x44, 0x00, 0x00, // NOPL
            0xe8, 0x00, 0x00, 0x00, 0x00, // CALL runqput
        ];
        let entry = 0x43d4a0;
        let (p, r) = after_call_probe(&code, entry, entry + 5 + 0x5b).unwrap();
        assert_eq!(p.vaddr, entry + 0x20);
        assert_eq!(r, reg::BX);
    }

    #[test]
    fn exits_find_rets_and_tail_jumps() {
        // PUSH RBP; MOV RBP,RSP; TEST EAX,EAX; JE +3; POP RBP; RET;
        // POP RBP; JMP far (outside)
        let code = [
            0x55, 0x48, 0x89, 0xe5, 0x85, 0xc0, 0x74, 0x02, 0x5d, 0xc3, 0x5d, 0xe9, 0x00, 0x10,
            0x00, 0x00,
        ];
        let e = exits(&code, 0x1000);
        assert_eq!(e.rets, vec![0x1009]);
        assert_eq!(e.tail_jumps, vec![0x100b]);
        // A jump back inside the function is not a tail call.
        let code = [0x90, 0xeb, 0xfd, 0xc3];
        let e = exits(&code, 0x2000);
        assert_eq!(e.rets, vec![0x2003]);
        assert!(e.tail_jumps.is_empty());
    }

    #[test]
    fn call_sites_finds_direct_calls_to_the_target() {
        // go1.23 runtime.semacquire1 excerpt: MOVQ AX,BX; CALL gopark;
        // CALL releaseSudog; NOP.
        let entry = 0x44b69d;
        let mut code = vec![0x48, 0x89, 0xc3];
        let call = |at: u64, to: u64| {
            let rel = (to as i64 - (at as i64 + 5)) as i32;
            let mut v = vec![0xe8];
            v.extend_from_slice(&rel.to_le_bytes());
            v
        };
        code.extend(call(entry + 3, 0x46ad40));
        code.extend(call(entry + 8, 0x438d60));
        code.push(0x90);
        assert_eq!(call_sites(&code, entry, 0x46ad40), vec![entry + 3]);
        assert_eq!(call_sites(&code, entry, 0x438d60), vec![entry + 8]);
        assert!(call_sites(&code, entry, 0x1234).is_empty());
    }
}
