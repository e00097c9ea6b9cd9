/**
 * The package file: a tar archive (optionally gzip-compressed) of manifest.json, manifest.sig
 * and payload/…, written deterministically and read only into memory.
 *
 * Reading never touches the disk: node-tar's Parser is fed the bytes, and its `filter` hook
 * refuses every entry that is not a plain file or directory with a safe relative path before the
 * entry's body is even looked at. The first refusal aborts the parse.
 */
import { createHash } from 'node:crypto';
import { createGunzip, gzipSync } from 'node:zlib';
import { Header, Pax, Parser, type ReadEntry } from 'tar';
import { HpError } from '../errors.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { relativePathProblem, type Manifest } from './manifest.js';

export const MANIFEST_FILE = 'manifest.json';
export const SIGNATURE_FILE = 'manifest.sig';
export const PAYLOAD_DIR = 'payload';

const MiB = 1024 * 1024;

export interface ArchiveLimits {
  /** Size of the package file itself (compressed, if it is). */
  maxPackageBytes: number;
  maxManifestBytes: number;
  /**
   * The archive once uncompressed: the tar stream (files, headers, padding) is cut off past this
   * many bytes, and the sizes the headers announce may not add up to more.
   */
  maxUnpackedBytes: number;
  /** One file of the archive, uncompressed. */
  maxEntryBytes: number;
  /**
   * Uncompressed ÷ compressed size of a gzip-compressed package, checked once more than
   * RATIO_FLOOR bytes came out: real packages compress a few times, a bomb a thousand times.
   */
  maxRatio: number;
  maxEntries: number;
}

export const DEFAULT_ARCHIVE_LIMITS: Readonly<ArchiveLimits> = Object.freeze({
  maxPackageBytes: 256 * MiB,
  maxManifestBytes: 1 * MiB,
  maxUnpackedBytes: 1024 * MiB,
  maxEntryBytes: 512 * MiB,
  maxRatio: 100,
  maxEntries: 10_000,
});

/** Below this much output the ratio is not judged: a small tar of padding compresses very well. */
export const RATIO_FLOOR = 16 * MiB;

export interface ArchiveContents {
  /** Regular files by normalised path ("./a//b" is not normal and is refused; "./a" reads as "a"). */
  files: Map<string, Buffer>;
  directories: string[];
  gzip: boolean;
}

export const sha256Hex = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

// ------------------------------------------------------------------------------------------------
// Writing

/** Every header field that could vary between machines or runs is fixed. */
const FIXED_MTIME = new Date(0);
const ENTRY_MODE = 0o644;
const BLOCK = 512;

