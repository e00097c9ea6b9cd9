/**
 * Finding the bytes of the file a load maps: through its path when that still names the very file
 * mapped, else through /proc/PID/map_files.
 */
import { fstatSync, type Stats } from 'node:fs';
import { cachedElf, readElfFd, statOrUndefined, withFd, type ReadOutcome } from '../elf/read-file.js';
import type { Instance } from './loads.js';
import { devNumber } from './maps.js';
import { procPath } from './procfs.js';

/** A file as found by its path during one search; `outcome` once read (null: it could not be). */
interface PathFile {
  st: Stats;
  outcome?: ReadOutcome | null;
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
export function readInstanceElf(pid: number, inst: Instance, search: FileSearch): ReadOutcome {
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
