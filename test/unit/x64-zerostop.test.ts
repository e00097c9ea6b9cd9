// Zero-stop switching of hot-patchable entries: what gcc emits, which layouts we accept, and a
// proof by disassembly (binutils' objdump, independent of our code) that every intermediate state
// of every switch, revert and re-point is a valid instruction stream that does what the function
// did — from the entry and from every instruction boundary a preempted thread could sit on.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import {
  ENDBR64,
  HOTPATCH_PADDING_SIZE,
  HOTPATCH_PROBE_SIZE,
  detectPatchableEntry,
  planZeroStop,
  planZeroStopRepoint,
  planZeroStopRevert,
  switchedEntryBytes,
  zeroStopStateOf,
  type EntryNop,
  type PatchableEntry,
  type ZeroStopStep,
} from '../../src/x64/index.js';
import { hexAddr } from '../../src/hex.js';

const ENTRY = 0x55555555a175;
const TARGET = ENTRY + 0x10000000; // a patch mapped 256 MiB above
const OTHER_TARGET = TARGET + 0x40;
const RET = 0xc3;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hp-zerostop-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Insn {
  address: number;
  length: number;
  text: string;
}

let dumps = 0;
/** objdump's reading of raw bytes placed at `vma`. */
function disassemble(bytes: Buffer, vma: number): Insn[] {
  const file = join(dir, `state${dumps++}.bin`);
  writeFileSync(file, bytes);
  const out = execFileSync('objdump', ['-D', '-b', 'binary', '-mi386:x86-64', `--adjust-vma=0x${vma.toString(16)}`, file], { encoding: 'utf8' });
  const insns: Insn[] = [];
  for (const line of out.split('\n')) {
    const m = /^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(.*)$/.exec(line);
    if (m) insns.push({ address: parseInt(m[1], 16), length: m[2].split(' ').length, text: m[3].replace(/\s+/g, ' ').trim() });
  }
  return insns;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof HpError) return e.code;
    throw e;
  }
  return undefined;
}

/** Padding, optional endbr64, the entry NOP and a `ret` standing for the function body. */
function image(nop: number[], endbr: boolean): Buffer {
  return Buffer.from([...Array(HOTPATCH_PADDING_SIZE).fill(0x90), ...(endbr ? [...ENDBR64] : []), ...nop, RET]);
}

/** Writes one step into a copy of `code` (which starts at the padding), checking `before`. */
function applyStep(code: Buffer, layout: PatchableEntry, step: ZeroStopStep): Buffer {
  const at = step.addr - layout.paddingAddress;
  expect(code.subarray(at, at + step.before.length).equals(step.before), `before of step at ${hexAddr(step.addr)}`).toBe(true);
  const out = Buffer.from(code);
  step.after.copy(out, at);
  return out;
}

/** Every state a sequence of steps goes through, the starting one included. */
function states(code: Buffer, layout: PatchableEntry, steps: ZeroStopStep[]): Buffer[] {
  const out = [code];
  for (const s of steps) out.push(applyStep(out[out.length - 1], layout, s));
  return out;
}

const HARMLESS = new Set(['nop', 'xchg %ax,%ax', 'stc', 'cmc', 'endbr64']);

/**
 * What a thread that starts executing at `from` in this state does until it reaches the body
 * (site + 2) or jumps to the padding. Fails on anything else: an unknown instruction, one that
 * straddles the body's first byte, a jump elsewhere.
 */
function runFrom(code: Buffer, layout: PatchableEntry, from: number): string[] {
  const body = layout.siteAddress + 2;
  const insns = disassemble(code.subarray(from - layout.paddingAddress), from);
  const seen: string[] = [];
  let pc = from;
  for (const insn of insns) {
    expect(insn.address, `decoding from ${hexAddr(from)}`).toBe(pc);
    if (pc === body) return seen;
    seen.push(insn.text);
    if (insn.text.startsWith('jmp ')) {
      expect(insn.text, `the only jump is back to the padding`).toBe(`jmp ${hexAddr(layout.paddingAddress)}`);
      return seen;
    }
    expect(HARMLESS.has(insn.text), `"${insn.text}" at ${hexAddr(pc)} (from ${hexAddr(from)})`).toBe(true);
    pc += insn.length;
    expect(pc <= body, `an instruction at ${hexAddr(insn.address)} straddles the body at ${hexAddr(body)}`).toBe(true);
  }
  throw new Error(`ran off the end from ${hexAddr(from)}`);
}

