/**
 * `hp-agent feed build <dir>`: the signed index of the packages in a folder. Each package is
 * opened and checked as the agent opens it (archive, manifest, payload hashes, and its signature
 * when the builder trusts keys), so a feed never lists a package the agent would refuse to read.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HpError } from '../../errors.js';
import { openPackage, signManifest } from '../../package/index.js';
import { writeFileAtomic } from '../../fs/atomic.js';
import { entryOf, INDEX_FILE, INDEX_SCHEMA_VERSION, INDEX_SIGNATURE_FILE, serializeIndex, type FeedIndex } from './index-format.js';

export interface BuildFeedOptions {
  /** The private key (PEM) that signs the index. */
  privateKeyPem: string;
  now: Date;
  /** When the index goes stale (default: 30 days after now). */
  expiresAt?: Date;
  /** A trust store to check each package's signature against (default: signatures not checked here). */
  trustDir?: string;
}

export interface BuildFeedResult {
  dir: string;
  index: string;
  signature: string;
  generatedAt: string;
  expiresAt: string;
  packages: FeedIndex['packages'];
}

export const DEFAULT_VALIDITY_DAYS = 30;

export async function buildFeed(dir: string, o: BuildFeedOptions): Promise<BuildFeedResult> {
  const files = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isFile() && d.name.endsWith('.hpkg'))
    .map((d) => d.name)
    .sort();
  const packages: FeedIndex['packages'] = [];
  for (const name of files) {
    const pkg = await openPackage(path.join(dir, name), { trustDir: o.trustDir ?? path.join(dir, '.untrusted'), allowUnsigned: o.trustDir === undefined });
    const size = fs.statSync(pkg.path).size;
    packages.push(entryOf(name, pkg.sha256, size, pkg.manifest));
  }
  packages.sort((a, b) => a.releaseDate.localeCompare(b.releaseDate) || a.id.localeCompare(b.id));
  const dup = packages.find((p, i) => packages.findIndex((q) => q.id === p.id) !== i);
  if (dup) throw new HpError('FEED_INDEX_INVALID', `two files in ${dir} hold package ${dup.id}: a feed lists each package once. Nothing was written`, { packageId: dup.id });
  const expiresAt = o.expiresAt ?? new Date(o.now.getTime() + DEFAULT_VALIDITY_DAYS * 86_400_000);
  if (expiresAt.getTime() <= o.now.getTime()) throw new HpError('USAGE', `the index would expire (${expiresAt.toISOString()}) before it is made (${o.now.toISOString()})`);
  const index: FeedIndex = { schemaVersion: INDEX_SCHEMA_VERSION, generatedAt: o.now.toISOString(), expiresAt: expiresAt.toISOString(), packages };
  const bytes = serializeIndex(index);
  const signature = signManifest(bytes, o.privateKeyPem);
  // The signature goes first: a reader that sees the new index always finds a signature for it
  // only once both are written (an old signature does not verify the new bytes: refused, not trusted).
  const indexPath = path.join(dir, INDEX_FILE);
  const sigPath = path.join(dir, INDEX_SIGNATURE_FILE);
  await writeFileAtomic(sigPath, signature + '\n');
  await writeFileAtomic(indexPath, bytes);
  return { dir, index: indexPath, signature: sigPath, generatedAt: index.generatedAt, expiresAt: index.expiresAt, packages };
}
