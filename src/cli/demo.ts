/**
 * `hp-agent demo`: the main job on the bundled fixtures, in a temporary agent home that is
 * removed afterwards. Every step runs the real `hp-agent` command line as a separate process,
 * as a user would:
 *   1. install and boot baseline 2026.10 of the bundled "greeter" service (it has a bug);
 *   2. apply the bundled signed hotpatch while a client keeps asking the service questions;
 *   3. show status (read from the process's memory) and the fixed answer from the same PID;
 *   4. install baseline 2026.11 and show that it needs a reboot — then reboot onto it.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Argv } from 'yargs';
import { buildFixturePackages, demoPublicKey, fixturePackage } from '../demo/fixture-packages.js';
import { UnixClient } from '../harness/index.js';
import { EXIT } from './output.js';

const run = promisify(execFile);
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/hp-agent.js');

export function demoCommand(y: Argv): Argv {
  return y.command(
    'demo',
    'Show the whole story on the bundled fixtures: baseline, live hotpatch under load, status, next baseline and reboot',
    (c) => c.option('keep', { type: 'boolean', default: false, describe: 'keep the temporary agent home and its services' }),
    async (argv) => {
      const home = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-agent-demo-'));
      const env = { ...process.env, HP_AGENT_HOME: home };
      const say = (s: string) => process.stdout.write(s + '\n');
      const indent = (s: string) => s.trimEnd().split('\n').map((l) => '    ' + l).join('\n');
      // show = false: the demo reads the output itself (--json) — then it prints neither the
      // command nor its output, unless it fails.
      const agent = async (args: string[], show = true): Promise<string> => {
        if (show) say(`  $ hp-agent ${args.join(' ')}`);
        try {
          const { stdout } = await run(process.execPath, [cli, ...args], { env });
          if (show) say(indent(stdout));
          return stdout;
        } catch (e) {
          const err = e as { stdout?: string; stderr?: string; code?: number };
          if (!show) say(`  $ hp-agent ${args.join(' ')}`);
          say(indent(`${err.stdout ?? ''}${err.stderr ?? ''}`));
          throw new Error(`hp-agent ${args[0]} failed (exit ${err.code})`);
        }
      };
      const json = async (args: string[]) => JSON.parse(await agent([...args, '--json'], false));
      // The demo's signing key and packages are made here, at each run, inside the temporary
      // home: the installed npm package carries no private key (nor packages signed by one).
      const packages = path.join(home, 'demo-packages');
      const pkg = (id: string) => fixturePackage(id, packages);
      const socket = path.join(home, 'run/greetd.sock');
      let client: UnixClient | undefined;
      let running = false;
      let load: Promise<void> = Promise.resolve();
      try {
        say(`hp-agent demo — temporary agent home ${home}\n`);
        await buildFixturePackages(packages);
        say(`0. Made a demo signing key and signed the bundled greeter packages with it (${packages})\n`);
        say('1. Trust the demo signing key, install baseline 2026.10 (KB5046001) and boot the machine');
        await agent(['trust', 'add', demoPublicKey(packages), '--name', 'demo']);
        await agent(['apply', pkg('2026.10')]);
        await agent(['boot']);
        client = await UnixClient.connect(socket);
        const pid = (await json(['status'])).processes[0].pid as number;
        say(`  the service (PID ${pid}) answers "hello bob" with: ${await client.request('hello bob')}   <- the bug: a letter is missing\n`);

        say('2. Apply the signed hotpatch 2026.10-hp1 (KB5046101) while a client keeps asking');
        let served = 0;
        let failed = 0;
        running = true;
        const c = client;
        load = (async () => {
          while (running) {
            try {
              await c.request('hello bob', 2000);
              served++;
            } catch {
              failed++;
            }
          }
        })();
        await agent(['apply', pkg('2026.10-hp1')]);
        running = false;
        await load;
        say(`  during the hotpatch the service answered ${served} requests, ${failed} failed`);
        say(`  now it answers "hello bob" with: ${await client.request('hello bob')}   (same PID ${pid})\n`);

        say('3. Status, read from the processes themselves');
        await agent(['status']);
        say('');

        say('4. Install the next baseline 2026.11 (KB5046002): files only, a reboot is required');
        await agent(['apply', pkg('2026.11')]);
        await agent(['status']);
        client.close();
        client = undefined;
        await agent(['reboot']);
        client = await UnixClient.connect(socket);
        say(`  after the reboot: version ${await client.request('version')}, "hello bob" → ${await client.request('hello bob')}\n`);
        await agent(['history']);
        process.exitCode = failed === 0 ? EXIT.ok : EXIT.failed;
      } finally {
        running = false;
        await load.catch(() => undefined);
        client?.close();
        if (!argv.keep) {
          await stopDemoServices(home);
          fs.rmSync(home, { recursive: true, force: true });
          say(`\n(temporary home removed, its services stopped)`);
        }
      }
    },
  );
}

/** The demo's services are daemons: stop every one the temporary home knows of. */
async function stopDemoServices(home: string): Promise<void> {
  try {
    const state = JSON.parse(fs.readFileSync(path.join(home, 'state.json'), 'utf8')) as { services?: { pid: number }[] };
    for (const s of state.services ?? []) {
      try {
        process.kill(s.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  } catch {
    // no state: nothing was started
  }
}
