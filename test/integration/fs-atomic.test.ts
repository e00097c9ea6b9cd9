import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { HpError } from '../../src/errors.js';
import { readJson, removeStaleTempFiles, writeFileAtomic, writeFileAtomicSync, writeJsonAtomic } from '../../src/fs/atomic.js';

// Child processes run the compiled agent (dist/, rebuilt by test/global-setup.ts before any test).
const ATOMIC_JS = new URL('../../dist/fs/atomic.js', import.meta.url).href;

let tmp: string;

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-agent-atomic-'));
});

afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function expectHpError(promise: Promise<unknown>, code: string): Promise<HpError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(HpError);
  expect((error as HpError).code).toBe(code);
  return error as HpError;
}

describe('atomic writes', () => {
  it('writes, replaces, applies an explicit mode and leaves no temporary file', async () => {
    const file = path.join(tmp, 'f.txt');
    await writeFileAtomic(file, 'one');
    await writeFileAtomic(file, Buffer.from('two'), 0o600);
    expect(fs.readFileSync(file, 'utf8')).toBe('two');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    writeFileAtomicSync(file, 'three');
    expect(fs.readFileSync(file, 'utf8')).toBe('three');
    expect(fs.readdirSync(tmp)).toEqual(['f.txt']);
  });

  it('a failed write leaves the target unchanged and removes its temporary file', async () => {
    const target = path.join(tmp, 'dir');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'inside'), 'keep');
    // rename() of a file over a non-empty directory fails after the data was written
    const error = await expectHpError(writeFileAtomic(target, 'data'), 'WRITE_FAILED');
    expect(error.message).toContain('unchanged');
    expect(fs.readdirSync(tmp)).toEqual(['dir']);
    expect(() => writeFileAtomicSync(target, 'data')).toThrow(HpError);
    expect(fs.readdirSync(tmp)).toEqual(['dir']);
  });

  it('readJson: undefined when absent, FILE_CORRUPT when not JSON, FILE_INVALID when the schema fails', async () => {
    const file = path.join(tmp, 'x.json');
    const schema = z.object({ a: z.number() });
    expect(await readJson(file, schema)).toBeUndefined();
    await writeJsonAtomic(file, { a: 1 });
    expect(await readJson(file, schema)).toEqual({ a: 1 });
    expect(fs.readFileSync(file, 'utf8')).toBe('{\n  "a": 1\n}\n');
    await writeJsonAtomic(file, { a: 'no' });
    expect(await readJson(file)).toEqual({ a: 'no' });
    const invalid = await expectHpError(readJson(file, schema), 'FILE_INVALID');
    expect(invalid.message).toContain(file);
    fs.writeFileSync(file, '{"a": 1');
    await expectHpError(readJson(file, schema), 'FILE_CORRUPT');
  });

  it('a writer killed at any moment leaves the old or the new content, whole; its temp file is swept', async () => {
    const file = path.join(tmp, 'big.bin');
    const size = 4 << 20;
    fs.writeFileSync(file, Buffer.alloc(size, 'a'));
    const script = `
      const { writeFileAtomic } = await import(${JSON.stringify(ATOMIC_JS)});
      const a = Buffer.alloc(${size}, 'a'), b = Buffer.alloc(${size}, 'b');
      process.stdout.write('go\\n');
      for (let i = 0; ; i++) await writeFileAtomic(${JSON.stringify(file)}, i % 2 ? a : b);
    `;
    for (let round = 0; round < 6; round++) {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      await new Promise((resolve) => setTimeout(resolve, 30 + round * 37));
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;

      const content = fs.readFileSync(file);
      expect(content.length).toBe(size);
      const first = content[0];
      expect(first === 0x61 || first === 0x62).toBe(true);
      expect(content.every((byte) => byte === first)).toBe(true);

      const leftovers = fs.readdirSync(tmp).filter((n) => n !== 'big.bin');
      for (const name of leftovers) expect(name).toMatch(/^\.big\.bin\.\d+\.[0-9a-f]{12}\.tmp$/);
      expect((await removeStaleTempFiles(tmp)).sort()).toEqual(leftovers.sort());
      expect(fs.readdirSync(tmp)).toEqual(['big.bin']);
    }
  });

  it('removeStaleTempFiles keeps the temporary files of live writers', async () => {
    const mine = path.join(tmp, `.x.${process.pid}.0123456789ab.tmp`);
    const dead = path.join(tmp, '.x.999999999.0123456789ab.tmp');
    fs.writeFileSync(mine, '');
    fs.writeFileSync(dead, '');
    expect(await removeStaleTempFiles(tmp)).toEqual([path.basename(dead)]);
    expect(fs.existsSync(mine)).toBe(true);
  });
});