/** Instruction starts between the entry and the body in a state, decoded from the entry. */
function boundaries(code: Buffer, layout: PatchableEntry): number[] {
  const body = layout.siteAddress + 2;
  return disassemble(code.subarray(HOTPATCH_PADDING_SIZE), layout.entryAddress)
    .map((i) => i.address)
    .filter((a) => a < body);
}

/**
 * The proof for one sequence of states: from the entry every state does something harmless and
 * then runs the body or jumps to the padding; and a thread preempted on any instruction boundary
 * of any state, resuming in any other state, does the same.
 */
function proveStates(all: Buffer[], layout: PatchableEntry): string[][] {
  const fromEntry = all.map((code) => runFrom(code, layout, layout.entryAddress));
  const starts = new Set(all.flatMap((code) => boundaries(code, layout)));
  for (const code of all) for (const b of starts) runFrom(code, layout, b);
  return fromEntry;
}

function paddingJumpText(code: Buffer, layout: PatchableEntry): string {
  return disassemble(code.subarray(0, HOTPATCH_PADDING_SIZE), layout.paddingAddress)[0].text;
}

describe('what gcc emits for -fpatchable-function-entry=7,5', () => {
  function compile(extra: string[]): { code: Buffer; compute: number } {
    const src = join(dir, 'f.c');
    const obj = join(dir, 'f.o');
    const text = join(dir, 'f.text');
    writeFileSync(src, 'volatile int one = 1;\n__attribute__((noipa)) int compute(int x) { return x + one; }\n');
    execFileSync('gcc', ['-O2', '-fpatchable-function-entry=7,5', ...extra, '-c', src, '-o', obj]);
    execFileSync('objcopy', ['-O', 'binary', '-j', '.text', obj, text]);
    const syms = execFileSync('readelf', ['-W', '--syms', obj], { encoding: 'utf8' });
    const m = /^\s*\d+:\s+([0-9a-f]+)\s+\d+\s+FUNC\s+\w+\s+\w+\s+\S+\s+compute$/m.exec(syms);
    if (!m) throw new Error('no compute in the object');
    return { code: readFileSync(text), compute: parseInt(m[1], 16) };
  }

  it('single-byte 90s around a plain entry: two-90, and the switch works on them', () => {
    const { code, compute } = compile(['-fcf-protection=none']);
    const around = code.subarray(compute - 5, compute - 5 + HOTPATCH_PROBE_SIZE);
    expect(around.subarray(0, 7).toString('hex')).toBe('90909090909090');
    const layout = detectPatchableEntry(ENTRY, around);
    expect(layout).toMatchObject({ entryNop: 'two-90', keptEndbr64: false, paddingAddress: ENTRY - 5, siteAddress: ENTRY });
  });

  it('with -fcf-protection=full: padding, endbr64, then the two 90s', () => {
    const { code, compute } = compile(['-fcf-protection=full']);
    const around = code.subarray(compute - 5, compute - 5 + HOTPATCH_PROBE_SIZE);
    expect(around.toString('hex')).toBe('9090909090' + 'f30f1efa' + '9090');
    const layout = detectPatchableEntry(ENTRY, around);
    expect(layout).toMatchObject({ entryNop: 'two-90', keptEndbr64: true, siteAddress: ENTRY + 4 });
  });

  it('without the option there is nothing to detect', () => {
    const src = join(dir, 'g.c');
    writeFileSync(src, 'volatile int one = 1;\n__attribute__((noipa)) int compute(int x) { return x + one; }\n');
    execFileSync('gcc', ['-O2', '-fcf-protection=none', '-c', src, '-o', join(dir, 'g.o')]);
    execFileSync('objcopy', ['-O', 'binary', '-j', '.text', join(dir, 'g.o'), join(dir, 'g.text')]);
    const code = readFileSync(join(dir, 'g.text'));
    // compute is at offset 0 here: pretend the 5 bytes before it are NOPs, the entry still is not one.
    const around = Buffer.concat([Buffer.alloc(5, 0x90), code.subarray(0, 6)]);
    expect(detectPatchableEntry(ENTRY, around)).toBeUndefined();
  });
});

