/**
 * `hp-agent demo`: the main job on the bundled fixtures. Starts the 8-thread fixture service,
 * keeps a client asking it questions, patches the service's request handler live with
 * `hp-agent try` (a separate process, as a user would run it), shows the new answers from the
 * same PID, reverts, and reports how many requests were served and failed throughout.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Argv } from 'yargs';
import { fixturePath, spawnTarget, tempSocketPath, UnixClient } from '../harness/index.js';
import { EXIT } from './output.js';

const run = promisify(execFile);
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/hp-agent.js');

async function hpAgent(args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await run(process.execPath, [cli, ...args, '--json']);
  return JSON.parse(stdout) as Record<string, unknown>;
}

export function demoCommand(y: Argv): Argv {
  return y.command(
    'demo',
    'Show a live patch on the bundled fixture service (patch, check, revert)',
    (c) => c.option('threads', { type: 'number', default: 8, describe: 'worker threads of the fixture service' }),
    async (argv) => {
      const log = (s: string) => process.stdout.write(s + '\n');
      const socket = tempSocketPath('hp-demo');
      const service = await spawnTarget(fixturePath('service'), { args: [socket, String(argv.threads)] });
      const client = await UnixClient.connect(socket);
      let served = 0;
      let failed = 0;
      const seen = new Set<string>();
      let running = true;
      // A client that never stops asking: every answer must come, whatever we do to the server.
      const load = (async () => {
        while (running) {
          try {
            seen.add(await client.request('call', 2000));
            served++;
          } catch {
            failed++;
          }
        }
      })();
      try {
        log(`1. fixture service running: PID ${service.pid}, ${argv.threads} worker threads, socket ${socket}`);
        log(`   it answers: ${await client.request('call')}   (the bug: v1)`);
        const patch = fixturePath('service_fix.so');
        log(`2. hp-agent try ${path.basename(patch)} --pid ${service.pid} --function handle_request=handle_request_v2`);
        const applied = await hpAgent(['try', patch, '--pid', String(service.pid), '--function', 'handle_request=handle_request_v2']);
        const site = (applied.sites as { siteAddress: number; kind: string; before: string; after: string }[])[0];
        log(`   patched at 0x${site.siteAddress.toString(16)}: ${site.before} -> ${site.after} (${site.kind}); ` +
          `pause ${applied.pauseUs} µs with ${applied.threads} threads stopped`);
        log(`   it answers: ${await client.request('call')}   (same PID ${service.pid}, alive: ${service.alive()})`);
        log(`3. hp-agent try --revert --pid ${service.pid} --function handle_request`);
        const reverted = await hpAgent(['try', '--revert', '--pid', String(service.pid), '--function', 'handle_request']);
        log(`   reverted; pause ${reverted.pauseUs} µs`);
        log(`   it answers: ${await client.request('call')}`);
        running = false;
        await load;
        log(`4. throughout: ${served} requests answered, ${failed} failed, answers seen: ${[...seen].sort().join(', ')}; ` +
          `PID ${service.pid} never restarted`);
        process.exitCode = failed === 0 && service.alive() ? EXIT.ok : EXIT.failed;
      } finally {
        running = false;
        await load.catch(() => undefined);
        client.close();
        await service.kill();
      }
    },
  );
}
