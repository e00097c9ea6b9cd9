/**
 * Small, error-mapped readers of /proc/PID/* files. Every failure becomes an HpError that says
 * which process and which file, and whether the process is gone or merely not accessible.
 */
import { existsSync, readFileSync } from 'node:fs';
import { HpError } from '../errors.js';
import { isGone, processState } from './stat.js';

export function procPath(pid: number, file: string): string {
  return `/proc/${pid}/${file}`;
}

export function checkPid(pid: number): void {
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw new HpError('INVALID_PID', `refusing to inspect process ${String(pid)}: a pid is a positive integer`, { pid });
  }
}

/** Maps a failed /proc access to PROCESS_NOT_FOUND, PROC_ACCESS_DENIED or PROC_READ_FAILED. */
export function procError(pid: number, file: string, err: unknown): HpError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const reason = err instanceof Error ? err.message : String(err);
  if (code === 'ESRCH' || !existsSync(`/proc/${pid}`)) {
    return new HpError('PROCESS_NOT_FOUND', `cannot inspect process ${pid}: no such process`, { pid });
  }
  const state = processState(pid);
  if (state !== undefined && isGone(state)) {
    return new HpError('PROCESS_NOT_FOUND', `cannot inspect process ${pid}: it has exited (zombie not yet reaped by its parent)`, { pid, state });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new HpError(
      'PROC_ACCESS_DENIED',
      `cannot read ${procPath(pid, file)}: permission denied (inspecting another process needs ptrace access to it: the same user and a permissive kernel.yama.ptrace_scope, or CAP_SYS_PTRACE)`,
      { pid, file, reason },
    );
  }
  return new HpError('PROC_READ_FAILED', `cannot read ${procPath(pid, file)}: ${reason}`, { pid, file, reason });
}

export function readProcText(pid: number, file: string): string {
  checkPid(pid);
  try {
    return readFileSync(procPath(pid, file), 'utf8');
  } catch (err) {
    throw procError(pid, file, err);
  }
}

export function readProcBuffer(pid: number, file: string): Buffer {
  checkPid(pid);
  try {
    return readFileSync(procPath(pid, file));
  } catch (err) {
    throw procError(pid, file, err);
  }
}

/** The fields of /proc/PID/status hp-agent needs. */
export interface ProcStatus {
  /** Single-letter scheduler state (R, S, D, T, t, Z, X, ...). */
  state: string;
  ppid: number;
  /** Pid of the process tracing it (a debugger, strace, or hp-agent itself), 0 when none. */
  tracerPid: number;
  /**
   * Its pid in each PID namespace it belongs to, outermost (ours) first: [pid] outside any
   * container; the last is its pid inside its own namespace (1 for a container's init).
   */
  nsPids: number[];
}

/** One read of /proc/PID/status. */
export function readStatus(pid: number): ProcStatus {
  const status = readProcText(pid, 'status');
  const field = (name: string): string => {
    const m = new RegExp(`^${name}:\\s*(\\S+)`, 'm').exec(status);
    if (!m) throw new HpError('PROC_READ_FAILED', `cannot find ${name} in ${procPath(pid, 'status')}`, { pid });
    return m[1];
  };
  // NSpid exists since Linux 4.1; before it, a process's only pid is the one we see.
  const nsPids = /^NSpid:\s*(.*)$/m.exec(status)?.[1].trim().split(/\s+/).map(Number) ?? [pid];
  return { state: field('State'), ppid: Number(field('PPid')), tracerPid: Number(field('TracerPid')), nsPids };
}

/**
 * Whether `pid` is the init (pid 1) of a PID namespace: the machine's own init, or a container's.
 * When an init dies, the kernel kills every other process of its namespace with it.
 */
export function isNamespaceInit(pid: number): boolean {
  return pid === 1 || readStatus(pid).nsPids.at(-1) === 1;
}

/** Auxiliary-vector tags hp-agent reads (Linux ABI, <linux/auxvec.h>). */
export const AT_NULL = 0;
export const AT_PHDR = 3;
export const AT_ENTRY = 9;

/** The process's auxiliary vector (/proc/PID/auxv, pairs of 64-bit words) as tag -> value. */
export function readAuxv(pid: number): Map<number, bigint> {
  const buf = readProcBuffer(pid, 'auxv');
  const out = new Map<number, bigint>();
  for (let i = 0; i + 16 <= buf.length; i += 16) {
    const tag = Number(buf.readBigUInt64LE(i));
    if (tag === AT_NULL) break;
    out.set(tag, buf.readBigUInt64LE(i + 8));
  }
  return out;
}
