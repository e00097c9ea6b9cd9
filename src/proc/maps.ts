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

/*
 * A hand-written scanner rather than a regex: it runs on every line of every process the agent
 * looks at. It accepts exactly what this regex accepts, with the same fields:
 *   /^([0-9a-f]+)-([0-9a-f]+)\s+([r-][w-][x-][ps])\s+([0-9a-f]+)\s+([0-9a-f]+:[0-9a-f]+)\s+(\d+)(?:\s+(.*))?$/i
 * (start, end, perms, offset, dev, inode, path): \s is JavaScript's whitespace, and the path
 * may not hold a line terminator other than the '\n' that ends the line.
 */

/** JavaScript's \s (WhiteSpace and LineTerminator). */
function isSpace(c: number): boolean {
  if (c === 32 || (c >= 9 && c <= 13)) return true;
  if (c < 0xa0) return false;
  return c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

/** [0-9a-f] under /i (ASCII only), or -1. */
function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const l = c | 0x20;
  return l >= 97 && l <= 102 ? l - 87 : -1;
}

/** What `.` does not match, besides the '\n' that ends the line. */
const ODD_TERMINATORS = /[\r\u2028\u2029]/;
/** Whether `text` holds any of them (indexOf is much cheaper than the regex over a whole file). */
const hasOddTerminators = (text: string): boolean => text.indexOf('\r') >= 0 || text.indexOf('\u2028') >= 0 || text.indexOf('\u2029') >= 0;

/** The kernel pads the inode with spaces to this column before the path. */
const PATH_COLUMN = 73;
const PADDING = Array.from({ length: PATH_COLUMN }, (_, n) => ' '.repeat(n));

/** Perms strings by their bits (r=1, w=2, x=4, s=8), so a line does not allocate its own. */
const PERMS = Array.from({ length: 16 }, (_, b) => `${b & 1 ? 'r' : '-'}${b & 2 ? 'w' : '-'}${b & 4 ? 'x' : '-'}${b & 8 ? 's' : 'p'}`);

/** Where the scan of a line stopped; -1 when the line does not match. */
let pos = 0;

/** [0-9a-f]+ from `at` (to `to`), as parseInt gives it; sets `pos`, or to -1 when there is none. */
function hexAt(text: string, at: number, to: number): number {
  let i = at;
  let v = 0;
  for (; i < to; i++) {
    const d = hexDigit(text.charCodeAt(i));
    if (d < 0) break;
    v = v * 16 + d;
  }
  if (i === at) {
    pos = -1;
    return 0;
  }
  pos = i;
  // Up to 13 digits the sum is exact; beyond, round as parseInt does ([vsyscall] is above 2^53).
  return i - at <= 13 ? v : parseInt(text.slice(at, i), 16);
}

/** Past \s+ from `at`; -1 when there is no whitespace there. */
function spacesAt(text: string, at: number, to: number): number {
  let i = at;
  while (i < to && isSpace(text.charCodeAt(i))) i++;
  return i > at ? i : -1;
}

/** Bit `bit` if the character at `at` is `yes` (either case), 0 if it is '-' (or `no`), -1 otherwise. */
function permAt(text: string, at: number, yes: number, no: number, bit: number): number {
  const c = text.charCodeAt(at);
  if (c === no) return 0;
  return (c | 0x20) === yes ? bit : -1;
}

/** The line [from, to) of `text`; undefined when the regex above would not match it. */
function scanLine(text: string, from: number, to: number, oddTerminators: boolean, lastDev: string): MapEntry | undefined {
  const start = hexAt(text, from, to);
  if (pos < 0 || pos >= to || text.charCodeAt(pos) !== 45 /* - */) return undefined;
  const end = hexAt(text, pos + 1, to);
  if (pos < 0) return undefined;
  const p = spacesAt(text, pos, to);
  if (p < 0 || p + 4 > to) return undefined;
  const r = permAt(text, p, 114 /* r */, 45, 1);
  const w = permAt(text, p + 1, 119 /* w */, 45, 2);
  const x = permAt(text, p + 2, 120 /* x */, 45, 4);
  const s = permAt(text, p + 3, 115 /* s */, 112 /* p */, 8);
  if (r < 0 || w < 0 || x < 0 || s < 0) {
    // Upper-case 'P' is private too (the regex was case-insensitive).
    if (!(r >= 0 && w >= 0 && x >= 0 && text.charCodeAt(p + 3) === 80)) return undefined;
  }
  let perms = PERMS[(r | w | x | (s < 0 ? 0 : s)) & 15];
  if (text.charCodeAt(p) !== perms.charCodeAt(0) || text.charCodeAt(p + 1) !== perms.charCodeAt(1) || text.charCodeAt(p + 2) !== perms.charCodeAt(2) || text.charCodeAt(p + 3) !== perms.charCodeAt(3)) {
    perms = text.slice(p, p + 4); // upper case: kept as printed
  }
  let q = spacesAt(text, p + 4, to);
  if (q < 0) return undefined;
  const offset = hexAt(text, q, to);
  if (pos < 0) return undefined;
  q = spacesAt(text, pos, to);
  if (q < 0) return undefined;
  const devAt = q;
  hexAt(text, q, to);
  if (pos < 0 || pos >= to || text.charCodeAt(pos) !== 58 /* : */) return undefined;
  hexAt(text, pos + 1, to);
  if (pos < 0) return undefined;
  const devEnd = pos;
  // Most lines repeat a device of the line before: share its string.
  let dev = devEnd - devAt === lastDev.length && text.startsWith(lastDev, devAt) ? lastDev : text.slice(devAt, devEnd);
  q = spacesAt(text, devEnd, to);
  if (q < 0) return undefined;
  let i = q;
  let inode = 0;
  for (; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) break;
    inode = inode * 10 + (c - 48);
  }
  if (i === q) return undefined;
  if (i - q > 15) inode = Number(text.slice(q, i)); // beyond 2^53: round as Number() does
  let pathAt = to;
  if (i < to) {
    // The kernel's padding compared at once rather than a character at a time.
    const pad = from + PATH_COLUMN - i;
    let at: number;
    if (pad > 0 && pad < PATH_COLUMN && pad <= to - i && text.startsWith(PADDING[pad], i)) {
      const more = spacesAt(text, i + pad, to);
      at = more < 0 ? i + pad : more;
    } else {
      at = spacesAt(text, i, to);
    }
    if (at < 0) return undefined; // e.g. '123abc'
    if (oddTerminators && ODD_TERMINATORS.test(text.slice(at, to))) return undefined;
    pathAt = at;
  }
  // One slice, the ' (deleted)' suffix left out.
  const deleted = to - pathAt >= DELETED_SUFFIX.length && text.startsWith(DELETED_SUFFIX, to - DELETED_SUFFIX.length);
  const path = pathAt < to ? text.slice(pathAt, deleted ? to - DELETED_SUFFIX.length : to) : '';
  if (dev !== lastDev) dev = dev.toLowerCase();
  return {
    start,
    end,
    perms,
    read: perms[0] === 'r',
    write: perms[1] === 'w',
    exec: perms[2] === 'x',
    shared: perms[3] === 's',
    offset,
    dev,
    inode,
    path,
    deleted,
  };
}

