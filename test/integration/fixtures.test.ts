/**
 * The fixture targets and patches (fixtures/, built by `make -C fixtures`): each target speaks the
 * protocol with the documented answers, and the binaries have the shape the live-patching tests
 * rely on (named >= 16-byte patchable functions in .symtab, endbr64, a 3-byte function, TLS
 * relocations, a constructor, ...). Shape checks use binutils' readelf/objdump, which come with gcc.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
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

beforeAll(async () => {
  await buildFixtures();
}, 120_000);

interface ElfSymbol {
  value: bigint;
  size: number;
  type: string;
  bind: string;
  ndx: string;
  name: string;
}

/** Symbols of .symtab (or .dynsym with dynamic = true), via readelf. */
async function symbols(file: string, dynamic = false): Promise<ElfSymbol[]> {
  const { stdout } = await run('readelf', ['-W', dynamic ? '--dyn-syms' : '--syms', fixturePath(file)]);
  const table: ElfSymbol[] = [];
  let inWanted = false;
  for (const line of stdout.split('\n')) {
    if (line.startsWith('Symbol table')) {
      inWanted = dynamic ? line.includes("'.dynsym'") : line.includes("'.symtab'");
      continue;
    }
    const m = /^\s*\d+:\s+([0-9a-f]+)\s+(\d+)\s+(\w+)\s+(\w+)\s+\w+\s+(\w+)\s+(\S+)/.exec(line);
    if (inWanted && m) {
      table.push({ value: BigInt(`0x${m[1]}`), size: Number(m[2]), type: m[3], bind: m[4], ndx: m[5], name: m[6] });
    }
  }
  return table;
}

async function symbol(file: string, name: string, dynamic = false): Promise<ElfSymbol> {
  const found = (await symbols(file, dynamic)).filter((s) => s.name === name);
  expect(found, `${file}: symbol ${name}`).toHaveLength(1);
  return found[0];
}

/** The instructions of one function, as objdump prints them (mnemonic and operands). */
async function disassemble(file: string, fn: string): Promise<string[]> {
  const { stdout } = await run('objdump', ['-d', '--no-show-raw-insn', `--disassemble=${fn}`, fixturePath(file)]);
  return stdout
    .split('\n')
    .filter((line) => /^\s+[0-9a-f]+:\t/.test(line))
    .map((line) => line.split('\t').slice(1).join(' ').replace(/\s+/g, ' ').trim());
}

async function readelf(file: string, ...flags: string[]): Promise<string> {
  return (await run('readelf', ['-W', ...flags, fixturePath(file)])).stdout;
}

const TARGETS = ['loop-pie', 'loop-nopie', 'endbr', 'service', 'uselib', 'blocked', 'helper_global', 'short', 'spinentry', 'backbranch', 'backbranch-zs'];

/** Every patchable function: [file, symbol]; all must be >= 16 bytes. */
const PATCHABLE: Array<[string, string]> = [
  ['loop-pie', 'compute'],
  ['loop-nopie', 'compute'],
  ['endbr', 'compute'],
  ['service', 'handle_request'],
  ['libgreet.so', 'greet'],
  ['blocked', 'compute'],
  ['helper_global', 'compute'],
  ['helper_global', 'helper'],
  ['short', 'compute'],
  ['spinentry', 'compute'],
  ['spinentry', 'stuck'],
  ['backbranch', 'count_up'],
  ['backbranch', 'call_via'],
];

/** Every patch: [file, replacement functions]. */
const PATCHES: Array<[string, string[]]> = [
  ['loop_fix.so', ['compute_v2']],
  ['endbr_fix.so', ['compute_v2']],
  ['service_fix.so', ['handle_request_v2']],
  ['greet_fix.so', ['greet_v2']],
  ['helper_global_fix.so', ['compute_v2']],
  ['short_fix.so', ['tiny_v2']],
  ['spinentry_fix.so', ['stuck_v2']],
  ['blocked_fix.so', ['sleeper_v2']],
  ['backbranch_fix.so', ['count_up_v2', 'call_via_v2']],
  ['patch_tls.so', ['compute_v2']],
  ['patch_ctor.so', ['compute_v2']],
];

