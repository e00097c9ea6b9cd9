/**
 * x86-64 facts hp-agent relies on: the two jumps it writes over a function entry, the CET
 * `endbr64` landing pad it preserves, and the page/user-space geometry of x86-64 Linux.
 * Nothing else in hp-agent should hard-code an opcode byte or an x86-64 address-space limit.
 */
import { HpError } from '../errors.js';
import { hexAddr } from '../hex.js';

/** Size of a page on x86-64 Linux (user space always sees 4 KiB base pages). */
export const PAGE_SIZE = 0x1000;

/**
 * One past the highest user-space address with 4-level paging (TASK_SIZE_MAX = 2^47 - one page).
 * Mappings never extend beyond it; [vsyscall] lives in kernel space above it.
 */
export const USER_SPACE_END = 0x7ffffffff000;

/**
 * CET indirect-branch landing pad. With IBT enabled, an indirect call/jmp must land on it, so a
 * patched function keeps it at its entry and the jump is written right after it.
 *
 *   +----+----+----+----+
 *   | f3 | 0f | 1e | fa |   endbr64
 *   +----+----+----+----+
 */
export const ENDBR64: Buffer = Buffer.from([0xf3, 0x0f, 0x1e, 0xfa]);
export const ENDBR64_SIZE = 4;

/**
 * Near relative jump, `jmp rel32`:
 *
 *   offset  0    1    2    3    4
 *         +----+----+----+----+----+
 *         | e9 |   rel32 (LE, s32)  |
 *         +----+----+----+----+----+
 *                                    ^ rel32 is relative to here: target = from + 5 + rel32
 *
 * Reach: target - (from + 5) in [-2^31, 2^31 - 1].
 */
export const REL32_JUMP_SIZE = 5;
const JMP_REL32_OPCODE = 0xe9;

/**
 * Absolute indirect jump through a qword stored right after the instruction, `jmp *0(%rip)`:
 *
 *   offset  0    1    2    3    4    5    6                                  13
 *         +----+----+----+----+----+----+----+----+----+----+----+----+----+----+
 *         | ff | 25 |   disp32 = 0      |        abs64 target (LE, u64)         |
 *         +----+----+----+----+----+----+----+----+----+----+----+----+----+----+
 *           ff /4 with ModRM 0x25 = mod 00, reg 100 (jmp near indirect), rm 101 (RIP+disp32);
 *           RIP-relative addressing counts from the end of the 6-byte instruction, i.e. offset 6.
 *
 * No register is clobbered. (`movabs $t, %rax; jmp *%rax` would destroy %al, which carries the
 * number of vector registers used by a varargs call at function entry.)
 */
export const ABS64_JUMP_SIZE = 14;
const JMP_ABS64_PREFIX = Buffer.from([0xff, 0x25, 0x00, 0x00, 0x00, 0x00]);

/** Bytes to read at a function entry to see an endbr64 plus the longest jump after it. */
export const ENTRY_PROBE_SIZE = ENDBR64_SIZE + ABS64_JUMP_SIZE; // 18

export type JumpKind = 'rel32' | 'abs64';

/** Displacement range of a rel32 field: a signed 32-bit integer. */
export const REL32_MIN = -0x80000000;
export const REL32_MAX = 0x7fffffff;

export function jumpSize(kind: JumpKind): number {
  return kind === 'rel32' ? REL32_JUMP_SIZE : ABS64_JUMP_SIZE;
}

function checkAddress(what: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new HpError('INVALID_ADDRESS', `refusing to encode a jump: ${what} ${String(value)} is not a non-negative integer address below 2^53`, {
      [what]: value,
    });
  }
}


/**
 * Whether an instruction of `length` bytes (default: a rel32 jump) at `from` whose rel32 field
 * is relative to its end can reach `to`.
 */
export function rel32Reaches(from: number, to: number, length: number = REL32_JUMP_SIZE): boolean {
  const disp = to - (from + length);
  return disp >= REL32_MIN && disp <= REL32_MAX;
}

/**
 * Encodes a jump at `from` to `to`. Without `kind`: rel32 when it reaches, else abs64.
 * Asking for rel32 when it cannot reach is refused with JUMP_OUT_OF_RANGE.
 */
export function encodeJump(from: number, to: number, kind?: JumpKind): { kind: JumpKind; bytes: Buffer } {
  checkAddress('from', from);
  checkAddress('to', to);
  const chosen: JumpKind = kind ?? (rel32Reaches(from, to) ? 'rel32' : 'abs64');
  if (chosen === 'rel32') {
    if (!rel32Reaches(from, to)) {
      throw new HpError(
        'JUMP_OUT_OF_RANGE',
        `refusing to encode a rel32 jump from ${hexAddr(from)} to ${hexAddr(to)}: the displacement ${to - from - REL32_JUMP_SIZE} does not fit in a signed 32-bit field`,
        { from, to },
      );
    }
    const bytes = Buffer.alloc(REL32_JUMP_SIZE);
    bytes[0] = JMP_REL32_OPCODE;
    bytes.writeInt32LE(to - (from + REL32_JUMP_SIZE), 1);
    return { kind: 'rel32', bytes };
  }
  const bytes = Buffer.alloc(ABS64_JUMP_SIZE);
  JMP_ABS64_PREFIX.copy(bytes, 0);
  bytes.writeBigUInt64LE(BigInt(to), JMP_ABS64_PREFIX.length);
  return { kind: 'abs64', bytes };
}

/**
 * Recognises a jump hp-agent writes (rel32 or abs64) at bytes[0], `address` being where bytes[0]
 * lives. Returns undefined for anything else, for truncated bytes, and for targets that are not
 * user-space-representable (negative or at/above 2^53).
 */