/**
 * Parses the text of /proc/PID/maps. Addresses above user space ([vsyscall] at
 * 0xffffffffff600000) are kept; they are exact as doubles but larger than 2^53.
 */
export function parseMaps(text: string): MapEntry[] {
  const entries: MapEntry[] = [];
  const oddTerminators = hasOddTerminators(text);
  let lastDev = '';
  let from = 0;
  while (from <= text.length) {
    let to = text.indexOf('\n', from);
    if (to < 0) to = text.length;
    // Blank lines are skipped; a line starting with a hex digit is never blank.
    if (to > from && (hexDigit(text.charCodeAt(from)) >= 0 || text.slice(from, to).trim() !== '')) {
      const entry = scanLine(text, from, to, oddTerminators, lastDev);
      if (!entry) {
        const raw = text.slice(from, to);
        throw new HpError('MAPS_PARSE_ERROR', `cannot parse a /proc/PID/maps line: ${JSON.stringify(raw)}`, { line: raw });
      }
      entries.push(entry);
      lastDev = entry.dev;
    }
    from = to + 1;
  }
  return entries;
}

/**
 * The st_dev number (as stat() gives it) of a device printed 'major:minor' in hex, as in
 * /proc/PID/maps; undefined if it is not such a pair. Linux's encoding (new_encode_dev):
 * minor & 0xff | major << 8 | (minor & ~0xff) << 12, in arithmetic so nothing wraps at 32 bits.
 */
export function devNumber(dev: string): number | undefined {
  const colon = dev.indexOf(':');
  if (colon <= 0 || colon === dev.length - 1 || !/^[0-9a-f]+:[0-9a-f]+$/i.test(dev)) return undefined;
  const major = parseInt(dev.slice(0, colon), 16);
  const minor = parseInt(dev.slice(colon + 1), 16);
  if (major > 0xfff || minor > 0xfffff) return undefined;
  return (minor % 256) + major * 256 + Math.floor(minor / 256) * 2 ** 20;
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

function isSortedByStart(maps: MapEntry[]): boolean {
  for (let i = 1; i < maps.length; i++) if (maps[i - 1].start > maps[i].start) return false;
  return true;
}
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

  const sorted = maps.filter((m) => m.start < USER_SPACE_END);
  // The kernel lists mappings in order: sort only when they are not (the same result, sort is stable).
  if (!isSortedByStart(sorted)) sorted.sort((a, b) => a.start - b.start);
  let best: number | undefined;
  let gapLo = MIN_MAP_ADDRESS;
  for (let i = 0; i <= sorted.length; i++) {
    const next = sorted[i];
    const gapHi = next ? next.start - PAGE_SIZE - (next.path === '[stack]' ? STACK_GROWTH_RESERVE : 0) : MAX_MAP_END;
    const lo = pageUp(Math.max(gapLo, reachLo, MIN_MAP_ADDRESS));
    const hi = pageDown(Math.min(gapHi - length, MAX_MAP_END - length, reachHi));
    if (lo <= hi) {
      for (let k = 0; k < 2; k++) {
        const candidate = k === 0 ? pageDown(ideal) : pageUp(ideal);
        const a = Math.min(Math.max(candidate, lo), hi);
        if (best === undefined || cost(a) < cost(best) || (cost(a) === cost(best) && a < best)) best = a;
      }
    }
    if (next) gapLo = Math.max(gapLo, next.end + PAGE_SIZE + (next.path === '[heap]' ? HEAP_GROWTH_RESERVE : 0));
  }
  return best;
}
