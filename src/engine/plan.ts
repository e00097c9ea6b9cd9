/**
 * Step 2 of a change — plan. plan() is pure: from the snapshot the read step took (read.ts) and
 * the change asked for, it decides everything the execute step (execute.ts) carries out — where
 * each new patch goes and how it is linked (placement.ts), the bytes of every site (sites.ts),
 * the mode, the record each mapping carries, and which earlier mapping is pointed at again. It
 * makes every refusal the read step does not, before anything is written, and is unit-tested on
 * synthetic snapshots without a process.
 */
import path from 'node:path';
import { notAFunction } from '../elf/index.js';
import { HpError } from '../errors.js';
import { layoutPatch } from '../link/index.js';
import type { LoadedObject, MapEntry } from '../proc/index.js';
import type { ZeroStopStep } from '../x64/index.js';
import type { Entry } from './entries.js';
import { mappingExtent, memfdName, patchMappingAt } from './mappings.js';
import { PATCH_MODES, type Consistency, type PatchMode } from './modes.js';
import { placeNew, reusable, type PatchToPlace } from './placement.js';
import type { ObjectSnapshot, Snapshot } from './read.js';
import type { PatchLabel } from './record.js';
import { bindSymbols } from './resolve.js';
import { checkOriginalBytes, planRestore, refuseState, type FunctionPlan } from './sites.js';
import type { ChangeOptions, ObjectChange } from './types.js';

export { sameContent } from './placement.js';

/** What the plan takes from the change besides the snapshot. */
export type PlanOptions = Pick<ChangeOptions, 'label' | 'replace' | 'requirePatched' | 'mode' | 'consistency' | 'placement' | 'timeoutMs' | 'realtime' | 'stepDelayMs'>;

/** A patch the change maps (or points at again). */
export interface PlannedPatch {
  obj: LoadedObject;
  /** Absolute path. */
  patchPath: string;
  patchBuildId?: string;
  base: number;
  image: Buffer;
  segments: { offset: number; size: number; prot: number }[];
  /** The record, laid out to follow the image. */
  trailer: Buffer;
  bindings: { name: string; address: number; from: string }[];
  /** The patch's name: the loader names its memfd after it. */
  name: string;
  /** The memfd's name, as /proc/PID/maps shows it ("hp-agent:…"). */
  mapping: string;
  /** The mapping's size (image and record). */
  size: number;
  /** An earlier mapping of the very same bytes is pointed at again: nothing to map. */
  reused?: true;
}

export interface Plan {
  pid: number;
  /** Undefined when every function already is as asked: nothing to map, stop or write. */
  mode?: 'stop' | 'zero-stop';
  objects: LoadedObject[];
  patches: PlannedPatch[];
  functions: FunctionPlan[];
  /** Zero-stop: the writes in rounds (round k holds the k-th write of every function). */
  rounds: ZeroStopStep[][];
  /** Stop: what the transaction checks while every thread is stopped. */
  transaction: {
    timeoutMs?: number;
    realtime: boolean;
    /** Where thread stacks can be: every writable private mapping ([start, end, ...]). */
    stackAreas: number[];
    /** Function consistency: the code the change replaces ([start, end, ...]), which no thread may run or return into. */
    activeRanges?: number[];
  };
  /** Zero-stop: the pause between two rounds of writes. */
  stepDelayMs?: number;
  /** The maps the plan was made from (the remote calls look for their gadgets in them). */
  maps: MapEntry[];
}

/** Refuses a change that asks for nothing, or for an unknown mode, before anything is read. */
export function checkRequest(opts: Pick<ChangeOptions, 'changes' | 'mode'>): void {
  if (opts.changes.every((c) => c.functions.length === 0 && (c.restore ?? []).length === 0)) {
    throw new HpError('NO_FUNCTIONS', 'no function to change was given');
  }
  if (opts.mode !== undefined && !(PATCH_MODES as readonly string[]).includes(opts.mode)) {
    throw new HpError('USAGE', `unknown patch mode "${String(opts.mode)}": expected ${PATCH_MODES.join(', ')}`);
  }
}

