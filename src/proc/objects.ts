/**
 * ELF objects loaded in a live process: which files are mapped where, their load bias, and the
 * runtime addresses of their symbols.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync, realpathSync, statSync, type Stats } from 'node:fs';
import { basename } from 'node:path';
import { ET_EXEC, ElfFile, PT_LOAD, SHN_ABS } from '../elf/index.js';
import { HpError } from '../errors.js';
import { PAGE_SIZE } from '../x64/index.js';
import { devNumber, readMaps, type MapEntry } from './maps.js';
import { AT_ENTRY, AT_PHDR, checkPid, procPath, readAuxv } from './procfs.js';
import { processExists, processState } from './stat.js';

export interface LoadedObject {
  /** Path as the kernel reports it in /proc/PID/maps (without ' (deleted)'). */
  path: string;
  /** The file was deleted or replaced after it was mapped; `elf` still holds the mapped file's bytes when they could be read. */
  deleted: boolean;
  dev: string;
  inode: number;
  /** Load bias: runtime address = bias + ELF virtual address; 0 for ET_EXEC. */
  bias: number;
  /** Extent of all mappings of this load (first start, last end). */
  start: number;
  end: number;
  /** Extent of the executable mapping(s); textStart === textEnd === start when none is executable. */
  textStart: number;
  textEnd: number;
  mappings: MapEntry[];
  elf: ElfFile;
  buildId?: string;
}

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const pageDown = (n: number): number => Math.floor(n / PAGE_SIZE) * PAGE_SIZE;

