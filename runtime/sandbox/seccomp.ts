/**
 * A seccomp filter for sandboxed commands: no set-user-ID or set-group-ID
 * file, no kernel keyrings. A command runs as the runtime's own uid in a user
 * namespace; when the runtime is root, a file it makes setuid in a writable
 * workspace path would be a setuid-root program on the host for anyone who
 * runs it. So every syscall that sets a file mode (chmod family, open, creat,
 * mknod with a mode) is refused with EPERM when the mode has S_ISUID or
 * S_ISGID, and the syscalls whose mode a filter cannot see (openat2's struct,
 * io_uring) are ENOSYS (libc and runtimes fall back to plain openat). The
 * kernel keyrings of that uid are the runtime's, so the key syscalls are
 * ENOSYS too (as in Docker's default profile). Syscalls of another ABI (i386
 * through `int 0x80`, x32) are refused outright: they would reach chmod under
 * other numbers.
 *
 * Handed to bwrap as `--seccomp 0`: the program's bytes on the command's
 * stdin, which is then closed (the command reads end of file).
 * @module
 */

/** Linux syscall numbers and audit arch of the architectures the filter knows. */
interface _Arch {
  audit: number;
  /** Syscall name -> [number, index of the mode argument]. */
  modes: Record<string, [number, number]>;
  /** Syscalls refused with ENOSYS. */
  nosys: number[];
  /** Bit marking another ABI's syscall numbers (x32), or 0. */
  abiBit: number;
}

const _X86_64: _Arch = {
  audit: 0xc000003e,
  modes: {
    open: [2, 2],
    creat: [85, 1],
    chmod: [90, 1],
    fchmod: [91, 1],
    mknod: [133, 1],
    openat: [257, 3],
    mknodat: [259, 2],
    fchmodat: [268, 2],
    fchmodat2: [452, 2],
  },
  // io_uring_setup, _enter, _register; openat2; add_key, request_key, keyctl
  nosys: [425, 426, 427, 437, 248, 249, 250],
  abiBit: 0x40000000,
};

const _AARCH64: _Arch = {
  audit: 0xc00000b7,
  modes: {
    mknodat: [33, 2],
    fchmod: [52, 1],
    fchmodat: [53, 2],
    openat: [56, 3],
    fchmodat2: [452, 2],
  },
  nosys: [425, 426, 427, 437, 217, 218, 219],
  abiBit: 0,
};

// Classic BPF, as seccomp runs it.
const _LD_W_ABS = 0x20;
const _JEQ_K = 0x15;
const _JSET_K = 0x45;
const _RET_K = 0x06;
const _ALLOW = 0x7fff0000;
const _ERRNO = 0x00050000;
const _EPERM = 1;
const _ENOSYS = 38;
const _SETID_BITS = 0o6000;

/** seccomp_data offsets: nr, arch, then 64-bit args (low half first, little-endian). */
const _NR = 0;
const _ARCH = 4;
const _arg = (i: number) => 16 + 8 * i;

type _Insn = { code: number; jt: number | string; jf: number | string; k: number } | string;

/** Assemble instructions with symbolic jump targets (labels are strings in the list). */
function _assemble(prog: _Insn[]): Uint8Array {
  const labels = new Map<string, number>();
  const insns: Exclude<_Insn, string>[] = [];
  for (const p of prog) {
    if (typeof p === "string") labels.set(p, insns.length);
    else insns.push(p);
  }
  const out = new Uint8Array(insns.length * 8);
  const view = new DataView(out.buffer);
  insns.forEach((ins, i) => {
    const rel = (t: number | string) => {
      const d = typeof t === "number" ? t : labels.get(t)! - i - 1;
      if (!(d >= 0 && d < 256)) throw new Error(`seccomp: jump ${t} out of range at ${i}`);
      return d;
    };
    view.setUint16(i * 8, ins.code, true);
    view.setUint8(i * 8 + 2, rel(ins.jt));
    view.setUint8(i * 8 + 3, rel(ins.jf));
    view.setUint32(i * 8 + 4, ins.k, true);
  });
  return out;
}

const _ld = (off: number): _Insn => ({ code: _LD_W_ABS, jt: 0, jf: 0, k: off });
const _jeq = (k: number, jt: number | string, jf: number | string): _Insn => ({
  code: _JEQ_K,
  jt,
  jf,
  k,
});
const _jset = (k: number, jt: number | string, jf: number | string): _Insn => ({
  code: _JSET_K,
  jt,
  jf,
  k,
});
const _ret = (k: number): _Insn => ({ code: _RET_K, jt: 0, jf: 0, k });

function _program(a: _Arch): Uint8Array {
  const p: _Insn[] = [_ld(_ARCH), _jeq(a.audit, 0, "eperm"), _ld(_NR)];
  if (a.abiBit) p.push(_jset(a.abiBit, "eperm", 0));
  for (const nr of a.nosys) p.push(_jeq(nr, "enosys", 0));
  const modes = Object.entries(a.modes);
  for (const [name, [nr]] of modes) p.push(_jeq(nr, `mode_${name}`, 0));
  p.push(_ret(_ALLOW));
  for (const [name, [, arg]] of modes) {
    p.push(`mode_${name}`, _ld(_arg(arg)), _jset(_SETID_BITS, "eperm", "allow"));
  }
  p.push("allow", _ret(_ALLOW), "eperm", _ret(_ERRNO | _EPERM), "enosys", _ret(_ERRNO | _ENOSYS));
  return _assemble(p);
}

/** The filter for this machine's architecture, or null where none is known. */
export function noSetIdFilter(arch: string = Deno.build.arch): Uint8Array | null {
  if (arch === "x86_64") return _program(_X86_64);
  if (arch === "aarch64") return _program(_AARCH64);
  return null;
}
