import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import {
  buildArchive,
  generateKeyPair,
  loadTrusted,
  openPackage,
  packageEntries,
  packBaseline,
  packHotpatch,
  parseManifest,
  readArchive,
  serializeManifest,
  signManifest,
  trustAdd,
  trustList,
  validateManifest,
  verifyManifest,
  type BaselineManifest,
  type HotpatchManifest,
  type KeyPair,
  type Manifest,
  type PackBaselineOptions,
  type PackHotpatchOptions,
} from '../../src/package/index.js';
import { homeLayout } from '../../src/agent/home.js';

// ------------------------------------------------------------------------------------------------
// Helpers

let dir: string;
let home: string;
let trusted: string;
let key: KeyPair;
let stranger: KeyPair;

const sha256 = (d: Uint8Array) => createHash('sha256').update(d).digest('hex');
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** What an HpError-returning promise or function was refused with. */
async function refusal(f: () => unknown): Promise<HpError> {
  try {
    await f();
  } catch (e) {
    if (e instanceof HpError) return e;
    throw e;
  }
  throw new Error('expected a refusal, but it succeeded');
}

/**
 * A ustar header written byte by byte, independent of node-tar, so tests can craft what no
 * well-behaved writer produces: links, devices, absolute and ".." paths.
 */
function rawHeader(o: { name: string; type?: string; size?: number; linkname?: string; prefix?: string }): Buffer {
  const h = Buffer.alloc(512);
  const octal = (off: number, len: number, n: number) => h.write(n.toString(8).padStart(len - 1, '0') + '\0', off, len, 'ascii');
  h.write(o.name, 0, 100, 'utf8');
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, o.size ?? 0);
  octal(136, 12, 0);
  h.write(' '.repeat(8), 148, 8, 'ascii');
  h.write(o.type ?? '0', 156, 1, 'ascii');
  h.write(o.linkname ?? '', 157, 100, 'utf8');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  if (o.prefix) h.write(o.prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return h;
}

interface RawEntry {
  name: string;
  type?: string;
  data?: Uint8Array;
  linkname?: string;
}

function rawTar(entries: RawEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = Buffer.from(e.data ?? new Uint8Array());
    parts.push(rawHeader({ name: e.name, type: e.type, size: data.length, linkname: e.linkname }), data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

function writeTemp(name: string, data: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, data);
  return p;
}

// ------------------------------------------------------------------------------------------------
// A tiny C target and its patch, compiled for the tests

const TARGET_C = `
#include <stdio.h>
int counter;
__attribute__((noipa)) int compute(int x) {
  int r = x;
  for (int i = 0; i < x; i++) r = r * 3 + i;
  return r + counter;
}
__attribute__((noipa)) int tiny(void) { return 0; }
int main(int argc, char **argv) { (void)argv; printf("%d %d\\n", compute(argc), tiny()); return 0; }
`;
const FIX_C = `
__attribute__((noipa)) int compute_v2(int x) { return x * 2; }
int not_a_function = 3;
`;

let target: string;
let targetEndbr: string;
let targetNoBuildId: string;
let fix: string;
let config: string;

function gcc(out: string, src: string, flags: string[]): string {
  const c = join(dir, `${out}.c`);
  writeFileSync(c, src);
  const p = join(dir, out);
  sh('gcc', ['-O2', ...flags, '-o', p, c]);
  return p;
}

/** value and size of a symbol, as readelf prints them. */
function readelfSymbol(file: string, name: string): { value: number; size: number } {
  for (const line of sh('readelf', ['-Ws', file]).split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f[7] === name && f[6] !== 'UND') return { value: parseInt(f[1], 16), size: f[2].startsWith('0x') ? parseInt(f[2], 16) : parseInt(f[2], 10) };
  }
  throw new Error(`readelf: no ${name} in ${file}`);
}

/** The file bytes at a link-time address, through readelf's program headers. */
function fileBytesAt(file: string, vaddr: number, size: number): Buffer {
  for (const line of sh('readelf', ['-lW', file]).split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[0] !== 'LOAD') continue;
    const [offset, va, , filesz] = f.slice(1, 5).map((x) => parseInt(x, 16));
    if (vaddr >= va && vaddr + size <= va + filesz) return readFileSync(file).subarray(offset + vaddr - va, offset + vaddr - va + size);
  }
  throw new Error(`no LOAD segment holds 0x${vaddr.toString(16)} in ${file}`);
}

/** The C library this process runs (it has indirect functions: strlen, memcpy...). */
const LIBC = readFileSync('/proc/self/maps', 'utf8').split('\n').map((l) => l.trim().split(/\s+/)[5]).find((p) => p && /\/libc\.so\.6$/.test(p))!;
const readelfBuildId = (file: string) => /Build ID: ([0-9a-f]+)/.exec(sh('readelf', ['-n', file]))?.[1];

// ------------------------------------------------------------------------------------------------
// Sample inputs

function baselineOpts(out: string, extra: Partial<PackBaselineOptions> = {}): PackBaselineOptions {
  return {
    out: join(dir, out),
    id: 'base-2025.01',
    kb: 'KB5046612',
    title: 'January baseline',
    releaseDate: '2025-01-14',
    classification: 'Security',
    planned: true,
    files: [
      { path: 'bin/target', source: target, mode: 0o755 },
      { path: 'etc/target.conf', source: config },
    ],
    services: [{ name: 'target', file: 'bin/target', args: ['--socket', '${HP_RUN}/target.sock'] }],
    privateKeyPem: key.privateKeyPem,
    ...extra,
  };
}

