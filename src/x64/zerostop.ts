/**
 * Zero-stop switching of hot-patchable function entries: the x86-64 byte layouts and the order
 * of the writes. Nothing here touches a process; src/engine/zerostop.ts carries the steps out.
 *
 * An object built with `-fpatchable-function-entry=7,5` has five bytes of NOP padding before
 * every function and a two-byte NOP at its entry (after the endbr64 when CET is on). gcc 12
 * emits single-byte `90`s for both; `66 90` (xchg %ax,%ax) is the other two-byte NOP we accept.
 *
 *   padding (entry - 5)         entry
 *   +----+----+----+----+----+ [+----+----+----+----+] +----+----+---------------
 *   | 90 | 90 | 90 | 90 | 90 | [| f3 | 0f | 1e | fa |] | 90 | 90 | body ...
 *   +----+----+----+----+----+ [+----+----+----+----+] +----+----+---------------
 *                                 endbr64, optional      ^ site: the 2-byte NOP
 *
 * switched:
 *   +----+----+----+----+----+ [ endbr64 ]              +----+----+---------------
 *   | e9 |   rel32 -> target | [          ]              | eb | d8 | body ...
 *   +----+----+----+----+----+ [          ]              +----+----+---------------
 *     ^---------------------------------------------------- jmp rel8 back to the padding:
 *                                                          d8 = f9 (-7) or f5 (-11, after endbr64)
 *
 * Nobody executes the padding, so the 5-byte jump is written there while everything runs. The
 * entry's two bytes are then changed ONE BYTE PER WRITE (a 2-byte write through /proc/PID/mem is
 * not atomic: the kernel may copy byte by byte), in an order where every intermediate state is a
 * valid instruction stream that does what the function did, and whose instruction boundaries
 * never cut through an instruction of the neighbouring states:
 *
 *   two-90:  90 90 -> 90 d8 -> eb d8                 nop;nop -> nop;stc (or cmc) -> jmp padding
 *   66-90:   66 90 -> 90 90 -> 90 d8 -> eb d8        xchg %ax,%ax -> nop;nop -> nop;stc -> jmp
 *
 * d8 alone decodes as `stc` (f9) or `cmc` (f5): they only change CF, which is not live at a
 * function entry under the SysV ABI (no argument or callee-saved state is passed in the flags).
 * For `66 90` we go through `90 90` instead of writing `66 d8` (data16 stc): the operand-size
 * prefix on an instruction without operands is reserved by Intel, so we never create it.
 * Writing the first byte first would be fatal: `eb 90` jumps 112 bytes back, into whatever
 * precedes the function.
 * Revert is the mirror image (entry bytes back first, the padding last).
 *
 * What the pauses between writes cannot rule out (src/engine/zerostop.ts explains them): a thread
 * that took the entry's jump and was preempted exactly on the padding's `jmp rel32`, before
 * executing it, and stays off its CPU for the whole pause after the unflip, would resume on a
 * padding being rewritten (revert, re-point) — a write of 5 bytes that is not atomic either.
 * That takes a preemption on that one instruction longer than the pause; raise the pause on
 * heavily oversubscribed machines. Switching in (padding written while no entry leads to it)
 * has no such window.
 */
import { HpError } from '../errors.js';
import { ENDBR64_SIZE, REL32_JUMP_SIZE, encodeJump, hasEndbr64, rel32Reaches } from './jump.js';
import { hexAddr } from '../hex.js';

/** The section gcc and clang fill with the address of every patchable entry's padding (8 bytes each). */
export const HOTPATCH_ENTRY_TABLE = '__patchable_function_entries';
/** NOP bytes before the entry that hold the 5-byte jump. */
export const HOTPATCH_PADDING_SIZE = 5;
/** The NOP at the entry (after an endbr64) that becomes `jmp rel8` back to the padding. */
export const HOTPATCH_ENTRY_NOP_SIZE = 2;
/** Bytes detectPatchableEntry needs: the padding, an optional endbr64, the entry NOP. */
export const HOTPATCH_PROBE_SIZE = HOTPATCH_PADDING_SIZE + ENDBR64_SIZE + HOTPATCH_ENTRY_NOP_SIZE; // 11

const NOP = 0x90;
const OPERAND_SIZE_PREFIX = 0x66;
const JMP_REL8_OPCODE = 0xeb;
const JMP_REL32_OPCODE = 0xe9;
/** The only rel8 displacements a switch produces, and the one-byte instruction each is alone. */
const HARMLESS_DISP8: Record<number, string> = { 0xf9: 'stc', 0xf5: 'cmc' };

/** The two-byte NOPs at an entry that we know how to flip (see the table above). */
export type EntryNop = 'two-90' | '66-90';

const ENTRY_NOPS: Record<EntryNop, Buffer> = {
  'two-90': Buffer.from([NOP, NOP]),
  '66-90': Buffer.from([OPERAND_SIZE_PREFIX, NOP]),
};

const PADDING = Buffer.alloc(HOTPATCH_PADDING_SIZE, NOP);

