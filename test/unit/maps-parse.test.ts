// The hand-written /proc/PID/maps parser against the regex it replaced, the st_dev encoding of
// the devices it reports, and the loads and load bias computed from its lines.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { PT_LOAD, type ElfFile } from '../../src/elf/index.js';
import { computeLoadBias, devNumber, parseMaps, type MapEntry } from '../../src/proc/index.js';
import { groupInstances } from '../../src/proc/loads.js';

/** The parser as it was (a regex per line): the reference the new one must agree with. */
const LINE = /^([0-9a-f]+)-([0-9a-f]+)\s+([r-][w-][x-][ps])\s+([0-9a-f]+)\s+([0-9a-f]+:[0-9a-f]+)\s+(\d+)(?:\s+(.*))?$/i;
function referenceParse(text: string): MapEntry[] {
  const entries: MapEntry[] = [];
  for (const raw of text.split('\n')) {
    if (raw.trim() === '') continue;
    const m = LINE.exec(raw);
    if (!m) throw new HpError('MAPS_PARSE_ERROR', `cannot parse a /proc/PID/maps line: ${JSON.stringify(raw)}`, { line: raw });
    let path = m[7] ?? '';
    let deleted = false;
    if (path.endsWith(' (deleted)')) {
      path = path.slice(0, -' (deleted)'.length);
      deleted = true;
    }
    const perms = m[3];
    entries.push({
      start: parseInt(m[1], 16),
      end: parseInt(m[2], 16),
      perms,
      read: perms[0] === 'r',
      write: perms[1] === 'w',
      exec: perms[2] === 'x',
      shared: perms[3] === 's',
      offset: parseInt(m[4], 16),
      dev: m[5].toLowerCase(),
      inode: Number(m[6]),
      path,
      deleted,
    });
  }
  return entries;
}

type Outcome = { entries: MapEntry[] } | { error: string; message: string; line: unknown };
function outcome(parse: (t: string) => MapEntry[], text: string): Outcome {
  try {
    return { entries: parse(text) };
  } catch (e) {
    const err = e as HpError;
    return { error: err.code, message: err.message, line: err.details?.line };
  }
}

const expectSame = (text: string): void => {
  expect(outcome(parseMaps, text), JSON.stringify(text)).toEqual(outcome(referenceParse, text));
};

const PAD = (prefix: string, path: string): string => `${prefix.padEnd(72)} ${path}`;

