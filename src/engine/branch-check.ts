/**
 * The static half of "the jump never lands where code jumps back or returns into": before a plan
 * is carried out, the function's own code (from the object file the process mapped, entry to
 * symbol size) is decoded and every branch or return into the bytes the plan overwrites is
 * refused (src/x64/branches.ts). Decoding depends only on the file, so each function of each
 * file is decoded once however many processes a change visits.
 */
import type { ElfFile } from '../elf/index.js';
import type { LoadedObject } from '../proc/index.js';
import { controlTransfers, HOTPATCH_ENTRY_NOP_SIZE, landingsInside, refuseLandingsInside, type ControlTransfer } from '../x64/index.js';
import type { Entry } from './entries.js';

const decoded = new WeakMap<ElfFile, Map<number, ControlTransfer[]>>();

/** The function's bytes as its object file has them (the process's copy was compared with them). */
function code(obj: LoadedObject, e: Entry): Buffer {
  return obj.elf.readVirtual(e.state.functionAddress - obj.bias, e.size);
}

function transfers(obj: LoadedObject, e: Entry): ControlTransfer[] {
  let perFile = decoded.get(obj.elf);
  if (!perFile) decoded.set(obj.elf, (perFile = new Map()));
  const vaddr = e.state.functionAddress - obj.bias;
  let found = perFile.get(vaddr);
  if (!found) perFile.set(vaddr, (found = controlTransfers(code(obj, e))));
  return found;
}

/**
 * Refuses (BRANCH_INTO_JUMP) to overwrite `length` bytes at `siteAddress` of function `e` when its
 * own code branches or returns strictly inside them. `form` says which bytes those are: a jump
 * over the entry, or only the hot-patchable entry's 2-byte NOP.
 */
export function refuseBranchesIntoSite(obj: LoadedObject, e: Entry, siteAddress: number, length: number, form: 'entry' | 'padding'): void {
  if (e.size <= 0) return; // no extent to decode: planJumpSite refuses such a function anyway
  const found = transfers(obj, e);
  const start = siteAddress - e.state.functionAddress;
  if (landingsInside(found, start, length).length === 0) return;
  let alternative: string | undefined;
  if (form === 'entry' && e.hot) {
    // Listed as hot-patchable but patched over its entry by an older hp-agent: a fresh apply
    // would go through the padding, which overwrites only the entry NOP.
    const nopStart = e.hot.siteAddress - e.state.functionAddress;
    alternative = landingsInside(found, nopStart, HOTPATCH_ENTRY_NOP_SIZE).length
      ? 'Its hot-patchable entry does not help: code lands inside its 2-byte NOP as well'
      : 'It is patched over its entry now; revert it and apply again: through its hot-patchable entry only the 2-byte NOP is overwritten (zero-stop mode), which nothing lands in';
  }
  refuseLandingsInside({ name: e.state.function, object: obj.path, address: e.state.functionAddress, start, length, form, alternative }, code(obj, e), found);
}