export interface PatchableEntry {
  entryAddress: number;
  /** entry - 5: where the 5-byte jump goes. */
  paddingAddress: number;
  /** Where the 2-byte NOP is: the entry, or entry + 4 when an endbr64 stays in front of it. */
  siteAddress: number;
  keptEndbr64: boolean;
  entryNop: EntryNop;
  /** The original padding bytes (five 0x90). */
  padding: Buffer;
  /** The original entry NOP bytes. */
  nop: Buffer;
}

/** One write of a switch: `before` must be at `addr` when it starts; `after` is written. */
export interface ZeroStopStep {
  addr: number;
  before: Buffer;
  after: Buffer;
  /** What the step changes: the padding's jump, or one byte of the entry NOP. */
  what: 'padding' | 'entry';
}


function checkAddress(what: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < HOTPATCH_PADDING_SIZE) {
    throw new HpError('INVALID_ADDRESS', `${what} ${String(value)} is not a usable non-negative integer address below 2^53`, { [what]: value });
  }
}

/**
 * Recognises a hot-patchable entry from the bytes around it: `bytesAround` starts 5 bytes before
 * the entry and holds at least the entry NOP (7 bytes, 11 with an endbr64). Returns undefined
 * for anything else (not padded, an unknown NOP, too few bytes) — never guesses.
 */
export function detectPatchableEntry(entryAddress: number, bytesAround: Buffer): PatchableEntry | undefined {
  checkAddress('entryAddress', entryAddress);
  if (bytesAround.length < HOTPATCH_PADDING_SIZE + HOTPATCH_ENTRY_NOP_SIZE) return undefined;
  const padding = bytesAround.subarray(0, HOTPATCH_PADDING_SIZE);
  if (!padding.equals(PADDING)) return undefined;
  const atEntry = bytesAround.subarray(HOTPATCH_PADDING_SIZE);
  const keptEndbr64 = hasEndbr64(atEntry);
  const offset = keptEndbr64 ? ENDBR64_SIZE : 0;
  const nop = atEntry.subarray(offset, offset + HOTPATCH_ENTRY_NOP_SIZE);
  if (nop.length < HOTPATCH_ENTRY_NOP_SIZE) return undefined;
  const entryNop = (Object.keys(ENTRY_NOPS) as EntryNop[]).find((k) => ENTRY_NOPS[k].equals(nop));
  if (!entryNop) return undefined;
  return {
    entryAddress,
    paddingAddress: entryAddress - HOTPATCH_PADDING_SIZE,
    siteAddress: entryAddress + offset,
    keptEndbr64,
    entryNop,
    padding: Buffer.from(padding),
    nop: Buffer.from(nop),
  };
}

/** The rel8 displacement of the entry's `jmp` back to the padding (always -7 or -11). */
function backDisp8(layout: PatchableEntry): number {
  const disp = layout.paddingAddress - (layout.siteAddress + HOTPATCH_ENTRY_NOP_SIZE);
  const byte = disp & 0xff;
  if (disp < -128 || !(byte in HARMLESS_DISP8)) {
    // Only reachable with a hand-made layout: the two layouts gcc produces give f9 and f5.
    throw new HpError('NOT_HOT_PATCHABLE', `the entry NOP at ${hexAddr(layout.siteAddress)} is ${-disp} bytes after the padding; only 7 (no endbr64) or 11 (after endbr64) give a harmless intermediate state`);
  }
  return byte;
}

/** The two bytes of the switched entry: `jmp rel8` to the padding. */
export function switchedEntryBytes(layout: PatchableEntry): Buffer {
  return Buffer.from([JMP_REL8_OPCODE, backDisp8(layout)]);
}

function checkLayout(entryAddress: number, layout: PatchableEntry): void {
  if (layout.entryAddress !== entryAddress) {
    throw new HpError('INVALID_ARGUMENT', `the layout describes the entry at ${hexAddr(layout.entryAddress)}, not ${hexAddr(entryAddress)}`);
  }
}

/** The padding's `jmp rel32` to `target`; refused when out of reach or aimed into the site. */
export function paddingJump(layout: PatchableEntry, target: number): Buffer {
  checkAddress('target', target);
  // rel32 counts from the end of the padding, which is the entry itself.
  if (!rel32Reaches(layout.paddingAddress, target)) {
    throw new HpError(
      'JUMP_OUT_OF_RANGE',
      `refusing a zero-stop switch of the entry at ${hexAddr(layout.entryAddress)}: the target ${hexAddr(target)} is beyond the ±2 GiB reach of the 5-byte jump in its padding (the padding has no room for an absolute jump); map the patch closer`,
      { entryAddress: layout.entryAddress, target },
    );
  }
  if (target >= layout.paddingAddress && target < layout.siteAddress + HOTPATCH_ENTRY_NOP_SIZE) {
    throw new HpError('JUMP_TARGET_INVALID', `refusing a zero-stop switch of the entry at ${hexAddr(layout.entryAddress)}: the target ${hexAddr(target)} lies inside the bytes being rewritten`, {
      entryAddress: layout.entryAddress,
      target,
    });
  }
  return encodeJump(layout.paddingAddress, target, 'rel32').bytes;
}

