// Makes the V8 code cache of the command-line bundle in the folder DIR (see bundle-loader.mjs):
//
//   node scripts/bundle-cache.mjs DIR
//
// scripts/bundle.mjs runs it in a fresh `node` without extra flags: V8 takes a cache only under
// the version and flags it was made with. Before taking the cache it runs a few read-only
// commands in a temporary agent home, so that the functions they run are compiled and go into
// the cache too (V8 compiles a function on its first call, in every run, unless cached).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CACHE, cacheFile, loadBundle } from './bundle-loader.mjs';

const WARM_UP = [['--version'], ['--help'], ['status', '--help'], ['status', '--json'], ['status'], ['history', '--json']];

class Exit extends Error {}

const dir = path.resolve(process.argv[2]);
const loaded = await loadBundle({ dir, useCache: false });
if (!loaded) throw new Error(`bundle-cache: no bundle in ${dir}`);
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-agent-bundle-cache-'));
process.env.HP_AGENT_HOME = home;
const saved = { exit: process.exit, out: process.stdout.write, err: process.stderr.write };
// yargs ends --version and --help with process.exit; the commands' output is not wanted.
process.exit = () => {
  throw new Exit();
};
process.stdout.write = process.stderr.write = () => true;
try {
  for (const args of WARM_UP) {
    try {
      await loaded.main(args);
    } catch (e) {
      if (!(e instanceof Exit)) throw e;
    }
  }
} finally {
  process.exit = saved.exit;
  process.stdout.write = saved.out;
  process.stderr.write = saved.err;
  fs.rmSync(home, { recursive: true, force: true });
}
fs.writeFileSync(path.join(dir, CACHE), cacheFile(loaded.id, loaded.script.createCachedData()));
// A command may leave handles open (a log file, a timer); the cache is written, stop here.
process.exit(0);
