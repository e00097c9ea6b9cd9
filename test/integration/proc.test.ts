import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, mkdtempSync, openSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { processesUnder } from '../../src/agent/discover.js';
import { ElfFile } from '../../src/elf/index.js';
import { HpError } from '../../src/errors.js';
import {
  FileSearch,
  MAX_MAP_END,
  MIN_MAP_ADDRESS,
  findFreeRegionNear,
  findObject,
  isGone,
  loadedObjects,
  objectsIn,
  parseMaps,
  processExists,
  processIsSame,
  processStartTime,
  readProcStat,
  processState,
  readMaps,
  symbolAddress,
  type LoadedObject,
  type MapEntry,
} from '../../src/proc/index.js';
import { exePath, listThreads, processName, tracerOf } from '../proc-helpers.js';
import { PAGE_SIZE, rel32Reaches } from '../../src/x64/index.js';

// ------------------------------------------------------------------------------------------------
// parseMaps

const SAMPLE = [
  '00400000-00401000 r--p 00000000 fd:01 1311372                            /opt/demo/bin/prog',
  '00401000-00402000 r-xp 00001000 fd:01 1311372                            /opt/demo/bin/prog',
  '01a2b000-01a4c000 rw-p 00000000 00:00 0                                  [heap]',
  '7f2c1b600000-7f2c1b628000 r--p 00000000 fd:01 2365078                    /opt/demo/lib/libc.so.6',
  '7f2c1b800000-7f2c1b801000 r-xs 00000000 00:01 1043                       /memfd:jit-code (deleted)',
  '7f2c1b900000-7f2c1b901000 rw-p 00000000 00:00 0 ',
  '7f2c1b902000-7f2c1b903000 rw-p 00000000 00:00 0',
  '7f2c1ba00000-7f2c1ba02000 r-xp 00001000 08:02 123                        /tmp/dir with spaces/lib old.so (deleted)',
  '7f2c1bb00000-7f2c1bb01000 rw-p 00000000 00:00 0                          [anon:glibc.malloc]',
  '7ffd8c9e1000-7ffd8ca02000 rw-p 00000000 00:00 0                          [stack]',
  '7ffd8cbd0000-7ffd8cbd4000 r--p 00000000 00:00 0                          [vvar]',
  '7ffd8cbd4000-7ffd8cbd6000 r-xp 00000000 00:00 0                          [vdso]',
  'ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]',
  '',
].join('\n');

// Opening /proc/PID/map_files needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE).
const canOpenMapFiles = (() => {
  try {
    const first = readdirSync('/proc/self/map_files')[0];
    closeSync(openSync(`/proc/self/map_files/${first}`, 'r'));
    return true;
  } catch {
    return false;
  }
})();

describe('parseMaps', () => {
  const maps = parseMaps(SAMPLE);

  it('parses every line', () => {
    expect(maps).toHaveLength(13);
  });

  it('parses a file-backed mapping', () => {
    expect(maps[1]).toEqual({
      start: 0x401000,
      end: 0x402000,
      perms: 'r-xp',
      read: true,
      write: false,
      exec: true,
      shared: false,
      offset: 0x1000,
      dev: 'fd:01',
      inode: 1311372,
      path: '/opt/demo/bin/prog',
      deleted: false,
    });
  });

  it('strips " (deleted)" into deleted, for memfd and for paths with spaces', () => {
    expect(maps[4]).toMatchObject({ path: '/memfd:jit-code', deleted: true, shared: true, exec: true, inode: 1043, dev: '00:01' });
    expect(maps[7]).toMatchObject({ path: '/tmp/dir with spaces/lib old.so', deleted: true, offset: 0x1000, dev: '08:02', inode: 123 });
  });

  it('parses anonymous and pseudo mappings', () => {
    expect(maps[2]).toMatchObject({ path: '[heap]', inode: 0, write: true });
    expect(maps[5]).toMatchObject({ path: '', inode: 0, deleted: false });
    expect(maps[6]).toMatchObject({ path: '', inode: 0 });
    expect(maps[8].path).toBe('[anon:glibc.malloc]');
    expect(maps[9].path).toBe('[stack]');
    expect(maps[11]).toMatchObject({ path: '[vdso]', start: 0x7ffd8cbd4000, end: 0x7ffd8cbd6000, perms: 'r-xp' });
    expect(maps[12]).toMatchObject({ path: '[vsyscall]', start: 0xffffffffff600000, read: false, exec: true });
  });

  it('refuses a line that is not a maps line', () => {
    expect(() => parseMaps('hello world\n')).toThrow(HpError);
    try {
      parseMaps('00400000 r--p\n');
    } catch (e) {
      expect((e as HpError).code).toBe('MAPS_PARSE_ERROR');
    }
  });

  it('parses the maps of this very process', () => {
    const own = readMaps(process.pid);
    expect(own.length).toBeGreaterThan(5);
    expect(own.some((m) => m.path === '[stack]')).toBe(true);
    for (let i = 1; i < own.length; i++) expect(own[i].start).toBeGreaterThanOrEqual(own[i - 1].end);
  });
});

