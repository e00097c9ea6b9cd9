/**
 * The greeter product (fixtures/baselines/, built by `make -C fixtures` into
 * fixtures/bin/baselines/): each baseline tree runs from a copy anywhere and gives the answers
 * packages.json promises, and every object named in packages.json has the shape the packaging and
 * live-patching code relies on (named >= 16-byte originals and replacements, patch objects without
 * TLS or constructors, whose undefined symbols the target object or libc provide, distinct
 * build-ids). Applying the hotpatches is tested elsewhere, through the agent.
 */
import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { productSpec, type ProductSpec } from '../../src/demo/fixture-packages.js';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  buildFixtures,
  fixturePath,
  spawnTarget,
  tempSocketPath,
  UnixClient,
  unixRequest,
  useTargets,
} from '../../src/harness/index.js';

const run = promisify(execFile);
useTargets(afterEach);

// ---------------------------------------------------------------------------------------------
// packages.json

// The spec as the fixture packer reads it (src/demo/fixture-packages.ts): one shape, one reader.
type BaselineEntry = ProductSpec['baselines'][number];
type HotpatchEntry = ProductSpec['hotpatches'][number];
const packages = productSpec();
const { baselines, hotpatches, expected } = packages;

const CLASSIFICATIONS = ['Critical', 'Security', 'UpdateRollUp', 'FeaturePack', 'ServicePack', 'Definition', 'Tools', 'Updates'];

/** fixtures/bin/baselines/<parts...> */
const built = (...parts: string[]): string => path.join(fixturePath('baselines'), ...parts);

function baselineOf(hotpatch: HotpatchEntry): BaselineEntry {
  const found = baselines.find((b) => b.id === hotpatch.baselineId);
  if (!found) throw new Error(`${hotpatch.id}: no baseline ${hotpatch.baselineId}`);
  return found;
}

/** The key of `expected` for a hotpatch level: b1-hp2 -> b1+hp2. */
const levelKey = (hotpatch: HotpatchEntry): string => `${baselineOf(hotpatch).dir}+hp${hotpatch.sequence}`;

/** Every (hotpatch, target, function) of packages.json. */
const REPLACEMENTS = hotpatches.flatMap((hp) =>
  hp.targets.flatMap((target) => target.functions.map((fn) => ({ hp, target, fn }))),
);

/** Every patch object: [hotpatch dir/patch object, hotpatch, target]. */
const PATCH_OBJECTS = hotpatches.flatMap((hp) =>
  hp.targets.map((target) => [`${hp.dir}/${target.patchObject}`, hp, target] as const),
);

// ---------------------------------------------------------------------------------------------
// ELF inspection through readelf

interface ElfSymbol {
  size: number;
  type: string;
  bind: string;
  ndx: string;
  name: string;
}

async function readelf(file: string, ...flags: string[]): Promise<string> {
  return (await run('readelf', ['-W', ...flags, file], { maxBuffer: 64 << 20 })).stdout;
}

/** The symbols of .symtab or .dynsym (version suffixes such as @GLIBC_2.2.5 dropped). */
async function symbolTable(file: string, table: '.symtab' | '.dynsym'): Promise<ElfSymbol[]> {
  const out: ElfSymbol[] = [];
  let inWanted = false;
  for (const line of (await readelf(file, '--syms')).split('\n')) {
    if (line.startsWith('Symbol table')) {
      inWanted = line.includes(`'${table}'`);
      continue;
    }
    const m = /^\s*\d+:\s+[0-9a-f]+\s+(\d+)\s+(\w+)\s+(\w+)\s+\w+\s+(\w+)\s+(\S+)/.exec(line);
    if (inWanted && m) {
      out.push({ size: Number(m[1]), type: m[2], bind: m[3], ndx: m[4], name: m[5].replace(/@.*$/, '') });
    }
  }
  return out;
}

/** Names defined in a file's .symtab or .dynsym, with their types. */
async function definitions(file: string): Promise<Map<string, string>> {
  const defined = new Map<string, string>();
  for (const table of ['.symtab', '.dynsym'] as const) {
    for (const s of await symbolTable(file, table)) {
      if (s.ndx !== 'UND' && s.name && s.type !== 'SECTION' && s.type !== 'FILE') defined.set(s.name, s.type);
    }
  }
  return defined;
}

async function buildId(file: string): Promise<string> {
  const m = /Build ID: ([0-9a-f]+)/.exec(await readelf(file, '--notes'));
  expect(m, `${file}: build id`).not.toBeNull();
  return m![1];
}

