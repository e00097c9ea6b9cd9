// The static check of src/x64/branches.ts on hand-written function bytes: no process needed.
import { describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { controlTransfers, instructionText, landingsInside, refuseLandingsInside, type OverwriteSite } from '../../src/x64/index.js';

const bytes = (...b: number[]) => Buffer.from(b);

/** A loop whose head is at entry+2:  xor %eax,%eax; L: add $1,%eax; cmp %edi,%eax; jl L; ret */
const LOOP_AT_2 = bytes(0x31, 0xc0, 0x83, 0xc0, 0x01, 0x39, 0xf8, 0x7c, 0xf9, 0xc3);
/** A call from inside the first bytes:  xor %eax,%eax; call *%rax (returns to entry+4); ret */
const CALL_ENDS_AT_4 = bytes(0x31, 0xc0, 0xff, 0xd0, 0xc3);
/** push %rbp; call *%rax (returns to entry+3); pop %rbp; ret */
const CALL_ENDS_AT_3 = bytes(0x55, 0xff, 0xd0, 0x5d, 0xc3);
/** A call at the entry to entry+0x105 (returns to entry+5); ret */
const CALL_AT_ENTRY = bytes(0xe8, 0x00, 0x01, 0x00, 0x00, 0xc3);

const site = (over: Partial<OverwriteSite> = {}): OverwriteSite => ({ name: 'f', address: 0x401000, start: 0, length: 5, form: 'entry', ...over });

function refusal(code: Buffer, over: Partial<OverwriteSite> = {}): HpError | undefined {
  try {
    refuseLandingsInside(site(over), code, controlTransfers(code));
    return undefined;
  } catch (e) {
    if (e instanceof HpError) return e;
    throw e;
  }
}

describe('controlTransfers', () => {
  it('decodes direct branches of every length and calls, direct or not', () => {
    // jl rel8 back to +2 at +7 (from LOOP_AT_2)
    expect(controlTransfers(LOOP_AT_2)).toEqual([{ offset: 7, length: 2, call: false, target: 2 }]);
    expect(controlTransfers(CALL_ENDS_AT_4)).toEqual([{ offset: 2, length: 2, call: true }]);
    expect(controlTransfers(CALL_AT_ENTRY)).toEqual([{ offset: 0, length: 5, call: true, target: 0x105 }]);
    // jcc rel32 (0f 8c), jmp rel32 (e9), loop (e2), jrcxz (e3), each back to +1
    const code = bytes(0x90, 0x0f, 0x8c, 0xfa, 0xff, 0xff, 0xff, 0xe9, 0xf5, 0xff, 0xff, 0xff, 0xe2, 0xf3, 0xe3, 0xf1, 0xc3);
    expect(controlTransfers(code).map((t) => [t.offset, t.length, t.target])).toEqual([
      [1, 6, 1],
      [7, 5, 1],
      [12, 2, 1],
      [14, 2, 1],
    ]);
  });

  it('is a real decoder: bytes that look like a branch inside another instruction are not one', () => {
    // movabs $0xfeeb7ceb..., %rax holds eb fe / 7c eb (jmp .; jl) in its immediate; then ret.
    const code = bytes(0x48, 0xb8, 0xeb, 0xfd, 0x7c, 0xfa, 0xe8, 0xf9, 0xff, 0xff, 0xc3);
    expect(controlTransfers(code)).toEqual([]);
    // an endbr64 (f3 0f 1e fa) is one 4-byte instruction, and the loop after it is seen
    const endbr = bytes(0xf3, 0x0f, 0x1e, 0xfa, 0x31, 0xc0, 0xff, 0xc0, 0xeb, 0xfc, 0xc3);
    expect(controlTransfers(endbr)).toEqual([{ offset: 8, length: 2, call: false, target: 6 }]);
  });

  it('prints an instruction as objdump does, at its address', () => {
    expect(instructionText(LOOP_AT_2, 7, 0x401000)).toBe('jl 0x401002');
    expect(instructionText(CALL_ENDS_AT_4, 2, 0x401000)).toBe('call *%rax');
  });
});

describe('landingsInside', () => {
  it('flags targets and return addresses strictly inside the overwritten bytes', () => {
    expect(landingsInside(controlTransfers(LOOP_AT_2), 0, 5)).toEqual([{ offset: 7, how: 'branch', lands: 2 }]);
    expect(landingsInside(controlTransfers(CALL_ENDS_AT_4), 0, 5)).toEqual([{ offset: 2, how: 'return', lands: 4 }]);
    expect(landingsInside(controlTransfers(CALL_ENDS_AT_3), 0, 5)).toEqual([{ offset: 1, how: 'return', lands: 3 }]);
  });

  it('counts a syscall in the first bytes as a return into them (libc\'s __read_nocancel: xor %eax,%eax; syscall)', () => {
    expect(landingsInside(controlTransfers(bytes(0x31, 0xc0, 0x0f, 0x05, 0xc3)), 0, 5)).toEqual([{ offset: 2, how: 'return', lands: 4 }]);
  });

  it('lets a branch to the site itself and a return right after the bytes through', () => {
    // jmp back to the entry (a tail call to itself): it runs the jump, like any call
    expect(landingsInside(controlTransfers(bytes(0x48, 0xff, 0x07, 0xeb, 0xfb)), 0, 5)).toEqual([]);
    expect(landingsInside(controlTransfers(CALL_AT_ENTRY), 0, 5)).toEqual([]);
    // ... but the 14-byte absolute jump covers entry+5
    expect(landingsInside(controlTransfers(CALL_AT_ENTRY), 0, 14)).toEqual([{ offset: 0, how: 'return', lands: 5 }]);
  });

  it('counts from the site after an endbr64, and only the 2 bytes of a hot-patchable entry', () => {
    // endbr64; xor; L(+6): inc %eax; jmp L — the head is at entry+6, site+2
    const endbr = controlTransfers(bytes(0xf3, 0x0f, 0x1e, 0xfa, 0x31, 0xc0, 0xff, 0xc0, 0xeb, 0xfc, 0xc3));
    expect(landingsInside(endbr, 4, 5)).toEqual([{ offset: 8, how: 'branch', lands: 6 }]);
    expect(landingsInside(endbr, 4, 2)).toEqual([]);
    // a branch to entry+4 (the site itself) is not inside
    expect(landingsInside(endbr, 6, 5)).toEqual([]);
    // entry NOP 66 90, then a loop back to +1 (inside the 2 bytes)
    expect(landingsInside(controlTransfers(bytes(0x66, 0x90, 0xeb, 0xfd)), 0, 2)).toEqual([{ offset: 2, how: 'branch', lands: 1 }]);
    expect(landingsInside(controlTransfers(LOOP_AT_2), 0, 2)).toEqual([]);
  });
});

describe('refuseLandingsInside', () => {
  it('refuses the loop whose head is at entry+2, naming the branch, and offers zero-stop', () => {
    const e = refusal(LOOP_AT_2)!;
    expect(e.code).toBe('BRANCH_INTO_JUMP');
    expect(e.unchanged).toBe(true);
    expect(e.message).toContain('`jl 0x401002` at 0x401007 (f+7) jumps to f+2');
    expect(e.message).toContain('f+0 … f+4');
    expect(e.message).toMatch(/-fpatchable-function-entry=7,5.*zero-stop/);
    expect(e.message).toMatch(/Nothing was changed/);
    expect(e.details).toMatchObject({ function: 'f', form: 'entry', overwritten: { start: 0x401000, length: 5 }, landings: [{ address: 0x401007, offset: 7, how: 'branch', lands: 0x401002, instruction: 'jl 0x401002' }] });
  });

  it('refuses the call from inside the first bytes', () => {
    const e = refusal(CALL_ENDS_AT_4)!;
    expect(e.code).toBe('BRANCH_INTO_JUMP');
    expect(e.message).toContain('`call *%rax` at 0x401002 (f+2) returns to f+4');
    expect(refusal(CALL_ENDS_AT_3)?.code).toBe('BRANCH_INTO_JUMP');
  });

  it('passes a function whose code lands nowhere inside, and says so for the padding form', () => {
    expect(refusal(CALL_AT_ENTRY)).toBeUndefined();
    expect(refusal(LOOP_AT_2, { length: 2, form: 'padding' })).toBeUndefined();
    const e = refusal(bytes(0x66, 0x90, 0xeb, 0xfd), { length: 2, form: 'padding' })!;
    expect(e.message).toContain('the 2-byte NOP of its hot-patchable entry');
    expect(e.message).toContain('Not even zero-stop mode');
  });

  it('uses the caller\'s alternative, and the verb of its command', () => {
    const e = refusal(LOOP_AT_2, { alternative: 'Revert it first', verb: 'pack' })!;
    expect(e.message).toMatch(/^refusing to pack f at 0x401000: /);
    expect(e.message).toContain('Revert it first. Nothing was changed');
  });
});
