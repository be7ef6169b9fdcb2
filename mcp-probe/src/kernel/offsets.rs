//! Kernel struct member offsets read from the running kernel's BTF, so the programs can
//! walk task->files->fdt->fd[fd]->f_inode without CO-RE relocations.

use btf_rs::{Btf, BtfType, Type};
use mcp_probe_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("cannot read kernel BTF at {path}: {reason} (the kernel needs CONFIG_DEBUG_INFO_BTF)")]
    Btf { path: String, reason: String },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(&'static str),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember {
        strukt: &'static str,
        member: &'static str,
    },
    #[error("cannot read tracepoint format {path}: {source}")]
    Format {
        path: String,
        source: std::io::Error,
    },
    #[error("tracepoint format {path} has no field {field}")]
    NoField { path: String, field: &'static str },
}

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Reads every offset the programs need.
pub fn load(tracefs: &str) -> Result<KernelOffsets, OffsetsError> {
    let btf = Btf::from_file(VMLINUX_BTF).map_err(|e| OffsetsError::Btf {
        path: VMLINUX_BTF.into(),
        reason: e.to_string(),
    })?;
    let off = |strukt, member| member_offset(&btf, strukt, member);
    let fork_format = format!("{tracefs}/events/sched/sched_process_fork/format");
    let exit_format = format!("{tracefs}/events/sched/sched_process_exit/format");
    Ok(KernelOffsets {
        task_struct_files: off("task_struct", "files")?,
        files_struct_fdt: off("files_struct", "fdt")?,
        fdtable_max_fds: off("fdtable", "max_fds")?,
        fdtable_fd: off("fdtable", "fd")?,
        file_f_inode: off("file", "f_inode")?,
        inode_i_mode: off("inode", "i_mode")?,
        inode_i_ino: off("inode", "i_ino")?,
        file_private_data: off("file", "private_data")?,
        socket_sk: off("socket", "sk")?,
        sock_common_skc_family: off("sock_common", "skc_family")?,
        sock_common_skc_num: off("sock_common", "skc_num")?,
        sock_common_skc_dport: off("sock_common", "skc_dport")?,
        sock_common_skc_rcv_saddr: off("sock_common", "skc_rcv_saddr")?,
        sock_common_skc_daddr: off("sock_common", "skc_daddr")?,
        sock_common_skc_v6_rcv_saddr: off("sock_common", "skc_v6_rcv_saddr")?,
        sock_common_skc_v6_daddr: off("sock_common", "skc_v6_daddr")?,
        unix_sock_peer: off("unix_sock", "peer")?,
        unix_sock_addr: off("unix_sock", "addr")?,
        unix_address_name: off("unix_address", "name")?,
        task_struct_exit_code: off("task_struct", "exit_code")?,
        exit_group_dead: tracepoint_field_offset(&exit_format, "group_dead").unwrap_or(0),
        fork_child_pid: tracepoint_field_offset(&fork_format, "child_pid")?,
    })
}

/// Byte offset of `member` in `struct strukt`, looking through anonymous structs/unions.
fn member_offset(
    btf: &Btf,
    strukt: &'static str,
    member: &'static str,
) -> Result<u64, OffsetsError> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|_| OffsetsError::NoStruct(strukt))?;
    let found = types.iter().find_map(|t| match t {
        Type::Struct(s) if !s.members.is_empty() => find_member(btf, s, member, 0),
        _ => None,
    });
    found
        .map(|bits| bits / 8)
        .ok_or(OffsetsError::NoMember { strukt, member })
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, wanted: &str, base_bits: u64) -> Option<u64> {
    for m in &s.members {
        let bits = base_bits + u64::from(m.bit_offset());
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == wanted {
            return Some(bits);
        }
        if name.is_empty() {
            // Anonymous struct or union: its members belong to the parent.
            let mut ty = btf.resolve_chained_type(m).ok()?;
            loop {
                match ty {
                    Type::Struct(ref inner) | Type::Union(ref inner) => {
                        if let Some(found) = find_member(btf, inner, wanted, bits) {
                            return Some(found);
                        }
                        break;
                    }
                    Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) => {
                        let Some(t) = ty.as_btf_type() else { break };
                        ty = btf.resolve_chained_type(t).ok()?;
                    }
                    _ => break,
                }
            }
        }
    }
    None
}

/// Offset of `field` in a tracepoint's record, from its tracefs `format` file.
fn tracepoint_field_offset(path: &str, field: &'static str) -> Result<u64, OffsetsError> {
    let text = std::fs::read_to_string(path).map_err(|source| OffsetsError::Format {
        path: path.into(),
        source,
    })?;
    parse_field_offset(&text, field).ok_or(OffsetsError::NoField {
        path: path.into(),
        field,
    })
}

fn parse_field_offset(format: &str, field: &str) -> Option<u64> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.rsplit([' ', '*']).next()?;
        if name != field {
            return None;
        }
        let offset = rest.trim().strip_prefix("offset:")?.split(';').next()?;
        offset.trim().parse().ok()
    })
}

// Keeps `BtfType` in scope for `resolve_name`/`resolve_chained_type` on members.
const _: fn(&dyn BtfType) = |_| {};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracepoint_format() {
        let format = "name: sched_process_fork\nID: 300\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(format, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(format, "parent_pid"), Some(12));
        assert_eq!(parse_field_offset(format, "nope"), None);
    }

    #[test]
    fn reads_offsets_of_this_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            return;
        }
        let btf = Btf::from_file(VMLINUX_BTF).expect("vmlinux BTF parses");
        let files = member_offset(&btf, "task_struct", "files").expect("task_struct.files");
        assert!(files > 0);
        let inode = member_offset(&btf, "file", "f_inode").expect("file.f_inode");
        assert!(inode > 0 && inode < 256);
        assert_eq!(
            member_offset(&btf, "inode", "i_mode").expect("inode.i_mode"),
            0
        );
    }
}
