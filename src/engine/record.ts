/**
 * The patch record: a small trailer at the end of every patch mapping in a target that says
 * which sites the patch redirected and what bytes were there before. Status and revert read it
 * back from the process itself, so they never depend on the agent's own files.
 *
 *   ... JSON (UTF-8) ... | "HPREC001" (8) | JSON length (u32 LE) | reserved (u32) |  <- mapping end
 */
import { HpError } from '../errors.js';
import { PAGE_SIZE } from '../x64/syscalls.js';

export const RECORD_MAGIC = 'HPREC001';
export const RECORD_TRAILER_SIZE = 16;

export interface SiteRecord {
  function: string;
  replacement: string;
  functionAddress: number;
  siteAddress: number;
  kind: 'rel32' | 'abs64';
  target: number;
  /** Hex of the bytes the jump replaced. */
  original: string;
  /** Hex of the jump as written. */
  jump: string;
  /**
   * A hot-patchable entry patched through its padding: `siteAddress` is the padding (holding the
   * jump), and this is the 2-byte entry NOP that now jumps back to it.
   */
  zeroStop?: { siteAddress: number; entryNop: string; original: string; switched: string };
}

/** Which package a patch mapping's code belongs to (absent for `hp-agent try`). */
export interface PatchLabel {
  packageId: string;
  kb?: string;
  baselineId?: string;
  sequence?: number;
}

export interface PatchRecord {
  patch: string;
  label?: PatchLabel;
  patchBuildId?: string;
  object: string;
  objectBuildId?: string;
  base: number;
  span: number;
  appliedAt: string;
  sites: SiteRecord[];
}

/** The record as it is laid out in memory: page-rounded, trailer in the last 16 bytes. */
export function encodeRecord(record: PatchRecord): Buffer {
  const json = Buffer.from(JSON.stringify(record), 'utf8');
  const size = Math.ceil((json.length + RECORD_TRAILER_SIZE) / PAGE_SIZE) * PAGE_SIZE;
  const out = Buffer.alloc(size);
  json.copy(out, size - RECORD_TRAILER_SIZE - json.length);
  out.write(RECORD_MAGIC, size - RECORD_TRAILER_SIZE, 'latin1');
  out.writeUInt32LE(json.length, size - 8);
  return out;
}

/** Reads the trailer (last 16 bytes of a mapping) and says how many JSON bytes precede it. */
export function recordLength(trailer: Buffer): number | undefined {
  if (trailer.length !== RECORD_TRAILER_SIZE || trailer.toString('latin1', 0, 8) !== RECORD_MAGIC) return undefined;
  return trailer.readUInt32LE(8);
}

export function decodeRecord(json: Buffer): PatchRecord {
  try {
    const r = JSON.parse(json.toString('utf8')) as PatchRecord;
    if (!Array.isArray(r.sites) || typeof r.patch !== 'string') throw new Error('missing fields');
    return r;
  } catch (e) {
    throw new HpError('RECORD_CORRUPT', `the patch record in the target is unreadable: ${(e as Error).message}`);
  }
}
