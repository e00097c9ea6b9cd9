// Hostile input to the real command line is bounded: a gzip bomb is refused (not inflated for
// minutes), a FIFO or a device given as the package is refused without being opened for reading,
// and SIGTERM while a package is being read stops the agent with 143 and the lock released.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { demoPublicKey } from '../../src/demo/fixture-packages.js';
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

/** Nothing of the home was changed by a refused apply: no state, no package stored (no store at all, if refused that early), no lock left. */
function expectNothingWritten(home: string) {
  expect(fs.existsSync(lockFile(home)), 'the lock was left behind').toBe(false);
  expect(fs.existsSync(path.join(home, 'state.json'))).toBe(false);
  const store = path.join(home, 'packages');
  expect(fs.existsSync(store) ? fs.readdirSync(store) : []).toEqual([]);
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
    expect(r.json?.error?.code, r.stdout + r.stderr).toBe('USAGE');
    expect(r.json.error.message).toMatch(/FIFO/);
    expect(r.code).toBe(2);
    expectNothingWritten(home);
  });

  it('a directory, a device or a missing path as the package: bad usage (exit 2)', async () => {
    const home = newHome();
    const cases: [string, RegExp][] = [
      [home, /a directory/],
      ['/dev/zero', /a device/],
      [path.join(home, 'absent.hpkg'), /no such file/],
    ];
    for (const [file, words] of cases) {
      const r = await agent(home, ['apply', file]);
      expect(r.json?.error?.code, file).toBe('USAGE');
      expect(r.json.error.message).toMatch(words);
      expect(r.code, file).toBe(2);
    }
    expectNothingWritten(home);
  });

  describe('a home or trust store someone else could have written to is refused, as ssh refuses such a ~/.ssh', () => {
    const STRANGER = 4242;

    /** A home with the demo key trusted (by the agent itself), then `spoil` applied to it. */
    async function spoiledHome(spoil: (home: string, keyFile: string) => void): Promise<string> {
      const home = newHome();
      const trust = await agent(home, ['trust', 'add', demoPublicKey()]);
      expect(trust.code, trust.stdout + trust.stderr).toBe(0);
      const keys = path.join(home, 'trusted-keys');
      spoil(home, path.join(keys, fs.readdirSync(keys)[0]));
      return home;
    }

    const cases: [string, (home: string, key: string) => void, string, RegExp][] = [
      ['a home of mode 0777', (home) => fs.chmodSync(home, 0o777), 'HOME_INSECURE', /writable by every user \(mode 0777\).*chmod go-w/],
      ['a home writable by its group', (home) => fs.chmodSync(home, 0o770), 'HOME_INSECURE', /writable by its group/],
      ['a home owned by another user', (home) => fs.chownSync(home, STRANGER, STRANGER), 'HOME_INSECURE', /belongs to user 4242.*chown/],
      ['a trust store of mode 0777', (home) => fs.chmodSync(path.join(home, 'trusted-keys'), 0o777), 'TRUST_STORE_INSECURE', /trusted-keys is writable by every user/],
      ['a key file owned by another user', (_home, key) => fs.chownSync(key, STRANGER, STRANGER), 'TRUST_STORE_INSECURE', /trusted key file .* belongs to user 4242/],
      ['a key file writable by others', (_home, key) => fs.chmodSync(key, 0o666), 'TRUST_STORE_INSECURE', /trusted key file .* is writable/],
    ];
    for (const [what, spoil, code, words] of cases) {
      it(`${what}: refused with the path and the fix, nothing written`, async () => {
        const home = await spoiledHome(spoil);
        const r = await agent(home, ['apply', pkg('2026.10')]);
        expect(r.json?.error?.code, r.stdout + r.stderr).toBe(code);
        expect(r.json.error.message).toMatch(words);
        expect(r.json.error.message).toContain(home);
        expect(r.code).toBe(3);
        expect(fs.existsSync(path.join(home, 'state.json'))).toBe(false);
        expectNothingWritten(home);
      });
    }

    it('the trust store is refused by trust list too, and accepted again once fixed', async () => {
      const home = await spoiledHome((h) => fs.chmodSync(path.join(h, 'trusted-keys'), 0o777));
      const listed = await agent(home, ['trust', 'list']);
      expect(listed.json?.error?.code).toBe('TRUST_STORE_INSECURE');
      expect(listed.code).toBe(3);
      fs.chmodSync(path.join(home, 'trusted-keys'), 0o755);
      expect((await agent(home, ['trust', 'list'])).json.keys).toHaveLength(1);
      const r = await agent(home, ['apply', pkg('2026.10')]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
    });
  });
});
