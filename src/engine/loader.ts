/**
 * Puts a linked patch image into a target: a memfd created *inside* the target (so the mapping
 * is named after the patch in /proc/PID/maps), filled by the agent through /proc/PID/fd/N, and
 * mapped by remote mmap at the exact base the image was relocated for. All of this happens
 * while the target keeps running; nothing in it points at the new code yet.
 */
import fs from 'node:fs';
import { HpError } from '../errors.js';
import { readMaps, type MapEntry } from '../proc/index.js';
import { MAP_FIXED_NOREPLACE, MAP_SHARED, MFD_CLOEXEC, PAGE_SIZE, PROT_READ } from '../x64/syscalls.js';
import { RemoteProcess, type RemoteCall } from './remote.js';

export interface ImageSegment {
  offset: number;
  size: number;
  prot: number;
}

export interface MappedPatch {
  base: number;
  size: number;
  /** The memfd name; /proc/PID/maps shows it as "/memfd:NAME (deleted)". */
  name: string;
}

export const MEMFD_PREFIX = 'hp-agent:';

export function memfdName(patchName: string): string {
  return (MEMFD_PREFIX + patchName).slice(0, 240);
}

export function isPatchMapping(path: string): boolean {
  return path.startsWith('/memfd:' + MEMFD_PREFIX);
}

/**
 * Maps `image` (relocated for `base`) followed by `trailer` (the patch record, read-only) into
 * process `pid`, with ONE hijack of one thread: memfd_create, ftruncate, mmap at `base`, the
 * segments' mprotects and close run as a batch; the agent then fills the file through
 * /proc/PID/map_files. On any failure everything created inside the target is removed again.
 */
export async function mapPatchImage(
  pid: number,
  base: number,
  image: Buffer,
  segments: ImageSegment[],
  trailer: Buffer,
  patchName: string,
  /** The process's maps as the caller just read them (saves reading them again). */
  maps?: MapEntry[],
): Promise<MappedPatch> {
  if (image.length % PAGE_SIZE || trailer.length % PAGE_SIZE) {
    throw new HpError('BAD_IMAGE', 'patch image and record must be page-sized');
  }
  const remote = new RemoteProcess(pid, maps);
  const name = memfdName(patchName);
  const size = image.length + trailer.length;
  const fd = { result: 0 };
  const calls: RemoteCall[] = [
    { name: 'memfd_create', args: [{ string: Buffer.from(name, 'utf8') }, MFD_CLOEXEC] },
    { name: 'ftruncate', args: [fd, size] },
    // The content is written after mapping: MAP_SHARED shows it, and nothing points here yet.
    { name: 'mmap', args: [base, size, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0] },
    ...segments.filter((seg) => seg.prot !== PROT_READ).map((seg): RemoteCall => ({ name: 'mprotect', args: [base + seg.offset, seg.size, seg.prot] })),
    // The mapping keeps the file alive; the target does not need the descriptor.
    { name: 'close', args: [fd] },
  ];
  let results: number[];
  try {
    results = await remote.batch(calls);
  } catch (e) {
    const done = ((e as HpError).details?.results as number[] | undefined) ?? [];
    const undo: RemoteCall[] = [];
    if (done.length > 2 && done[2] >= 0) undo.push({ name: 'munmap', args: [done[2], size] });
    if (done.length > 0 && done[0] >= 0) undo.push({ name: 'close', args: [done[0]] });
    if (undo.length) await remote.batch(undo).catch(() => undefined);
    throw e;
  }
  const at = results[2];
  try {
    if (at !== base) {
      throw new HpError('MAP_FAILED', `the kernel placed the patch at 0x${at.toString(16)} instead of 0x${base.toString(16)}`);
    }
    writeThroughMapping(pid, base, firstAreaEnd(base, size, segments), image, trailer);
  } catch (e) {
    await remote.syscall('munmap', at, size).catch(() => undefined);
    throw e;
  }
  return { base, size, name };
}

/**
 * Where the first memory area of a fresh patch mapping ends: the mapping is made read-only and
 * the segments' mprotects split it wherever the protection changes, so /proc/PID/map_files names
 * its first area [base, that end) — no need to read /proc/PID/maps again to find it.
 */
export function firstAreaEnd(base: number, size: number, segments: ImageSegment[]): number {
  const protAt = (offset: number) => segments.find((s) => s.offset <= offset && offset < s.offset + s.size)?.prot ?? PROT_READ;
  const first = protAt(0);
  const edges = segments.flatMap((s) => [s.offset, s.offset + s.size]).filter((o) => o > 0 && o < size).sort((a, b) => a - b);
  for (const edge of edges) if (protAt(edge) !== first) return base + edge;
  return base + size;
}

/** Fills the memfd behind the mapping at `base` from our side: plain file writes, no ptrace. */
function writeThroughMapping(pid: number, base: number, firstEnd: number, image: Buffer, trailer: Buffer): void {
  let file: number;
  try {
    file = fs.openSync(`/proc/${pid}/map_files/${base.toString(16)}-${firstEnd.toString(16)}`, 'r+');
  } catch {
    // The kernel split or merged the areas differently than expected: ask it.
    const vma = readMaps(pid).find((m) => m.start === base);
    if (!vma) throw new HpError('MAP_FAILED', `the patch mapping at 0x${base.toString(16)} is not in /proc/${pid}/maps`);
    file = fs.openSync(`/proc/${pid}/map_files/${vma.start.toString(16)}-${vma.end.toString(16)}`, 'r+');
  }
  try {
    fs.writeSync(file, image, 0, image.length, 0);
    fs.writeSync(file, trailer, 0, trailer.length, image.length);
  } finally {
    fs.closeSync(file);
  }
}

/** Removes a patch mapping that no site points into (used when a transaction is refused). */
export async function unmapPatch(pid: number, mapped: MappedPatch): Promise<void> {
  await new RemoteProcess(pid).syscall('munmap', mapped.base, mapped.size);
}
