//! Where in a function a uprobe traps cheaply. At a probe the kernel emulates a relative
//! `call`, `jmp` or conditional jump, and single-steps any other instruction out of line
//! (a second trap): on this kind of VM that costs about ten times as much (nginx HTTPS at
//! saturation: 20 k req/s with a probe on `SSL_read`'s first instruction, 53 k with one on
//! its first conditional jump, 59 k without).
//!
//! So, for a function whose arguments are read at its entry and whose result is read at
//! its return (the TLS probes):
//! - **entry**: the first emulated instruction of the entry block, if nothing before it
//!   writes a register the entry program reads; else the first instruction;
//! - **returns**: for each `ret`, the nearest emulated conditional jump before it, in
//!   straight-line code that nothing jumps into and that does not write the result
//!   register, and whose jump goes to a call that never returns (the stack protector's
//!   `__stack_chk_fail`): every return passes it, with its result final. `None` when a
//!   `ret` has none: the caller then probes the return itself (a uretprobe, or the `ret`).
//!
//! Pure functions over the function's bytes, table-tested below.
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, Register};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub entry: u64,
    pub returns: Option<Vec<u64>>,
}

/// How far back from a `ret` to look for its jump.
const MAX_WALK: usize = 16;

/// `code` is the function at `address`; `args` the registers read at entry, `result` the
/// one read at return. `None` if the code does not decode.
pub fn place(code: &[u8], address: u64, args: &[Register], result: Register) -> Option<Placement> {
    let insns: Vec<Instruction> = Decoder::with_ip(64, code, address, DecoderOptions::NONE).into_iter().collect();
    if insns.is_empty() || insns.iter().any(Instruction::is_invalid) {
        return None;
    }
    let mut info = InstructionInfoFactory::new();
    let mut writes = |insn: &Instruction, regs: &[Register]| {
        info.info(insn).used_registers().iter().any(|u| {
            matches!(u.access(), OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite)
                && regs.contains(&u.register().full_register())
        })
    };
    let mut entry = address;
    for insn in &insns {
        if emulated(insn) {
            entry = insn.ip();
            break;
        }
        if insn.flow_control() != FlowControl::Next || writes(insn, args) {
            break;
        }
    }
    let end = address + code.len() as u64;
    let targets: Vec<u64> = insns
        .iter()
        .filter(|i| i.flow_control() != FlowControl::Next && i.near_branch_target() != 0)
        .map(Instruction::near_branch_target)
        .filter(|t| (address..end).contains(t))
        .collect();
    // A function that can leave by a jump (a tail call, direct or indirect: OpenSSL's
    // SSL_do_handshake ends in `jmp *%rax`) has returns that are no `ret`.
    let leaves_by_jump = insns.iter().any(|i| match i.flow_control() {
        FlowControl::IndirectBranch => true,
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch => !(address..end).contains(&i.near_branch_target()),
        _ => false,
    });
    if leaves_by_jump {
        return Some(Placement { entry, returns: None });
    }
    let mut returns = Vec::new();
    for (i, ret) in insns.iter().enumerate().filter(|(_, i)| i.mnemonic() == Mnemonic::Ret) {
        let mut found = None;
        for j in (i.saturating_sub(MAX_WALK)..i).rev() {
            let insn = &insns[j];
            // A jump into the stretch after this instruction bypasses it.
            if insns[j + 1..=i].iter().any(|k| targets.contains(&k.ip())) {
                break;
            }
            if insn.is_jcc_short_or_near() && never_returns(&insns, insn.near_branch_target()) {
                found = Some(insn.ip());
                break;
            }
            if insn.flow_control() != FlowControl::Next || writes(insn, &[result]) {
                break;
            }
        }
        match found {
            Some(at) => returns.push(at),
            None => return Some(Placement { entry, returns: None }),
        }
        let _ = ret;
    }
    Some(Placement { entry, returns: if returns.is_empty() { None } else { Some(returns) } })
}

/// A relative call, jump or conditional jump: what the kernel emulates at a uprobe.
fn emulated(insn: &Instruction) -> bool {
    match insn.flow_control() {
        FlowControl::Call => insn.is_call_near(),
        FlowControl::UnconditionalBranch => insn.is_jmp_short_or_near(),
        FlowControl::ConditionalBranch => insn.is_jcc_short_or_near(),
        _ => false,
    }
}

