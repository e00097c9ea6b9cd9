/** x86-64 Linux system call numbers and flags hp-agent runs inside targets (asm/unistd_64.h). */
export const SYS = {
  close: 3,
  mmap: 9,
  mprotect: 10,
  munmap: 11,
  memfd_create: 319,
} as const;

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
/** Like MAP_FIXED but fails with EEXIST instead of replacing a mapping that is already there. */
export const MAP_FIXED_NOREPLACE = 0x100000;
export const MFD_CLOEXEC = 1;
export { PAGE_SIZE } from './jump.js';

/** `syscall; ret`: a remote call runs here, and the `ret` takes it to the signal-return trampoline. */
export const SYSCALL_RET = Buffer.from([0x0f, 0x05, 0xc3]);
/** `mov rax, 15 (rt_sigreturn); syscall`: the C library's __restore_rt, as every signal handler returns. */
export const SIGRETURN_TRAMPOLINE = Buffer.from([0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05]);
