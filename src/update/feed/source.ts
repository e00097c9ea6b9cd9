/**
 * Reading a feed — a folder or an http(s) URL — and downloading its packages. The index is
 * verified (signature by a trusted key, schema, expiry) before anything in it is believed; a
 * package's bytes are checked against the index's size and SHA-256 while they are still in
 * memory, and only then written (atomically) where the installer reads them. A download cut off
 * half-way leaves no file at all.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { HpError } from '../../errors.js';
import { loadTrusted, verifyManifest } from '../../package/index.js';
import { writeFileAtomic } from '../../fs/atomic.js';
import { checkFresh, INDEX_FILE, INDEX_SIGNATURE_FILE, parseIndex, type FeedEntry, type FeedIndex } from './index-format.js';

export type FeedSource = { kind: 'dir'; dir: string } | { kind: 'url'; url: URL };

/** How long one request to a feed URL may take. */
const REQUEST_TIMEOUT_MS = 30_000;
/** The index's own size limit (its packages have theirs in it). */
const MAX_INDEX_BYTES = 16 << 20;

/** A feed as the user names it: an http(s) URL, or a folder that exists (USAGE otherwise). */
export function parseFeedSource(text: string): FeedSource {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new HpError('USAGE', `--feed ${text} is not a valid URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new HpError('USAGE', `--feed ${text}: only http:// and https:// feeds are read`);
    if (!url.pathname.endsWith('/')) url.pathname += '/';
    return { kind: 'url', url };
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(text);
  } catch {
    throw new HpError('USAGE', `--feed ${text}: no such folder (give a folder holding ${INDEX_FILE}, or an http(s) URL)`);
  }
  if (!st.isDirectory()) throw new HpError('USAGE', `--feed ${text} is not a folder (give a folder holding ${INDEX_FILE}, or an http(s) URL)`);
  return { kind: 'dir', dir: path.resolve(text) };
}

export const describeSource = (s: FeedSource): string => (s.kind === 'dir' ? s.dir : s.url.href);

function unreachable(s: FeedSource, what: string, why: string): HpError {
  return new HpError('FEED_UNREACHABLE', `cannot read ${what} from the feed ${describeSource(s)}: ${why}. Nothing was changed`, { feed: describeSource(s) });
}

/** The bytes of one file of the feed (undefined: not there), at most `limit` bytes (more is refused as it arrives). */
async function readFeedFile(s: FeedSource, name: string, limit: number, signal?: AbortSignal): Promise<Buffer | undefined> {
  if (s.kind === 'dir') {
    const file = path.join(s.dir, name);
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw unreachable(s, name, (e as Error).message);
    }
    if (!st.isFile()) throw unreachable(s, name, 'not a regular file');
    if (st.size > limit) throw tooLarge(s, name, limit);
    return fs.readFileSync(file);
  }
  const url = new URL(encodeURIComponent(name), s.url);
  let res: Response;
  try {
    res = await fetch(url, { signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]) : AbortSignal.timeout(REQUEST_TIMEOUT_MS), redirect: 'error' });
  } catch (e) {
    if (signal?.aborted) throw signal.reason;
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw unreachable(s, name, cause?.code ?? cause?.message ?? (e as Error).message);
  }
  if (res.status === 404) return undefined;
  if (!res.ok || !res.body) throw unreachable(s, name, `HTTP ${res.status}`);
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      total += chunk.length;
      if (total > limit) throw tooLarge(s, name, limit);
      chunks.push(Buffer.from(chunk));
    }
  } catch (e) {
    if (e instanceof HpError) throw e;
    if (signal?.aborted) throw signal.reason;
    throw new HpError('FEED_DOWNLOAD_FAILED', `the download of ${name} from ${describeSource(s)} was cut off after ${total} bytes (${(e as Error).message}); nothing of it was kept. Nothing was changed`, { feed: describeSource(s), file: name, bytes: total });
  }
  return Buffer.concat(chunks);
}

function tooLarge(s: FeedSource, name: string, limit: number): HpError {
  return new HpError('FEED_PACKAGE_MISMATCH', `${name} from the feed ${describeSource(s)} is larger than the ${limit} bytes its index allows: refused. Nothing was changed`, { feed: describeSource(s), file: name });
}

/** The feed's index, verified: signed by a trusted key, well formed, not expired at `now`. */
export async function readFeedIndex(s: FeedSource, trustDir: string, now: Date, signal?: AbortSignal): Promise<FeedIndex> {
  const where = describeSource(s);
  const bytes = await readFeedFile(s, INDEX_FILE, MAX_INDEX_BYTES, signal);
  if (!bytes) throw unreachable(s, INDEX_FILE, 'there is none (build one with: hp-agent feed build DIR --key KEY)');
  const sig = await readFeedFile(s, INDEX_SIGNATURE_FILE, 4096, signal);
  if (!sig) throw new HpError('FEED_UNSIGNED', `the feed index at ${where} has no signature (${INDEX_SIGNATURE_FILE}): an unsigned index is refused. Nothing was changed`, { feed: where });
  try {
    verifyManifest(bytes, sig.toString('utf8'), await loadTrusted(trustDir));
  } catch (e) {
    if (!(e instanceof HpError)) throw e;
    const code = e.code === 'PACKAGE_UNTRUSTED' ? 'FEED_UNTRUSTED' : e.code === 'PACKAGE_BAD_SIGNATURE' ? 'FEED_BAD_SIGNATURE' : e.code;
    throw new HpError(code, `the feed index at ${where} was refused: ${e.message.replace(/manifest\.json/g, INDEX_FILE).replace(/manifest\.sig/g, INDEX_SIGNATURE_FILE).replace(/the package/g, 'the index')}. Nothing was changed`, { feed: where, ...e.details });
  }
  const index = parseIndex(bytes, where);
  checkFresh(index, now, where);
  return index;
}

/**
 * Downloads one package the index lists into `dir` (atomically, as `<id>.hpkg`), after checking
 * its size and SHA-256 against the index. Returns the file.
 */
export async function downloadPackage(s: FeedSource, entry: FeedEntry, dir: string, signal?: AbortSignal): Promise<string> {
  const bytes = await readFeedFile(s, entry.file, entry.size, signal);
  if (!bytes) throw unreachable(s, entry.file, 'the index lists it, but the feed does not have it');
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  if (bytes.length !== entry.size || sha256 !== entry.sha256) {
    throw new HpError(
      'FEED_PACKAGE_MISMATCH',
      `${entry.file} from the feed ${describeSource(s)} is not the package its index describes (${bytes.length} bytes, SHA-256 ${sha256}; the index says ${entry.size} bytes, ${entry.sha256}): refused before it reached the package store. Nothing was changed`,
      { feed: describeSource(s), file: entry.file, sha256, expectedSha256: entry.sha256 },
    );
  }
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `${entry.id}.hpkg`);
  await writeFileAtomic(file, bytes, 0o600);
  return file;
}
