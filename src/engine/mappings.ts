/**
 * How an hp-agent patch mapping looks in /proc/PID/maps: a memfd named after the patch, one or
 * more lines (one per protection), the record at its end. Pure: both the read and the plan
 * step find mappings by these rules.
 */
import type { MapEntry } from '../proc/index.js';

export const MEMFD_PREFIX = 'hp-agent:';

export function memfdName(patchName: string): string {
  return (MEMFD_PREFIX + patchName).slice(0, 240);
}

export function isPatchMapping(path: string): boolean {
  return path.startsWith('/memfd:' + MEMFD_PREFIX);
}

/** The hp-agent patch mapping (all its /proc/PID/maps lines) that contains `addr`, if any. */
export function patchMappingAt(maps: MapEntry[], addr: number): MapEntry[] | undefined {
  const hit = maps.find((m) => m.start <= addr && addr < m.end);
  if (!hit || !isPatchMapping(hit.path)) return undefined;
  return maps.filter((m) => m.inode === hit.inode && m.path === hit.path);
}

/** Where a patch mapping (all the areas of one memfd, as patchMappingAt returns them) starts and ends. */
export function mappingExtent(mapping: MapEntry[]): { start: number; end: number } {
  return { start: Math.min(...mapping.map((m) => m.start)), end: Math.max(...mapping.map((m) => m.end)) };
}
