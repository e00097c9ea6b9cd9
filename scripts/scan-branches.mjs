#!/usr/bin/env node
// Runs hp-agent's static branch check (src/x64/branches.ts) over every function symbol of ELF
// files and prints how many it flags: functions whose own code branches or returns strictly inside
// the bytes a jump over their entry would overwrite. Needs `npm run build:ts` first.
//
//   node scripts/scan-branches.mjs [--list] FILE...
//
// Per file: functions decoded (distinct addresses of FUNC symbols with a size), and how many are
// flagged for the 5-byte rel32 jump hp-agent writes (after an endbr64 when there is one), for
// the 14-byte absolute jump (a patch mapped out of rel32 reach), and for the 2-byte NOP of a
// hot-patchable entry at the same place (what zero-stop mode would overwrite, had the object
// been built with -fpatchable-function-entry=7,5 — an estimate: the compiler would then insert that NOP).
// --list prints each flagged function with the first instruction that lands inside.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { ElfFile } = await import(path.join(root, 'dist/elf/index.js'));
const { controlTransfers, instructionText, landingsInside, hasEndbr64, ENDBR64_SIZE, REL32_JUMP_SIZE, ABS64_JUMP_SIZE } = await import(path.join(root, 'dist/x64/index.js'));

const args = process.argv.slice(2);
const list = args.includes('--list');
const files = args.filter((a) => a !== '--list');
if (files.length === 0) {
  process.stderr.write('usage: node scripts/scan-branches.mjs [--list] FILE...\n');
  process.exit(2);
}

for (const file of files) {
  const elf = ElfFile.fromFile(file);
  const table = elf.symbols.length ? elf.symbols : elf.dynamicSymbols;
  const byAddress = new Map();
  for (const s of table) {
    if (s.type === 'FUNC' && s.defined && s.size > 0 && !byAddress.has(s.value)) byAddress.set(s.value, s);
  }
  const counts = { functions: 0, unreadable: 0, rel32: 0, abs64: 0, nop2: 0 };
  const flagged = [];
  for (const [address, sym] of byAddress) {
    let code;
    try {
      code = elf.readVirtual(address, sym.size);
    } catch {
      counts.unreadable++;
      continue;
    }
    counts.functions++;
    const transfers = controlTransfers(code);
    const start = hasEndbr64(code) ? ENDBR64_SIZE : 0;
    const rel32 = landingsInside(transfers, start, REL32_JUMP_SIZE);
    if (rel32.length) {
      counts.rel32++;
      const f = rel32[0];
      flagged.push(`${sym.name}: ${instructionText(code, f.offset, address)} at +${f.offset} ${f.how === 'branch' ? 'jumps' : 'returns'} to +${f.lands}`);
    }
    if (landingsInside(transfers, start, ABS64_JUMP_SIZE).length) counts.abs64++;
    if (landingsInside(transfers, start, 2).length) counts.nop2++;
  }
  const src = elf.symbols.length ? '.symtab' : '.dynsym';
  process.stdout.write(
    `${file}: ${counts.functions} functions (${src}${counts.unreadable ? `, ${counts.unreadable} unreadable` : ''}); flagged: ${counts.rel32} for the 5-byte jump, ${counts.abs64} for the 14-byte jump, ${counts.nop2} within a 2-byte entry NOP\n`,
  );
  if (list) for (const line of flagged) process.stdout.write(`  ${line}\n`);
}