// ------------------------------------------------------------------------------------------------
// findFreeRegionNear on synthetic maps

function map(start: number, end: number, path = ''): MapEntry {
  return { start, end, perms: 'r-xp', read: true, write: false, exec: true, shared: false, offset: 0, dev: '00:00', inode: 0, path, deleted: false };
}

/** Independent check of every promise findFreeRegionNear makes. */
function expectGoodRegion(maps: MapEntry[], near: { start: number; end: number }, size: number, a: number | undefined, maxDistance: number): void {
  expect(a).toBeDefined();
  const start = a as number;
  const end = start + Math.ceil(size / PAGE_SIZE) * PAGE_SIZE;
  expect(start % PAGE_SIZE).toBe(0);
  expect(start).toBeGreaterThanOrEqual(MIN_MAP_ADDRESS);
  expect(end).toBeLessThanOrEqual(MAX_MAP_END);
  for (const m of maps) {
    // No overlap, and at least one guard page between the region and any mapping.
    const clear = end + PAGE_SIZE <= m.start || m.end + PAGE_SIZE <= start;
    if (!clear) throw new Error(`region 0x${start.toString(16)}-0x${end.toString(16)} touches mapping 0x${m.start.toString(16)}-0x${m.end.toString(16)}`);
  }
  // Every byte of the region is within maxDistance of every byte of near.
  expect(start + size - 1 - near.start).toBeLessThanOrEqual(maxDistance);
  expect(near.end - 1 - start).toBeLessThanOrEqual(maxDistance);
}

describe('findFreeRegionNear (synthetic maps)', () => {
  const D = 2 ** 31 - 1 - PAGE_SIZE;

  it('picks the closest gap, keeping a guard page', () => {
    const maps = [map(0x400000, 0x401000), map(0x500000, 0x600000)];
    const near = { start: 0x400000, end: 0x401000 };
    const a = findFreeRegionNear(maps, near, 0x1000);
    // Below: ends one guard page under 0x400000. Above: starts one guard page over 0x401000. Equal cost, lower wins.
    expect(a).toBe(0x3fe000);
    expectGoodRegion(maps, near, 0x1000, a, D);
  });

  it('rounds the size up to pages when checking for room', () => {
    // A gap of exactly 3 pages between two mappings fits one page (plus two guard pages), not two.
    const maps = [map(MIN_MAP_ADDRESS, 0x400000), map(0x400000, 0x401000), map(0x404000, 0x7fff00000000)];
    const near = { start: 0x400000, end: 0x401000 };
    expect(findFreeRegionNear(maps, near, 100)).toBe(0x402000);
    expect(findFreeRegionNear(maps, near, PAGE_SIZE + 1)).toBeUndefined();
  });

  it('honours maxDistance exactly', () => {
    const near = { start: 0x100000000, end: 0x100001000 };
    const maps = [map(MIN_MAP_ADDRESS, 0x100000000), map(near.start, near.end)];
    // The only room is above: from 0x100002000. Its last byte 0x100002fff is 0x2fff from near.start.
    expect(findFreeRegionNear(maps, near, 0x1000, { maxDistance: 0x2fff })).toBe(0x100002000);
    expect(findFreeRegionNear(maps, near, 0x1000, { maxDistance: 0x2ffe })).toBeUndefined();
    // Same below: a region ending at near.start - guard, with near.end - 1 - A as the distance.
    const below = [map(near.start, near.end), map(near.end, 0x7fff00000000)];
    expect(findFreeRegionNear(below, near, 0x1000, { maxDistance: 0x2fff })).toBe(0xffffe000);
    expect(findFreeRegionNear(below, near, 0x1000, { maxDistance: 0x2ffe })).toBeUndefined();
  });

  it('returns undefined when the only gap is beyond rel32 reach, and finds it with a larger maxDistance', () => {
    const near = { start: 0x7f0000000000, end: 0x7f0000100000 };
    const gapStart = near.end + 3 * 2 ** 30; // 3 GiB above
    const maps = [map(MIN_MAP_ADDRESS, near.start), map(near.start, near.end), map(near.end, gapStart), map(gapStart + 0x100000, 0x7ffff0000000)];
    expect(findFreeRegionNear(maps, near, 0x10000)).toBeUndefined();
    const a = findFreeRegionNear(maps, near, 0x10000, { maxDistance: 2 ** 33 });
    expect(a).toBe(gapStart + PAGE_SIZE);
    expectGoodRegion(maps, near, 0x10000, a, 2 ** 33);
  });

  it('with the default distance, a rel32 jump reaches across the region from anywhere in near', () => {
    // Force the region as far as allowed: everything within 2 GiB is mapped except the extremes.
    const near = { start: 0x7f0000000000, end: 0x7f0000200000 };
    const maps = [map(0x7e0000000000, near.start), map(near.start, near.end), map(near.end, 0x7f007ffd0000)];
    const size = 0x8000;
    const a = findFreeRegionNear(maps, near, size) as number;
    expectGoodRegion(maps, near, size, a, D);
    expect(a).toBeGreaterThan(near.start + 2 ** 31 - 0x100000); // really near the edge
    // A 5-byte rel32 at the very start of near reaches the last bytes of the region, and a 14-byte
    // instruction at the region's end reaches back to near.start.
    expect(rel32Reaches(near.start, a + size - 1)).toBe(true);
    expect(rel32Reaches(a + size - 14, near.start, 14)).toBe(true);
  });

  it('stays inside user space and above the minimum map address', () => {
    const high = { start: 0x7ffffff00000, end: 0x7ffffff10000 };
    const a = findFreeRegionNear([map(high.start, high.end)], high, 0x100000);
    expectGoodRegion([map(high.start, high.end)], high, 0x100000, a, D);
    const low = { start: 0x20000, end: 0x21000 };
    const lowMaps = [map(low.start, low.end), map(low.end + PAGE_SIZE, 0x10000000)];
    expect(findFreeRegionNear(lowMaps, low, 0x8000)).toBe(low.start - PAGE_SIZE - 0x8000);
    expect(findFreeRegionNear(lowMaps, low, 0xf000)).toBe(MIN_MAP_ADDRESS);
    expect(findFreeRegionNear(lowMaps, low, 0x10000)).toBe(0x10000000 + PAGE_SIZE);
  });

  it('leaves room for the stack to grow down and the heap to grow up', () => {
    const near = { start: 0x7ffd00000000, end: 0x7ffd00001000 };
    const maps = [
      map(MIN_MAP_ADDRESS, near.start),
      map(near.start, near.end),
      map(near.end + 0x200000, 0x7ffd10000000, '[stack]'),
      map(0x7ffd10000000, 0x7ffd10001000),
    ];
    const a = findFreeRegionNear(maps, near, 0x1000) as number;
    expect(a).toBeGreaterThan(0x7ffd10000000); // not in the 2 MiB just below [stack]
    const heap = [map(MIN_MAP_ADDRESS, 0x600000), map(0x600000, 0x601000, '[heap]')];
    const b = findFreeRegionNear(heap, { start: 0x600000, end: 0x601000 }, 0x1000) as number;
    expect(b).toBeGreaterThanOrEqual(0x601000 + 16 * 1024 * 1024);
  });

  it('refuses nonsense arguments', () => {
    expect(() => findFreeRegionNear([], { start: 0x1000, end: 0x2000 }, 0)).toThrow(HpError);
    expect(() => findFreeRegionNear([], { start: 0x2000, end: 0x1000 }, 10)).toThrow(HpError);
  });
});

