/**
 * `npm run bench`: the benchmark of issue 4 (a report, not a test). Prints the Markdown report
 * on stdout, progress on stderr, and writes report.md and report.json.
 *
 *   node dist/bench/main.js [--runs N] [--quick] [--out DIR] [--only SECTION,...]
 *
 * --runs N     apply+revert cycles per case (default 100; 5 with --quick); contention rounds
 *              (default 30; 5 with --quick)
 * --quick      a small matrix (pause 1 and 4 threads, zero-stop 0 and 1, 1 function, scale 1
 *              and 10): a smoke run
 * --out DIR    where to write the reports (default bench/out/ in the package)
 * --only LIST  some of: pause, contention, zeroStop, callCost, restart, scale (default all)
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SECTIONS, type SectionName } from './report.js';
import { benchPlan, runBench } from './run.js';

const USAGE = 'usage: node dist/bench/main.js [--runs N] [--quick] [--out DIR] [--only pause,contention,zeroStop,callCost,restart,scale]';

interface Args {
  runs?: number;
  quick: boolean;
  out: string;
  sections?: SectionName[];
}

function fail(message: string): never {
  process.stderr.write(`${message}\n${USAGE}\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  const args: Args = { quick: false, out: fileURLToPath(new URL('../../bench/out/', import.meta.url)) };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') args.quick = true;
    else if (a === '--runs') {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 1) fail('--runs must be a positive integer');
      args.runs = n;
    } else if (a === '--out') args.out = path.resolve(value());
    else if (a === '--only') {
      const names = value().split(',').map((s) => s.trim()).filter(Boolean);
      const bad = names.filter((n) => !(SECTIONS as readonly string[]).includes(n));
      if (bad.length || names.length === 0) fail(`--only: unknown section(s) ${bad.join(', ')}; choose among ${SECTIONS.join(', ')}`);
      args.sections = names as SectionName[];
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else fail(`unknown argument ${a}`);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const plan = benchPlan({ quick: args.quick, runs: args.runs, sections: args.sections });
const result = await runBench(plan, args.out, (line) => process.stderr.write(`${line}\n`));
process.stdout.write(`${result.markdown}\n`);
process.stderr.write(`wrote ${result.markdownPath} and ${result.jsonPath}\n`);
// Targets are dead; do not wait for stray handles.
process.exit(0);