/// Whether the instruction at `target` is a call after which the function has only
/// padding (a `nop`, `int3`, or its end): a call that does not return.
fn never_returns(insns: &[Instruction], target: u64) -> bool {
    let Some(k) = insns.iter().position(|i| i.ip() == target) else { return false };
    if !insns[k].is_call_near() {
        return false;
    }
    match insns.get(k + 1) {
        None => true,
        Some(next) => matches!(next.mnemonic(), Mnemonic::Nop | Mnemonic::Int3 | Mnemonic::Ud2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C_ARGS: [Register; 3] = [Register::RDI, Register::RSI, Register::RCX];

    /// OpenSSL 3.0's SSL_read as Debian builds it (stack protector, zeroed registers).
    const SSL_READ: &[u8] = &[
        0x48, 0x83, 0xec, 0x18, // sub rsp,0x18
        0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00, // mov rax,fs:0x28
        0x48, 0x89, 0x44, 0x24, 0x08, // mov [rsp+8],rax
        0x31, 0xc0, // xor eax,eax
        0x85, 0xd2, // test edx,edx
        0x78, 0x2f, // js +0x2f (error path)          @ 0x16
        0x48, 0x89, 0xe1, // mov rcx,rsp
        0x48, 0x63, 0xd2, // movsxd rdx,edx
        0xe8, 0x3d, 0xfe, 0xff, 0xff, // call ssl_read_internal
        0x85, 0xc0, // test eax,eax
        0x7e, 0x03, // jle +3
        0x8b, 0x04, 0x24, // mov eax,[rsp]
        0x48, 0x8b, 0x54, 0x24, 0x08, // mov rdx,[rsp+8]     @ 0x2a
        0x64, 0x48, 0x2b, 0x14, 0x25, 0x28, 0x00, 0x00, 0x00, // sub rdx,fs:0x28
        0x75, 0x44, // jne +0x44 (__stack_chk_fail)   @ 0x38
        0x48, 0x83, 0xc4, 0x18, // add rsp,0x18
        0x31, 0xd2, 0x31, 0xc9, 0x31, 0xf6, 0x31, 0xff, // xor edx,ecx,esi,edi
        0xc3, // ret                                   @ 0x46
        0xe8, 0x00, 0x00, 0x00, 0x00, // call ERR_new       @ 0x47
        0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff, // mov rax,-1
        0xeb, 0xd5, // jmp 0x2a                           @ 0x53
        0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
        0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
        0x90, 0x90, 0x90, 0x90, 0x90, 0x90, // padding to 0x7e
        0xe8, 0x00, 0x00, 0x00, 0x00, // call __stack_chk_fail @ 0x7e
        0x66, 0x90, // nop padding
    ];

    #[test]
    fn openssl_read_gets_cheap_entry_and_return() {
        let p = place(SSL_READ, 0x1000, &C_ARGS, Register::RAX).unwrap();
        assert_eq!(p.entry, 0x1016, "the js of the entry block");
        assert_eq!(p.returns, Some(vec![0x1038]), "the stack protector's jne before the ret");
    }

    #[test]
    fn a_result_written_after_the_jump_is_not_final_there() {
        // SSL_read_ex: sub rsp,8; call; xor edx,edx; test eax,eax; cmovs eax,edx; add; ret
        let code = [
            0x48, 0x83, 0xec, 0x08, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x31, 0xd2, 0x85, 0xc0, 0x0f, 0x48, 0xc2, 0x48, 0x83,
            0xc4, 0x08, 0xc3,
        ];
        let p = place(&code, 0x2000, &C_ARGS, Register::RAX).unwrap();
        assert_eq!(p.entry, 0x2004, "the call: nothing before it writes an argument");
        assert_eq!(p.returns, None);
    }

    #[test]
    fn an_argument_written_before_any_jump_keeps_the_entry() {
        // mov rdi,rax; test edx,edx; js; ret
        let code = [0x48, 0x89, 0xc7, 0x85, 0xd2, 0x78, 0x01, 0xc3, 0xc3];
        let p = place(&code, 0x3000, &C_ARGS, Register::RAX).unwrap();
        assert_eq!(p.entry, 0x3000);
    }

    #[test]
    fn a_function_that_leaves_by_a_tail_call_has_no_cheap_returns() {
        // test; jne +0 (to __stack_chk_fail-like call); ... jmp *rax; ...: as SSL_do_handshake
        let code = [0x85, 0xc0, 0x75, 0x05, 0x48, 0x89, 0xdf, 0xff, 0xe0, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x90];
        let p = place(&code, 0x5000, &C_ARGS, Register::RAX).unwrap();
        assert_eq!(p.returns, None);
        // A direct jump out of the function is a tail call too.
        let code = [0x85, 0xc0, 0x74, 0x01, 0xc3, 0xe9, 0x00, 0x10, 0x00, 0x00];
        assert_eq!(place(&code, 0x6000, &C_ARGS, Register::RAX).unwrap().returns, None);
    }

    #[test]
    fn a_jump_into_the_stretch_or_one_that_returns_is_refused() {
        // test; jne +2 (to a plain ret, which returns); xor ecx,ecx; ret; ret
        let code = [0x85, 0xc0, 0x75, 0x03, 0x31, 0xc9, 0xc3, 0xc3];
        let p = place(&code, 0x4000, &C_ARGS, Register::RAX).unwrap();
        assert_eq!(p.returns, None);
        assert_eq!(place(&[0x0f, 0xff], 0, &C_ARGS, Register::RAX), None, "undecodable");
    }
}
