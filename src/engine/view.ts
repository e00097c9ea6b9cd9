/**
 * The read step's view of one process (read.ts): /proc/PID/maps read once, each object, record
 * and hot-patch table looked up once. Patching a thousand processes is mostly reading /proc, so
 * nothing is read twice within a change.
 */
import { HpError } from '../errors.js';
import { native } from '../native.js';
import { findObject, loadedObjects, processExists, readMaps, type LoadedObject, type MapEntry } from '../proc/index.js';
import { HOTPATCH_ENTRY_TABLE } from '../x64/index.js';
import { mappingExtent, patchMappingAt } from './mappings.js';
import { decodeRecord, recordLength, RECORD_TRAILER_SIZE, type PatchRecord } from './record.js';
import { hexAddr } from '../hex.js';

export class ProcessView {
  readonly maps: MapEntry[];
  #objects = new Map<string, LoadedObject>();
  #loaded?: LoadedObject[];
  #records = new Map<string, Promise<PatchRecord>>();
  #tables = new Map<LoadedObject, Promise<Set<number> | undefined>>();

  /**
   * `known`: the process's maps as the caller read them a moment ago, and objects it loaded from
   * them, if it did (the agent's search for processes does both).
   */
  constructor(
    readonly pid: number,
    known: { maps?: MapEntry[]; objects?: LoadedObject[] } = {},
  ) {
    this.maps = known.maps ? [...known.maps] : readMaps(pid);
    // Only objects read from these very maps can stand for a look-up in them.
    if (known.maps) {
      for (const o of known.objects ?? []) {
        if (known.objects!.filter((other) => other.path === o.path).length === 1) this.#objects.set(o.path, o);
      }
    }
  }

  /** The loaded object `name` names (default the main executable), found once per change. */
  object(name?: string): LoadedObject {
    const key = name ?? '';
    let obj = this.#objects.get(key);
    if (!obj) {
      obj = findObject(this.pid, name, this.maps);
      this.#objects.set(key, obj);
    }
    return obj;
  }

  /** Every loaded ELF object; only read when a patch needs a symbol from another library. */
  loaded(): LoadedObject[] {
    this.#loaded ??= loadedObjects(this.pid, this.maps);
    return this.#loaded;
  }

  /** The hp-agent patch mapping (all its /proc/PID/maps lines) that contains `addr`, if any. */
  patchMappingAt(addr: number): MapEntry[] | undefined {
    return patchMappingAt(this.maps, addr);
  }

  /** The record at the end of a patch mapping, read from the process once per change. */
  record(mapping: MapEntry[]): Promise<PatchRecord> {
    const key = `${mapping[0].inode}:${mapping[0].start}`;
    let r = this.#records.get(key);
    if (!r) {
      r = readRecord(this.pid, mapping);
      this.#records.set(key, r);
    }
    return r;
  }

  /**
   * The entries the object lists as hot-patchable (the padding address of each), relocated, read
   * from the process itself; undefined when it was not built with -fpatchable-function-entry.
   */
  hotPatchTable(obj: LoadedObject): Promise<Set<number> | undefined> {
    let t = this.#tables.get(obj);
    if (!t) {
      t = readEntryTable(this.pid, obj);
      this.#tables.set(obj, t);
    }
    return t;
  }
}

async function readRecord(pid: number, mapping: MapEntry[]): Promise<PatchRecord> {
  const { end } = mappingExtent(mapping);
  const length = recordLength(await native.readMemory(pid, end - RECORD_TRAILER_SIZE, RECORD_TRAILER_SIZE));
  if (length === undefined) throw new HpError('RECORD_CORRUPT', `the patch mapping ending at ${hexAddr(end)} in process ${pid} has no hp-agent record`);
  return decodeRecord(await native.readMemory(pid, end - RECORD_TRAILER_SIZE - length, length));
}

async function readEntryTable(pid: number, obj: LoadedObject): Promise<Set<number> | undefined> {
  const sec = obj.elf.section(HOTPATCH_ENTRY_TABLE);
  if (!sec || sec.size < 8 || sec.addr === 0) return undefined;
  const bytes = await native.readMemory(pid, obj.bias + sec.addr, sec.size - (sec.size % 8));
  const out = new Set<number>();
  for (let i = 0; i < bytes.length; i += 8) out.add(Number(bytes.readBigUInt64LE(i)));
  return out;
}

/**
 * A process that dies while we read it makes /proc or the core fail in whatever way the
 * moment dictates; say plainly what happened instead.
 */
export async function whileAlive<T>(pid: number, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (!(e instanceof HpError) && !processExists(pid)) {
      throw new HpError('PROCESS_EXITED', `process ${pid} exited while hp-agent was working on it`);
    }
    throw e;
  }
}
