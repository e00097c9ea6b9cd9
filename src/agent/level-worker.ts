/**
 * A worker thread of applyLevel: brings its share of the processes to the level, reports each
 * one done, then all results. (The engine's per-process work is mostly JavaScript: on a machine
 * with many CPUs, several such threads patch many processes sooner.)
 */
import { parentPort, workerData } from 'node:worker_threads';
import { applyShare, type LevelShare } from './hotpatch.js';

const port = parentPort;
if (!port) throw new Error('level-worker runs as a worker thread of applyLevel');
const results = await applyShare(workerData as LevelShare, { found: (n) => port.postMessage({ found: n }), done: () => port.postMessage({ done: true }) });
port.postMessage({ results });
