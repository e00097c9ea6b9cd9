import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import {
  ABS64_JUMP_SIZE,
  ENDBR64,
  ENTRY_PROBE_SIZE,
  REL32_JUMP_SIZE,
  decodeJump,
  describeSiteAt,
  encodeJump,
  hasEndbr64,
  planJumpSite,
  rel32Reaches,
} from '../../src/x64/index.js';

const TWO_31 = 2 ** 31;
const BASE = 0x7f1234560000;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hp-x64-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Insn {
  address: number;
  bytes: string;
  text: string;
}

/** Disassembles raw bytes placed at `vma` with binutils, independently of our decoder. */
function objdump(bytes: Buffer, vma: number): Insn[] {
  const file = join(dir, 'code.bin');
  writeFileSync(file, bytes);
  const out = execFileSync('objdump', ['-D', '-b', 'binary', '-mi386:x86-64', `--adjust-vma=0x${vma.toString(16)}`, file], {
    encoding: 'utf8',
  });
  const insns: Insn[] = [];
  for (const line of out.split('\n')) {
    const m = /^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(.*)$/.exec(line);
    if (m) insns.push({ address: parseInt(m[1], 16), bytes: m[2], text: m[3].replace(/\s+/g, ' ').trim() });
  }
  return insns;
}

/** Assembles with gas and returns the .text bytes. */
function gas(source: string): Buffer {
  const src = join(dir, 'a.s');
  const obj = join(dir, 'a.o');
  const bin = join(dir, 'a.bin');
  writeFileSync(src, source);
  execFileSync('as', ['--64', '-o', obj, src]);
  execFileSync('objcopy', ['-O', 'binary', '-j', '.text', obj, bin]);
  return readFileSync(bin);
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

describe('rel32Reaches', () => {
  it('measures from the end of the instruction, exactly ±2^31', () => {
    const from = BASE;
    const lastForward = from + REL32_JUMP_SIZE + (TWO_31 - 1);
    const lastBackward = from + REL32_JUMP_SIZE - TWO_31;
    expect(rel32Reaches(from, lastForward)).toBe(true);
    expect(rel32Reaches(from, lastForward + 1)).toBe(false);
    expect(rel32Reaches(from, lastBackward)).toBe(true);
    expect(rel32Reaches(from, lastBackward - 1)).toBe(false);
    // A custom instruction length moves the window.
    expect(rel32Reaches(from, from + 14 + TWO_31 - 1, 14)).toBe(true);
    expect(rel32Reaches(from, from + 14 + TWO_31, 14)).toBe(false);
  });
});

describe('encodeJump / decodeJump', () => {
  const from = BASE;
  const cases: Array<[string, number]> = [
    ['to itself', from],
    ['next instruction', from + REL32_JUMP_SIZE],
    ['short backward', from - 0x40],
    ['last forward reachable', from + REL32_JUMP_SIZE + TWO_31 - 1],
    ['last backward reachable', from + REL32_JUMP_SIZE - TWO_31],
  ];
  for (const [name, to] of cases) {
    it(`rel32 ${name}: round trip and objdump agree`, () => {
      const { kind, bytes } = encodeJump(from, to);
      expect(kind).toBe('rel32');
      expect(bytes.length).toBe(REL32_JUMP_SIZE);
      expect(decodeJump(from, bytes)).toEqual({ kind: 'rel32', target: to, length: REL32_JUMP_SIZE });
      const [insn] = objdump(bytes, from);
      expect(insn.address).toBe(from);
      expect(insn.bytes.split(' ').length).toBe(REL32_JUMP_SIZE);
      expect(insn.text).toBe(`jmp 0x${to.toString(16)}`);
    });
  }

  for (const [name, to] of [
    ['first forward unreachable', from + REL32_JUMP_SIZE + TWO_31],
    ['first backward unreachable', from + REL32_JUMP_SIZE - TWO_31 - 1],
    ['far away, above 2^32', 0x1122334455],
    ['high user space', 0x7ffffffff000 - 0x10],
  ] as Array<[string, number]>) {
    it(`abs64 ${name}: fallback, round trip, objdump and gas agree`, () => {
      const { kind, bytes } = encodeJump(from, to);
      expect(kind).toBe('abs64');
      expect(bytes.length).toBe(ABS64_JUMP_SIZE);
      expect(decodeJump(from, bytes)).toEqual({ kind: 'abs64', target: to, length: ABS64_JUMP_SIZE });
      // objdump: an indirect jmp through the qword that starts right after the 6-byte instruction.
      const [insn] = objdump(bytes, from);
      expect(insn.text).toBe(`jmp *0x0(%rip) # 0x${(from + 6).toString(16)}`);
      // gas: the same instruction followed by the target as a little-endian quad.
      expect(bytes.equals(gas(`.text\njmp *0(%rip)\n.quad 0x${to.toString(16)}\n`))).toBe(true);
    });
  }

  it('forcing rel32 out of range is refused; forcing abs64 in range is honoured', () => {
    expect(codeOf(() => encodeJump(from, from + REL32_JUMP_SIZE + TWO_31, 'rel32'))).toBe('JUMP_OUT_OF_RANGE');
    const near = encodeJump(from, from + 0x100, 'abs64');
    expect(near.kind).toBe('abs64');
    expect(decodeJump(from, near.bytes)?.target).toBe(from + 0x100);
  });

  it('refuses addresses that are not non-negative safe integers', () => {
    expect(codeOf(() => encodeJump(-1, 0x1000))).toBe('INVALID_ADDRESS');
    expect(codeOf(() => encodeJump(0x1000, 2 ** 53))).toBe('INVALID_ADDRESS');
    expect(codeOf(() => encodeJump(4096.5, 0x1000))).toBe('INVALID_ADDRESS');
  });

  it('decodes bytes gas produced for a rel32 jump', () => {
    // gas resolves a forward label at 0x100 bytes past the jump; force the 5-byte form.
    const bytes = gas('.text\n{disp32} jmp 1f\n.skip 0x100, 0x90\n1: nop\n');
    expect(decodeJump(0x400000, bytes)).toEqual({ kind: 'rel32', target: 0x400000 + 5 + 0x100, length: 5 });
  });

  it('recognises nothing else', () => {
    expect(decodeJump(0x1000, Buffer.from([]))).toBeUndefined();
    expect(decodeJump(0x1000, Buffer.from([0xe9, 0, 0, 0]))).toBeUndefined(); // truncated rel32
    expect(decodeJump(0x1000, Buffer.from([0xeb, 0xfe]))).toBeUndefined(); // jmp rel8
    expect(decodeJump(0x1000, Buffer.from([0x55, 0x48, 0x89, 0xe5, 0x90]))).toBeUndefined(); // push rbp; mov rsp,rbp
    const abs = encodeJump(0x1000, 0x7f0000000000, 'abs64').bytes;
    expect(decodeJump(0x1000, abs.subarray(0, 13))).toBeUndefined(); // truncated abs64
    const rax = Buffer.from([0xff, 0x25, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // jmp *1(%rip)
    expect(decodeJump(0x1000, rax)).toBeUndefined();
    // A rel32 jump whose target would be below address 0.
    expect(decodeJump(0x10, Buffer.from([0xe9, 0x00, 0x00, 0x00, 0x80]))).toBeUndefined();
    // An abs64 target at or above 2^53 is not a user-space address.
    const huge = Buffer.from(abs);
    huge.writeBigUInt64LE(0xffffffffff600000n, 6);
    expect(decodeJump(0x1000, huge)).toBeUndefined();
  });
});

describe('endbr64', () => {
  it('matches the bytes objdump calls endbr64', () => {
    expect(objdump(ENDBR64, 0x1000)[0].text).toBe('endbr64');
    expect(hasEndbr64(Buffer.from([0xf3, 0x0f, 0x1e, 0xfa, 0x55]))).toBe(true);
    expect(hasEndbr64(Buffer.from([0xf3, 0x0f, 0x1e, 0xfb]))).toBe(false); // endbr32
    expect(hasEndbr64(Buffer.from([0xf3, 0x0f, 0x1e]))).toBe(false);
  });
});

/** Builds a function body of `size` bytes: optional endbr64, then distinct filler bytes. */
function body(size: number, endbr: boolean): Buffer {
  const b = Buffer.alloc(Math.min(size, ENTRY_PROBE_SIZE));
  for (let i = 0; i < b.length; i++) b[i] = 0x40 + i;
  if (endbr) ENDBR64.copy(b, 0, 0, Math.min(4, b.length));
  return b;
}

describe('planJumpSite', () => {
  const address = 0x555555554000 + 0x1139;

  it('keeps endbr64 and writes a rel32 after it', () => {
    const entryBytes = body(64, true);
    const target = address + 0x10000;
    const site = planJumpSite({ name: 'greet', address, size: 64, entryBytes }, target);
    expect(site).toMatchObject({ functionAddress: address, siteAddress: address + 4, kind: 'rel32', keptEndbr64: true });
    expect(site.original.equals(entryBytes.subarray(4, 9))).toBe(true);
    // The patched entry, disassembled, is endbr64 followed by a jmp to the target.
    const patched = Buffer.concat([ENDBR64, site.bytes]);
    const insns = objdump(patched, address);
    expect(insns.map((i) => i.text)).toEqual(['endbr64', `jmp 0x${target.toString(16)}`]);
    expect(describeSiteAt(address, patched)).toEqual({ endbr64: true, jump: { kind: 'rel32', target, length: 5 } });
  });

  it('writes at the entry when there is no endbr64', () => {
    const entryBytes = body(5, false);
    const site = planJumpSite({ name: 'tiny', address, size: 5, entryBytes }, address - 0x1000);
    expect(site).toMatchObject({ siteAddress: address, kind: 'rel32', keptEndbr64: false });
    expect(site.original.equals(entryBytes)).toBe(true);
  });

  it('falls back to abs64 when rel32 cannot reach and the function is long enough', () => {
    const far = address + 5 + 4 + TWO_31; // first target rel32 from entry+4 cannot reach
    const site = planJumpSite({ name: 'greet', address, size: 18, entryBytes: body(18, true) }, far);
    expect(site.kind).toBe('abs64');
    expect(site.siteAddress).toBe(address + 4);
    expect(site.original.length).toBe(ABS64_JUMP_SIZE);
    expect(describeSiteAt(address, Buffer.concat([ENDBR64, site.bytes])).jump).toEqual({ kind: 'abs64', target: far, length: 14 });
    // One byte closer and rel32 reaches again.
    expect(planJumpSite({ name: 'greet', address, size: 18, entryBytes: body(18, true) }, far - 1).kind).toBe('rel32');
  });

  it('refuses functions too short for a rel32 jump, naming function, size and bytes needed', () => {
    let err: unknown;
    try {
      planJumpSite({ name: 'ret42', address, size: 8, entryBytes: body(8, true) }, address + 0x100);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HpError);
    const e = err as HpError;
    expect(e.code).toBe('FUNCTION_TOO_SHORT');
    expect(e.message).toMatch(/ret42/);
    expect(e.message).toMatch(/8 bytes/);
    expect(e.message).toMatch(/needs 5 bytes/);
    expect(e.details).toMatchObject({ function: 'ret42', size: 8, bytesNeeded: 9 });
    // Without endbr64 the same 4 bytes are not enough either; 5 are.
    expect(codeOf(() => planJumpSite({ name: 'f', address, size: 4, entryBytes: body(4, false) }, address + 0x100))).toBe('FUNCTION_TOO_SHORT');
    expect(codeOf(() => planJumpSite({ name: 'f', address, size: 0, entryBytes: body(18, false) }, address + 0x100))).toBe('FUNCTION_TOO_SHORT');
  });

  it('refuses out-of-range targets when only a rel32 would fit', () => {
    const far = address + 0x100000000;
    const e = (() => {
      try {
        planJumpSite({ name: 'mid', address, size: 17, entryBytes: body(17, true) }, far);
      } catch (err) {
        return err as HpError;
      }
      throw new Error('expected a refusal');
    })();
    expect(e.code).toBe('JUMP_OUT_OF_RANGE');
    expect(e.message).toMatch(/mid/);
    expect(e.details).toMatchObject({ bytesNeeded: 18 });
    // Too short even for rel32 and out of range: the function is too short.
    expect(codeOf(() => planJumpSite({ name: 'f', address, size: 8, entryBytes: body(8, true) }, far))).toBe('FUNCTION_TOO_SHORT');
  });

  it('refuses a target inside the overwritten bytes and too few entry bytes', () => {
    expect(codeOf(() => planJumpSite({ name: 'f', address, size: 64, entryBytes: body(64, true) }, address + 6))).toBe('JUMP_TARGET_INVALID');
    expect(codeOf(() => planJumpSite({ name: 'f', address, size: 64, entryBytes: body(64, true).subarray(0, 6) }, address + 0x100))).toBe(
      'ENTRY_BYTES_TOO_SHORT',
    );
  });
});

describe('describeSiteAt', () => {
  it('reports an unpatched entry', () => {
    expect(describeSiteAt(0x1000, Buffer.from([0x55, 0x48, 0x89, 0xe5]))).toEqual({ endbr64: false });
    expect(describeSiteAt(0x1000, Buffer.concat([ENDBR64, Buffer.from([0x55, 0x48, 0x89, 0xe5, 0x90])]))).toEqual({ endbr64: true });
  });
  it('reports a jump at the entry when there is no endbr64', () => {
    const { bytes } = encodeJump(0x1000, 0x7f0000000000);
    expect(describeSiteAt(0x1000, bytes)).toEqual({ endbr64: false, jump: { kind: 'abs64', target: 0x7f0000000000, length: 14 } });
  });
});