/** One load of one file: the file-backed mappings of a dev+inode that belong together. */
interface Instance {
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
function groupInstances(maps: MapEntry[], wanted?: (path: string) => boolean): Instance[] {
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

/** Parsed files, keyed by identity and version of the file, so repeated look-ups do not re-read libc. */
const elfCache = new Map<string, ElfFile>();
const ELF_CACHE_LIMIT = 32;

type ReadOutcome = { elf: ElfFile } | { notElf: true } | { error: string; cause?: unknown };

const cacheKey = (st: Stats): string => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

/** The parsed file for this version of a file, if it is cached (and then the most recently used). */
function cachedElf(st: Stats): ElfFile | undefined {
  const key = cacheKey(st);
  const cached = elfCache.get(key);
  if (cached) {
    elfCache.delete(key);
    elfCache.set(key, cached);
  }
  return cached;
}

/** Reads an ELF file through an already opened descriptor; checks the magic before reading it all. */
function readElfFd(fd: number, name: string, st: Stats = fstatSync(fd)): ReadOutcome {
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

function withFd<T>(path: string, fn: (fd: number) => T): T {
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

/** A file as found by its path during one search; `outcome` once read (null: it could not be). */
interface PathFile {
  st: Stats;
  outcome?: ReadOutcome | null;
}

function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

/**
 * What one search (a look through many processes, or through one process's maps) learns about
 * mapped files by their path: each path is stat'ed once, and a load whose maps line shows the
 * same device and inode is read through it — the very file the process mapped — instead of
 * opening /proc/PID/map_files for every process. Only on a block device (major number not 0):
 * overlayfs, btrfs, NFS, FUSE and tmpfs report devices of their own, and on a stacked filesystem
 * the inode a process mapped and the one its path names now may differ under the same number.
 * Anything else (such a filesystem, a deleted or replaced file) goes through map_files.
 */
export class FileSearch {
  #byPath = new Map<string, PathFile | null>();
  /** st_dev of each device as maps print it, undefined when not a block device. */
  #devs = new Map<string, number | undefined>();

  /** The file the path names now, when it is the one `inst` maps; undefined otherwise. */
  #pathFile(inst: Pick<Instance, 'path' | 'deleted' | 'dev' | 'inode'>): PathFile | undefined {
    if (inst.deleted) return undefined;
    let dev = this.#devs.get(inst.dev);
    if (dev === undefined && !this.#devs.has(inst.dev)) {
      const n = devNumber(inst.dev);
      dev = n !== undefined && Math.floor(n / 256) % 4096 !== 0 ? n : undefined; // major (bits 8-19) not 0
      this.#devs.set(inst.dev, dev);
    }
    if (dev === undefined) return undefined;
    let f = this.#byPath.get(inst.path);
    if (f === undefined) {
      const st = statOrUndefined(inst.path);
      f = st ? { st } : null;
      this.#byPath.set(inst.path, f);
    }
    return f && f.st.ino === inst.inode && f.st.dev === dev ? f : undefined;
  }

  /** The load's file read through its path (see above), or undefined: read it through map_files. */
  read(inst: Pick<Instance, 'path' | 'deleted' | 'dev' | 'inode'>): ReadOutcome | undefined {
    const f = this.#pathFile(inst);
    if (!f) return undefined;
    if (f.outcome === undefined) f.outcome = this.#readPath(inst.path, f.st);
    return f.outcome ?? undefined;
  }

  #readPath(path: string, st: Stats): ReadOutcome | null {
    if (!st.isFile()) return { notElf: true }; // a device or the like: never opened
    const cached = cachedElf(st);
    if (cached) return { elf: cached };
    try {
      return withFd(path, (fd) => {
        const now = fstatSync(fd);
        // Opened after the stat: only the same file will do.
        return now.ino === st.ino && now.dev === st.dev ? readElfFd(fd, path, now) : null;
      });
    } catch {
      return null;
    }
  }
}

/**
 * Reads the file a load maps: through its path when the search recognises it there (FileSearch);
 * else through /proc/PID/map_files/<start>-<end> of its first mapping, which yields the bytes of
 * the very file the process mapped even if its path was since deleted or replaced (opening it
 * needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE); failing that through the path, but only if that
 * path still names the same inode.
 */
function readInstanceElf(pid: number, inst: Instance, search: FileSearch): ReadOutcome {
  const known = search.read(inst);
  if (known) return known;
  const first = inst.mappings[0];
  const mapFile = procPath(pid, `map_files/${first.start.toString(16)}-${first.end.toString(16)}`);
  let mapFilesError = '';
  try {
    return withFd(mapFile, (fd) => readElfFd(fd, inst.path));
  } catch (err) {
    mapFilesError = (err as NodeJS.ErrnoException).code ?? String(err);
  }
  try {
    return withFd(inst.path, (fd) => {
      if (fstatSync(fd).ino !== inst.inode) {
        return { error: `the file at this path is no longer the one mapped (replaced or deleted) and ${mapFile} could not be opened (${mapFilesError})` };
      }
      return readElfFd(fd, inst.path);
    });
  } catch (err) {
    return { error: `cannot open it (${(err as NodeJS.ErrnoException).code ?? String(err)}) nor ${mapFile} (${mapFilesError})` };
  }
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

function toLoadedObject(inst: Instance, elf: ElfFile): LoadedObject | undefined {
  const bias = elf.header.type === ET_EXEC ? 0 : computeLoadBias(elf, inst.mappings);
  if (bias === undefined) return undefined;
  const mappings = inst.mappings;
  const text = mappings.filter((m) => m.exec);
  const start = mappings[0].start;
  const obj: LoadedObject = {
    path: inst.path,
    deleted: inst.deleted,
    dev: inst.dev,
    inode: inst.inode,
    bias,
    start,
    end: mappings[mappings.length - 1].end,
    textStart: text.length ? text[0].start : start,
    textEnd: text.length ? text[text.length - 1].end : start,
    mappings,
    elf,
  };
  if (elf.buildId !== undefined) obj.buildId = elf.buildId;
  return obj;
}

function loadInstance(pid: number, inst: Instance, problems: string[], search: FileSearch): LoadedObject | undefined {
  const outcome = readInstanceElf(pid, inst, search);
  if ('notElf' in outcome) return undefined;
  if ('error' in outcome) {
    problems.push(`${inst.path}: ${outcome.error}`);
    return undefined;
  }
  const obj = toLoadedObject(inst, outcome.elf);
  if (!obj) problems.push(`${inst.path}: no PT_LOAD segment matches its mapping at file offset 0x${inst.mappings[0].offset.toString(16)}`);
  return obj;
}

function requireLiveProcess(pid: number): void {
  checkPid(pid);
  if (processExists(pid)) return;
  const zombie = processState(pid) !== undefined;
  throw new HpError(
    'PROCESS_NOT_FOUND',
    zombie ? `cannot inspect process ${pid}: it has exited (zombie not yet reaped by its parent)` : `cannot inspect process ${pid}: no such process`,
    { pid },
  );
}

/**
 * Every file-backed ELF mapped in the process, by address. Files that are not ELF are skipped.
 * `maps`: as the caller just read them; `wanted`: only files whose path it accepts are opened.
 */
export function loadedObjects(pid: number, maps?: MapEntry[], wanted?: (path: string) => boolean): LoadedObject[] {
  requireLiveProcess(pid);
  return objectsIn(pid, maps ?? readMaps(pid), wanted, new FileSearch());
}

/**
 * loadedObjects for a caller that checks itself that the process is alive, and that looks
 * through many processes with one `search` (see FileSearch).
 */
export function objectsIn(pid: number, maps: MapEntry[], wanted: ((path: string) => boolean) | undefined, search: FileSearch): LoadedObject[] {
  const problems: string[] = [];
  const out: LoadedObject[] = [];
  for (const inst of groupInstances(maps, wanted)) {
    if (wanted && !wanted(inst.path)) continue;
    const obj = loadInstance(pid, inst, problems, search);
    if (obj) out.push(obj);
  }
  return out;
}

/** The load of the main executable: the one holding AT_ENTRY (or AT_PHDR), else the inode of /proc/PID/exe. */
function mainInstance(pid: number, instances: Instance[]): Instance | undefined {
  const contains = (addr: number) => instances.find((i) => i.mappings.some((m) => m.start <= addr && addr < m.end));
  try {
    const auxv = readAuxv(pid);
    for (const tag of [AT_ENTRY, AT_PHDR]) {
      const value = auxv.get(tag);
      const inst = value !== undefined && value > 0n ? contains(Number(value)) : undefined;
      if (inst) return inst;
    }
  } catch {
    // fall through to /proc/PID/exe
  }
  try {
    const ino = statSync(procPath(pid, 'exe')).ino;
    return instances.find((i) => i.inode === ino);
  } catch {
    return undefined;
  }
}

/**
 * Which loads `object` names: a file name matches the basename; a path matches literally, or
 * else through its real path (resolved once, and only when no load matches literally).
 */
function matching(instances: Instance[], object: string): Instance[] {
  if (!object.includes('/')) return instances.filter((i) => basename(i.path) === object);
  const literal = instances.filter((i) => i.path === object);
  if (literal.length > 0) return literal;
  let real: string;
  try {
    real = realpathSync(object);
  } catch {
    return [];
  }
  return instances.filter((i) => i.path === real);
}

/**
 * The loaded object named by `object`: a full path (or a path resolving to the mapped one), or a
 * file name matched against the basename, e.g. 'libgreet.so'. Default: the main executable.
 * `maps` saves reading /proc/PID/maps again when the caller just did.
 */
export function findObject(pid: number, object?: string, maps?: MapEntry[]): LoadedObject {
  requireLiveProcess(pid);
  const instances = groupInstances(maps ?? readMaps(pid));
  const wanted = object === undefined ? 'the main executable' : `'${object}'`;
  const candidates = object === undefined ? [mainInstance(pid, instances)].filter((i): i is Instance => !!i) : matching(instances, object);
  const problems: string[] = [];
  const search = new FileSearch();
  const found = candidates.map((i) => loadInstance(pid, i, problems, search)).filter((o): o is LoadedObject => !!o);

  if (found.length === 0) {
    const loaded = [...new Set(loadedObjects(pid, maps).map((o) => o.path))];
    const why = problems.length ? `; unreadable: ${problems.join('; ')}` : '';
    throw new HpError(
      'OBJECT_NOT_LOADED',
      `cannot find ${wanted} among the ELF objects loaded in process ${pid}${why}. Loaded: ${loaded.join(', ') || '(none)'}`,
      { pid, object, loaded, problems },
    );
  }
  if (found.length === 1) return found[0];
  // Several loads: prefer the only one that is executable (the others are plain mmaps of the file).
  const executable = found.filter((o) => o.textEnd > o.textStart);
  if (executable.length === 1) return executable[0];
  const where = found.map((o) => `${o.path} at 0x${o.start.toString(16)}`);
  throw new HpError(
    'OBJECT_AMBIGUOUS',
    `refusing to pick one of several loaded objects matching ${wanted} in process ${pid}: ${where.join(', ')}; name one by full path`,
    { pid, object, matches: where },
  );
}

/** Runtime address of a symbol of a loaded object (.symtab first, then .dynsym). */
export function symbolAddress(obj: LoadedObject, name: string): { name: string; address: number; size: number; type: string } {
  const sym = obj.elf.findSymbol(name);
  if (!sym) {
    const stripped = obj.elf.symbols.length === 0;
    const imported = obj.elf.dynamicSymbols.some((s) => s.name === name && !s.defined);
    const notes = [
      stripped ? `it has no .symtab (the file is stripped), so only its ${obj.elf.dynamicSymbols.filter((s) => s.defined).length} exported .dynsym symbols can be found` : '',
      imported ? `'${name}' is imported there, defined in another object` : '',
    ].filter(Boolean);
    throw new HpError(
      'SYMBOL_NOT_FOUND',
      `cannot find a defined symbol '${name}' in ${obj.path}${notes.length ? `: ${notes.join('; ')}` : ''}`,
      { object: obj.path, symbol: name, stripped, imported },
    );
  }
  if (sym.type === 'TLS') {
    throw new HpError(
      'SYMBOL_NOT_ADDRESSABLE',
      `refusing to give an address for '${name}' in ${obj.path}: it is a thread-local variable, whose value is an offset in each thread's TLS block`,
      { object: obj.path, symbol: name },
    );
  }
  const address = sym.shndx === SHN_ABS ? sym.value : obj.bias + sym.value;
  return { name: sym.name, address, size: sym.size, type: sym.type };
}
