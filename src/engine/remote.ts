/**
 * System calls run inside a target process, each in one briefly hijacked thread (see the native
 * core). The target's own libc is never called, so a thread holding malloc's or the loader's
 * lock cannot deadlock us.
 */
import fs from 'node:fs';
import os from 'node:os';
import { HpError } from '../errors.js';
import { native } from '../native.js';
import { listThreads, readMaps } from '../proc/index.js';
import { SYS, SYSCALL_INSN } from '../x64/syscalls.js';

const gadgets = new Map<number, { start: number; addr: number }>();

/**
 * The address of a `syscall` instruction in the target's executable memory. Any occurrence of
 * the two bytes will do: the CPU decodes from wherever we point it.
 */
async function findGadget(pid: number): Promise<number> {
  const maps = readMaps(pid);
  const cached = gadgets.get(pid);
  if (cached && maps.some((m) => m.exec && m.start <= cached.addr && cached.addr + 2 <= m.end)) return cached.addr;
  // vdso first (small, always there), then the C library, then anything executable.
  const candidates = maps
    .filter((m) => m.exec && m.read)
    .sort((a, b) => rank(a.path) - rank(b.path));
  for (const m of candidates) {
    const length = Math.min(m.end - m.start, 4 << 20);
    let bytes: Buffer;
    try {
      bytes = await native.readMemory(pid, m.start, length);
    } catch {
      continue;
    }
    const at = bytes.indexOf(SYSCALL_INSN);
    if (at >= 0) {
      gadgets.set(pid, { start: m.start, addr: m.start + at });
      return m.start + at;
    }
  }
  throw new HpError('NO_SYSCALL_GADGET', `process ${pid} has no executable "syscall" instruction hp-agent could borrow; nothing was changed`);
}

function rank(path: string): number {
  if (path === '[vdso]') return 0;
  if (/\/libc[.-]/.test(path)) return 1;
  return 2;
}

/**
 * The thread to borrow for a remote call: one asleep in a system call if there is one (its call
 * is restarted afterwards, and the threads doing the program's work are not disturbed at all),
 * else the main thread.
 */
function threadToBorrow(pid: number): number | undefined {
  for (const tid of listThreads(pid)) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'S') return tid;
    } catch {
      // the thread is gone; look at the next
    }
  }
  return undefined;
}

export class RemoteProcess {
  constructor(readonly pid: number) {}

  /** Runs one call; a negative return in the errno range becomes an HpError naming the call. */
  async syscall(name: keyof typeof SYS, ...args: (number | bigint)[]): Promise<number> {
    const gadget = await findGadget(this.pid);
    const { ret } = await native.remoteSyscall(this.pid, SYS[name], args, { gadget, tid: threadToBorrow(this.pid) });
    if (ret < 0 && ret >= -4095) {
      const errno = -ret;
      const text = Object.entries(os.constants.errno).find(([, v]) => v === errno)?.[0] ?? `errno ${errno}`;
      throw new HpError('REMOTE_SYSCALL_FAILED', `${name}(${args.join(', ')}) inside process ${this.pid} failed: ${text}`, {
        syscall: name,
        errno,
      });
    }
    return ret;
  }
}
