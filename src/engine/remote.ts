/**
 * System calls run inside a target process, each in one briefly hijacked thread (see the native
 * core). The target's own libc is never called, so a thread holding malloc's or the loader's
 * lock cannot deadlock us.
 */
import os from 'node:os';
import { HpError } from '../errors.js';
import { native, type Gadgets, type RemoteArg, type RemoteBatchResult, type RemoteFill } from '../native.js';
import { readMaps, type MapEntry } from '../proc/index.js';
import { SIGRETURN_TRAMPOLINE, SYS, SYSCALL_RET } from '../x64/syscalls.js';

const gadgetsByPid = new Map<number, Gadgets>();
/** Where each gadget was found inside a given file's mapping: the same in every process mapping it. */
const gadgetOffsets = new Map<string, number>();
/**
 * A long-lived user of the engine meets ever new PIDs (and files): the caches keep the most
 * recent entries only. A stale entry costs nothing but a search: the core checks the bytes.
 */
const GADGET_CACHE_LIMIT = 4096;

/** Sets `key` as the most recent entry of `cache`, dropping the least recent beyond `limit`. */
export function remember<K, V>(cache: Map<K, V>, key: K, value: V, limit = GADGET_CACHE_LIMIT): void {
  cache.delete(key); // re-inserted last: the Map's order is the order of use
  cache.set(key, value);
  while (cache.size > limit) cache.delete(cache.keys().next().value as K);
}

const mappingKey = (m: MapEntry, kind: GadgetKind) => `${kind}:${m.path}:${m.inode}:${m.offset}:${m.end - m.start}`;

type GadgetKind = keyof Gadgets;
const GADGET_BYTES: Record<GadgetKind, Buffer> = { syscallRet: SYSCALL_RET, sigreturn: SIGRETURN_TRAMPOLINE };

interface FoundGadgets {
  gadgets: Gadgets;
  /** Taken from another process of the same program, not read here: the core checks them. */
  remembered: boolean;
}

/**
 * The addresses of the two instructions a remote call runs through (see Gadgets), in the
 * target's executable memory. Any occurrence of the bytes will do: the CPU decodes from wherever
 * we point it. The offsets found in one process are used directly in the next one that maps the
 * same file (the native core checks the bytes before pointing a thread at them), since patching
 * many processes of one program is the common case. `skipRemembered` forces a search.
 */
async function findGadgets(pid: number, known?: MapEntry[], skipRemembered = false): Promise<FoundGadgets> {
  const maps = known ?? readMaps(pid);
  const inExec = (addr: number, len: number) => maps.some((m) => m.exec && m.start <= addr && addr + len <= m.end);
  const cached = gadgetsByPid.get(pid);
  if (!skipRemembered && cached && inExec(cached.syscallRet, 3) && inExec(cached.sigreturn, 9)) return { gadgets: cached, remembered: true };
  // The C library first (it has both: every syscall wrapper, and __restore_rt), then anything executable.
  const candidates = maps.filter((m) => m.exec && m.read).sort((a, b) => rank(a.path) - rank(b.path));
  const found: Partial<Gadgets> = {};
  let remembered = false;
  if (!skipRemembered) {
    for (const kind of Object.keys(GADGET_BYTES) as GadgetKind[]) {
      for (const m of candidates) {
        const offset = gadgetOffsets.get(mappingKey(m, kind));
        if (offset === undefined || offset + GADGET_BYTES[kind].length > m.end - m.start) continue;
        found[kind] = m.start + offset;
        remembered = true;
        break;
      }
    }
  }
  for (const m of candidates) {
    const missing = (Object.keys(GADGET_BYTES) as GadgetKind[]).filter((k) => found[k] === undefined);
    if (missing.length === 0) break;
    const length = Math.min(m.end - m.start, 4 << 20);
    let bytes: Buffer;
    try {
      bytes = await native.readMemory(pid, m.start, length);
    } catch {
      continue;
    }
    for (const kind of missing) {
      const at = bytes.indexOf(GADGET_BYTES[kind]);
      if (at < 0) continue;
      found[kind] = m.start + at;
      remember(gadgetOffsets, mappingKey(m, kind), at);
    }
  }
  if (found.syscallRet === undefined || found.sigreturn === undefined) {
    const what = found.syscallRet === undefined ? '"syscall; ret"' : 'signal-return ("mov rax, 15; syscall")';
    throw new HpError('NO_SYSCALL_GADGET', `process ${pid} has no executable ${what} instruction hp-agent could borrow; nothing was changed`);
  }
  const gadgets = { syscallRet: found.syscallRet, sigreturn: found.sigreturn };
  remember(gadgetsByPid, pid, gadgets);
  return { gadgets, remembered };
}

/** The gadgets a remote call in `pid` would use (searched for, or remembered). */
export async function targetGadgets(pid: number): Promise<Gadgets> {
  return (await findGadgets(pid)).gadgets;
}

function rank(path: string): number {
  if (/\/libc[.-]/.test(path)) return 0;
  if (path === '[vdso]') return 2;
  return 1;
}

/** A thread stopped to run remote calls (a zero-stop change still borrows one to map a new patch). */
export interface BorrowedThread {
  tid: number;
  heldUs: number;
  /** It was asleep in a system call (restarted afterwards), not running the program's code. */
  interruptedSyscall: boolean;
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
    const ran = await this.withGadgets((gadgets) => native.remoteSyscalls(this.pid, nativeCalls(calls), { gadgets, fill }));
    this.borrowed.push({ tid: ran.tid, heldUs: Math.round((ran.heldNs ?? 0) / 1000), interruptedSyscall: ran.interruptedSyscall });
    return this.results(calls, ran);
  }

  /** Every thread a batch of this object borrowed: which, and for how long it was stopped. */
  readonly borrowed: BorrowedThread[] = [];

  /**
   * Runs `run` with the target's gadgets. Remembered ones that are not the right bytes here
   * (another build of the file?) are searched for in this process, once.
   */
  async withGadgets<T>(run: (gadgets: Gadgets) => Promise<T>): Promise<T> {
    const found = await findGadgets(this.pid, this.maps);
    try {
      return await run(found.gadgets);
    } catch (e) {
      if (!(found.remembered && e instanceof HpError && e.code === 'NO_SYSCALL_GADGET')) throw e;
      gadgetsByPid.delete(this.pid);
      return run((await findGadgets(this.pid, this.maps, true)).gadgets);
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