/** Lines the kernel prints, and lines it never does but the regex had an answer for. */
const TRICKY = [
  PAD('55bd1b1b2000-55bd1b1b6000 r--p 00000000 fe:00 2147228', '/opt/app/bin/server'),
  PAD('55bd1b150000-55bd1b154000 r--s 00000000 00:01 147375', '/memfd:hp-agent:x:fix.so (deleted)'),
  PAD('7f2c1ba00000-7f2c1ba02000 r-xp 00001000 08:02 123', '/srv/dir with spaces/lib old.so (deleted)'),
  PAD('7f2c1ba00000-7f2c1ba02000 r-xp 00001000 08:02 123', '/srv/trailing spaces  '),
  PAD('7f2c1ba00000-7f2c1ba02000 r-xp 00001000 08:02 123', '/srv/a (deleted) (deleted)'),
  PAD('7f2c1ba00000-7f2c1ba02000 r-xp 00001000 08:02 123', ' (deleted)'),
  PAD('7f2c1ba00000-7f2c1ba02000 r-xp 00001000 08:02 123', '/srv/new\\012line'),
  PAD('7f2c1ba00000-7f2c1ba02000 r-xp 00001000 08:02 123', '/srv/ünïcødé/λ.so'),
  PAD('7f2c1ba00000-7f2c1ba02000 r-xp 00001000 08:02 123', '/srv/tab\there'),
  '7f2c1b900000-7f2c1b901000 rw-p 00000000 00:00 0 ',
  '7f2c1b902000-7f2c1b903000 rw-p 00000000 00:00 0',
  '7f2c1b902000-7f2c1b903000 rw-p 00000000 00:00 0\t',
  '7f2c1b902000-7f2c1b903000 rw-p 00000000 00:00 0\r',
  PAD('7f2c1bb00000-7f2c1bb01000 rw-p 00000000 00:00 0', '[anon:glibc.malloc]'),
  PAD('7ffd8c9e1000-7ffd8ca02000 rw-p 00000000 00:00 0', '[stack]'),
  PAD('ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0', '[vsyscall]'),
  // Longer than the kernel's padding, and fields wider than usual.
  '7f2c1ba00000-7f2c1ba02000 r-xp 00001000 103:05 123456789012345678901 /long/inode',
  '7f2c1ba00000-7f2c1ba02000 r-xp 00001000 103:05 1234567890123456 /sixteen/digits',
  '7f2c1ba00000-7f2c1ba02000 r-xp 00001000 103:05 999999999999999 /fifteen/digits',
  '7f2c1ba00000-7f2c1ba02000 r-xp 00001000 00:1a2 5 /big/minor',
  '00400000-00401000 r--p 00000000 fd:01 1311372 /x',
  '1fffffffffffff-20000000000001 r--p 1fffffffffffffff fd:01 1 /beyond-2^53',
  'ffffffffffffffffffff-fffffffffffffffffffff r--p 0 fd:01 1 /very-wide',
  // Upper case, as the /i regex allowed.
  '7F2C1BA00000-7F2C1BA02000 R-XP 00001000 FD:0A 123 /upper',
  '7f2c1ba00000-7f2c1ba02000 r-xS 00001000 Fd:0a 123 /mixed',
  '7f2c1ba00000-7f2c1ba02000 rwxs 00001000 fd:0a 123 /rwxs',
  '7f2c1ba00000-7f2c1ba02000 ---p 00001000 fd:0a 123 /none',
  // Other whitespace between fields.
  '7f2c1ba00000-7f2c1ba02000\tr-xp\t00001000\tfd:01\t123\t/tabs',
  '7f2c1ba00000-7f2c1ba02000 \u00a0r-xp  00001000   fd:01    123 \u3000 /nbsp',
  // Lines the regex refused.
  'hello world',
  '00400000 r--p',
  ' 00400000-00401000 r--p 00000000 fd:01 1 /leading-space',
  '00400000-00401000 r--p 00000000 fd:01 1abc /glued',
  '00400000-00401000 r--p 00000000 fd:01 /no-inode',
  '00400000-00401000 r--x 00000000 fd:01 1 /bad-perms',
  '00400000-00401000 r--pp 00000000 fd:01 1 /long-perms',
  '00400000-00401000 r-p 00000000 fd:01 1 /short-perms',
  '00400000-00401000 r--p 00000000 fd01 1 /no-colon',
  '00400000-00401000 r--p 00000000 :01 1 /no-major',
  '00400000-00401000 r--p 00000000 fd: 1 /no-minor',
  '00400000-00401000 r--p 0000g000 fd:01 1 /bad-offset',
  '0040000g-00401000 r--p 00000000 fd:01 1 /bad-start',
  '00400000--00401000 r--p 00000000 fd:01 1 /double-dash',
  '-00401000 r--p 00000000 fd:01 1 /no-start',
  '00400000-00401000r--p 00000000 fd:01 1 /glued-perms',
  '00400000-00401000 r--p 00000000 fd:01 1 /carriage\rreturn',
  '00400000-00401000 r--p 00000000 fd:01 1 /line\u2028separator',
  '00400000-00401000 r--p 00000000 fd:01 1 /para\u2029separator',
  '00400000-00401000 r--p 00000000 fd:01 ١ /arabic-digit',
  '00400000-00401000 r--p 00000000 fd:01 1\u00a0/nbsp-before-path',
  '00400000-00401000 r--p 00000000 fd:01 1\r/cr-before-path',
  '00400000-00401000 r--p 00000000 fd:01 1 \r',
];

