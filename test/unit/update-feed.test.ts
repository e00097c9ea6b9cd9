import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { generateKeyPair, trustAdd } from '../../src/package/index.js';
import { demoPublicKey, fixturePackage, packagesDir } from '../../src/demo/fixture-packages.js';
import { buildFeed } from '../../src/update/feed/build.js';
import { INDEX_FILE, INDEX_SIGNATURE_FILE } from '../../src/update/feed/index-format.js';
import { serveFeed } from '../../src/update/feed/serve.js';
import { downloadPackage, parseFeedSource, readFeedIndex } from '../../src/update/feed/source.js';

let tmp: string;
let feed: string;
let trust: string;
const key = fs.readFileSync(path.join(packagesDir, 'demo.key'), 'utf8');
const now = new Date('2026-12-02T10:00:00Z');

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(HpError);
    return (e as HpError).code;
  }
  return 'no error';
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-feed-'));
  feed = path.join(tmp, 'feed');
  trust = path.join(tmp, 'trust');
  fs.mkdirSync(feed);
  for (const id of ['2026.10', '2026.10-hp1', '2026.10-hp2']) fs.copyFileSync(fixturePackage(id), path.join(feed, `${id}.hpkg`));
  await trustAdd(trust, fs.readFileSync(demoPublicKey(), 'utf8'), 'demo');
  await buildFeed(feed, { privateKeyPem: key, now });
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('update feed', () => {
  it('indexes every package with its digest and manifest fields, signed, valid 30 days', async () => {
    const index = await readFeedIndex(parseFeedSource(feed), trust, now);
    expect(index.generatedAt).toBe(now.toISOString());
    expect(index.expiresAt).toBe('2027-01-01T10:00:00.000Z');
    expect(index.packages.map((p) => [p.id, p.kind, p.kb, p.sequence ?? null])).toEqual([
      ['2026.10', 'baseline', 'KB5046001', null],
      ['2026.10-hp1', 'hotpatch', 'KB5046101', 1],
      ['2026.10-hp2', 'hotpatch', 'KB5046102', 2],
    ]);
    expect(index.packages[0].size).toBe(fs.statSync(path.join(feed, '2026.10.hpkg')).size);
  });

  it('serves the same feed over HTTP and downloads a package verified against the index', async () => {
    const server = await serveFeed(feed);
    try {
      const source = parseFeedSource(server.url);
      const index = await readFeedIndex(source, trust, now);
      const out = path.join(tmp, 'dl');
      const file = await downloadPackage(source, index.packages.find((p) => p.id === '2026.10-hp1')!, out);
      expect(fs.readFileSync(file).equals(fs.readFileSync(path.join(feed, '2026.10-hp1.hpkg')))).toBe(true);
      expect(fs.readdirSync(out)).toEqual(['2026.10-hp1.hpkg']);
      expect((await fetch(new URL('../etc/passwd', server.url))).status).toBe(404);
      expect((await fetch(new URL('.hidden', server.url))).status).toBe(404);
    } finally {
      await server.close();
    }
  });

  it('refuses a tampered, unsigned, untrusted or stale index', async () => {
    const copy = path.join(tmp, 'bad');
    fs.cpSync(feed, copy, { recursive: true });
    const source = parseFeedSource(copy);
    const text = fs.readFileSync(path.join(copy, INDEX_FILE), 'utf8');
    fs.writeFileSync(path.join(copy, INDEX_FILE), text.replace('"KB5046102"', '"KB5046109"'));
    expect(await code(readFeedIndex(source, trust, now))).toBe('FEED_BAD_SIGNATURE');
    fs.writeFileSync(path.join(copy, INDEX_FILE), text);
    expect(await code(readFeedIndex(source, trust, new Date('2027-01-02T00:00:00Z')))).toBe('FEED_STALE');
    await buildFeed(copy, { privateKeyPem: generateKeyPair().privateKeyPem, now });
    expect(await code(readFeedIndex(source, trust, now))).toBe('FEED_UNTRUSTED');
    fs.rmSync(path.join(copy, INDEX_SIGNATURE_FILE));
    expect(await code(readFeedIndex(source, trust, now))).toBe('FEED_UNSIGNED');
  });

  it('refuses a package whose bytes differ from the index, writing nothing', async () => {
    const copy = path.join(tmp, 'swapped');
    fs.cpSync(feed, copy, { recursive: true });
    const index = await readFeedIndex(parseFeedSource(copy), trust, now);
    fs.copyFileSync(path.join(copy, '2026.10-hp2.hpkg'), path.join(copy, '2026.10-hp1.hpkg'));
    const out = path.join(tmp, 'dl-swapped');
    const entry = index.packages.find((p) => p.id === '2026.10-hp1')!;
    expect(await code(downloadPackage(parseFeedSource(copy), entry, out))).toMatch(/FEED_PACKAGE_MISMATCH/);
    expect(fs.existsSync(out) ? fs.readdirSync(out) : []).toEqual([]);
  });

  it('an interrupted download leaves nothing; an unreachable URL is a clear error', async () => {
    const index = await readFeedIndex(parseFeedSource(feed), trust, now);
    const entry = index.packages.find((p) => p.id === '2026.10')!;
    const bytes = fs.readFileSync(path.join(feed, entry.file));
    // A server that sends half of the package and then drops the connection.
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'content-length': bytes.length });
      res.write(bytes.subarray(0, bytes.length >> 1), () => res.destroy());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const out = path.join(tmp, 'dl-cut');
    try {
      expect(await code(downloadPackage(parseFeedSource(`http://127.0.0.1:${port}/`), entry, out))).toBe('FEED_DOWNLOAD_FAILED');
    } finally {
      await new Promise((r) => server.close(r));
    }
    expect(fs.existsSync(out) ? fs.readdirSync(out) : []).toEqual([]);
    expect(await code(readFeedIndex(parseFeedSource(`http://127.0.0.1:${port}/`), trust, now))).toBe('FEED_UNREACHABLE');
  });

  it('takes a folder or an http(s) URL, nothing else', () => {
    expect(() => parseFeedSource(path.join(tmp, 'nope'))).toThrow(/no such folder/);
    expect(() => parseFeedSource('ftp://example.com/feed')).toThrow(/only http/);
    expect(parseFeedSource('http://127.0.0.1:8080/feed')).toMatchObject({ kind: 'url' });
  });
});