/** Relocation type names and symbol names, from readelf --relocs. */
async function relocations(file: string): Promise<Array<{ type: string; symbol: string }>> {
  return (await readelf(file, '--relocs'))
    .split('\n')
    .map((line) => /^\s*[0-9a-f]+\s+[0-9a-f]+\s+(R_X86_64_\w+)\s+(?:[0-9a-f]+\s+(\S+))?/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ type: m[1], symbol: (m[2] ?? '').replace(/@.*$/, '') }));
}

let libcPath = '';

beforeAll(async () => {
  await buildFixtures();
  libcPath = (await run('gcc', ['-print-file-name=libc.so.6'])).stdout.trim();
}, 120_000);

// ---------------------------------------------------------------------------------------------

describe('packages.json', () => {
  it('describes two baselines, their hotpatches and the cumulative update beside each security hotpatch, with distinct ids and KB numbers', () => {
    expect(baselines.map((b) => [b.id, b.dir, b.equivalentHotpatch ?? null])).toEqual([
      ['2026.10', 'b1', null],
      ['2026.11', 'b2', null],
      ['2026.10.1', 'b1c1', '2026.10-hp1'],
      ['2026.10.2', 'b1c2', '2026.10-hp2'],
      ['2026.11.1', 'b2c1', '2026.11-hp1'],
    ]);
    expect(hotpatches.map((h) => [h.id, h.dir, h.baselineId, h.sequence, h.classification])).toEqual([
      ['2026.10-hp1', 'b1-hp1', '2026.10', 1, 'Security'],
      ['2026.10-hp2', 'b1-hp2', '2026.10', 2, 'Critical'],
      ['2026.11-hp1', 'b2-hp1', '2026.11', 1, 'Security'],
      ['2026.11-hp2', 'b2-hp2', '2026.11', 2, 'Updates'],
    ]);
    // A cumulative update is released with its hotpatch and answers as the baseline at that level does.
    for (const cu of baselines.filter((b) => b.equivalentHotpatch)) {
      const hp = hotpatches.find((h) => h.id === cu.equivalentHotpatch)!;
      expect(cu.releaseDate, cu.id).toBe(hp.releaseDate);
      const { version: _v, ...answers } = expected[cu.dir];
      const { version: _w, ...atLevel } = expected[levelKey(hp)];
      expect(answers, cu.id).toEqual(atLevel);
    }
    const all = [...baselines, ...hotpatches];
    expect(new Set(all.map((p) => p.id)).size).toBe(all.length);
    expect(new Set(all.map((p) => p.kb)).size).toBe(all.length);
    for (const p of all) {
      expect(p.kb, p.id).toMatch(/^KB5\d{6}$/);
      expect(CLASSIFICATIONS, p.id).toContain(p.classification);
      expect(p.releaseDate, p.id).toMatch(/^\d{4}-\d{2}-\d{2}$/);
      expect(p.title, p.id).not.toBe('');
    }
    // released in this order: b1, b1-hp1, b1-hp2, b2, b2-hp1
    const order = ['2026.10', '2026.10-hp1', '2026.10-hp2', '2026.11', '2026.11-hp1'];
    const dates = order.map((id) => all.find((p) => p.id === id)!.releaseDate);
    expect([...dates].sort()).toEqual(dates);
    expect(new Set(dates).size).toBe(dates.length);
  });

  it('names files, services and patch objects that were built', () => {
    for (const b of baselines) {
      expect(b.files.map((f) => [f.path, f.mode])).toEqual([
        ['bin/greetd', 0o755],
        ['lib/libgreet-core.so', 0o644],
      ]);
      for (const f of b.files) expect(existsSync(built(b.dir, f.path)), `${b.dir}/${f.path}`).toBe(true);
      for (const s of b.services) expect(b.files.map((f) => f.path)).toContain(s.file);
    }
    for (const [object, hp, target] of PATCH_OBJECTS) {
      expect(existsSync(built(object)), object).toBe(true);
      expect(baselineOf(hp).files.map((f) => f.path), object).toContain(target.path);
    }
  });

  it('has expected answers for every level', () => {
    const levels = [...baselines.map((b) => b.dir), ...hotpatches.map(levelKey)];
    expect(Object.keys(expected).sort()).toEqual([...levels].sort());
    for (const level of levels) {
      expect(Object.keys(expected[level]).sort(), level).toEqual(['call', 'hello bob', 'sum -2 3', 'sum 2 3', 'version']);
    }
  });

  it('hotpatch 2 is cumulative yet drops hotpatch 1 replacing banner', () => {
    const replaced = (id: string) =>
      hotpatches
        .find((h) => h.id === id)!
        .targets.flatMap((t) => t.functions.map((f) => `${t.path}:${f.symbol}`))
        .sort();
    expect(replaced('2026.10-hp1')).toEqual(['bin/greetd:banner', 'lib/libgreet-core.so:format_greeting']);
    expect(replaced('2026.10-hp2')).toEqual(['bin/greetd:add_numbers', 'lib/libgreet-core.so:format_greeting']);
    expect(replaced('2026.11-hp1')).toEqual(['lib/libgreet-core.so:format_greeting']);
    expect(expected['b1+hp1'].version).toBe(`${expected.b1.version}+hp1`);
    expect(expected['b1+hp2'].version).toBe(expected.b1.version);
    // hp2 keeps hp1's greeting fix and adds the sum fix, which b2 has built in
    expect(expected['b1+hp2']['hello bob']).toBe(expected['b1+hp1']['hello bob']);
    expect(expected['b1+hp2']['sum -2 3']).toBe(expected.b2['sum -2 3']);
    expect(expected['b1+hp1']['sum -2 3']).toBe(expected.b1['sum -2 3']);
  });
});