/** True when every function already runs the labelled package's code and nothing needs restoring. */
export function alreadyThere(objects: { change: ObjectChange; functions: Entry[]; restore: Entry[] }[], label: PatchLabel | undefined): boolean {
  if (!label) return false;
  return objects.every(({ change, functions, restore }) =>
    functions.every((e, i) => e.state.state === 'patched' && e.state.record?.label?.packageId === label.packageId && (e.state.record.replacement ?? e.state.function) === (change.functions[i].replacement ?? change.functions[i].name)) &&
    restore.every((e) => e.state.state === 'original'),
  );
}

/** Plans the change of `snapshot.objects` (each the snapshot of one ObjectChange) to the state they ask for. */
export function plan(snapshot: Snapshot, opts: PlanOptions = {}): Plan {
  const consistency = opts.consistency ?? 'entry';
  const out: Plan = { pid: snapshot.pid, objects: [], patches: [], functions: [], rounds: [], transaction: { realtime: true, stackAreas: [] }, maps: snapshot.maps };
  if (alreadyThere(snapshot.objects, opts.label)) return { ...out, objects: snapshot.objects.map((o) => o.obj) };
  // What this change maps is added here, so a later object's patch is not placed over it.
  const maps = [...snapshot.maps];
  const replaced: number[] = [];
  for (const o of snapshot.objects) planObject(snapshot, o, opts, maps, out, replaced);
  if (out.functions.length === 0) return out;
  const mode = chooseMode(snapshot.pid, out.functions, opts.mode ?? 'auto', consistency);
  return {
    ...out,
    mode,
    rounds: mode === 'zero-stop' ? rounds(out.functions) : [],
    // Real-time priority by default: the tracer must not queue behind the target's busy threads.
    // Every stop checks that no stack returns into the bytes a jump overwrites; function
    // consistency also into the code being replaced.
    transaction: { timeoutMs: opts.timeoutMs, realtime: opts.realtime ?? true, stackAreas: stackAreas(snapshot.maps), ...(consistency === 'function' ? { activeRanges: replaced } : {}) },
    stepDelayMs: opts.stepDelayMs,
  };
}

function planObject(snapshot: Snapshot, o: ObjectSnapshot, opts: PlanOptions, maps: MapEntry[], out: Plan, replaced: number[]): void {
  const { pid } = snapshot;
  const { change, obj } = o;
  out.objects.push(obj);
  for (const [i, e] of o.functions.entries()) {
    refuseState(pid, e, opts.replace ?? false);
    const original = change.functions[i].original;
    if (original) checkOriginalBytes(pid, e, original);
  }
  for (const e of o.restore) {
    if (e.state.state === 'original') {
      if (opts.requirePatched) throw new HpError('NOT_PATCHED', `${e.state.function} in process ${pid} is not patched; nothing was changed`, { function: e.state.function });
      continue; // nothing to give back
    }
    if (opts.requirePatched && e.state.state !== 'patched') {
      throw new HpError('FOREIGN_CODE', `${e.state.function} in process ${pid} was changed by something other than hp-agent; refusing to touch it. Nothing was changed`, { function: e.state.function });
    }
    refuseState(pid, e, true);
    out.functions.push(planRestore(obj, e));
    replaced.push(...replacedCode(snapshot.maps, e));
  }
  if (change.functions.length === 0) return;
  if (!change.patchPath || !o.patch) throw new HpError('USAGE', `functions of ${obj.path} to patch but no patch object`);

  const { patch } = o;
  const layout = layoutPatch(patch.elf); // refuses TLS, constructors, bad layouts up front (once per file)
  for (const f of change.functions) {
    const replacement = f.replacement ?? f.name;
    const sym = patch.elf.findSymbol(replacement);
    const refusal = sym && notAFunction(replacement, sym.type, path.basename(change.patchPath), 'replacement');
    if (refusal) throw new HpError(refusal.code, `${refusal.message}. Nothing was changed`, refusal.details);
  }
  const bindings = bindSymbols(obj, patch.got, patch.loaded, patch.imports);
  const toPlace: PatchToPlace = { pid, obj, entries: o.functions, functions: change.functions, patchPath: patch.path, patch: patch.elf, layout, bindings, label: opts.label, appliedAt: snapshot.readAt };
  // ('far' asks for a mapping out of rel32 reach on purpose: always a new one.)
  const again = (opts.placement ?? 'near') === 'near' ? reusable(toPlace, o.earlier) : undefined;
  const placed = again?.placed ?? placeNew(toPlace, maps, opts.placement ?? 'near');
  const size = again ? again.mapping.end - again.mapping.start : placed.linked.image.length + placed.trailer.length;
  if (!again) reserve(maps, placed.base, placed.base + size);
  out.functions.push(...placed.plans);
  for (const e of o.functions) replaced.push(...replacedCode(snapshot.maps, e));
  const name = opts.label ? `${opts.label.packageId}:${path.basename(patch.path)}` : path.basename(patch.path);
  out.patches.push({
    obj,
    patchPath: patch.path,
    patchBuildId: patch.elf.buildId,
    base: placed.base,
    image: placed.linked.image,
    segments: layout.protections,
    trailer: placed.trailer,
    bindings: [...bindings.values()],
    name,
    mapping: again ? again.mapping.name : memfdName(name),
    size,
    ...(again ? { reused: true as const } : {}),
  });
}

