// Runs the command-line bundle that scripts/bundle.mjs writes to dist/bundle/: a classic script
// (one async function expression) rather than an ES module, because in Node 20 only scripts can
// be compiled with a V8 code cache (vm.Script cachedData). With the cache V8 neither parses nor
// compiles the ~1 MB bundle, nor the functions the build's warm-up ran (bundle-cache.mjs).
//
// The cache is read, never written, here: the package may be read-only. It is used only if its
// header names this very script (a build id) and its checksum holds, since V8 itself checks just
// the source's length and its own version and flags. V8 rejecting it (another Node version, other
// V8 flags) only costs the compile.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import vm from 'node:vm';
import zlib from 'node:zlib';

const BUNDLE_DIR = fileURLToPath(new URL('../dist/bundle', import.meta.url));
export const SCRIPT = 'hp-agent.script.js';
export const CACHE = 'hp-agent.script.cache';
const MAGIC = 'hp-agent-cache-1';

/** The build id on the script's first line, `// hp-agent <id>`. */
function scriptId(source) {
  return /^\/\/ hp-agent (\w+)\n/.exec(source)?.[1];
}

/** The cache file's bytes: a one-line header (magic, build id, CRC-32 of the data), then V8's data. */
export function cacheFile(id, data) {
  return Buffer.concat([Buffer.from(`${MAGIC} ${id} ${zlib.crc32(data).toString(16)}\n`), data]);
}

function readCache(file, id) {
  let buf;
  try {
    buf = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  const nl = buf.indexOf(10);
  if (nl < 0 || nl > 200 || typeof zlib.crc32 !== 'function') return undefined;
  const [magic, cacheId, sum] = buf.toString('latin1', 0, nl).split(' ');
  const data = buf.subarray(nl + 1);
  return magic === MAGIC && cacheId === id && sum === zlib.crc32(data).toString(16) ? data : undefined;
}

/**
 * Loads the bundle in `dir` and returns its `main`; also the vm.Script and build id (from which
 * bundle-cache.mjs makes the cache) and what became of the cache: 'used', 'rejected' (by V8) or
 * 'none' (no usable file). Undefined when there is no bundle.
 */
export async function loadBundle({ dir = BUNDLE_DIR, useCache = true } = {}) {
  const file = path.join(dir, SCRIPT);
  let source;
  try {
    source = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  }
  const id = scriptId(source);
  const cachedData = useCache && id ? readCache(path.join(dir, CACHE), id) : undefined;
  const script = new vm.Script(source, {
    filename: file,
    cachedData,
    // import() inside the bundle resolves as in a module.
    importModuleDynamically: vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const url = pathToFileURL(file).href;
  // What the bundle's modules see as import.meta (esbuild's define points them here).
  const meta = {
    url,
    filename: file,
    dirname: dir,
    resolve: (specifier) => (/^\.{0,2}\//.test(specifier) ? new URL(specifier, url).href : import.meta.resolve(specifier)),
  };
  let main;
  await script.runInThisContext()(createRequire(file), meta, (m) => {
    main = m;
  });
  return { main, script, id, cache: !cachedData ? 'none' : script.cachedDataRejected ? 'rejected' : 'used' };
}
