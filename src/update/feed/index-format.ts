/**
 * The update feed's index: which packages a feed offers, with each one's SHA-256 and size (a
 * download is checked against them before it goes anywhere) and the manifest fields that decide
 * whether it applies (kind, baseline, sequence, classification, release date). The index is
 * signed as a manifest is (keys.ts: ed25519, the signer's key id first) and carries an expiry,
 * so a feed cannot be tampered with, replaced by an unsigned one, or replayed once stale.
 *
 *   <feed>/index.json       this document
 *   <feed>/index.json.sig   the signature over index.json's exact bytes
 *   <feed>/<file>.hpkg      the packages it lists
 */
import { z } from 'zod';
import { HpError } from '../../errors.js';
import { CLASSIFICATIONS, MANIFEST_FIELDS, REBOOT_BEHAVIORS, type Manifest } from '../../package/index.js';

export const INDEX_FILE = 'index.json';
export const INDEX_SIGNATURE_FILE = 'index.json.sig';
export const INDEX_SCHEMA_VERSION = 1;

const isoTime = z.string().refine((s) => /T/.test(s) && !Number.isNaN(Date.parse(s)), 'expected an ISO 8601 date-time');
/** One file name inside the feed: no folders, nothing hidden. */
const feedFileName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\.hpkg$/, 'expected a package file name NAME.hpkg (no folders)');

export const feedEntrySchema = z.strictObject({
  file: feedFileName,
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().positive(),
  id: MANIFEST_FIELDS.id,
  kb: MANIFEST_FIELDS.kb,
  kind: z.enum(['baseline', 'hotpatch']),
  title: z.string(),
  classification: z.enum(CLASSIFICATIONS),
  releaseDate: MANIFEST_FIELDS.releaseDate,
  rebootBehavior: z.enum(REBOOT_BEHAVIORS),
  baselineId: MANIFEST_FIELDS.id,
  /** Hotpatch: its level within its baseline. */
  sequence: z.number().int().positive().optional(),
  /** Baseline: planned (quarterly) or not. */
  planned: z.boolean().optional(),
  /** A cumulative update carrying this hotpatch's fixes, for machines not enrolled in hotpatching. */
  equivalentHotpatch: MANIFEST_FIELDS.id.optional(),
});

export const feedIndexSchema = z.strictObject({
  schemaVersion: z.literal(INDEX_SCHEMA_VERSION),
  generatedAt: isoTime,
  /** After this, the index is stale and refused: a feed must be re-signed to stay current. */
  expiresAt: isoTime,
  packages: z.array(feedEntrySchema).max(10_000),
});

export type FeedEntry = z.infer<typeof feedEntrySchema>;
export type FeedIndex = z.infer<typeof feedIndexSchema>;

/** The index entry of a package file (its manifest and its bytes' digest). */
export function entryOf(file: string, sha256: string, size: number, m: Manifest): FeedEntry {
  return {
    file,
    sha256,
    size,
    id: m.id,
    kb: m.kb,
    kind: m.kind,
    title: m.title,
    classification: m.classification,
    releaseDate: m.releaseDate,
    rebootBehavior: m.rebootBehavior,
    baselineId: m.baselineId,
    ...(m.kind === 'hotpatch' ? { sequence: m.sequence } : { planned: m.planned, ...(m.equivalentHotpatch ? { equivalentHotpatch: m.equivalentHotpatch } : {}) }),
  };
}

/** The index's canonical bytes (what is signed). */
export const serializeIndex = (index: FeedIndex): Buffer => Buffer.from(JSON.stringify(index, null, 2) + '\n', 'utf8');

/** Parse and validate an index's bytes; FEED_INDEX_INVALID names what is wrong. */
export function parseIndex(bytes: Buffer, where: string): FeedIndex {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new HpError('FEED_INDEX_INVALID', `the feed index at ${where} is not JSON (${(e as Error).message}). Nothing was changed`, { feed: where });
  }
  const r = feedIndexSchema.safeParse(value);
  if (!r.success) {
    const problems = r.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(index)'}: ${i.message}`);
    throw new HpError('FEED_INDEX_INVALID', `the feed index at ${where} was refused: ${problems.join('; ')}. Nothing was changed`, { feed: where, problems });
  }
  const ids = new Set<string>();
  for (const e of r.data.packages) {
    if (ids.has(e.id)) throw new HpError('FEED_INDEX_INVALID', `the feed index at ${where} lists package ${e.id} twice. Nothing was changed`, { feed: where });
    ids.add(e.id);
  }
  return r.data;
}

/** Refuses an index past its expiry (FEED_STALE): its publisher no longer vouches that it is current. */
export function checkFresh(index: FeedIndex, now: Date, where: string): void {
  if (Date.parse(index.expiresAt) < now.getTime()) {
    throw new HpError(
      'FEED_STALE',
      `the feed index at ${where} expired at ${index.expiresAt} (generated ${index.generatedAt}; now is ${now.toISOString()}): a stale index may hide newer fixes, so it was refused. Rebuild it (hp-agent feed build). Nothing was changed`,
      { feed: where, expiresAt: index.expiresAt },
    );
  }
}