// ------------------------------------------------------------------------------------------------
// Real processes

const PROG_C = `
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>

__attribute__((noinline)) int target_fn(int x) { return x * 3 + 1; }
static __attribute__((noinline)) int local_fn(int x) { return x - 7; }

int main(void) {
  printf("%p %p\\n", (void *)&target_fn, (void *)&local_fn);
  fflush(stdout);
  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    unsigned long addr, size;
    if (sscanf(line, "map %lx %lx", &addr, &size) == 2) {
      void *p = mmap((void *)addr, size, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
      if (p == MAP_FAILED) printf("error %d\\n", errno); else printf("%p\\n", p);
      fflush(stdout);
    }
  }
  return target_fn(local_fn(0));
}
`;

const LIBGREET_C = `
int greet(int x) { return x + 42; }
static __attribute__((noinline, used)) int helper(int x) { return x ^ 5; }
void *greet_address(void) { return (void *)&greet; }
void *helper_address(void) { return (void *)&helper; }
`;
const LIBBASED_C = `
int based_fn(int x) { return x + 1; }
void *based_address(void) { return (void *)&based_fn; }
`;
const LIBTINY_C = `
int tiny_fn(int x) { return x * x; }
void *tiny_address(void) { return (void *)&tiny_fn; }
`;
const LIBSTRIPPED_C = `
int stripped_fn(int x) { return x - 1; }
static __attribute__((noinline, used)) int stripped_local(int x) { return x + 3; }
void *stripped_address(void) { return (void *)&stripped_fn; }
`;
const USELIB_C = `
#include <stdio.h>
#include <unistd.h>
void *greet_address(void); void *helper_address(void); void *based_address(void);
void *tiny_address(void); void *stripped_address(void);
int main(void) {
  printf("%p %p %p %p %p\\n", greet_address(), helper_address(), based_address(), tiny_address(), stripped_address());
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {}
  return 0;
}
`;
const LIBSWAP_V1_C = `
int swap_fn(int x) { return x + 1; }
void *swap_address(void) { return (void *)&swap_fn; }
`;
const LIBSWAP_V2_C = `
__attribute__((used, noinline)) void swap_pad(void) { __asm__ volatile(".skip 8192, 0x90"); }
int swap_fn(int x) { return x + 2; }
void *swap_address(void) { return (void *)&swap_fn; }
`;
const USESWAP_C = `
#include <stdio.h>
#include <unistd.h>
void *swap_address(void);
int main(void) {
  printf("%p\\n", swap_address());
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {}
  return 0;
}
`;
const FAMILY_C = `
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_barrier_t barrier;
static pid_t tids[3];
static void *run(void *arg) {
  tids[(long)arg] = (pid_t)syscall(SYS_gettid);
  pthread_barrier_wait(&barrier);
  for (;;) pause();
  return 0;
}

int main(void) {
  pid_t zombie = fork();
  if (zombie == 0) _exit(0);
  pid_t traced = fork();
  if (traced == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ptrace(PTRACE_TRACEME, 0, 0, 0);
    raise(SIGSTOP);
    for (;;) pause();
  }
  int status;
  waitpid(traced, &status, WUNTRACED);
  pthread_barrier_init(&barrier, 0, 4);
  for (long i = 0; i < 3; i++) {
    pthread_t t;
    pthread_create(&t, 0, run, (void *)i);
  }
  pthread_barrier_wait(&barrier);
  printf("%d %d %d %d %d %d\\n", zombie, traced, getpid(), tids[0], tids[1], tids[2]);
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {}
  kill(traced, SIGKILL);
  return 0;
}
`;