describe('baselines run from a copied tree', () => {
  const copies: string[] = [];
  afterEach(() => {
    for (const dir of copies.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  /** Install the baseline's files into a fresh temporary directory, with their modes. */
  function install(baseline: BaselineEntry): string {
    const root = mkdtempSync(path.join(os.tmpdir(), `hp-greeter-${baseline.dir}-`));
    copies.push(root);
    for (const f of baseline.files) {
      const to = path.join(root, f.path);
      mkdirSync(path.dirname(to), { recursive: true });
      copyFileSync(built(baseline.dir, f.path), to);
      chmodSync(to, f.mode);
    }
    return root;
  }

  it.each(baselines.map((b) => [b.dir, b] as const))('%s: every expected answer, on the socket and stdin', async (dir, baseline) => {
    const root = install(baseline);
    const service = baseline.services[0];
    const socket = tempSocketPath('greetd');
    const args = (service.args ?? []).map((a) => (a === '${HP_RUN}/greetd.sock' ? socket : a));
    expect(args).toEqual([socket, '4']);
    const target = await spawnTarget(path.join(root, service.file), { args });

    // greetd and the library come from the copy: rpath $ORIGIN/../lib works wherever it lies
    const maps = readFileSync(`/proc/${target.pid}/maps`, 'utf8');
    expect(maps).toContain(path.join(root, 'lib/libgreet-core.so'));
    expect(maps).toContain(path.join(root, 'bin/greetd'));
    expect(maps).not.toContain(fixturePath('baselines'));

    const answers = expected[dir];
    const requests = Object.keys(answers);
    // several connections at once, each asking everything
    const clients = await Promise.all(Array.from({ length: 4 }, () => UnixClient.connect(socket)));
    try {
      const got = await Promise.all(
        clients.map(async (client) => Object.fromEntries(await Promise.all(requests.map(async (r) => [r, await client.request(r)])))),
      );
      for (const g of got) expect(g).toEqual(answers);
    } finally {
      for (const client of clients) client.close();
    }
    for (const r of requests) expect(await target.request(r), `stdin: ${r}`).toBe(answers[r]);

    // 5 rounds of: 2 greetings (hello, call), 2 sums, 1 version
    expect(await unixRequest(socket, 'stats')).toBe('greetings 10 sums 10 versions 5');
    expect(await unixRequest(socket, 'threads')).toBe('5');
    expect(await target.request('ping')).toBe('pong');
    expect(await target.request('hello')).toBe('error usage: hello NAME');
    expect(await target.request('sum 1')).toBe('error usage: sum A B');
    expect(await target.request('sum 1 x')).toBe('error usage: sum A B');
    expect(await target.request('sum 9223372036854775807 1')).toBe('9223372036854775807');
    expect(await target.request('hello alice and bob')).toBe(dir === 'b1' ? 'hello lice and bob' : expected[dir]['hello bob'].replace('bob', 'alice and bob'));
    expect(await target.request('quit')).toBe('bye');
    expect(await target.exited).toEqual({ code: 0, signal: null });
  });
});

describe('baseline and patch objects', () => {
  it.each(baselines.map((b) => [b.dir]))('%s: greetd needs libgreet-core.so through rpath $ORIGIN/../lib', async (dir) => {
    const dynamic = await readelf(built(dir, 'bin/greetd'), '--dynamic');
    expect(dynamic).toMatch(/NEEDED.*\[libgreet-core\.so\]/);
    expect(dynamic).toMatch(/(RUNPATH|RPATH).*\[\$ORIGIN\/\.\.\/lib\]/);
    expect(await readelf(built(dir, 'lib/libgreet-core.so'), '--dynamic')).toMatch(/SONAME.*\[libgreet-core\.so\]/);
    for (const file of ['bin/greetd', 'lib/libgreet-core.so']) {
      const sections = await readelf(built(dir, file), '--sections');
      expect(sections, file).toMatch(/\.symtab\s/);
      expect(sections, file).toMatch(/\.debug_info\s/);
    }
  });

  it('b1 and b2 differ in the build-id of every file; all patch objects have their own', async () => {
    const [b1, b2] = baselines;
    for (const f of b1.files) {
      expect(await buildId(built(b1.dir, f.path)), f.path).not.toBe(await buildId(built(b2.dir, f.path)));
    }
    const ids = await Promise.all(PATCH_OBJECTS.map(([object]) => buildId(built(object))));
    expect(new Set(ids).size).toBe(ids.length);
  });

  it.each(REPLACEMENTS.map(({ hp, target, fn }) => [hp.dir, target.path, fn.symbol, fn.replacement, hp, target] as const))(
    '%s: %s %s -> %s are named functions of at least 16 bytes',
    async (_dir, targetPath, symbol, replacement, hp, target) => {
      const original = built(baselineOf(hp).dir, targetPath);
      const symtab = await symbolTable(original, '.symtab');
      const named = symtab.filter((s) => s.name === symbol);
      expect(named, `${original}: ${symbol}`).toHaveLength(1);
      expect(named[0]).toMatchObject({ type: 'FUNC', bind: 'GLOBAL' });
      expect(named[0].ndx).not.toBe('UND');
      expect(named[0].size).toBeGreaterThanOrEqual(16);
      // no compiler clone or split part (.isra, .constprop, .part, .cold) of it
      expect(symtab.filter((s) => s.name.startsWith(`${symbol}.`))).toEqual([]);

      const patch = built(hp.dir, target.patchObject);
      const exported = (await symbolTable(patch, '.dynsym')).filter((s) => s.name === replacement);
      expect(exported, `${patch}: ${replacement}`).toHaveLength(1);
      expect(exported[0]).toMatchObject({ type: 'FUNC', bind: 'GLOBAL' });
      expect(exported[0].ndx).not.toBe('UND');
      expect(exported[0].size).toBeGreaterThanOrEqual(16);
    },
  );

  it.each(PATCH_OBJECTS)('%s: no TLS, no constructor, bound now, only plain relocations', async (object) => {
    const file = built(object);
    expect(await readelf(file, '--sections')).not.toMatch(/\.(tbss|tdata|init_array|preinit_array|ctors|init)\s/);
    expect(await readelf(file, '--segments')).not.toMatch(/^\s+TLS\s/m);
    const dynamic = await readelf(file, '--dynamic');
    expect(dynamic).toMatch(/FLAGS.*BIND_NOW|FLAGS_1.*NOW/);
    expect(dynamic).not.toMatch(/\((INIT|INIT_ARRAY|PREINIT_ARRAY)\)/);
    for (const r of await relocations(file)) {
      expect(['R_X86_64_RELATIVE', 'R_X86_64_GLOB_DAT', 'R_X86_64_JUMP_SLOT', 'R_X86_64_64'], `${object}: ${r.type}`).toContain(r.type);
    }
  });

  it.each(PATCH_OBJECTS)('%s: every undefined symbol is provided by the target object or libc', async (object, hp, target) => {
    expect(libcPath, 'gcc -print-file-name=libc.so.6').toMatch(/\/libc\.so\.6$/);
    const baselineDir = baselineOf(hp).dir;
    const targetFile = built(baselineDir, target.path);
    const inTarget = await definitions(targetFile);
    const targetImports = new Set(
      (await symbolTable(targetFile, '.dynsym')).filter((s) => s.ndx === 'UND' && s.name).map((s) => s.name),
    );
    const libc = new Map(
      (await symbolTable(libcPath, '.dynsym')).filter((s) => s.ndx !== 'UND' && s.name).map((s) => [s.name, s.type]),
    );
    // what the other files of the baseline copy-relocate into themselves is not live in the target
    const copied = new Set<string>();
    for (const f of baselineOf(hp).files) {
      if (f.path === target.path) continue;
      for (const r of await relocations(built(baselineDir, f.path))) if (r.type === 'R_X86_64_COPY') copied.add(r.symbol);
    }

    const undefinedNames = (await symbolTable(built(object), '.dynsym')).filter((s) => s.ndx === 'UND' && s.name);
    expect(undefinedNames.length).toBeGreaterThan(0);
    for (const { name, bind } of undefinedNames) {
      expect(bind, `${object}: ${name}`).toBe('GLOBAL');
      if (inTarget.has(name)) {
        expect(copied.has(name), `${object}: ${name} is copy-relocated into another object`).toBe(false);
        continue;
      }
      expect(libc.has(name), `${object}: ${name} is defined neither by ${target.path} nor by libc`).toBe(true);
      // an IFUNC of libc is usable only through the target's own (already resolved) GOT slot
      if (libc.get(name) === 'IFUNC') expect(targetImports.has(name), `${object}: IFUNC ${name}`).toBe(true);
    }
  });
});