describe('parseMaps agrees with the regex it replaced', () => {
  it('on each tricky line alone', () => {
    for (const line of TRICKY) expectSame(line);
  });

  it('on each tricky line among ordinary ones, with blank lines and CRLF', () => {
    const ordinary = PAD('7ffd8c9e1000-7ffd8ca02000 rw-p 00000000 00:00 0', '[stack]');
    for (const line of TRICKY) {
      expectSame(`${ordinary}\n${line}\n${ordinary}\n`);
      expectSame(`\n   \n${line}\n\t\n`);
      expectSame(`${line}\r\n${ordinary}\r\n`);
    }
  });

  it('keeps the fields of a deleted path with spaces, and [vsyscall] above 2^53', () => {
    const [a, b] = parseMaps(`${TRICKY[2]}\n${TRICKY[15]}\n`);
    expect(a).toMatchObject({ path: '/srv/dir with spaces/lib old.so', deleted: true, inode: 123, dev: '08:02', perms: 'r-xp' });
    expect(b).toMatchObject({ path: '[vsyscall]', start: 0xffffffffff600000, end: 0xffffffffff601000 });
  });

  it('names the bad line', () => {
    try {
      parseMaps(`${TRICKY[0]}\n00400000-00401000 r--p 00000000 fd01 1 /no-colon\n`);
      throw new Error('expected a refusal');
    } catch (e) {
      expect((e as HpError).code).toBe('MAPS_PARSE_ERROR');
      expect((e as HpError).details.line).toBe('00400000-00401000 r--p 00000000 fd01 1 /no-colon');
    }
  });

  it('on the maps of every process it can read', () => {
    let checked = 0;
    for (const name of readdirSync('/proc').filter((n) => /^\d+$/.test(n)).slice(0, 200)) {
      let text: string;
      try {
        text = readFileSync(`/proc/${name}/maps`, 'utf8');
      } catch {
        continue;
      }
      expectSame(text);
      checked++;
    }
    expect(checked).toBeGreaterThan(0);
  });

  it('on random mutations of real lines', () => {
    const base = readFileSync('/proc/self/maps', 'utf8').split('\n').filter(Boolean).concat(TRICKY);
    const alphabet = ['0', '9', 'a', 'F', 'g', '-', ':', ' ', '\t', '\r', '\u00a0', 'p', 's', 'P', 'x', '(', ')', '\u2028', 'é', '1'];
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 5000; i++) {
      let line = base[rand(base.length)];
      for (let k = rand(3) + 1; k > 0; k--) {
        const at = rand(line.length + 1);
        const op = rand(3);
        const c = alphabet[rand(alphabet.length)];
        line = op === 0 ? line.slice(0, at) + c + line.slice(at) : op === 1 ? line.slice(0, at) + line.slice(at + 1) : line.slice(0, at) + c + line.slice(at + 1);
      }
      expectSame(line);
    }
  });
});

describe('devNumber', () => {
  it('encodes major:minor as Linux st_dev does', () => {
    expect(devNumber('fe:00')).toBe(0xfe00);
    expect(devNumber('08:02')).toBe(0x0802);
    expect(devNumber('FD:01')).toBe(0xfd01);
    expect(devNumber('103:05')).toBe(0x10305); // nvme: major 259
    expect(devNumber('00:1a2')).toBe(0xa2 | (0x100 << 12)); // minor above 255
    expect(devNumber('fff:fffff')).toBe(0xff + 0xfff * 256 + 0xfff * 2 ** 20); // above 2^31, no wrap
    expect(devNumber('00:00')).toBe(0);
  });

  it('refuses what is not a device', () => {
    for (const bad of ['', 'fe', 'fe:', ':00', 'fe:00:01', 'g0:00', '1000:00', '00:100000', ' fe:00']) expect(devNumber(bad), bad).toBeUndefined();
  });

  it('matches stat() of real files, by their major and minor numbers', () => {
    for (const file of [process.execPath, '/proc/self/maps', '/dev/null', '.']) {
      const [major, minor] = execFileSync('stat', ['-L', '-c', '%Hd %Ld', file], { encoding: 'utf8' }).trim().split(' ').map(Number);
      expect(devNumber(`${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`), file).toBe(statSync(file).dev);
    }
  });
});

