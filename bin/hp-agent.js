#!/usr/bin/env node
// Waiting on ptrace stops occupies a libuv pool thread each; patching many processes at once
// needs more than the default 4. (Read by libuv when the pool first starts, so set it first.)
process.env.UV_THREADPOOL_SIZE ??= '16';
import { loadBundle } from '../scripts/bundle-loader.mjs';

// The bundle (scripts/bundle.mjs) starts faster; dist/cli/main.js is the same code unbundled.
const { main } = (await loadBundle()) ?? (await import('../dist/cli/main.js'));

process.exitCode = await main(process.argv.slice(2));
