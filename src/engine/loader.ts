/**
 * Puts a linked patch image into a target: a memfd created *inside* the target (so the mapping
 * is named after the patch in /proc/PID/maps), filled by the agent through /proc/PID/fd/N, and
 * mapped by remote mmap at the exact base the image was relocated for. All of this happens
 * while the target keeps running; nothing in it points at the new code yet. What it creates
 * joins the change's undo log (undo-log.ts), which removes it if the change fails.
 */
import { HpError } from '../errors.js';
import type { MapEntry } from '../proc/index.js';
import { MAP_FIXED_NOREPLACE, MAP_SHARED, MFD_CLOEXEC, PAGE_SIZE, PROT_READ } from '../x64/syscalls.js';
import { native, type RemoteFill, type TransactionOptions, type TransactionResult, type TransactionSite } from '../native.js';
import { memfdName } from './mappings.js';
import { nativeCalls, RemoteProcess, type BorrowedThread, type RemoteCall } from './remote.js';
import { withUndoLog, type UndoLog } from './undo-log.js';
import { hexAddr } from '../hex.js';

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
  /** The thread mapping it borrowed (mapPatchImage; in a transaction its stop is the pause's). */
  borrowed?: BorrowedThread;
}

/** The one batch that puts a patch into a target, and what it needs to know about it. */
function mappingBatch(base: number, image: Buffer, segments: ImageSegment[], trailer: Buffer, patchName: string) {
  if (image.length % PAGE_SIZE || trailer.length % PAGE_SIZE) {
    throw new HpError('BAD_IMAGE', 'patch image and record must be page-sized');
  }
  const name = memfdName(patchName);
  const size = image.length + trailer.length;
  const fd = { result: 0 };
  const calls: RemoteCall[] = [
    // The core fills the file right after this call (writing up to `size` gives it its size),
    // so the mapping shows the patch from the start.
    { name: 'memfd_create', args: [{ string: Buffer.from(name, 'utf8') }, MFD_CLOEXEC] },
    { name: 'mmap', args: [base, size, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0] },
    ...segments.filter((seg) => seg.prot !== PROT_READ).map((seg): RemoteCall => ({ name: 'mprotect', args: [base + seg.offset, seg.size, seg.prot] })),
    // The mapping keeps the file alive; the target does not need the descriptor.
    { name: 'close', args: [fd] },
  ];
  const fill: RemoteFill = {
    fdCall: 0,
    afterCall: 0,
    chunks: [
      { offset: 0, data: image },
      { offset: image.length, data: trailer },
    ],
  };
  return { calls, fill, size, mapped: { base, size, name } };
}

/**
 * Registers how to remove what a batch that stopped after `done` (its results) created: the
 * mapping, and the descriptor if it was not closed yet. A mapping is kept if a later step could
 * not be undone (a jump may lead into it).
 */
function logBatch(log: UndoLog, remote: RemoteProcess, done: number[], calls: number, size: number): void {
  const undo: RemoteCall[] = [];
  if (done.length > 1 && done[1] >= 0) undo.push({ name: 'munmap', args: [done[1], size] });
  if (done.length > 0 && done.length < calls && done[0] >= 0) undo.push({ name: 'close', args: [done[0]] });
  if (undo.length) log.add({ what: undo[0].name === 'munmap' ? 'patch mapping(s)' : 'memfd descriptor(s)', keepIfLaterKept: true, undo: async () => (await remote.batch(undo), true) });
}

function misplaced(at: number, base: number): HpError {
  return new HpError('MAP_FAILED', `the kernel placed the patch at ${hexAddr(at)} instead of ${hexAddr(base)}`);
}

/**
 * Maps `image` (relocated for `base`) followed by `trailer` (the patch record, read-only) into
 * process `pid`, with ONE hijack of one thread: memfd_create, then the core fills the file
 * through /proc/PID/fd/N, then mmap at `base`, the segments' mprotects and close. What it
 * created joins the undo log (`log`, the change's; without one a failure removes it here).
 */
export function mapPatchImage(
  pid: number,
  base: number,
  image: Buffer,
  segments: ImageSegment[],
  trailer: Buffer,
  patchName: string,
  /** The process's maps as the caller just read them (saves reading them again). */
  maps?: MapEntry[],
  log?: UndoLog,
): Promise<MappedPatch> {
  const { calls, fill, size, mapped } = mappingBatch(base, image, segments, trailer, patchName);
  return withUndoLog(log, async (log) => {
    const remote = new RemoteProcess(pid, maps);
    let results: number[];
    try {
      results = await remote.batch(calls, fill);
    } catch (e) {
      logBatch(log, remote, ((e as HpError).details?.results as number[] | undefined) ?? [], calls.length, size);
      throw e;
    }
    logBatch(log, remote, results, calls.length, size);
    if (results[1] !== base) throw misplaced(results[1], base);
    return { ...mapped, borrowed: remote.borrowed[0] };
  });
}

/**
 * mapPatchImage and the transaction that switches `sites` into the new patch, in ONE attach of
 * the core: the thread borrowed to map the patch stays stopped for the switch, so it is not
 * stopped and resumed twice, and the process is checked, listed and attached once. The
 * transaction is one step of the undo log that restores its own writes and says whether it
 * could; the mapping joins the log (kept if the switch could not undo every write).
 */
export async function mapPatchAndSwitch(
  pid: number,
  patch: { base: number; image: Buffer; segments: ImageSegment[]; trailer: Buffer; name: string },
  sites: TransactionSite[],
  options: TransactionOptions,
  maps: MapEntry[] | undefined,
  log: UndoLog,
): Promise<{ mapped: MappedPatch; tx: TransactionResult }> {
  const { base } = patch;
  const { calls, fill, size, mapped } = mappingBatch(base, patch.image, patch.segments, patch.trailer, patch.name);
  const remote = new RemoteProcess(pid, maps);
  let tx: TransactionResult;
  try {
    tx = await remote.withGadgets((gadgets) => native.transaction(pid, sites, { ...options, prelude: { gadgets, calls: nativeCalls(calls), fill, expect: [1, base] } }));
  } catch (e) {
    if (e instanceof HpError && e.details?.preludeComplete) logBatch(log, remote, [-1, base], calls.length, size); // its descriptor is closed
    log.failedStep(!(e instanceof HpError) || e.unchanged);
    throw e;
  }
  if (!tx.switched) {
    const done = tx.prelude?.results ?? [];
    logBatch(log, remote, done, calls.length, size);
    if (done.length > 1 && done[1] >= 0 && done[1] !== base) throw misplaced(done[1], base);
    remote.results(calls, tx.prelude ?? { results: done, tid: 0, interruptedSyscall: false });
    throw new HpError('INTERNAL', `mapping the patch into process ${pid} stopped early without a reason`);
  }
  return { mapped, tx };
}

/** Removes a patch mapping that no site points into. */
export async function unmapPatch(pid: number, mapped: MappedPatch): Promise<void> {
  await new RemoteProcess(pid).syscall('munmap', mapped.base, mapped.size);
}