function tarEntry(path: string, data: Uint8Array): Buffer[] {
  const problem = relativePathProblem(path);
  if (problem) throw new HpError('PACKAGE_UNSAFE_ENTRY', `cannot write entry "${path}": its path ${problem}`, { entry: path });
  const header = new Header({ path, mode: ENTRY_MODE, uid: 0, gid: 0, size: data.length, mtime: FIXED_MTIME, type: 'File', uname: '', gname: '' });
  const block = Buffer.alloc(BLOCK);
  header.encode(block);
  const parts: Buffer[] = [];
  // Long paths go in a PAX extended header before the entry (the ustar field keeps a truncation).
  if (header.needPax) parts.push(new Pax({ path, size: data.length }).encode());
  parts.push(block, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
  if (pad) parts.push(Buffer.alloc(pad));
  return parts;
}

/**
 * A deterministic tar: entries sorted by path, mtime 0, uid/gid 0, no user or group names,
 * mode 0644 (install modes live in the manifest, where the signature covers them).
 */
export function buildArchive(files: Iterable<readonly [string, Uint8Array]>, opts: { gzip?: boolean } = {}): Buffer {
  const entries = [...files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (let i = 1; i < entries.length; i++) {
    if (entries[i][0] === entries[i - 1][0]) throw new HpError('PACKAGE_UNSAFE_ENTRY', `cannot write entry "${entries[i][0]}" twice`, { entry: entries[i][0] });
  }
  const tar = Buffer.concat([...entries.flatMap(([p, d]) => tarEntry(p, d)), Buffer.alloc(2 * BLOCK)]);
  // zlib writes mtime 0 and no file name into the gzip header, so this is deterministic too.
  return opts.gzip ? gzipSync(tar, { level: 9 }) : tar;
}

export interface PackageContents {
  manifestBytes: Uint8Array;
  /** manifest.sig's text; omitted only for a deliberately unsigned (developer) package. */
  signature?: string;
  payload: ReadonlyMap<string, Uint8Array>;
}

export function packageEntries(c: PackageContents): [string, Uint8Array][] {
  const entries: [string, Uint8Array][] = [[MANIFEST_FILE, c.manifestBytes]];
  if (c.signature !== undefined) entries.push([SIGNATURE_FILE, Buffer.from(c.signature + '\n', 'utf8')]);
  for (const [p, d] of c.payload) {
    if (!p.startsWith(`${PAYLOAD_DIR}/`)) throw new HpError('PACKAGE_UNSAFE_ENTRY', `cannot write payload file "${p}": payload paths start with "${PAYLOAD_DIR}/"`, { entry: p });
    entries.push([p, d]);
  }
  return entries;
}

/** Write a package file atomically; returns the SHA-256 and size of the file written. */
export async function writePackageFile(path: string, contents: PackageContents, opts: { gzip?: boolean } = {}): Promise<{ sha256: string; size: number }> {
  const data = buildArchive(packageEntries(contents), opts);
  try {
    await writeFileAtomic(path, data, 0o644);
  } catch (e) {
    throw new HpError('PACKAGE_WRITE_FAILED', `cannot write package ${path}: ${(e as Error).message}`, { path, errno: (e as NodeJS.ErrnoException).code });
  }
  return { sha256: sha256Hex(data), size: data.length };
}

// ------------------------------------------------------------------------------------------------
// Reading

const REGULAR = new Set(['File', 'OldFile', 'ContiguousFile']);

function describeType(e: ReadEntry): string {
  switch (e.type) {
    case 'SymbolicLink':
      return `a symbolic link (to "${e.linkpath ?? ''}")`;
    case 'Link':
      return `a hard link (to "${e.linkpath ?? ''}")`;
    case 'CharacterDevice':
    case 'BlockDevice':
      return 'a device';
    case 'FIFO':
      return 'a FIFO';
    default:
      return `an entry of tar type ${e.type}`;
  }
}

const tooLarge = (message: string, details: Record<string, unknown>) => new HpError('PACKAGE_TOO_LARGE', message, details);
const unsafe = (entry: string, why: string) => new HpError('PACKAGE_UNSAFE_ENTRY', `package entry "${entry}" was refused: ${why}`, { entry });

/** Options of readArchive beyond its limits. */
export interface ReadArchiveOptions {
  /** Stops the reading between two chunks (its reason is thrown): a signal to the agent, say. */
  signal?: AbortSignal;
}

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const startsWith = (d: Uint8Array, magic: number[]) => d.length >= magic.length && magic.every((b, i) => d[i] === b);
/** Plain input is handed to the tar parser in slices this big, with a turn of the event loop in between. */
const SLICE = 256 * 1024;
const ZEROS = Buffer.alloc(SLICE);
const zeros = (n: number) => (n <= ZEROS.length ? ZEROS.subarray(0, n) : Buffer.alloc(n));
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * The tar stream of a package, chunk by chunk, never more than the limits allow: a gzip package
 * is inflated here by zlib off the JavaScript thread (so a signal is heard meanwhile), counted as
 * it comes out, and cut off past maxUnpackedBytes or maxRatio. node-tar would inflate it
 * synchronously, with nothing but a ratio of 1000 to stop it.
 */
async function* tarChunks(data: Buffer, lim: ArchiveLimits, name: string, signal?: AbortSignal): AsyncGenerator<Buffer> {
  if (!startsWith(data, GZIP_MAGIC)) {
    for (let off = 0; off < data.length; off += SLICE) {
      signal?.throwIfAborted();
      yield data.subarray(off, off + SLICE);
      await nextTurn();
    }
    return;
  }
  const gunzip = createGunzip({ chunkSize: SLICE });
  gunzip.end(data);
  let out = 0;
  let first = true;
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      signal?.throwIfAborted();
      // Compressed twice (or gzip around zstd): the tar parser would inflate the inner layer itself, unbounded.
      if (first && (startsWith(chunk, GZIP_MAGIC) || startsWith(chunk, ZSTD_MAGIC))) {
        throw new HpError('PACKAGE_CORRUPT', `${name} was refused: it is compressed twice; a package is a tar archive, gzip-compressed at most once`);
      }
      first = false;
      out += chunk.length;
      if (out > lim.maxUnpackedBytes) {
        throw tooLarge(`${name} was refused: uncompressed it is more than ${lim.maxUnpackedBytes} bytes (a decompression bomb?); stopped after ${out} bytes`, {
          limit: lim.maxUnpackedBytes,
          compressedSize: data.length,
        });
      }
      if (out > RATIO_FLOOR && out > lim.maxRatio * data.length) {
        throw tooLarge(
          `${name} was refused: ${data.length} compressed bytes inflate to more than ${out} (over ${lim.maxRatio} times their size: a decompression bomb)`,
          { ratioLimit: lim.maxRatio, compressedSize: data.length, unpackedSoFar: out },
        );
      }
      yield chunk;
    }
  } catch (e) {
    if (e instanceof HpError || (signal?.aborted && e === signal.reason)) throw e;
    throw new HpError('PACKAGE_CORRUPT', `${name} was refused: it is not a readable gzip-compressed tar archive (${(e as Error).message})`);
  } finally {
    gunzip.destroy();
  }
}

