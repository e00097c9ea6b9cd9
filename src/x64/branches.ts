/**
 * Where a function's own code lands inside the bytes a jump over its entry would overwrite.
 *
 *   entry     site                     site + len
 *   | endbr64?| j  u  m  p  .  .  .  . | rest of the function ...
 *                ^^^^^^^^^^^^^^^^^^^^^ a branch target or a return address here (strictly after
 *                                      the site) resumes in the middle of the jump: SIGILL, or
 *                                      worse, whatever the jump's bytes decode to
 *
 * Compilers do put loop heads there (libc's sem_trywait loops back to +3, redis' decode_hex4 to
 * +2), and a call in the first bytes returns into them. Such a function is refused before
 * anything is written: the check walks every instruction of the function from its symbol's start
 * to its size with a real decoder and looks at each direct branch (jmp, jcc, loop, jrcxz, call,
 * xbegin — any encoding length) and at the end of each call (direct or indirect: its return
 * address; `syscall` counts as one, as the decoder says: a thread blocked in it resumes after it). A target exactly at the site is fine: it runs the jump, as a call of the function
 * does.
 *
 * What a static look cannot see: indirect jumps (jump tables, computed gotos) and code of OTHER
 * functions branching into this one's first bytes. The first are why the native core also checks
 * every thread's stack during the stop; neither is known to occur in compiled code for the bytes
 * right after an entry. A linear sweep can also be misled by data embedded in the text (not what
 * gcc or clang emit on x86-64); then it may see a branch that is not there and refuse: the safe
 * side.
 *
 * Decoder: iced-x86 (npm), a maintained x86 decoder (Rust compiled to WebAssembly, MIT). Chosen
 * over Capstone in the native core because it needs no system package, no change to the native
 * build, and runs in the unit tests and at `pack` time without a process; its 780 KB of
 * WebAssembly are compiled (~40 ms) on first use only, so commands that patch nothing never pay.
 */
import { createRequire } from 'node:module';
import type * as Iced from 'iced-x86';
import { HpError } from '../errors.js';
import { hexAddr } from '../hex.js';

type IcedModule = typeof Iced;
let iced: IcedModule | undefined;

/** The decoder, loaded on first use (see the header). */
function decoderModule(): IcedModule {
  iced ??= createRequire(import.meta.url)('iced-x86') as IcedModule;
  return iced;
}

/** An instruction of interest: a direct branch (its target) and/or a call (its return address). */
export interface ControlTransfer {
  /** Offset of the instruction from the function's start. */
  offset: number;
  length: number;
  /** Where a direct branch lands, as an offset from the function's start (may be outside it). */
  target?: number;
  /** A call (direct, indirect, or a syscall): it returns to offset + length. */
  call: boolean;
}

/**
 * Every direct branch and every call of a function's code, decoded from its first byte to its
 * last. The result depends only on the bytes: callers decoding the same function in many
 * processes decode it once.
 */
export function controlTransfers(code: Uint8Array): ControlTransfer[] {
  const { Decoder, DecoderOptions, FlowControl, Instruction, OpKind } = decoderModule();
  const decoder = new Decoder(64, code, DecoderOptions.None);
  const insn = new Instruction();
  const out: ControlTransfer[] = [];
  try {
    decoder.ip = 0n;
    while (decoder.canDecode) {
      decoder.decodeOut(insn);
      const flow = insn.flowControl;
      const call = flow === FlowControl.Call || flow === FlowControl.IndirectCall;
      const k = insn.op0Kind;
      const direct = k === OpKind.NearBranch16 || k === OpKind.NearBranch32 || k === OpKind.NearBranch64;
      if (!call && !direct) continue;
      const offset = Number(insn.ip);
      const target = direct ? Number(BigInt.asIntN(64, insn.nearBranchTarget)) : undefined;
      out.push({ offset, length: insn.length, call, ...(target !== undefined ? { target } : {}) });
    }
  } finally {
    insn.free();
    decoder.free();
  }
  return out;
}

/**
 * The instruction at `offset` of `code` in AT&T syntax, as objdump prints it, decoded as if the
 * code started at `address` (so its branch target is an address).
 */
export function instructionText(code: Uint8Array, offset: number, address: number): string {
  const { Decoder, DecoderOptions, Formatter, FormatterSyntax } = decoderModule();
  const decoder = new Decoder(64, code.subarray(offset), DecoderOptions.None);
  const formatter = new Formatter(FormatterSyntax.Gas);
  try {
    formatter.branchLeadingZeros = false;
    formatter.leadingZeros = false;
    formatter.uppercaseHex = false;
    decoder.ip = BigInt(address + offset);
    const insn = decoder.decode();
    try {
      return formatter.format(insn);
    } finally {
      insn.free();
    }
  } finally {
    formatter.free();
    decoder.free();
  }
}

