/**
 * Step 1 of a change — read. readTarget is the only code that reads the process for a change:
 * its maps, the objects named, the entry bytes of every function (decoded into what they hold
 * now, with the records of the patches they jump into), the hot-patchable tables, what the
 * patched object's GOT binds for the patch's imports, and the earlier mappings of the same patch
 * that could be pointed at again. It returns a plain snapshot: the plan (plan.ts) is computed
 * from it alone, so planning is tested without a process. (The execute step reads only what
 * carrying out the plan needs: its own writes back, and the instructions a remote call borrows.)
 *
 * It refuses only what keeps it from reading safely: a namespace's init (unless allowed), an
 * object or function that is not there, a symbol that is not a function, a size that is not the
 * symbol's (it bounds what is read). Every other refusal is the plan's.
 */
import path from 'node:path';
import { notAFunction, type ElfFile } from '../elf/index.js';
import { HpError } from '../errors.js';
import { native } from '../native.js';
import { readElfFile } from '../elf/index.js';
import { isNamespaceInit, symbolAddress, type LoadedObject, type MapEntry } from '../proc/index.js';
import { readEntries, type Entry } from './entries.js';
import { isPatchMapping, mappingExtent } from './mappings.js';
import { alreadyThere, sameContent } from './plan.js';
import type { PatchRecord } from './record.js';
import { needsOtherObjects, readGot } from './resolve.js';
import type { ChangeOptions, FunctionSpec, ObjectChange } from './types.js';
import { ProcessView } from './view.js';

/** The patch object of one change, and what the process binds its imports to. */
export interface PatchFile {
  /** Absolute path. */
  path: string;
  elf: ElfFile;
  /** The names the patch imports. */
  imports: string[];
  /** What the patched object's GOT holds for those of them it imports too. */
  got: Map<string, number>;
  /** Every loaded object of the process: read only when some import is neither in the GOT nor the patched object's own. */
  loaded: LoadedObject[];
}

/** An earlier mapping of the same patch for the same object and package: re-used if its bytes are exactly the patch linked for its base. */
export interface EarlierMapping {
  start: number;
  end: number;
  /** The memfd's name ("hp-agent:…"). */
  name: string;
  record: PatchRecord;
  /** The first `record.span` bytes of the mapping: the image as it is now. */
  image: Buffer;
}

export interface ObjectSnapshot {
  change: ObjectChange;
  obj: LoadedObject;
  /** The entries of change.functions, in order. */
  functions: Entry[];
  /** The entries of change.restore not in change.functions. */
  restore: Entry[];
  /** Absent when there is nothing to patch (or nothing needs changing: see readTarget). */
  patch?: PatchFile;
  earlier: EarlierMapping[];
}

export interface Snapshot {
  pid: number;
  /** /proc/PID/maps. */
  maps: MapEntry[];
  /** When it was read (ISO 8601): what a new patch record says as its appliedAt. */
  readAt: string;
  objects: ObjectSnapshot[];
}

export type ReadOptions = Pick<ChangeOptions, 'maps' | 'objects' | 'allowInit' | 'label'>;

/** The names each parsed patch imports (readElfFile hands out one object per version of the file). */
const importedNames = new WeakMap<ElfFile, string[]>();

function imports(patch: ElfFile): string[] {
  let names = importedNames.get(patch);
  if (!names) {
    names = [...new Set(patch.dynamicSymbols.filter((s) => !s.defined && s.name).map((s) => s.name))];
    importedNames.set(patch, names);
  }
  return names;
}

/**
 * Reads what a change of process `pid` needs. When every function already runs the labelled
 * package's code (the plan will change nothing), the patches are not read.
 */
export async function readTarget(pid: number, changes: ObjectChange[], opts: ReadOptions = {}): Promise<Snapshot> {
  if (!opts.allowInit) refuseNamespaceInit(pid);
  // A process that cannot be traced (gone, a zombie, our child, traced by another tool) is
  // refused by the core before its first ptrace request; reading it first does no harm.
  const view = new ProcessView(pid, { maps: opts.maps, objects: opts.objects });
  const readAt = new Date().toISOString();
  const objects: ObjectSnapshot[] = [];
  for (const change of changes) objects.push({ ...(await readObjectEntries(view, change)), earlier: [] });
  if (alreadyThere(objects, opts.label)) return { pid, maps: [...view.maps], readAt, objects };
  for (const o of objects) {
    if (o.change.functions.length === 0 || !o.change.patchPath) continue;
    o.patch = await readPatchFile(view, o.obj, o.change.patchPath);
    o.earlier = await readEarlierMappings(view, o, opts);
  }
  return { pid, maps: [...view.maps], readAt, objects };
}

