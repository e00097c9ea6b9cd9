/** Update management as on Azure: config (patch settings, enrollment), feed build/serve, assess, install. */
import fs from 'node:fs';
import type { Argv } from 'yargs';
import { now } from '../clock.js';
import type { Output } from '../contract/index.js';
import type { StatusReport } from '../agent/status.js';
import { CLASSIFICATIONS } from '../package/index.js';
import { REBOOT_SETTINGS, type AssessResult, type InstallParameters, type UpdateInstallResult } from '../update/azure.js';
import { assess } from '../update/assess.js';
import { setConfig, showConfig, type ConfigReport } from '../update/config.js';
import { parseDuration } from '../update/duration.js';
import { buildFeed } from '../update/feed/build.js';
import { serveFeed } from '../update/feed/serve.js';
import { parseFeedSource, type FeedSource } from '../update/feed/source.js';
import { install, planInstall, type InstallPlan } from '../update/install.js';
import { normalizeKb, parseClassification } from '../update/select.js';
import { parseIsoDateTime } from '../clock.js';
import { agentCommand } from './agent.js';
import { EXIT, printer, table } from './output.js';
import { existingFile, nonEmpty, usage, wholeNumber } from './usage.js';

export const feedOption = { type: 'string', requiresArg: true, demandOption: true, coerce: (v: unknown) => parseFeedSource(String(nonEmpty('--feed')(v))), describe: 'the update feed: a folder holding index.json, or an http(s) URL' } as const;

/** A list option: repeatable, and comma-separated values as Azure's CLI takes them. */
const listOf = <T>(flag: string, each: (s: string, flag: string) => T) => (v: unknown) =>
  (Array.isArray(v) ? v : [v]).flatMap((x) => String(x).split(',')).map((x) => x.trim()).filter((x) => x !== '').map((x) => each(x, flag));

function configHuman(c: ConfigReport): string {
  const ps = c.patchSettings;
  const lines = [
    table(['SETTING', 'VALUE'], [
      ['patchMode', ps.patchMode],
      ['enableHotpatching', String(ps.enableHotpatching)],
      ['assessmentMode', ps.assessmentMode],
      ['automaticByPlatformSettings.rebootSetting', ps.automaticByPlatformSettings.rebootSetting],
      ['timeZone', `${c.timeZone}${c.timeZoneSource === 'system' ? ' (the system\'s)' : ''}`],
      ['offPeakWindow', `${c.offPeakWindow.start}-${c.offPeakWindow.end}`],
    ]),
    '',
    `hotpatch enrollment: ${c.enrollment}${c.enrollmentReason ? ` — ${c.enrollmentReason}` : ''}`,
  ];
  if (c.changed) lines.unshift(c.changed.length ? `changed: ${c.changed.join(', ')}` : 'nothing changed (every value was already so)', '');
  return lines.join('\n');
}

/** The update lines of `status`: settings, enrollment and why, the last assessment. */
export function updateStatusLines(s: StatusReport): string[] {
  const lines: string[] = [];
  if (s.enrollmentReason) lines.push(`enrollment ${s.enrollment}: ${s.enrollmentReason}`);
  if (s.patchSettings) {
    const ps = s.patchSettings;
    lines.push(`patch settings: patchMode ${ps.patchMode}, enableHotpatching ${ps.enableHotpatching}, assessmentMode ${ps.assessmentMode}, rebootSetting ${ps.automaticByPlatformSettings.rebootSetting}; off-peak ${s.offPeakWindow?.start}-${s.offPeakWindow?.end} ${s.timeZone}`);
  }
  const a = s.lastAssessment;
  lines.push(a ? `last assessment: ${a.lastModifiedDateTime} ${a.status}, ${a.criticalAndSecurityPatchCount} critical/security and ${a.otherPatchCount} other available${a.kbIds.length ? ` (${a.kbIds.join(', ')})` : ''}` : 'last assessment: never (hp-agent assess --feed …)');
  return lines;
}