export function decodeJump(address: number, bytes: Buffer): { kind: JumpKind; target: number; length: number } | undefined {
  if (bytes.length >= REL32_JUMP_SIZE && bytes[0] === JMP_REL32_OPCODE) {
    const target = address + REL32_JUMP_SIZE + bytes.readInt32LE(1);
    if (target < 0 || !Number.isSafeInteger(target)) return undefined;
    return { kind: 'rel32', target, length: REL32_JUMP_SIZE };
  }
  if (bytes.length >= ABS64_JUMP_SIZE && bytes.subarray(0, JMP_ABS64_PREFIX.length).equals(JMP_ABS64_PREFIX)) {
    const target = bytes.readBigUInt64LE(JMP_ABS64_PREFIX.length);
    if (target > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
    return { kind: 'abs64', target: Number(target), length: ABS64_JUMP_SIZE };
  }
  return undefined;
}

export function hasEndbr64(bytes: Buffer): boolean {
  return bytes.length >= ENDBR64_SIZE && bytes.subarray(0, ENDBR64_SIZE).equals(ENDBR64);
}

export interface JumpSite {
  /** Function entry. */
  functionAddress: number;
  /** Where the jump goes: the entry, or entry + 4 when an endbr64 is kept. */
  siteAddress: number;
  kind: JumpKind;
  /** The jump to write at siteAddress. */
  bytes: Buffer;
  keptEndbr64: boolean;
  /** The bytes the jump replaces (same length as `bytes`). */
  original: Buffer;
}

/**
 * Decides where and how to write a jump from a function's entry to `target`.
 *
 *   entry                     entry + size
 *   | endbr64? | jump ........ | rest of the function |
 *              ^ siteAddress
 *
 * The jump must fit inside the function after the kept endbr64. rel32 is preferred; abs64 is used
 * when rel32 cannot reach and the function is long enough.
 */
export function planJumpSite(
  fn: { name: string; address: number; size: number; entryBytes: Buffer },
  target: number,
): JumpSite {
  checkAddress('address', fn.address);
  checkAddress('target', target);
  const keptEndbr64 = hasEndbr64(fn.entryBytes);
  const offset = keptEndbr64 ? ENDBR64_SIZE : 0;
  const siteAddress = fn.address + offset;
  const room = fn.size - offset;
  const reaches = rel32Reaches(siteAddress, target);
  const details = { function: fn.name, address: fn.address, size: fn.size, keptEndbr64, target };
  const where = `${fn.name} at ${hexAddr(fn.address)}`;
  const sizeText =
    fn.size <= 0
      ? 'its symbol has no size, so the room for a jump is unknown'
      : `it is ${fn.size} bytes long${keptEndbr64 ? ', 4 of them the endbr64 that must stay at its entry,' : ''} leaving ${Math.max(room, 0)} bytes`;

  let kind: JumpKind;
  if (room >= REL32_JUMP_SIZE && reaches) {
    kind = 'rel32';
  } else if (room >= ABS64_JUMP_SIZE) {
    kind = 'abs64';
  } else if (room >= REL32_JUMP_SIZE) {
    // Long enough for rel32 but the target is beyond its reach, and too short for abs64.
    throw new HpError(
      'JUMP_OUT_OF_RANGE',
      `refusing to patch ${where}: the target ${hexAddr(target)} is beyond the ±2 GiB reach of a ${REL32_JUMP_SIZE}-byte rel32 jump and ${sizeText}, fewer than the ${ABS64_JUMP_SIZE} bytes an absolute jump needs`,
      { ...details, bytesNeeded: ABS64_JUMP_SIZE + offset },
    );
  } else {
    const needed = (reaches ? REL32_JUMP_SIZE : ABS64_JUMP_SIZE) + offset;
    throw new HpError(
      'FUNCTION_TOO_SHORT',
      `refusing to patch ${where}: ${sizeText}, but the ${reaches ? 'rel32' : 'abs64'} jump needs ${needed - offset} bytes (${needed} from the entry)`,
      { ...details, bytesNeeded: needed },
    );
  }

  const length = jumpSize(kind);
  if (target >= siteAddress && target < siteAddress + length) {
    throw new HpError('JUMP_TARGET_INVALID', `refusing to patch ${where}: the target ${hexAddr(target)} lies inside the bytes the jump would overwrite`, details);
  }
  if (fn.entryBytes.length < offset + length) {
    throw new HpError(
      'ENTRY_BYTES_TOO_SHORT',
      `refusing to plan a jump for ${where}: only ${fn.entryBytes.length} entry bytes were supplied, but ${offset + length} are needed to record what the jump replaces`,
      { ...details, supplied: fn.entryBytes.length, bytesNeeded: offset + length },
    );
  }
  const { bytes } = encodeJump(siteAddress, target, kind);
  return {
    functionAddress: fn.address,
    siteAddress,
    kind,
    bytes,
    keptEndbr64,
    original: Buffer.from(fn.entryBytes.subarray(offset, offset + length)),
  };
}

/**
 * What is at a function entry now: an optional endbr64, then possibly one of our jumps (decoded
 * right after the endbr64 when there is one, otherwise at the entry).
 */
export function describeSiteAt(
  address: number,
  bytes: Buffer,
): { endbr64: boolean; jump?: { kind: JumpKind; target: number; length: number } } {
  const endbr64 = hasEndbr64(bytes);
  const offset = endbr64 ? ENDBR64_SIZE : 0;
  const jump = decodeJump(address + offset, bytes.subarray(offset));
  return jump ? { endbr64, jump } : { endbr64 };
}
