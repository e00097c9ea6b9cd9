/**
 * System calls run inside a target process, each in one briefly hijacked thread (see the native
 * core). The target's own libc is never called, so a thread holding malloc's or the loader's
 * lock cannot deadlock us.
 */
import os from 'node:os';
import { HpError } from '../errors.js';
import { native, type RemoteArg, type RemoteBatchResult, type RemoteFill } from '../native.js';
import { readMaps, type MapEntry } from '../proc/index.js';
import { SYS, SYSCALL_INSN } from '../x64/syscalls.js';

const gadgets = new Map<number, { start: number; addr: number }>();
/** Where a gadget was found inside a given file's mapping: the same in every process mapping it. */
const gadgetOffsets = new Map<string, number>();
/**
 * A long-lived user of the engine meets ever new PIDs (and files): the caches keep the most
 * recent entries only. A stale entry costs nothing but a search: the core checks the two bytes.
 */
const GADGET_CACHE_LIMIT = 4096;

/** Sets `key` as the most recent entry of `cache`, dropping the least recent beyond `limit`. */
export function remember<K, V>(cache: Map<K, V>, key: K, value: V, limit = GADGET_CACHE_LIMIT): void {
  cache.delete(key); // re-inserted last: the Map's order is the order of use
  cache.set(key, value);
  while (cache.size > limit) cache.delete(cache.keys().next().value as K);
}

const mappingKey = (m: MapEntry) => `${m.path}:${m.inode}:${m.offset}:${m.end - m.start}`;

interface Gadget {
  addr: number;
  /** Taken from another process of the same program, not read here: the core checks it. */
  remembered: boolean;
}

/**
 * The address of a `syscall` instruction in the target's executable memory. Any occurrence of
 * the two bytes will do: the CPU decodes from wherever we point it. The offset found in one
 * process is used directly in the next one that maps the same file (the native core checks the
 * two bytes before pointing a thread at them), since patching many processes of one program is
 * the common case. `skipRemembered` forces a search.
 */
async function findGadget(pid: number, known?: MapEntry[], skipRemembered = false): Promise<Gadget> {
  const maps = known ?? readMaps(pid);
  const cached = gadgets.get(pid);
  if (!skipRemembered && cached && maps.some((m) => m.exec && m.start <= cached.addr && cached.addr + 2 <= m.end)) return { addr: cached.addr, remembered: true };
  // vdso first (small, always there), then the C library, then anything executable.
  const candidates = maps
    .filter((m) => m.exec && m.read)
    .sort((a, b) => rank(a.path) - rank(b.path));
  if (!skipRemembered) {
    for (const m of candidates) {
      const offset = gadgetOffsets.get(mappingKey(m));
      if (offset !== undefined && offset + 2 <= m.end - m.start) return { addr: m.start + offset, remembered: true };
    }
  }
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
      remember(gadgets, pid, { start: m.start, addr: m.start + at });
      remember(gadgetOffsets, mappingKey(m), at);
      return { addr: m.start + at, remembered: false };
    }
  }
  throw new HpError('NO_SYSCALL_GADGET', `process ${pid} has no executable "syscall" instruction hp-agent could borrow; nothing was changed`);
}

function rank(path: string): number {
  if (path === '[vdso]') return 0;
  if (/\/libc[.-]/.test(path)) return 1;
  return 2;
}

export interface RemoteCall {
  name: keyof typeof SYS;
  args: RemoteArg[];
}

function errnoName(errno: number): string {
  return Object.entries(os.constants.errno).find(([, v]) => v === errno)?.[0] ?? `errno ${errno}`;
}

export class RemoteProcess {
  /** `maps`: the process's maps as the caller just read them, if it did. */
  constructor(
    readonly pid: number,
    private readonly maps?: MapEntry[],
  ) {}

  /**
   * Runs the calls in order in one hijacked thread (the core borrows one asleep in a system call
   * if there is one, so the threads doing the program's work are not disturbed), with `fill`
   * written from our side in between. Returns every result; if a call or the fill fails, the
   * batch stops there and an HpError says which, with the results so far in `details.results`
   * (so the caller can undo what succeeded).
   */
  async batch(calls: RemoteCall[], fill?: RemoteFill): Promise<number[]> {
    const ran = await this.withGadget((gadget) => native.remoteSyscalls(this.pid, nativeCalls(calls), { gadget, fill }));
    return this.results(calls, ran);
  }

  /**
   * Runs `run` with the address of a `syscall` instruction of the target. A remembered gadget
   * that is not one here (another build of the file?) is searched for in this process, once.
   */
  async withGadget<T>(run: (gadget: number) => Promise<T>): Promise<T> {
    const gadget = await findGadget(this.pid, this.maps);
    try {
      return await run(gadget.addr);
    } catch (e) {
      if (!(gadget.remembered && e instanceof HpError && e.code === 'NO_SYSCALL_GADGET')) throw e;
      gadgets.delete(this.pid);
      return run((await findGadget(this.pid, this.maps, true)).addr);
    }
  }

  /**
   * The results of a batch that ran every call; else the HpError saying which call (or the fill)
   * failed, with the results of those that succeeded in `details.results` (for the caller to undo).
   */
  results(calls: RemoteCall[], ran: RemoteBatchResult): number[] {
    const { results } = ran;
    if (ran.fillError !== undefined) {
      throw new HpError('REMOTE_FILL_FAILED', `filling the file created inside process ${this.pid} failed: ${ran.fillError}`, { results });
    }
    const last = results[results.length - 1];
    if (results.length < calls.length || (last < 0 && last >= -4095)) {
      const failed = calls[results.length - 1];
      const text = failed ? `${failed.name}(${failed.args.map(describeArg).join(', ')})` : 'a remote call';
      throw new HpError('REMOTE_SYSCALL_FAILED', `${text} inside process ${this.pid} failed: ${errnoName(-last)}`, {
        syscall: failed?.name,
        errno: -last,
        results: results.slice(0, -1),
      });
    }
    return results;
  }

  async syscall(name: keyof typeof SYS, ...args: RemoteArg[]): Promise<number> {
    return (await this.batch([{ name, args }]))[0];
  }
}

/** The calls as the core takes them. */
export function nativeCalls(calls: RemoteCall[]): { nr: number; args: RemoteArg[] }[] {
  return calls.map((c) => ({ nr: SYS[c.name], args: c.args }));
}

function describeArg(a: RemoteArg): string {
  if (typeof a === 'object' && 'string' in a) return JSON.stringify(a.string.toString('utf8'));
  if (typeof a === 'object' && 'result' in a) return `<result ${a.result}>`;
  return String(a);
}