/** The entry's states from its original NOP to the switched `jmp`, one byte apart each. */
function entryStates(layout: PatchableEntry): Buffer[] {
  const d8 = backDisp8(layout);
  const states: Buffer[] = [Buffer.from(layout.nop)];
  if (layout.entryNop === '66-90') states.push(Buffer.from([NOP, NOP])); // drop the prefix first
  states.push(Buffer.from([NOP, d8]), Buffer.from([JMP_REL8_OPCODE, d8]));
  return states;
}

/** Single-byte writes that take the entry from states[0] to the last state, in order. */
function byteSteps(layout: PatchableEntry, states: Buffer[]): ZeroStopStep[] {
  const steps: ZeroStopStep[] = [];
  for (let i = 1; i < states.length; i++) {
    const from = states[i - 1];
    const to = states[i];
    const changed = [0, 1].filter((k) => from[k] !== to[k]);
    if (changed.length !== 1) throw new Error('internal: entry states must differ in exactly one byte');
    const k = changed[0];
    steps.push({ addr: layout.siteAddress + k, before: Buffer.from([from[k]]), after: Buffer.from([to[k]]), what: 'entry' });
  }
  return steps;
}

function flipSteps(layout: PatchableEntry): ZeroStopStep[] {
  return byteSteps(layout, entryStates(layout));
}

function unflipSteps(layout: PatchableEntry): ZeroStopStep[] {
  return byteSteps(layout, entryStates(layout).reverse());
}

/**
 * The ordered writes that redirect a hot-patchable entry to `target` without stopping anything:
 * the padding's jump first (nobody executes it yet), then the entry NOP one byte at a time.
 */
export function planZeroStop(entryAddress: number, layout: PatchableEntry, target: number): ZeroStopStep[] {
  checkLayout(entryAddress, layout);
  const jump = paddingJump(layout, target);
  return [{ addr: layout.paddingAddress, before: Buffer.from(layout.padding), after: jump, what: 'padding' }, ...flipSteps(layout)];
}

/**
 * The mirror image of planZeroStop for an entry switched to `target`: the entry NOP back one byte
 * at a time (from then on no new call reaches the padding), then the padding back to its NOPs.
 */
export function planZeroStopRevert(entryAddress: number, layout: PatchableEntry, target: number): ZeroStopStep[] {
  checkLayout(entryAddress, layout);
  const jump = paddingJump(layout, target);
  return [...unflipSteps(layout), { addr: layout.paddingAddress, before: jump, after: Buffer.from(layout.padding), what: 'padding' }];
}

/**
 * Re-points an entry switched to `from` so it jumps to `to`: unflip, rewrite the padding, flip
 * again. The padding cannot be rewritten in place (a thread may be executing the jump while a
 * non-atomic write tears its rel32), so calls that arrive in the short unflipped window run the
 * ORIGINAL function, neither the old nor the new replacement.
 */
export function planZeroStopRepoint(entryAddress: number, layout: PatchableEntry, from: number, to: number): ZeroStopStep[] {
  checkLayout(entryAddress, layout);
  const oldJump = paddingJump(layout, from);
  const newJump = paddingJump(layout, to);
  return [...unflipSteps(layout), { addr: layout.paddingAddress, before: oldJump, after: newJump, what: 'padding' }, ...flipSteps(layout)];
}

export type ZeroStopState = { state: 'original' } | { state: 'switched'; target: number } | { state: 'other' };

/**
 * What the bytes at a hot-patchable entry (`bytesAround` laid out as for detectPatchableEntry,
 * read from the process) say about it, given its original layout (read from the file): still
 * original, switched by us to a target, or anything else (a half-done switch, foreign code).
 */
export function zeroStopStateOf(layout: PatchableEntry, bytesAround: Buffer): ZeroStopState {
  const offset = layout.siteAddress - layout.paddingAddress;
  if (bytesAround.length < offset + HOTPATCH_ENTRY_NOP_SIZE) return { state: 'other' };
  const padding = bytesAround.subarray(0, HOTPATCH_PADDING_SIZE);
  const nop = bytesAround.subarray(offset, offset + HOTPATCH_ENTRY_NOP_SIZE);
  const between = bytesAround.subarray(HOTPATCH_PADDING_SIZE, offset); // the endbr64, if any
  if (layout.keptEndbr64 && !hasEndbr64(between)) return { state: 'other' };
  if (padding.equals(layout.padding) && nop.equals(layout.nop)) return { state: 'original' };
  if (padding[0] === JMP_REL32_OPCODE && nop.equals(switchedEntryBytes(layout))) {
    return { state: 'switched', target: layout.paddingAddress + REL32_JUMP_SIZE + padding.readInt32LE(1) };
  }
  return { state: 'other' };
}
