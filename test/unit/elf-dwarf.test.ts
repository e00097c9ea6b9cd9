// The DWARF reader (src/elf/dwarf.ts) and the inlined-copies query on objects gcc builds here
// with -g: DWARF 4 and 5, zlib-compressed sections, none at all, and the fixture `inlined`.
// readelf's own dump is the independent check of what the reader found.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixturePath } from '../../src/harness/index.js';
import { DW_TAG_inlined_subroutine } from '../../src/elf/dwarf.js';
import { ElfFile, inlinedCallers, readDwarf } from '../../src/elf/index.js';

let dir: string;

// `leaf` is inlined into `one` (once) and `two` (twice), keeps an out-of-line copy (address
// taken); `other` is never inlined.
const SOURCE = `
volatile int k = 3;
static int leaf(int x) { return x * k; }
int (*volatile leaf_ptr)(int) = leaf;
__attribute__((noinline)) int one(int x) { return leaf(x) + 1; }
__attribute__((noinline)) int two(int x) { return leaf(x) + leaf(x + 1); }
__attribute__((noinline)) int other(int x) { return x - k; }
int main(void) { return one(1) + two(2) + other(3) + leaf_ptr(4); }
`;

function build(name: string, flags: string[]): ElfFile {
  const src = join(dir, `${name}.c`);
  const out = join(dir, name);
  writeFileSync(src, SOURCE);
  execFileSync('gcc', ['-O2', ...flags, '-o', out, src], { stdio: ['ignore', 'pipe', 'pipe'] });
  return ElfFile.fromFile(out);
}

function readelfInlinedCount(file: string): number {
  const dump = execFileSync('readelf', ['--debug-dump=info', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return (dump.match(/\(DW_TAG_inlined_subroutine\)/g) ?? []).length;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hp-dwarf-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('readDwarf', () => {
  for (const version of [4, 5]) {
    it(`reads gcc's DWARF ${version}: every inlined subroutine readelf lists`, () => {
      const elf = build(`v${version}`, [`-gdwarf-${version}`]);
      const info = readDwarf(elf)!;
      expect(elf.section('.debug_info')).toBeDefined();
      const inlined = info.dies.filter((d) => d.tag === DW_TAG_inlined_subroutine);
      expect(inlined.length).toBe(readelfInlinedCount(join(dir, `v${version}`)));
      expect(inlined.length).toBeGreaterThanOrEqual(3);
      const one = info.dies.find((d) => d.name === 'one')!;
      expect(one.lowPc).toBe(elf.findSymbol('one')!.value);
    });
  }

  it('reads zlib-compressed debug sections', () => {
    const elf = build('z', ['-g', '-gz=zlib']);
    expect(elf.section('.debug_info')!.flags & 0x800).toBe(0x800);
    expect(inlinedCallers(elf, 'leaf')).toMatchObject({ dwarf: true, callers: [{ name: 'one' }, { name: 'two' }] });
  });

  it('says there is no DWARF in an object built without -g', () => {
    const elf = build('nog', []);
    expect(readDwarf(elf)).toBeUndefined();
    expect(inlinedCallers(elf, 'leaf')).toEqual({ dwarf: false, reason: 'the object has no DWARF (.debug_info)' });
  });
});

describe('inlinedCallers', () => {
  it('names each caller with its address and number of copies', () => {
    for (const version of [4, 5]) {
      const elf = build(`c${version}`, [`-gdwarf-${version}`]);
      const check = inlinedCallers(elf, 'leaf');
      expect(check).toEqual({
        dwarf: true,
        callers: [
          { name: 'one', address: elf.findSymbol('one')!.value, copies: 1 },
          { name: 'two', address: elf.findSymbol('two')!.value, copies: 2 },
        ].sort((a, b) => a.address - b.address),
      });
    }
  });

  it('finds no caller for a function that was never inlined', () => {
    expect(inlinedCallers(build('n', ['-g']), 'other')).toEqual({ dwarf: true, callers: [] });
  });

  it('names answer_a and answer_b in the fixture target `inlined`', () => {
    const elf = ElfFile.fromFile(fixturePath('inlined'));
    const check = inlinedCallers(elf, 'scale');
    expect(check.dwarf).toBe(true);
    expect(check.dwarf && check.callers.map((c) => c.name).sort()).toEqual(['answer_a', 'answer_b']);
  });
});
