/**
 * `npm run bench`: how long a live patch stops a service. Applies and reverts a one-function
 * patch on the fixture service with 1, 8 and 32 worker threads (idle, waiting in accept()),
 * many times each, and prints the pause the native core measured (first thread stopped → last
 * thread resumed) and the wall time of each call, as median / p99 / max.
 *
 * Usage: node dist/bench/pause.js [--runs N] [--threads 1,8,32] [--json FILE]
 */
import fs from 'node:fs';
import { applyPatch, revertFunctions } from '../engine/patch.js';
import { fixturePath, spawnTarget, tempSocketPath } from '../harness/index.js';

interface Stats {
  median: number;
  p99: number;
  max: number;
}

function stats(values: number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { median: at(0.5), p99: at(0.99), max: s[s.length - 1] };
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

async function measure(threads: number, runs: number) {
  const socket = tempSocketPath('bench');
  const target = await spawnTarget(fixturePath('service'), { args: [socket, String(threads)] });
  const applyPause: number[] = [];
  const revertPause: number[] = [];
  const applyWall: number[] = [];
  const revertWall: number[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      let t0 = performance.now();
      const a = await applyPatch({ pid: target.pid, patchPath: fixturePath('service_fix.so'), functions: [{ name: 'handle_request', replacement: 'handle_request_v2' }] });
      applyWall.push((performance.now() - t0) * 1000);
      t0 = performance.now();
      const r = await revertFunctions({ pid: target.pid, functions: ['handle_request'] });
      revertWall.push((performance.now() - t0) * 1000);
      applyPause.push(a.pauseUs);
      revertPause.push(r.pauseUs);
      if (!target.alive()) throw new Error(`the service with ${threads} threads died during run ${i}`);
    }
  } finally {
    await target.kill();
  }
  return { threads: threads + 1, runs, applyPauseUs: stats(applyPause), revertPauseUs: stats(revertPause), applyWallUs: stats(applyWall), revertWallUs: stats(revertWall) };
}

const runs = Number(arg('runs', '100'));
const threadCounts = arg('threads', '1,8,32').split(',').map(Number);
const results = [];
const fmt = (s: Stats) => `${s.median.toFixed(1)} / ${s.p99.toFixed(1)} / ${s.max.toFixed(1)}`;
process.stdout.write(`pause of one-function patch and revert, ${runs} runs each (µs: median / p99 / max)\n`);
process.stdout.write(`${'threads'.padEnd(8)}${'apply pause'.padEnd(26)}${'revert pause'.padEnd(26)}${'apply wall'.padEnd(28)}revert wall\n`);
for (const n of threadCounts) {
  const r = await measure(n, runs);
  results.push(r);
  process.stdout.write(`${String(r.threads).padEnd(8)}${fmt(r.applyPauseUs).padEnd(26)}${fmt(r.revertPauseUs).padEnd(26)}${fmt(r.applyWallUs).padEnd(28)}${fmt(r.revertWallUs)}\n`);
}
const jsonOut = arg('json', '');
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ date: new Date().toISOString(), results }, null, 2));