/**
 * Parse a package's bytes into memory, refusing (HpError) anything unsafe: PACKAGE_UNSAFE_ENTRY
 * for links, devices, absolute paths, ".." components, odd paths and duplicates;
 * PACKAGE_TOO_LARGE past a limit (checked while inflating, before the bytes are kept);
 * PACKAGE_CORRUPT when it is not a readable tar. Works in chunks with turns of the event loop in
 * between, so `opts.signal` (or a signal handler) can stop it at any point.
 */
export async function readArchive(data: Buffer, limits: Partial<ArchiveLimits> = {}, name = 'the package', opts: ReadArchiveOptions = {}): Promise<ArchiveContents> {
  const lim = { ...DEFAULT_ARCHIVE_LIMITS, ...limits };
  if (data.length > lim.maxPackageBytes) {
    throw tooLarge(`${name} was refused: it is ${data.length} bytes, over the ${lim.maxPackageBytes}-byte limit`, { size: data.length, limit: lim.maxPackageBytes });
  }
  const files = new Map<string, Buffer>();
  const directories = new Set<string>();
  const seen = new Set<string>();
  const normalised = new WeakMap<ReadEntry, string>();
  const skipped = new WeakSet<ReadEntry>();
  let refusal: HpError | undefined;
  let entries = 0;
  let unpacked = 0;

  const parser = new Parser({
    strict: true,
    maxMetaEntrySize: 64 * 1024,
    // Only ever fed a plain tar stream (see tarChunks): never let it guess a compression.
    brotli: false,
    zstd: false,
    filter: (_path, stat) => {
      const e = stat as ReadEntry;
      const problem = admit(e);
      if (problem instanceof HpError) {
        refuse(problem);
        return false;
      }
      if (problem === 'skip') skipped.add(e);
      return problem === undefined;
    },
    onReadEntry: (e) => {
      const p = normalised.get(e)!;
      if (e.type === 'Directory') {
        directories.add(p);
        e.resume();
        return;
      }
      const chunks: Buffer[] = [];
      e.on('data', (c: Buffer) => chunks.push(c));
      e.on('end', () => files.set(p, Buffer.concat(chunks)));
    },
  });

  function refuse(err: HpError): void {
    if (refusal) return;
    refusal = err;
    parser.abort(new Error(err.message));
  }

  /** undefined: take it; 'skip': a harmless root directory entry ("./"); HpError: refuse. */
  function admit(e: ReadEntry): HpError | 'skip' | undefined {
    if (refusal) return refusal;
    if (++entries > lim.maxEntries) return tooLarge(`${name} was refused: it has more than ${lim.maxEntries} entries`, { limit: lim.maxEntries });
    const raw = e.path;
    const isDir = e.type === 'Directory';
    if (!isDir && !REGULAR.has(e.type)) return unsafe(raw, `it is ${describeType(e)}; a package holds only regular files and directories`);
    if (raw.startsWith('/')) return unsafe(raw, 'it has an absolute path');
    if (raw.split('/').includes('..')) return unsafe(raw, 'its path has a ".." component');
    let p = raw;
    while (p.startsWith('./')) p = p.slice(2);
    if (isDir) p = p.replace(/\/+$/, '');
    if (isDir && (p === '' || p === '.')) return 'skip';
    const problem = relativePathProblem(p);
    if (problem) return unsafe(raw, `its path ${problem}`);
    if (seen.has(p)) return unsafe(raw, 'the archive holds this path more than once');
    seen.add(p);
    if (!isDir) {
      if (p === MANIFEST_FILE && e.size > lim.maxManifestBytes) {
        return tooLarge(`${name} was refused: its ${MANIFEST_FILE} is ${e.size} bytes, over the ${lim.maxManifestBytes}-byte limit`, { size: e.size, limit: lim.maxManifestBytes });
      }
      if (e.size > lim.maxEntryBytes) {
        return tooLarge(`${name} was refused: its entry "${raw}" is ${e.size} bytes, over the ${lim.maxEntryBytes}-byte limit for one file`, { entry: raw, size: e.size, limit: lim.maxEntryBytes });
      }
      unpacked += e.size;
      if (unpacked > lim.maxUnpackedBytes) {
        return tooLarge(`${name} was refused: its files add up to more than ${lim.maxUnpackedBytes} bytes`, { limit: lim.maxUnpackedBytes });
      }
    }
    normalised.set(e, p);
    return undefined;
  }

  // Entries node-tar ignores without asking the filter: unknown types and oversized metadata.
  parser.on('ignoredEntry', (e: ReadEntry) => {
    if (!refusal && !skipped.has(e)) refuse(unsafe(e.path, `it is ${describeType(e)}; a package holds only regular files and directories`));
  });

  const gzip = startsWith(data, GZIP_MAGIC);
  let parseError: Error | undefined;
  const finished = new Promise<void>((resolve) => {
    parser.on('error', (e: Error) => {
      parseError ??= e;
      resolve();
    });
    parser.on('end', () => resolve());
    parser.on('abort', () => resolve());
  });
  // After the end-of-archive blocks only zeros may follow (tar pads its last record with them);
  // they are checked here, within the same limits, and never handed to node-tar, which would
  // buffer all of it, growing and re-copying its buffer: minutes for a few MB of gzip-compressed
  // zeros appended to a real package. (The rest of the chunk that held the end is ignored.)
  let sawEnd = false;
  parser.on('eof', () => (sawEnd = true));
  // Feed chunk by chunk, so a refusal stops the reading (and the inflating) early.
  for await (const chunk of tarChunks(data, lim, name, opts.signal)) {
    if (sawEnd) {
      if (!chunk.equals(zeros(chunk.length))) {
        throw new HpError('PACKAGE_CORRUPT', `${name} was refused: data follows its end-of-archive blocks (only zero padding may)`);
      }
      continue;
    }
    parser.write(chunk);
    if (refusal || parseError) break;
  }
  if (!refusal && !parseError) parser.end();
  await finished;
  if (refusal) throw refusal;
  if (parseError) {
    const msg = parseError.message.replace(/^TAR_[A-Z_]+: /, '');
    throw new HpError('PACKAGE_CORRUPT', `${name} was refused: it is not a readable ${gzip ? 'gzip-compressed ' : ''}tar archive (${msg})`);
  }
  return { files, directories: [...directories].sort(), gzip };
}

