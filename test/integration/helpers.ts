// Shared by the integration tests: run the real command line as a separate process (the agent
// must never be the parent of its target), and read a target's memory back to prove what is
// there.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native.js';
import { findObject, readMaps, readProcStat, symbolAddress } from '../../src/proc/index.js';
import { fixturePath, spawnTarget, type Target } from '../../src/harness/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const cliPath = path.join(root, 'bin/hp-agent.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  json: any;
}

export function hpAgent(args: string[], opts: { json?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const full = opts.json === false ? args : [...args, '--json'];
  return new Promise((resolve) => {
    execFile(process.execPath, [cliPath, ...full], { timeout: 60_000, env: opts.env ?? process.env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      let json: any;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

/** The bytes at the entry of `fn` in the running process, read through /proc/PID/mem. */
export async function entryBytes(pid: number, fn: string, length = 16, object?: string): Promise<Buffer> {
  const sym = symbolAddress(findObject(pid, object), fn);
  return native.readMemory(pid, sym.address, length);
}

/** The same bytes as the object file on disk has them. */
export function fileEntryBytes(pid: number, fn: string, length = 16, object?: string): Buffer {
  const obj = findObject(pid, object);
  const sym = symbolAddress(obj, fn);
  return obj.elf.readVirtual(sym.address - obj.bias, length);
}

export function patchMappings(pid: number): string[] {
  return readMaps(pid)
    .filter((m) => m.path.startsWith('/memfd:hp-agent:'))
    .map((m) => m.path);
}

export function threadCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/task`).length;
}

/** The waiters fixture's threads besides the main one: one per kind of blocking call. */
export const WAITERS = 14;

export function threadStates(pid: number): Map<number, string> {
  const states = new Map<number, string>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`).map(Number)) {
    const state = readProcStat(pid, tid)?.state;
    if (state) states.set(tid, state);
  }
  return states;
}

/** The CPUs each thread of `pid` may run on (Cpus_allowed_list), by thread id. */
export function allowedCpus(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`).map(Number)) {
    try {
      const list = /^Cpus_allowed_list:\s*(\S+)$/m.exec(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))?.[1];
      if (list) out.set(tid, list);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** Threads of `pid` narrowed to fewer CPUs than this process may use (a fence left behind). */
export function narrowedThreads(pid: number): number[] {
  const ours = allowedCpus(process.pid).get(process.pid);
  return [...allowedCpus(pid)].filter(([, cpus]) => cpus !== ours).map(([tid]) => tid);
}

/** Spawns the fixture and waits until every thread is asleep in its call. */
export async function spawnWaiters(): Promise<Target> {
  const t = await spawnTarget(fixturePath('waiters'));
  for (let i = 0; i < 200; i++) {
    const states = [...threadStates(t.pid).values()];
    if (states.length === WAITERS + 1 && states.every((s) => s === 'S')) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  return t;
}

/** The fixture's counts: "eintr 0 early 0 rounds N" when nothing was disturbed. */
export async function disturbances(t: Target): Promise<string> {
  return (await t.request('stats')).replace(/ rounds \d+/, '');
}

