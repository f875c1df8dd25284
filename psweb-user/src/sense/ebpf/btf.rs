//! Kernel BTF (`/sys/kernel/btf/vmlinux`): just enough of it to find the byte offsets
//! and sizes of the struct members the eBPF programs read, and the values of kernel
//! enumerators. Hand-written on purpose (see ARCHITECTURE.md, "Hand-written pieces"):
//! it indexes the types by id and reads a name only when a lookup needs it, where the
//! BTF crates parse every type and name up front. The tests check it against
//! `btfparse`.

use std::path::Path;

use super::EbpfError;

/// Where the running kernel publishes its BTF (CONFIG_DEBUG_INFO_BTF).
pub(super) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why the kernel's BTF could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("{0} (the kernel needs CONFIG_DEBUG_INFO_BTF)")]
    Unreadable(std::io::Error),
    #[error("bad magic (not little-endian BTF)")]
    BadMagic,
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("sections extend past the end")]
    SectionsPastEnd,
    #[error("unknown BTF kind {0}")]
    UnknownKind(u32),
}

impl BtfError {
    /// What failed, for the log line: reading the file or parsing it.
    pub(super) fn action(&self) -> &'static str {
        match self {
            BtfError::Unreadable(_) => "read",
            _ => "parse",
        }
    }
}

/// A member found in a struct: byte offset from the start of the outer struct, and
/// the byte size of its (resolved) type.
#[derive(Clone, Copy, Debug)]
pub(super) struct Member {
    pub offset: u32,
    pub size: u32,
}

/// The kernel's BTF, indexed by type id; names are read only when looked up.
pub(super) struct KernelBtf {
    data: Vec<u8>,
    str_start: usize,
    str_end: usize,
    /// Byte offset in `data` of type id `i + 1`.
    types: Vec<usize>,
}

const BTF_KIND_INT: u32 = 1;
const BTF_KIND_PTR: u32 = 2;
const BTF_KIND_ARRAY: u32 = 3;
const BTF_KIND_STRUCT: u32 = 4;
const BTF_KIND_UNION: u32 = 5;
const BTF_KIND_ENUM: u32 = 6;
const BTF_KIND_TYPEDEF: u32 = 8;
const BTF_KIND_VOLATILE: u32 = 9;
const BTF_KIND_CONST: u32 = 10;
const BTF_KIND_RESTRICT: u32 = 11;
const BTF_KIND_FUNC_PROTO: u32 = 13;
const BTF_KIND_VAR: u32 = 14;
const BTF_KIND_DATASEC: u32 = 15;
const BTF_KIND_DECL_TAG: u32 = 17;
const BTF_KIND_TYPE_TAG: u32 = 18;
const BTF_KIND_ENUM64: u32 = 19;

impl KernelBtf {
    pub(super) fn read(path: &Path) -> Result<Self, EbpfError> {
        let data = std::fs::read(path).map_err(|e| EbpfError::Btf {
            path: path.display().to_string(),
            why: BtfError::Unreadable(e),
        })?;
        Self::parse(data).map_err(|why| EbpfError::Btf {
            path: path.display().to_string(),
            why,
        })
    }

    fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |o: usize| {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u16_at(0) != Some(0xeb9f) {
            return Err(BtfError::BadMagic);
        }
        let field = |o| {
            u32_at(o)
                .map(|v| v as usize)
                .ok_or(BtfError::Truncated("header"))
        };
        let hdr_len = field(4)?;
        let type_off = field(8)?;
        let type_len = field(12)?;
        let str_off = field(16)?;
        let str_len = field(20)?;
        let t_start = hdr_len + type_off;
        let t_end = t_start + type_len;
        let str_start = hdr_len + str_off;
        let str_end = str_start + str_len;
        if t_end > data.len() || str_end > data.len() {
            return Err(BtfError::SectionsPastEnd);
        }
        let mut types = Vec::with_capacity(type_len / 16);
        let mut pos = t_start;
        while pos < t_end {
            let info = u32_at(pos + 4).ok_or(BtfError::Truncated("type"))?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                BTF_KIND_INT | BTF_KIND_VAR | BTF_KIND_DECL_TAG => 4,
                BTF_KIND_ARRAY => 12,
                BTF_KIND_STRUCT | BTF_KIND_UNION | BTF_KIND_DATASEC | BTF_KIND_ENUM64 => 12 * vlen,
                BTF_KIND_ENUM | BTF_KIND_FUNC_PROTO => 8 * vlen,
                0..=19 => 0,
                other => return Err(BtfError::UnknownKind(other)),
            };
            types.push(pos);
            pos += 12 + extra;
        }
        Ok(KernelBtf {
            data,
            str_start,
            str_end,
            types,
        })
    }

    fn u32_at(&self, o: usize) -> u32 {
        self.data
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    }

    fn name(&self, name_off: u32) -> &[u8] {
        let start = self.str_start + name_off as usize;
        if start >= self.str_end {
            return b"";
        }
        let s = &self.data[start..self.str_end];
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        &s[..end]
    }

    /// (name_off, kind, vlen, kind_flag, size_or_type, position) of type `id`.
    fn ty(&self, id: u32) -> Option<(u32, u32, usize, bool, u32, usize)> {
        let pos = *self.types.get((id as usize).checked_sub(1)?)?;
        let info = self.u32_at(pos + 4);
        Some((
            self.u32_at(pos),
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
            self.u32_at(pos + 8),
            pos,
        ))
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let (_, kind, _, _, next, _) = self.ty(id)?;
            match kind {
                BTF_KIND_TYPEDEF | BTF_KIND_VOLATILE | BTF_KIND_CONST | BTF_KIND_RESTRICT
                | BTF_KIND_TYPE_TAG => id = next,
                _ => return Some(id),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let (_, kind, _, _, size, _) = self.ty(self.resolve(id)?)?;
        match kind {
            BTF_KIND_INT | BTF_KIND_ENUM | BTF_KIND_ENUM64 | BTF_KIND_STRUCT | BTF_KIND_UNION => {
                Some(size)
            }
            BTF_KIND_PTR => Some(8),
            _ => None,
        }
    }

    fn struct_id(&self, name: &str) -> Option<u32> {
        (1..=self.types.len() as u32).find(|&id| {
            self.ty(id).is_some_and(|(n, kind, vlen, ..)| {
                kind == BTF_KIND_STRUCT && vlen > 0 && self.name(n) == name.as_bytes()
            })
        })
    }

    /// Bit offset and type of member `name` of struct/union `id`, looking inside
    /// anonymous struct/union members as C does.
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let (_, kind, vlen, kind_flag, _, pos) = self.ty(id)?;
        if kind != BTF_KIND_STRUCT && kind != BTF_KIND_UNION {
            return None;
        }
        for i in 0..vlen {
            let m = pos + 12 + 12 * i;
            let (m_name, m_type, m_off) = (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            let bit_off = if kind_flag {
                m_off & 0x00ff_ffff
            } else {
                m_off
            };
            if m_name != 0 {
                if self.name(m_name) == name.as_bytes() {
                    return Some((bit_off, m_type));
                }
            } else if let Some(inner) = self.resolve(m_type) {
                if let Some((off, ty)) = self.find_member(inner, name, depth + 1) {
                    return Some((bit_off + off, ty));
                }
            }
        }
        None
    }

    /// Byte offset and size of `path` ("a.b.c", anonymous members transparent) in
    /// `struct strukt`. None if absent or not byte-aligned.
    pub(super) fn member(&self, strukt: &str, path: &str) -> Option<Member> {
        let mut id = self.struct_id(strukt)?;
        let mut bits = 0u32;
        let mut ty = id;
        for part in path.split('.') {
            let (off, t) = self.find_member(id, part, 0)?;
            bits += off;
            ty = t;
            id = self.resolve(t)?;
        }
        if bits & 7 != 0 {
            return None;
        }
        Some(Member {
            offset: bits / 8,
            size: self.size_of(ty)?,
        })
    }

    /// The value of enumerator `name` in any enum.
    pub(super) fn enum_value(&self, name: &str) -> Option<i64> {
        for id in 1..=self.types.len() as u32 {
            let Some((_, kind, vlen, _, _, pos)) = self.ty(id) else {
                continue;
            };
            match kind {
                BTF_KIND_ENUM => {
                    for i in 0..vlen {
                        let e = pos + 12 + 8 * i;
                        if self.name(self.u32_at(e)) == name.as_bytes() {
                            return Some(i64::from(self.u32_at(e + 4) as i32));
                        }
                    }
                }
                BTF_KIND_ENUM64 => {
                    for i in 0..vlen {
                        let e = pos + 12 + 12 * i;
                        if self.name(self.u32_at(e)) == name.as_bytes() {
                            let v = u64::from(self.u32_at(e + 4))
                                | (u64::from(self.u32_at(e + 8)) << 32);
                            return Some(v as i64);
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts operators see in the fallback log line (docs/kernels.md records them).
    #[test]
    fn error_texts() {
        let text = |path: &str| match KernelBtf::read(Path::new(path)) {
            Ok(_) => panic!("{path} parsed as BTF"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            text("/nonexistent/vmlinux"),
            "cannot read kernel BTF /nonexistent/vmlinux: No such file or directory (os error 2) \
             (the kernel needs CONFIG_DEBUG_INFO_BTF)"
        );
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"not btf").unwrap();
        assert_eq!(
            text(bad.to_str().unwrap()),
            format!(
                "cannot parse kernel BTF {}: bad magic (not little-endian BTF)",
                bad.display()
            )
        );
        let mut past = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, 100, 0, 0] {
            past.extend_from_slice(&v.to_le_bytes());
        }
        match KernelBtf::parse(past) {
            Ok(_) => panic!("parsed"),
            Err(e) => assert_eq!(e.to_string(), "sections extend past the end"),
        }
    }

    #[test]
    fn kernel_btf_lookups() {
        let Ok(btf) = KernelBtf::read(Path::new(VMLINUX_BTF)) else {
            eprintln!("SKIPPED: no kernel BTF");
            return;
        };
        let exit = btf.member("task_struct", "exit_code").unwrap();
        assert_eq!(exit.size, 4);
        let num = btf.member("sock", "__sk_common.skc_num").unwrap();
        assert_eq!(num.size, 2);
        assert!(btf.member("sock", "sk_ack_backlog").is_some());
        assert!(btf
            .enum_value("SKB_DROP_REASON_TCP_LISTEN_OVERFLOW")
            .is_some());
    }

    /// Layout facts that hold on every kernel psweb supports.
    #[test]
    fn offsets_are_consistent() {
        let Ok(btf) = KernelBtf::read(Path::new(VMLINUX_BTF)) else {
            eprintln!("SKIPPED: no kernel BTF");
            return;
        };
        // struct sock starts with its sock_common: __sk_common's members keep their
        // offsets inside sock, and skc_num follows skc_dport (both inside an
        // anonymous union/struct).
        let common = btf.member("sock", "__sk_common").unwrap();
        assert_eq!(common.offset, 0);
        let dport = btf.member("sock_common", "skc_dport").unwrap();
        let num = btf.member("sock_common", "skc_num").unwrap();
        assert_eq!(num.offset, dport.offset + 2);
        assert_eq!(
            btf.member("sock", "__sk_common.skc_num").unwrap().offset,
            num.offset
        );
        assert_eq!(btf.member("sk_buff", "head").unwrap().size, 8);
        assert!(btf.member("task_struct", "no_such_member").is_none());
        assert!(btf.member("no_such_struct", "x").is_none());
        assert!(btf.enum_value("NO_SUCH_ENUMERATOR").is_none());
    }

    /// The same offsets, sizes and enum values as a maintained BTF parser (`btfparse`)
    /// reading the same file, for every member the planner asks for.
    #[test]
    fn agrees_with_btfparse() {
        use btfparse::{Integer32Value, Integer64Value, Offset, TypeInformation, TypeVariant};
        let Ok(data) = std::fs::read(VMLINUX_BTF) else {
            eprintln!("SKIPPED: no kernel BTF");
            return;
        };
        struct Bytes<'a>(&'a [u8]);
        impl btfparse::Readable for Bytes<'_> {
            fn read(&self, offset: u64, buf: &mut [u8]) -> btfparse::Result<()> {
                let start = offset as usize;
                let src = self.0.get(start..start + buf.len()).ok_or_else(|| {
                    btfparse::Error::new(btfparse::ErrorKind::EOF, "past the end")
                })?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
        let oracle = TypeInformation::new(&Bytes(&data)).unwrap();
        let ours = KernelBtf::parse(data.clone()).unwrap();
        let complete_struct = |name: &str| {
            oracle.get().iter().find_map(|(id, t)| match t {
                TypeVariant::Struct(s)
                    if s.name().as_deref() == Some(name) && !s.member_list().is_empty() =>
                {
                    Some(*id)
                }
                _ => None,
            })
        };
        for (s, path) in [
            ("task_struct", "exit_code"),
            ("task_struct", "signal"),
            ("signal_struct", "live"),
            ("sock", "__sk_common.skc_state"),
            ("sock", "__sk_common.skc_num"),
            ("sock", "sk_ack_backlog"),
            ("sock", "sk_max_ack_backlog"),
            ("sk_buff", "head"),
            ("sk_buff", "transport_header"),
        ] {
            let id = complete_struct(s).unwrap();
            let (ty, off) = oracle.offset_of(id, path).unwrap();
            let Offset::ByteOffset(off) = off else {
                panic!("{s}.{path} is a bitfield")
            };
            let size = oracle.size_of(ty).unwrap() as u32;
            let m = ours.member(s, path).unwrap();
            assert_eq!((m.offset, m.size), (off, size), "{s}.{path}");
        }
        let name = "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW";
        let want = oracle.get().values().find_map(|t| match t {
            TypeVariant::Enum(e) => e
                .named_value_list()
                .iter()
                .find(|v| v.name == name)
                .map(|v| match v.value {
                    Integer32Value::Signed(v) => i64::from(v),
                    Integer32Value::Unsigned(v) => i64::from(v as i32),
                }),
            TypeVariant::Enum64(e) => {
                e.named_value_list()
                    .iter()
                    .find(|v| v.name == name)
                    .map(|v| match v.value {
                        Integer64Value::Signed(v) => v,
                        Integer64Value::Unsigned(v) => v as i64,
                    })
            }
            _ => None,
        });
        assert_eq!(ours.enum_value(name), want);
    }
}
