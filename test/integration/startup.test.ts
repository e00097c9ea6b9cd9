// The command line's start-up: the bundle (scripts/bundle.mjs, run by test/global-setup.ts) with
// its V8 code cache, loaded by bin/hp-agent.js through scripts/bundle-loader.mjs. It must answer
// exactly like the unbundled dist/cli/main.js, and a bad cache, or none, must only cost time.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
const version = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version as string;

// Plain `node`: V8 takes a cache only under the flags it was made with.
const env = { ...process.env };
delete env.NODE_OPTIONS;

let dir: string;
/** A copy of the package (node_modules linked), so that breaking its bundle harms no one. */
let pkg: string;
let home: string;

interface Answer {
  code: number;
  stdout: string;
  stderr: string;
}

async function node(args: string[]): Promise<Answer> {
  try {
    const r = await run(process.execPath, args, { env: { ...env, HP_AGENT_HOME: home }, maxBuffer: 16 << 20 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    if (typeof err.code !== 'number') throw e;
    return { code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

const bundled = (args: string[], at = pkg) => node([path.join(at, 'bin/hp-agent.js'), ...args]);
const unbundled = (args: string[]) =>
  node(['--input-type=module', '-e', `const { main } = await import(${JSON.stringify(pathToFileURL(path.join(root, 'dist/cli/main.js')).href)}); process.exitCode = await main(process.argv.slice(1));`, '--', ...args]);

/** What became of the copy's cache: used, rejected (by V8), none (no usable file), or no bundle. */
async function cacheState(): Promise<string> {
  const loader = pathToFileURL(path.join(pkg, 'scripts/bundle-loader.mjs')).href;
  const r = await node(['--input-type=module', '-e', `const r = await (await import(${JSON.stringify(loader)})).loadBundle(); process.stdout.write(r ? r.cache : 'no bundle');`]);
  expect(r.stderr).toBe('');
  return r.stdout;
}

const bundleDir = () => path.join(pkg, 'dist/bundle');
const cacheFile = () => path.join(bundleDir(), 'hp-agent.script.cache');
let goodCache: Buffer;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-startup-'));
  pkg = path.join(dir, 'pkg');
  home = path.join(dir, 'home');
  fs.mkdirSync(pkg);
  fs.mkdirSync(home);
  for (const f of ['package.json', 'bin', 'scripts']) fs.cpSync(path.join(root, f), path.join(pkg, f), { recursive: true });
  // Not the folders of a build running meanwhile (dist/bundle.tmp-*).
  fs.cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true, filter: (src) => !path.basename(src).startsWith('bundle.') });
  for (const f of ['node_modules', 'build']) fs.symlinkSync(path.join(root, f), path.join(pkg, f));
  goodCache = fs.readFileSync(cacheFile());
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('the bundled command', () => {
  it('is built with a code cache that V8 takes', async () => {
    expect(fs.existsSync(path.join(bundleDir(), 'hp-agent.script.js'))).toBe(true);
    expect(fs.existsSync(path.join(bundleDir(), 'level-worker.js'))).toBe(true);
    expect(await cacheState()).toBe('used');
  });

  it('answers like the unbundled one: output, errors, exit codes', async () => {
    for (const args of [['--version'], ['--help'], ['status', '--help'], ['apply', '--help'], [], ['bogus'], ['status', '--bogus'], ['status', '--json'], ['history', '--json'], ['apply', path.join(dir, 'missing.hpkg'), '--json']]) {
      const [a, b] = [await bundled(args), await unbundled(args)];
      expect({ args, ...a }).toEqual({ args, ...b });
    }
    expect((await bundled(['--version'])).stdout).toBe(`${version}\n`);
  });
});

describe('a bad code cache only costs time', () => {
  const header = () => goodCache.subarray(0, goodCache.indexOf(10) + 1).toString('latin1');
  const data = () => goodCache.subarray(goodCache.indexOf(10) + 1);
  const cases: [string, () => Buffer | undefined, string][] = [
    ['missing', () => undefined, 'none'],
    ['empty', () => Buffer.alloc(0), 'none'],
    ['cut short', () => goodCache.subarray(0, goodCache.length >> 1), 'none'],
    [
      'with bytes changed',
      () => {
        const b = Buffer.from(goodCache);
        for (let i = b.indexOf(10) + 200; i < b.length; i += 997) b[i] ^= 0x5a;
        return b;
      },
      'none',
    ],
    ['of another build', () => Buffer.concat([Buffer.from(header().replace(/ \w+ /, ' 0123456789abcdef ')), data()]), 'none'],
    [
      'that V8 does not take (checksum right, data garbage)',
      () => {
        const junk = Buffer.alloc(data().length, 7);
        return Buffer.concat([Buffer.from(header().replace(/ \w+\n$/, ` ${zlib.crc32(junk).toString(16)}\n`)), junk]);
      },
      'rejected',
    ],
  ];

  for (const [what, content, state] of cases) {
    it(`a cache file ${what}`, async () => {
      const c = content();
      if (c) fs.writeFileSync(cacheFile(), c);
      else fs.rmSync(cacheFile(), { force: true });
      try {
        expect(await cacheState()).toBe(state);
        expect(await bundled(['--version'])).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
        expect(await bundled(['bogus'])).toEqual(await unbundled(['bogus']));
      } finally {
        fs.writeFileSync(cacheFile(), goodCache);
      }
    });
  }

  it('without a bundle the command runs dist/cli/main.js', async () => {
    const saved = `${bundleDir()}.away`;
    fs.renameSync(bundleDir(), saved);
    try {
      expect(await cacheState()).toBe('no bundle');
      expect(await bundled(['--version'])).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
      expect(await bundled(['--help'])).toEqual(await unbundled(['--help']));
    } finally {
      fs.renameSync(saved, bundleDir());
    }
  });
});

// The bundle answers string-width for printable ASCII itself (its load is costly): check that
// every copy the bundle wraps (the ES module ones) gives a width equal to the length there.
describe('string-width', () => {
  const copies = [path.join(root, 'node_modules/string-width')];
  for (const d of fs.readdirSync(path.join(root, 'node_modules'))) copies.push(path.join(root, 'node_modules', d, 'node_modules/string-width'));
  const esm = copies.filter((d) => fs.existsSync(path.join(d, 'package.json')) && JSON.parse(fs.readFileSync(path.join(d, 'package.json'), 'utf8')).type === 'module');

  it('measures printable ASCII by its length, in every copy the bundle wraps', async () => {
    expect(esm.length).toBeGreaterThan(0);
    let ascii = '';
    for (let c = 0x20; c <= 0x7e; c++) ascii += String.fromCharCode(c);
    const samples = ['', ' ', ascii, 'hp-agent <command> [options]', '  --json  machine-readable output  [boolean] [default: false]'];
    for (const d of esm) {
      const { default: stringWidth } = (await import(pathToFileURL(path.join(d, 'index.js')).href)) as { default: (s: string, o?: object) => number };
      for (const s of samples) expect({ d, s, width: stringWidth(s) }).toEqual({ d, s, width: s.length });
      for (const s of samples) expect(stringWidth(s, { ambiguousIsNarrow: false, countAnsiEscapeCodes: true })).toBe(s.length);
    }
  });
});
