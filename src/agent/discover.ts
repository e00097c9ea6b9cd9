/**
 * Ground truth about which processes run which installed files: every process's
 * /proc/PID/maps, and the build-id of the file each one really mapped (read through
 * /proc/PID/map_files, so a file replaced on disk since does not fool us).
 */
import fs from 'node:fs';
import path from 'node:path';
import { FileSearch, objectsIn, parseMaps, processStat, readProcText, type LoadedObject, type MapEntry } from '../proc/index.js';

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
export function processesUnder(root: string, pids: number[] = allPids()): RunningProcess[] {
  return [...searchProcesses(root, pids)];
}

/** The same, one process at a time, as the search finds them (so a caller can act on each at once). */
export function searchProcesses(root: string, pids: number[] = allPids()): Generator<RunningProcess, void, undefined> {
  const prefix = path.resolve(root) + path.sep;
  return searchMatching(prefix, (p) => p.startsWith(prefix), pids);
}

/**
 * Processes that map `object`: a path (matched literally or through its real path) or a file
 * name (matched against each mapped file's basename), as `--object` names it.
 */
export function processesMapping(object: string, pids: number[] = allPids()): RunningProcess[] {
  if (!object.includes('/')) return [...searchMatching(object, (p) => path.basename(p) === object, pids)];
  const names = new Set([path.resolve(object)]);
  try {
    names.add(fs.realpathSync(object));
  } catch {
    // not on disk (any more): only the literal path can match
  }
  const found = new Map<number, RunningProcess>();
  for (const name of names) for (const p of searchMatching(name, (m) => m === name, pids)) found.set(p.pid, p);
  return [...found.values()].sort((a, b) => a.pid - b.pid);
}

/** Processes whose maps contain `text` and map a file `wanted` accepts. */
function* searchMatching(text: string, wanted: (path: string) => boolean, pids: number[]): Generator<RunningProcess, void, undefined> {
  // One search: each installed file is stat'ed once, not opened through map_files per process.
  const search = new FileSearch();
  for (const pid of pids) {
    let maps;
    try {
      // Most processes on a machine run none of our files: look for the text in the raw maps
      // before parsing anything.
      const raw = readProcText(pid, 'maps');
      if (!raw.includes(text)) continue;
      maps = parseMaps(raw);
    } catch {
      continue;
    }
    if (!maps.some((m) => wanted(m.path))) continue;
    let found: RunningProcess;
    try {
      const objects = objectsIn(pid, maps, wanted, search);
      // One read of /proc/PID/stat, after the objects: the process still lives (not a zombie),
      // and its command name.
      const stat = processStat(pid);
      if (!stat || stat.state === undefined || 'ZXx'.includes(stat.state)) continue;
      const files = objects.map((o) => ({ path: o.path, buildId: o.buildId, deleted: o.mappings.some((m) => m.deleted) }));
      found = { pid, comm: stat.comm, files, maps, objects };
    } catch {
      continue;
    }
    yield found;
  }
}
