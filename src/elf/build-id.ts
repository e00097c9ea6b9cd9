/**
 * A file's GNU build-id read from its notes alone. Looking for the processes that run a file
 * by build-id, whatever its path, means asking it of every ELF file mapped on the machine: the
 * notes sit in the first pages (a few hundred bytes to read), where parsing the whole file would
 * read all of node's or libc's megabytes. ElfFile reads the same notes with the same parser.
 */
import { readSync } from 'node:fs';
import { NT_GNU_BUILD_ID, PT_NOTE } from './constants.js';

/**
 * The build-id among the notes of one note region (`notes`: its bytes, `align`: its alignment);
 * `{ overrunAt }`: the offset in the region of a note that runs past its end.
 */
export function buildIdInNotes(notes: Buffer, align: number): string | undefined | { overrunAt: number } {
  const pad = align === 8 ? 8 : 4;
  const alignUp = (n: number): number => Math.ceil(n / pad) * pad;
  let pos = 0;
  while (pos + 12 <= notes.length) {
    const namesz = notes.readUInt32LE(pos);
    const descsz = notes.readUInt32LE(pos + 4);
    const type = notes.readUInt32LE(pos + 8);
    // Name and descriptor each start at the next multiple of the note alignment, counted from
    // the start of the (aligned) note region: with 8-byte alignment "GNU\0" needs no padding.
    const nameOff = pos + 12;
    const descOff = alignUp(nameOff + namesz);
    if (descOff + descsz > notes.length || nameOff + namesz > notes.length) return { overrunAt: pos };
    const owner = notes.toString('latin1', nameOff, nameOff + namesz).replace(/\0+$/, '');
    if (owner === 'GNU' && type === NT_GNU_BUILD_ID) return notes.toString('hex', descOff, descOff + descsz);
    pos = alignUp(descOff + descsz);
  }
  return undefined;
}

const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const MAX_NOTES = 1 << 16;

function readAt(fd: number, offset: number, length: number): Buffer | undefined {
  const buf = Buffer.alloc(length);
  return readSync(fd, buf, 0, length, offset) === length ? buf : undefined;
}

/**
 * The build-id of the 64-bit little-endian ELF file open as `fd`, from its PT_NOTE segments;
 * undefined for anything else (not ELF, no build-id, malformed). For finding candidates only:
 * whoever acts on a file reads it whole (ElfFile) and checks again.
 */
export function peekBuildId(fd: number): string | undefined {
  const eh = readAt(fd, 0, EHDR_SIZE);
  if (!eh || eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2 || eh[5] !== 1) return undefined;
  const phoff = Number(eh.readBigUInt64LE(32));
  const phentsize = eh.readUInt16LE(54);
  const phnum = eh.readUInt16LE(56);
  if (phentsize !== PHDR_SIZE || phnum === 0 || phnum > 512 || !Number.isSafeInteger(phoff)) return undefined;
  const ph = readAt(fd, phoff, phnum * PHDR_SIZE);
  if (!ph) return undefined;
  for (let i = 0; i < phnum; i++) {
    const at = i * PHDR_SIZE;
    if (ph.readUInt32LE(at) !== PT_NOTE) continue;
    const offset = Number(ph.readBigUInt64LE(at + 8));
    const size = Number(ph.readBigUInt64LE(at + 32));
    const align = Number(ph.readBigUInt64LE(at + 48));
    if (size === 0 || size > MAX_NOTES || !Number.isSafeInteger(offset)) continue;
    const notes = readAt(fd, offset, size);
    const id = notes ? buildIdInNotes(notes, align) : undefined;
    if (typeof id === 'string') return id;
  }
  return undefined;
}
