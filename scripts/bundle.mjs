// Bundles the command line (and the agent's worker thread) into dist/bundle/: one file each
// instead of hundreds of modules, so `hp-agent` starts about 100 ms sooner — it is part of every
// command's wall time, and of the "1,000 processes in a second" one in particular. The bundles
// sit two folders below the package root like every other module in dist/, so the paths they
// compute from import.meta.url (fixtures/, bin/) stay right. Without esbuild (a production
// install) nothing is bundled and bin/hp-agent.js runs dist/cli/main.js.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist/bundle');
let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  fs.rmSync(out, { recursive: true, force: true });
  process.stderr.write('bundle: esbuild is not installed; hp-agent runs from dist/ unbundled\n');
  process.exit(0);
}
await esbuild.build({
  entryPoints: { 'hp-agent': path.join(root, 'dist/cli/main.js'), 'level-worker': path.join(root, 'dist/agent/level-worker.js') },
  outdir: out,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  minify: true,
  // CommonJS dependencies call require(); give the ES module bundle one.
  banner: { js: "import { createRequire as __hpCreateRequire } from 'node:module'; const require = __hpCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
