/**
 * /proc/PID/maps: parsing, and finding free address space near a range (for trampolines that a
 * rel32 jump must reach).
 */
import { HpError } from '../errors.js';
import { PAGE_SIZE, REL32_MAX, USER_SPACE_END } from '../x64/index.js';
import { readProcText } from './procfs.js';

export interface MapEntry {
  start: number;
  /** Exclusive. */
  end: number;
  /** As printed, e.g. 'r-xp'. */
  perms: string;
  read: boolean;
  write: boolean;
  exec: boolean;
  /** 's' (MAP_SHARED) rather than 'p' (private). */
  shared: boolean;
  /** File offset of `start`. */
  offset: number;
  /** 'major:minor' in hex, as printed, e.g. 'fd:01'. */
  dev: string;
  inode: number;
  /** '' for anonymous memory; '[stack]', '[heap]', '[vdso]'...; a ' (deleted)' suffix is stripped into `deleted`. */
  path: string;
  deleted: boolean;
}

const DELETED_SUFFIX = ' (deleted)';
//            start        end            perms      offset         dev      inode   path
const LINE = /^([0-9a-f]+)-([0-9a-f]+)\s+([r-][w-][x-][ps])\s+([0-9a-f]+)\s+([0-9a-f]+:[0-9a-f]+)\s+(\d+)(?:\s+(.*))?$/i;

/**
 * Parses the text of /proc/PID/maps. Addresses above user space ([vsyscall] at
 * 0xffffffffff600000) are kept; they are exact as doubles but larger than 2^53.
 */
export function parseMaps(text: string): MapEntry[] {
  const entries: MapEntry[] = [];
  for (const raw of text.split('\n')) {
    if (raw.trim() === '') continue;
    const m = LINE.exec(raw);
    if (!m) {
      throw new HpError('MAPS_PARSE_ERROR', `cannot parse a /proc/PID/maps line: ${JSON.stringify(raw)}`, { line: raw });
    }
    let path = m[7] ?? '';
    let deleted = false;
    if (path.endsWith(DELETED_SUFFIX)) {
      path = path.slice(0, -DELETED_SUFFIX.length);
      deleted = true;
    }
    const perms = m[3];
    entries.push({
      start: parseInt(m[1], 16),
      end: parseInt(m[2], 16),
      perms,
      read: perms[0] === 'r',
      write: perms[1] === 'w',
      exec: perms[2] === 'x',
      shared: perms[3] === 's',
      offset: parseInt(m[4], 16),
      dev: m[5].toLowerCase(),
      inode: Number(m[6]),
      path,
      deleted,
    });
  }
  return entries;
}

export function readMaps(pid: number): MapEntry[] {
  return parseMaps(readProcText(pid, 'maps'));
}

/** Lowest address hp-agent will place anything at (the usual vm.mmap_min_addr). */
export const MIN_MAP_ADDRESS = 0x10000;
/** One past the highest byte a region may use: a guard page below the top of user space. */
export const MAX_MAP_END = USER_SPACE_END - PAGE_SIZE;
/**
 * Default reach: every byte of the region within this distance of every byte of `near`. One page
 * below the rel32 limit, so a jump of any length (counted from its end) at either side still reaches.
 */
export const DEFAULT_MAX_DISTANCE = REL32_MAX - PAGE_SIZE;
/** Room left below [stack] (which grows down) and above [heap] (which grows up), besides the guard page. */
export const STACK_GROWTH_RESERVE = 16 * 1024 * 1024;
export const HEAP_GROWTH_RESERVE = 16 * 1024 * 1024;

const pageDown = (n: number): number => Math.floor(n / PAGE_SIZE) * PAGE_SIZE;
const pageUp = (n: number): number => Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;

/**
 * A page-aligned address A of `size` free bytes such that every byte of [A, A+size) is within
 * maxDistance of every byte of near = [start, end): a rel32 jump from anywhere in `near` reaches
 * anywhere in the region and back. The region (rounded up to whole pages) overlaps no mapping and
 * keeps a guard page from its neighbours (more below [stack] and above [heap]), within
 * [MIN_MAP_ADDRESS, MAX_MAP_END). The closest such placement wins; undefined when there is none.
 *
 *      prev mapping | guard | ...free... [A, A+size) ...free... | guard | next mapping
 */
export function findFreeRegionNear(
  maps: MapEntry[],
  near: { start: number; end: number },
  size: number,
  opts: { maxDistance?: number } = {},
): number | undefined {
  const maxDistance = opts.maxDistance ?? DEFAULT_MAX_DISTANCE;
  if (!Number.isSafeInteger(size) || size <= 0) {
    throw new HpError('INVALID_ARGUMENT', `cannot look for a free region of ${String(size)} bytes: the size must be a positive integer`, { size });
  }
  if (!Number.isSafeInteger(near.start) || !Number.isSafeInteger(near.end) || near.start < 0 || near.end <= near.start) {
    throw new HpError('INVALID_ARGUMENT', `cannot look for a free region near [${near.start}, ${near.end}): not a non-empty address range`, { near });
  }
  if (!Number.isSafeInteger(maxDistance) || maxDistance < 0) {
    throw new HpError('INVALID_ARGUMENT', `cannot look for a free region within ${String(maxDistance)} bytes: not a non-negative integer`, { maxDistance });
  }
  const length = pageUp(size);
  // Distance constraints: near.end - 1 - A <= maxDistance and A + size - 1 - near.start <= maxDistance.
  const reachLo = near.end - 1 - maxDistance;
  const reachHi = near.start + maxDistance - size + 1;
  const cost = (a: number): number => Math.max(near.end - 1 - a, a + size - 1 - near.start);
  const ideal = (near.start + near.end - size) / 2;

  const sorted = maps.filter((m) => m.start < USER_SPACE_END).sort((a, b) => a.start - b.start);
  let best: number | undefined;
  let gapLo = MIN_MAP_ADDRESS;
  for (let i = 0; i <= sorted.length; i++) {
    const next = sorted[i];
    const gapHi = next ? next.start - PAGE_SIZE - (next.path === '[stack]' ? STACK_GROWTH_RESERVE : 0) : MAX_MAP_END;
    const lo = pageUp(Math.max(gapLo, reachLo, MIN_MAP_ADDRESS));
    const hi = pageDown(Math.min(gapHi - length, MAX_MAP_END - length, reachHi));
    if (lo <= hi) {
      for (const candidate of [pageDown(ideal), pageUp(ideal)]) {
        const a = Math.min(Math.max(candidate, lo), hi);
        if (best === undefined || cost(a) < cost(best) || (cost(a) === cost(best) && a < best)) best = a;
      }
    }
    if (next) gapLo = Math.max(gapLo, next.end + PAGE_SIZE + (next.path === '[heap]' ? HEAP_GROWTH_RESERVE : 0));
  }
  return best;
}