function hotpatchOpts(out: string, extra: Partial<PackHotpatchOptions> = {}): PackHotpatchOptions {
  return {
    out: join(dir, out),
    id: 'hp-2025.02',
    kb: 'KB5046700',
    title: 'February hotpatch',
    releaseDate: '2025-02-11',
    classification: 'Critical',
    baselineId: 'base-2025.01',
    sequence: 1,
    targets: [{ path: 'bin/target', baselineFile: target, patchObject: fix, functions: [{ symbol: 'compute', replacement: 'compute_v2' }] }],
    privateKeyPem: key.privateKeyPem,
    ...extra,
  };
}

const HEX64 = 'ab'.repeat(32);
const BUILD_ID = '0123456789abcdef0123456789abcdef01234567';

function sampleHotpatch(): HotpatchManifest {
  return {
    schemaVersion: 1,
    id: 'hp-1',
    kb: 'KB1234567',
    kind: 'hotpatch',
    title: 't',
    releaseDate: '2025-02-11',
    classification: 'Security',
    rebootBehavior: 'NeverReboots',
    baselineId: 'base-1',
    sequence: 1,
    consistency: 'entry',
    payload: [{ path: 'payload/fix.so', sha256: HEX64, size: 10 }],
    targets: [
      {
        path: 'bin/service',
        buildId: BUILD_ID,
        patchObject: 'payload/fix.so',
        functions: [
          { symbol: 'a', size: 16, sha256: HEX64, replacement: 'a_v2' },
          { symbol: 'b', size: 16, sha256: HEX64, replacement: 'b_v2' },
        ],
      },
    ],
  };
}

function sampleBaseline(): BaselineManifest {
  return {
    schemaVersion: 1,
    id: 'base-1',
    kb: 'KB123456',
    kind: 'baseline',
    title: 't',
    releaseDate: '2025-01-14',
    classification: 'Security',
    rebootBehavior: 'AlwaysRequiresReboot',
    baselineId: 'base-1',
    planned: false,
    payload: [{ path: 'payload/bin/service', sha256: HEX64, size: 10 }],
    files: [{ path: 'bin/service', payload: 'payload/bin/service', sha256: HEX64, buildId: BUILD_ID, mode: 0o755 }],
    services: [{ name: 'svc', file: 'bin/service', args: ['${HP_RUN}/svc.sock'] }],
  };
}

