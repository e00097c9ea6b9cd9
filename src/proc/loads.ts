/**
 * Pure computation over /proc/PID/maps lines: which file-backed mappings form one load of one
 * file, and a load's bias from its ELF program headers. No file and no process is read here.
 */
import { PT_LOAD, type ElfFile } from '../elf/index.js';
import { PAGE_SIZE } from '../x64/index.js';
import type { MapEntry } from './maps.js';

const pageDown = (n: number): number => Math.floor(n / PAGE_SIZE) * PAGE_SIZE;

/** One load of one file: the file-backed mappings of a dev+inode that belong together. */
export interface Instance {
  path: string;
  deleted: boolean;
  dev: string;
  inode: number;
  mappings: MapEntry[];
}

const fileBacked = (m: MapEntry): boolean => m.inode !== 0 && m.path !== '' && !m.path.startsWith('[');

/**
 * Groups file-backed mappings by dev+inode. Within one load, file offsets never decrease with the
 * address; a decrease starts another load of the same file (dlmopen, or a plain mmap of it).
 * With `wanted`, only files of which some mapping has a wanted path are grouped (a load's path
 * is that of its first mapping, so no other file can give a wanted load).
 */
export function groupInstances(maps: MapEntry[], wanted?: (path: string) => boolean): Instance[] {
  let keep: Set<number> | undefined;
  if (wanted) {
    keep = new Set();
    for (const m of maps) if (fileBacked(m) && wanted(m.path)) keep.add(m.inode);
    if (keep.size === 0) return [];
  }
  // By inode first: a number key, no string built per line; devices are told apart below.
  const byInode = new Map<number, MapEntry[]>();
  for (const m of maps) {
    if (!fileBacked(m) || (keep && !keep.has(m.inode))) continue;
    const list = byInode.get(m.inode);
    if (list) list.push(m);
    else byInode.set(m.inode, [m]);
  }
  const instances: Instance[] = [];
  for (const all of byInode.values()) {
    for (const list of byDevice(all)) {
      list.sort((a, b) => a.start - b.start);
      let current: MapEntry[] = [];
      for (const m of list) {
        if (current.length > 0 && m.offset < current[current.length - 1].offset) {
          instances.push(makeInstance(current));
          current = [];
        }
        current.push(m);
      }
      instances.push(makeInstance(current));
    }
  }
  return instances.sort((a, b) => a.mappings[0].start - b.mappings[0].start);
}

/** The mappings of one inode number split by device, in their order (almost always one device). */
function byDevice(list: MapEntry[]): MapEntry[][] {
  const dev = list[0].dev;
  if (list.every((m) => m.dev === dev)) return [list];
  const out = new Map<string, MapEntry[]>();
  for (const m of list) {
    const l = out.get(m.dev);
    if (l) l.push(m);
    else out.set(m.dev, [m]);
  }
  return [...out.values()];
}

function makeInstance(mappings: MapEntry[]): Instance {
  const first = mappings[0];
  return { path: first.path, deleted: mappings.some((m) => m.deleted), dev: first.dev, inode: first.inode, mappings };
}

/**
 * Load bias from the first mapping (file offset o at runtime address s): the PT_LOAD whose
 * page-aligned file range holds o gives bias = s - (pageDown(p_vaddr) + (o - pageDown(p_offset))).
 * When several segments share the page of o, the one that explains the most mappings of the load
 * wins (ties: lowest p_vaddr).
 */
export function computeLoadBias(elf: ElfFile, mappings: MapEntry[]): number | undefined {
  const loads = elf.programHeaders.filter((p) => p.type === PT_LOAD).sort((a, b) => a.vaddr - b.vaddr);
  const holds = (p: (typeof loads)[number], offset: number): boolean =>
    pageDown(p.offset) <= offset && offset < p.offset + p.filesz;
  const first = mappings[0];
  let best: { bias: number; score: number } | undefined;
  for (const p of loads) {
    if (!holds(p, first.offset)) continue;
    const bias = first.start - (pageDown(p.vaddr) + (first.offset - pageDown(p.offset)));
    const score = mappings.filter((m) =>
      loads.some((q) => holds(q, m.offset) && m.start - bias - pageDown(q.vaddr) === m.offset - pageDown(q.offset)),
    ).length;
    if (!best || score > best.score) best = { bias, score };
  }
  return best?.bias;
}
