// The catalogue of error codes (src/errors.ts) against what the code really returns: every code
// the native core can return (it has no type to check them), every code thrown in src/, and the
// README's list. A code compared or thrown in TypeScript is checked by the compiler as well.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, HpError, isErrorCode } from '../../src/errors.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const catalogue = Object.keys(ERROR_CODES);

function filesUnder(dir: string, endings: string[]): string[] {
  return fs
    .readdirSync(path.join(root, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && endings.some((x) => e.name.endsWith(x)))
    .map((e) => path.join(e.parentPath, e.name));
}

function matches(files: string[], pattern: RegExp): Map<string, string> {
  const found = new Map<string, string>(); // code → first file that has it
  for (const file of files) {
    for (const m of fs.readFileSync(file, 'utf8').matchAll(pattern)) {
      if (!found.has(m[1])) found.set(m[1], path.relative(root, file));
    }
  }
  return found;
}

/**
 * The native core's codes: every upper-case string literal in its sources (they reach
 * TypeScript as the `code` of a rejected call, src/native.ts), except the environment variables
 * it reads, which are all named HP_AGENT_*.
 */
function nativeCodes(): Map<string, string> {
  const found = matches(filesUnder('native', ['.cc', '.h']), /"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)"/g);
  for (const code of [...found.keys()]) if (code.startsWith('HP_AGENT_')) found.delete(code);
  return found;
}

/** The codes src/ throws or reports: `new HpError('X'`, a refusal helper's `fail('X'`, `errorCode: 'X'`, checkNotTampered's code. */
function sourceCodes(): Map<string, string> {
  const files = filesUnder('src', ['.ts']).filter((f) => f !== path.join(root, 'src/errors.ts'));
  return new Map([
    ...matches(files, /(?:new HpError|\bfail)\(\s*'([A-Z][A-Z0-9_]*)'/g),
    ...matches(files, /errorCode: '([A-Z][A-Z0-9_]*)'/g),
    ...matches(files, /checkNotTampered\([^;]*?'([A-Z][A-Z0-9_]*)'/g),
  ]);
}

const unknown = (found: Map<string, string>) => [...found].filter(([code]) => !isErrorCode(code)).map(([code, file]) => `${code} (${file})`);

describe('error codes', () => {
  it('every code the native core can return is in the catalogue', () => {
    const found = nativeCodes();
    // The extraction works: the codes the transaction stops on are among them.
    for (const code of ['THREAD_IN_SITE', 'RETURN_INTO_SITE', 'FUNCTION_ACTIVE', 'VERIFY_FAILED', 'INTERNAL']) expect(found.has(code), code).toBe(true);
    expect(unknown(found)).toEqual([]);
  });

  it('every code thrown or reported in src/ is in the catalogue', () => {
    const found = sourceCodes();
    expect(found.size).toBeGreaterThan(90);
    expect(unknown(found)).toEqual([]);
  });

  it('every code of the catalogue is one the agent can return (none is left over)', () => {
    const sources = [...filesUnder('src', ['.ts']).filter((f) => !f.endsWith(`${path.sep}errors.ts`)), ...filesUnder('native', ['.cc', '.h'])];
    const used = matches(sources, /['"]([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)['"]/g);
    expect(catalogue.filter((code) => !used.has(code))).toEqual([]);
  });

  it('each code has a one-line meaning, and the catalogue is in alphabetical order', () => {
    for (const [code, info] of Object.entries(ERROR_CODES)) {
      expect(code).toMatch(/^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$/);
      expect(info.meaning, code).toMatch(/^[^\n]{10,140}$/);
      expect(typeof info.canChange, code).toBe('boolean');
    }
    expect(catalogue).toEqual([...catalogue].sort());
  });

  it('the README lists exactly the catalogue (npm run write-error-codes writes the list)', () => {
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    const section = /<!-- error codes: written by scripts\/write-error-codes\.mjs -->\n([\s\S]*?)<!-- end of error codes -->/.exec(readme);
    expect(section, 'the README has the error codes section').not.toBeNull();
    const listed = Object.fromEntries(
      [...section![1].matchAll(/^\| `([A-Z0-9_]+)` \| (.*) \| (yes|no) \|$/gm)].map((m) => [m[1], { meaning: m[2].replaceAll('\\|', '|'), canChange: m[3] === 'yes' }]),
    );
    expect(listed).toEqual(ERROR_CODES);
  });

  it('an HpError carries its code, and only catalogue codes are codes', () => {
    const e = new HpError('USAGE', 'bad option');
    expect(e.code).toBe('USAGE');
    expect(e.unchanged).toBe(true);
    expect(isErrorCode('USAGE')).toBe(true);
    expect(isErrorCode('USAGE_')).toBe(false);
    expect(isErrorCode('toString')).toBe(false);
    // @ts-expect-error a misspelt code does not compile
    expect(new HpError('USGAE', 'x').code).toBe('USGAE');
    // @ts-expect-error nor does comparing a code with a misspelt one
    expect(e.code === 'USGAE').toBe(false);
  });
});
