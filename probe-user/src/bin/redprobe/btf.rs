//! Field offsets of kernel structs, read from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE relocations, so the programs get the offsets they need as a
//! global (`probe_common::KernelOffsets`). This is a minimal reader of the BTF format
//! (Documentation/bpf/btf.rst): enough to walk struct/union members, including
//! anonymous ones.
use std::collections::HashMap;

use probe_common::KernelOffsets;
use thiserror::Error;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum BtfError {
    #[error(
        "cannot read {path}: {source}. redprobe needs the kernel's BTF (CONFIG_DEBUG_INFO_BTF=y) \
         to find kernel struct offsets; install a kernel built with BTF"
    )]
    Read { path: String, source: std::io::Error },
    #[error("{0} is not valid BTF: {1}")]
    Format(String, &'static str),
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("kernel BTF: `{0}` has no field `{1}` (unsupported kernel layout)")]
    NoField(String, String),
    #[error("kernel BTF: field `{0}` is {1} bytes, expected {2}")]
    FieldSize(String, u32, u32),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// size for INT/STRUCT/UNION/ENUM, referenced type for modifiers and PTR.
    size_or_type: u32,
    members: Vec<Member>,
    array_elem: Option<(u32, u32)>,
}

pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let data = std::fs::read(VMLINUX_BTF)
            .map_err(|source| BtfError::Read { path: VMLINUX_BTF.into(), source })?;
        Self::parse(&data).map_err(|e| BtfError::Format(VMLINUX_BTF.into(), e))
    }

    pub fn parse(data: &[u8]) -> Result<Self, &'static str> {
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err("bad magic (only little-endian BTF is supported)");
        }
        let field = |at| u32_at(data, at).ok_or("truncated header");
        let hdr_len = field(4)? as usize;
        let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
        let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
        let types_raw = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or("type section out of range")?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or("string section out of range")?
            .to_vec();
        // Type id 0 is `void`.
        let mut types = vec![Type { name: 0, kind: 0, size_or_type: 0, members: vec![], array_elem: None }];
        let mut at = 0;
        while at < types_raw.len() {
            let word = |i: usize| u32_at(types_raw, at + 4 * i).ok_or("truncated type");
            let (name, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let mut ty = Type { name, kind, size_or_type, members: vec![], array_elem: None };
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => {
                    let elem = u32_at(types_raw, at).ok_or("truncated array")?;
                    let n = u32_at(types_raw, at + 8).ok_or("truncated array")?;
                    ty.array_elem = Some((elem, n));
                    12
                }
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let raw_off = u32_at(types_raw, m + 8).ok_or("truncated member")?;
                        ty.members.push(Member {
                            name: u32_at(types_raw, m).ok_or("truncated member")?,
                            type_id: u32_at(types_raw, m + 4).ok_or("truncated member")?,
                            bit_offset: if kind_flag { raw_off & 0x00ff_ffff } else { raw_off },
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                _ => 0,
            };
            at += extra;
            types.push(ty);
        }
        let mut btf = Btf { types, strings, structs: HashMap::new() };
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name != 0 {
                let name = btf.str_at(ty.name).to_string();
                btf.structs.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize).map(|t| t.kind) {
                Some(KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = self.types[id as usize].size_or_type
                }
                _ => break,
            }
        }
        id
    }

    fn size_of(&self, id: u32) -> u32 {
        let id = self.resolve(id);
        let Some(ty) = self.types.get(id as usize) else { return 0 };
        match ty.kind {
            KIND_PTR => 8,
            KIND_ARRAY => ty.array_elem.map(|(e, n)| self.size_of(e) * n).unwrap_or(0),
            _ => ty.size_or_type,
        }
    }

    /// Finds member `name` in struct/union `id`, looking into anonymous members.
    /// Returns (bit offset, member type id).
    fn find_member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        let ty = self.types.get(self.resolve(id) as usize)?;
        if ty.kind != KIND_STRUCT && ty.kind != KIND_UNION {
            return None;
        }
        for m in &ty.members {
            if m.name == 0 {
                if let Some((off, t)) = self.find_member(m.type_id, name) {
                    return Some((m.bit_offset + off, t));
                }
            } else if self.str_at(m.name) == name {
                return Some((m.bit_offset, m.type_id));
            }
        }
        None
    }

    /// Byte offset of `path` ("member.member...") in `struct strukt`, checking the size of
    /// the last member.
    pub fn offset_of(&self, strukt: &str, path: &str, size: u32) -> Result<u32, BtfError> {
        let mut id = *self.structs.get(strukt).ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let mut bits = 0;
        let mut member_type = id;
        for part in path.split('.') {
            let (off, t) = self
                .find_member(id, part)
                .ok_or_else(|| BtfError::NoField(strukt.into(), path.into()))?;
            bits += off;
            member_type = t;
            id = t;
        }
        if bits % 8 != 0 {
            return Err(BtfError::NoField(strukt.into(), format!("{path} (bitfield)")));
        }
        let actual = self.size_of(member_type);
        if actual != size {
            return Err(BtfError::FieldSize(format!("{strukt}.{path}"), actual, size));
        }
        Ok(bits / 8)
    }

    /// Everything the programs read, in one struct.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            task_flags: self.offset_of("task_struct", "flags", 4)?,
            task_tgid: self.offset_of("task_struct", "tgid", 4)?,
            task_start_boottime: self.offset_of("task_struct", "start_boottime", 8)?,
            task_signal: self.offset_of("task_struct", "signal", 8)?,
            signal_live: self.offset_of("signal_struct", "live", 4)?,
            task_files: self.offset_of("task_struct", "files", 8)?,
            files_fdt: self.offset_of("files_struct", "fdt", 8)?,
            fdt_max_fds: self.offset_of("fdtable", "max_fds", 4)?,
            fdt_fd: self.offset_of("fdtable", "fd", 8)?,
            file_private_data: self.offset_of("file", "private_data", 8)?,
            socket_sk: self.offset_of("socket", "sk", 8)?,
            sk_family: self.offset_of("sock", "__sk_common.skc_family", 2)?,
            sk_num: self.offset_of("sock", "__sk_common.skc_num", 2)?,
            sk_type: self.offset_of("sock", "sk_type", 2)?,
            regs_syscall: self.offset_of("pt_regs", "orig_ax", 8)?,
            regs_arg1: self.offset_of("pt_regs", "di", 8)?,
            regs_arg2: self.offset_of("pt_regs", "si", 8)?,
            regs_arg3: self.offset_of("pt_regs", "dx", 8)?,
            unix_addr: self.offset_of("unix_sock", "addr", 8)?,
            unix_peer: self.offset_of("unix_sock", "peer", 8)?,
            sk_cookie: self.offset_of("sock", "__sk_common.skc_cookie", 8)?,
            sk_state: self.offset_of("sock", "__sk_common.skc_state", 1)?,
            tcp_copied_seq: self.offset_of("tcp_sock", "copied_seq", 4)?,
            tcp_rcv_nxt: self.offset_of("tcp_sock", "rcv_nxt", 4)?,
            tcp_snd_nxt: self.offset_of("tcp_sock", "snd_nxt", 4)?,
            tcp_write_seq: self.offset_of("tcp_sock", "write_seq", 4)?,
            tcp_cb_flags: self.offset_of("tcp_sock", "bpf_sock_ops_cb_flags", 1)?,
            regs_r14: self.offset_of("pt_regs", "r14", 8)?,
            valid: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: struct outer { int a; union { int b; long c; }; struct inner in; }
    /// struct inner { short x; short y; }
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0long\0short\0outer\0a\0b\0c\0inner\0in\0x\0y\0".to_vec();
        let s = |name: &str| {
            let pos = strings.windows(name.len() + 2).position(|w| {
                w[0] == 0 && &w[1..=name.len()] == name.as_bytes() && w[name.len() + 1] == 0
            });
            pos.unwrap() as u32 + 1
        };
        let mut t: Vec<u32> = vec![];
        // 1: int (4)
        t.extend([s("int"), KIND_INT << 24, 4, 32]);
        // 2: long (8)
        t.extend([s("long"), KIND_INT << 24, 8, 64]);
        // 3: short (2)
        t.extend([s("short"), KIND_INT << 24, 2, 16]);
        // 4: anonymous union { int b; long c; } size 8
        t.extend([0, (KIND_UNION << 24) | 2, 8, s("b"), 1, 0, s("c"), 2, 0]);
        // 5: struct inner { short x; short y; }
        t.extend([s("inner"), (KIND_STRUCT << 24) | 2, 4, s("x"), 3, 0, s("y"), 3, 16]);
        // 6: struct outer { int a; <anon union> at 64; struct inner in at 128 }
        t.extend([s("outer"), (KIND_STRUCT << 24) | 3, 24, s("a"), 1, 0, 0, 4, 64, s("in"), 5, 128]);
        let types: Vec<u8> = t.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            out.extend(w.to_le_bytes());
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn offsets_through_anonymous_and_nested_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.offset_of("outer", "a", 4).unwrap(), 0);
        assert_eq!(btf.offset_of("outer", "b", 4).unwrap(), 8);
        assert_eq!(btf.offset_of("outer", "c", 8).unwrap(), 8);
        assert_eq!(btf.offset_of("outer", "in.y", 2).unwrap(), 18);
    }

    #[test]
    fn errors_name_what_is_missing() {
        let btf = Btf::parse(&sample()).unwrap();
        let e = btf.offset_of("outer", "zz", 4).unwrap_err().to_string();
        assert!(e.contains("`zz`"), "{e}");
        let e = btf.offset_of("nope", "a", 4).unwrap_err().to_string();
        assert!(e.contains("`nope`"), "{e}");
        let e = btf.offset_of("outer", "a", 8).unwrap_err().to_string();
        assert!(e.contains("4 bytes, expected 8"), "{e}");
        assert!(Btf::parse(b"garbage!").is_err());
    }

    #[test]
    fn running_kernel_has_every_field() {
        // The host kernel's BTF must resolve everything the programs need.
        if std::path::Path::new(VMLINUX_BTF).exists() {
            let off = Btf::from_sys_fs().unwrap().kernel_offsets().unwrap();
            assert_eq!(off.valid, 1);
            assert_eq!(off.regs_syscall, 120, "x86_64 pt_regs.orig_ax");
        }
    }
}
