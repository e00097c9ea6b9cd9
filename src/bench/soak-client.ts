/**
 * The soak's client loop (test/integration/soak.test.ts, `npm run soak`), run as its own process
 * so that only the service's own stalls count: a busy event loop in the test (spawning agents,
 * reading /proc) would otherwise look like a service that stopped answering.
 *
 *   node dist/bench/soak-client.js SOCKET CONNECTIONS ALLOWED_JSON
 *
 * ALLOWED_JSON maps each request to the answers it may get (the old and the new level's). Each
 * connection asks those requests in turn, one at a time and without pause, and checks every
 * answer. It prints `READY` once every connection is up; when a line `stop` arrives on stdin (or
 * stdin ends) it finishes the requests in flight and prints one JSON line: a `SoakClientReport`.
 */
import readline from 'node:readline';
import { UnixClient } from '../harness/index.js';

export interface SoakClientReport {
  /** Answers received, right or wrong. */
  served: number;
  /** Requests that got no answer (timeout, connection lost, refused connection). */
  failed: number;
  /** Answers that are none of the allowed ones for their request. */
  wrong: number;
  /** The first few failures and wrong answers, for the test's message. */
  samples: string[];
  /** Longest time between two consecutive answers on one connection (from connect to the first). */
  maxStallMs: number;
  /**
   * The longest stalls (at most TOP_STALLS, longest first) with the wall-clock time (Date.now())
   * each ended, so the test can tell the ones during an agent run from the machine's own noise.
   */
  stalls: { ms: number; endedAt: number }[];
  /** How long the loop ran. */
  durationMs: number;
}

/** Requests not answered within this count as failed (the connection is then opened again). */
const REQUEST_TIMEOUT_MS = 5_000;
const MAX_SAMPLES = 10;
const TOP_STALLS = 20;

async function main(): Promise<void> {
  const [socket, connections, allowedJson] = process.argv.slice(2);
  const allowed = JSON.parse(allowedJson) as Record<string, string[]>;
  const requests = Object.keys(allowed);
  const report: SoakClientReport = { served: 0, failed: 0, wrong: 0, samples: [], maxStallMs: 0, stalls: [], durationMs: 0 };
  const note = (s: string) => report.samples.length < MAX_SAMPLES && report.samples.push(s);
  const start = performance.now();
  let running = true;

  const loop = async (first: UnixClient): Promise<void> => {
    let client: UnixClient | undefined = first;
    let last = performance.now();
    for (let i = 0; running; i++) {
      const req = requests[i % requests.length];
      try {
        client ??= await UnixClient.connect(socket, REQUEST_TIMEOUT_MS);
        const answer = await client.request(req, REQUEST_TIMEOUT_MS);
        const now = performance.now();
        const gap = now - last;
        if (gap > report.maxStallMs) report.maxStallMs = gap;
        if (report.stalls.length < TOP_STALLS || gap > report.stalls[TOP_STALLS - 1].ms) {
          report.stalls.push({ ms: gap, endedAt: Date.now() });
          report.stalls.sort((a, b) => b.ms - a.ms).splice(TOP_STALLS);
        }
        last = now;
        report.served++;
        if (!allowed[req].includes(answer)) {
          report.wrong++;
          note(`${JSON.stringify(req)} → ${JSON.stringify(answer)}`);
        }
      } catch (e) {
        report.failed++;
        note(`${JSON.stringify(req)}: ${(e as Error).message}`);
        // A late answer must not be taken for the next request's: start a new connection.
        client?.close();
        client = undefined;
      }
    }
    client?.close();
  };

  const clients = await Promise.all(Array.from({ length: Number(connections) }, () => UnixClient.connect(socket, REQUEST_TIMEOUT_MS)));
  const loops = clients.map(loop);
  process.stdout.write('READY\n');
  await new Promise<void>((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (line) => line.trim() === 'stop' && resolve());
    rl.on('close', resolve);
  });
  running = false;
  await Promise.all(loops);
  report.durationMs = performance.now() - start;
  process.stdout.write(JSON.stringify(report) + '\n');
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`soak-client: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
