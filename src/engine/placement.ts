/**
 * Part of step 2, the plan: where a patch goes in the process and what it becomes there. A new
 * patch is placed within rel32 reach of its object (or, on request, deliberately out of it) and
 * linked for that base, every function's change planned against the linked code, and the record
 * written after the image; or an earlier mapping of exactly the same bytes is pointed at again.
 * Pure: the maps and the earlier mappings come from the snapshot.
 */
import path from 'node:path';
import type { ElfFile } from '../elf/index.js';
import { HpError } from '../errors.js';
import { linkPatch, type LinkedPatch, type PatchLayout } from '../link/index.js';
import { findFreeRegionNear, type LoadedObject, type MapEntry } from '../proc/index.js';
import { PAGE_SIZE, USER_SPACE_END } from '../x64/index.js';
import type { Entry } from './entries.js';
import type { EarlierMapping } from './read.js';
import { encodeRecord, type PatchLabel, type PatchRecord, type SiteRecord } from './record.js';
import { planRedirect, type FunctionPlan } from './sites.js';
import type { FunctionSpec } from './types.js';

const REL32_REACH = 2 ** 31;
/** The largest record a patch mapping may carry (its sites and original bytes, as JSON). */
const RECORD_LIMIT = 16 << 20;
const pageUp = (n: number) => Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
/** Room to keep after the image for the record, before its exact size is known (re-planned if short). */
const recordEstimate = (functions: number) => pageUp(8192 + 1024 * functions);

export type Placement = 'near' | 'far';

/** Where a patch goes: near (a rel32 jump reaches it) or, on request, deliberately far. */
export function choosePatchBase(pid: number, maps: MapEntry[], obj: LoadedObject, size: number, placement: Placement): number {
  if (placement === 'near') {
    const base = findFreeRegionNear(maps, { start: obj.start, end: obj.end }, size);
    if (base === undefined) {
      throw new HpError('NO_ROOM_NEAR_OBJECT', `no free address range within ±2 GiB of ${obj.path} in process ${pid}; nothing was changed`);
    }
    return base;
  }
  const distance = (m: MapEntry) => Math.max(Math.abs(m.start - obj.end), Math.abs(m.end - obj.start));
  const anchor = maps.filter((m) => m.end <= USER_SPACE_END).sort((a, b) => distance(b) - distance(a))[0];
  const base = anchor && findFreeRegionNear(maps, { start: anchor.start, end: anchor.end }, size, { maxDistance: 2 ** 30 });
  if (base === undefined || (Math.abs(base - obj.end) < REL32_REACH && Math.abs(base + size - obj.start) < REL32_REACH)) {
    throw new HpError('NO_FAR_ROOM', `no free address range out of rel32 reach of ${obj.path} in process ${pid}; nothing was changed`);
  }
  return base;
}

/** What placing one patch needs to know. */
export interface PatchToPlace {
  pid: number;
  obj: LoadedObject;
  /** The entries of `functions`, in order. */
  entries: Entry[];
  functions: FunctionSpec[];
  /** Absolute path of the patch object. */
  patchPath: string;
  patch: ElfFile;
  layout: PatchLayout;
  bindings: Map<string, { address: number }>;
  label?: PatchLabel;
  appliedAt: string;
}

export interface PlacedPatch {
  base: number;
  linked: LinkedPatch;
  plans: FunctionPlan[];
  record: PatchRecord;
  /** The record as laid out after the image (page-sized). */
  trailer: Buffer;
}

/** Links the patch for `base` and plans every function's change into it, with the record. */
function linkAt(p: PatchToPlace, base: number): PlacedPatch {
  const linked = linkPatch(p.patch, base, (name) => p.bindings.get(name)?.address);
  const siteRecords: SiteRecord[] = [];
  const plans = p.functions.map((f, i) => {
    const replacement = f.replacement ?? f.name;
    const target = linked.symbolAddress(replacement);
    if (target === undefined) {
      throw new HpError('SYMBOL_NOT_FOUND', `the patch ${path.basename(p.patchPath)} does not define ${replacement}; nothing was changed`, { symbol: replacement });
    }
    const { plan, record } = planRedirect(p.obj, p.entries[i], replacement, target);
    siteRecords.push(record);
    return plan;
  });
  const record: PatchRecord = {
    patch: p.patchPath,
    patchBuildId: p.patch.buildId,
    label: p.label,
    object: p.obj.path,
    objectBuildId: p.obj.buildId,
    base,
    span: p.layout.span,
    appliedAt: p.appliedAt,
    sites: siteRecords,
  };
  return { base, linked, plans, record, trailer: encodeRecord(record) };
}

/**
 * Places a new patch in `maps`: the record's size is known only once the sites are planned for a
 * base; if the room first kept for it is too small (very long names), the patch is placed again
 * with the exact room.
 */
export function placeNew(p: PatchToPlace, maps: MapEntry[], placement: Placement): PlacedPatch {
  let reserve = recordEstimate(p.functions.length);
  for (;;) {
    const placed = linkAt(p, choosePatchBase(p.pid, maps, p.obj, p.layout.span + reserve, placement));
    if (placed.trailer.length <= reserve) return placed;
    if (placed.trailer.length > RECORD_LIMIT) throw new HpError('TOO_MANY_SITES', `the patch record (${placed.trailer.length} bytes) is larger than ${RECORD_LIMIT} bytes; nothing was changed`);
    reserve = placed.trailer.length;
  }
}

/** JSON with sorted keys and no `appliedAt`: two records (or labels) of the same content compare equal. */
function contentOf(v: unknown): string {
  const sorted = (x: unknown): unknown =>
    Array.isArray(x) ? x.map(sorted) : x && typeof x === 'object' ? Object.fromEntries(Object.entries(x).filter(([k]) => k !== 'appliedAt').sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, y]) => [k, sorted(y)])) : x;
  return JSON.stringify(sorted(v)) ?? 'undefined';
}

export function sameContent(a: unknown, b: unknown): boolean {
  return contentOf(a) === contentOf(b);
}

/**
 * An earlier mapping of this very patch (the read step found them) that can be pointed at again
 * instead of mapping another copy: its record lists the same sites and its bytes are exactly the
 * patch linked for its base — no thread is borrowed, and the process does not gather one mapping
 * per cycle. A patch whose writable data changed since is not the same bytes, and gets a fresh
 * mapping. Only for a near placement, which wants rel32 jumps: a mapping out of their reach is
 * not taken.
 */
export function reusable(p: PatchToPlace, earlier: EarlierMapping[]): { placed: PlacedPatch; mapping: EarlierMapping } | undefined {
  for (const m of earlier) {
    if (m.record.span !== p.layout.span || m.start + p.layout.span > m.end) continue;
    const placed = linkAt(p, m.start);
    if (m.start + p.layout.span + placed.trailer.length > m.end || !sameContent(placed.record, m.record)) continue;
    if (placed.plans.some((f) => f.report.kind === 'abs64')) continue;
    if (!m.image.equals(placed.linked.image)) continue;
    return { placed, mapping: m };
  }
  return undefined;
}