let dir: string;

function gcc(out: string, source: string, args: string[]): string {
  const src = join(dir, `${out}.c`);
  writeFileSync(src, source);
  const path = join(dir, out);
  execFileSync('gcc', ['-O1', '-o', path, src, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  return path;
}

beforeAll(() => {
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'hp-proc-')));
  gcc('hp-pie', PROG_C, ['-fPIE', '-pie']);
  gcc('hp-nopie', PROG_C, ['-fno-pie', '-no-pie']);
  gcc('libgreet.so', LIBGREET_C, ['-shared', '-fPIC']);
  gcc('libbased.so', LIBBASED_C, ['-shared', '-fPIC', '-Wl,-Ttext-segment=0x20000000']);
  gcc('libtiny.so', LIBTINY_C, ['-shared', '-fPIC', '-Wl,-z,noseparate-code']);
  gcc('libstripped.so', LIBSTRIPPED_C, ['-shared', '-fPIC']);
  execFileSync('strip', ['--strip-all', join(dir, 'libstripped.so')]);
  const libs = ['-L', dir, `-Wl,-rpath,${dir}`];
  gcc('hp-uselib', USELIB_C, ['-fPIE', '-pie', ...libs, '-lgreet', '-lbased', '-ltiny', '-lstripped']);
  gcc('libswap.so', LIBSWAP_V1_C, ['-shared', '-fPIC']);
  gcc('libswap2.so', LIBSWAP_V2_C, ['-shared', '-fPIC']);
  gcc('hp-useswap', USESWAP_C, ['-fPIE', '-pie', ...libs, '-lswap']);
  gcc('hp-family', FAMILY_C, ['-pthread']);
}, 60_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Running {
  child: ChildProcess;
  pid: number;
  nextLine(): Promise<string>;
  send(text: string): void;
}

const children: ChildProcess[] = [];
const extraPids: number[] = [];

afterEach(() => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  for (const pid of extraPids.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

function run(name: string, env?: NodeJS.ProcessEnv): Running {
  const child = spawn(join(dir, name), [], { stdio: ['pipe', 'pipe', 'inherit'], ...(env ? { env: { ...process.env, ...env } } : {}) });
  children.push(child);
  const lines: string[] = [];
  const waiters: Array<(line: string) => void> = [];
  let buffered = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      const waiter = waiters.shift();
      if (waiter) waiter(line);
      else lines.push(line);
    }
  });
  return {
    child,
    pid: child.pid as number,
    nextLine: () =>
      new Promise<string>((resolve, reject) => {
        const line = lines.shift();
        if (line !== undefined) return resolve(line);
        waiters.push(resolve);
        child.once('exit', (code, signal) => reject(new Error(`${name} exited (${code ?? signal}) before printing`)));
      }),
    send: (text: string) => child.stdin!.write(text),
  };
}

const addr = (text: string): number => parseInt(text, 16);

function hpCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof HpError) return e.code;
    throw e;
  }
  throw new Error('expected an HpError');
}

