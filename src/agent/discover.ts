/**
 * Ground truth about which processes run which installed files: every process's
 * /proc/PID/maps, and the build-id of the file each one really mapped (read through
 * /proc/PID/map_files, so a file replaced on disk since does not fool us).
 */
import fs from 'node:fs';
import path from 'node:path';
import { peekBuildId } from '../elf/index.js';
import { FileSearch, isGone, objectsIn, parseMaps, readProcStat, readProcText, type LoadedObject, type MapEntry } from '../proc/index.js';

/**
 * What a search looks for: files under `root` (the agent's system folder, or one baseline's),
 * and files installed elsewhere that baselines describe — by their installed path, or by their
 * build-id whatever path a process mapped them from (a copy, a bind mount, a container's view).
 */
export interface SearchScope {
  root: string;
  paths?: ReadonlySet<string>;
  buildIds?: ReadonlySet<string>;
}

export interface MappedFile {
  /** Path as the process mapped it (without " (deleted)"). */
  path: string;
  buildId?: string;
  deleted: boolean;
}

export interface RunningProcess {
  pid: number;
  comm: string;
  files: MappedFile[];
  /** Its /proc/PID/maps as read here (the engine starts from them instead of reading again). */
  maps?: MapEntry[];
  /** The loaded objects behind `files` (for the engine, in this thread only: not plain data). */
  objects?: LoadedObject[];
}

export function allPids(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((pid) => pid !== process.pid)
    .sort((a, b) => a - b); // /proc lists them in no numeric order; results come out by PID
}

/**
 * Processes that map at least one file under `root` (a folder) — with, for each such file,
 * the build-id of what the process really has mapped. Processes that vanish meanwhile are skipped.
 */
export function processesUnder(scope: string | SearchScope, pids: number[] = allPids()): RunningProcess[] {
  return [...searchProcesses(scope, pids)];
}

/** The same, one process at a time, as the search finds them (so a caller can act on each at once). */
export function searchProcesses(scope: string | SearchScope, pids: number[] = allPids()): Generator<RunningProcess, void, undefined> {
  const { root, paths, buildIds } = typeof scope === 'string' ? { root: scope } : scope;
  const prefix = path.resolve(root) + path.sep;
  const byBuildId = buildIds !== undefined && buildIds.size > 0;
  const named = (p: string): boolean => p.startsWith(prefix) || (paths?.has(p) ?? false);
  // Unless a file may be found by build-id (from any path), the folder or a named path must be in the text.
  const mayMatch = (raw: string) => byBuildId || raw.includes(prefix) || [...(paths ?? [])].some((p) => raw.includes(p));
  return searchMatching(mayMatch, named, pids, byBuildId ? buildIds : undefined);
}

/**
 * Processes that map `object`: a path (matched literally or through its real path) or a file
 * name (matched against each mapped file's basename), as `--object` names it.
 */
export function processesMapping(object: string, pids: number[] = allPids()): RunningProcess[] {
  if (!object.includes('/')) return [...searchMatching((raw) => raw.includes(object), (p) => path.basename(p) === object, pids)];
  const names = new Set([path.resolve(object)]);
  try {
    names.add(fs.realpathSync(object));
  } catch {
    // not on disk (any more): only the literal path can match
  }
  const found = new Map<number, RunningProcess>();
  for (const name of names) for (const p of searchMatching((raw) => raw.includes(name), (m) => m === name, pids)) found.set(p.pid, p);
  return [...found.values()].sort((a, b) => a.pid - b.pid);
}

/**
 * Processes whose raw maps `mayMatch` and that map a file `named` accepts (or, with `buildIds`,
 * a file with one of those build-ids, whatever its path).
 */
function* searchMatching(mayMatch: (raw: string) => boolean, named: (path: string) => boolean, pids: number[], buildIds?: ReadonlySet<string>): Generator<RunningProcess, void, undefined> {
  // One search: each installed file is stat'ed once, not opened through map_files per process.
  const search = new FileSearch();
  const peeked = new Map<string, string | undefined>();
  for (const pid of pids) {
    let maps;
    try {
      // Most processes on a machine run none of the files sought: look at the raw text before parsing anything.
      const raw = readProcText(pid, 'maps');
      if (!mayMatch(raw)) continue;
      maps = parseMaps(raw);
    } catch {
      continue;
    }
    const matched = buildIds ? filesWithBuildIds(pid, maps, named, buildIds, peeked) : undefined;
    const wanted = matched ? (p: string) => named(p) || matched.has(p) : named;
    if (!maps.some((m) => wanted(m.path))) continue;
    let found: RunningProcess;
    try {
      const objects = objectsIn(pid, maps, wanted, search);
      // One read of /proc/PID/stat, after the objects: the process still lives (not a zombie),
      // and its command name.
      const stat = readProcStat(pid);
      if (!stat || isGone(stat.state)) continue;
      const files = objects.map((o) => ({ path: o.path, buildId: o.buildId, deleted: o.mappings.some((m) => m.deleted) }));
      found = { pid, comm: stat.comm, files, maps, objects };
    } catch {
      continue;
    }
    yield found;
  }
}

/**
 * The paths of the files a process maps executable whose build-id is one of `buildIds` (not
 * already `named`). Each file (device and inode) is asked once per search (`peeked`), through its
 * path when that still names the mapped inode, else through /proc/PID/map_files.
 */
function filesWithBuildIds(pid: number, maps: MapEntry[], named: (p: string) => boolean, buildIds: ReadonlySet<string>, peeked: Map<string, string | undefined>): Set<string> {
  const out = new Set<string>();
  for (const m of maps) {
    if (!m.exec || m.inode === 0 || !m.path.startsWith('/') || named(m.path) || out.has(m.path)) continue;
    const key = `${m.dev}:${m.inode}`;
    if (!peeked.has(key)) peeked.set(key, peekMapped(pid, m));
    const id = peeked.get(key);
    if (id !== undefined && buildIds.has(id)) out.add(m.path);
  }
  return out;
}

function peekMapped(pid: number, m: MapEntry): string | undefined {
  const tries = [
    () => (m.deleted ? undefined : m.path),
    () => `/proc/${pid}/map_files/${m.start.toString(16)}-${m.end.toString(16)}`,
  ];
  for (const file of tries) {
    const f = file();
    if (!f) continue;
    let fd: number | undefined;
    try {
      fd = fs.openSync(f, 'r');
      // Through the path only if it still names the very file the process mapped.
      if (fs.fstatSync(fd).ino !== m.inode) continue;
      return peekBuildId(fd);
    } catch {
      continue;
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }
  return undefined;
}