function assessHuman(r: AssessResult): string {
  const head = `assessment ${r.status} at ${r.lastModifiedDateTime}: ${r.criticalAndSecurityPatchCount} critical/security, ${r.otherPatchCount} other; reboot pending: ${r.rebootPending ? 'yes' : 'no'}`;
  if (r.error) return `${head}\n${r.error.code}: ${r.error.message}`;
  if (r.availablePatches.length === 0) return `${head}\nthe machine has every update that applies`;
  return `${head}\n${table(['KB', 'PATCH', 'CLASSIFICATION', 'REBOOT', 'PUBLISHED', 'NAME'], r.availablePatches.map((p) => [p.kbId, p.patchId, p.classifications.join(','), p.rebootBehavior, p.publishedDate.slice(0, 10), p.name]))}`;
}

function installHuman(r: UpdateInstallResult | InstallPlan): string {
  const dry = 'dryRun' in r;
  const head = dry
    ? `dry run: would install ${r.patches.filter((p) => p.installationState === 'Installed').length}, leave rebootStatus ${r.rebootStatus}${r.maintenanceWindowExceeded ? '; the window would run out' : ''}; nothing was done`
    : `installation ${r.status}: ${r.installedPatchCount} installed, ${r.pendingPatchCount} pending, ${r.failedPatchCount} failed, ${r.excludedPatchCount} excluded, ${r.notSelectedPatchCount} not selected; rebootStatus ${r.rebootStatus}${r.maintenanceWindowExceeded ? '; maintenance window exceeded' : ''}`;
  if (r.patches.length === 0) return `${head}\nnothing to install: the machine has every update that applies`;
  return `${head}\n${table(['KB', 'PATCH', 'STATE', 'REBOOT', 'WHY'], r.patches.map((p) => [p.kbId, p.patchId, p.installationState, p.rebootBehavior, p.reason ?? '']))}`;
}

/**
 * 0 done (a window that ran out included: the rest is Pending); 3 failed on the feed before
 * anything was installed; 4 failed; 5 some installed, some failed.
 */
function installExit(r: UpdateInstallResult): number {
  if (r.status === 'Succeeded') return EXIT.ok;
  if (r.status === 'Failed') return r.error?.code.startsWith('FEED_') ? EXIT.refused : EXIT.failed;
  return r.failedPatchCount > 0 || r.rebootStatus === 'Failed' ? EXIT.partial : EXIT.ok;
}

const configShow = agentCommand<'config', object>({
  command: ['show', '$0'],
  describe: 'Show the settings and the enrollment with its reason',
  run: async (a) => {
    const r = await showConfig(undefined, { verbose: a.verbose });
    return { body: r, human: () => configHuman(r) };
  },
});

const configSet = agentCommand<'config', { pairs: [string, string][] }>({
  command: 'set <pairs..>',
  describe:
    'Change settings: KEY VALUE pairs, all or none (patchMode Manual|AutomaticByOS|AutomaticByPlatform; enableHotpatching true|false; assessmentMode ImageDefault|AutomaticByPlatform; automaticByPlatformSettings.rebootSetting IfRequired|Never|Always; timeZone IANA-NAME|system; offPeakWindow HH:MM-HH:MM)',
  options: (d) =>
    d.positional('pairs', {
      type: 'string',
      array: true,
      coerce: (v: unknown) => {
        const xs = (Array.isArray(v) ? v : [v]).map(String);
        if (xs.length % 2) throw usage(`config set takes KEY VALUE pairs; "${xs.at(-1)}" has no value`);
        return xs.flatMap((x, i) => (i % 2 ? [] : [[x, xs[i + 1]] as [string, string]]));
      },
      describe: 'KEY VALUE [KEY VALUE …]',
    }),
  run: async (a) => {
    const r = await setConfig(undefined, a.pairs, { verbose: a.verbose, wait: a.wait });
    return { body: r, human: () => configHuman(r) };
  },
});

const assessCommand = agentCommand<'assess', { feed: FeedSource }>({
  command: 'assess',
  describe: 'Assess now: which updates of the feed this machine lacks, compared with what is installed and what its processes run',
  options: (c) => c.option('feed', feedOption),
  run: async (a) => {
    const r = await assess(undefined, a.feed, now(), { verbose: a.verbose, wait: a.wait });
    return { body: r, human: () => assessHuman(r), exit: r.status === 'Failed' ? EXIT.refused : EXIT.ok };
  },
});