describe('loaded objects and symbols of real processes', () => {
  it('PIE executable: bias = load address, symbols match what the process prints', async () => {
    const p = run('hp-pie');
    const [fn, local] = (await p.nextLine()).split(' ').map(addr);
    const main = findObject(p.pid);
    expect(main.path).toBe(join(dir, 'hp-pie'));
    expect(main.elf.isPie).toBe(true);
    expect(main.bias).toBeGreaterThan(0);
    expect(main.bias).toBe(main.start); // first PT_LOAD of a gcc PIE is at vaddr 0
    expect(symbolAddress(main, 'target_fn').address).toBe(fn);
    expect(symbolAddress(main, 'target_fn')).toMatchObject({ name: 'target_fn', type: 'FUNC' });
    expect(symbolAddress(main, 'local_fn').address).toBe(local); // static: .symtab only
    expect(fn).toBeGreaterThanOrEqual(main.textStart);
    expect(fn).toBeLessThan(main.textEnd);
    expect(findObject(p.pid, 'hp-pie').start).toBe(main.start);
    expect(findObject(p.pid, join(dir, 'hp-pie')).start).toBe(main.start);
    expect(main.buildId).toMatch(/^[0-9a-f]+$/);
  });

  it('non-PIE executable: bias 0', async () => {
    const p = run('hp-nopie');
    const [fn, local] = (await p.nextLine()).split(' ').map(addr);
    const main = findObject(p.pid);
    expect(main.elf.isPie).toBe(false);
    expect(main.bias).toBe(0);
    expect(main.start).toBe(0x400000);
    expect(symbolAddress(main, 'target_fn').address).toBe(fn);
    expect(symbolAddress(main, 'local_fn').address).toBe(local);
  });

  it('shared libraries: default layout, non-zero first vaddr, single-page layout, stripped', async () => {
    const p = run('hp-uselib');
    const [greet, helper, based, tiny, stripped] = (await p.nextLine()).split(' ').map(addr);

    const libgreet = findObject(p.pid, 'libgreet.so');
    expect(libgreet.path).toBe(join(dir, 'libgreet.so'));
    expect(symbolAddress(libgreet, 'greet').address).toBe(greet);
    expect(symbolAddress(libgreet, 'helper').address).toBe(helper);
    expect(libgreet.bias).toBe(libgreet.start);

    const libbased = findObject(p.pid, join(dir, 'libbased.so'));
    expect(libbased.bias).toBe(libbased.start - 0x20000000);
    expect(symbolAddress(libbased, 'based_fn').address).toBe(based);

    const libtiny = findObject(p.pid, 'libtiny.so');
    expect(symbolAddress(libtiny, 'tiny_fn').address).toBe(tiny);

    const libstripped = findObject(p.pid, 'libstripped.so');
    expect(libstripped.elf.symbols).toHaveLength(0);
    expect(symbolAddress(libstripped, 'stripped_fn').address).toBe(stripped); // from .dynsym
    let err: HpError | undefined;
    try {
      symbolAddress(libstripped, 'stripped_local');
    } catch (e) {
      err = e as HpError;
    }
    expect(err?.code).toBe('SYMBOL_NOT_FOUND');
    expect(err?.message).toMatch(/stripped_local/);
    expect(err?.message).toMatch(/stripped/);
    expect(err?.message).toMatch(/\.symtab/);

    // The main executable imports greet but does not define it.
    const main = findObject(p.pid);
    expect(main.path).toBe(join(dir, 'hp-uselib'));
    try {
      symbolAddress(main, 'greet_address');
      throw new Error('expected a refusal');
    } catch (e) {
      expect((e as HpError).code).toBe('SYMBOL_NOT_FOUND');
      expect((e as HpError).message).toMatch(/imported/);
    }

    // libc is there too, and every object's mappings lie within its extent.
    const objects = loadedObjects(p.pid);
    const names = objects.map((o) => o.path.split('/').pop());
    for (const n of ['hp-uselib', 'libgreet.so', 'libbased.so', 'libtiny.so', 'libstripped.so']) expect(names).toContain(n);
    expect(names.some((n) => n?.startsWith('libc.so'))).toBe(true);
    expect(names.some((n) => n?.startsWith('ld-linux'))).toBe(true);
    for (const o of objects) {
      for (const m of o.mappings) {
        expect(m.start).toBeGreaterThanOrEqual(o.start);
        expect(m.end).toBeLessThanOrEqual(o.end);
      }
      expect(o.textEnd).toBeGreaterThan(o.textStart);
    }
    // libc's exported symbols resolve inside its executable mapping.
    const libc = objects.find((o) => o.path.split('/').pop()?.startsWith('libc.so'))!;
    const puts = symbolAddress(libc, 'puts');
    expect(puts.address).toBeGreaterThanOrEqual(libc.textStart);
    expect(puts.address).toBeLessThan(libc.textEnd);
  });

  it('refuses unknown objects, listing what is loaded, and unknown pids', async () => {
    const p = run('hp-pie');
    await p.nextLine();
    let err: HpError | undefined;
    try {
      findObject(p.pid, 'libnothere.so');
    } catch (e) {
      err = e as HpError;
    }
    expect(err?.code).toBe('OBJECT_NOT_LOADED');
    expect(err?.message).toMatch(/libnothere\.so/);
    expect(err?.message).toMatch(/hp-pie/);
    expect(err?.details.loaded).toContain(join(dir, 'hp-pie'));
    expect(hpCode(() => symbolAddress(findObject(p.pid), 'no_such_function'))).toBe('SYMBOL_NOT_FOUND');

    const unused = 2 ** 22 + 12345; // above any pid_max
    expect(hpCode(() => findObject(unused))).toBe('PROCESS_NOT_FOUND');
    expect(hpCode(() => readMaps(unused))).toBe('PROCESS_NOT_FOUND');
    expect(hpCode(() => loadedObjects(unused))).toBe('PROCESS_NOT_FOUND');
    expect(hpCode(() => exePath(unused))).toBe('PROCESS_NOT_FOUND');
    expect(hpCode(() => findObject(-3))).toBe('INVALID_PID');
    expect(processExists(unused)).toBe(false);
  });

  it.runIf(canOpenMapFiles)('reads the file the process mapped even after the path is replaced', async () => {
    const p = run('hp-useswap');
    const swap = addr(await p.nextLine());
    renameSync(join(dir, 'libswap2.so'), join(dir, 'libswap.so')); // the path now names another file
    const lib = findObject(p.pid, 'libswap.so');
    expect(lib.deleted).toBe(true);
    expect(symbolAddress(lib, 'swap_fn').address).toBe(swap);
    expect(lib.elf.findSymbol('swap_pad')).toBeUndefined(); // not the new file's contents
  });
});

