/** The hp-agent command line. */
import yargs from 'yargs';
import { EXIT } from './output.js';
import { agentCommands } from './agent.js';
import { demoCommand } from './demo.js';
import { keysCommand } from './keys.js';
import { packCommand } from './pack.js';
import { tryCommand } from './try.js';

export async function main(args: string[]): Promise<number> {
  process.exitCode = EXIT.ok;
  let usageError = false;
  const parser = demoCommand(packCommand(keysCommand(agentCommands(tryCommand(
    yargs(args)
      .scriptName('hp-agent')
      .usage('$0 <command> [options]\n\nLive-patch functions of running x86-64 Linux processes.')
      .epilogue('Exit codes: 0 done; 2 bad usage; 3 refused, nothing changed; 4 failed after something was written; 5 done for some processes, failed for others; 1 internal error; 130/143 stopped by SIGINT/SIGTERM before changing anything.'),
  )))))
    .demandCommand(1, 'name a command')
    .strict()
    .help()
    .alias('h', 'help')
    .version()
    .fail((msg, err, y) => {
      usageError = true;
      void y;
      process.stderr.write(`hp-agent: ${msg ?? err?.message}\nRun "hp-agent --help" for usage.\n`);
    });
  await parser.parseAsync();
  return usageError ? EXIT.usage : Number(process.exitCode ?? 0);
}