describe('fixture binaries', () => {
  it('are all built', () => {
    for (const name of [...TARGETS, 'libgreet.so', ...PATCHES.map(([file]) => file)]) {
      expect(existsSync(fixturePath(name)), name).toBe(true);
    }
  });

  it.each(PATCHABLE)('%s: %s is a named function of at least 16 bytes', async (file, name) => {
    const sym = await symbol(file, name);
    expect(sym.type).toBe('FUNC');
    expect(sym.size).toBeGreaterThanOrEqual(16);
  });

  it.each([...TARGETS, 'libgreet.so'])('%s keeps .symtab and debug info, and has a build id', async (file) => {
    const sections = await readelf(file, '--sections');
    expect(sections).toMatch(/\.symtab\s/);
    expect(sections).toMatch(/\.debug_info\s/);
    expect(await readelf(file, '--notes')).toMatch(/Build ID: [0-9a-f]{40}/);
  });

  it('loop-pie is position independent, loop-nopie is not', async () => {
    expect(await readelf('loop-pie', '--file-header')).toMatch(/Type:\s+DYN/);
    expect(await readelf('loop-nopie', '--file-header')).toMatch(/Type:\s+EXEC/);
  });

  it('only endbr starts its functions with endbr64', async () => {
    expect((await disassemble('endbr', 'compute'))[0]).toBe('endbr64');
    expect((await disassemble('endbr_fix.so', 'compute_v2'))[0]).toBe('endbr64');
    expect((await disassemble('loop-pie', 'compute'))[0]).not.toBe('endbr64');
    expect((await disassemble('loop_fix.so', 'compute_v2'))[0]).not.toBe('endbr64');
  });

  it('helper_global: helper and counter are local symbols under their plain names', async () => {
    const table = await symbols('helper_global');
    expect(table.find((s) => s.name === 'helper')).toMatchObject({ type: 'FUNC', bind: 'LOCAL' });
    expect(table.find((s) => s.name === 'counter')).toMatchObject({ type: 'OBJECT', bind: 'LOCAL', size: 4 });
    expect(table.filter((s) => /^(helper|counter|compute)\./.test(s.name))).toEqual([]);
    expect((await disassemble('helper_global', 'compute')).some((insn) => /call\s+[0-9a-f]+ <helper>/.test(insn))).toBe(
      true,
    );
  });

  it('short: tiny is 3 bytes and after_tiny follows it directly', async () => {
    const tiny = await symbol('short', 'tiny');
    const after = await symbol('short', 'after_tiny');
    expect(tiny.size).toBe(3);
    expect(after.value).toBe(tiny.value + 3n);
    expect(await disassemble('short', 'tiny')).toEqual(['xor %eax,%eax', 'ret']);
  });

  it('spinentry: the loop of stuck lies within its first 5 bytes and avoids the entry', async () => {
    const insns = await disassemble('spinentry', 'stuck');
    expect(insns.slice(0, 3)).toEqual(['nop', 'incq (%rdi)', 'jmp *%rsi']);
    expect(insns.slice(3).every((insn) => insn === 'nop')).toBe(true);
    expect((await symbol('spinentry', 'stuck')).size).toBe(16);
  });

  it('backbranch: count_up loops back to +2, call_via\'s call returns to +3', async () => {
    const count = await disassemble('backbranch', 'count_up');
    expect(count.slice(0, 5)).toEqual(['xor %eax,%eax', 'add $0x1,%rax', 'cmp (%rdi),%rax', expect.stringMatching(/^jl [0-9a-f]+ <count_up\+0x2>$/), 'ret']);
    const via = await run('objdump', ['-d', '--disassemble=call_via', fixturePath('backbranch')]);
    expect(via.stdout).toMatch(/^\s+[0-9a-f]+:\t53 \s+\tpush\s+%rbx\n\s+[0-9a-f]+:\tff d6 \s+\tcall\s+\*%rsi\n\s+[0-9a-f]+:\t5b /m);
  });

  it('uselib takes greet from libgreet.so through rpath $ORIGIN', async () => {
    const dynamic = await readelf('uselib', '--dynamic');
    expect(dynamic).toMatch(/NEEDED.*\[libgreet\.so\]/);
    expect(dynamic).toMatch(/(RUNPATH|RPATH).*\[\$ORIGIN\]/);
    expect((await symbols('uselib', true)).find((s) => s.name === 'greet')).toMatchObject({ ndx: 'UND' });
  });

  it.each(PATCHES)('%s exports its replacement functions', async (file, names) => {
    const exported = await symbols(file, true);
    for (const name of names) {
      expect(exported.find((s) => s.name === name), `${file}: ${name}`).toMatchObject({ type: 'FUNC', bind: 'GLOBAL' });
    }
    expect(await readelf(file, '--notes')).toMatch(/Build ID/);
    // -z now
    expect(await readelf(file, '--dynamic')).toMatch(/FLAGS.*BIND_NOW|FLAGS_1.*NOW/);
  });

  it.each(PATCHES.filter(([file]) => file !== 'patch_tls.so' && file !== 'patch_ctor.so'))(
    '%s has neither TLS nor constructors',
    async (file) => {
      const sections = await readelf(file, '--sections');
      expect(sections).not.toMatch(/\.(tbss|tdata|init_array|ctors|init)\s/);
      expect(await readelf(file, '--relocs')).not.toMatch(/R_X86_64_(DTP|TPOFF|TLS)/);
    },
  );

  it('patch_tls.so has a TLS segment and TLS relocations', async () => {
    expect(await readelf('patch_tls.so', '--segments')).toMatch(/^\s+TLS\s/m);
    expect(await readelf('patch_tls.so', '--relocs')).toMatch(/R_X86_64_DTPMOD64/);
  });

  it('patch_ctor.so has a constructor in .init_array', async () => {
    expect(await readelf('patch_ctor.so', '--sections')).toMatch(/\.init_array\s/);
  });

  it('helper_global_fix.so leaves helper and counter undefined', async () => {
    const dyn = await symbols('helper_global_fix.so', true);
    expect(dyn.find((s) => s.name === 'helper')).toMatchObject({ ndx: 'UND' });
    expect(dyn.find((s) => s.name === 'counter')).toMatchObject({ ndx: 'UND' });
    const relocs = await readelf('helper_global_fix.so', '--relocs');
    expect(relocs).toMatch(/R_X86_64_JUMP_SLOT\s+0+\s+helper/);
    expect(relocs).toMatch(/R_X86_64_GLOB_DAT\s+0+\s+counter/);
  });
});

