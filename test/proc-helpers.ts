/**
 * Facts about a process that only the tests need (the agent never asks): its threads, name,
 * executable and tracer, with the agent's error mapping for /proc (src/proc/procfs.ts).
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { checkPid, procError, procPath, readProcText, readStatus } from '../src/proc/procfs.js';

/** Thread ids of the process (the entries of /proc/PID/task), ascending. */
export function listThreads(pid: number): number[] {
  checkPid(pid);
  let names: string[];
  try {
    names = readdirSync(procPath(pid, 'task'));
  } catch (err) {
    throw procError(pid, 'task', err);
  }
  return names
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);
}

/** The process's command name (/proc/PID/comm, at most 15 characters). */
export function processName(pid: number): string {
  return readProcText(pid, 'comm').replace(/\n$/, '');
}

/** Pid of the process tracing `pid` (a debugger, strace, or hp-agent itself), 0 when none. */
export function tracerOf(pid: number): number {
  return readStatus(pid).tracerPid;
}

/** Target of /proc/PID/exe, as the kernel reports it (a " (deleted)" suffix is kept). */
export function exePath(pid: number): string {
  checkPid(pid);
  try {
    return readlinkSync(procPath(pid, 'exe'));
  } catch (err) {
    throw procError(pid, 'exe', err);
  }
}
