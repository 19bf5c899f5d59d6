//! The system calls a function may not make. The policy is data: a list of
//! denied calls (answered `EPERM`), plus `socket` of the vsock family and
//! `clone` with any namespace flag,
//! plus `clone3`, answered `ENOSYS` so that libc falls back to `clone`,
//! whose flags a filter can inspect.

use std::collections::BTreeMap;

pub use seccompiler::BpfProgram;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Denied outright: mounting, tracing, kernel and module control, keys,
/// namespaces, and clock and swap administration.
const DENIED: &[(&str, i64)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("syslog", libc::SYS_syslog),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("mknod", libc::SYS_mknod),
    ("mknodat", libc::SYS_mknodat),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    // A large kernel surface of its own, which no runtime needs (libuv falls back).
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
];

const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

/// Refuses every x32 system call (the x86-64 ABI's numbers with bit 30
/// set): they share x86-64's architecture tag, so the lists above, which
/// name x86-64's numbers, would let them all through on a kernel built
/// with x32.
fn no_x32() -> BpfProgram {
    const X32_BIT: u32 = 0x4000_0000;
    let insn = |code: u32, jt: u8, jf: u8, k: u32| seccompiler::sock_filter { code: code as u16, jt, jf, k };
    vec![
        // The call's number: `seccomp_data.nr`, at offset 0.
        insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        insn(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, 0, 1, X32_BIT),
        insn(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        insn(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

fn filter(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let f = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)
        .map_err(|e| e.to_string())?;
    f.try_into().map_err(|e: seccompiler::BackendError| e.to_string())
}

/// The programs to install, in order.
pub fn programs() -> Result<Vec<BpfProgram>, String> {
    policy_but(&[])
}

/// What a sandbox's own stages call of what the policy denies: they build
/// the sandbox (its namespaces, mounts and root) before they install it.
pub const STAGES: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
];

/// The policy in two parts, for a process that starts sandboxed children
/// and makes some of the calls it denies itself (`allowed`: the Python
/// zygote joins sandboxes with `setns`, the sandbox factory's clones build
/// them): the policy but `allowed`, which that process installs on itself
/// and its children inherit compiled, and `allowed` alone, which each child
/// installs. A call passes only if every filter on a process lets it, so a
/// child's are the policy exactly; and its own costs a few instructions to
/// compile, not the whole policy (0.2–0.3 ms of a sandbox's CPU).
pub fn split(allowed: &[i64]) -> Result<(Vec<BpfProgram>, Vec<BpfProgram>), String> {
    let own: BTreeMap<i64, Vec<SeccompRule>> = allowed.iter().map(|nr| (*nr, vec![])).collect();
    Ok((policy_but(allowed)?, vec![filter(own, libc::EPERM)?]))
}

fn policy_but(allowed: &[i64]) -> Result<Vec<BpfProgram>, String> {
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(_, nr)| (*nr, vec![])).filter(|(nr, _)| !allowed.contains(nr)).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let cond =
                SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(*flag as u64), *flag as u64)
                    .map_err(|e| e.to_string())?;
            SeccompRule::new(vec![cond]).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    denied.insert(libc::SYS_clone, clone_rules);
    // Sockets of the vsock family: vsock is not in a network namespace, and
    // reaches the hypervisor and whatever listens on it for the machine
    // (a virtual machine's own agents), outside every boundary of the node.
    let vsock = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, libc::AF_VSOCK as u64)
        .map_err(|e| e.to_string())?;
    denied.insert(libc::SYS_socket, vec![SeccompRule::new(vec![vsock]).map_err(|e| e.to_string())?]);
    let clone3: BTreeMap<i64, Vec<SeccompRule>> = [(libc::SYS_clone3, vec![])].into();
    Ok(vec![no_x32(), filter(denied, libc::EPERM)?, filter(clone3, libc::ENOSYS)?])
}

/// Installs the whole policy on this thread (inherited across `exec`);
/// needs `no_new_privs` first, or `CAP_SYS_ADMIN`.
pub fn install() -> Result<(), String> {
    install_programs(&programs()?)
}

/// Installs `programs` on this thread, in order (see [`install`]).
pub fn install_programs(programs: &[BpfProgram]) -> Result<(), String> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_compiles_for_this_machine() {
        let progs = super::programs().unwrap();
        assert_eq!(progs.len(), 3);
        assert!(progs[1].len() > super::DENIED.len(), "one jump per denied call at least");
    }

    #[test]
    fn a_split_policy_differs_from_the_whole_by_what_it_allows() {
        let whole = super::programs().unwrap();
        for allowed in [&[libc::SYS_setns][..], super::STAGES] {
            let (inherited, own) = super::split(allowed).unwrap();
            assert_eq!(inherited.len(), whole.len());
            assert_eq!(inherited[0], whole[0], "x32 as in the whole");
            assert!(inherited[1].len() < whole[1].len(), "the allowed calls are not denied by the inherited part");
            assert_eq!(inherited[2], whole[2], "clone3 as in the whole");
            assert_eq!(own.len(), 1);
            assert!(own[0].len() < whole[1].len() / 2, "a few instructions: {}", own[0].len());
        }
    }
}