describe('detectPatchableEntry', () => {
  it('accepts 90 90 and 66 90 (xchg %ax,%ax), with or without endbr64', () => {
    for (const [nop, kind] of [[[0x90, 0x90], 'two-90'], [[0x66, 0x90], '66-90']] as Array<[number[], EntryNop]>) {
      for (const endbr of [false, true]) {
        const layout = detectPatchableEntry(ENTRY, image(nop, endbr));
        expect(layout, `${kind} endbr=${endbr}`).toEqual({
          entryAddress: ENTRY,
          paddingAddress: ENTRY - 5,
          siteAddress: ENTRY + (endbr ? 4 : 0),
          keptEndbr64: endbr,
          entryNop: kind,
          padding: Buffer.alloc(5, 0x90),
          nop: Buffer.from(nop),
        });
      }
    }
    expect(disassemble(Buffer.from([0x66, 0x90]), 0x1000)[0].text).toBe('xchg %ax,%ax');
  });

  it('refuses everything else', () => {
    const cases: Array<[string, Buffer]> = [
      ['no padding', Buffer.from('cccccccccc9090c3', 'hex')],
      ['padding of 4', Buffer.from('cc909090909090c3', 'hex')],
      ['a 5-byte nopl as padding (not what gcc emits)', Buffer.from('0f1f4400009090c3', 'hex')],
      // mov %edi,%edi is the Windows hot-patch NOP on x86 but zero-extends %rdi on x86-64
      ['mov %edi,%edi at the entry', Buffer.from('90909090908bffc3', 'hex')],
      ['a 3-byte nop at the entry', Buffer.from('90909090900f1f00c3', 'hex')],
      ['one nop and code', Buffer.from('909090909090c3', 'hex')],
      ['a function body at the entry', Buffer.from('90909090908b0500000000', 'hex')],
      ['endbr64 then code', Buffer.from('9090909090f30f1efa8b05', 'hex')],
      ['too few bytes', Buffer.from('909090909090', 'hex')],
      ['endbr64 but the NOP cut off', Buffer.from('9090909090f30f1efa90', 'hex')],
    ];
    for (const [name, bytes] of cases) expect(detectPatchableEntry(ENTRY, bytes), name).toBeUndefined();
  });
});

