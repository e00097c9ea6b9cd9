/** The hp-agent command line. */
import fs from 'node:fs';
import yargs from 'yargs';
import { HpError } from '../errors.js';
import { EXIT, printer } from './output.js';
import { agentCommands } from './agent.js';
import { demoCommand } from './demo.js';
import { keysCommand } from './keys.js';
import { packCommand } from './pack.js';
import { tryCommand } from './try.js';
import { updateCommands } from './update.js';
import { failUsage } from './usage.js';

/**
 * The package's version, read from its package.json (two folders up, from dist/cli/ and from the
 * bundle in dist/bundle/ alike). yargs would look for a package.json from the working directory
 * up, which from the bundle finds none ("unknown") or another package's.
 */
function version(): string {
  try {
    return (JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export async function main(args: string[]): Promise<number> {
  process.exitCode = EXIT.ok;
  const parser = updateCommands(demoCommand(packCommand(keysCommand(agentCommands(tryCommand(
    yargs(args)
      .scriptName('hp-agent')
      .usage('$0 <command> [options]\n\nLive-patch functions of running x86-64 Linux processes.')
      .epilogue('Exit codes: 0 done; 2 bad usage (nothing ran); 3 refused, nothing changed (status --check: not healthy); 4 failed after something was written; 5 done for some processes, failed for others; 1 internal error; 130/143 stopped by SIGINT/SIGTERM before changing anything.'),
  ))))))
    .demandCommand(1, 'name a command')
    .strict()
    .help()
    .alias('h', 'help')
    .version(version())
    // Throws: a usage error must end the parse before any handler can run (a fail callback
    // that returns lets yargs go on to run the command).
    .fail(failUsage);
  try {
    await parser.parseAsync();
  } catch (e) {
    if (!(e instanceof HpError) || e.code !== 'USAGE') throw e;
    return printer(args.includes('--json')).error(e);
  }
  return Number(process.exitCode ?? 0);
}
