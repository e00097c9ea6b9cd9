/**
 * ELF objects loaded in a live process: which files are mapped where, their load bias, and the
 * runtime addresses of their symbols.
 */
import { realpathSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { ET_EXEC, SHN_ABS, type ElfFile } from '../elf/index.js';
import { HpError } from '../errors.js';
import { computeLoadBias, groupInstances, type Instance } from './loads.js';
import { FileSearch, readInstanceElf } from './mapped-files.js';
import { readMaps, type MapEntry } from './maps.js';
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
