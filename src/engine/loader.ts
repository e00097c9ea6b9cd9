/**
 * Puts a linked patch image into a target: a memfd created *inside* the target (so the mapping
 * is named after the patch in /proc/PID/maps), filled by the agent through /proc/PID/fd/N, and
 * mapped by remote mmap at the exact base the image was relocated for. All of this happens
 * while the target keeps running; nothing in it points at the new code yet.
 */
import fs from 'node:fs';
import { HpError } from '../errors.js';
import { native } from '../native.js';
import {
  MAP_ANONYMOUS,
  MAP_FIXED_NOREPLACE,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_CLOEXEC,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
} from '../x64/syscalls.js';
import { RemoteProcess } from './remote.js';

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
 * process `pid`. On any failure everything created inside the target is removed again.
 */
export async function mapPatchImage(
  pid: number,
  base: number,
  image: Buffer,
  segments: ImageSegment[],
  trailer: Buffer,
  patchName: string,
): Promise<MappedPatch> {
  if (image.length % PAGE_SIZE || trailer.length % PAGE_SIZE) {
    throw new HpError('BAD_IMAGE', 'patch image and record must be page-sized');
  }
  const remote = new RemoteProcess(pid);
  const name = memfdName(patchName);
  const size = image.length + trailer.length;
  const undo: (() => Promise<unknown>)[] = [];
  try {
    // The memfd's name has to be in the target's memory: a scratch page holds it.
    const scratch = await remote.syscall('mmap', 0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    undo.push(() => remote.syscall('munmap', scratch, PAGE_SIZE));
    await native.writeMemory(pid, scratch, Buffer.from(name + '\0', 'utf8'));
    const fd = await remote.syscall('memfd_create', scratch, MFD_CLOEXEC);
    undo.push(() => remote.syscall('close', fd));

    // Fill the file from our side: one write, no ptrace.
    const ours = fs.openSync(`/proc/${pid}/fd/${fd}`, 'r+');
    try {
      fs.ftruncateSync(ours, size);
      fs.writeSync(ours, image, 0, image.length, 0);
      fs.writeSync(ours, trailer, 0, trailer.length, image.length);
    } finally {
      fs.closeSync(ours);
    }

    const at = await remote.syscall('mmap', base, size, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    if (at !== base) {
      await remote.syscall('munmap', at, size);
      throw new HpError('MAP_FAILED', `the kernel placed the patch at 0x${at.toString(16)} instead of 0x${base.toString(16)}`);
    }
    undo.push(() => remote.syscall('munmap', base, size));
    for (const seg of segments) {
      if (seg.prot !== PROT_READ) await remote.syscall('mprotect', base + seg.offset, seg.size, seg.prot);
    }
    // The mapping keeps the file alive; the target does not need the descriptor.
    await remote.syscall('close', fd);
    undo.splice(1, 1);
    await remote.syscall('munmap', scratch, PAGE_SIZE);
    undo.splice(0, 1);
    return { base, size, name };
  } catch (e) {
    await undoAll(undo);
    throw e;
  }
}

/** Removes a patch mapping that no site points into (used when a transaction is refused). */
export async function unmapPatch(pid: number, mapped: MappedPatch): Promise<void> {
  await new RemoteProcess(pid).syscall('munmap', mapped.base, mapped.size);
}

async function undoAll(undo: (() => Promise<unknown>)[]): Promise<void> {
  for (const step of undo.reverse()) {
    try {
      await step();
    } catch {
      // The process may be gone; there is nothing left to clean then.
    }
  }
}