/** Counts a mapping this change makes, so later placements in the same change avoid it. */
function reserve(maps: MapEntry[], start: number, end: number): void {
  maps.push({ start, end, perms: '---p', read: false, write: false, exec: false, shared: false, offset: 0, dev: '00:00', inode: 0, path: '', deleted: false });
  maps.sort((a, b) => a.start - b.start);
}

/** What stops running when `e` changes: its body in the object, and the patch mapping it jumps into now. */
function replacedCode(maps: MapEntry[], e: Entry): number[] {
  const out = [e.state.functionAddress, e.state.functionAddress + Math.max(e.size, 1)];
  const mapping = e.state.jump ? patchMappingAt(maps, e.state.jump.target) : undefined;
  if (mapping) {
    const { start, end } = mappingExtent(mapping);
    out.push(start, end);
  }
  return out;
}

/** Where thread stacks can be: every writable private mapping ([start, end, ...]). */
function stackAreas(maps: MapEntry[]): number[] {
  return maps.filter((m) => m.write && !m.shared && m.end <= Number.MAX_SAFE_INTEGER).flatMap((m) => [m.start, m.end]);
}

/** Which mode the change uses: refuses 'zero-stop' when a function needs a stop (or function consistency asks for one), naming why. */
function chooseMode(pid: number, functions: FunctionPlan[], requested: PatchMode, consistency: Consistency): 'stop' | 'zero-stop' {
  if (consistency === 'function') {
    if (requested === 'zero-stop') {
      throw new HpError('NOT_HOT_PATCHABLE', `cannot give function consistency without stopping process ${pid}: proving that no thread is inside an old function needs every thread stopped. Nothing was changed`);
    }
    return 'stop';
  }
  if (requested === 'stop') return 'stop';
  const blocked = functions.filter((f) => !f.steps);
  if (blocked.length === 0) return 'zero-stop';
  if (requested === 'auto') return 'stop';
  const why = blocked.map((f) => `${f.report.function} (${f.needsStop})`).join('; ');
  throw new HpError('NOT_HOT_PATCHABLE', `cannot change process ${pid} without stopping it: ${why}. Nothing was changed`, { functions: blocked.map((f) => f.report.function) });
}

/**
 * The zero-stop writes of all functions, in rounds: round k holds the k-th write of every
 * function. Writes to different entries need no pause between them, so a change of many
 * functions takes as many pauses as ONE function's switch, not one per function.
 */
function rounds(plans: FunctionPlan[]): ZeroStopStep[][] {
  const out: ZeroStopStep[][] = [];
  for (const p of plans) p.steps!.forEach((step, k) => (out[k] ??= []).push(step));
  return out;
}
