import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { fixturePath } from '../../src/harness/index.js';
import yargs from 'yargs';
import { keysCommand } from '../../src/cli/keys.js';
import { failUsage } from '../../src/cli/usage.js';
import { HpError } from '../../src/errors.js';
import { packCommand, parseFileSpec, parseServiceSpec, parseTargetFunctionSpec } from '../../src/cli/pack.js';
import { openPackage, type HotpatchManifest } from '../../src/package/index.js';
import { homeLayout } from '../../src/agent/home.js';

const root = resolve(import.meta.dirname, '../..');
const service = join(root, 'fixtures/bin/service');
const serviceFix = join(root, 'fixtures/bin/service_fix.so');

let dir: string;
let home: string;
let savedHome: string | undefined;

/** Run the commands in this process, as main.ts wires them, capturing output and exit code. */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const so = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => (out.push(String(c)), true));
  const se = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => (err.push(String(c)), true));
  process.exitCode = 0;
  let usage = false;
  try {
    // As main.ts: a usage error ends the parse (failUsage throws), so no handler runs after it.
    await packCommand(keysCommand(yargs(args)))
      .strict()
      .exitProcess(false)
      .fail(failUsage)
      .parseAsync();
  } catch (e) {
    if (!(e instanceof HpError) || e.code !== 'USAGE') throw e;
    usage = true;
    err.push(e.message);
  } finally {
    so.mockRestore();
    se.mockRestore();
  }
  const code = usage ? 2 : Number(process.exitCode ?? 0);
  process.exitCode = 0;
  return { code, stdout: out.join(''), stderr: err.join('') };
}

const common = ['--id', 'x-1', '--kb', 'KB5046612', '--title', 'T', '--release-date', '2025-01-14', '--classification', 'Security'];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hp-package-cli-'));
  home = join(dir, 'home');
  savedHome = process.env.HP_AGENT_HOME;
  process.env.HP_AGENT_HOME = home;
});