describe('process facts of real processes', () => {
  it('threads, name, exe, tracer, zombie', async () => {
    const p = run('hp-family');
    const [zombie, traced, self, ...tids] = (await p.nextLine()).split(' ').map(Number);
    extraPids.push(traced);
    expect(self).toBe(p.pid);
    expect(listThreads(p.pid)).toEqual([p.pid, ...tids].sort((a, b) => a - b));
    expect(processName(p.pid)).toBe('hp-family');
    expect(exePath(p.pid)).toBe(join(dir, 'hp-family'));
    expect(processExists(p.pid)).toBe(true);
    expect(tracerOf(p.pid)).toBe(0);
    expect(tracerOf(traced)).toBe(p.pid);
    expect(processState(traced)).toBe('t'); // ptrace-stopped

    // The first child exited and its parent never waits for it.
    for (let i = 0; i < 100 && processState(zombie) !== 'Z'; i++) await new Promise((r) => setTimeout(r, 20));
    expect(processState(zombie)).toBe('Z');
    expect(processExists(zombie)).toBe(false);
    expect(hpCode(() => findObject(zombie))).toBe('PROCESS_NOT_FOUND');
  });

  it('readProcStat reads a process and each of its threads; isGone is true for no state, Z, X and x only', async () => {
    const p = run('hp-family');
    const [zombie, traced, , ...tids] = (await p.nextLine()).split(' ').map(Number);
    extraPids.push(traced);
    const main = readProcStat(p.pid)!;
    expect(main).toMatchObject({ pid: p.pid, comm: 'hp-family', pgrp: expect.any(Number), session: expect.any(Number) });
    expect(main.startTime).toBeGreaterThan(0);
    expect(main.policy).toBe(0); // SCHED_OTHER
    for (const tid of tids) {
      const t = readProcStat(p.pid, tid)!;
      // a thread: its own id, the process's name, parent and start (threads start after it)
      expect(t).toMatchObject({ pid: tid, comm: 'hp-family', ppid: main.ppid, pgrp: main.pgrp, session: main.session });
      expect(t.startTime).toBeGreaterThanOrEqual(main.startTime);
      expect(t.utime + t.stime).toBeGreaterThanOrEqual(0);
    }
    expect(readProcStat(traced)!.ppid).toBe(p.pid);
    expect(processStartTime(p.pid)).toBe(main.startTime);
    expect(processIsSame(p.pid, main.startTime)).toBe(true);
    expect(processIsSame(p.pid, main.startTime + 1)).toBe(false);

    for (let i = 0; i < 100 && processState(zombie) !== 'Z'; i++) await new Promise((r) => setTimeout(r, 20));
    expect(readProcStat(zombie)?.state).toBe('Z');
    expect(processStartTime(zombie)).toBeUndefined(); // a zombie is gone
    expect(processIsSame(zombie, readProcStat(zombie)!.startTime)).toBe(false);

    for (const state of [undefined, 'Z', 'X', 'x']) expect(isGone(state), String(state)).toBe(true);
    for (const state of ['R', 'S', 'D', 'T', 't', 'I', 'P']) expect(isGone(state), state).toBe(false);
    for (const [pid, tid] of [[0, undefined], [-1, undefined], [p.pid, 0], [p.pid, 2 ** 22 + 12345], [1.5, undefined]]) {
      expect(readProcStat(pid!, tid), `${pid}/${tid}`).toBeUndefined();
    }
  });

  it('this process', () => {
    expect(processExists(process.pid)).toBe(true);
    expect(exePath(process.pid)).toBe(realpathSync(process.execPath));
    expect(listThreads(process.pid)).toContain(process.pid);
  });
});