/** How an instruction lands inside the overwritten bytes. */
export interface LandingInside {
  /** Offset of the instruction from the function's start. */
  offset: number;
  /** 'branch': a direct branch targets the bytes; 'return': a call ends in them (returns there). */
  how: 'branch' | 'return';
  /** Offset from the function's start where execution would resume. */
  lands: number;
}

/**
 * The instructions of `transfers` that land strictly inside [start, start + length) — offsets
 * from the function's start: the overwritten bytes, `start` being where the jump is written.
 */
export function landingsInside(transfers: ControlTransfer[], start: number, length: number): LandingInside[] {
  const inside = (at: number) => at > start && at < start + length;
  const out: LandingInside[] = [];
  for (const t of transfers) {
    if (t.target !== undefined && inside(t.target)) out.push({ offset: t.offset, how: 'branch', lands: t.target });
    if (t.call && inside(t.offset + t.length)) out.push({ offset: t.offset, how: 'return', lands: t.offset + t.length });
  }
  return out;
}

const plus = (n: number): string => `+${n}`;

export interface OverwriteSite {
  /** Function name and entry address (for the message), and the object it is in (for the details). */
  name: string;
  object?: string;
  address: number;
  /** Offset of the first overwritten byte from the entry (0, or 4 after an endbr64). */
  start: number;
  /** How many bytes are overwritten there. */
  length: number;
  /** 'entry': a jump written over the entry; 'padding': only the hot-patchable entry's 2-byte NOP. */
  form: 'entry' | 'padding';
  /**
   * For the entry form: whether this function could instead change through a hot-patchable entry
   * (its object lists it, and nothing lands inside its 2-byte NOP), and how to get there.
   */
  alternative?: string;
  /** Where the refusal is made ('patch', 'pack'): the verb of the message. */
  verb?: string;
}

/**
 * Refuses (BRANCH_INTO_JUMP) when the function's own code lands strictly inside the bytes the
 * jump would overwrite, naming every such instruction; returns quietly otherwise. `code` is the
 * function's bytes (from its entry), `transfers` what controlTransfers found in them.
 */
export function refuseLandingsInside(site: OverwriteSite, code: Uint8Array, transfers: ControlTransfer[]): void {
  const found = landingsInside(transfers, site.start, site.length).map((f) => ({ ...f, text: instructionText(code, f.offset, site.address) }));
  if (found.length === 0) return;
  const where = `${site.name} at ${hexAddr(site.address)}`;
  const what = site.form === 'padding' ? `the ${site.length}-byte NOP of its hot-patchable entry` : `the ${site.length} bytes the jump would overwrite`;
  const range = `${site.name}${plus(site.start)} … ${site.name}${plus(site.start + site.length - 1)}`;
  const each = found.map((f) =>
    f.how === 'branch'
      ? `\`${f.text}\` at ${hexAddr(site.address + f.offset)} (${site.name}${plus(f.offset)}) jumps to ${site.name}${plus(f.lands)}`
      : `\`${f.text}\` at ${hexAddr(site.address + f.offset)} (${site.name}${plus(f.offset)}) returns to ${site.name}${plus(f.lands)}`,
  );
  const shown = each.slice(0, 3).join('; ') + (each.length > 3 ? `; and ${each.length - 3} more` : '');
  const next =
    site.form === 'padding'
      ? 'Not even zero-stop mode can change it in place'
      : (site.alternative ?? 'Built with hot-patchable entries (-fpatchable-function-entry=7,5) it would change through its padding instead, overwriting only a 2-byte NOP at the entry (zero-stop mode)');
  throw new HpError(
    'BRANCH_INTO_JUMP',
    `refusing to ${site.verb ?? 'patch'} ${where}: its own code resumes inside ${what} (${range}), where a thread would run the middle of the jump: ${shown}. ${next}. Nothing was changed`,
    {
      function: site.name,
      ...(site.object !== undefined ? { object: site.object } : {}),
      address: site.address,
      form: site.form,
      overwritten: { start: site.address + site.start, length: site.length },
      landings: found.map((f) => ({ address: site.address + f.offset, offset: f.offset, instruction: f.text, how: f.how, lands: site.address + f.lands })),
    },
  );
}