interface InstallArgs {
  feed: FeedSource;
  classificationsToInclude?: InstallParameters['classificationsToInclude'];
  kbNumbersToInclude?: string[];
  kbNumbersToExclude?: string[];
  excludeKbsRequiringReboot: boolean;
  maxPatchPublishDate?: string;
  maximumDuration?: string;
  rebootSetting?: InstallParameters['rebootSetting'];
}

/** Azure's install parameters from the command line (only those given). */
const installParameters = (a: InstallArgs): InstallParameters => ({
  ...(a.rebootSetting ? { rebootSetting: a.rebootSetting } : {}),
  ...(a.classificationsToInclude ? { classificationsToInclude: a.classificationsToInclude } : {}),
  ...(a.kbNumbersToInclude ? { kbNumbersToInclude: a.kbNumbersToInclude } : {}),
  ...(a.kbNumbersToExclude ? { kbNumbersToExclude: a.kbNumbersToExclude } : {}),
  ...(a.excludeKbsRequiringReboot ? { excludeKbsRequiringReboot: true } : {}),
  ...(a.maxPatchPublishDate ? { maxPatchPublishDate: a.maxPatchPublishDate } : {}),
  ...(a.maximumDuration ? { maximumDuration: a.maximumDuration } : {}),
});

const installCommand = agentCommand<'install', InstallArgs>({
  command: 'install',
  describe: 'Install updates now, by Azure\'s install parameters: a missing baseline first (rebooting as the reboot setting allows), then the latest hotpatch',
  options: (c) =>
    c
      .option('feed', feedOption)
      .option('classifications-to-include', { type: 'string', array: true, requiresArg: true, coerce: listOf('--classifications-to-include', parseClassification), describe: `only these classifications (${CLASSIFICATIONS.join(', ')}); repeatable or comma-separated` })
      .option('kb-numbers-to-include', { type: 'string', array: true, requiresArg: true, coerce: listOf('--kb-numbers-to-include', normalizeKb), describe: 'also these KBs (KB5046101 or 5046101); repeatable or comma-separated' })
      .option('kb-numbers-to-exclude', { type: 'string', array: true, requiresArg: true, coerce: listOf('--kb-numbers-to-exclude', normalizeKb), describe: 'never these KBs; repeatable or comma-separated' })
      .option('exclude-kbs-requiring-reboot', { type: 'boolean', default: false, describe: 'leave out every update that needs a reboot' })
      .option('max-patch-publish-date', { type: 'string', requiresArg: true, coerce: (v: unknown) => (isoTime('--max-patch-publish-date', v), String(v)), describe: 'only updates published on or before this ISO 8601 date-time' })
      .option('maximum-duration', { type: 'string', requiresArg: true, coerce: (v: unknown) => durationText(v), describe: 'the maintenance window, ISO 8601 (e.g. PT4H): no update starts that cannot finish inside it' })
      .option('reboot-setting', { type: 'string', requiresArg: true, choices: REBOOT_SETTINGS, coerce: (v: unknown) => nonEmpty('--reboot-setting')(v), describe: 'IfRequired (default: the machine\'s rebootSetting) | Never (a baseline stays staged) | Always' }),
  run: async (a) => {
    // Installing takes reboots and downloads: say each patch's fate as it becomes known.
    const onPatch = a.json ? undefined : (p: { kbId: string; patchId: string; installationState: string }) => process.stderr.write(`hp-agent: ${p.kbId} ${p.patchId}: ${p.installationState}\n`);
    const r = await install(undefined, a.feed, installParameters(a), now(), { verbose: a.verbose, wait: a.wait, onPatch });
    return { body: r, human: () => installHuman(r), exit: installExit(r) };
  },
  dryRun: async (a) => {
    const p = await planInstall(undefined, a.feed, installParameters(a), now(), { verbose: a.verbose });
    return { body: p, human: () => installHuman(p) };
  },
});