describe.each([
  { kind: 'two-90', nop: [0x90, 0x90], endbr: false },
  { kind: 'two-90', nop: [0x90, 0x90], endbr: true },
  { kind: '66-90', nop: [0x66, 0x90], endbr: false },
  { kind: '66-90', nop: [0x66, 0x90], endbr: true },
] as Array<{ kind: EntryNop; nop: number[]; endbr: boolean }>)('the $kind entry (endbr64: $endbr)', ({ kind, nop, endbr }) => {
  const original = image(nop, endbr);
  const layout = detectPatchableEntry(ENTRY, original)!;
  const d8 = endbr ? 'cmc' : 'stc';
  const back = `jmp ${hexAddr(ENTRY - 5)}`;
  const pre = endbr ? ['endbr64'] : [];

  it('switch: padding first, then one byte at a time; every state proven by objdump', () => {
    const steps = planZeroStop(ENTRY, layout, TARGET);
    expect(steps[0]).toMatchObject({ addr: ENTRY - 5, what: 'padding' });
    expect(steps.slice(1).every((s) => s.what === 'entry' && s.before.length === 1 && s.after.length === 1)).toBe(true);
    const all = states(original, layout, steps);
    const seen = proveStates(all, layout);
    const expected =
      kind === 'two-90'
        ? [['nop', 'nop'], ['nop', 'nop'], ['nop', d8], [back]]
        : [['xchg %ax,%ax'], ['xchg %ax,%ax'], ['nop', 'nop'], ['nop', d8], [back]];
    expect(seen).toEqual(expected.map((s) => [...pre, ...s]));
    const final = all[all.length - 1];
    expect(paddingJumpText(final, layout)).toBe(`jmp ${hexAddr(TARGET)}`);
    expect(final.subarray(layout.siteAddress - layout.paddingAddress, layout.siteAddress - layout.paddingAddress + 2).equals(switchedEntryBytes(layout))).toBe(true);
    expect(zeroStopStateOf(layout, final)).toEqual({ state: 'switched', target: TARGET });
    expect(zeroStopStateOf(layout, original)).toEqual({ state: 'original' });
    // Intermediate states are neither: a half-done switch is never mistaken for a finished one.
    for (const mid of all.slice(1, -1)) expect(zeroStopStateOf(layout, mid).state).toBe('other');
  });

  it('revert is the mirror image and gives back the exact original bytes', () => {
    const switched = states(original, layout, planZeroStop(ENTRY, layout, TARGET)).pop()!;
    const steps = planZeroStopRevert(ENTRY, layout, TARGET);
    expect(steps[steps.length - 1]).toMatchObject({ addr: ENTRY - 5, what: 'padding' });
    const all = states(switched, layout, steps);
    const seen = proveStates(all, layout);
    expect(seen[0]).toEqual([...pre, back]);
    expect(seen[1]).toEqual([...pre, 'nop', d8]);
    expect(all[all.length - 1].equals(original)).toBe(true);
    // The entry is back to its NOP before the padding loses its jump.
    expect(all[all.length - 2].subarray(layout.siteAddress - layout.paddingAddress).subarray(0, 2).equals(Buffer.from(nop))).toBe(true);
  });

  it('re-point: unflip, rewrite the padding, flip again (the window runs the original)', () => {
    const switched = states(original, layout, planZeroStop(ENTRY, layout, TARGET)).pop()!;
    const steps = planZeroStopRepoint(ENTRY, layout, TARGET, OTHER_TARGET);
    const all = states(switched, layout, steps);
    proveStates(all, layout);
    const padIndex = steps.findIndex((s) => s.what === 'padding');
    // When the padding is rewritten, the entry is its original NOP: no call can reach the padding.
    const at = layout.siteAddress - layout.paddingAddress;
    expect(all[padIndex].subarray(at, at + 2).equals(Buffer.from(nop))).toBe(true);
    expect(zeroStopStateOf(layout, all[all.length - 1])).toEqual({ state: 'switched', target: OTHER_TARGET });
  });

  it('the first byte first would be fatal: that order is never planned', () => {
    const wrong = Buffer.from([0xeb, nop[1]]);
    const [insn] = disassemble(wrong, layout.siteAddress);
    expect(insn.text).toBe(`jmp ${hexAddr(layout.siteAddress + 2 + (nop[1] << 24 >> 24))}`);
    const all = states(original, layout, planZeroStop(ENTRY, layout, TARGET));
    const at = layout.siteAddress - layout.paddingAddress;
    for (const s of all) expect(s.subarray(at, at + 2).equals(wrong)).toBe(false);
  });
});

describe('planZeroStop refusals', () => {
  const layout = detectPatchableEntry(ENTRY, image([0x90, 0x90], false))!;

  it('rel32 counts from the entry (padding + 5): exactly ±2 GiB', () => {
    const lastForward = ENTRY + 2 ** 31 - 1;
    const lastBackward = ENTRY - 2 ** 31;
    expect(paddingTarget(planZeroStop(ENTRY, layout, lastForward))).toBe(lastForward);
    expect(paddingTarget(planZeroStop(ENTRY, layout, lastBackward))).toBe(lastBackward);
    expect(codeOf(() => planZeroStop(ENTRY, layout, lastForward + 1))).toBe('JUMP_OUT_OF_RANGE');
    expect(codeOf(() => planZeroStop(ENTRY, layout, lastBackward - 1))).toBe('JUMP_OUT_OF_RANGE');
    expect(codeOf(() => planZeroStopRevert(ENTRY, layout, lastForward + 1))).toBe('JUMP_OUT_OF_RANGE');
  });

  it('a target inside the rewritten bytes, or a layout for another entry', () => {
    expect(codeOf(() => planZeroStop(ENTRY, layout, ENTRY - 5))).toBe('JUMP_TARGET_INVALID');
    expect(codeOf(() => planZeroStop(ENTRY, layout, ENTRY + 1))).toBe('JUMP_TARGET_INVALID');
    expect(codeOf(() => planZeroStop(ENTRY, layout, ENTRY + 2))).toBeUndefined();
    expect(codeOf(() => planZeroStop(ENTRY + 16, layout, TARGET))).toBe('INVALID_ARGUMENT');
  });

  function paddingTarget(steps: ZeroStopStep[]): number {
    const jump = steps[0].after;
    return ENTRY + jump.readInt32LE(1);
  }
});
