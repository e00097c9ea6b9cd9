/**
 * What a function's entry holds now, read from the process (never from our own files): its
 * original bytes, a jump hp-agent wrote (at the entry, or through the padding of a hot-patchable
 * entry), a jump somebody else wrote, or anything else. Every entry of a change is read with one
 * system call.
 */
import { native } from '../native.js';
import { symbolAddress, type LoadedObject } from '../proc/index.js';
import {
  ENTRY_PROBE_SIZE,
  HOTPATCH_PADDING_SIZE,
  HOTPATCH_PROBE_SIZE,
  detectPatchableEntry,
  describeSiteAt,
  zeroStopStateOf,
  type JumpKind,
  type PatchableEntry,
} from '../x64/index.js';
import type { PatchLabel, SiteRecord } from './record.js';
import type { ProcessView } from './view.js';
import { hexBytes } from '../hex.js';

export interface FunctionState {
  function: string;
  object: string;
  functionAddress: number;
  /** original: the file's bytes; patched: a jump into an hp-agent patch; foreign: a jump elsewhere; modified: anything else. */
  state: 'original' | 'patched' | 'foreign' | 'modified';
  /**
   * How the jump is (or would be) made: 'padding' for a hot-patchable entry (a jump in the NOP
   * padding before it, reached by a 2-byte jump at the entry: switchable without stopping the
   * process), 'entry' for a jump written over the entry itself.
   */
  form: 'entry' | 'padding';
  jump?: { kind: JumpKind; target: number; siteAddress: number };
  mapping?: string;
  record?: SiteRecord & { patch: string; label?: PatchLabel };
}

export interface Entry {
  state: FunctionState;
  size: number;
  /** Entry bytes as the object file has them. */
  fileBytes: Buffer;
  /** Entry bytes in the target now. */
  memoryBytes: Buffer;
  /** The hot-patchable layout from the file (padding, entry NOP), when the object lists this entry. */
  hot?: PatchableEntry;
  /** Padding + entry bytes in the target now (HOTPATCH_PROBE_SIZE from the padding), with `hot`. */
  hotMemory?: Buffer;
  /** All `size` bytes of the function in the target now, when the caller asked for them. */
  body?: Buffer;
}

/**
 * Reads and decodes the entries of `names` in `obj`; of the names in `whole`, the whole body too
 * (the caller bounds their sizes: each is read from the process).
 */
export async function readEntries(view: ProcessView, obj: LoadedObject, names: string[], whole: ReadonlySet<string> = new Set()): Promise<Entry[]> {
  const table = await view.hotPatchTable(obj);
  const probes = names.map((name) => {
    const sym = symbolAddress(obj, name);
    const length = Math.max(0, Math.min(sym.size, ENTRY_PROBE_SIZE));
    const listed = table?.has(sym.address - HOTPATCH_PADDING_SIZE) ?? false;
    return { name, sym, length, listed, body: whole.has(name) };
  });
  // One read for all: the padding and entry of hot-patchable functions, the entry (or the whole
  // body, which starts with it) of the others.
  const ranges = probes.flatMap((p) => [
    { addr: p.sym.address, length: p.body ? p.sym.size : p.length },
    ...(p.listed ? [{ addr: p.sym.address - HOTPATCH_PADDING_SIZE, length: HOTPATCH_PROBE_SIZE }] : []),
  ]);
  const bytes = await native.readRanges(view.pid, ranges);
  let next = 0;
  const out: Entry[] = [];
  for (const p of probes) {
    const read = bytes[next++];
    const memoryBytes = read.subarray(0, p.length);
    const hotMemory = p.listed ? bytes[next++] : undefined;
    const fileBytes = p.length ? obj.elf.readVirtual(p.sym.address - obj.bias, p.length) : Buffer.alloc(0);
    let hot: PatchableEntry | undefined;
    if (hotMemory) {
      try {
        hot = detectPatchableEntry(p.sym.address, obj.elf.readVirtual(p.sym.address - obj.bias - HOTPATCH_PADDING_SIZE, HOTPATCH_PROBE_SIZE));
      } catch {
        hot = undefined; // the padding is not in the file: treat it as an ordinary entry
      }
      if (hot && p.sym.size < hot.siteAddress - p.sym.address + 2) hot = undefined;
    }
    const e = await decodeEntry(view, obj, p.name, p.sym.address, p.sym.size, fileBytes, memoryBytes, hot, hot ? hotMemory : undefined);
    out.push(p.body ? { ...e, body: read } : e);
  }
  return out;
}

async function decodeEntry(
  view: ProcessView,
  obj: LoadedObject,
  name: string,
  address: number,
  size: number,
  fileBytes: Buffer,
  memoryBytes: Buffer,
  hot: PatchableEntry | undefined,
  hotMemory: Buffer | undefined,
): Promise<Entry> {
  const base = { function: name, object: obj.path, functionAddress: address };
  const entry = (state: FunctionState): Entry => ({ state, size, fileBytes, memoryBytes, ...(hot ? { hot, hotMemory } : {}) });

  if (hot && hotMemory) {
    const now = zeroStopStateOf(hot, hotMemory);
    if (now.state === 'original' && memoryBytes.equals(fileBytes)) return entry({ ...base, form: 'padding', state: 'original' });
    if (now.state === 'switched') {
      const jump = { kind: 'rel32' as const, target: now.target, siteAddress: hot.paddingAddress };
      return entry({ ...base, form: 'padding', ...(await ours(view, jump, hotMemory.subarray(0, HOTPATCH_PADDING_SIZE))) });
    }
    // Anything else may still be a jump written over the entry (by hp-agent's stop-the-world
    // path, before it knew hot-patchable entries): decode it as an ordinary entry.
  }
  if (memoryBytes.equals(fileBytes)) return entry({ ...base, form: 'entry', state: 'original' });
  const now = describeSiteAt(address, memoryBytes);
  if (!now.jump) return entry({ ...base, form: 'entry', state: 'modified' });
  const siteAddress = address + (now.endbr64 ? 4 : 0);
  const jump = { kind: now.jump.kind, target: now.jump.target, siteAddress };
  const at = siteAddress - address;
  return entry({ ...base, form: 'entry', ...(await ours(view, jump, memoryBytes.subarray(at))) });
}

/** Whether a jump leads into one of our patch mappings AND its record describes exactly this site and these bytes. */
async function ours(
  view: ProcessView,
  jump: { kind: JumpKind; target: number; siteAddress: number },
  bytesAtSite: Buffer,
): Promise<Pick<FunctionState, 'state' | 'jump' | 'mapping' | 'record'>> {
  const mapping = view.patchMappingAt(jump.target);
  if (!mapping) return { state: 'foreign', jump };
  const record = await view.record(mapping);
  const site = record.sites.find((s) => s.siteAddress === jump.siteAddress);
  // A jump into our mapping that its record does not describe is not ours to undo.
  if (!site || site.jump !== hexBytes(bytesAtSite.subarray(0, site.jump.length / 2))) {
    return { state: 'foreign', jump, mapping: mapping[0].path };
  }
  return { state: 'patched', jump, mapping: mapping[0].path, record: { ...site, patch: record.patch, label: record.label } };
}