describe('fixture protocol', () => {
  it.each(['loop-pie', 'loop-nopie', 'endbr'])('%s: ping, call, a live loop, one thread', async (name) => {
    const target = await spawnTarget(fixturePath(name));
    expect(await target.request('ping')).toBe('pong');
    expect(await target.request('call')).toBe('42');
    expect(await target.request('threads')).toBe('1');
    const first = Number(await target.request('calls'));
    await expect.poll(async () => Number(await target.request('calls'))).toBeGreaterThan(first + 1000);
    expect(await target.request('nonsense')).toBe('error unknown command: nonsense');
  });

  it('loop idle mode still answers', async () => {
    const target = await spawnTarget(fixturePath('loop-pie'), { args: ['idle'] });
    expect(await target.request('call')).toBe('42');
  });

  it('quit answers bye and exits 0', async () => {
    const target = await spawnTarget(fixturePath('loop-pie'));
    expect(await target.request('quit')).toBe('bye');
    expect(await target.exited).toEqual({ code: 0, signal: null });
    expect(target.alive()).toBe(false);
  });

  it('service: 8 workers by default, several connections at once', async () => {
    const socket = tempSocketPath('svc');
    const target = await spawnTarget(fixturePath('service'), { args: [socket] });
    expect(await target.request('call')).toBe('v1');
    // threads = main + workers (no acceptor thread: workers accept() themselves)
    expect(await target.request('threads')).toBe('9');

    const clients = await Promise.all(Array.from({ length: 8 }, () => UnixClient.connect(socket)));
    try {
      const answers = await Promise.all(
        clients.map(async (client) => [
          await client.request('ping'),
          await client.request('call'),
          await client.request('threads'),
        ]),
      );
      for (const answer of answers) expect(answer).toEqual(['pong', 'v1', '9']);
      // pipelined requests on one connection come back in order
      const burst = await Promise.all(['call', 'ping', 'call', 'threads'].map((line) => clients[0].request(line)));
      expect(burst).toEqual(['v1', 'pong', 'v1', '9']);
    } finally {
      for (const client of clients) client.close();
    }
    // one-shot connections, many at once (more than workers: the backlog holds the rest)
    const oneShots = await Promise.all(Array.from({ length: 20 }, () => unixRequest(socket, 'call')));
    expect(oneShots).toEqual(Array(20).fill('v1'));
    // handle_request ran once per `call`: 1 on stdin, 8 + 2 on the clients, 20 one-shots
    expect(await target.request('requests')).toBe('31');
  });

  it.each([
    [['1'], 2],
    [['32'], 33],
    [['2', 'busy'], 4],
    [['2', 'busy', '3'], 6],
  ])('service %j: threads = %i', async (extra, threads) => {
    const socket = tempSocketPath('svc');
    const target = await spawnTarget(fixturePath('service'), { args: [socket, ...extra] });
    expect(await target.request('threads')).toBe(String(threads));
    expect(await unixRequest(socket, 'threads')).toBe(String(threads));
    expect(await unixRequest(socket, 'call')).toBe('v1');
    if (extra.includes('busy')) {
      const first = Number(await target.request('requests'));
      await expect.poll(async () => Number(await target.request('requests'))).toBeGreaterThan(first + 1000);
    }
  });

  it('uselib: greet comes from libgreet.so', async () => {
    const target = await spawnTarget(fixturePath('uselib'));
    expect(await target.request('call')).toBe('hello');
    expect(readFileSync(`/proc/${target.pid}/maps`, 'utf8')).toMatch(/\/libgreet\.so$/m);
  });

  it('blocked: honest sleep, feed/got round trips, three threads', async () => {
    const target = await spawnTarget(fixturePath('blocked'));
    expect(await target.request('threads')).toBe('3');
    expect(await target.request('call')).toBe('42');
    expect(await target.request('slept')).toBe('error not sleeping');

    expect(await target.request('sleep 200')).toBe('sleeping');
    expect(await target.request('sleep 10')).toBe('error busy');
    const slept = (await target.request('slept')).split(' ');
    expect(slept[0]).toBe('slept');
    expect(Number(slept[1])).toBeGreaterThanOrEqual(200);
    expect(slept.slice(2)).toEqual(['0', '0']);

    // `sleep` answers at once; the main thread keeps serving while the sleeper sleeps
    const started = Date.now();
    expect(await target.request('sleep 800')).toBe('sleeping');
    expect(await target.request('ping')).toBe('pong');
    expect(Date.now() - started).toBeLessThan(600);
    expect(await target.request('slept')).toMatch(/^slept (8\d\d|9\d\d|\d{4,}) 0 0$/);

    expect(await target.request('feed hello world')).toBe('fed 11');
    expect(await target.request('got')).toBe('got 11 0 hello world');
    expect(await target.request('feed again')).toBe('fed 5');
    expect(await target.request('got')).toBe('got 5 0 again');

    // the reader is back in read() and the sleeper idle: a new round works the same
    expect(await target.request('sleep 1')).toBe('sleeping');
    expect(await target.request('slept')).toMatch(/^slept \d+ 0 0$/);
  });

  it('helper_global: compute uses helper and counter', async () => {
    const target = await spawnTarget(fixturePath('helper_global'));
    expect(await target.request('counter')).toBe('0');
    expect(await target.request('call')).toBe('83');
    expect(await target.request('call')).toBe('83');
    expect(await target.request('counter')).toBe('2');
    expect(await target.request('helper')).toBe('82');
    expect(await target.request('counter')).toBe('2');
  });

  it('short: tiny, after_tiny, compute', async () => {
    const target = await spawnTarget(fixturePath('short'));
    expect(await target.request('tiny')).toBe('0');
    expect(await target.request('after')).toBe('99');
    expect(await target.request('call')).toBe('42');
  });

  it('backbranch: count, via, a spinning and a waiting thread, call', async () => {
    const target = await spawnTarget(fixturePath('backbranch'));
    expect(await target.request('count')).toBe('41');
    expect(await target.request('via')).toBe('43');
    expect(await target.request('spin')).toBe('spinning');
    expect(await target.request('threads')).toBe('2');
    expect(await target.request('stop')).toMatch(/^stopped [1-9]\d*$/);
    expect(await target.request('wait')).toBe('waiting');
    expect(await target.request('release')).toBe('released 43');
    expect(await target.request('threads')).toBe('1');
    expect(await target.request('call')).toBe('42');
  });

  it('spinentry: enter puts a thread in stuck for good', async () => {
    const target = await spawnTarget(fixturePath('spinentry'));
    expect(await target.request('threads')).toBe('1');
    expect(await target.request('enter')).toBe('entered');
    expect(await target.request('threads')).toBe('2');
    const laps = Number(await target.request('laps'));
    expect(laps).toBeGreaterThan(0);
    await expect.poll(async () => Number(await target.request('laps'))).toBeGreaterThan(laps + 1000);
    expect(await target.request('escaped')).toBe('0');
    expect(await target.request('call')).toBe('42');
  });
});
