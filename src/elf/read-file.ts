/**
 * Reading an ELF file from disk, by path or through a descriptor already open on it, parsed once
 * per version of the file: the objects of many processes are mostly the same few files (libc,
 * the loader), and every look at them must not parse them again.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync, type Stats } from 'node:fs';
import { HpError } from '../errors.js';
import { ElfFile } from './elf-file.js';

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

/** Parsed files, keyed by identity and version of the file, so repeated look-ups do not re-read libc. */
const elfCache = new Map<string, ElfFile>();
const ELF_CACHE_LIMIT = 32;

export type ReadOutcome = { elf: ElfFile } | { notElf: true } | { error: string; cause?: unknown };

const cacheKey = (st: Stats): string => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

/** The parsed file for this version of a file, if it is cached (and then the most recently used). */
export function cachedElf(st: Stats): ElfFile | undefined {
  const key = cacheKey(st);
  const cached = elfCache.get(key);
  if (cached) {
    elfCache.delete(key);
    elfCache.set(key, cached);
  }
  return cached;
}

/** Reads an ELF file through an already opened descriptor; checks the magic before reading it all. */
export function readElfFd(fd: number, name: string, st: Stats = fstatSync(fd)): ReadOutcome {
  if (!st.isFile()) return { notElf: true };
  const magic = Buffer.alloc(4);
  if (readSync(fd, magic, 0, 4, 0) !== 4 || !magic.equals(ELF_MAGIC)) return { notElf: true };
  const cached = cachedElf(st);
  if (cached) return { elf: cached };
  let elf: ElfFile;
  try {
    elf = ElfFile.fromBuffer(readFileSync(fd), name);
  } catch (err) {
    return { error: `not a usable ELF file (${err instanceof Error ? err.message : String(err)})`, cause: err };
  }
  const key = cacheKey(st);
  elfCache.set(key, elf);
  if (elfCache.size > ELF_CACHE_LIMIT) elfCache.delete(elfCache.keys().next().value as string);
  return { elf };
}

export function withFd<T>(path: string, fn: (fd: number) => T): T {
  const fd = openSync(path, 'r');
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** An ELF file by path, parsed once per version of the file (the cache above). */
export function readElfFile(path: string): ElfFile {
  // Already parsed: one stat() instead of open, fstat, read and close.
  const st = statOrUndefined(path);
  const cached = st?.isFile() ? cachedElf(st) : undefined;
  if (cached) return cached;
  let outcome: ReadOutcome;
  try {
    outcome = withFd(path, (fd) => readElfFd(fd, path));
  } catch {
    return ElfFile.fromFile(path); // says why the file cannot be read, as every other reader does
  }
  if ('elf' in outcome) return outcome.elf;
  if ('error' in outcome && outcome.cause instanceof HpError) throw outcome.cause;
  return ElfFile.fromFile(path); // not ELF: the parser names what is wrong
}

export function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}
