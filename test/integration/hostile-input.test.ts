// Hostile input to the real command line is bounded: a gzip bomb is refused (not inflated for
// minutes), a FIFO or a device given as the package is refused without being opened for reading,
// and SIGTERM while a package is being read stops the agent with 143 and the lock released.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { agent, cleanUp, history, newHome, pkg, startAgent } from './agent-helpers.js';

afterEach(cleanUp);

const MiB = 1024 * 1024;

/** A real package, gzip-compressed, followed by `members` gzip members of 8 MiB of zeros each. */
function gzipBomb(file: string, members: number): string {
  const member = gzipSync(Buffer.alloc(8 * MiB), { level: 9 });
  fs.writeFileSync(file, Buffer.concat([gzipSync(fs.readFileSync(pkg('2026.10-hp1'))), ...Array(members).fill(member)]));
  return file;
}

const lockFile = (home: string) => path.join(home, 'lock');

/** Nothing of the home was changed by a refused apply: no state, no package stored, no lock left. */
function expectNothingWritten(home: string) {
  expect(fs.existsSync(lockFile(home)), 'the lock was left behind').toBe(false);
  expect(fs.existsSync(path.join(home, 'state.json'))).toBe(false);
  expect(fs.readdirSync(path.join(home, 'packages'))).toEqual([]);
}

describe('hostile input', () => {
  it('a gzip bomb (2 MB that inflate to 2 GiB, after a real package) is refused in bounded time, the lock released', async () => {
    const home = newHome();
    const bomb = gzipBomb(path.join(home, 'bomb.hpkg'), 250);
    expect(fs.statSync(bomb).size).toBeLessThan(3 * MiB);
    // The agent is killed after 60 s (the helper's timeout): before the fix it inflated for many minutes.
    const r = await agent(home, ['apply', bomb]);
    expect(r.json?.error?.code, r.stdout + r.stderr).toBe('PACKAGE_TOO_LARGE');
    expect(r.json.error.message).toMatch(/decompression bomb/);
    expect(r.code).toBe(3);
    expectNothingWritten(home);
    // The next agent gets the lock at once.
    const next = await agent(home, ['apply', bomb, '--wait', '0']);
    expect(next.json?.error?.code).toBe('PACKAGE_TOO_LARGE');
  });

  it('SIGTERM while a package is being inflated: exit 143, INTERRUPTED, the lock released, nothing written', async () => {
    const home = newHome();
    // 10 MB inflating to 10 GiB: the limits stop it after 1 GiB, seconds of work to interrupt.
    const bomb = gzipBomb(path.join(home, 'bomb.hpkg'), 1250);
    const running = startAgent(home, ['apply', bomb]);
    // Wait until the agent holds the lock (it reads the package under it), then signal it.
    for (let i = 0; i < 1000 && !fs.existsSync(lockFile(home)); i++) await new Promise((r) => setTimeout(r, 10));
    expect(JSON.parse(fs.readFileSync(lockFile(home), 'utf8')).pid).toBe(running.pid);
    running.child.kill('SIGTERM');
    const r = await running.done;
    expect(r.json?.error?.code, r.stdout + r.stderr).toBe('INTERRUPTED');
    expect(r.json.error.signal).toBe('SIGTERM');
    expect(r.json.error.message).toMatch(/nothing was changed/);
    expect(r.code).toBe(143);
    expectNothingWritten(home);
    expect((await history(home)).at(-1)).toEqual(['refuse', 'Refused', undefined, 'INTERRUPTED']);
  });

  it('a FIFO as the package is refused at once as bad usage (exit 2), not opened for reading', async () => {
    const home = newHome();
    const fifo = path.join(home, 'pkg.fifo');
    execFileSync('mkfifo', [fifo]);
    const r = await agent(home, ['apply', fifo]);
    expect(r.json?.error?.code, r.stdout + r.stderr).toBe('PACKAGE_NOT_A_FILE');
    expect(r.json.error.message).toMatch(/FIFO/);
    expect(r.code).toBe(2);
    expectNothingWritten(home);
  });

  it('a directory, a device or a missing path as the package: bad usage (exit 2)', async () => {
    const home = newHome();
    const cases: [string, string, RegExp][] = [
      [home, 'PACKAGE_NOT_A_FILE', /a directory/],
      ['/dev/zero', 'PACKAGE_NOT_A_FILE', /a device/],
      [path.join(home, 'absent.hpkg'), 'PACKAGE_NOT_FOUND', /no such file/],
    ];
    for (const [file, code, words] of cases) {
      const r = await agent(home, ['apply', file]);
      expect(r.json?.error?.code, file).toBe(code);
      expect(r.json.error.message).toMatch(words);
      expect(r.code, file).toBe(2);
    }
    expectNothingWritten(home);
  });
});
