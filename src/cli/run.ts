/** `hp-agent run`: the long-running agent of automatic patching (src/update/run.ts). */
import type { Argv } from 'yargs';
import type { Output } from '../contract/index.js';
import { runAgent, type RunAction } from '../update/run.js';
import { EXIT, printer } from './output.js';
import type { FeedSource } from '../update/feed/source.js';
import { feedOption, isoTime } from './update.js';
import { usage, wholeNumber } from './usage.js';

/** One line a person reads: when, what, the KB, the result, why. */
function actionLine(a: RunAction): string {
  const what = [a.action.padEnd(8), a.kbId ? `${a.kbId} ${a.packageId}` : '', a.service ?? '', a.result ?? ''].filter(Boolean).join('  ');
  return `${a.time}  ${what}${a.reason ? `: ${a.reason}` : ''}${a.detail ? ` [${a.detail}]` : ''}`;
}

export function runCommand(y: Argv): Argv {
  return y.command(
    'run',
    'The long-running agent: automatic assessment and patching by the machine\'s patch settings (a foreground process; SIGTERM stops it cleanly)',
    (c) =>
      c
        .option('feed', feedOption)
        .option('simulate-from', { requiresArg: true, coerce: (v: unknown) => isoTime('--simulate-from', v), describe: 'run on a simulated clock from this ISO 8601 instant (jumping from one due event to the next, no sleeping)' })
        .option('simulate-until', { requiresArg: true, coerce: (v: unknown) => isoTime('--simulate-until', v), describe: 'the simulated clock\'s end (with --simulate-from)' })
        .option('scan-interval', { requiresArg: true, default: 5000, coerce: wholeNumber('--scan-interval', 'milliseconds', 100, 3_600_000), describe: 'real clock: ms between looks for processes that started below the hotpatch level' })
        .option('json', { type: 'boolean', default: false, describe: 'one JSON object per line, one line per action' })
        .option('verbose', { type: 'boolean', default: false, describe: 'mirror the log on stderr' })
        .check((a) => {
          if ((a['simulate-from'] === undefined) !== (a['simulate-until'] === undefined)) throw usage('--simulate-from and --simulate-until go together');
          if (a['simulate-from'] && (a['simulate-until'] as Date) <= (a['simulate-from'] as Date)) throw usage('--simulate-until must be after --simulate-from');
          return true;
        }),
    async (a) => {
      const args = a as unknown as { feed: FeedSource; simulateFrom?: Date; simulateUntil?: Date; scanInterval: number; json: boolean; verbose: boolean };
      const out = printer(args.json);
      try {
        await runAgent({
          feed: args.feed,
          simulateFrom: args.simulateFrom,
          simulateUntil: args.simulateUntil,
          scanIntervalMs: args.scanInterval,
          verbose: args.verbose,
          onAction: (x) => {
            const line: Output<'run'> = x;
            process.stdout.write(`${args.json ? JSON.stringify(line) : actionLine(x)}\n`);
          },
        });
        process.exitCode = EXIT.ok;
      } catch (e) {
        process.exitCode = out.error(e);
      }
    },
  );
}