/**
 * Check the archive's files against the manifest (after its signature was verified): every
 * payload file present with the size and SHA-256 the manifest gives (else PACKAGE_TAMPERED), and
 * nothing else in the archive (else PACKAGE_UNSAFE_ENTRY). Returns the payload by path.
 */
export function checkPayload(manifest: Manifest, contents: ArchiveContents): Map<string, Buffer> {
  const listed = new Set([MANIFEST_FILE, SIGNATURE_FILE, ...manifest.payload.map((p) => p.path)]);
  for (const p of contents.files.keys()) {
    if (!listed.has(p)) throw unsafe(p, 'the manifest does not list this file');
  }
  const ancestors = new Set([...listed].flatMap((p) => p.split('/').slice(0, -1).map((_, i, a) => a.slice(0, i + 1).join('/'))));
  for (const d of contents.directories) {
    if (!ancestors.has(d)) throw unsafe(d, 'the manifest lists no file in this directory');
  }
  const out = new Map<string, Buffer>();
  for (const entry of manifest.payload) {
    const data = contents.files.get(entry.path);
    if (!data) {
      throw new HpError('PACKAGE_TAMPERED', `the manifest lists ${entry.path}, but the package does not hold it`, { entry: entry.path });
    }
    if (data.length !== entry.size) {
      throw new HpError('PACKAGE_TAMPERED', `${entry.path} is ${data.length} bytes, but the signed manifest says ${entry.size}: the payload was changed`, {
        entry: entry.path,
        size: data.length,
        expectedSize: entry.size,
      });
    }
    const actual = sha256Hex(data);
    if (actual !== entry.sha256) {
      throw new HpError('PACKAGE_TAMPERED', `${entry.path} has SHA-256 ${actual}, but the signed manifest says ${entry.sha256}: the payload was changed`, {
        entry: entry.path,
        sha256: actual,
        expectedSha256: entry.sha256,
      });
    }
    out.set(entry.path, data);
  }
  return out;
}
