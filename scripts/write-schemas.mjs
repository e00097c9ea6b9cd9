// Writes the JSON Schema of every command's --json output into schemas/<command>.json, generated
// from the zod schemas in src/contract (built into dist/contract first). Run by `npm run build:ts`,
// so the schemas shipped in the package are always those of the code shipped with them.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { OUTPUT_SCHEMAS, outputJsonSchema } = await import(path.join(root, 'dist/contract/index.js'));
const out = path.join(root, 'schemas');
// Written aside and swapped in whole: a stale schema of a command that no longer exists goes too.
const tmp = `${out}.tmp-${process.pid}`;
fs.rmSync(tmp, { recursive: true, force: true });
fs.mkdirSync(tmp);
for (const command of Object.keys(OUTPUT_SCHEMAS)) {
  fs.writeFileSync(path.join(tmp, `${command}.json`), JSON.stringify(outputJsonSchema(command), null, 2) + '\n');
}
fs.rmSync(out, { recursive: true, force: true });
fs.renameSync(tmp, out);