describe('findFreeRegionNear on real processes', () => {
  for (const prog of ['hp-pie', 'hp-nopie']) {
    it(`${prog}: the region is free in the maps and the kernel agrees by mapping it there`, async () => {
      const p = run(prog);
      await p.nextLine();
      const maps = readMaps(p.pid);
      const main = findObject(p.pid);
      const libc = loadedObjects(p.pid).find((o) => o.path.split('/').pop()?.startsWith('libc.so'))!;
      for (const [obj, size] of [
        [main, 0x10000],
        [libc, 0x3000],
      ] as const) {
        const near = { start: obj.textStart, end: obj.textEnd };
        const a = findFreeRegionNear(maps, near, size);
        expectGoodRegion(maps, near, size, a, 2 ** 31 - 1 - PAGE_SIZE);
        expect(rel32Reaches(near.start, (a as number) + size - 1)).toBe(true);
        expect(rel32Reaches(near.end - 5, a as number)).toBe(true);
        // Ask the process to map exactly there without replacing anything.
        p.send(`map ${(a as number).toString(16)} ${size.toString(16)}\n`);
        expect(addr(await p.nextLine())).toBe(a);
        const after = readMaps(p.pid);
        expect(after.some((m) => m.start === a && m.end === (a as number) + size)).toBe(true);
        maps.splice(0, maps.length, ...after);
      }
    });
  }
});

