// Hostile archives are bounded: a decompression bomb is refused after inflating at most the
// limit (never all of it), data after the end of the archive is refused, and a reading in
// progress stops when asked. Each bomb is built here, in memory, from gzip members that each
// inflate to 8 MiB: a few MB of package that would inflate to gigabytes.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { fixturePackage } from '../../src/demo/fixture-packages.js';
import { buildArchive, DEFAULT_ARCHIVE_LIMITS, RATIO_FLOOR, readArchive } from '../../src/package/archive.js';
import { openPackage } from '../../src/package/read.js';

const MiB = 1024 * 1024;

async function refusal(f: () => Promise<unknown>): Promise<HpError> {
  try {
    await f();
  } catch (e) {
    if (e instanceof HpError) return e;
    throw e;
  }
  throw new Error('expected a refusal, but it succeeded');
}

/** `members` gzip members, each 8 MiB of zeros (with a byte set every 16 KiB if `sprinkled`). */
function gzipMembers(members: number, sprinkled = false): Buffer {
  const block = Buffer.alloc(8 * MiB);
  if (sprinkled) for (let i = 4096; i < block.length; i += 16384) block[i] = 1;
  const member = gzipSync(block, { level: 9 });
  return Buffer.concat(Array(members).fill(member));
}

const realPackage = () => fs.readFileSync(fixturePackage('2026.10-hp1'));

/** The tar header of one file entry of `size` bytes (its bytes are to follow). */
function bigEntryHeader(size: number): Buffer {
  const tar = buildArchive([['payload/big', Buffer.alloc(1)]]);
  const header = Buffer.from(tar.subarray(0, 512));
  header.write(size.toString(8).padStart(11, '0') + '\0', 124, 12, 'ascii');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return header;
}

describe('archive limits', () => {
  it('a real package followed by gigabytes of gzip-compressed zeros: refused, after inflating no more than the ratio allows', async () => {
    // 2 MB that inflate to 2 GiB.
    const bomb = Buffer.concat([gzipSync(realPackage()), gzipMembers(250)]);
    expect(bomb.length).toBeLessThan(3 * MiB);
    const e = await refusal(() => readArchive(bomb));
    expect(e.code).toBe('PACKAGE_TOO_LARGE');
    expect(e.message).toMatch(/decompression bomb/);
    const limit = Math.max(RATIO_FLOOR, DEFAULT_ARCHIVE_LIMITS.maxRatio * bomb.length);
    expect(e.details.unpackedSoFar as number).toBeGreaterThan(limit);
    expect(e.details.unpackedSoFar as number).toBeLessThan(limit + MiB);
  });

  it('the size limit holds where the ratio does not', async () => {
    const bomb = Buffer.concat([gzipSync(realPackage()), gzipMembers(8)]);
    const e = await refusal(() => readArchive(bomb, { maxUnpackedBytes: 20 * MiB, maxRatio: 1e9 }));
    expect(e.code).toBe('PACKAGE_TOO_LARGE');
    expect(e.message).toMatch(/uncompressed it is more than 20971520 bytes/);
  });

  it('zero padding after the end of the archive is accepted; anything else after it is refused', async () => {
    const pkg = realPackage();
    const padded = await readArchive(Buffer.concat([pkg, Buffer.alloc(10240)]));
    expect([...padded.files.keys()]).toContain('manifest.json');
    // Gzip-compressed, with the rest of the bomb's bytes not all zero.
    const e = await refusal(() => readArchive(Buffer.concat([gzipSync(pkg), gzipMembers(3, true)])));
    expect(e.code).toBe('PACKAGE_CORRUPT');
    expect(e.message).toMatch(/data follows its end-of-archive/);
  });

  it('a bomb inside an entry: refused by the ratio long before the entry is read', async () => {
    // One entry announcing 400 MiB (under every size limit) of zeros.
    const bomb = Buffer.concat([gzipSync(bigEntryHeader(400 * MiB)), gzipMembers(50)]);
    const e = await refusal(() => readArchive(bomb));
    expect(e.code).toBe('PACKAGE_TOO_LARGE');
    expect(e.details.unpackedSoFar as number).toBeLessThan(Math.max(RATIO_FLOOR, 100 * bomb.length) + MiB);
  });

  it('one file over the per-entry limit is refused from its header', async () => {
    const tar = buildArchive([['payload/a', Buffer.alloc(3000)]]);
    const e = await refusal(() => readArchive(tar, { maxEntryBytes: 2048 }));
    expect(e.code).toBe('PACKAGE_TOO_LARGE');
    expect(e.message).toMatch(/"payload\/a" is 3000 bytes, over the 2048-byte limit for one file/);
    expect((await readArchive(tar, { maxEntryBytes: 3000 })).files.get('payload/a')?.length).toBe(3000);
  });

  it('a package compressed twice is refused (the inner layer would be inflated unbounded)', async () => {
    const e = await refusal(() => readArchive(gzipSync(gzipSync(realPackage()))));
    expect(e.code).toBe('PACKAGE_CORRUPT');
    expect(e.message).toMatch(/compressed twice/);
  });

  it('stops reading when its signal aborts, with the signal\'s reason', async () => {
    const controller = new AbortController();
    const reason = new HpError('INTERRUPTED', 'stopped by SIGTERM', { signal: 'SIGTERM' });
    // Zeros to inflate for a while; aborted as soon as the reading has begun.
    const bomb = Buffer.concat([gzipSync(realPackage()), gzipMembers(250)]);
    const reading = readArchive(bomb, {}, 'the package', { signal: controller.signal });
    setImmediate(() => controller.abort(reason));
    expect(await refusal(() => reading)).toBe(reason);
  });

  it('openPackage reads only a regular file: a FIFO is refused without blocking (no writer ever comes), and a device', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-fifo-'));
    try {
      const fifo = path.join(dir, 'pkg.fifo');
      execFileSync('mkfifo', [fifo]);
      for (const [file, words] of [[fifo, /a FIFO/], ['/dev/zero', /a device/], [dir, /a directory/]] as const) {
        const e = await refusal(() => openPackage(file, { trustDir: path.join(dir, 'keys') }));
        expect(e.code).toBe('PACKAGE_NOT_A_FILE');
        expect(e.message).toMatch(words);
      }
      expect((await refusal(() => openPackage(path.join(dir, 'absent'), { trustDir: dir }))).code).toBe('PACKAGE_NOT_FOUND');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
