// Bundles the command line (and the agent's worker thread) into dist/bundle/: one file each
// instead of hundreds of modules, so `hp-agent` starts sooner — it is part of every command's
// wall time, and of the "1,000 processes in a second" one in particular. The bundles sit two
// folders below the package root like every other module in dist/, so the paths they compute
// from import.meta.url (fixtures/, bin/) stay right. Without esbuild (a production install)
// nothing is bundled and bin/hp-agent.js runs dist/cli/main.js.
//
// The command line becomes hp-agent.script.js, a classic script holding one async function (see
// bundle-loader.mjs for why), plus hp-agent.script.cache, its V8 code cache (bundle-cache.mjs).
// The worker stays an ES module (level-worker.js): new Worker() loads it by URL.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SCRIPT } from './bundle-loader.mjs';

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
// Built aside (two folders below the root too) and swapped in when complete: a command starting
// meanwhile, or another build, never sees half a bundle.
const tmp = path.join(root, `dist/bundle.tmp-${process.pid}`);
fs.rmSync(tmp, { recursive: true, force: true });
const common = { bundle: true, platform: 'node', target: 'node20', minify: true, logLevel: 'warning' };

await esbuild.build({
  ...common,
  entryPoints: { 'level-worker': path.join(root, 'dist/agent/level-worker.js') },
  outdir: tmp,
  format: 'esm',
  // CommonJS dependencies call require(); give the ES module bundle one.
  banner: { js: "import { createRequire as __hpCreateRequire } from 'node:module'; const require = __hpCreateRequire(import.meta.url);" },
});

// The script gets require, import.meta and a way to hand `main` out as arguments (the wrapper
// below), so the bundle must hold no import or export statement: Node's built-in modules are
// taken with require() and the entry passes main to __hpExport.
const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
const builtinsByRequire = {
  name: 'builtins-by-require',
  setup(build) {
    build.onResolve({ filter: /^[\w:/]+$/ }, (a) => {
      if (!builtins.has(a.path)) return undefined;
      return a.namespace === 'hp-builtin' ? { path: a.path, external: true } : { path: a.path, namespace: 'hp-builtin' };
    });
    build.onLoad({ filter: /.*/, namespace: 'hp-builtin' }, (a) => ({ contents: `module.exports = require(${JSON.stringify(a.path)});`, loader: 'js' }));
  },
};

// string-width (yargs' help layout) creates an Intl.Segmenter and a \p{RGI_Emoji} regular
// expression at load: ~25 ms of every command (~40 ms of --help), for text that is almost always
// printable ASCII, whose width is its length in every version of it (test/integration/startup.test.ts).
// Load it on the first other text only.
const lazyStringWidth = {
  name: 'lazy-string-width',
  setup(build) {
    build.onResolve({ filter: /^string-width$/ }, async (a) => {
      if (a.kind !== 'import-statement' || a.pluginData === 'real') return undefined;
      const real = await build.resolve(a.path, { kind: a.kind, resolveDir: a.resolveDir, importer: a.importer, pluginData: 'real' });
      if (real.errors.length) return undefined;
      return { path: real.path, namespace: 'hp-lazy-string-width' };
    });
    build.onLoad({ filter: /.*/, namespace: 'hp-lazy-string-width' }, (a) => ({
      loader: 'js',
      resolveDir: root,
      contents: `export default function stringWidth(string, options) {
  if (typeof string === 'string' && /^[\\x20-\\x7E]*$/.test(string)) return string.length;
  return require(${JSON.stringify(a.path)}).default(string, options);
}`,
    }));
  },
};

const built = await esbuild.build({
  ...common,
  stdin: { contents: "import { main } from './dist/cli/main.js';\n__hpExport(main);\n", resolveDir: root, sourcefile: 'hp-agent-entry.js' },
  format: 'esm',
  write: false,
  outfile: path.join(tmp, SCRIPT),
  define: { 'import.meta': '__hpMeta' },
  plugins: [builtinsByRequire, lazyStringWidth],
});
const body = built.outputFiles[0].text;
const id = createHash('sha256').update(body).digest('hex').slice(0, 16);
fs.writeFileSync(path.join(tmp, SCRIPT), `// hp-agent ${id}\n(async function (require, __hpMeta, __hpExport) {"use strict";\n${body}\n})\n`);

// The cache, made by a fresh node with no extra flags (NODE_OPTIONS may carry some). This also
// checks that the bundle runs.
const env = { ...process.env };
delete env.NODE_OPTIONS;
try {
  execFileSync(process.execPath, [path.join(root, 'scripts/bundle-cache.mjs'), tmp], { env, stdio: ['ignore', 'ignore', 'inherit'], timeout: 120_000 });
} catch (e) {
  // Neither this bundle nor the previous one (older code than dist/ now) is left to run.
  for (const d of [tmp, out]) fs.rmSync(d, { recursive: true, force: true });
  process.stderr.write(`bundle: the command-line bundle does not run (${e.message})\n`);
  process.exit(1);
}

// rename() cannot replace a folder that has files: move the old one away first. Another build
// may do the same at the same moment; then the later one wins.
for (let attempt = 0; ; attempt++) {
  const old = `${tmp}.old-${attempt}`;
  try {
    fs.renameSync(out, old);
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
  try {
    fs.renameSync(tmp, out);
    break;
  } catch (e) {
    if ((e.code !== 'ENOTEMPTY' && e.code !== 'EEXIST') || attempt >= 10) throw e;
  } finally {
    fs.rmSync(old, { recursive: true, force: true });
  }
}