/**
 * The machine's init and a container's init (pid 1 of its PID namespace, as NSpid tells) are
 * refused unless asked for: if one of them dies of a bad patch, the kernel kills every process
 * of its namespace with it.
 */
function refuseNamespaceInit(pid: number): void {
  if (!isNamespaceInit(pid)) return;
  const where = pid === 1 ? 'the init of this machine (PID 1)' : `the init of a PID namespace (PID 1 inside it: a container's init, PID ${pid} here)`;
  throw new HpError('TARGET_IS_INIT', `process ${pid} is ${where}: if it died of a patch, every process of its namespace would die with it. Nothing was changed; to patch it anyway, ask explicitly (hp-agent try --allow-init)`, { pid });
}

async function readObjectEntries(view: ProcessView, change: ObjectChange): Promise<Omit<ObjectSnapshot, 'earlier'>> {
  const obj = view.object(change.object);
  for (const f of change.functions) checkFunctionSymbol(view.pid, obj, f);
  const restoreNames = (change.restore ?? []).filter((name) => !change.functions.some((f) => f.name === name));
  // The functions whose original bytes are to be checked are read whole, in the same read.
  const whole = new Set(change.functions.filter((f) => f.original).map((f) => f.name));
  const all = await readEntries(view, obj, [...change.functions.map((f) => f.name), ...restoreNames], whole);
  return { change, obj, functions: all.slice(0, change.functions.length), restore: all.slice(change.functions.length) };
}

/**
 * Only a function may be redirected: a jump written over a variable corrupts it, and an indirect
 * function's symbol is its resolver, which nothing calls after load. A size given for its
 * original bytes must be the symbol's (and so bounds what is read of it).
 */
function checkFunctionSymbol(pid: number, obj: LoadedObject, f: FunctionSpec): void {
  const sym = symbolAddress(obj, f.name);
  const refusal = notAFunction(f.name, sym.type, obj.path);
  if (refusal) throw new HpError(refusal.code, `${refusal.message}. Nothing was changed`, { ...refusal.details, pid });
  if (f.original && f.original.size !== sym.size) {
    throw new HpError('FUNCTION_SIZE_MISMATCH', `${f.name} is ${sym.size} bytes long in ${obj.path} (process ${pid}), but the patch was built for a ${f.original.size}-byte original; nothing was changed`, { function: f.name, expected: f.original.size, actual: sym.size, pid });
  }
}

async function readPatchFile(view: ProcessView, obj: LoadedObject, patchPath: string): Promise<PatchFile> {
  const elf = readElfFile(patchPath);
  const names = imports(elf);
  const got = await readGot(view.pid, obj, names);
  return { path: path.resolve(patchPath), elf, imports: names, got, loaded: needsOtherObjects(obj, got, names) ? view.loaded() : [] };
}

/**
 * The mappings of this very patch for this object and package still in the process (a level
 * applied, taken back and applied again: mappings are never unmapped, as a thread may still run
 * their code), with their records and their images as they are now.
 */
async function readEarlierMappings(view: ProcessView, o: ObjectSnapshot, opts: ReadOptions): Promise<EarlierMapping[]> {
  const patch = o.patch!;
  if (patch.elf.buildId === undefined) return []; // no identity to go by
  const out: EarlierMapping[] = [];
  const seen = new Set<string>();
  for (const line of view.maps) {
    if (!isPatchMapping(line.path) || seen.has(`${line.inode}:${line.path}`)) continue;
    seen.add(`${line.inode}:${line.path}`);
    const mapping = view.patchMappingAt(line.start);
    if (!mapping) continue;
    const { start, end } = mappingExtent(mapping);
    let record: PatchRecord;
    try {
      record = await view.record(mapping);
    } catch {
      continue; // not ours to judge
    }
    if (record.patchBuildId !== patch.elf.buildId || record.patch !== patch.path || record.object !== o.obj.path || record.objectBuildId !== o.obj.buildId || record.base !== start) continue;
    if (!sameContent(record.label, opts.label)) continue; // another package's
    if (!(record.span > 0 && record.span <= end - start)) continue;
    const image = await native.readMemory(view.pid, start, record.span);
    out.push({ start, end, name: mapping[0].path.slice('/memfd:'.length), record, image });
  }
  return out;
}