afterAll(() => {
  if (savedHome === undefined) delete process.env.HP_AGENT_HOME;
  else process.env.HP_AGENT_HOME = savedHome;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('flag parsers', () => {
  it('reads --file, --service and --function specs', () => {
    expect(parseFileSpec('bin/service=build/service:755')).toEqual({ path: 'bin/service', source: 'build/service', mode: 0o755 });
    expect(parseFileSpec('etc/a.conf=./a:b.conf')).toEqual({ path: 'etc/a.conf', source: './a:b.conf' });
    expect(parseServiceSpec('svc=bin/service:${HP_RUN}/svc.sock,4')).toEqual({ name: 'svc', file: 'bin/service', args: ['${HP_RUN}/svc.sock', '4'] });
    expect(parseServiceSpec('svc=bin/service')).toEqual({ name: 'svc', file: 'bin/service', args: [] });
    expect(parseTargetFunctionSpec('f')).toEqual({ symbol: 'f' });
    expect(parseTargetFunctionSpec('f=g')).toEqual({ symbol: 'f', replacement: 'g' });
    expect(parseTargetFunctionSpec('lib/libx.so:f=g')).toEqual({ target: 'lib/libx.so', symbol: 'f', replacement: 'g' });
    expect(() => parseTargetFunctionSpec('f=')).toThrow(/--function expects/);
    expect(() => parseFileSpec('bin/service')).toThrow(/--file expects/);
  });
});

describe('hp-agent keygen, trust, pack', () => {
  let keyId: string;

  it('keygen writes a private key (0600) and a public key, and will not overwrite them', async () => {
    const r = await cli(['keygen', '--out', join(dir, 'release'), '--json']);
    expect(r.code).toBe(0);
    keyId = JSON.parse(r.stdout).keyId;
    expect(keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(statSync(join(dir, 'release.key')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'release.pub'), 'utf8')).toContain('BEGIN PUBLIC KEY');
    const again = await cli(['keygen', '--out', join(dir, 'release')]);
    expect(again.code).toBe(3);
    expect(again.stderr).toContain('refused (KEY_EXISTS)');
  });

  it('trust add and trust list use <home>/trusted-keys', async () => {
    const add = await cli(['trust', 'add', join(dir, 'release.pub'), '--name', 'Release team']);
    expect(add.code).toBe(0);
    expect(add.stdout).toContain(`trusted key ${keyId} (Release team)`);
    expect(statSync(join(homeLayout(home).trustedKeys, `${keyId}.pub`)).isFile()).toBe(true);
    const list = await cli(['trust', 'list']);
    expect(list.stdout).toMatch(/^KEY ID\s+NAME\s+ADDED/);
    expect(list.stdout).toContain(keyId);
    const json = JSON.parse((await cli(['trust', 'list', '--json'])).stdout);
    expect(json.keys).toEqual([{ keyId, name: 'Release team', added: expect.any(String) }]);
    const bad = await cli(['trust', 'add', join(dir, 'release.key'), '--json']);
    expect(bad.code).toBe(3);
    expect(JSON.parse(bad.stdout).error.code).toBe('KEY_NOT_PUBLIC');
  });

  it('pack baseline', async () => {
    const out = join(dir, 'base.hpkg');
    const r = await cli([
      'pack', 'baseline', '--out', out, ...common, '--planned',
      '--file', `bin/service=${service}:755`, '--service', 'svc=bin/service:${HP_RUN}/svc.sock,4', '--key', join(dir, 'release.key'),
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/FILE\s+MODE\s+SIZE\s+BUILD-ID\s+SHA-256/);
    expect(r.stdout).toContain('bin/service  0755');
    const p = await openPackage(out, { trustDir: homeLayout(home).trustedKeys });
    expect(p.signer?.keyId).toBe(keyId);
    expect(p.manifest).toMatchObject({ kind: 'baseline', planned: true, services: [{ name: 'svc', file: 'bin/service', args: ['${HP_RUN}/svc.sock', '4'] }] });
  });

  it('pack hotpatch', async () => {
    const out = join(dir, 'hp.hpkg');
    const r = await cli([
      'pack', 'hotpatch', '--out', out, ...common, '--baseline-id', 'base-1', '--sequence', '2', '--consistency', 'function',
      '--target', `bin/service=${service}`, '--patch-object', serviceFix, '--function', 'handle_request=handle_request_v2',
      '--key', join(dir, 'release.key'), '--json',
    ]);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout);
    expect(json.keyId).toBe(keyId);
    expect(json.manifest).toMatchObject({ kind: 'hotpatch', sequence: 2, consistency: 'function', targets: [{ path: 'bin/service', functions: [{ symbol: 'handle_request', replacement: 'handle_request_v2' }] }] });
    expect((await openPackage(out, { trustDir: homeLayout(home).trustedKeys })).sha256).toBe(json.sha256);
  });

  it('pack hotpatch warns when the function is inlined into callers, naming them', async () => {
    const args = (json: string[]) => [
      'pack', 'hotpatch', '--out', join(dir, 'inl.hpkg'), ...common, '--baseline-id', 'base-1', '--sequence', '1',
      '--target', `bin/inlined=${fixturePath('inlined')}`, '--patch-object', fixturePath('inlined_fix.so'), '--function', 'scale=scale_v2',
      '--key', join(dir, 'release.key'), ...json,
    ];
    const r = await cli(args(['--json']));
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout);
    expect(json.warnings).toHaveLength(1);
    expect(json.warnings[0]).toMatchObject({ code: 'INLINED_COPIES', object: 'bin/inlined', function: 'scale' });
    expect(json.warnings[0].callers.map((c: { name: string }) => c.name).sort()).toEqual(['answer_a', 'answer_b']);
    const human = await cli(args([]));
    expect(human.code).toBe(0);
    expect(human.stderr).toMatch(/warning: scale is inlined into answer_a, answer_b/);
  });

  it('pack hotpatch --manifest-in, paths relative to the JSON file', async () => {
    const input = join(dir, 'hp-input.json');
    writeFileSync(input, JSON.stringify({
      out: 'from-json.hpkg', id: 'hp-json', kb: 'KB5046701', title: 'From JSON', releaseDate: '2025-03-11', classification: 'Critical',
      baselineId: 'base-1', sequence: 3,
      targets: [{ path: 'bin/service', baselineFile: service, patchObject: serviceFix, functions: [{ symbol: 'handle_request', replacement: 'handle_request_v2' }] }],
    }));
    const r = await cli(['pack', 'hotpatch', '--manifest-in', input, '--key', join(dir, 'release.key')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/TARGET\s+BUILD-ID\s+PATCH OBJECT\s+FUNCTION\s+SIZE/);
    expect(r.stdout).toContain('handle_request → handle_request_v2');
    const m = (await openPackage(join(dir, 'from-json.hpkg'), { trustDir: homeLayout(home).trustedKeys })).manifest as HotpatchManifest;
    expect(m).toMatchObject({ id: 'hp-json', sequence: 3, consistency: 'entry' });
  });

  it('says what is wrong with the flags (exit 2) and what was refused (exit 3)', async () => {
    const base = ['pack', 'hotpatch', '--out', join(dir, 'x.hpkg'), ...common, '--baseline-id', 'b', '--sequence', '1', '--key', join(dir, 'release.key')];
    const two = await cli([...base, '--target', `a/x=${service}`, '--target', `a/y=${service}`, '--patch-object', serviceFix, '--function', 'handle_request']);
    expect(two.code).toBe(2);
    expect(two.stderr).toContain('say which one it belongs to');
    const missing = await cli([...base, '--target', `bin/service=${service}`, '--patch-object', serviceFix, '--function', 'nope=handle_request_v2']);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('refused (SYMBOL_NOT_FOUND)');
    const badDate = await cli([...base.map((a) => (a === '2025-01-14' ? '2025-13-01' : a)), '--target', `bin/service=${service}`, '--patch-object', serviceFix, '--function', 'handle_request=handle_request_v2']);
    // A malformed date is bad usage (2), found before anything is packed.
    expect(badDate.code).toBe(2);
    expect(badDate.stderr).toContain('--release-date: expected a calendar date YYYY-MM-DD, got "2025-13-01"');
    expect(() => statSync(join(dir, 'x.hpkg'))).toThrow();
  });
});