/** The schema's refusal message for a manifest changed by `edit`. */
function schemaError<M extends Manifest>(m: M, edit: (m: M) => void): string {
  const copy = structuredClone(m);
  edit(copy);
  try {
    validateManifest(copy);
  } catch (e) {
    expect(e).toBeInstanceOf(HpError);
    expect((e as HpError).code).toBe('PACKAGE_MANIFEST_INVALID');
    return (e as HpError).message;
  }
  throw new Error('expected the manifest to be refused');
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hp-package-'));
  home = join(dir, 'home');
  trusted = homeLayout(home).trustedKeys;
  key = generateKeyPair();
  stranger = generateKeyPair();
  await trustAdd(trusted, key.publicKeyPem, 'release team');
  target = gcc('target', TARGET_C, ['-fcf-protection=none', '-Wl,--build-id']);
  targetEndbr = gcc('target-endbr', TARGET_C, ['-fcf-protection=full', '-Wl,--build-id']);
  targetNoBuildId = gcc('target-nobid', TARGET_C, ['-fcf-protection=none', '-Wl,--build-id=none']);
  fix = gcc('fix.so', FIX_C, ['-fPIC', '-shared', '-nostartfiles', '-fcf-protection=none', '-Wl,--build-id', '-Wl,-z,now']);
  config = join(dir, 'target.conf');
  writeFileSync(config, 'threads = 4\n');
  chmodSync(config, 0o640);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------------------------

describe('manifest schema', () => {
  it('accepts well-formed baseline and hotpatch manifests', () => {
    expect(validateManifest(sampleBaseline()).kind).toBe('baseline');
    expect(validateManifest(sampleHotpatch()).kind).toBe('hotpatch');
    expect(parseManifest(serializeManifest(sampleHotpatch()))).toEqual(sampleHotpatch());
  });

  it('names the field path of a bad value', () => {
    expect(schemaError(sampleHotpatch(), (m) => (m.targets[0].functions[1].sha256 = 'xyz'))).toContain('targets[0].functions[1].sha256: expected 64 hex characters');
    expect(schemaError(sampleHotpatch(), (m) => (m.targets[0].buildId = 'zz'))).toContain('targets[0].buildId: expected a GNU build-id');
    expect(schemaError(sampleBaseline(), (m) => (m.kb = 'KB12'))).toContain('kb: expected "KB" and 6 to 8 digits');
    expect(schemaError(sampleBaseline(), (m) => (m.releaseDate = '2025-02-30'))).toContain('releaseDate: expected a calendar date YYYY-MM-DD');
    expect(schemaError(sampleBaseline(), (m) => ((m as { classification: string }).classification = 'Security Updates'))).toContain('classification: expected one of Critical, Security');
    expect(schemaError(sampleBaseline(), (m) => (m.id = '..'))).toContain('id: must not be "." or ".."');
    expect(schemaError(sampleBaseline(), (m) => (m.id = 'has space'))).toContain('id: expected 1 to 64 characters');
    expect(schemaError(sampleHotpatch(), (m) => (m.sequence = 0))).toContain('sequence: expected a sequence number of 1 or more');
    expect(schemaError(sampleBaseline(), (m) => ((m as { schemaVersion: number }).schemaVersion = 2))).toContain('schemaVersion: expected 1');
    expect(schemaError(sampleBaseline(), (m: any) => (m.files[0].mode = 0o4755))).toContain('files[0].mode: expected permission bits');
    expect(schemaError(sampleBaseline(), (m) => Object.assign(m, { extra: 1 }))).toContain('(manifest): unknown field "extra"');
    expect(schemaError(sampleBaseline(), (m) => delete (m as Partial<BaselineManifest>).title)).toContain('title: missing (required)');
  });

  it('bounds the size of the original bytes of a function (the agent reads them from each process)', () => {
    // A manifest once said 2^30 and was accepted: the agent would read a GiB per function.
    expect(schemaError(sampleHotpatch(), (m) => (m.targets[0].functions[0].size = 2 ** 30))).toContain('targets[0].functions[0].size: expected a function size of at most 16777216 bytes');
    expect(schemaError(sampleHotpatch(), (m) => (m.targets[0].functions[0].size = 16 * 2 ** 20 + 1))).toContain('targets[0].functions[0].size');
    expect(schemaError(sampleHotpatch(), (m) => (m.targets[0].functions[0].size = 1.5))).toContain('targets[0].functions[0].size: expected a whole number of bytes');
    const largest = structuredClone(sampleHotpatch());
    largest.targets[0].functions[0].size = 16 * 2 ** 20;
    expect(validateManifest(largest).kind).toBe('hotpatch');
  });

  it('refuses unsafe paths', () => {
    expect(schemaError(sampleBaseline(), (m) => (m.files[0].path = '../etc/passwd'))).toContain('files[0].path: must not contain ".." components');
    expect(schemaError(sampleBaseline(), (m) => (m.files[0].path = '/etc/passwd'))).toContain('files[0].path: must be relative, not absolute');
    expect(schemaError(sampleBaseline(), (m) => (m.files[0].path = 'bin//x'))).toContain('files[0].path: must not contain empty or "." components');
    expect(schemaError(sampleHotpatch(), (m) => (m.payload[0].path = 'fix.so'))).toContain('payload[0].path: must start with "payload/"');
  });

  it('ties kind to rebootBehavior and refuses an unknown kind', () => {
    expect(schemaError(sampleBaseline(), (m) => ((m as { rebootBehavior: string }).rebootBehavior = 'NeverReboots'))).toContain('rebootBehavior: a baseline');
    expect(schemaError(sampleHotpatch(), (m) => ((m as { rebootBehavior: string }).rebootBehavior = 'CanRequestReboot'))).toContain('rebootBehavior: a hotpatch');
    expect(schemaError(sampleHotpatch(), (m) => ((m as { kind: string }).kind = 'driver'))).toContain('kind: expected "baseline" or "hotpatch"');
  });

  it('checks fields against each other', () => {
    expect(schemaError(sampleBaseline(), (m: any) => (m.files[0].payload = 'payload/other'))).toContain('files[0].payload: "payload/other" is not listed in payload[]');
    expect(schemaError(sampleBaseline(), (m) => (m.files[0].sha256 = 'cd'.repeat(32)))).toContain('files[0].sha256: differs from the sha256 of its payload');
    expect(schemaError(sampleBaseline(), (m) => (m.services[0].file = 'bin/other'))).toContain('services[0].file: "bin/other" is not one of the baseline\'s files');
    expect(schemaError(sampleBaseline(), (m) => m.services.push({ ...m.services[0] }))).toContain('services[1].name: duplicate service name "svc"');
    expect(schemaError(sampleBaseline(), (m) => m.files.push({ ...m.files[0] }))).toContain('files[1].path: duplicate file path "bin/service"');
    expect(schemaError(sampleHotpatch(), (m) => (m.targets[0].functions[1].symbol = 'a'))).toContain('targets[0].functions[1].symbol: duplicate function "a"');
    expect(schemaError(sampleHotpatch(), (m) => (m.targets[0].patchObject = 'payload/nope.so'))).toContain('targets[0].patchObject: "payload/nope.so" is not listed');
    expect(schemaError(sampleHotpatch(), (m) => m.payload.push({ path: 'payload/extra', sha256: HEX64, size: 1 }))).toContain('payload[1].path: "payload/extra" is not used by any target');
    expect(schemaError(sampleHotpatch(), (m) => m.targets.push(structuredClone(m.targets[0])))).toContain('targets[1].path: duplicate target path');
    const zeroStopFunction = (m: HotpatchManifest) => Object.assign(m, { consistency: 'function', patchMode: 'zero-stop' });
    expect(schemaError(sampleHotpatch(), zeroStopFunction)).toContain('patchMode: "zero-stop" cannot give "function" consistency');
  });

  it('describes installed files (not shipped) and externally managed services', () => {
    const ext = (m: any) => {
      m.files.push({ path: 'bin/other', external: true, installedAt: '/usr/sbin/other', sha256: 'ab'.repeat(32), buildId: 'cd'.repeat(20) });
      m.services.push({ name: 'other', file: 'bin/other', args: [], managedBy: 'external', restart: ['systemctl', 'restart', 'other'] });
    };
    const good = structuredClone(sampleBaseline());
    ext(good);
    expect(() => validateManifest(good)).not.toThrow();
    expect(schemaError(sampleBaseline(), (m: any) => (ext(m), (m.files[1].installedAt = 'usr/sbin/other')))).toContain('files[1].installedAt: must be an absolute path');
    expect(schemaError(sampleBaseline(), (m: any) => (ext(m), (m.files[1].installedAt = '/usr/../etc/x')))).toContain('files[1].installedAt: must be a normalised absolute path');
    expect(schemaError(sampleBaseline(), (m: any) => (ext(m), delete m.files[1].buildId))).toContain('files[1].buildId');
    expect(schemaError(sampleBaseline(), (m: any) => (ext(m), delete m.services[1].restart))).toContain('services[1].restart: an externally managed service needs the command');
    expect(schemaError(sampleBaseline(), (m: any) => (ext(m), delete m.services[1].managedBy))).toContain('services[1].restart: only an externally managed service');
    expect(schemaError(sampleBaseline(), (m: any) => (ext(m), m.files.push({ ...m.files[1], path: 'bin/again' })))).toContain('files[2].installedAt: duplicate installed file "/usr/sbin/other"');
  });

  it('takes an optional patch mode: auto, stop or zero-stop', () => {
    for (const patchMode of ['auto', 'stop', 'zero-stop'] as const) expect(validateManifest({ ...sampleHotpatch(), patchMode })).toMatchObject({ patchMode });
    expect(validateManifest(sampleHotpatch())).not.toHaveProperty('patchMode');
    expect(schemaError(sampleHotpatch(), (m) => Object.assign(m, { patchMode: 'fast' }))).toContain('patchMode: expected "auto", "stop" or "zero-stop"');
  });

  it('lists every problem at once', () => {
    const msg = schemaError(sampleHotpatch(), (m) => {
      m.kb = 'nope';
      m.targets[0].functions[0].size = -1;
    });
    expect(msg).toContain('2 problems');
    expect(msg).toContain('kb:');
    expect(msg).toContain('targets[0].functions[0].size:');
  });

  it('refuses bytes that are not JSON or not UTF-8', () => {
    expect(() => parseManifest(Buffer.from('{"id":'))).toThrow(/not valid JSON/);
    expect(() => parseManifest(Buffer.from([0x7b, 0xff, 0x7d]))).toThrow(/not valid UTF-8/);
  });
});

// ------------------------------------------------------------------------------------------------

describe('keys and trust', () => {
  it('derives the key id from the SPKI DER', () => {
    const der = createPublicKey(key.publicKeyPem).export({ type: 'spki', format: 'der' });
    expect(key.keyId).toBe(sha256(der).slice(0, 16));
    expect(key.privateKeyPem).toContain('BEGIN PRIVATE KEY');
  });

  it('verifies a signature and names the signer', async () => {
    const bytes = Buffer.from('{"hello":1}\n');
    const sig = signManifest(bytes, key.privateKeyPem);
    expect(sig).toMatch(/^[A-Za-z0-9+/]+={0,2}$/);
    const store = await loadTrusted(trusted);
    expect(verifyManifest(bytes, sig, store).keyId).toBe(key.keyId);
    // A bare 64-byte ed25519 signature (as openssl pkeyutl makes) names no key but verifies too.
    const bare = sign(null, bytes, key.privateKeyPem).toString('base64');
    expect(verifyManifest(bytes, bare, store).keyId).toBe(key.keyId);
  });

  it('tells an unknown signer from a changed manifest', async () => {
    const bytes = Buffer.from('{"hello":1}\n');
    const store = await loadTrusted(trusted);
    const untrusted = await refusal(() => verifyManifest(bytes, signManifest(bytes, stranger.privateKeyPem), store));
    expect(untrusted.code).toBe('PACKAGE_UNTRUSTED');
    expect(untrusted.message).toContain(stranger.keyId);
    expect(untrusted.message).toContain('signer is unknown');
    const bad = await refusal(() => verifyManifest(Buffer.from('{"hello":2}\n'), signManifest(bytes, key.privateKeyPem), store));
    expect(bad.code).toBe('PACKAGE_BAD_SIGNATURE');
    expect((await refusal(() => verifyManifest(bytes, 'not a signature!', store))).code).toBe('PACKAGE_BAD_SIGNATURE');
  });

  it('keeps a trust store of <keyId>.pub files', async () => {
    const d = join(dir, 'trust-a');
    expect(await trustList(d)).toEqual([]);
    const k = await trustAdd(d, key.publicKeyPem, 'Release Team');
    expect(k).toMatchObject({ keyId: key.keyId, name: 'Release Team' });
    expect(readdirSync(d)).toEqual([`${key.keyId}.pub`]);
    const text = readFileSync(join(d, `${key.keyId}.pub`), 'utf8');
    expect(text).toContain('BEGIN PUBLIC KEY');
    expect(createPublicKey(text).asymmetricKeyType).toBe('ed25519');
    // adding it again keeps the date; a new name renames it
    const again = await trustAdd(d, key.publicKeyPem);
    expect(again.added).toBe(k.added);
    await trustAdd(d, key.publicKeyPem, 'Renamed');
    await trustAdd(d, stranger.publicKeyPem);
    const list = await trustList(d);
    expect(list.map((x) => x.keyId)).toEqual([key.keyId, stranger.keyId].sort());
    expect(list.find((x) => x.keyId === key.keyId)).toMatchObject({ name: 'Renamed', added: k.added });
    expect(readdirSync(d).sort()).toEqual([`${key.keyId}.pub`, `${stranger.keyId}.pub`].sort());
  });

  it('refuses keys that are not ed25519 public keys', async () => {
    const d = join(dir, 'trust-b');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    expect((await refusal(() => trustAdd(d, rsa))).code).toBe('KEY_NOT_ED25519');
    expect((await refusal(() => trustAdd(d, key.privateKeyPem))).code).toBe('KEY_NOT_PUBLIC');
    expect((await refusal(() => trustAdd(d, 'hello'))).code).toBe('KEY_INVALID');
    expect((await refusal(() => signManifest(Buffer.from('x'), 'nope'))).code).toBe('KEY_INVALID');
  });

  it('refuses a damaged trust store loudly', async () => {
    const d = join(dir, 'trust-c');
    await trustAdd(d, key.publicKeyPem);
    writeFileSync(join(d, '0000000000000000.pub'), stranger.publicKeyPem);
    expect((await refusal(() => loadTrusted(d))).code).toBe('TRUST_STORE_CORRUPT');
  });
});

// ------------------------------------------------------------------------------------------------

describe('packing real ELF files', () => {
  it('fills build-ids, sizes and hashes of the original bytes', async () => {
    const r = await packHotpatch(hotpatchOpts('hp.hpkg'));
    const t = r.manifest.targets[0];
    const sym = readelfSymbol(target, 'compute');
    expect(t.buildId).toBe(readelfBuildId(target));
    expect(t.patchBuildId).toBe(readelfBuildId(fix));
    expect(t.patchObject).toBe('payload/fix.so');
    expect(t.functions).toEqual([{ symbol: 'compute', size: sym.size, sha256: sha256(fileBytesAt(target, sym.value, sym.size)), replacement: 'compute_v2' }]);
    expect(r.manifest.payload).toEqual([{ path: 'payload/fix.so', sha256: sha256(readFileSync(fix)), size: statSync(fix).size }]);
    expect(r.manifest.consistency).toBe('entry');
    expect(r.sha256).toBe(sha256(readFileSync(r.path)));

    const opened = await openPackage(r.path, { trustDir: trusted });
    expect(opened.manifest).toEqual(r.manifest);
    expect(opened.signer?.keyId).toBe(key.keyId);
    expect(opened.payload.get('payload/fix.so')).toEqual(readFileSync(fix));
    expect(opened.sha256).toBe(r.sha256);
  });

  it('packs a baseline: files, modes, build-ids, services', async () => {
    const r = await packBaseline(baselineOpts('base.hpkg'));
    const m = r.manifest;
    expect(m).toMatchObject({ kind: 'baseline', rebootBehavior: 'AlwaysRequiresReboot', baselineId: 'base-2025.01', planned: true });
    expect(m.files).toEqual([
      { path: 'bin/target', payload: 'payload/bin/target', sha256: sha256(readFileSync(target)), buildId: readelfBuildId(target), mode: 0o755 },
      { path: 'etc/target.conf', payload: 'payload/etc/target.conf', sha256: sha256(readFileSync(config)), mode: 0o640 },
    ]);
    expect(m.services).toEqual([{ name: 'target', file: 'bin/target', args: ['--socket', '${HP_RUN}/target.sock'] }]);
    const opened = await openPackage(r.path, { trustDir: trusted });
    expect(opened.payload.get('payload/bin/target')).toEqual(readFileSync(target));
    // no machine paths travel in the package
    expect(readFileSync(r.path).includes(Buffer.from(dir))).toBe(false);
  });

  it('is deterministic: packing twice gives identical bytes, plain or gzip', async () => {
    const a = await packBaseline(baselineOpts('det-a.hpkg'));
    const b = await packBaseline(baselineOpts('det-b.hpkg'));
    expect(readFileSync(a.path).equals(readFileSync(b.path))).toBe(true);
    const ga = await packHotpatch(hotpatchOpts('det-a.hpkg.gz', { gzip: true }));
    const gb = await packHotpatch(hotpatchOpts('det-b.hpkg.gz', { gzip: true }));
    expect(readFileSync(ga.path).equals(readFileSync(gb.path))).toBe(true);
    expect(readFileSync(ga.path).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect((await openPackage(ga.path, { trustDir: trusted })).manifest.id).toBe('hp-2025.02');
  });

  it('writes a plain tar other tools read: sorted entries, owner 0/0, mtime 0', async () => {
    const r = await packBaseline(baselineOpts('interop.hpkg'));
    expect(sh('tar', ['-tf', r.path]).trim().split('\n')).toEqual(['manifest.json', 'manifest.sig', 'payload/bin/target', 'payload/etc/target.conf']);
    const verbose = sh('tar', ['--numeric-owner', '--utc', '-tvf', r.path]);
    for (const line of verbose.trim().split('\n')) expect(line).toMatch(/^-rw-r--r-- 0\/0 .* 1970-01-01 00:00 /);
    const x = join(dir, 'extracted');
    mkdirSync(x);
    sh('tar', ['-xf', r.path, '-C', x]);
    expect(readFileSync(join(x, 'payload/bin/target'))).toEqual(readFileSync(target));
    expect(verifyManifest(readFileSync(join(x, 'manifest.json')), readFileSync(join(x, 'manifest.sig'), 'utf8'), await loadTrusted(trusted)).keyId).toBe(key.keyId);
  });

  it('packs the fixture service and its fix', async () => {
    const root = join(import.meta.dirname, '../..');
    const service = join(root, 'fixtures/bin/service');
    const serviceFix = join(root, 'fixtures/bin/service_fix.so');
    const r = await packHotpatch(
      hotpatchOpts('fixture.hpkg', {
        targets: [{ path: 'bin/service', baselineFile: service, patchObject: serviceFix, functions: [{ symbol: 'handle_request', replacement: 'handle_request_v2' }] }],
      }),
    );
    const sym = readelfSymbol(service, 'handle_request');
    expect(r.manifest.targets[0].functions[0]).toEqual({ symbol: 'handle_request', size: sym.size, sha256: sha256(fileBytesAt(service, sym.value, sym.size)), replacement: 'handle_request_v2' });
    expect(r.manifest.targets[0].buildId).toBe(readelfBuildId(service));
  });

  it('refuses what the engine could not patch, at pack time', async () => {
    const one = (fn: { symbol: string; replacement?: string }, file = target) =>
      refusal(() => packHotpatch(hotpatchOpts('bad.hpkg', { targets: [{ path: 'bin/target', baselineFile: file, patchObject: fix, functions: [fn] }] })));
    const missing = await one({ symbol: 'no_such_function' });
    expect(missing.code).toBe('SYMBOL_NOT_FOUND');
    expect(missing.message).toContain('no_such_function');
    const noReplacement = await one({ symbol: 'compute' });
    expect(noReplacement.code).toBe('SYMBOL_NOT_FOUND');
    expect(noReplacement.message).toContain('does not define the replacement compute');
    expect((await one({ symbol: 'counter', replacement: 'compute_v2' })).code).toBe('SYMBOL_NOT_FUNCTION');
    expect((await one({ symbol: 'compute', replacement: 'not_a_function' })).code).toBe('SYMBOL_NOT_FUNCTION');
    // An indirect function's symbol is its resolver, not the code calls reach: its own refusal.
    const ifunc = await one({ symbol: 'strlen', replacement: 'compute_v2' }, LIBC);
    expect(ifunc.code).toBe('SYMBOL_IS_IFUNC');
    expect(ifunc.message).toMatch(/cannot pack strlen: strlen in bin\/target is an indirect function \(GNU_IFUNC\)/);
    const short = await one({ symbol: 'tiny', replacement: 'compute_v2' });
    expect(short.code).toBe('FUNCTION_TOO_SHORT');
    expect(short.details).toMatchObject({ size: readelfSymbol(target, 'tiny').size, minimum: 5 });
    // With endbr64 at the entry the jump goes after it: 9 bytes needed.
    const shortEndbr = await one({ symbol: 'tiny', replacement: 'compute_v2' }, targetEndbr);
    expect(shortEndbr.code).toBe('FUNCTION_TOO_SHORT');
    expect(shortEndbr.details).toMatchObject({ minimum: 9 });
    expect((await one({ symbol: 'compute', replacement: 'compute_v2' }, targetNoBuildId)).code).toBe('BUILD_ID_MISSING');
    // nothing was written
    expect(() => statSync(join(dir, 'bad.hpkg'))).toThrow();
  });

  it('refuses a function whose own code lands inside the bytes the jump overwrites, but not through a hot-patchable entry', async () => {
    const root = join(import.meta.dirname, '../..');
    const pack = (file: string, symbol: string, out: string) =>
      packHotpatch(hotpatchOpts(out, { targets: [{ path: 'bin/backbranch', baselineFile: join(root, 'fixtures/bin', file), patchObject: join(root, 'fixtures/bin/backbranch_fix.so'), functions: [{ symbol, replacement: `${symbol}_v2` }] }] }));
    const loop = await refusal(() => pack('backbranch', 'count_up', 'bb.hpkg'));
    expect(loop.code).toBe('BRANCH_INTO_JUMP');
    expect(loop.message).toMatch(/^refusing to pack count_up at 0x[0-9a-f]+: .*`jl 0x[0-9a-f]+` at 0x[0-9a-f]+ \(count_up\+9\) jumps to count_up\+2/);
    expect(loop.message).toContain('-fpatchable-function-entry=7,5');
    expect((await refusal(() => pack('backbranch', 'call_via', 'bb.hpkg'))).message).toContain('returns to call_via+3');
    expect(() => statSync(join(dir, 'bb.hpkg'))).toThrow();
    // Built with hot-patchable entries, only the 2-byte NOP is overwritten: the loop head (+4) is past it.
    const zs = await pack('backbranch-zs', 'count_up', 'bb-zs.hpkg');
    expect(zs.manifest.targets[0].functions[0].symbol).toBe('count_up');
  });

  it('validates the finished manifest before writing', async () => {
    const e = await refusal(() => packBaseline(baselineOpts('bad-base.hpkg', { kb: 'KB1', services: [{ name: 's', file: 'bin/nope' }] })));
    expect(e.code).toBe('PACKAGE_MANIFEST_INVALID');
    expect(e.message).toContain('kb:');
    expect(e.message).toContain('services[0].file');
    expect(() => statSync(join(dir, 'bad-base.hpkg'))).toThrow();
  });
});

// ------------------------------------------------------------------------------------------------

describe('opening packages: refusals', () => {
  let good: { manifestBytes: Buffer; signature: string; payload: Map<string, Buffer>; manifest: Manifest };

  beforeAll(async () => {
    const r = await packHotpatch(hotpatchOpts('good.hpkg'));
    const opened = await openPackage(r.path, { trustDir: trusted });
    good = { manifestBytes: opened.manifestBytes, signature: signManifest(opened.manifestBytes, key.privateKeyPem), payload: opened.payload, manifest: opened.manifest };
  });

  /** The good package's entries (as raw tar entries), changed by `edit`, written to a file and opened. */
  async function openCrafted(name: string, edit: (entries: RawEntry[]) => RawEntry[], opts: { allowUnsigned?: boolean } = {}) {
    const entries = packageEntries(good).map(([n, data]) => ({ name: n, data }));
    return openPackage(writeTemp(name, rawTar(edit(entries))), { trustDir: trusted, ...opts });
  }

  it('opens the unchanged hand-built package (the baseline for every case below)', async () => {
    const p = await openCrafted('same.hpkg', (e) => e);
    expect(p.signer?.keyId).toBe(key.keyId);
  });

  it('refuses an unsigned package, unless the developer switch is on', async () => {
    const e = await refusal(() => openCrafted('unsigned.hpkg', (es) => es.filter((x) => x.name !== 'manifest.sig')));
    expect(e.code).toBe('PACKAGE_UNSIGNED');
    const p = await openCrafted('unsigned.hpkg', (es) => es.filter((x) => x.name !== 'manifest.sig'), { allowUnsigned: true });
    expect(p.signer).toBeUndefined();
    expect((await refusal(() => openCrafted('nomanifest.hpkg', (es) => es.filter((x) => x.name !== 'manifest.json')))).code).toBe('PACKAGE_UNSIGNED');
  });

  it('refuses a tampered payload', async () => {
    const flip = (es: RawEntry[]) =>
      es.map((x) => {
        if (!x.name.startsWith('payload/')) return x;
        const d = Buffer.from(x.data!);
        d[d.length - 1] ^= 1;
        return { ...x, data: d };
      });
    const e = await refusal(() => openCrafted('tampered.hpkg', flip));
    expect(e.code).toBe('PACKAGE_TAMPERED');
    expect(e.message).toContain('payload/fix.so');
    const shorter = await refusal(() => openCrafted('tampered2.hpkg', (es) => es.map((x) => (x.name.startsWith('payload/') ? { ...x, data: x.data!.subarray(1) } : x))));
    expect(shorter.code).toBe('PACKAGE_TAMPERED');
    const missing = await refusal(() => openCrafted('tampered3.hpkg', (es) => es.filter((x) => !x.name.startsWith('payload/'))));
    expect(missing.code).toBe('PACKAGE_TAMPERED');
  });

  it('refuses a tampered manifest: the signature fails', async () => {
    const edited = Buffer.from(good.manifestBytes.toString('utf8').replace('"February hotpatch"', '"February hotpatch!"'));
    expect(parseManifest(edited).title).toBe('February hotpatch!');
    const e = await refusal(() => openCrafted('badsig.hpkg', (es) => es.map((x) => (x.name === 'manifest.json' ? { ...x, data: edited } : x))));
    expect(e.code).toBe('PACKAGE_BAD_SIGNATURE');
    // the developer switch does not excuse a broken signature
    expect((await refusal(() => openCrafted('badsig.hpkg', (es) => es.map((x) => (x.name === 'manifest.json' ? { ...x, data: edited } : x)), { allowUnsigned: true }))).code).toBe(
      'PACKAGE_BAD_SIGNATURE',
    );
  });

  it('refuses a package signed by an unknown key', async () => {
    const sig = Buffer.from(signManifest(good.manifestBytes, stranger.privateKeyPem) + '\n');
    const resign = (es: RawEntry[]) => es.map((x) => (x.name === 'manifest.sig' ? { ...x, data: sig } : x));
    const e = await refusal(() => openCrafted('stranger.hpkg', resign));
    expect(e.code).toBe('PACKAGE_UNTRUSTED');
    expect(e.message).toContain('signer is unknown');
    expect(e.details.keyId).toBe(stranger.keyId);
    expect((await openCrafted('stranger.hpkg', resign, { allowUnsigned: true })).signer).toBeUndefined();
  });

  const unsafeCases: [string, RawEntry, string][] = [
    ['a symbolic link', { name: 'payload/link', type: '2', linkname: '/etc/shadow' }, 'symbolic link'],
    ['a hard link', { name: 'payload/hard', type: '1', linkname: 'manifest.json' }, 'hard link'],
    ['a character device', { name: 'payload/dev', type: '3' }, 'device'],
    ['a FIFO', { name: 'payload/fifo', type: '6' }, 'FIFO'],
    ['an unknown entry type', { name: 'payload/x', type: 'V' }, 'tar type'],
    ['a ".." path', { name: 'payload/../../etc/cron.d/evil', data: Buffer.from('x') }, '".." component'],
    ['an absolute path', { name: '/etc/cron.d/evil', data: Buffer.from('x') }, 'absolute path'],
    ['an extra file the manifest does not list', { name: 'payload/extra.so', data: Buffer.from('x') }, 'does not list'],
    ['an extra directory', { name: 'other', type: '5' }, 'lists no file'],
    ['a duplicate entry', { name: 'payload/fix.so', data: Buffer.from('second copy') }, 'more than once'],
  ];
  for (const [what, entry, words] of unsafeCases) {
    it(`refuses ${what}`, async () => {
      const e = await refusal(() => openCrafted(`unsafe-${what.replace(/\W+/g, '_')}.hpkg`, (es) => [...es, entry]));
      expect(e.code).toBe('PACKAGE_UNSAFE_ENTRY');
      expect(e.message).toContain(`"${entry.name}"`);
      expect(e.message).toContain(words);
      expect(e.details.entry).toBe(entry.name);
    });
  }

  it('refuses a link even as the first entry, before reading anything else', async () => {
    const data = rawTar([{ name: 'manifest.json', type: '2', linkname: '/etc/passwd' }]);
    const e = await refusal(() => readArchive(data));
    expect(e.code).toBe('PACKAGE_UNSAFE_ENTRY');
    expect(e.message).toContain('"manifest.json"');
  });

  it('accepts directory entries and "./" prefixes that other tar tools write', async () => {
    const p = await openCrafted('dirs.hpkg', (es) => [{ name: './', type: '5' }, { name: './payload/', type: '5' }, ...es.map((x) => ({ ...x, name: `./${x.name}` }))]);
    expect(p.payload.has('payload/fix.so')).toBe(true);
  });

  it('reads a gzip-compressed package', async () => {
    const p = writeTemp('gz.hpkg', gzipSync(rawTar(packageEntries(good).map(([name, data]) => ({ name, data })))));
    expect((await openPackage(p, { trustDir: trusted })).signer?.keyId).toBe(key.keyId);
  });

  it('refuses an oversize manifest and an oversize package', async () => {
    const big = Buffer.alloc(1024 * 1024 + 1, 0x20);
    const e = await refusal(() => openCrafted('bigmanifest.hpkg', (es) => es.map((x) => (x.name === 'manifest.json' ? { ...x, data: big } : x))));
    expect(e.code).toBe('PACKAGE_TOO_LARGE');
    expect(e.message).toContain('manifest.json');
    const p = writeTemp('fine.hpkg', buildArchive(packageEntries(good)));
    const tooBig = await refusal(() => openPackage(p, { trustDir: trusted, limits: { maxPackageBytes: 1000 } }));
    expect(tooBig.code).toBe('PACKAGE_TOO_LARGE');
    expect((await refusal(() => readArchive(readFileSync(p), { maxUnpackedBytes: 1000 }))).code).toBe('PACKAGE_TOO_LARGE');
  });

  it('refuses a file that is not a tar archive, or a truncated one', async () => {
    expect((await refusal(() => openPackage(writeTemp('junk.hpkg', Buffer.from('hello, world\n'.repeat(100))), { trustDir: trusted }))).code).toBe('PACKAGE_CORRUPT');
    const whole = buildArchive(packageEntries(good));
    // cut in the middle of an entry's body (a cut between entries is a shorter, valid tar)
    expect((await refusal(() => readArchive(whole.subarray(0, 1536 + 700)))).code).toBe('PACKAGE_CORRUPT');
    expect((await refusal(() => readArchive(gzipSync(whole).subarray(0, 300)))).code).toBe('PACKAGE_CORRUPT');
    expect((await refusal(() => openPackage(join(dir, 'absent.hpkg'), { trustDir: trusted }))).code).toBe('PACKAGE_NOT_FOUND');
  });

  it('refuses a manifest that fails the schema, naming the field', async () => {
    const m = structuredClone(good.manifest) as HotpatchManifest;
    m.targets[0].functions[0].sha256 = 'nope';
    const bytes = Buffer.from(JSON.stringify(m));
    const e = await refusal(() =>
      openCrafted('schema.hpkg', (es) =>
        es.map((x) => (x.name === 'manifest.json' ? { ...x, data: bytes } : x.name === 'manifest.sig' ? { ...x, data: Buffer.from(signManifest(bytes, key.privateKeyPem)) } : x)),
      ),
    );
    expect(e.code).toBe('PACKAGE_MANIFEST_INVALID');
    expect(e.message).toContain('targets[0].functions[0].sha256');
  });

  it('never writes to disk while reading', async () => {
    const before = readdirSync(dir).sort();
    await refusal(() => openCrafted('nowrite.hpkg', (es) => [{ name: 'payload/evil', type: '2', linkname: '/tmp' }, { name: 'payload/evil/x', data: Buffer.from('x') }, ...es]));
    expect(readdirSync(dir).sort()).toEqual([...before, 'nowrite.hpkg'].sort());
  });
});