describe('loads of a file in maps, and their bias (pure: no process, no file)', () => {
  const line = (start: number, end: number, perms: string, offset: number, dev: string, inode: number, path: string) =>
    `${start.toString(16)}-${end.toString(16)} ${perms} ${offset.toString(16).padStart(8, '0')} ${dev} ${inode} ${path}`;
  const lib = (base: number, dev = 'fe:00', inode = 42, path = '/usr/lib/libx.so') => [
    line(base, base + 0x1000, 'r--p', 0, dev, inode, path),
    line(base + 0x1000, base + 0x3000, 'r-xp', 0x1000, dev, inode, path),
    line(base + 0x3000, base + 0x4000, 'rw-p', 0x3000, dev, inode, path),
  ];

  it('groups the mappings of one file into one load, and another load of it (offsets start again) apart', () => {
    const maps = parseMaps(
      [...lib(0x7f0000000000), '7f0000004000-7f0000005000 rw-p 00000000 00:00 0 ', '7fff00000000-7fff00021000 rw-p 00000000 00:00 0 [stack]', ...lib(0x7f1000000000)].join('\n'),
    );
    const loads = groupInstances(maps);
    expect(loads.map((l) => [l.path, l.mappings[0].start, l.mappings.length])).toEqual([
      ['/usr/lib/libx.so', 0x7f0000000000, 3],
      ['/usr/lib/libx.so', 0x7f1000000000, 3],
    ]);
  });

  it('tells one inode number on two devices apart, and opens only files a mapping of which is wanted', () => {
    const maps = parseMaps([...lib(0x7f0000000000, 'fe:00'), ...lib(0x7f1000000000, '00:2a', 42, '/overlay/libx.so'), ...lib(0x7f2000000000, 'fe:00', 7, '/usr/lib/liby.so')].join('\n'));
    expect(groupInstances(maps).map((l) => `${l.dev} ${l.path}`)).toEqual(['fe:00 /usr/lib/libx.so', '00:2a /overlay/libx.so', 'fe:00 /usr/lib/liby.so']);
    expect(groupInstances(maps, (p) => p.endsWith('liby.so')).map((l) => l.path)).toEqual(['/usr/lib/liby.so']);
    expect(groupInstances(maps, () => false)).toEqual([]);
  });

  it('computes the bias from the PT_LOAD that holds the first mapping, the one explaining most mappings winning', () => {
    const load = (offset: number, vaddr: number, filesz: number) => ({ type: PT_LOAD, flags: 0, offset, vaddr, filesz, memsz: filesz, align: 0x1000 });
    const elf = (headers: ReturnType<typeof load>[]) => ({ programHeaders: headers }) as unknown as ElfFile;
    const maps = parseMaps(lib(0x7f0000000000).join('\n'));
    // the usual layout: vaddr == offset
    expect(computeLoadBias(elf([load(0, 0, 0x1000), load(0x1000, 0x1000, 0x2000), load(0x3000, 0x3000, 0x800)]), maps)).toBe(0x7f0000000000);
    // a first vaddr that is not 0 (prelinked, or a non-zero base)
    expect(computeLoadBias(elf([load(0, 0x400000, 0x1000), load(0x1000, 0x401000, 0x2000), load(0x3000, 0x403000, 0x800)]), maps)).toBe(0x7f0000000000 - 0x400000);
    // two segments share the page of offset 0: the one the other mappings agree with wins
    expect(computeLoadBias(elf([load(0, 0x10000, 0x800), load(0x800, 0x800, 0x800), load(0x1000, 0x1000, 0x2000), load(0x3000, 0x3000, 0x800)]), maps)).toBe(0x7f0000000000);
    // no PT_LOAD holds the first mapping's offset
    expect(computeLoadBias(elf([load(0x5000, 0x5000, 0x1000)]), maps)).toBeUndefined();
  });
});
