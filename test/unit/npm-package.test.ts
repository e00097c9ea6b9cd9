// What `npm install hp-agent` puts on a user's machine: the file list npm would pack. It must hold
// the agent, its native sources and the demo's fixtures — and no private key (the demo makes its
// own at each run), no source maps, no benchmark, and the LICENSE package.json names.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');

let files: string[];

beforeAll(async () => {
  // --ignore-scripts: `prepare` would rebuild what test/global-setup.ts has just built.
  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, maxBuffer: 64 << 20 });
  files = (JSON.parse(stdout) as { files: { path: string }[] }[])[0].files.map((f) => f.path);
}, 120_000);

describe('the npm package', () => {
  it('holds the agent, the native core sources, the demo fixtures and the licence', () => {
    for (const f of ['bin/hp-agent.js', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/agent/service-launcher.js', 'dist/harness/index.js', 'binding.gyp', 'LICENSE', 'fixtures/Makefile', 'fixtures/baselines/packages.json', 'fixtures/bin/baselines/b1/bin/greetd']) {
      expect(files).toContain(f);
    }
    expect(files.some((f) => f.startsWith('native/') && f.endsWith('.cc'))).toBe(true);
    expect(fs.readFileSync(path.join(root, 'LICENSE'), 'utf8')).toMatch(/^MIT License/);
    expect(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).license).toBe('MIT');
  });

  it('holds no private key, in any file', () => {
    expect(files.filter((f) => /\.key$|\.pem$|demo\.pub$|\.hpkg$/.test(f))).toEqual([]);
    // a PEM block with its base64 body (the code that reads keys names the marker alone)
    const pem = /-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{40,}/;
    const withKey = files.filter((f) => pem.test(fs.readFileSync(path.join(root, f), 'latin1')));
    expect(withKey).toEqual([]);
  });

  it('holds no source map and no benchmark', () => {
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    expect(files.filter((f) => /(^|\/)bench/.test(f))).toEqual([]);
  });
});