export function updateCommands(y: Argv): Argv {
  return installCommand(assessCommand(y))
    .command('config', 'The machine\'s patch settings (Azure\'s patchSettings, time zone, off-peak window) and its hotpatch enrollment', (c) =>
      configSet(configShow(c))
        .example('$0 config set enableHotpatching false', 'back on ordinary updates: security fixes arrive as cumulative updates that need a reboot')
        .example('$0 config set timeZone Europe/Rome offPeakWindow 23:00-05:00', '')
        .demandCommand(1, 'name a config command: show or set'),
    )
    .command('feed', 'The update feed: a folder (or URL) of signed packages with a signed index', (c) =>
      c
        .command(
          'build <dir>',
          'Write the signed index (index.json, index.json.sig) of the packages in a folder',
          (d) =>
            d
              .positional('dir', { type: 'string', demandOption: true, coerce: directory('dir') })
              .option('key', { type: 'string', requiresArg: true, demandOption: true, coerce: existingFile('--key'), describe: 'the private key (PEM) that signs the index (hp-agent keygen)' })
              .option('expires', { type: 'string', requiresArg: true, coerce: (v: unknown) => isoTime('--expires', v), describe: 'when the index goes stale (ISO 8601 date-time; default: 30 days from now)' })
              .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' }),
          async (a) => {
            const args = a as unknown as { dir: string; key: string; expires?: Date; json: boolean };
            const out = printer(args.json);
            try {
              const r = await buildFeed(args.dir, { privateKeyPem: fs.readFileSync(args.key, 'utf8'), now: now(), expiresAt: args.expires });
              const body: Output<'feed-build'> = r;
              out.result(body, () => `indexed ${r.packages.length} package(s) in ${r.index} (signed; valid until ${r.expiresAt})\n${table(['KB', 'PACKAGE', 'KIND', 'CLASSIFICATION', 'RELEASED'], r.packages.map((p) => [p.kb, p.id, p.equivalentHotpatch ? `cumulative (= ${p.equivalentHotpatch})` : p.kind, p.classification, p.releaseDate]))}`);
            } catch (e) {
              process.exitCode = out.error(e);
            }
          },
        )
        .command(
          'serve <dir>',
          'Serve a feed folder over HTTP on 127.0.0.1 until SIGINT/SIGTERM',
          (d) =>
            d
              .positional('dir', { type: 'string', demandOption: true, coerce: directory('dir') })
              .option('port', { requiresArg: true, default: 0, coerce: wholeNumber('--port', 'a TCP port (0: any free one)', 0, 65_535), describe: 'TCP port (default: any free one, printed)' })
              .option('json', { type: 'boolean', default: false, describe: 'print one JSON object once listening' }),
          async (a) => {
            const args = a as unknown as { dir: string; port: number; json: boolean };
            const out = printer(args.json);
            try {
              const server = await serveFeed(args.dir, args.port);
              const body: Output<'feed-serve'> = { dir: args.dir, url: server.url, port: server.port };
              out.result(body, () => `serving ${args.dir} at ${server.url} (SIGINT or SIGTERM stops it)`);
              await new Promise<void>((resolve) => {
                const stop = () => resolve();
                process.once('SIGINT', stop);
                process.once('SIGTERM', stop);
              });
              await server.close();
            } catch (e) {
              process.exitCode = out.error(e);
            }
          },
        )
        .demandCommand(1, 'name a feed command: build or serve'),
    );
}

const directory = (what: string) => (v: unknown) => {
  const dir = String(nonEmpty(what)(v));
  if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw usage(`${what} ${dir} is not a folder`);
  return dir;
};

export function isoTime(flag: string, v: unknown): Date {
  try {
    return parseIsoDateTime(String(nonEmpty(flag)(v)), flag);
  } catch (e) {
    throw usage((e as Error).message);
  }
}

function durationText(v: unknown): string {
  const text = String(nonEmpty('--maximum-duration')(v));
  parseDuration(text, '--maximum-duration');
  return text;
}