describe('one search through many processes (FileSearch)', () => {
  it('reads a mapped file through its path only when device and inode are those of the mapping', async () => {
    const p = run('hp-uselib');
    await p.nextLine();
    const file = join(dir, 'libgreet.so');
    const line = readMaps(p.pid).find((m) => m.path === file)!;
    const inst = { path: file, deleted: false, dev: line.dev, inode: line.inode };
    const buildId = ElfFile.fromFile(file).buildId;
    expect(buildId).toMatch(/^[0-9a-f]+$/);
    const known = new FileSearch().read(inst);
    if (onBlockDevice(line.dev)) expect(known && 'elf' in known && known.elf.buildId).toBe(buildId);
    else expect(known).toBeUndefined(); // e.g. a tmpfs temporary folder: always through map_files

    const wrongDev = line.dev === 'ff:ff' ? 'fe:fe' : 'ff:ff';
    expect(new FileSearch().read({ ...inst, dev: wrongDev })).toBeUndefined();
    expect(new FileSearch().read({ ...inst, inode: line.inode + 1 })).toBeUndefined();
    expect(new FileSearch().read({ ...inst, deleted: true })).toBeUndefined();
    expect(new FileSearch().read({ ...inst, path: join(dir, 'no-such-file.so') })).toBeUndefined();
    // The same search answers for another process mapping the same file.
    const search = new FileSearch();
    const q = run('hp-uselib');
    await q.nextLine();
    for (const pid of [p.pid, q.pid]) {
      const objs = objectsIn(pid, readMaps(pid), undefined, search);
      expect(objs.map(summary)).toEqual(loadedObjects(pid).map(summary));
      expect(objs.find((o) => o.path === file)?.buildId).toBe(buildId);
    }
  });

  const shm = (() => {
    try {
      return statSync('/dev/shm').isDirectory() && Math.floor(statSync('/dev/shm').dev / 256) % 4096 === 0;
    } catch {
      return false;
    }
  })();
  it.runIf(canOpenMapFiles && shm)('never takes the path for the mapped file on a filesystem without a block device (tmpfs)', async () => {
    const sub = mkdtempSync('/dev/shm/hp-proc-');
    try {
      const file = join(sub, 'libgreet.so');
      copyFileSync(join(dir, 'libgreet.so'), file);
      const p = run('hp-uselib', { LD_LIBRARY_PATH: sub });
      await p.nextLine();
      const line = readMaps(p.pid).find((m) => m.path === file)!;
      expect(onBlockDevice(line.dev)).toBe(false);
      expect(statSync(file)).toMatchObject({ ino: line.inode });
      const search = new FileSearch();
      expect(search.read({ path: file, deleted: false, dev: line.dev, inode: line.inode })).toBeUndefined();
      const obj = objectsIn(p.pid, readMaps(p.pid), undefined, search).find((o) => o.path === file);
      expect(obj?.buildId).toBe(ElfFile.fromFile(file).buildId);
    } finally {
      rmSync(sub, { recursive: true, force: true });
    }
  });

  it.runIf(canOpenMapFiles)('a file replaced while the search runs: each process gets the build-id of what it mapped', async () => {
    const sub = mkdtempSync(join(dir, 'swap-'));
    const lib = join(sub, 'libswap.so');
    gcc('libswapA.so', LIBSWAP_V1_C, ['-shared', '-fPIC']);
    gcc('libswapB.so', LIBSWAP_V2_C, ['-shared', '-fPIC']);
    gcc('libswapC.so', LIBSWAP_V1_C.replace('x + 1', 'x + 3'), ['-shared', '-fPIC']);
    const ids = ['A', 'B', 'C'].map((v) => ElfFile.fromFile(join(dir, `libswap${v}.so`)).buildId!);
    expect(new Set(ids).size).toBe(3);
    const install = (v: string) => {
      copyFileSync(join(dir, `libswap${v}.so`), `${lib}.new`);
      renameSync(`${lib}.new`, lib); // as a package manager does: the old file is unlinked, not overwritten
    };
    const start = async () => {
      const p = run('hp-useswap', { LD_LIBRARY_PATH: sub });
      await p.nextLine();
      return p.pid;
    };
    const swapOf = (objs: LoadedObject[]) => objs.find((o) => o.path === lib);

    install('A');
    const a = await start();
    const search = new FileSearch();
    expect(swapOf(objectsIn(a, readMaps(a), undefined, search))).toMatchObject({ buildId: ids[0], deleted: false });

    install('B'); // the search stat'ed A at this path
    const b = await start();
    expect(swapOf(objectsIn(b, readMaps(b), undefined, search))).toMatchObject({ buildId: ids[1], deleted: false });
    expect(swapOf(objectsIn(a, readMaps(a), undefined, search))).toMatchObject({ buildId: ids[0], deleted: true });

    install('C');
    const c = await start();
    for (const s of [search, new FileSearch()]) {
      expect(swapOf(objectsIn(c, readMaps(c), undefined, s))).toMatchObject({ buildId: ids[2], deleted: false });
      expect(swapOf(objectsIn(b, readMaps(b), undefined, s))).toMatchObject({ buildId: ids[1], deleted: true });
      expect(swapOf(objectsIn(a, readMaps(a), undefined, s))).toMatchObject({ buildId: ids[0], deleted: true });
    }

    // The agent's search over the folder says the same, with each process's name.
    const views = processesUnder(sub, [a, b, c, process.pid]);
    expect(views.map((v) => [v.pid, v.comm, v.files])).toEqual([
      [a, 'hp-useswap', [{ path: lib, buildId: ids[0], deleted: true }]],
      [b, 'hp-useswap', [{ path: lib, buildId: ids[1], deleted: true }]],
      [c, 'hp-useswap', [{ path: lib, buildId: ids[2], deleted: false }]],
    ]);
    for (const v of views) expect(v.objects!.map(summary)).toEqual(loadedObjects(v.pid, undefined, (x) => x.startsWith(`${sub}/`)).map(summary));
  });

  it('readProcStat gives /proc/PID/comm and the state from one read', async () => {
    const weird = 'we(i)rd) n:me';
    copyFileSync(join(dir, 'hp-pie'), join(dir, weird));
    chmodSync(join(dir, weird), 0o755);
    const long = 'a-rather-long-program-name';
    copyFileSync(join(dir, 'hp-pie'), join(dir, long));
    chmodSync(join(dir, long), 0o755);
    const p = run(weird);
    const q = run(long);
    await p.nextLine();
    await q.nextLine();
    expect(readProcStat(p.pid)).toMatchObject({ state: processState(p.pid), comm: weird });
    expect(processName(p.pid)).toBe(weird);
    expect(readProcStat(q.pid)?.comm).toBe(processName(q.pid));
    expect(readProcStat(q.pid)?.comm).toBe(long.slice(0, 15));
    for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number)) {
      let name: string;
      try {
        name = processName(pid);
      } catch {
        continue; // gone meanwhile
      }
      const stat = readProcStat(pid);
      if (stat) expect(stat.comm, `pid ${pid}`).toBe(name);
    }
    expect(readProcStat(2 ** 22 + 12345)).toBeUndefined();
  });

  it('findFreeRegionNear gives the same answer for maps in any order', async () => {
    const p = run('hp-pie');
    await p.nextLine();
    const maps = readMaps(p.pid);
    const main = findObject(p.pid, undefined, maps);
    const near = { start: main.textStart, end: main.textEnd };
    const shuffled = [...maps].reverse();
    expect(findFreeRegionNear(shuffled, near, 0x5000)).toBe(findFreeRegionNear(maps, near, 0x5000));
  });
});

const onBlockDevice = (dev: string): boolean => parseInt(dev.split(':')[0], 16) !== 0;

function summary(o: LoadedObject) {
  return { path: o.path, deleted: o.deleted, dev: o.dev, inode: o.inode, bias: o.bias, start: o.start, end: o.end, textStart: o.textStart, textEnd: o.textEnd, buildId: o.buildId, mappings: o.mappings.length };
}
