/**
 * Which assessed patches an install takes (pure): Azure's install parameters applied to the
 * list, in the order the install goes. Excluded wins over included: a KB to exclude, or a patch
 * needing a reboot with excludeKbsRequiringReboot, is `Excluded`; a patch outside the
 * classifications and KBs to include, or published after maxPatchPublishDate, is `NotSelected`.
 * With neither classifications nor KBs to include, every patch is included.
 */
import { HpError } from '../errors.js';
import { CLASSIFICATIONS, type Classification } from '../package/index.js';
import type { FeedEntry } from './feed/index-format.js';
import type { InstallParameters } from './azure.js';
import { parseDuration } from './duration.js';
import { parseIsoDateTime } from '../clock.js';

export type Selection = { entry: FeedEntry; state: 'Selected' } | { entry: FeedEntry; state: 'Excluded' | 'NotSelected'; reason: string };

/** "KB5046101" or "5046101" → "KB5046101"; USAGE otherwise. */
export function normalizeKb(text: string, flag: string): string {
  const m = /^(?:KB)?(\d{6,8})$/i.exec(text.trim());
  if (!m) throw new HpError('USAGE', `${flag}: "${text}" is not a KB number (KB and 6 to 8 digits, e.g. KB5046101, or the digits alone)`);
  return `KB${m[1]}`;
}

export function parseClassification(text: string, flag: string): Classification {
  const c = CLASSIFICATIONS.find((x) => x === text);
  if (!c) throw new HpError('USAGE', `${flag}: unknown classification "${text}" (the classifications are ${CLASSIFICATIONS.join(', ')}, exact spelling)`);
  return c;
}

/** Checks every parameter's form (USAGE for the first bad one); returns them normalised. */
export function checkInstallParameters(p: InstallParameters): InstallParameters {
  if (p.maximumDuration !== undefined) parseDuration(p.maximumDuration, 'maximumDuration');
  if (p.maxPatchPublishDate !== undefined) {
    try {
      parseIsoDateTime(p.maxPatchPublishDate, 'maxPatchPublishDate');
    } catch (e) {
      throw new HpError('USAGE', (e as Error).message);
    }
  }
  return {
    ...p,
    ...(p.classificationsToInclude ? { classificationsToInclude: p.classificationsToInclude.map((c) => parseClassification(c, 'classificationsToInclude')) } : {}),
    ...(p.kbNumbersToInclude ? { kbNumbersToInclude: p.kbNumbersToInclude.map((k) => normalizeKb(k, 'kbNumbersToInclude')) } : {}),
    ...(p.kbNumbersToExclude ? { kbNumbersToExclude: p.kbNumbersToExclude.map((k) => normalizeKb(k, 'kbNumbersToExclude')) } : {}),
  };
}

/** KB numbers the parameters name that the feed does not list at all: a typo, refused before anything runs. */
export function unknownKbs(p: InstallParameters, feed: readonly FeedEntry[]): string[] {
  const known = new Set(feed.map((e) => e.kb));
  return [...(p.kbNumbersToInclude ?? []), ...(p.kbNumbersToExclude ?? [])].filter((k) => !known.has(k));
}

/** The decision for one patch. */
export function selectPatch(entry: FeedEntry, p: InstallParameters): Selection {
  if (p.kbNumbersToExclude?.includes(entry.kb)) return { entry, state: 'Excluded', reason: `${entry.kb} is in kbNumbersToExclude` };
  if (p.excludeKbsRequiringReboot && entry.rebootBehavior !== 'NeverReboots') return { entry, state: 'Excluded', reason: `it needs a reboot (${entry.rebootBehavior}) and excludeKbsRequiringReboot is set` };
  const byKb = p.kbNumbersToInclude?.includes(entry.kb) ?? false;
  const byClass = p.classificationsToInclude?.includes(entry.classification) ?? false;
  const filtered = p.kbNumbersToInclude !== undefined || p.classificationsToInclude !== undefined;
  if (filtered && !byKb && !byClass) {
    return { entry, state: 'NotSelected', reason: `neither its classification (${entry.classification}) is in classificationsToInclude nor ${entry.kb} in kbNumbersToInclude` };
  }
  if (p.maxPatchPublishDate !== undefined && Date.parse(`${entry.releaseDate}T00:00:00Z`) > Date.parse(p.maxPatchPublishDate)) {
    return { entry, state: 'NotSelected', reason: `published ${entry.releaseDate}, after maxPatchPublishDate ${p.maxPatchPublishDate}` };
  }
  return { entry, state: 'Selected' };
}

export const selectPatches = (entries: readonly FeedEntry[], p: InstallParameters): Selection[] => entries.map((e) => selectPatch(e, p));
